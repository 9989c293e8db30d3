//! Helpers of the end-to-end tests: real `rota` processes (server and CLI) and a real HTTP executor node.

#![allow(dead_code)]

use std::future::Future;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use rota_proto::{LogAppend, RunEnvelope};
use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_rota");

/// Every `ROTA_*` variable the binary reads, removed so the caller's environment cannot change a test.
const ROTA_ENV: &[&str] = &[
    "ROTA_SERVER",
    "ROTA_TOKEN",
    "ROTA_CONFIG",
    "ROTA_LISTEN",
    "ROTA_DATA_DIR",
    "ROTA_DATABASE_URL",
    "ROTA_NODE_ID",
    "ROTA_SHARDS",
    "ROTA_PUBLIC_URL",
    "ROTA_CONTAINER_RUNTIME",
    "ROTA_SHUTDOWN_GRACE",
    "ROTA_SCAN_INTERVAL",
    "ROTA_LEASE_TTL",
    "ROTA_DEFAULT_TIMEOUT",
    "ROTA_MAX_IN_FLIGHT",
    "ROTA_EXECUTOR_TTL",
    "ROTA_TLS_CERT",
    "ROTA_TLS_KEY",
    "ROTA_TLS_CLIENT_CA",
    "ROTA_TLS_CLIENT_AUTH",
    "ROTA_ALLOW_PLAINTEXT",
    "ROTA_EXECUTOR_CA",
    "ROTA_EXECUTOR_CLIENT_CERT",
    "ROTA_EXECUTOR_CLIENT_KEY",
    "ROTA_SIGNING_KEY_ID",
    "ROTA_SIGNING_SECRET_FILE",
    "ROTA_SIGNING_SECRET_ENV",
    "ROTA_SECRETS_DIR",
    "ROTA_CA_CERT",
];

/// The admin token of every server started by this test binary, by base URL and by `db:<database url>` (nodes
/// sharing a database share the token the first of them created).
static TOKENS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

fn remember(key: &str, token: &str) {
    TOKENS.lock().unwrap().push((key.to_string(), token.to_string()));
}

fn recall(key: &str) -> Option<String> {
    TOKENS.lock().unwrap().iter().rev().find(|(k, _)| k == key).map(|(_, t)| t.clone())
}

/// The admin token of the server whose base URL starts `url` (also a report URL under it), if any.
pub fn token_for(url: &str) -> Option<String> {
    TOKENS
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|(k, _)| k.starts_with("http") && url.starts_with(k.as_str()))
        .map(|(_, t)| t.clone())
}

/// A request builder with the admin token of the server at `url`.
pub fn authed(req: reqwest::RequestBuilder, url: &str) -> reqwest::RequestBuilder {
    match token_for(url) {
        Some(t) => req.bearer_auth(t),
        None => req,
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A running `rota server` process.
pub struct Server {
    child: Option<Child>,
    pub url: String,
    /// The cluster-admin token the server bootstrapped (or that its database already had, when known).
    pub token: Option<String>,
    /// A data directory the harness made up when the test gave none (the admin token is written there).
    _data: Option<tempfile::TempDir>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

/// Appends every line `stream` yields to `into`, on its own thread (so a child never blocks on a full pipe).
pub fn collect(stream: impl Read + Send + 'static, into: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let mut buf = into.lock().unwrap();
            buf.push_str(&line);
            buf.push('\n');
        }
    });
}

impl Server {
    /// Starts `rota server --listen 127.0.0.1:0 ARGS…` and waits until it prints its address.
    pub fn start(args: &[&str]) -> Server {
        Server::start_with_env(args, &[])
    }

    /// [`Server::start`] with extra environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::start_on("127.0.0.1:0", args, env)
    }

    /// [`Server::start_with_env`] listening on `listen`.
    pub fn start_on(listen: &str, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = std::process::Command::new(BIN);
        cmd.arg("server").arg("--listen").arg(listen).args(args);
        for v in ROTA_ENV {
            cmd.env_remove(v);
        }
        cmd.envs(env.iter().copied());
        let arg_after = |flag: &str| args.iter().position(|a| *a == flag).and_then(|i| args.get(i + 1)).copied();
        let mut data_dir = arg_after("--data-dir").map(std::path::PathBuf::from);
        let mut made_up = None;
        if data_dir.is_none() && arg_after("--config").is_none() {
            // Keep the bootstrap admin token out of the working directory.
            let dir = tempfile::tempdir().expect("a temporary data directory");
            cmd.arg("--data-dir").arg(dir.path());
            data_dir = Some(dir.path().to_path_buf());
            made_up = Some(dir);
        }
        let db_key = arg_after("--database-url").map(|u| format!("db:{u}"));
        cmd.env("RUST_LOG", "info").env_remove("DOCKER_HOST");
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn rota server");
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        collect(child.stdout.take().unwrap(), stdout.clone());
        collect(child.stderr.take().unwrap(), stderr.clone());
        let mut server = Server { child: Some(child), url: String::new(), token: None, _data: made_up, stdout, stderr };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(url) = server.stdout().lines().find_map(|l| l.strip_prefix("rota listening on ")) {
                server.url = url.trim().to_string();
                let out = server.stdout();
                let written = out
                    .lines()
                    .find_map(|l| l.strip_prefix("rota admin token: created and written to "))
                    .and_then(|rest| rest.split(" (").next())
                    .map(std::path::PathBuf::from);
                let file = written.or_else(|| data_dir.map(|d| d.join("admin.token"))).filter(|p| p.exists());
                let token = file
                    .map(|p| std::fs::read_to_string(p).unwrap().trim().to_string())
                    .or_else(|| db_key.as_deref().and_then(recall));
                if let Some(t) = &token {
                    remember(&server.url, t);
                    if let Some(k) = &db_key {
                        remember(k, t);
                    }
                }
                server.token = token;
                return server;
            }
            if let Some(status) = server.child.as_mut().unwrap().try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(200)); // let the readers drain
                panic!("rota server exited with {status} before listening:\n{}", server.output());
            }
            if Instant::now() > deadline {
                panic!("rota server did not print its address within 60 s:\n{}", server.output());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Everything the server printed so far.
    pub fn output(&self) -> String {
        format!("--- stdout ---\n{}--- stderr ---\n{}", self.stdout(), self.stderr())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends `signal` (`KILL`, `STOP`, `CONT`, …) to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.pid();
        let ok = std::process::Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status();
        assert!(ok.expect("run kill").success(), "kill -{signal} {pid} failed");
    }

    /// `kill -9`, then reaps the process.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits (up to `timeout`) for the process to exit.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let pid = self.pid();
        let ok = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status().expect("run kill");
        assert!(ok.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100)); // let the readers drain
                self.child = None;
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.child = None;
                panic!("rota server did not exit within {timeout:?} after SIGTERM:\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("rota server output:\n{}", self.output());
        }
    }
}

/// The outcome of one CLI invocation.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Asserts success and returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "command failed:\nstdout: {}\nstderr: {}", self.stdout, self.stderr);
        &self.stdout
    }

    /// Asserts success and parses stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(self.ok()).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// Runs `rota --server URL ARGS…` with the server's admin token (`ROTA_TOKEN`), when the harness knows it.
pub async fn rota(server: &str, args: &[&str]) -> Out {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("--server").arg(server).args(args);
    run(cmd, token_for(server).as_deref()).await
}

/// Runs `rota --server URL ARGS…` with no token in the environment (flags may still give one).
pub async fn rota_as(server: &str, token: Option<&str>, args: &[&str]) -> Out {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("--server").arg(server).args(args);
    run(cmd, token).await
}

/// Runs `rota ARGS…` without a server (offline commands).
pub async fn rota_offline(args: &[&str]) -> Out {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args);
    run(cmd, None).await
}

async fn run(mut cmd: tokio::process::Command, token: Option<&str>) -> Out {
    for v in ROTA_ENV {
        cmd.env_remove(v);
    }
    if let Some(t) = token {
        cmd.env("ROTA_TOKEN", t);
    }
    // Not the working directory's ./rota-data/admin.token.
    cmd.env("ROTA_DATA_DIR", "/nonexistent/rota-test-data");
    cmd.stdin(Stdio::null());
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("the CLI finished within 60 s")
        .expect("run the rota CLI");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A real executor node speaking the `rota` protocol on 127.0.0.1:0. It records every envelope, appends one log
/// line to the run through the envelope's report URL (with the admin token of the server it came from: static
/// candidates are not nodes of a service, so only the cluster admin may report for them), waits `sleep_ms` when the params have it, and answers
/// `succeeded` with its params as output (or `failed` when the params say `fail: true`).
pub struct Executor {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<RunEnvelope>>>,
}

#[derive(Clone)]
struct ExecState {
    received: Arc<Mutex<Vec<RunEnvelope>>>,
    http: reqwest::Client,
}

impl Executor {
    pub async fn start() -> Executor {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        rota_tls::install_crypto_provider();
        let state = ExecState { received: received.clone(), http: reqwest::Client::new() };
        let app = axum::Router::new().fallback(axum::routing::post(execute)).with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Executor { addr, received }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Envelopes received for run `run_id`.
    pub fn envelopes_of(&self, run_id: i64) -> Vec<RunEnvelope> {
        let id = run_id.to_string();
        self.received.lock().unwrap().iter().filter(|e| e.run_id == id).cloned().collect()
    }
}

async fn execute(State(state): State<ExecState>, Json(envelope): Json<RunEnvelope>) -> Json<Value> {
    state.received.lock().unwrap().push(envelope.clone());
    if let Some(url) = &envelope.report_url {
        let append = LogAppend {
            stream: Some("stdout".into()),
            lines: vec![format!("test executor ran {} run {}", envelope.task, envelope.run_id)],
        };
        match authed(state.http.post(format!("{url}/logs")), url).json(&append).send().await {
            Ok(res) if res.status().is_success() => {}
            Ok(res) => eprintln!("test executor: log append answered {}", res.status()),
            Err(e) => eprintln!("test executor: log append failed: {e}"),
        }
    }
    if let Some(ms) = envelope.params.get("sleep_ms").and_then(Value::as_u64) {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    if envelope.params.get("fail").and_then(Value::as_bool) == Some(true) {
        return Json(json!({"status": "failed", "error": "asked to fail"}));
    }
    Json(json!({"status": "succeeded", "output": {"echo": envelope.params}}))
}

/// A task document calling `executor` (manual trigger only unless `schedule` says otherwise).
pub fn task_yaml(namespace: &str, name: &str, schedule: &str, executor: &str, labels: &str) -> String {
    format!(
        "apiVersion: rota/v1\nkind: Task\nmetadata:\n  namespace: {namespace}\n  name: {name}\n  labels: {{{labels}}}\n\
         spec:\n  schedule: {schedule}\n  target:\n    http: {{path: /jobs/{name}, protocol: rota}}\n  \
         candidates:\n    static: [\"{executor}\"]\n  timeout: 10s\n  params: {{greeting: hi}}\n"
    )
}

pub fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

/// Waits until run `id` is in a terminal state; returns its detail (`rota run ID -o json`).
pub async fn wait_finished(server: &str, id: i64) -> Value {
    eventually(&format!("run {id} to finish"), Duration::from_secs(30), || async move {
        let detail = rota(server, &["run", &id.to_string(), "-o", "json"]).await.json();
        let state = detail["run"]["state"].as_str().unwrap_or("").to_string();
        ["succeeded", "failed", "timed_out", "skipped", "cancelled"].contains(&state.as_str()).then_some(detail)
    })
    .await
}
