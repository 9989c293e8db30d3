//! The TLS serve loop against real clients: server-only TLS, required and optional client certificates, the
//! peer identity as a request extension, and graceful shutdown.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::{Extension, Json};
use rota_tls::testing::{Issued, TestCa};
use rota_tls::{ClientCertMode, PeerCertificate, ServerTls};
use serde_json::{Value, json};
use tokio::net::TcpListener;

async fn whoami(ConnectInfo(remote): ConnectInfo<SocketAddr>, peer: Option<Extension<PeerCertificate>>) -> Json<Value> {
    Json(json!({
        "remote_is_loopback": remote.ip().is_loopback(),
        "cn": peer.as_ref().and_then(|p| p.common_name.clone()),
        "dns": peer.map(|p| p.dns_names.clone()).unwrap_or_default(),
    }))
}

struct Server {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(tls: &ServerTls) -> Server {
    let config = tls.server_config().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let app = axum::Router::new().route("/whoami", get(whoami));
    let task = tokio::spawn(rota_tls::serve(listener, config, app, async move {
        let _ = rx.await;
    }));
    Server { url: format!("https://localhost:{port}/whoami"), stop: Some(tx), task }
}

fn client(ca: &Path, identity: Option<&Issued>) -> reqwest::Client {
    rota_tls::install_crypto_provider();
    let mut b = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&std::fs::read(ca).unwrap()).unwrap())
        .timeout(Duration::from_secs(10));
    if let Some(id) = identity {
        let pem = format!("{}{}", id.cert_pem, id.key_pem);
        b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    b.build().unwrap()
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

    fn server_tls(&self) -> ServerTls {
        let (cert, key) = self.ca.server(&["localhost", "127.0.0.1"]).write(self.dir.path(), "server");
        ServerTls::new(cert, key)
    }

    fn ca_file(&self) -> std::path::PathBuf {
        self.ca.write(self.dir.path(), "ca")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_tls_without_client_certificates() {
    let pki = Pki::new();
    let mut server = start(&pki.server_tls()).await;
    let body: Value = client(&pki.ca_file(), None).get(&server.url).send().await.unwrap().json().await.unwrap();
    assert_eq!(body, json!({"remote_is_loopback": true, "cn": null, "dns": []}));

    // A client that does not trust the CA fails the handshake.
    let other = pki.other.write(pki.dir.path(), "other");
    assert!(client(&other, None).get(&server.url).send().await.is_err());

    // Graceful shutdown returns.
    server.stop.take().unwrap().send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server.task).await.unwrap().unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_client_certificates() {
    let pki = Pki::new();
    let client_ca = pki.ca.write(pki.dir.path(), "client-ca");
    let tls = pki.server_tls().with_client_ca(&client_ca, ClientCertMode::Required);
    let server = start(&tls).await;
    let ca = pki.ca_file();

    let good = pki.ca.client("scheduler-1");
    let body: Value = client(&ca, Some(&good)).get(&server.url).send().await.unwrap().json().await.unwrap();
    assert_eq!(body["cn"], "scheduler-1");
    assert_eq!(body["dns"], json!(["scheduler-1"]));

    // No certificate, or one from another CA: no answer at all.
    assert!(client(&ca, None).get(&server.url).send().await.is_err());
    let stranger = pki.other.client("scheduler-1");
    assert!(client(&ca, Some(&stranger)).get(&server.url).send().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_client_certificates() {
    let pki = Pki::new();
    let client_ca = pki.ca.write(pki.dir.path(), "client-ca");
    let tls = pki.server_tls().with_client_ca(&client_ca, ClientCertMode::Optional);
    let server = start(&tls).await;
    let ca = pki.ca_file();

    let anonymous: Value = client(&ca, None).get(&server.url).send().await.unwrap().json().await.unwrap();
    assert_eq!(anonymous["cn"], Value::Null);
    let good = pki.ca.client("node-7");
    let known: Value = client(&ca, Some(&good)).get(&server.url).send().await.unwrap().json().await.unwrap();
    assert_eq!(known["cn"], "node-7");
    // A certificate that is presented must still verify.
    let stranger = pki.other.client("node-7");
    assert!(client(&ca, Some(&stranger)).get(&server.url).send().await.is_err());
}

#[test]
fn file_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.pem");
    let e = rota_tls::load_certs(&missing).unwrap_err().to_string();
    assert!(e.starts_with("cannot read certificate file") && e.contains("nope.pem"), "{e}");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "hello").unwrap();
    let e = rota_tls::load_certs(&junk).unwrap_err().to_string();
    assert!(e.contains("junk.pem") && e.contains("no PEM certificate"), "{e}");
    let e = rota_tls::load_key(&junk).unwrap_err().to_string();
    assert!(e.contains("junk.pem") && e.contains("no PEM private key"), "{e}");
    let e = rota_tls::load_roots(&junk).unwrap_err().to_string();
    assert!(e.contains("CA bundle") && e.contains("junk.pem"), "{e}");

    // A certificate with somebody else's key.
    let ca = TestCa::new("ca");
    let (cert, _) = ca.server(&["localhost"]).write(dir.path(), "a");
    let (_, key) = ca.server(&["localhost"]).write(dir.path(), "b");
    let e = ServerTls::new(cert.clone(), key.clone()).server_config().unwrap_err().to_string();
    assert!(e.contains("do not make a server identity"), "{e}");

    let e = rota_tls::ClientTls::from_files(None, Some(&cert), None).unwrap_err().to_string();
    assert!(e.contains("needs its key"), "{e}");
    let tls = rota_tls::ClientTls::from_files(Some(&ca.write(dir.path(), "ca")), Some(&cert), Some(&key)).unwrap();
    let shown = format!("{tls:?}");
    assert!(shown.contains("key redacted") && !shown.contains("PRIVATE KEY"), "{shown}");
}
