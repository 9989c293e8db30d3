//! The executor side of the SDK: an [`ExecutorNode`] runs your handlers when the scheduler dispatches a run.
//!
//! ```no_run
//! use rota_sdk::executor::{ExecutorNode, HandlerError, RunContext};
//! use serde_json::json;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let node = ExecutorNode::builder("billing-worker") // the service tasks name in `candidates.service`
//!     .scheduler("http://127.0.0.1:7070") // register, heartbeat and drain there
//!     .token(std::env::var("ROTA_TOKEN").ok()) // bearer token on every call to the scheduler
//!     .labels([("zone", "a")])
//!     .capacity(8)
//!     .handler("nightly-report", |ctx: RunContext| async move {
//!         ctx.log("starting").await;
//!         let day: Option<String> = ctx.param("day")?;
//!         Ok(json!({"rows": 42, "day": day}))
//!     })
//!     .async_handler("slow-export", |ctx: RunContext| async move {
//!         // Answered `202 Accepted` at once; the result is reported to the scheduler when this returns.
//!         ctx.log(format!("exporting shard {}/{}", ctx.shard_index(), ctx.shard_total())).await;
//!         Err(HandlerError::msg("the export bucket is full"))
//!     })
//!     // Declare the task this node serves: candidates and path are filled in (service, `/nightly-report`).
//!     .task("metadata: {namespace: billing, name: nightly-report}\nspec: {schedule: {cron: '0 30 2 * * *'}}\n")
//!     .build()?;
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
//! node.serve_http(listener, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await?;
//! # Ok(())
//! # }
//! ```
//!
//! # What the node does
//!
//! * **Dispatch.** Over HTTP ([`serve_http`](ExecutorNode::serve_http)) the scheduler `POST`s a [`RunEnvelope`]
//!   to `{node address}{target.http.path}`; over gRPC ([`serve_grpc`](ExecutorNode::serve_grpc)) it calls
//!   `rota.executor.v1.Executor/Run` for a `target.grpc` task. The handler is found by the last segment of the
//!   request path (HTTP only), else by the handler a declared task was declared with, else by the task's name
//!   (`namespace/name` → `name`), else by the full `namespace/name`. An unknown handler, an `Err` from the
//!   handler and a panic in it all become a `failed` result (the task's retry policy applies); the node keeps
//!   serving.
//! * **Sync and async handlers.** A [`handler`](ExecutorNodeBuilder::handler) is answered with `200` and the
//!   [`RunResult`]; an [`async_handler`](ExecutorNodeBuilder::async_handler) is answered with `202 Accepted` at
//!   once and its result is sent later as a [`RunReport`] to `POST {report_url}/report` (with this node's id),
//!   retried with backoff on transport errors and `5xx` until the attempt's deadline (a `4xx` is logged and not
//!   retried). When the envelope has no `report_url` (the scheduler does not know its public URL), an async
//!   handler is answered synchronously instead.
//! * **Logs.** [`RunContext::log`] buffers lines and sends them, best effort, to `POST {report_url}/logs` (at the
//!   latest a second after they were written and before the result); what an async handler logged last travels
//!   in its report.
//! * **Registration.** With a [`scheduler`](ExecutorNodeBuilder::scheduler), the node registers at start
//!   (`POST /api/v1/executors`), heartbeats at the interval the scheduler asks for (re-registering when a
//!   heartbeat is answered `404`), and applies its declared [tasks](ExecutorNodeBuilder::task) (only when they
//!   differ from what is stored, so restarts do not touch them).
//! * **Drain.** When the shutdown future resolves, the node tells the scheduler it is draining, answers `503`
//!   (gRPC: `UNAVAILABLE`) to new dispatches, waits (up to the [drain timeout](ExecutorNodeBuilder::drain_timeout)) for running handlers
//!   and pending reports, removes its registration, and stops serving.
//!
//! # Transports
//!
//! Serving is split in two, so that another transport can be added without touching dispatch:
//!
//! * the **dispatch seam**, `ExecutorNode::handle(&self, envelope: RunEnvelope, path_hint: Option<&str>) ->
//!   Answer` (crate-internal, in this module): admission (a draining node answers `Answer::Draining`), routing,
//!   running the handler with panics caught, logs, the async report, and the in-flight count a drain waits for.
//!   `Answer` is `Completed(RunResult)`, `Accepted` or `Draining`;
//! * a **transport** that decodes a request into a [`RunEnvelope`], calls `handle`, and encodes the `Answer`.
//!   [`ExecutorNode::serve_http`] (module `http`) is the HTTP one: the request path is the hint, bad bodies are
//!   `400`, `Draining` is `503`. [`ExecutorNode::serve_grpc`] (module `grpc`, tonic) is the gRPC one
//!   (`rota.executor.v1.Executor/Run`, see `docs/protocols.md`): the request is converted with
//!   `RunEnvelope::try_from` (an error is `INVALID_ARGUMENT`), `handle(envelope, None)` routes by task, and
//!   `Answer::into_run_answer()` becomes the `v1::RunResponse`, `None` (draining) `UNAVAILABLE`.
//!
//! The lifecycle around serving (module `serve`: start the server, then registration, heartbeats, declared
//! tasks, drain, deregistration from module `lifecycle`) is shared: only the registration's `address` and
//! `protocol` (`http` / `grpc`) and the default target of declared tasks (`http.path` / `grpc: {}`) differ.

mod context;
mod grpc;
mod http;
mod lifecycle;
mod report;
mod serve;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use rota_proto::grpc::RunAnswer;
use rota_proto::{ResultStatus, RunEnvelope, RunReport, RunResult};
use serde_json::Value;

use crate::{Client, ClientError, TaskDocument};
pub use rota_proto::signing::SigningKey;

pub use context::RunContext;
pub use serve::Listen;

/// Default for [`ExecutorNodeBuilder::drain_timeout`]: 30 s.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for [`ExecutorNodeBuilder::log_flush_interval`]: 1 s.
pub const DEFAULT_LOG_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Why an executor node could not be built or could not (keep) serving.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// The builder was given something unusable (a bad URL, id, handler name or task document).
    #[error("invalid executor node configuration: {0}")]
    Config(String),
    /// The listen address could not be bound, or the listener failed.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The scheduler refused the registration (`400` invalid registration, `409` id taken by another service, …).
    /// [`ClientError::Api`] inside carries the server's code, message and field details.
    #[error("the scheduler refused to register executor node {id}: {source}")]
    Register {
        id: String,
        #[source]
        source: ClientError,
    },
    /// The scheduler refused a declared task.
    #[error("the scheduler refused task {task}: {source}")]
    ApplyTask {
        task: String,
        #[source]
        source: ClientError,
    },
    /// The HTTP or gRPC server stopped with an error.
    #[error("the executor node's server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// The error a handler returns: its message becomes the run's `error`.
///
/// Any `std::error::Error` converts into it, so `?` works on I/O, serde, reqwest, … errors; make one from a
/// message with [`HandlerError::msg`]. (Like `anyhow::Error`, it does not implement `std::error::Error` itself.)
pub struct HandlerError {
    message: String,
    output: Option<Value>,
}

impl HandlerError {
    /// An error with this message.
    pub fn msg(message: impl fmt::Display) -> Self {
        HandlerError { message: message.to_string(), output: None }
    }

    /// Keeps `output` as the failed run's output (e.g. partial results or diagnostics).
    pub fn with_output(mut self, output: Value) -> Self {
        self.output = Some(output).filter(|v| !v.is_null());
        self
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for HandlerError {
    fn from(e: E) -> Self {
        // The whole chain: "cannot read config: No such file or directory (os error 2)".
        let mut message = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            let next = s.to_string();
            if !message.contains(&next) {
                message.push_str(": ");
                message.push_str(&next);
            }
            source = s.source();
        }
        HandlerError { message, output: None }
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HandlerError({:?})", self.message)
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// What a handler returns: the run's output (`Value::Null` means none) or an error.
pub type HandlerResult = Result<Value, HandlerError>;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
type HandlerFn = Arc<dyn Fn(RunContext) -> BoxFuture<HandlerResult> + Send + Sync + 'static>;

type DeferFn = Arc<dyn Fn(&RunContext) -> bool + Send + Sync + 'static>;

#[derive(Clone)]
struct Handler {
    run: HandlerFn,
    mode: Mode,
}

/// How a handler is answered.
#[derive(Clone)]
enum Mode {
    Sync,
    Async,
    /// Async when the function says so for the run at hand.
    Decide(DeferFn),
}

/// The outcome of one dispatch, independent of the transport that carried it.
///
/// HTTP maps it to `200` + the result, `202` and `503`; gRPC maps it to its `RunResponse` and `UNAVAILABLE`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Answer {
    /// The run finished: send this result back now.
    Completed(RunResult),
    /// An async handler took the run; its result goes to the envelope's `report_url` later.
    Accepted,
    /// The node is draining and takes no new runs (the scheduler tries another node or retries).
    Draining,
}

impl Answer {
    /// The answer in the gRPC protocol's terms (`rota_proto::grpc::v1::RunResponse::from(answer)`), or `None`
    /// for [`Answer::Draining`], which a gRPC transport answers with status `UNAVAILABLE`.
    pub(crate) fn into_run_answer(self) -> Option<RunAnswer> {
        match self {
            Answer::Completed(result) => Some(RunAnswer::Completed(result)),
            Answer::Accepted => Some(RunAnswer::Accepted),
            Answer::Draining => None,
        }
    }
}

/// A task the node declares (applied after registration).
#[derive(Debug, Clone)]
struct DeclaredTask {
    key: String,
    /// The handler that serves it (routing by task key finds it, also without a path).
    handler: Option<String>,
    /// The document to apply for a node served over HTTP.
    document: Value,
    /// The document left `spec.target` out: a node served over gRPC applies `target: {grpc: {}}` instead.
    default_target: bool,
}

impl DeclaredTask {
    /// The document a node speaking `protocol` applies.
    fn document_for(&self, protocol: rota_proto::ExecutorProtocol) -> Value {
        let mut document = self.document.clone();
        if self.default_target
            && protocol == rota_proto::ExecutorProtocol::Grpc
            && let Some(target) = document.pointer_mut("/spec/target")
        {
            *target = serde_json::json!({"grpc": {}});
        }
        document
    }
}

/// Builder of an [`ExecutorNode`]; see [`ExecutorNode::builder`].
pub struct ExecutorNodeBuilder {
    service: String,
    scheduler: Option<String>,
    token: Option<String>,
    id: Option<String>,
    advertise: Option<String>,
    labels: BTreeMap<String, String>,
    weight: u32,
    capacity: u32,
    handlers: Vec<(String, Handler)>,
    tasks: Vec<(Option<String>, TaskDocument)>,
    drain_timeout: Duration,
    log_flush_interval: Duration,
    http: Option<reqwest::Client>,
    signing_keys: Vec<SigningKey>,
    tls: Option<rota_tls::ServerTls>,
    scheduler_ca: Option<std::path::PathBuf>,
}

impl ExecutorNodeBuilder {
    /// Verifies every dispatch against `key` (call again to accept several keys, e.g. while rotating): a
    /// dispatch whose signature is missing, does not match, is outside the ±300 s window or was already seen is
    /// refused — `401` over HTTP, `UNAUTHENTICATED` over gRPC — and its handler never runs. See
    /// `rota_proto::signing` and docs/security.md.
    pub fn signing_key(mut self, key: SigningKey) -> Self {
        self.signing_keys.push(key);
        self
    }

    /// Serves over TLS with this PEM certificate chain and key (the advertised address then defaults to
    /// `https://`).
    pub fn tls(mut self, cert: impl Into<std::path::PathBuf>, key: impl Into<std::path::PathBuf>) -> Self {
        self.tls = Some(rota_tls::ServerTls::new(cert, key));
        self
    }

    /// With [`tls`](Self::tls): requires every client (the scheduler) to present a certificate signed by the CA
    /// bundle at `ca` — mTLS, the alternative to (or companion of) [signed dispatches](Self::signing_key).
    pub fn tls_client_ca(mut self, ca: impl Into<std::path::PathBuf>) -> Self {
        self.tls = self.tls.map(|t| t.with_client_ca(ca, rota_tls::ClientCertMode::Required));
        self
    }

    /// Trusts the CA bundle at `ca` (PEM) for an `https://` scheduler, in addition to the system's roots
    /// (ignored when an [`http_client`](Self::http_client) is given).
    pub fn scheduler_ca_cert(mut self, ca: impl Into<std::path::PathBuf>) -> Self {
        self.scheduler_ca = Some(ca.into());
        self
    }
    /// The management API base URL of the scheduler cluster (`http://127.0.0.1:7070`; a load balancer in front
    /// of every scheduler node in a cluster). Without one the node only serves (tasks then name it in
    /// `candidates.static`).
    pub fn scheduler(mut self, base_url: impl Into<String>) -> Self {
        self.scheduler = Some(base_url.into());
        self
    }

    /// A bearer token sent (as `Authorization: Bearer …`) on every call to the scheduler: registration,
    /// heartbeats, tasks, logs and reports. `None` sends none.
    pub fn token(mut self, token: impl Into<Option<String>>) -> Self {
        self.token = token.into().filter(|t| !t.is_empty());
        self
    }

    /// The node id, unique in the cluster (`[A-Za-z0-9._:-]`, 1..=128 characters). Default: `{hostname}-{port}`
    /// (sanitised), chosen once per process.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// The URL the scheduler reaches this node at (`http://10.0.0.5:8080`). Default: `http://` + the
    /// listener's local address (a wildcard address such as `0.0.0.0` is advertised as `127.0.0.1`, which
    /// only a scheduler on the same host can reach: set this when the node listens on all interfaces).
    pub fn advertise(mut self, url: impl Into<String>) -> Self {
        self.advertise = Some(url.into());
        self
    }

    /// Labels a task's `dispatch.selector` can match (added to those given before).
    pub fn labels<K: Into<String>, V: Into<String>>(mut self, labels: impl IntoIterator<Item = (K, V)>) -> Self {
        self.labels.extend(labels.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Relative weight for `weighted` load balancing (1..=10000, default 1).
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Concurrent runs the node accepts, as told to the scheduler (`0`, the default, means unbounded).
    pub fn capacity(mut self, capacity: u32) -> Self {
        self.capacity = capacity;
        self
    }

    /// A handler answered synchronously: the scheduler waits for the result (bounded by the task's timeout).
    pub fn handler<F, Fut>(self, name: impl Into<String>, handler: F) -> Self
    where
        F: Fn(RunContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.add_handler(name.into(), handler, Mode::Sync)
    }

    /// A handler answered with `202 Accepted` at once; its result is reported to the scheduler when it returns
    /// (it must return before the attempt's deadline, [`RunContext::deadline`]).
    pub fn async_handler<F, Fut>(self, name: impl Into<String>, handler: F) -> Self
    where
        F: Fn(RunContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.add_handler(name.into(), handler, Mode::Async)
    }

    /// A handler answered asynchronously (like [`async_handler`](Self::async_handler)) for the runs where
    /// `defer` returns `true`, synchronously (like [`handler`](Self::handler)) for the others; e.g.
    /// `|ctx| ctx.param::<bool>("async").ok().flatten() == Some(true)`.
    pub fn deferrable_handler<D, F, Fut>(self, name: impl Into<String>, defer: D, handler: F) -> Self
    where
        D: Fn(&RunContext) -> bool + Send + Sync + 'static,
        F: Fn(RunContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.add_handler(name.into(), handler, Mode::Decide(Arc::new(defer)))
    }

    fn add_handler<F, Fut>(mut self, name: String, handler: F, mode: Mode) -> Self
    where
        F: Fn(RunContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        let run: HandlerFn = Arc::new(move |ctx| Box::pin(handler(ctx)));
        self.handlers.push((name, Handler { run, mode }));
        self
    }

    /// Declares a task this node runs (YAML or JSON text, a JSON value, or a [`rota_spec::Task`]), served by
    /// the handler named like the task (`metadata.name`). See [`task_for`](Self::task_for).
    pub fn task(mut self, document: impl Into<TaskDocument>) -> Self {
        self.tasks.push((None, document.into()));
        self
    }

    /// Declares a task served by `handler`. After registering, the node applies it with
    /// `PUT /api/v1/tasks/{namespace}/{name}`, filling in what the document leaves out: `apiVersion: rota/v1`,
    /// `kind: Task`, `spec.target` becomes
    /// `{http: {path: /{handler}}}` on a node served over HTTP (or just the `path` of an `http` target without
    /// `path` and `url`) and `{grpc: {}}` on a node served over gRPC (dispatches of the task then reach
    /// `handler` by the task's key), and `spec.candidates` becomes `{service: <this node's service>}`. A document identical to the stored one is
    /// not sent again (so a restart neither bumps its version nor moves its next fire time).
    pub fn task_for(mut self, handler: impl Into<String>, document: impl Into<TaskDocument>) -> Self {
        self.tasks.push((Some(handler.into()), document.into()));
        self
    }

    /// How long a shutdown waits for running handlers and pending reports before deregistering anyway
    /// (default 30 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// How long [`RunContext::log`] lines may wait in the buffer before they are sent (default 1 s).
    pub fn log_flush_interval(mut self, interval: Duration) -> Self {
        self.log_flush_interval = interval;
        self
    }

    /// Uses this `reqwest::Client` for every call to the scheduler (its TLS, proxy and pool settings; the
    /// [token](Self::token), if any, is still added to each request).
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// Checks the configuration and builds the node.
    pub fn build(self) -> Result<ExecutorNode, ExecutorError> {
        let config = |m: String| ExecutorError::Config(m);
        if self.service.trim().is_empty() {
            return Err(config("the service name must not be empty".into()));
        }
        if let Some(id) = &self.id {
            check_node_id(id).map_err(config)?;
        }
        if !(1..=10_000).contains(&self.weight) {
            return Err(config(format!("weight must be in 1..=10000, got {}", self.weight)));
        }
        if let Some(url) = &self.advertise {
            let parsed = reqwest::Url::parse(url).map_err(|e| config(format!("advertise URL {url:?}: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
                return Err(config(format!("advertise URL {url:?}: expected http(s)://host:port")));
            }
        }
        let mut handlers = HashMap::new();
        for (name, handler) in self.handlers {
            if name.is_empty() || name.contains('/') && name.split('/').count() != 2 {
                return Err(config(format!("handler name {name:?}: expected `name` or `namespace/name`")));
            }
            if handlers.insert(name.clone(), handler).is_some() {
                return Err(config(format!("handler {name:?} is registered twice")));
            }
        }

        let mut auth = HeaderMap::new();
        if let Some(token) = &self.token {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| config("the token is not a valid header value (value not shown)".into()))?;
            value.set_sensitive(true);
            auth.insert(AUTHORIZATION, value);
        }
        let http = match self.http {
            Some(c) => c,
            None => {
                rota_tls::install_crypto_provider();
                let mut builder = reqwest::Client::builder()
                    .user_agent(concat!("rota-sdk/", env!("CARGO_PKG_VERSION")))
                    .connect_timeout(Duration::from_secs(10))
                    .timeout(Duration::from_secs(30));
                if let Some(ca) = &self.scheduler_ca {
                    let tls = rota_tls::ClientTls::with_ca(ca).map_err(|e| config(e.to_string()))?;
                    let certs = reqwest::Certificate::from_pem_bundle(tls.ca_pem().unwrap_or_default())
                        .map_err(|e| config(format!("CA bundle {}: {e}", ca.display())))?;
                    builder = builder.tls_certs_merge(certs);
                }
                builder.build().map_err(|e| config(format!("cannot build the HTTP client: {e}")))?
            }
        };
        let tls = match &self.tls {
            Some(t) => Some(t.server_config().map_err(|e| config(format!("TLS: {e}")))?),
            None => None,
        };
        let verifier = if self.signing_keys.is_empty() {
            None
        } else {
            Some(Arc::new(rota_proto::signing::Verifier::new(self.signing_keys)))
        };
        let scheduler = match &self.scheduler {
            Some(url) => Some(
                Client::with_http_client(url, http.clone())
                    .and_then(|c| c.with_token(self.token.as_deref()))
                    .map_err(|e| config(e.to_string()))?,
            ),
            None => None,
        };
        if scheduler.is_none() && !self.tasks.is_empty() {
            return Err(config("declaring tasks needs a scheduler (ExecutorNodeBuilder::scheduler)".into()));
        }
        let mut tasks = Vec::new();
        for (handler, document) in self.tasks {
            tasks.push(declare_task(&self.service, handler.as_deref(), &document, &handlers).map_err(config)?);
        }
        let task_handlers = tasks.iter().filter_map(|t| Some((t.key.clone(), t.handler.clone()?))).collect();
        Ok(ExecutorNode {
            inner: Arc::new(Inner {
                service: self.service,
                configured_id: self.id,
                id: OnceLock::new(),
                advertise: self.advertise,
                labels: self.labels,
                weight: self.weight,
                capacity: self.capacity,
                handlers,
                tasks,
                task_handlers,
                scheduler,
                http,
                auth,
                drain_timeout: self.drain_timeout,
                log_flush_interval: self.log_flush_interval,
                draining: AtomicBool::new(false),
                in_flight: tokio::sync::watch::Sender::new(0),
                verifier,
                tls,
            }),
        })
    }
}

/// An executor node: a set of named handlers plus its identity towards the scheduler. Cheap to clone (clones
/// share everything, including the in-flight count).
#[derive(Clone)]
pub struct ExecutorNode {
    inner: Arc<Inner>,
}

struct Inner {
    service: String,
    configured_id: Option<String>,
    id: OnceLock<String>,
    advertise: Option<String>,
    labels: BTreeMap<String, String>,
    weight: u32,
    capacity: u32,
    handlers: HashMap<String, Handler>,
    tasks: Vec<DeclaredTask>,
    /// `namespace/name` of each declared task → the handler serving it.
    task_handlers: HashMap<String, String>,
    scheduler: Option<Client>,
    /// Client of every call to the scheduler (management API, logs, reports).
    http: reqwest::Client,
    /// `Authorization` header of calls to the scheduler, when a token is configured.
    auth: HeaderMap,
    drain_timeout: Duration,
    log_flush_interval: Duration,
    draining: AtomicBool,
    /// Handlers running plus async reports not yet delivered.
    in_flight: tokio::sync::watch::Sender<usize>,
    /// Checks the signature of every dispatch, when signing keys are configured.
    verifier: Option<Arc<rota_proto::signing::Verifier>>,
    /// Serve over TLS.
    tls: Option<Arc<rota_tls::rustls::ServerConfig>>,
}

impl fmt::Debug for ExecutorNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut handlers: Vec<&String> = self.inner.handlers.keys().collect();
        handlers.sort();
        f.debug_struct("ExecutorNode")
            .field("service", &self.inner.service)
            .field("id", &self.inner.id.get().or(self.inner.configured_id.as_ref()))
            .field("handlers", &handlers)
            .finish_non_exhaustive()
    }
}

impl ExecutorNode {
    /// A builder for a node of `service` (the name tasks use in `candidates.service`).
    pub fn builder(service: impl Into<String>) -> ExecutorNodeBuilder {
        ExecutorNodeBuilder {
            service: service.into(),
            scheduler: None,
            token: None,
            id: None,
            advertise: None,
            labels: BTreeMap::new(),
            weight: 1,
            capacity: 0,
            handlers: Vec::new(),
            tasks: Vec::new(),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            log_flush_interval: DEFAULT_LOG_FLUSH_INTERVAL,
            http: None,
            signing_keys: Vec::new(),
            tls: None,
            scheduler_ca: None,
        }
    }

    /// The service the node belongs to.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// The node id: the configured one, else `{hostname}-{port}` once serving (before that, with no id
    /// configured, `{hostname}-{random}`). Fixed at its first use, for the life of the process.
    pub fn id(&self) -> &str {
        self.resolve_id(None)
    }

    /// The names of the handlers, sorted.
    pub fn handlers(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.inner.handlers.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// Handlers running now plus asynchronous reports not delivered yet.
    pub fn in_flight(&self) -> usize {
        *self.inner.in_flight.borrow()
    }

    /// Whether the node is draining (shutting down: new dispatches are refused).
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// Checks a dispatch's signature when signing keys are configured (`Ok` without them).
    pub(crate) fn verify_dispatch<'h>(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        header: impl Fn(&str) -> Option<&'h str>,
    ) -> Result<(), rota_proto::signing::SignatureError> {
        match &self.inner.verifier {
            Some(v) => v.verify(method, path, body, header, chrono::Utc::now().timestamp()),
            None => Ok(()),
        }
    }

    /// The TLS configuration to serve with, if any.
    pub(crate) fn tls_config(&self) -> Option<Arc<rota_tls::rustls::ServerConfig>> {
        self.inner.tls.clone()
    }

    fn resolve_id(&self, port: Option<u16>) -> &str {
        self.inner.id.get_or_init(|| {
            if let Some(id) = &self.inner.configured_id {
                return id.clone();
            }
            let suffix = match port {
                Some(p) => p.to_string(),
                None => format!("{:08x}", random_u64() as u32),
            };
            sanitize_id(&format!("{}-{suffix}", hostname()))
        })
    }

    /// **The dispatch seam.** Runs one dispatched attempt and says what to answer, independently of the
    /// transport that carried it: the HTTP server (`http.rs`) calls it with the request path as `path_hint`, the
    /// gRPC server (`grpc.rs`) with the envelope converted from its request and `None` (routing by task).
    ///
    /// * Admission: a draining node answers [`Answer::Draining`] without running anything.
    /// * Routing: the last non-empty segment of `path_hint`, else the handler of the declared task with this
    ///   key, else the task's name, else the full `namespace/name`; no match is a `failed` result naming the
    ///   handler.
    /// * Sync handlers run to completion (a panic or `Err` is a `failed` result) and their logs are flushed
    ///   before the result is returned. Async handlers are spawned (answer [`Answer::Accepted`]); their result is
    ///   reported to `{report_url}/report`. Both count as in flight until done, which is what a drain waits for.
    pub(crate) async fn handle(&self, envelope: RunEnvelope, path_hint: Option<&str>) -> Answer {
        let guard = InFlight::enter(&self.inner);
        if self.is_draining() {
            return Answer::Draining;
        }
        let (name, handler) = match self.route(&envelope.task, path_hint) {
            Ok(found) => found,
            Err(message) => {
                tracing::warn!(run_id = %envelope.run_id, task = %envelope.task, "{message}");
                return Answer::Completed(RunResult::failed(message));
            }
        };
        let node_id = self.id().to_string();
        tracing::debug!(run_id = %envelope.run_id, task = %envelope.task, attempt = envelope.attempt,
            handler = %name, "dispatch");
        let has_report_url = envelope.report_url.is_some();
        let ctx = RunContext::new(
            envelope,
            node_id,
            self.inner.http.clone(),
            self.inner.auth.clone(),
            self.inner.log_flush_interval,
        );
        let wants_async = match &handler.mode {
            Mode::Sync => false,
            Mode::Async => true,
            Mode::Decide(defer) => defer(&ctx),
        };
        let run_async = wants_async && has_report_url;
        if wants_async && !run_async {
            tracing::warn!(run_id = %ctx.run_id(), handler = %name,
                "the envelope has no report_url (the scheduler has no public URL): answering synchronously");
        }
        if run_async {
            let inner = self.inner.clone();
            tokio::spawn(async move {
                let result = run_handler(None, &handler, ctx.clone(), &name).await;
                let logs = ctx.take_unsent_logs().await;
                let envelope = ctx.envelope();
                let report = RunReport {
                    attempt: envelope.attempt,
                    status: result.status,
                    output: result.output,
                    error: result.error,
                    logs,
                    node: Some(ctx.node_id().to_string()),
                };
                let url = format!("{}/report", envelope.report_url.as_deref().unwrap_or_default());
                report::deliver(&inner.http, &inner.auth, &url, &report, &envelope.run_id, envelope.deadline).await;
                drop(guard);
            });
            Answer::Accepted
        } else {
            // The guard moves to the handler's task: the run stays in flight until the handler returns, even if
            // this future is dropped (the scheduler stopped waiting).
            let result = run_handler(Some(guard), &handler, ctx.clone(), &name).await;
            ctx.finish_logs().await;
            Answer::Completed(result)
        }
    }

    fn route(&self, task: &str, path_hint: Option<&str>) -> Result<(String, Handler), String> {
        let segment = path_hint
            .map(|p| p.split(['?', '#']).next().unwrap_or_default())
            .and_then(|p| p.split('/').rev().find(|s| !s.is_empty()));
        let name = task.rsplit_once('/').map_or(task, |(_, n)| n);
        let declared = self.inner.task_handlers.get(task).map(String::as_str);
        for candidate in [segment, declared, Some(name), Some(task)].into_iter().flatten() {
            if let Some(h) = self.inner.handlers.get(candidate) {
                return Ok((candidate.to_string(), h.clone()));
            }
        }
        let wanted = segment.unwrap_or(name);
        Err(format!(
            "no handler {wanted:?} on executor node {} (service {}; handlers: {})",
            self.id(),
            self.inner.service,
            if self.inner.handlers.is_empty() { "none".to_string() } else { self.handlers().join(", ") }
        ))
    }
}

/// Runs a handler on its own task, so that a panic becomes a `failed` result instead of taking the node down.
/// `guard`, when given, is released when the handler returns.
async fn run_handler(guard: Option<InFlight>, handler: &Handler, ctx: RunContext, name: &str) -> RunResult {
    let run_id = ctx.run_id().to_string();
    let run = (handler.run)(ctx);
    let joined = tokio::spawn(async move {
        let _guard = guard;
        run.await
    })
    .await;
    let result = match joined {
        Ok(Ok(output)) => RunResult::succeeded(Some(output).filter(|v| !v.is_null())),
        Ok(Err(e)) => RunResult { status: ResultStatus::Failed, output: e.output, error: Some(e.message) },
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".to_string());
            RunResult::failed(format!("handler {name:?} panicked: {what}"))
        }
        Err(_) => RunResult::failed(format!("handler {name:?} was cancelled")),
    };
    tracing::debug!(run_id = %run_id, handler = %name, status = ?result.status, "handler finished");
    result
}

/// Counts a dispatch as in flight for as long as it lives.
struct InFlight {
    inner: Arc<Inner>,
}

impl InFlight {
    fn enter(inner: &Arc<Inner>) -> InFlight {
        inner.in_flight.send_modify(|n| *n += 1);
        InFlight { inner: inner.clone() }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.inner.in_flight.send_modify(|n| *n -= 1);
    }
}

/// Builds the document of a declared task: fills `spec.target` / `spec.candidates`, checks a handler serves it.
fn declare_task(
    service: &str,
    handler: Option<&str>,
    document: &TaskDocument,
    handlers: &HashMap<String, Handler>,
) -> Result<DeclaredTask, String> {
    let mut value = document.to_value().map_err(|e| format!("task document: {e}"))?;
    let (namespace, name) = document.key().map_err(|e| format!("task document: {e}"))?;
    let key = format!("{namespace}/{name}");
    let handler = handler.unwrap_or(&name).to_string();
    let doc = value.as_object_mut().ok_or("task document: must be a mapping")?;
    doc.entry("apiVersion").or_insert_with(|| Value::String("rota/v1".into()));
    doc.entry("kind").or_insert_with(|| Value::String("Task".into()));
    let spec = doc.entry("spec").or_insert_with(|| Value::Object(Default::default()));
    if spec.is_null() {
        *spec = Value::Object(Default::default());
    }
    let spec = spec.as_object_mut().ok_or_else(|| format!("task {key}: spec must be a mapping"))?;
    let target = spec.entry("target").or_insert(Value::Null);
    let default_target = target.is_null();
    if default_target {
        *target = serde_json::json!({"http": {}});
    }
    let target = target.as_object_mut().ok_or_else(|| format!("task {key}: spec.target must be a mapping"))?;
    let is_container = target.get("container").is_some_and(|c| !c.is_null());
    let is_grpc = target.get("grpc").is_some_and(|c| !c.is_null());
    let mut routed_path = None;
    if let Some(http) = target.get_mut("http").and_then(Value::as_object_mut) {
        let has = |k: &str| http.get(k).is_some_and(|v| !v.is_null());
        if !has("path") && !has("url") {
            http.insert("path".into(), Value::String(format!("/{handler}")));
        }
        routed_path = http.get("path").and_then(Value::as_str).map(str::to_string);
    }
    if !is_container {
        let candidates = spec.entry("candidates").or_insert(Value::Null);
        if candidates.is_null() {
            *candidates = serde_json::json!({});
        }
        if let Some(c) = candidates.as_object_mut() {
            let has = |k: &str| c.get(k).is_some_and(|v| !v.is_null());
            if !has("service") && !has("static") {
                c.insert("service".into(), Value::String(service.to_string()));
            }
        }
    }
    let handler_names = || {
        let mut names: Vec<&str> = handlers.keys().map(String::as_str).collect();
        names.sort_unstable();
        names.join(", ")
    };
    // A gRPC dispatch (the default target on a node served over gRPC, or a `grpc` target) has no path: it is
    // routed by the task key to the declared handler (else by the task's name or key).
    let serving = [handler.as_str(), name.as_str(), key.as_str()].into_iter().find(|n| handlers.contains_key(*n));
    if (default_target || is_grpc) && serving.is_none() {
        return Err(format!("task {key}: no handler serves it (handler {handler:?}; handlers: {})", handler_names()));
    }
    let serving = serving.map(str::to_string);
    // The dispatch must find a handler: by the path's last segment, the task name or its key.
    if let Some(path) = &routed_path {
        let segment = path.split(['?', '#']).next().unwrap_or_default().split('/').rev().find(|s| !s.is_empty());
        let found =
            [segment, Some(name.as_str()), Some(key.as_str())].into_iter().flatten().any(|n| handlers.contains_key(n));
        if !found {
            return Err(format!(
                "task {key}: no handler serves it (path {path:?}, handler {handler:?}; handlers: {})",
                handler_names()
            ));
        }
    }
    Ok(DeclaredTask { key, handler: serving, document: value, default_target })
}

fn check_node_id(id: &str) -> Result<(), String> {
    let ok = (1..=128).contains(&id.len())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'));
    if ok { Ok(()) } else { Err(format!("node id {id:?}: expected 1..=128 characters of [A-Za-z0-9._:-]")) }
}

fn sanitize_id(raw: &str) -> String {
    let s: String = raw
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-') { c } else { '-' })
        .collect();
    let s = s.trim_matches('-');
    let s: String = s.chars().take(128).collect();
    if s.is_empty() { "executor".into() } else { s }
}

/// The host name: `$HOSTNAME`, else the kernel's (Linux), else `/etc/hostname`, else `executor`.
fn hostname() -> String {
    let from_env = std::env::var("HOSTNAME").ok();
    let from_files =
        || ["/proc/sys/kernel/hostname", "/etc/hostname"].iter().find_map(|p| std::fs::read_to_string(p).ok());
    from_env
        .or_else(from_files)
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "executor".to_string())
}

/// A random number without a dependency: the standard library's randomly keyed hasher.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.finish()
}

#[cfg(test)]
mod tests;
