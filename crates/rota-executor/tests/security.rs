//! The scheduler side of every executor hop's security, against real servers on 127.0.0.1 with a test PKI made
//! by rcgen: HTTPS and gRPC over TLS, mTLS (valid, missing and foreign client certificates), signed dispatches
//! checked by `rota_proto::signing::Verifier` (valid, missing, wrong key, expired, replayed), and credentials of
//! raw HTTP targets from secret references (bearer, basic, header; missing secret), which never show up in
//! outcomes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use rota_core::{Dispatch, DispatchOutcome, Executor, NodeEndpoint, SecretError, SecretResolver, SecretValue};
use rota_executor::{
    ClientTls, DirSecrets, GrpcProtocol, GrpcProtocolConfig, HttpExecutor, HttpExecutorConfig, ProtocolExecutor,
    SigningKey,
};
use rota_proto::grpc::{RunAnswer, v1};
use rota_proto::signing::Verifier;
use rota_proto::{RunResult, ShardInfo};
use rota_spec::{
    BasicAuth, BearerAuth, GrpcTarget, HeaderAuth, HttpAuth, HttpMethod, HttpProtocol, HttpTarget, Target,
};
use rota_tls::testing::TestCa;
use rota_tls::{ClientCertMode, PeerCertificate, ServerTls};
use serde_json::json;

const TOKEN: &str = "tok-9f8e7d6c5b4a";
const PASSWORD: &str = "pw-0a1b2c3d";
const API_KEY: &str = "key-55aa55aa";

fn secret_key(id: &str) -> SigningKey {
    SigningKey::new(id, format!("{id}-secret-0123456789abcdef0123456789").into_bytes()).unwrap()
}

struct Pki {
    dir: tempfile::TempDir,
    ca: TestCa,
    other: TestCa,
}

impl Pki {
    fn new() -> Pki {
        Pki { dir: tempfile::tempdir().unwrap(), ca: TestCa::new("Rota Test CA"), other: TestCa::new("Other CA") }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The executor node's server TLS: a localhost certificate from the CA, optionally requiring a client
    /// certificate signed by the CA.
    fn node_tls(&self, require_client_cert: bool) -> ServerTls {
        let (cert, key) = self.ca.server(&["localhost", "127.0.0.1"]).write(self.dir.path(), "node");
        let tls = ServerTls::new(cert, key);
        if require_client_cert {
            tls.with_client_ca(self.ca.write(self.dir.path(), "client-ca"), ClientCertMode::Required)
        } else {
            tls
        }
    }

    /// The scheduler's client TLS: trusts the CA; presents a client certificate from `issuer` when given.
    fn scheduler_tls(&self, issuer: Option<&TestCa>) -> ClientTls {
        let ca = self.ca.write(self.dir.path(), "ca");
        match issuer {
            None => ClientTls::with_ca(&ca).unwrap(),
            Some(issuer) => {
                let (cert, key) = issuer.client("scheduler-1").write(self.dir.path(), "scheduler");
                ClientTls::from_files(Some(&ca), Some(&cert), Some(&key)).unwrap()
            }
        }
    }
}

/// What an HTTP node saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    uri: String,
    headers: HeaderMap,
    body: Bytes,
    peer_cn: Option<String>,
}

#[derive(Clone, Default)]
struct Node {
    seen: Arc<Mutex<Vec<Seen>>>,
    verifier: Option<Arc<Verifier>>,
    /// Added to the verifier's clock (to make a fresh signature look old).
    clock_offset_secs: i64,
}

async fn handle(
    State(node): State<Node>,
    peer: Option<axum::Extension<PeerCertificate>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    node.seen.lock().unwrap().push(Seen {
        uri: uri.to_string(),
        headers: headers.clone(),
        body: body.clone(),
        peer_cn: peer.and_then(|p| p.common_name.clone()),
    });
    if let Some(v) = &node.verifier {
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let now = chrono::Utc::now().timestamp() + node.clock_offset_secs;
        if let Err(e) = v.verify(method.as_str(), path, &body, |n| headers.get(n).and_then(|v| v.to_str().ok()), now) {
            return (StatusCode::UNAUTHORIZED, e.to_string()).into_response();
        }
    }
    axum::Json(json!({"status": "succeeded", "output": {"ok": true}})).into_response()
}

/// An HTTP node on 127.0.0.1 (TLS when `tls` is given); returns its base address (`https://localhost:P`).
async fn http_node(node: Node, tls: Option<&ServerTls>) -> String {
    let app = axum::Router::new().fallback(handle).with_state(node);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    match tls {
        Some(tls) => {
            let config = tls.server_config().unwrap();
            tokio::spawn(rota_tls::serve(listener, config, app, std::future::pending()));
            format!("https://localhost:{port}")
        }
        None => {
            tokio::spawn(async move { axum::serve(listener, app).await });
            format!("http://127.0.0.1:{port}")
        }
    }
}

fn dispatch(target: Target, address: Option<String>) -> Dispatch {
    Dispatch {
        run_id: 7,
        attempt: 1,
        namespace: "billing".into(),
        name: "report".into(),
        scheduled_at: "2026-11-25T02:30:00Z".parse().unwrap(),
        params: Default::default(),
        shard: ShardInfo { index: 0, total: 1 },
        deadline: "2026-11-25T02:40:00Z".parse().unwrap(),
        timeout: Duration::from_secs(10),
        target,
        node: address.map(|a| NodeEndpoint { id: "node-1".into(), address: a }),
        report_url: None,
    }
}

fn http_dispatch(address: &str, http: HttpTarget) -> Dispatch {
    dispatch(Target { http: Some(http), ..Target::default() }, Some(address.to_string()))
}

fn rota_target() -> HttpTarget {
    HttpTarget { path: Some("/jobs/report".into()), ..HttpTarget::default() }
}

fn http_executor(tls: ClientTls) -> HttpExecutor {
    HttpExecutor::new(HttpExecutorConfig { tls, ..HttpExecutorConfig::default() }).unwrap()
}

fn succeeded() -> DispatchOutcome {
    DispatchOutcome::Completed(RunResult::succeeded(Some(json!({"ok": true}))))
}

fn failure(outcome: DispatchOutcome) -> String {
    match outcome {
        DispatchOutcome::Failed { error } => error,
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_dispatch_with_a_test_ca() {
    let pki = Pki::new();
    let node = Node::default();
    let address = http_node(node.clone(), Some(&pki.node_tls(false))).await;
    let outcome = http_executor(pki.scheduler_tls(None)).dispatch(http_dispatch(&address, rota_target())).await;
    assert_eq!(outcome, succeeded());
    assert_eq!(node.seen.lock().unwrap()[0].uri, "/jobs/report");

    // Without the CA the node's certificate is not trusted: a failure naming the origin only.
    let error = failure(http_executor(ClientTls::default()).dispatch(http_dispatch(&address, rota_target())).await);
    assert!(error.starts_with(&format!("could not connect to {address}")), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_nodes_require_the_schedulers_client_certificate() {
    let pki = Pki::new();
    let node = Node::default();
    let address = http_node(node.clone(), Some(&pki.node_tls(true))).await;

    let valid = http_executor(pki.scheduler_tls(Some(&pki.ca)));
    assert_eq!(valid.dispatch(http_dispatch(&address, rota_target())).await, succeeded());
    assert_eq!(node.seen.lock().unwrap()[0].peer_cn.as_deref(), Some("scheduler-1"));

    let missing = http_executor(pki.scheduler_tls(None));
    let error = failure(missing.dispatch(http_dispatch(&address, rota_target())).await);
    assert!(error.contains(&address), "{error}");
    let foreign = http_executor(pki.scheduler_tls(Some(&pki.other)));
    failure(foreign.dispatch(http_dispatch(&address, rota_target())).await);
    assert_eq!(node.seen.lock().unwrap().len(), 1, "refused handshakes never reach the handler");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_http_dispatches_verify_once() {
    let key = secret_key("k1");
    let node = Node { verifier: Some(Arc::new(Verifier::new(vec![key.clone()]))), ..Node::default() };
    let address = http_node(node.clone(), None).await;

    // Valid: the rota protocol and a raw call with a query string.
    let signed = http_executor(ClientTls::default()).with_signing_key(key.clone());
    assert_eq!(signed.dispatch(http_dispatch(&address, rota_target())).await, succeeded());
    let raw = HttpTarget {
        path: Some("/hooks/x?a=1&b=2".into()),
        protocol: HttpProtocol::Raw,
        method: HttpMethod::Put,
        body: Some("{\"run\": \"{{run_id}}\"}".into()),
        ..HttpTarget::default()
    };
    let outcome = signed.dispatch(http_dispatch(&address, raw)).await;
    assert!(matches!(outcome, DispatchOutcome::Completed(_)), "{outcome:?}");
    let first = node.seen.lock().unwrap()[0].clone();
    assert_eq!(first.headers["x-rota-key-id"], "k1");
    assert!(first.headers["x-rota-signature"].to_str().unwrap().starts_with("v1="));

    // Missing: an executor without a key.
    let error = failure(http_executor(ClientTls::default()).dispatch(http_dispatch(&address, rota_target())).await);
    assert!(error.contains("401") && error.contains("not signed"), "{error}");
    // Wrong key.
    let wrong = http_executor(ClientTls::default()).with_signing_key(secret_key("k2"));
    let error = failure(wrong.dispatch(http_dispatch(&address, rota_target())).await);
    assert!(error.contains("401") && error.contains("does not match"), "{error}");

    // Replayed: the first request sent again, byte for byte.
    rota_tls::install_crypto_provider();
    let mut replay = reqwest::Client::new().post(format!("{address}{}", first.uri)).body(first.body.clone());
    for (name, value) in &first.headers {
        if name != "host" && name != "content-length" {
            replay = replay.header(name, value);
        }
    }
    let res = replay.send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert!(res.text().await.unwrap().contains("replay"));

    // Expired: the node's clock is ten minutes ahead of the signer's.
    let late =
        Node { verifier: Some(Arc::new(Verifier::new(vec![key.clone()]))), clock_offset_secs: 600, ..Node::default() };
    let late_address = http_node(late, None).await;
    let error = failure(signed.dispatch(http_dispatch(&late_address, rota_target())).await);
    assert!(error.contains("401") && error.contains("window"), "{error}");
}

/// The secrets of the test.
struct Secrets(BTreeMap<&'static str, &'static str>);

#[async_trait]
impl SecretResolver for Secrets {
    async fn resolve(&self, name: &str) -> Result<SecretValue, SecretError> {
        self.0.get(name).map(|v| SecretValue::new(*v)).ok_or_else(|| SecretError::NotAvailable(name.to_string()))
    }
}

fn raw_with(auth: HttpAuth) -> HttpTarget {
    HttpTarget { path: Some("/hook".into()), protocol: HttpProtocol::Raw, auth: Some(auth), ..HttpTarget::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_targets_get_credentials_from_secret_references() {
    let node = Node::default();
    let address = http_node(node.clone(), None).await;
    let secrets = Arc::new(Secrets(BTreeMap::from([("token", TOKEN), ("password", PASSWORD), ("api-key", API_KEY)])));
    let exec = http_executor(ClientTls::default()).with_secrets(secrets);

    let bearer = HttpAuth { bearer: Some(BearerAuth { secret_ref: "token".into() }), ..HttpAuth::default() };
    let basic = HttpAuth {
        basic: Some(BasicAuth { username: "svc".into(), password_ref: "password".into() }),
        ..HttpAuth::default()
    };
    let header = HttpAuth {
        header: Some(HeaderAuth { name: "X-Api-Key".into(), value_ref: "api-key".into() }),
        ..HttpAuth::default()
    };
    for auth in [bearer, basic, header] {
        let outcome = exec.dispatch(http_dispatch(&address, raw_with(auth))).await;
        assert!(matches!(outcome, DispatchOutcome::Completed(_)), "{outcome:?}");
    }
    let seen = node.seen.lock().unwrap().clone();
    assert_eq!(seen[0].headers["authorization"], format!("Bearer {TOKEN}"));
    // base64("svc:pw-0a1b2c3d")
    assert_eq!(seen[1].headers["authorization"], "Basic c3ZjOnB3LTBhMWIyYzNk");
    assert_eq!(seen[2].headers["x-api-key"], API_KEY);

    // A missing secret fails the attempt without calling, naming only the reference.
    let missing = HttpAuth { bearer: Some(BearerAuth { secret_ref: "nope".into() }), ..HttpAuth::default() };
    let error = failure(exec.dispatch(http_dispatch(&address, raw_with(missing.clone()))).await);
    assert_eq!(error, "secret nope is not available");
    // An executor without a resolver knows no secret.
    let error = failure(http_executor(ClientTls::default()).dispatch(http_dispatch(&address, raw_with(missing))).await);
    assert_eq!(error, "secret nope is not available");
    assert_eq!(node.seen.lock().unwrap().len(), 3);

    // Node errors never echo the credentials the request carried.
    let failing = answering_401().await;
    let bearer = HttpAuth { bearer: Some(BearerAuth { secret_ref: "token".into() }), ..HttpAuth::default() };
    let error = failure(exec.dispatch(http_dispatch(&failing, raw_with(bearer))).await);
    assert_eq!(error, "executor answered HTTP 401: nope");
    assert!(!format!("{exec:?}").contains(TOKEN));
}

async fn answering_401() -> String {
    let app = axum::Router::new().fallback(|| async { (StatusCode::UNAUTHORIZED, "nope") });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_resolver_feeds_the_executor() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
    let node = Node::default();
    let address = http_node(node.clone(), None).await;
    let exec = http_executor(ClientTls::default()).with_secrets(Arc::new(DirSecrets::new(dir.path())));
    let bearer = HttpAuth { bearer: Some(BearerAuth { secret_ref: "token".into() }), ..HttpAuth::default() };
    let outcome = exec.dispatch(http_dispatch(&address, raw_with(bearer))).await;
    assert!(matches!(outcome, DispatchOutcome::Completed(_)), "{outcome:?}");
    assert_eq!(node.seen.lock().unwrap()[0].headers["authorization"], format!("Bearer {TOKEN}"));
}

// ---- gRPC ----

#[derive(Clone)]
struct GrpcNode {
    verifier: Option<Arc<Verifier>>,
    calls: Arc<Mutex<Vec<Option<String>>>>,
}

#[tonic::async_trait]
impl v1::executor_server::Executor for GrpcNode {
    async fn run(
        &self,
        request: tonic::Request<v1::RunRequest>,
    ) -> Result<tonic::Response<v1::RunResponse>, tonic::Status> {
        let peer = request.extensions().get::<PeerCertificate>().and_then(|p| p.common_name.clone());
        if let Some(v) = &self.verifier {
            let body = prost::Message::encode_to_vec(request.get_ref());
            let md = request.metadata();
            v.verify(
                "POST",
                "/rota.executor.v1.Executor/Run",
                &body,
                |n| md.get(n).and_then(|v| v.to_str().ok()),
                chrono::Utc::now().timestamp(),
            )
            .map_err(|e| tonic::Status::unauthenticated(e.to_string()))?;
        }
        self.calls.lock().unwrap().push(peer);
        Ok(tonic::Response::new(RunAnswer::Completed(RunResult::succeeded(None)).into()))
    }
}

/// A gRPC node served through `rota_tls::serve` (HTTP/2 by ALPN); returns `grpcs://localhost:P` or
/// `127.0.0.1:P`.
async fn grpc_node(node: GrpcNode, tls: Option<&ServerTls>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let service = v1::executor_server::ExecutorServer::new(node);
    match tls {
        Some(tls) => {
            let app = tonic::service::Routes::new(service).into_axum_router();
            tokio::spawn(rota_tls::serve(listener, tls.server_config().unwrap(), app, std::future::pending()));
            format!("grpcs://localhost:{port}")
        }
        None => {
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            tokio::spawn(tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming));
            format!("127.0.0.1:{port}")
        }
    }
}

fn grpc_dispatch(address: &str) -> Dispatch {
    dispatch(Target { grpc: Some(GrpcTarget::default()), ..Target::default() }, Some(address.to_string()))
}

fn grpc(tls: ClientTls) -> GrpcProtocol {
    GrpcProtocol::new(GrpcProtocolConfig { tls, ..GrpcProtocolConfig::default() }).unwrap()
}

async fn grpc_send(protocol: GrpcProtocol, address: &str) -> DispatchOutcome {
    ProtocolExecutor::new(Arc::new(protocol)).dispatch(grpc_dispatch(address)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls_with_a_test_ca_and_mtls() {
    let pki = Pki::new();
    let node = GrpcNode { verifier: None, calls: Arc::default() };
    let address = grpc_node(node.clone(), Some(&pki.node_tls(false))).await;
    let ok = DispatchOutcome::Completed(RunResult::succeeded(None));
    assert_eq!(grpc_send(grpc(pki.scheduler_tls(None)), &address).await, ok);
    // The same node under https://.
    let https = address.replace("grpcs://", "https://");
    assert_eq!(grpc_send(grpc(pki.scheduler_tls(None)), &https).await, ok);

    // mTLS: the node requires a client certificate from the CA.
    let mtls_node = GrpcNode { verifier: None, calls: Arc::default() };
    let mtls = grpc_node(mtls_node.clone(), Some(&pki.node_tls(true))).await;
    assert_eq!(grpc_send(grpc(pki.scheduler_tls(Some(&pki.ca))), &mtls).await, ok);
    assert_eq!(mtls_node.calls.lock().unwrap().clone(), vec![Some("scheduler-1".to_string())]);
    let error = failure(grpc_send(grpc(pki.scheduler_tls(None)), &mtls).await);
    let origin = mtls.replace("grpcs://", "https://");
    assert!(error.contains(&origin), "{error}");
    failure(grpc_send(grpc(pki.scheduler_tls(Some(&pki.other))), &mtls).await);
    assert_eq!(mtls_node.calls.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_grpc_dispatches() {
    let key = secret_key("g1");
    let node = GrpcNode { verifier: Some(Arc::new(Verifier::new(vec![key.clone()]))), calls: Arc::default() };
    let address = grpc_node(node.clone(), None).await;
    let ok = DispatchOutcome::Completed(RunResult::succeeded(None));
    assert_eq!(grpc_send(grpc(ClientTls::default()).with_signing_key(key.clone()), &address).await, ok);
    let error = failure(grpc_send(grpc(ClientTls::default()), &address).await);
    assert!(error.starts_with("executor answered gRPC UNAUTHENTICATED: the request is not signed"), "{error}");
    let error = failure(grpc_send(grpc(ClientTls::default()).with_signing_key(secret_key("g2")), &address).await);
    assert!(error.contains("UNAUTHENTICATED: the signature does not match"), "{error}");
    assert_eq!(node.calls.lock().unwrap().len(), 1);
}

#[test]
fn bad_tls_files_fail_at_build_time() {
    let pki = Pki::new();
    std::fs::write(pki.path("junk.pem"), "junk").unwrap();
    let e = ClientTls::with_ca(&pki.path("junk.pem")).unwrap_err().to_string();
    assert!(e.contains("junk.pem"), "{e}");
}
