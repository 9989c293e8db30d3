//! The HTTP executor against real HTTP servers on 127.0.0.1.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use rota_core::{Dispatch, DispatchOutcome, Executor, NodeEndpoint};
use rota_executor::{HttpExecutor, HttpExecutorConfig, RAW_OUTPUT_LIMIT, Router};
use rota_proto::{RunResult, ShardInfo};
use rota_spec::{ContainerTarget, GrpcTarget, HttpMethod, HttpProtocol, HttpTarget, Target, TargetKind};
use serde_json::{Value, json};

const SECRET: &str = "Bearer s3cret-token";

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    headers: HeaderMap,
    body: Bytes,
    peer: SocketAddr,
}

#[derive(Clone)]
struct Recorder {
    seen: Arc<Mutex<Vec<Seen>>>,
    status: StatusCode,
    body: &'static str,
}

async fn record(State(rec): State<Recorder>, ConnectInfo(peer): ConnectInfo<SocketAddr>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    rec.seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: parts.headers,
        body,
        peer,
    });
    (rec.status, rec.body).into_response()
}

async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await.unwrap();
    });
    addr
}

/// A server answering every request with `status` and `body`, recording what it received.
async fn recording(status: StatusCode, body: &'static str) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new().fallback(record).with_state(Recorder { seen: seen.clone(), status, body });
    (serve(app).await, seen)
}

/// A server answering every request with a handler.
async fn answering<H, T>(handler: H) -> SocketAddr
where
    H: axum::handler::Handler<T, ()>,
    T: 'static,
{
    serve(axum::Router::new().fallback(handler)).await
}

fn only(seen: &Arc<Mutex<Vec<Seen>>>) -> Seen {
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "expected exactly one request, got {seen:?}");
    seen[0].clone()
}

fn rota_target(path: Option<&str>) -> HttpTarget {
    HttpTarget {
        path: path.map(str::to_string),
        headers: BTreeMap::from([("authorization".to_string(), SECRET.to_string())]),
        ..HttpTarget::default()
    }
}

fn raw_target(method: HttpMethod, path: &str, body: Option<&str>) -> HttpTarget {
    HttpTarget {
        path: Some(path.to_string()),
        method,
        protocol: HttpProtocol::Raw,
        body: body.map(str::to_string),
        ..HttpTarget::default()
    }
}

fn dispatch_to(address: Option<String>, http: HttpTarget) -> Dispatch {
    Dispatch {
        run_id: 42,
        attempt: 2,
        namespace: "billing".into(),
        name: "nightly".into(),
        scheduled_at: "2026-11-25T02:30:00Z".parse().unwrap(),
        params: serde_json::from_value(json!({"report": "daily", "n": 7, "tags": ["a", "b"]})).unwrap(),
        shard: ShardInfo { index: 1, total: 3 },
        deadline: "2026-11-25T02:40:00Z".parse().unwrap(),
        timeout: Duration::from_secs(10),
        target: Target { http: Some(http), ..Target::default() },
        node: address.map(|a| NodeEndpoint { id: "node-1".into(), address: a }),
        report_url: Some("http://rota.example:8080/api/v1/runs/42".into()),
    }
}

fn dispatch(addr: SocketAddr, http: HttpTarget) -> Dispatch {
    dispatch_to(Some(format!("http://{addr}")), http)
}

fn executor() -> HttpExecutor {
    HttpExecutor::new(HttpExecutorConfig::default()).unwrap()
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

fn header<'a>(seen: &'a Seen, name: &str) -> &'a str {
    seen.headers.get(name).unwrap_or_else(|| panic!("no {name} header")).to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rota_sync_success_sends_the_exact_envelope_and_headers() {
    let (addr, seen) = recording(StatusCode::OK, r#"{"status":"succeeded","output":{"rows":3}}"#).await;
    let outcome = executor().dispatch(dispatch(addr, rota_target(Some("/jobs/nightly")))).await;
    assert_eq!(outcome, DispatchOutcome::Completed(RunResult::succeeded(Some(json!({"rows": 3})))));

    let req = only(&seen);
    assert_eq!(req.method, "POST");
    assert_eq!(req.uri, "/jobs/nightly");
    assert_eq!(header(&req, "content-type"), "application/json");
    assert_eq!(header(&req, "accept"), "application/json");
    assert_eq!(header(&req, "x-rota-run-id"), "42");
    assert_eq!(header(&req, "x-rota-attempt"), "2");
    assert_eq!(header(&req, "authorization"), SECRET);
    assert_eq!(header(&req, "user-agent"), format!("rota/{}", env!("CARGO_PKG_VERSION")));
    let body: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(
        body,
        json!({
            "run_id": "42",
            "task": "billing/nightly",
            "attempt": 2,
            "scheduled_at": "2026-11-25T02:30:00Z",
            "params": {"report": "daily", "n": 7, "tags": ["a", "b"]},
            "shard": {"index": 1, "total": 3},
            "deadline": "2026-11-25T02:40:00Z",
            "report_url": "http://rota.example:8080/api/v1/runs/42"
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rota_sync_failed_result_to_a_bare_address_without_path() {
    let (addr, seen) = recording(StatusCode::OK, r#"{"status":"failed","error":"boom"}"#).await;
    let mut d = dispatch_to(Some(addr.to_string()), rota_target(None));
    d.report_url = None;
    let outcome = executor().dispatch(d).await;
    assert_eq!(outcome, DispatchOutcome::Completed(RunResult::failed("boom")));
    let req = only(&seen);
    assert_eq!(req.uri, "/");
    let body: Value = serde_json::from_slice(&req.body).unwrap();
    assert!(body.get("report_url").is_none(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rota_202_is_accepted() {
    let (addr, seen) = recording(StatusCode::ACCEPTED, r#"{"queued":true}"#).await;
    let outcome = executor().dispatch(dispatch(addr, rota_target(Some("/jobs/async")))).await;
    assert_eq!(outcome, DispatchOutcome::Accepted);
    assert_eq!(only(&seen).uri, "/jobs/async");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rota_error_status_fails_with_status_and_sanitised_excerpt() {
    let (addr, _) = recording(StatusCode::INTERNAL_SERVER_ERROR, "database\nis down\r\n").await;
    let error = failure(executor().dispatch(dispatch(addr, rota_target(Some("/x")))).await);
    assert_eq!(error, "executor answered HTTP 500: database is down");

    let (addr, _) = recording(StatusCode::SERVICE_UNAVAILABLE, "").await;
    let error = failure(executor().dispatch(dispatch(addr, rota_target(Some("/x")))).await);
    assert_eq!(error, "executor answered HTTP 503");

    // Other 2xx answers are not part of the protocol.
    let (addr, _) = recording(StatusCode::NO_CONTENT, "").await;
    let error = failure(executor().dispatch(dispatch(addr, rota_target(Some("/x")))).await);
    assert_eq!(error, "executor answered HTTP 204");

    // Long bodies are cut to 256 characters.
    let long: &'static str = "x".repeat(5000).leak();
    let (addr, _) = recording(StatusCode::BAD_GATEWAY, long).await;
    let error = failure(executor().dispatch(dispatch(addr, rota_target(Some("/x")))).await);
    assert_eq!(error, format!("executor answered HTTP 502: {}…", "x".repeat(256)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rota_invalid_result_bodies_fail() {
    for body in ["not json", r#"{"status":"done"}"#, r#"{"status":"succeeded","extra":1}"#, "[]", ""] {
        let (addr, _) = recording(StatusCode::OK, body).await;
        let error = failure(executor().dispatch(dispatch(addr, rota_target(Some("/x")))).await);
        assert!(error.starts_with("executor returned an invalid result: "), "{body:?} → {error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_executor_times_out_at_the_dispatch_timeout() {
    let addr = answering(|| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        "late"
    })
    .await;
    let mut d = dispatch(addr, rota_target(Some("/slow")));
    d.timeout = Duration::from_millis(300);
    let started = Instant::now();
    let outcome = executor().dispatch(d).await;
    let elapsed = started.elapsed();
    assert_eq!(outcome, DispatchOutcome::TimedOut);
    assert!(elapsed >= Duration::from_millis(290), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_timeout_is_timed_out_without_calling() {
    let (addr, seen) = recording(StatusCode::OK, r#"{"status":"succeeded"}"#).await;
    let mut d = dispatch(addr, rota_target(Some("/x")));
    d.timeout = Duration::ZERO;
    assert_eq!(executor().dispatch(d).await, DispatchOutcome::TimedOut);
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_fails_with_a_clear_message() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let error = failure(executor().dispatch(dispatch(addr, rota_target(Some("/jobs/secret-path?token=t")))).await);
    assert!(error.starts_with(&format!("could not connect to http://{addr}: ")), "{error}");
    assert!(error.to_lowercase().contains("refused"), "{error}");
    assert!(!error.contains("secret-path") && !error.contains("token"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_with_content_length_fails() {
    let big: &'static str = "y".repeat(2 * 1024 * 1024).leak();
    let (addr, _) = recording(StatusCode::OK, big).await;
    let error = failure(executor().dispatch(dispatch(addr, rota_target(Some("/x")))).await);
    assert!(error.contains("too large"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_streamed_body_fails_at_the_limit_without_buffering_it() {
    // Chunked, no content-length, never ends: only incremental reading with a limit can answer.
    let addr = answering(|| async {
        let chunk = Bytes::from(vec![b'z'; 16 * 1024]);
        let endless = futures::stream::iter(std::iter::repeat_with(move || Ok::<_, Infallible>(chunk.clone())));
        Body::from_stream(endless)
    })
    .await;
    let config = HttpExecutorConfig { max_response_bytes: 256 * 1024, ..HttpExecutorConfig::default() };
    let exec = HttpExecutor::new(config).unwrap();
    let error = failure(exec.dispatch(dispatch(addr, rota_target(Some("/x")))).await);
    assert_eq!(error, "executor response too large: the body exceeds 262144 bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_get_to_a_url_without_node() {
    let (addr, seen) = recording(StatusCode::OK, "pong").await;
    let http = HttpTarget {
        url: Some(format!("http://{addr}/hooks/ping?x=1")),
        method: HttpMethod::Get,
        protocol: HttpProtocol::Raw,
        headers: BTreeMap::from([("x-api-key".to_string(), SECRET.to_string())]),
        ..HttpTarget::default()
    };
    let outcome = executor().dispatch(dispatch_to(None, http)).await;
    assert_eq!(outcome, DispatchOutcome::Completed(RunResult::succeeded(Some(json!("pong")))));
    let req = only(&seen);
    assert_eq!(req.method, "GET");
    assert_eq!(req.uri, "/hooks/ping?x=1");
    assert_eq!(header(&req, "x-api-key"), SECRET);
    assert_eq!(header(&req, "x-rota-run-id"), "42");
    assert!(req.body.is_empty());
    assert!(req.headers.get("content-type").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_post_renders_the_body_template() {
    let (addr, seen) = recording(StatusCode::CREATED, r#"{"ok":true}"#).await;
    let template = r#"{"run":"{{run_id}}","task":"{{task}}","attempt":{{attempt}},"at":"{{scheduled_at}}","#
        .to_string()
        + r#""shard":"{{ shard.index }}/{{shard.total}}","report":"{{params.report}}","n":{{params.n}},"#
        + r#""tags":{{params.tags}},"all":{{params}},"lit":"\{{x}}"}"#;
    let outcome = executor().dispatch(dispatch(addr, raw_target(HttpMethod::Post, "/hook", Some(&template)))).await;
    assert_eq!(outcome, DispatchOutcome::Completed(RunResult::succeeded(Some(json!({"ok": true})))));
    let req = only(&seen);
    assert_eq!(req.method, "POST");
    assert_eq!(req.uri, "/hook");
    assert_eq!(header(&req, "content-type"), "application/json");
    let body: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(
        body,
        json!({
            "run": "42", "task": "billing/nightly", "attempt": 2, "at": "2026-11-25T02:30:00Z",
            "shard": "1/3", "report": "daily", "n": 7, "tags": ["a", "b"],
            "all": {"report": "daily", "n": 7, "tags": ["a", "b"]}, "lit": "{{x}}"
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_put_text_body_keeps_a_configured_content_type() {
    let (addr, seen) = recording(StatusCode::NO_CONTENT, "").await;
    let mut http = raw_target(HttpMethod::Put, "/t", Some("run {{run_id}} of {{task}}"));
    http.headers.insert("Content-Type".into(), "text/x-rota".into());
    let outcome = executor().dispatch(dispatch(addr, http)).await;
    assert_eq!(outcome, DispatchOutcome::Completed(RunResult::succeeded(None)));
    let req = only(&seen);
    assert_eq!(req.method, "PUT");
    assert_eq!(header(&req, "content-type"), "text/x-rota");
    assert_eq!(req.body, "run 42 of billing/nightly");

    let (addr, seen) = recording(StatusCode::OK, "").await;
    executor().dispatch(dispatch(addr, raw_target(HttpMethod::Patch, "/t", Some("plain {{attempt}}")))).await;
    let req = only(&seen);
    assert_eq!(req.method, "PATCH");
    assert_eq!(header(&req, "content-type"), "text/plain; charset=utf-8");
    assert_eq!(req.body, "plain 2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_bad_template_fails_without_calling() {
    let (addr, seen) = recording(StatusCode::OK, "").await;
    let error = failure(
        executor().dispatch(dispatch(addr, raw_target(HttpMethod::Post, "/t", Some("{{parms.report}}")))).await,
    );
    assert!(error.starts_with("target.http.body: unknown placeholder {{parms.report}}"), "{error}");
    let error =
        failure(executor().dispatch(dispatch(addr, raw_target(HttpMethod::Post, "/t", Some("{{params.nope}}")))).await);
    assert_eq!(error, "target.http.body: placeholder {{params.nope}}: the run's params have no key \"nope\"");
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_404_fails() {
    let (addr, _) = recording(StatusCode::NOT_FOUND, "no such hook").await;
    let error = failure(executor().dispatch(dispatch(addr, raw_target(HttpMethod::Delete, "/gone", None))).await);
    assert_eq!(error, "executor answered HTTP 404: no such hook");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_large_success_body_is_kept_truncated() {
    let big: &'static str = "w".repeat(RAW_OUTPUT_LIMIT * 3).leak();
    let (addr, _) = recording(StatusCode::OK, big).await;
    let outcome = executor().dispatch(dispatch(addr, raw_target(HttpMethod::Get, "/big", None))).await;
    let DispatchOutcome::Completed(result) = outcome else { panic!("{outcome:?}") };
    assert_eq!(result.output, Some(Value::String("w".repeat(RAW_OUTPUT_LIMIT))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rota_protocol_to_a_url_without_node() {
    let (addr, seen) = recording(StatusCode::OK, r#"{"status":"succeeded"}"#).await;
    let http = HttpTarget { url: Some(format!("http://{addr}/run")), ..HttpTarget::default() };
    let outcome = executor().dispatch(dispatch_to(None, http)).await;
    assert_eq!(outcome, DispatchOutcome::Completed(RunResult::succeeded(None)));
    let req = only(&seen);
    assert_eq!((req.method.as_str(), req.uri.as_str()), ("POST", "/run"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misconfigured_targets_fail_clearly() {
    let exec = executor();
    let error = failure(exec.dispatch(dispatch_to(None, rota_target(Some("/x")))).await);
    assert_eq!(error, "the http target has no `url` and no executor node was chosen");

    let ftp = HttpTarget { url: Some("ftp://example.invalid/x".into()), ..HttpTarget::default() };
    let error = failure(exec.dispatch(dispatch_to(None, ftp)).await);
    assert_eq!(error, "unsupported executor URL scheme \"ftp\" (expected http or https)");

    let (addr, seen) = recording(StatusCode::OK, "").await;
    let mut http = rota_target(Some("/x"));
    http.headers.insert("Content-Length".into(), "5".into());
    let error = failure(exec.dispatch(dispatch(addr, http)).await);
    assert_eq!(error, "target.http.headers.Content-Length: this header is managed by Rota and cannot be set");

    let mut http = rota_target(Some("/x"));
    http.headers.insert("x-token".into(), "s3cret\nvalue".into());
    let error = failure(exec.dispatch(dispatch(addr, http)).await);
    assert_eq!(error, "target.http.headers.x-token: invalid header value (value not shown)");
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_kept_alive_and_reused() {
    let (addr, seen) = recording(StatusCode::OK, r#"{"status":"succeeded"}"#).await;
    let exec = executor();
    for _ in 0..10 {
        let outcome = exec.dispatch(dispatch(addr, rota_target(Some("/x")))).await;
        assert_eq!(outcome, DispatchOutcome::Completed(RunResult::succeeded(None)));
    }
    let peers: Vec<SocketAddr> = seen.lock().unwrap().iter().map(|s| s.peer).collect();
    assert_eq!(peers.len(), 10);
    // A connection goes back to the pool asynchronously after its response, so on a loaded machine the next
    // request may occasionally open another one; without keep-alive every request would have its own.
    let distinct: std::collections::HashSet<&SocketAddr> = peers.iter().collect();
    assert!(distinct.len() <= 3, "expected pooled connections to be reused, got {peers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_routes_by_target_kind() {
    let router = Router::standard(HttpExecutorConfig::default()).unwrap();
    let (addr, seen) = recording(StatusCode::ACCEPTED, "").await;
    assert_eq!(router.dispatch(dispatch(addr, rota_target(Some("/x")))).await, DispatchOutcome::Accepted);
    assert_eq!(only(&seen).uri, "/x");

    // gRPC targets go to the gRPC protocol (tests/grpc.rs); a router without one refuses them.
    assert!(router.supports(TargetKind::Grpc));
    let mut d = dispatch(addr, rota_target(None));
    d.target = Target { grpc: Some(GrpcTarget::default()), ..Target::default() };
    let http_only = Router::new().with(TargetKind::Http, Arc::new(executor()));
    assert_eq!(failure(http_only.dispatch(d.clone()).await), "grpc targets are not supported by this server yet");
    d.target = Target {
        container: Some(ContainerTarget { image: "alpine".into(), ..Default::default() }),
        ..Target::default()
    };
    assert_eq!(failure(router.dispatch(d.clone()).await), "container targets are not supported by this server yet");
    d.target = Target::default();
    assert_eq!(
        failure(router.dispatch(d.clone()).await),
        "the target must set exactly one of `http`, `grpc`, `container`"
    );

    let empty = Router::new();
    d.target = Target { http: Some(rota_target(None)), ..Target::default() };
    assert_eq!(failure(empty.dispatch(d).await), "http targets are not supported by this server yet");
}
