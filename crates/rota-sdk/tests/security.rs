//! The SDK executor's side of the dispatch hop: signed dispatches verified (valid, missing, wrong key, expired,
//! replayed) over HTTP and gRPC, and TLS serving with and without a required client certificate (mTLS),
//! against Rota's own executors (`rota-executor`) on 127.0.0.1.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rota_core::{Dispatch, DispatchOutcome, Executor, NodeEndpoint};
use rota_executor::{ClientTls, GrpcProtocol, GrpcProtocolConfig, HttpExecutor, HttpExecutorConfig, ProtocolExecutor};
use rota_proto::{RunResult, ShardInfo};
use rota_sdk::executor::{ExecutorNode, RunContext, SigningKey};
use rota_spec::{GrpcTarget, HttpTarget, Target};
use rota_tls::testing::TestCa;
use serde_json::json;
use tokio::sync::oneshot;

fn key(id: &str) -> SigningKey {
    SigningKey::new(id, format!("{id}-0123456789abcdef0123456789abcdef").into_bytes()).unwrap()
}

/// A node serving one handler `report`, counting its runs; returns its address and the shutdown trigger.
struct Node {
    address: String,
    runs: Arc<AtomicUsize>,
    _stop: oneshot::Sender<()>,
}

async fn start(
    builder: impl FnOnce(rota_sdk::executor::ExecutorNodeBuilder) -> rota_sdk::executor::ExecutorNodeBuilder,
    grpc: bool,
) -> Node {
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    let node = builder(ExecutorNode::builder("billing").id("n1"))
        .handler("report", move |_ctx: RunContext| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                Ok(json!({"ok": true}))
            }
        })
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    tokio::spawn(async move {
        if grpc { node.serve_grpc(listener, shutdown).await } else { node.serve_http(listener, shutdown).await }
    });
    Node { address: format!("127.0.0.1:{port}"), runs, _stop: stop }
}

fn dispatch(target: Target, address: String) -> Dispatch {
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
        node: Some(NodeEndpoint { id: "n1".into(), address }),
        report_url: None,
    }
}

fn http(address: &str) -> Dispatch {
    let target = HttpTarget { path: Some("/report".into()), ..HttpTarget::default() };
    dispatch(Target { http: Some(target), ..Target::default() }, address.to_string())
}

fn grpc(address: &str) -> Dispatch {
    dispatch(Target { grpc: Some(GrpcTarget::default()), ..Target::default() }, address.to_string())
}

fn http_exec(tls: ClientTls) -> HttpExecutor {
    HttpExecutor::new(HttpExecutorConfig { tls, ..HttpExecutorConfig::default() }).unwrap()
}

fn grpc_exec(tls: ClientTls, signing: Option<SigningKey>) -> ProtocolExecutor {
    let mut p = GrpcProtocol::new(GrpcProtocolConfig { tls, ..GrpcProtocolConfig::default() }).unwrap();
    if let Some(k) = signing {
        p = p.with_signing_key(k);
    }
    ProtocolExecutor::new(Arc::new(p))
}

fn ok() -> DispatchOutcome {
    DispatchOutcome::Completed(RunResult::succeeded(Some(json!({"ok": true}))))
}

fn failure(outcome: DispatchOutcome) -> String {
    match outcome {
        DispatchOutcome::Failed { error } => error,
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_http_dispatches() {
    let node = start(|b| b.signing_key(key("old")).signing_key(key("new")), false).await;
    let url = format!("http://{}", node.address);

    assert_eq!(http_exec(ClientTls::default()).with_signing_key(key("new")).dispatch(http(&url)).await, ok());
    assert_eq!(http_exec(ClientTls::default()).with_signing_key(key("old")).dispatch(http(&url)).await, ok());

    let error = failure(http_exec(ClientTls::default()).dispatch(http(&url)).await);
    assert!(error.starts_with("executor answered HTTP 401") && error.contains("not signed"), "{error}");
    let error = failure(http_exec(ClientTls::default()).with_signing_key(key("other")).dispatch(http(&url)).await);
    assert!(error.contains("401") && error.contains("does not match"), "{error}");

    // Expired and replayed, sent by hand.
    rota_tls::install_crypto_provider();
    let client = reqwest::Client::new();
    let body = serde_json::to_vec(&json!({"run_id": "9", "task": "billing/report", "attempt": 1,
        "scheduled_at": "2026-11-25T02:30:00Z", "params": {}, "shard": {"index": 0, "total": 1},
        "deadline": "2026-11-25T02:40:00Z"}))
    .unwrap();
    let send = |ts: i64| {
        let mut req =
            client.post(format!("{url}/report")).header("content-type", "application/json").body(body.clone());
        for (name, value) in key("new").sign("POST", "/report", ts, &body) {
            req = req.header(name, value);
        }
        req.send()
    };
    let expired = send(chrono::Utc::now().timestamp() - 3600).await.unwrap();
    assert_eq!(expired.status(), 401);
    assert!(expired.text().await.unwrap().contains("window"));
    let now = chrono::Utc::now().timestamp();
    assert_eq!(send(now).await.unwrap().status(), 200);
    let replayed = send(now).await.unwrap();
    assert_eq!(replayed.status(), 401);
    assert!(replayed.text().await.unwrap().contains("replay"));

    assert_eq!(node.runs.load(Ordering::SeqCst), 3, "refused dispatches never reach the handler");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_grpc_dispatches() {
    let node = start(|b| b.signing_key(key("g")), true).await;
    assert_eq!(grpc_exec(ClientTls::default(), Some(key("g"))).dispatch(grpc(&node.address)).await, ok());
    let error = failure(grpc_exec(ClientTls::default(), None).dispatch(grpc(&node.address)).await);
    assert!(
        error.starts_with("executor answered gRPC UNAUTHENTICATED: dispatch refused: the request is not signed"),
        "{error}"
    );
    let error = failure(grpc_exec(ClientTls::default(), Some(key("x"))).dispatch(grpc(&node.address)).await);
    assert!(error.contains("UNAUTHENTICATED") && error.contains("does not match"), "{error}");
    assert_eq!(node.runs.load(Ordering::SeqCst), 1);
}

struct Pki {
    dir: tempfile::TempDir,
    ca: TestCa,
    other: TestCa,
}

impl Pki {
    fn new() -> Pki {
        Pki { dir: tempfile::tempdir().unwrap(), ca: TestCa::new("Test CA"), other: TestCa::new("Other CA") }
    }

    fn scheduler(&self, issuer: Option<&TestCa>) -> ClientTls {
        let ca = self.ca.write(self.dir.path(), "ca");
        match issuer {
            None => ClientTls::with_ca(&ca).unwrap(),
            Some(i) => {
                let (c, k) = i.client("scheduler").write(self.dir.path(), "sched");
                ClientTls::from_files(Some(&ca), Some(&c), Some(&k)).unwrap()
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_mtls_serving() {
    let pki = Pki::new();
    let (cert, key_file) = pki.ca.server(&["localhost"]).write(pki.dir.path(), "node");
    let ca = pki.ca.write(pki.dir.path(), "client-ca");

    // HTTPS, no client certificate needed.
    let (c, k) = (cert.clone(), key_file.clone());
    let plain_tls = start(move |b| b.tls(c, k), false).await;
    let url = format!("https://{}", plain_tls.address.replace("127.0.0.1", "localhost"));
    assert_eq!(http_exec(pki.scheduler(None)).dispatch(http(&url)).await, ok());

    // HTTPS requiring the scheduler's certificate.
    let (c, k, a) = (cert.clone(), key_file.clone(), ca.clone());
    let mtls = start(move |b| b.tls(c, k).tls_client_ca(a), false).await;
    let url = format!("https://{}", mtls.address.replace("127.0.0.1", "localhost"));
    assert_eq!(http_exec(pki.scheduler(Some(&pki.ca))).dispatch(http(&url)).await, ok());
    failure(http_exec(pki.scheduler(None)).dispatch(http(&url)).await);
    failure(http_exec(pki.scheduler(Some(&pki.other))).dispatch(http(&url)).await);
    assert_eq!(mtls.runs.load(Ordering::SeqCst), 1);

    // gRPC over TLS requiring the scheduler's certificate.
    let (c, k, a) = (cert.clone(), key_file.clone(), ca.clone());
    let grpc_mtls = start(move |b| b.tls(c, k).tls_client_ca(a), true).await;
    let address = format!("grpcs://{}", grpc_mtls.address.replace("127.0.0.1", "localhost"));
    assert_eq!(grpc_exec(pki.scheduler(Some(&pki.ca)), None).dispatch(grpc(&address)).await, ok());
    // Without a client certificate the node refuses the connection. TLS 1.3 refuses a client certificate after
    // the client has finished its side of the handshake, so the channel may keep reconnecting until the attempt
    // times out instead of failing at once: either way nothing runs.
    let mut refused = grpc(&address);
    refused.timeout = Duration::from_secs(3);
    let outcome = grpc_exec(pki.scheduler(None), None).dispatch(refused).await;
    assert!(matches!(outcome, DispatchOutcome::Failed { .. } | DispatchOutcome::TimedOut), "{outcome:?}");
    assert_eq!(grpc_mtls.runs.load(Ordering::SeqCst), 1);

    // A bad certificate file fails at build time, naming it.
    let e = ExecutorNode::builder("x").tls(pki.dir.path().join("missing.crt"), &key_file).build().unwrap_err();
    assert!(e.to_string().contains("missing.crt"), "{e}");
}
