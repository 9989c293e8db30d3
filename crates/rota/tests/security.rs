//! `rota server`'s hops end to end, with real processes and a test PKI made by rcgen: the API over TLS and the
//! CLI talking to it with `--ca-cert`; plain HTTP refused on a non-loopback address unless `--allow-plaintext`;
//! signed dispatches and raw-HTTP credentials from secret references reaching a real target, while the secret
//! values appear nowhere in the API's task view, the run's error or the server's output.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use common::{BIN, Server, eventually, rota, rota_as, wait_finished, write};
use rota_proto::signing::{SigningKey, Verifier};
use rota_tls::testing::TestCa;

const SIGNING_SECRET: &str = "signing-secret-0123456789abcdef-0123456789";
const TOKEN: &str = "tok-e2e-7c1d9a0b55";
const DIR_KEY: &str = "dirkey-31415926";

#[tokio::test(flavor = "multi_thread")]
async fn the_api_over_tls_and_the_cli_with_ca_cert() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Rota Test CA");
    let ca_file = ca.write(dir.path(), "ca");
    let (cert, key) = ca.server(&["localhost", "127.0.0.1"]).write(dir.path(), "api");
    let data = dir.path().join("data");
    let mut server = Server::start(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    assert!(server.url.starts_with("https://127.0.0.1:"), "{}", server.output());
    let url = server.url.clone();
    let ca_arg = ca_file.to_str().unwrap();

    let out = rota(&url, &["--ca-cert", ca_arg, "get", "tasks", "-o", "json"]).await;
    assert_eq!(out.json(), serde_json::json!([]), "{out:?}");

    // The CA also comes from ROTA_CA_CERT.
    let out = tokio::process::Command::new(BIN)
        .args(["--server", &url, "get", "tasks"])
        .env("ROTA_CA_CERT", ca_arg)
        // The admin token comes from the data directory's admin.token.
        .env_remove("ROTA_TOKEN")
        .env("ROTA_DATA_DIR", &data)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Credentials over TLS: missing, too weak (another namespace), expired and revoked are refused.
    let nowhere = dir.path().join("no-token-here");
    let nowhere = nowhere.to_str().unwrap();
    let anonymous = rota_as(&url, None, &["--ca-cert", ca_arg, "--data-dir", nowhere, "get", "tasks", "-n", "a"]).await;
    assert_ne!(anonymous.code, 0);
    assert!(anonymous.stderr.contains("unauthenticated"), "{}", anonymous.stderr);
    let create = |name: &'static str, extra: &'static [&'static str]| {
        let (url, ca) = (url.clone(), ca_arg.to_string());
        async move {
            let mut args = vec!["--ca-cert", ca.as_str(), "token", "create", name, "--grant", "a:viewer", "-o", "json"];
            args.extend_from_slice(extra);
            let created = rota(&url, &args).await.json();
            (created["token"].as_str().unwrap().to_string(), created["info"]["id"].as_str().unwrap().to_string())
        }
    };
    let (viewer, viewer_id) = create("viewer-a", &[]).await;
    let as_viewer = |ns: &'static str| {
        let (url, ca, token) = (url.clone(), ca_arg.to_string(), viewer.clone());
        async move { rota_as(&url, Some(&token), &["--ca-cert", &ca, "get", "tasks", "-n", ns, "-o", "json"]).await }
    };
    assert_eq!(as_viewer("a").await.json(), serde_json::json!([]));
    let other = as_viewer("b").await;
    assert!(other.code != 0 && other.stderr.contains("forbidden"), "{}", other.stderr);
    let (short, _) = create("short-lived", &["--expires-in", "1s"]).await;
    eventually("the 1s token expires", Duration::from_secs(10), || {
        let (url, ca, token) = (url.clone(), ca_arg.to_string(), short.clone());
        async move {
            let out = rota_as(&url, Some(&token), &["--ca-cert", &ca, "get", "tasks", "-n", "a"]).await;
            (out.code != 0 && out.stderr.contains("unauthenticated")).then_some(())
        }
    })
    .await;
    rota(&url, &["--ca-cert", ca_arg, "token", "revoke", &viewer_id]).await.ok();
    let revoked = as_viewer("a").await;
    assert!(revoked.code != 0 && revoked.stderr.contains("unauthenticated"), "{}", revoked.stderr);

    // Without the CA the server's certificate is not trusted.
    let out = rota(&url, &["get", "tasks"]).await;
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("cannot reach the rota server"), "{}", out.stderr);
    // Plain HTTP to the TLS port gets no API answer.
    let out = rota(&url.replace("https://", "http://"), &["get", "tasks"]).await;
    assert_ne!(out.code, 0);

    assert!(server.terminate(Duration::from_secs(30)).success(), "{}", server.output());
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_only_on_loopback_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = std::process::Command::new(BIN)
        .args(["server", "--listen", "0.0.0.0:0", "--data-dir", data.to_str().unwrap()])
        .env_remove("ROTA_ALLOW_PLAINTEXT")
        .env_remove("ROTA_TLS_CERT")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing to serve the management API over plain HTTP on 0.0.0.0:0")
            && stderr.contains("--allow-plaintext"),
        "{stderr}"
    );
    assert!(!data.exists(), "nothing was opened before the refusal");

    let mut server = Server::start_on("0.0.0.0:0", &["--data-dir", data.to_str().unwrap(), "--allow-plaintext"], &[]);
    assert!(server.url.starts_with("http://0.0.0.0:"), "{}", server.output());
    assert!(server.terminate(Duration::from_secs(30)).success(), "{}", server.output());
}

/// One request as the target saw it.
#[derive(Debug, Clone)]
struct Seen {
    headers: HeaderMap,
    verified: Result<(), String>,
}

#[derive(Clone)]
struct Target {
    seen: Arc<Mutex<Vec<Seen>>>,
    verifier: Arc<Verifier>,
}

async fn target(State(t): State<Target>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let verified = t
        .verifier
        .verify(
            method.as_str(),
            path,
            &body,
            |n| headers.get(n).and_then(|v| v.to_str().ok()),
            chrono::Utc::now().timestamp(),
        )
        .map_err(|e| e.to_string());
    t.seen.lock().unwrap().push(Seen { headers, verified: verified.clone() });
    match verified {
        Ok(()) => (StatusCode::OK, "done").into_response(),
        Err(e) => (StatusCode::UNAUTHORIZED, e).into_response(),
    }
}

fn raw_task(name: &str, target: &str, auth: &str) -> String {
    format!(
        "apiVersion: rota/v1\nkind: Task\nmetadata: {{namespace: sec, name: {name}}}\nspec:\n  schedule: {{manual: true}}\n  \
         target:\n    http: {{url: \"{target}/hooks/{name}?x=1\", protocol: raw, auth: {auth}}}\n  timeout: 10s\n  \
         retry: {{maxAttempts: 1}}\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_dispatches_and_credentials_from_secrets_never_leak() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = write(dir.path(), "signing.key", &format!("{SIGNING_SECRET}\n"));
    let secrets_dir = dir.path().join("secrets");
    std::fs::create_dir(&secrets_dir).unwrap();
    std::fs::write(secrets_dir.join("dir-key"), format!("{DIR_KEY}\n")).unwrap();

    let key = SigningKey::new("k1", SIGNING_SECRET.as_bytes().to_vec()).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let state = Target { seen: seen.clone(), verifier: Arc::new(Verifier::new(vec![key])) };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target_url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(target).with_state(state);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let data = dir.path().join("data");
    let mut server = Server::start_with_env(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--signing-key-id",
            "k1",
            "--signing-secret-file",
            &secret_file,
            "--secrets-dir",
            secrets_dir.to_str().unwrap(),
        ],
        &[("ROTA_SECRET_HOOK_TOKEN", TOKEN), ("RUST_LOG", "debug,sqlx=warn,hyper=info,h2=info")],
    );
    let url = server.url.clone();
    let tasks = [
        ("bearer", "{bearer: {secretRef: hook-token}}"),
        ("basic", "{basic: {username: svc, passwordRef: hook-token}}"),
        ("header", "{header: {name: X-Api-Key, valueRef: dir-key}}"),
        ("missing", "{bearer: {secretRef: not-there}}"),
    ];
    for (name, auth) in tasks {
        let file = write(dir.path(), &format!("{name}.yaml"), &raw_task(name, &target_url, auth));
        rota(&url, &["apply", "-f", &file]).await.ok();
    }
    let mut details = Vec::new();
    for (name, _) in tasks {
        let run = rota(&url, &["trigger", &format!("sec/{name}"), "-o", "json"]).await.json();
        details.push(wait_finished(&url, run["id"].as_i64().unwrap()).await);
    }
    for d in &details[..3] {
        assert_eq!(d["run"]["state"], "succeeded", "{d:#}");
    }
    let missing = &details[3];
    assert_eq!(missing["run"]["state"], "failed", "{missing:#}");
    assert!(missing.to_string().contains("secret not-there is not available"), "{missing:#}");

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "the run with a missing secret never called");
    for s in &seen {
        assert_eq!(s.verified, Ok(()), "every dispatch is signed");
        assert_eq!(s.headers["x-rota-key-id"], "k1");
    }
    assert_eq!(seen[0].headers["authorization"], format!("Bearer {TOKEN}"));
    let basic = seen[1].headers["authorization"].to_str().unwrap();
    assert!(basic.starts_with("Basic "), "{basic}");
    assert_eq!(seen[2].headers["x-api-key"], DIR_KEY);

    // The values are nowhere: not in the API's task view, the runs, nor anything the server printed.
    let mut shown = String::new();
    for (name, _) in tasks {
        shown.push_str(rota(&url, &["get", "task", &format!("sec/{name}"), "-o", "json"]).await.ok());
    }
    for d in &details {
        shown.push_str(&d.to_string());
    }
    assert!(shown.contains("hook-token"), "the references are shown");
    assert!(server.terminate(Duration::from_secs(30)).success());
    shown.push_str(&server.output());
    for value in [TOKEN, DIR_KEY, SIGNING_SECRET, "c3ZjOnRvay1lMmUtN2MxZDlhMGI1NQ"] {
        assert!(!shown.contains(value), "{value} leaked:\n{shown}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn weak_or_missing_signing_secrets_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let weak = write(dir.path(), "weak.key", "short");
    let out = std::process::Command::new(BIN)
        .args(["server", "--listen", "127.0.0.1:0", "--signing-secret-file", &weak])
        .env_remove("ROTA_SIGNING_SECRET_ENV")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("at least 32 bytes") && !stderr.contains("short"), "{stderr}");

    let out = std::process::Command::new(BIN)
        .args(["server", "--listen", "127.0.0.1:0", "--tls-cert", "/nonexistent/api.crt", "--tls-key", "/x.key"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/api.crt"), "{stderr}");
}
