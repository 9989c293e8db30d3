//! # rota-executor: how Rota reaches executor nodes
//!
//! Implementations of [`rota_core::Executor`]:
//!
//! * [`HttpExecutor`] calls `target.http` targets, speaking `protocol: rota` or `protocol: raw`;
//! * [`GrpcProtocol`] (run by a [`ProtocolExecutor`]) calls `target.grpc` targets: the
//!   `rota.executor.v1.Executor/Run` service of [`rota_proto::grpc`] (see "gRPC" below);
//! * [`container::ContainerExecutor`] runs `target.container` targets in a fresh container per attempt through a
//!   [`container::ContainerRuntime`] (Docker Engine API, which Podman also serves; Kubernetes Jobs behind the
//!   `kubernetes` feature), and removes it afterwards (see "Containers" below);
//! * [`Router`] hands each dispatch to the executor registered for its target kind (`http`, `grpc`,
//!   `container`); kinds without one fail with `"container targets are not supported by this server yet"`.
//!
//! Wire protocols to executor nodes implement the [`Protocol`] trait (HTTP and gRPC do); `docs/protocols.md`
//! compares them and maps their messages.
//!
//! This page is also the reference for anyone writing an executor node in another language.
//!
//! ## Where the request goes
//!
//! * When the scheduler chose an executor node, the URL is the node's address followed by `target.http.path`
//!   (`/` when absent). An address without a scheme (`10.0.0.5:8080`) means `http://`; an address may carry a
//!   base path (`http://h:8080/rota` + `/jobs/x` → `http://h:8080/rota/jobs/x`); exactly one `/` joins them.
//! * When there is no node (no candidates), the URL is `target.http.url`.
//! * `http://` and `https://` (TLS: the system's roots plus [`HttpExecutorConfig::tls`]'s CA bundle; its client
//!   certificate is presented to nodes that require one).
//! * Redirects are not followed: a `3xx` answer is a failure like any other unexpected status.
//!
//! Every request carries `user-agent: rota/<version>`, `x-rota-run-id: <run id>` and
//! `x-rota-attempt: <attempt>`, plus the target's `headers`. Target headers may not set the framing and
//! connection headers `content-length`, `transfer-encoding`, `connection`, `keep-alive`, `proxy-connection`,
//! `te`, `upgrade` (the dispatch fails), and Rota's own headers override target headers of the same name.
//!
//! The whole exchange (connecting, sending, waiting for the answer and reading its body) is bounded by the
//! attempt's timeout; when it runs out the outcome is [`DispatchOutcome::TimedOut`] and the connection is
//! dropped. Establishing the TCP connection is additionally bounded by
//! [`HttpExecutorConfig::connect_timeout`] (default 10 s), which yields a failure (retried by the task's retry
//! policy) rather than a timeout.
//!
//! ## `protocol: rota`
//!
//! The scheduler sends `POST <url>` (whatever `target.http.method` says) with
//! `content-type: application/json`, `accept: application/json` and a [`rota_proto::RunEnvelope`]:
//!
//! ```json
//! {
//!   "run_id": "1234567890",
//!   "task": "billing/nightly-report",
//!   "attempt": 1,
//!   "scheduled_at": "2026-11-25T02:30:00Z",
//!   "params": {"report": "daily"},
//!   "shard": {"index": 0, "total": 1},
//!   "deadline": "2026-11-25T02:40:00Z",
//!   "report_url": "https://rota.example/api/v1/runs/1234567890"
//! }
//! ```
//!
//! * `run_id` is a decimal string; `attempt` starts at 1; instants are RFC 3339 in UTC; `params` is the task's
//!   params merged with a manual trigger's overrides; `shard` is `{index: 0, total: 1}` unless the task is
//!   sharded; after `deadline` the scheduler considers the attempt timed out; `report_url` is absent when the
//!   scheduler does not know its public address.
//!
//! The executor node answers one of:
//!
//! | answer | outcome |
//! | --- | --- |
//! | `200` with a [`rota_proto::RunResult`] body: `{"status": "succeeded" \| "failed", "output": <any JSON>?, "error": "<text>"?}` (no other fields) | [`DispatchOutcome::Completed`] with that result (sync) |
//! | `202` (body ignored) | [`DispatchOutcome::Accepted`]: the node reports later with `POST {report_url}/report` ([`rota_proto::RunReport`]) and may append logs with `POST {report_url}/logs` |
//! | `200` whose body is not such a result (not JSON, other fields, unknown status) | `Failed{"executor returned an invalid result: <reason>"}` |
//! | `200` with a body over [`HttpExecutorConfig::max_response_bytes`] (default 1 MiB) | `Failed{"executor response too large: …"}`; the body is read incrementally and abandoned at the limit |
//! | any other status (`201`, `204`, `3xx`, `4xx`, `5xx`) | `Failed{"executor answered HTTP 503: <first 256 characters of the body>"}` |
//! | no answer (connection refused, reset, DNS failure) | `Failed{"could not connect to http://host:port: <cause>"}` or similar |
//! | no complete answer before the attempt's timeout | [`DispatchOutcome::TimedOut`] |
//!
//! Body excerpts in messages have control characters replaced by spaces and end with `…` when cut. Messages
//! name only the origin (`scheme://host:port`), never the path or query of the URL nor any header value.
//!
//! ## `protocol: raw`
//!
//! Calls any HTTP endpoint. The request uses `target.http.method` (`GET`, `POST` (default), `PUT`, `PATCH`,
//! `DELETE`, `HEAD`), the target's headers, and the rendered `target.http.body` template when there is one.
//! When the target sets no `content-type`, a body that is valid JSON is sent as `application/json`, any other
//! body as `text/plain; charset=utf-8`.
//!
//! | answer | outcome |
//! | --- | --- |
//! | any `2xx` within the timeout | `Completed(RunResult{status: succeeded, output})`: `output` is the body as JSON when it parses, else a JSON string of the body; bodies are read up to 64 KiB ([`RAW_OUTPUT_LIMIT`]) — a longer body is cut there and kept as a string; an empty body gives no output |
//! | any other status | `Failed{"executor answered HTTP 404: <first 256 characters of the body>"}` |
//! | no answer / timeout | as for `protocol: rota` |
//!
//! ### Body templates
//!
//! Placeholders are written `{{name}}` (spaces inside the braces are ignored: `{{ run_id }}`):
//!
//! | placeholder | value |
//! | --- | --- |
//! | `{{run_id}}` | the run id (decimal) |
//! | `{{task}}` | `namespace/name` |
//! | `{{attempt}}` | the attempt number (1-based) |
//! | `{{scheduled_at}}`, `{{deadline}}` | RFC 3339 instants in UTC, as in the envelope |
//! | `{{shard.index}}`, `{{shard.total}}` | the shard |
//! | `{{report_url}}` | the run's report URL, or the empty string when unknown |
//! | `{{params}}` | all params as one JSON object |
//! | `{{params.KEY}}` | the param `KEY` (everything after `params.`, dots included, is the key): a string as it is, any other value JSON-encoded (`5`, `true`, `null`, `{"a":1}`) |
//!
//! Values are inserted without escaping: inside a JSON string literal, prefer a param that cannot contain `"`
//! or `\`, or insert a JSON value with `{{params.KEY}}` outside quotes.
//!
//! Unknown placeholders are **rejected**, not left in place: a typo such as `{{parms.x}}` fails the dispatch
//! with `target.http.body: unknown placeholder {{parms.x}} …` instead of silently sending it. So do a
//! `{{params.KEY}}` whose key the run's params lack, and a `{{` without a closing `}}`. Write `\{{` for a
//! literal `{{` (e.g. a body that is itself a template for the endpoint); `}}` alone is always literal.
//! [`template::check`] validates a template when a task is submitted.
//!
//! ## gRPC
//!
//! A `target.grpc` dispatch is one unary call of `rota.executor.v1.Executor/Run` (the `.proto` is in
//! `crates/rota-proto/proto/rota/executor/v1/executor.proto`) on the node the scheduler chose; a grpc target has
//! no URL of its own, so a dispatch without a node fails. The node address is `host:port`, `http://host:port` or
//! `grpc://host:port` (plaintext HTTP/2), or `https://host:port` / `grpcs://host:port` (TLS with
//! [`GrpcProtocolConfig::tls`]); an address may not carry a path, a query or credentials. All calls to one address share one cached channel (one HTTP/2 connection, reconnected when
//! lost).
//!
//! The request is the envelope as a [`rota_proto::grpc::v1::RunRequest`], with the metadata `x-rota-run-id`,
//! `x-rota-attempt`, `user-agent: rota/<version> …` and a gRPC deadline (`grpc-timeout`) of the attempt's
//! timeout, which also bounds the whole call. `target.grpc.service` / `method` default to the Rota service; a
//! task may name another well-formed service and method that the node serves with the same messages.
//!
//! | answer | outcome |
//! | --- | --- |
//! | `OK` with `result` | [`DispatchOutcome::Completed`] with that result |
//! | `OK` with `accepted` | [`DispatchOutcome::Accepted`]: the node reports later over HTTP, as after a `202` |
//! | `OK` whose message is not protobuf | `Failed{"executor returned an undecodable answer: …"}` |
//! | `OK` with neither, an unknown status or bad `output_json` | `Failed{"executor returned an invalid result: …"}` |
//! | a message over [`GrpcProtocolConfig::max_response_bytes`] (1 MiB) | `Failed{"executor response too large: …"}` |
//! | no connection (refused, DNS, connect timeout) | `Failed{"could not connect to http://host:port: <cause>"}` |
//! | `UNIMPLEMENTED` | `Failed{"executor at http://host:port answered gRPC UNIMPLEMENTED: it does not serve <service>/<method>"}` |
//! | `DEADLINE_EXCEEDED`, or no answer before the timeout | [`DispatchOutcome::TimedOut`] |
//! | any other status | `Failed{"executor answered gRPC RESOURCE_EXHAUSTED: <first 256 characters of the message>"}` |
//!
//! ## Security
//!
//! * **Signing:** [`HttpExecutor::with_signing_key`] and [`GrpcProtocol::with_signing_key`] sign every dispatch
//!   with [`rota_proto::signing`] (HTTP: method, path and query as sent, body; gRPC: `POST`, the RPC path, the
//!   protobuf encoding of the `RunRequest`).
//! * **Credentials:** `target.http.auth` (`bearer`, `basic`, `header`) names secrets; [`HttpExecutor::with_secrets`]
//!   resolves them at dispatch time through a [`SecretResolver`] ([`EnvSecrets`], [`DirSecrets`], a user's
//!   own). Values are sent as sensitive headers and appear in no outcome; an unknown reference fails the attempt
//!   with `secret NAME is not available` without calling.
//!
//! `docs/security.md` describes every hop.
//!
//! ## How to add a protocol
//!
//! A wire protocol is a [`Protocol`]: `send` one [`Dispatch`] to its node (`dispatch.node`) and turn the answer
//! into a [`DispatchOutcome`], with failure messages that name the node by origin and contain no secrets. A
//! [`ProtocolExecutor`] (what [`Router::with_protocol`] registers) answers a zero timeout with `TimedOut` and
//! bounds every call by `dispatch.timeout`. Register it for its target kind:
//!
//! ```
//! use std::sync::Arc;
//! use rota_core::{Dispatch, DispatchOutcome};
//! use rota_executor::{HttpExecutorConfig, Protocol, Router};
//! use rota_spec::TargetKind;
//!
//! struct MyRpc;
//!
//! #[async_trait::async_trait]
//! impl Protocol for MyRpc {
//!     fn name(&self) -> &'static str {
//!         "my-rpc"
//!     }
//!
//!     async fn send(&self, _d: &Dispatch) -> DispatchOutcome {
//!         DispatchOutcome::Failed { error: "not wired yet".into() }
//!     }
//! }
//!
//! let router = Router::standard(HttpExecutorConfig::default())
//!     .unwrap()
//!     .with_protocol(TargetKind::Grpc, Arc::new(MyRpc));
//! assert!(router.supports(TargetKind::Grpc));
//! ```
//!
//! Any [`Executor`] can also be registered directly with [`Router::with`]. A new target kind (beyond `http`,
//! `grpc`, `container`) also needs its field in `rota_spec::Target` and a `TargetKind` variant; a new wire
//! protocol over an existing kind (like `rota`/`raw` over HTTP) is a variant of that kind's `protocol` field
//! handled inside its executor.

#![doc = include_str!("container/DOCS.md")]

pub mod container;
mod grpc;
mod http;
mod protocol;
mod router;
pub mod secrets;
pub mod template;

pub use container::{ContainerExecutor, ContainerExecutorConfig, ContainerRuntime, DockerRuntime};
pub use grpc::{GrpcProtocol, GrpcProtocolConfig};
pub use http::{
    BuildError, DEFAULT_MAX_RESPONSE_BYTES, ERROR_EXCERPT_CHARS, HttpExecutor, HttpExecutorConfig, RAW_OUTPUT_LIMIT,
    default_user_agent,
};
pub use protocol::{Protocol, ProtocolExecutor};
pub use router::Router;
pub use secrets::{DirSecrets, EnvSecrets};
pub use template::TemplateError;

#[doc(no_inline)]
pub use rota_core::{Dispatch, DispatchOutcome, Executor, NodeEndpoint, SecretResolver};
#[doc(no_inline)]
pub use rota_proto::signing::SigningKey;
#[doc(no_inline)]
pub use rota_tls::ClientTls;
