//! Test harness: the real router served by `axum::serve` on 127.0.0.1:0, a real SQLite store, a real
//! `Scheduler` with a scripted in-process executor, and a reqwest client that authenticates as the cluster
//! admin (`http`; `anon` sends no credentials, [`Server::client`] any token).

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use rota_api::auth::{Auth, FailureLimit, issue_token};
use rota_api::{ApiConfig, ApiState};
use rota_core::{Dispatch, DispatchOutcome, Executor, Scheduler, SchedulerConfig};
use rota_proto::RunResult;
use rota_store::{Grant, TokenScope};
use rota_store_sql::SqlStore;
use serde_json::{Value, json};

/// An executor whose behaviour each task chooses with its `mode` param: `succeed` (default; echoes the params as
/// output), `fail`, or `accept` (answers 202; the test reports later).
#[derive(Default)]
pub struct ScriptedExecutor {
    pub dispatches: Mutex<Vec<Dispatch>>,
}

#[async_trait]
impl Executor for ScriptedExecutor {
    async fn dispatch(&self, dispatch: Dispatch) -> DispatchOutcome {
        self.dispatches.lock().unwrap().push(dispatch.clone());
        match dispatch.params.get("mode").and_then(Value::as_str).unwrap_or("succeed") {
            "accept" => DispatchOutcome::Accepted,
            "fail" => DispatchOutcome::Completed(RunResult::failed("told to fail")),
            _ => DispatchOutcome::Completed(RunResult::succeeded(Some(json!({"echo": dispatch.params})))),
        }
    }
}

pub struct Server {
    pub base: String,
    /// Sends the cluster admin's token on every request.
    pub http: reqwest::Client,
    /// Sends no credentials.
    pub anon: reqwest::Client,
    /// The cluster admin's token (`*:admin`).
    pub admin_token: String,
    pub scheduler: Scheduler,
    pub store: Arc<SqlStore>,
    pub executor: Arc<ScriptedExecutor>,
    handle: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

pub fn scheduler_config() -> SchedulerConfig {
    SchedulerConfig {
        node_id: "api-test".into(),
        shard_count: 4,
        lookahead: Duration::from_secs(2),
        scan_interval: Duration::from_millis(50),
        lease_ttl: Duration::from_secs(6),
        default_timeout: Duration::from_secs(30),
        shutdown_grace: Duration::from_secs(1),
        ..SchedulerConfig::default()
    }
}

impl Server {
    pub async fn start() -> Server {
        Server::start_with(ApiConfig::default()).await
    }

    pub async fn start_with(config: ApiConfig) -> Server {
        Server::launch(config, true, FailureLimit::unlimited()).await
    }

    /// A server limiting failed authentication as given (the other constructors do not limit it).
    pub async fn start_limited(limit: FailureLimit) -> Server {
        Server::launch(ApiConfig::default(), true, limit).await
    }

    /// A server whose scheduler is never started: it takes no leases and registers nothing, so a test can play
    /// the cluster through the store itself.
    pub async fn start_idle() -> Server {
        Server::launch(ApiConfig::default(), false, FailureLimit::unlimited()).await
    }

    /// A server whose authentication is built by `auth` from the store.
    pub async fn start_with_auth(auth: impl FnOnce(Arc<SqlStore>) -> Auth) -> Server {
        Server::launch_with(ApiConfig::default(), true, auth).await
    }

    async fn launch(config: ApiConfig, start_scheduler: bool, limit: FailureLimit) -> Server {
        Server::launch_with(config, start_scheduler, |store| Auth::tokens(store).with_limit(limit)).await
    }

    async fn launch_with(config: ApiConfig, start_scheduler: bool, auth: impl FnOnce(Arc<SqlStore>) -> Auth) -> Server {
        let store = Arc::new(rota_store_sql::testing::fresh_sqlite().await);
        let executor = Arc::new(ScriptedExecutor::default());
        let scheduler = Scheduler::new(store.clone(), executor.clone(), scheduler_config());
        if start_scheduler {
            scheduler.start().await.expect("the scheduler starts");
        }
        let auth = auth(store.clone());
        let state = ApiState { scheduler: scheduler.clone(), store: store.clone(), config, auth };
        let app = rota_api::router(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let handle = tokio::spawn(async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
                .await
                .expect("server runs");
        });
        rota_tls::install_crypto_provider();
        let scope = TokenScope::User { grants: vec![Grant::new("*", rota_store::Role::Admin)] };
        let admin = issue_token(&*store, "test admin", scope, "system", None, chrono::Utc::now()).await.unwrap();
        Server {
            base: format!("http://{addr}"),
            http: client(Some(&admin.token)),
            anon: client(None),
            admin_token: admin.token,
            scheduler,
            store,
            executor,
            handle,
        }
    }

    /// A new token with these `namespace:role` grants.
    pub async fn token(&self, grants: &[&str]) -> String {
        let grants = grants.iter().map(|g| g.parse().unwrap()).collect();
        self.issue(TokenScope::User { grants }, None).await
    }

    /// A new executor credential of `service`.
    pub async fn executor_token(&self, service: &str) -> String {
        self.issue(TokenScope::Executor { service: service.into() }, None).await
    }

    pub async fn issue(&self, scope: TokenScope, expires_at: Option<chrono::DateTime<chrono::Utc>>) -> String {
        issue_token(&*self.store, "test", scope, "system", expires_at, chrono::Utc::now()).await.unwrap().token
    }

    /// A client sending `token`.
    pub fn client(&self, token: &str) -> reqwest::Client {
        client(Some(token))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// PUTs a task document with the given content type (`None`: no Content-Type header).
    pub async fn put_task(&self, ns: &str, name: &str, content_type: Option<&str>, body: &str) -> (StatusCode, Value) {
        let mut req = self.http.put(self.url(&format!("/api/v1/tasks/{ns}/{name}"))).body(body.to_string());
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        into_json(req.send().await.unwrap()).await
    }

    /// PUTs a task document as YAML and asserts it was stored (201 or 200).
    pub async fn apply_yaml(&self, ns: &str, name: &str, body: &str) -> Value {
        let (status, v) = self.put_task(ns, name, Some("application/yaml"), body).await;
        assert!(status == StatusCode::CREATED || status == StatusCode::OK, "PUT {ns}/{name}: {status} {v}");
        v
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        into_json(self.http.get(self.url(path)).send().await.unwrap()).await
    }

    pub async fn get_query(&self, path: &str, query: &[(&str, &str)]) -> (StatusCode, Value) {
        into_json(self.http.get(self.url(path)).query(query).send().await.unwrap()).await
    }

    pub async fn post(&self, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.http.post(self.url(path));
        if let Some(b) = body {
            req = req.json(&b);
        }
        into_json(req.send().await.unwrap()).await
    }

    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        into_json(self.http.post(self.url(path)).header("content-type", content_type).body(body).send().await.unwrap())
            .await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        into_json(self.http.delete(self.url(path)).send().await.unwrap()).await
    }

    /// Triggers a task and returns the new run.
    pub async fn trigger(&self, ns: &str, name: &str, params: Option<Value>) -> Value {
        let (status, run) =
            self.post(&format!("/api/v1/tasks/{ns}/{name}/trigger"), params.map(|p| json!({"params": p}))).await;
        assert_eq!(status, StatusCode::CREATED, "trigger {ns}/{name}: {run}");
        // Manual fires are keyed by instant (millisecond precision); keep them apart.
        tokio::time::sleep(Duration::from_millis(3)).await;
        run
    }

    /// Polls `GET /api/v1/runs/{id}` until the run is in one of `states` (10 s at most); returns the detail.
    pub async fn wait_run(&self, id: i64, states: &[&str]) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (status, detail) = self.get(&format!("/api/v1/runs/{id}")).await;
            assert_eq!(status, StatusCode::OK, "{detail}");
            let state = detail["run"]["state"].as_str().unwrap_or_default().to_string();
            if states.contains(&state.as_str()) {
                return detail;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "run {id} stayed {state}, expected one of {states:?}: {detail}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// A reqwest client, sending `Authorization: Bearer <token>` when a token is given.
pub fn client(token: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = token {
        let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")).unwrap();
        v.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, v);
    }
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        // A fresh connection per request: after a 413 the server closes the connection without reading the body,
        // and reusing a pooled connection would race with that close (IncompleteMessage).
        .pool_max_idle_per_host(0)
        .default_headers(headers)
        .build()
        .unwrap()
}

/// Status and JSON body (`Value::Null` for an empty body; panics on a non-JSON body, which no route may send).
pub async fn into_json(res: reqwest::Response) -> (StatusCode, Value) {
    let status = res.status();
    let ct = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let bytes = res.bytes().await.unwrap();
    if bytes.is_empty() {
        return (status, Value::Null);
    }
    assert!(
        ct.starts_with("application/json"),
        "{status}: content type {ct:?}, body {:?}",
        String::from_utf8_lossy(&bytes)
    );
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{status}: body is not JSON ({e}): {:?}", String::from_utf8_lossy(&bytes)));
    (status, v)
}

/// Asserts the one error shape with the given status and code; returns the detail paths.
pub fn assert_error(status: StatusCode, body: &Value, want_status: u16, want_code: &str) -> Vec<String> {
    assert_eq!(status.as_u16(), want_status, "status of {body}");
    let err = body.get("error").unwrap_or_else(|| panic!("no `error` object in {body}"));
    assert_eq!(err["code"], want_code, "code of {body}");
    assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()), "message of {body}");
    let details = err["details"].as_array().unwrap_or_else(|| panic!("`details` is not an array in {body}"));
    assert_eq!(err.as_object().unwrap().len(), 3, "exactly code, message, details: {body}");
    details
        .iter()
        .map(|d| {
            assert!(d["message"].is_string(), "detail message in {body}");
            d["path"].as_str().expect("detail path").to_string()
        })
        .collect()
}

/// A valid manual task document (YAML). `mode` is the scripted executor's behaviour.
pub fn task_yaml(ns: &str, name: &str, labels: &[(&str, &str)], mode: &str) -> String {
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}: \"{v}\"")).collect();
    format!(
        "apiVersion: rota/v1\nkind: Task\nmetadata:\n  namespace: {ns}\n  name: {name}\n  labels: {{{}}}\n\
         spec:\n  schedule:\n    manual: true\n  target:\n    http:\n      path: /jobs/{name}\n  \
         candidates:\n    static: [\"http://127.0.0.1:9\"]\n  params:\n    mode: {mode}\n",
        labels.join(", ")
    )
}

/// The same document as JSON.
pub fn task_json(ns: &str, name: &str, mode: &str) -> Value {
    json!({
        "apiVersion": "rota/v1",
        "kind": "Task",
        "metadata": {"namespace": ns, "name": name},
        "spec": {
            "schedule": {"manual": true},
            "target": {"http": {"path": format!("/jobs/{name}")}},
            "candidates": {"static": ["http://127.0.0.1:9"]},
            "params": {"mode": mode}
        }
    })
}
