//! The gRPC protocol against real tonic servers on 127.0.0.1.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rota_core::{Dispatch, DispatchOutcome, Executor, NodeEndpoint};
use rota_executor::{GrpcProtocol, GrpcProtocolConfig, HttpExecutorConfig, Protocol, ProtocolExecutor, Router};
use rota_proto::grpc::{RunAnswer, v1};
use rota_proto::{RunEnvelope, RunResult, ShardInfo};
use rota_spec::{GrpcTarget, Target, TargetKind};
use serde_json::{Value, json};
use tonic::metadata::MetadataMap;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use v1::executor_server::ExecutorServer;

/// One call as the node saw it.
#[derive(Debug, Clone)]
struct Seen {
    request: v1::RunRequest,
    metadata: MetadataMap,
    peer: Option<SocketAddr>,
}

#[derive(Clone)]
enum Behaviour {
    Answer(v1::RunResponse),
    Status(tonic::Code, &'static str),
    Hang,
}

#[derive(Clone)]
struct Node {
    seen: Arc<Mutex<Vec<Seen>>>,
    behaviour: Behaviour,
}

#[tonic::async_trait]
impl v1::executor_server::Executor for Node {
    async fn run(
        &self,
        request: tonic::Request<v1::RunRequest>,
    ) -> Result<tonic::Response<v1::RunResponse>, tonic::Status> {
        let peer = request.remote_addr();
        let metadata = request.metadata().clone();
        self.seen.lock().unwrap().push(Seen { request: request.into_inner(), metadata, peer });
        match &self.behaviour {
            Behaviour::Answer(response) => Ok(tonic::Response::new(response.clone())),
            Behaviour::Status(code, message) => Err(tonic::Status::new(*code, *message)),
            Behaviour::Hang => {
                std::future::pending::<()>().await;
                unreachable!()
            }
        }
    }
}

async fn listen() -> (tokio::net::TcpListener, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// A Rota executor node answering every call with `behaviour`, recording what it received.
async fn node(behaviour: Behaviour) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let service = ExecutorServer::new(Node { seen: seen.clone(), behaviour });
    let (listener, addr) = listen().await;
    tokio::spawn(Server::builder().add_service(service).serve_with_incoming(TcpIncoming::from(listener)));
    (addr, seen)
}

async fn answering(answer: RunAnswer) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    node(Behaviour::Answer(answer.into())).await
}

/// A raw `rota.executor.v1.Executor` service whose every answer is a well-framed message that is not protobuf.
#[derive(Clone)]
struct Garbage;

impl tonic::server::NamedService for Garbage {
    const NAME: &'static str = "rota.executor.v1.Executor";
}

impl tonic::codegen::Service<axum::http::Request<tonic::body::Body>> for Garbage {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: axum::http::Request<tonic::body::Body>) -> Self::Future {
        // Compressed flag 0, length 3, then an unterminated varint tag.
        let frame = vec![0, 0, 0, 0, 3, 0xff, 0xff, 0xff];
        let response = axum::http::Response::builder()
            .header("content-type", "application/grpc")
            .body(axum::body::Body::from(frame))
            .unwrap();
        std::future::ready(Ok(response))
    }
}

/// A gRPC server that serves some other service only.
#[derive(Clone)]
struct Other;

impl tonic::server::NamedService for Other {
    const NAME: &'static str = "acme.other.v1.Other";
}

impl tonic::codegen::Service<axum::http::Request<tonic::body::Body>> for Other {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: axum::http::Request<tonic::body::Body>) -> Self::Future {
        unreachable!("nothing calls the other service")
    }
}

fn dispatch_to(address: Option<String>) -> Dispatch {
    Dispatch {
        run_id: 42,
        attempt: 2,
        namespace: "billing".into(),
        name: "nightly".into(),
        scheduled_at: "2026-11-25T02:30:00Z".parse().unwrap(),
        params: serde_json::from_value(json!({"report": "daily", "n": 7, "tags": ["a", "b"], "deep": {"x": null}}))
            .unwrap(),
        shard: ShardInfo { index: 1, total: 3 },
        deadline: "2026-11-25T02:40:00.250Z".parse().unwrap(),
        timeout: Duration::from_secs(10),
        target: Target { grpc: Some(GrpcTarget::default()), ..Target::default() },
        node: address.map(|a| NodeEndpoint { id: "node-1".into(), address: a }),
        report_url: Some("http://rota.example:8080/api/v1/runs/42".into()),
    }
}

fn dispatch(addr: SocketAddr) -> Dispatch {
    dispatch_to(Some(addr.to_string()))
}

fn protocol() -> GrpcProtocol {
    GrpcProtocol::new(GrpcProtocolConfig::default()).unwrap()
}

fn executor(protocol: GrpcProtocol) -> ProtocolExecutor {
    ProtocolExecutor::new(Arc::new(protocol))
}

fn failure(outcome: DispatchOutcome) -> String {
    match outcome {
        DispatchOutcome::Failed { error } => {
            assert!(!error.contains("s3cret"), "secret leaked into {error:?}");
            error
        }
        other => panic!("expected Failed, got {other:?}"),
    }
}

fn only(seen: &Arc<Mutex<Vec<Seen>>>) -> Seen {
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "expected exactly one call, got {seen:?}");
    seen[0].clone()
}

fn metadata<'a>(seen: &'a Seen, name: &str) -> &'a str {
    seen.metadata.get(name).unwrap_or_else(|| panic!("no {name} metadata")).to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_with_output_and_the_envelope_intact() {
    let output = json!({"rows": 3, "big": 12345678901234567890u64, "names": ["a", "ü"]});
    let (addr, seen) = answering(RunAnswer::Completed(RunResult::succeeded(Some(output.clone())))).await;
    let outcome = executor(protocol()).dispatch(dispatch(addr)).await;
    assert_eq!(outcome, DispatchOutcome::Completed(RunResult::succeeded(Some(output))));

    let call = only(&seen);
    let request = call.request.clone();
    assert_eq!(request.run_id, "42");
    assert_eq!(request.task, "billing/nightly");
    assert_eq!(request.attempt, 2);
    assert_eq!(request.scheduled_at, "2026-11-25T02:30:00Z");
    assert_eq!(request.deadline, "2026-11-25T02:40:00.250Z");
    assert_eq!(request.shard, Some(v1::Shard { index: 1, total: 3 }));
    assert_eq!(request.report_url.as_deref(), Some("http://rota.example:8080/api/v1/runs/42"));
    let params: Value = serde_json::from_str(&request.params_json).unwrap();
    assert_eq!(params, json!({"report": "daily", "n": 7, "tags": ["a", "b"], "deep": {"x": null}}));

    // The node gets exactly the JSON protocol's envelope back.
    let d = dispatch(addr);
    let envelope = RunEnvelope::try_from(request).unwrap();
    assert_eq!(
        envelope,
        RunEnvelope {
            run_id: "42".into(),
            task: "billing/nightly".into(),
            attempt: 2,
            scheduled_at: d.scheduled_at,
            params: d.params,
            shard: d.shard,
            deadline: d.deadline,
            report_url: d.report_url,
        }
    );

    assert_eq!(metadata(&call, "x-rota-run-id"), "42");
    assert_eq!(metadata(&call, "x-rota-attempt"), "2");
    assert!(metadata(&call, "user-agent").starts_with(&format!("rota/{}", env!("CARGO_PKG_VERSION"))));
    // The gRPC deadline is the attempt's timeout (10 s), in tonic's encoding (at most 8 digits and a unit).
    let grpc_timeout = metadata(&call, "grpc-timeout");
    let (digits, unit) = grpc_timeout.split_at(grpc_timeout.len() - 1);
    let nanos_per_unit: u64 = match unit {
        "H" => 3_600_000_000_000,
        "M" => 60_000_000_000,
        "S" => 1_000_000_000,
        "m" => 1_000_000,
        "u" => 1_000,
        "n" => 1,
        other => panic!("unknown grpc-timeout unit {other:?}"),
    };
    let timeout = Duration::from_nanos(digits.parse::<u64>().unwrap() * nanos_per_unit);
    assert!(timeout > Duration::from_secs(9) && timeout <= Duration::from_secs(10), "{grpc_timeout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_result_without_report_url() {
    let (addr, seen) = answering(RunAnswer::Completed(RunResult::failed("boom"))).await;
    let mut d = dispatch_to(Some(format!("grpc://{addr}")));
    d.report_url = None;
    d.params = serde_json::Map::new();
    let outcome = executor(protocol()).dispatch(d).await;
    assert_eq!(outcome, DispatchOutcome::Completed(RunResult::failed("boom")));
    let request = only(&seen).request;
    assert_eq!(request.report_url, None);
    assert_eq!(request.params_json, "{}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_means_an_asynchronous_report() {
    let (addr, seen) = answering(RunAnswer::Accepted).await;
    let outcome = executor(protocol()).dispatch(dispatch_to(Some(format!("http://{addr}")))).await;
    assert_eq!(outcome, DispatchOutcome::Accepted);
    assert_eq!(only(&seen).request.report_url.as_deref(), Some("http://rota.example:8080/api/v1/runs/42"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_down_fails_with_a_clear_message() {
    let (listener, addr) = listen().await;
    drop(listener);
    let error = failure(executor(protocol()).dispatch(dispatch(addr)).await);
    assert!(error.starts_with(&format!("could not connect to http://{addr}")), "{error}");
    assert!(error.to_lowercase().contains("refused"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_answering_after_the_timeout_is_timed_out() {
    let (addr, seen) = node(Behaviour::Hang).await;
    let mut d = dispatch(addr);
    d.timeout = Duration::from_millis(300);
    let started = Instant::now();
    let outcome = executor(protocol()).dispatch(d).await;
    let elapsed = started.elapsed();
    assert_eq!(outcome, DispatchOutcome::TimedOut);
    assert!(elapsed >= Duration::from_millis(290), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(2000), "{elapsed:?}");
    // The node was told the deadline.
    assert!(only(&seen).metadata.get("grpc-timeout").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_protocol_alone_maps_the_nodes_deadline_to_timed_out() {
    // Without the executor's own timer, the deadline sent to the node ends the call.
    let (addr, _) = node(Behaviour::Status(tonic::Code::DeadlineExceeded, "too slow")).await;
    assert_eq!(protocol().send(&dispatch(addr)).await, DispatchOutcome::TimedOut);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_timeout_is_timed_out_without_calling() {
    let (addr, seen) = answering(RunAnswer::Accepted).await;
    let mut d = dispatch(addr);
    d.timeout = Duration::ZERO;
    assert_eq!(executor(protocol()).dispatch(d).await, DispatchOutcome::TimedOut);
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unimplemented_service_fails() {
    // A gRPC server without the Rota service.
    let (listener, addr) = listen().await;
    tokio::spawn(Server::builder().add_service(Other).serve_with_incoming(TcpIncoming::from(listener)));
    let error = failure(executor(protocol()).dispatch(dispatch(addr)).await);
    assert!(
        error.starts_with(&format!(
            "executor at http://{addr} answered gRPC UNIMPLEMENTED: it does not serve rota.executor.v1.Executor/Run"
        )),
        "{error}"
    );

    // A Rota node asked for a service it does not serve.
    let (addr, seen) = answering(RunAnswer::Accepted).await;
    let mut d = dispatch(addr);
    d.target.grpc = Some(GrpcTarget { service: Some("acme.jobs.v1.Worker".into()), method: Some("Execute".into()) });
    let error = failure(executor(protocol()).dispatch(d).await);
    assert!(error.ends_with("UNIMPLEMENTED: it does not serve acme.jobs.v1.Worker/Execute"), "{error}");
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_answers_fail() {
    let (listener, addr) = listen().await;
    tokio::spawn(Server::builder().add_service(Garbage).serve_with_incoming(TcpIncoming::from(listener)));
    let error = failure(executor(protocol()).dispatch(dispatch(addr)).await);
    assert!(error.starts_with("executor returned an undecodable answer: "), "{error}");

    // Valid protobuf whose content is not a result.
    let invalid = [
        (v1::RunResponse { outcome: None }, "executor returned an invalid result: the response has neither"),
        (
            v1::RunResponse { outcome: Some(v1::run_response::Outcome::Result(v1::RunResult::default())) },
            "executor returned an invalid result: unknown result status 0",
        ),
        (
            v1::RunResponse {
                outcome: Some(v1::run_response::Outcome::Result(v1::RunResult {
                    status: v1::ResultStatus::Succeeded.into(),
                    output_json: Some("{not json".into()),
                    error: None,
                })),
            },
            "executor returned an invalid result: output_json is not valid JSON: ",
        ),
    ];
    for (response, expected) in invalid {
        let (addr, _) = node(Behaviour::Answer(response)).await;
        let error = failure(executor(protocol()).dispatch(dispatch(addr)).await);
        assert!(error.starts_with(expected), "{error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_statuses_fail_with_code_and_sanitised_message() {
    let (addr, _) = node(Behaviour::Status(tonic::Code::ResourceExhausted, "queue\nfull")).await;
    let error = failure(executor(protocol()).dispatch(dispatch(addr)).await);
    assert_eq!(error, "executor answered gRPC RESOURCE_EXHAUSTED: queue full");

    let (addr, _) = node(Behaviour::Status(tonic::Code::InvalidArgument, "")).await;
    let error = failure(executor(protocol()).dispatch(dispatch(addr)).await);
    assert_eq!(error, "executor answered gRPC INVALID_ARGUMENT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_answers_fail() {
    let big = json!("x".repeat(64 * 1024));
    let (addr, _) = answering(RunAnswer::Completed(RunResult::succeeded(Some(big)))).await;
    let config = GrpcProtocolConfig { max_response_bytes: 16 * 1024, ..GrpcProtocolConfig::default() };
    let error = failure(executor(GrpcProtocol::new(config).unwrap()).dispatch(dispatch(addr)).await);
    assert_eq!(error, "executor response too large: the message exceeds 16384 bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_channel_per_node_is_reused_across_calls() {
    let (addr, seen) = answering(RunAnswer::Completed(RunResult::succeeded(None))).await;
    let protocol = protocol();
    let exec = executor(protocol.clone());
    // The three spellings of one address share one channel.
    for address in [addr.to_string(), format!("http://{addr}"), format!("grpc://{addr}/")].iter().cycle().take(9) {
        let outcome = exec.dispatch(dispatch_to(Some(address.clone()))).await;
        assert_eq!(outcome, DispatchOutcome::Completed(RunResult::succeeded(None)));
    }
    assert_eq!(protocol.cached_channels(), 1);
    let peers: std::collections::HashSet<Option<SocketAddr>> = seen.lock().unwrap().iter().map(|s| s.peer).collect();
    assert_eq!(peers.len(), 1, "expected one HTTP/2 connection, got {peers:?}");
    assert!(peers.iter().all(Option::is_some));

    // Another node gets its own channel.
    let (other, _) = answering(RunAnswer::Accepted).await;
    assert_eq!(exec.dispatch(dispatch(other)).await, DispatchOutcome::Accepted);
    assert_eq!(protocol.cached_channels(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misconfigured_dispatches_fail_without_calling() {
    let (addr, seen) = answering(RunAnswer::Accepted).await;
    let exec = executor(protocol());

    let error = failure(exec.dispatch(dispatch_to(None)).await);
    assert_eq!(error, "a grpc target needs an executor node, and none was chosen");

    // TLS to a plaintext node: the handshake fails, naming the origin.
    let error = failure(exec.dispatch(dispatch_to(Some(format!("https://{addr}")))).await);
    assert!(error.starts_with(&format!("could not connect to https://{addr}")), "{error}");

    let error = failure(exec.dispatch(dispatch_to(Some(format!("http://user:s3cret@{addr}")))).await);
    assert!(error.contains("credentials"), "{error}");

    let mut d = dispatch(addr);
    d.target.grpc = Some(GrpcTarget { service: Some("not a/service".into()), method: None });
    let error = failure(exec.dispatch(d).await);
    assert!(error.starts_with("target.grpc.service: invalid gRPC service name"), "{error}");

    let mut d = dispatch(addr);
    d.target = Target::default();
    let error = failure(exec.dispatch(d).await);
    assert_eq!(error, "the gRPC protocol was given a target without `grpc`");
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standard_router_sends_grpc_targets_over_grpc() {
    let router = Router::standard(HttpExecutorConfig::default()).unwrap();
    assert!(router.supports(TargetKind::Grpc));
    let (addr, seen) = answering(RunAnswer::Completed(RunResult::succeeded(Some(json!(1))))).await;
    let outcome = router.dispatch(dispatch(addr)).await;
    assert_eq!(outcome, DispatchOutcome::Completed(RunResult::succeeded(Some(json!(1)))));
    assert_eq!(only(&seen).request.run_id, "42");

    // The explicit default names are the same call.
    let mut d = dispatch(addr);
    d.target.grpc = Some(GrpcTarget { service: Some("rota.executor.v1.Executor".into()), method: Some("Run".into()) });
    assert_eq!(router.dispatch(d).await, DispatchOutcome::Completed(RunResult::succeeded(Some(json!(1)))));
}
