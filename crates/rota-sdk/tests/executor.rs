//! The executor side against a fake scheduler (an axum app on 127.0.0.1:0 that records what it is sent): the HTTP
//! transport, registration, heartbeats and re-registration, declared tasks, async reports with retries, logs,
//! drain and deregistration.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use chrono::Utc;
use rota_proto::{ExecutorRegistration, LogAppend, ResultStatus, RunEnvelope, RunReport, RunResult, ShardInfo};
use rota_sdk::ClientError;
use rota_sdk::executor::{ExecutorError, ExecutorNode, HandlerError, RunContext};
use serde_json::{Value, json};
use tokio::sync::{Notify, oneshot};

#[derive(Default)]
struct Fake {
    /// Everything received, in order: `register n1`, `heartbeat n1`, `drain n1`, `delete n1`, `put ns/name`,
    /// `report 7`, `logs 7`, …
    events: Vec<String>,
    registrations: Vec<ExecutorRegistration>,
    tasks: std::collections::BTreeMap<String, (i64, Value)>,
    reports: Vec<RunReport>,
    logs: Vec<String>,
    /// `Authorization` header of every request.
    auth: Vec<Option<String>>,
    /// Answer the next heartbeat with 404 (the scheduler "forgot" the node).
    forget: bool,
    /// Answer registrations with 409.
    refuse_registration: bool,
    /// Answer this many reports with 503 before accepting one.
    report_failures: u32,
    /// Answer reports with this 4xx status.
    report_status: Option<u16>,
}

type Shared = Arc<Mutex<Fake>>;

fn api_error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"error": {"code": code, "message": message, "details": []}}))).into_response()
}

fn lease(id: &str) -> Json<Value> {
    Json(json!({"id": id, "state": "active", "heartbeat_interval_ms": 50,
        "expires_at": (Utc::now() + chrono::Duration::seconds(1)).to_rfc3339()}))
}

fn record<'a>(fake: &'a Shared, headers: &HeaderMap, event: String) -> std::sync::MutexGuard<'a, Fake> {
    let mut f = fake.lock().unwrap();
    f.auth.push(headers.get("authorization").map(|v| v.to_str().unwrap().to_string()));
    f.events.push(event);
    f
}

async fn start_fake() -> (String, Shared) {
    let fake: Shared = Arc::default();
    async fn register(State(fake): State<Shared>, headers: HeaderMap, Json(r): Json<ExecutorRegistration>) -> Response {
        let mut f = record(&fake, &headers, format!("register {}", r.id));
        if f.refuse_registration {
            return api_error(StatusCode::CONFLICT, "conflict", "node id n1 belongs to service other");
        }
        f.registrations.push(r.clone());
        lease(&r.id).into_response()
    }
    async fn heartbeat(State(fake): State<Shared>, headers: HeaderMap, Path(id): Path<String>) -> Response {
        let mut f = record(&fake, &headers, format!("heartbeat {id}"));
        if std::mem::take(&mut f.forget) {
            return api_error(StatusCode::NOT_FOUND, "not_found", "executor node not found");
        }
        lease(&id).into_response()
    }
    async fn drain(State(fake): State<Shared>, headers: HeaderMap, Path(id): Path<String>) -> Response {
        drop(record(&fake, &headers, format!("drain {id}")));
        lease(&id).into_response()
    }
    async fn deregister(State(fake): State<Shared>, headers: HeaderMap, Path(id): Path<String>) -> StatusCode {
        drop(record(&fake, &headers, format!("delete {id}")));
        StatusCode::NO_CONTENT
    }
    fn view(ns: &str, name: &str, version: i64, spec: &Value) -> Value {
        json!({"namespace": ns, "name": name, "version": version, "spec": spec,
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"})
    }
    async fn put_task(
        State(fake): State<Shared>,
        headers: HeaderMap,
        Path((ns, name)): Path<(String, String)>,
        Json(doc): Json<Value>,
    ) -> Response {
        let mut f = record(&fake, &headers, format!("put {ns}/{name}"));
        let version = f.tasks.get(&format!("{ns}/{name}")).map_or(1, |(v, _)| v + 1);
        f.tasks.insert(format!("{ns}/{name}"), (version, doc.clone()));
        let status = if version == 1 { StatusCode::CREATED } else { StatusCode::OK };
        (status, Json(view(&ns, &name, version, &doc))).into_response()
    }
    async fn get_task(
        State(fake): State<Shared>,
        headers: HeaderMap,
        Path((ns, name)): Path<(String, String)>,
    ) -> Response {
        let f = record(&fake, &headers, format!("get {ns}/{name}"));
        match f.tasks.get(&format!("{ns}/{name}")) {
            Some((version, doc)) => Json(view(&ns, &name, *version, doc)).into_response(),
            None => api_error(StatusCode::NOT_FOUND, "not_found", "task not found"),
        }
    }
    async fn report(
        State(fake): State<Shared>,
        headers: HeaderMap,
        Path(id): Path<String>,
        Json(r): Json<RunReport>,
    ) -> Response {
        let mut f = record(&fake, &headers, format!("report {id}"));
        if let Some(status) = f.report_status {
            return api_error(StatusCode::from_u16(status).unwrap(), "conflict", "attempt is not current");
        }
        if f.report_failures > 0 {
            f.report_failures -= 1;
            return api_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "store down");
        }
        f.reports.push(r);
        Json(json!({})).into_response()
    }
    async fn logs(
        State(fake): State<Shared>,
        headers: HeaderMap,
        Path(id): Path<String>,
        Json(l): Json<LogAppend>,
    ) -> Json<Value> {
        let mut f = record(&fake, &headers, format!("logs {id}"));
        f.logs.extend(l.lines);
        Json(json!({"last_seq": 1}))
    }
    let app = axum::Router::new()
        .route("/api/v1/executors", post(register))
        .route("/api/v1/executors/{id}/heartbeat", post(heartbeat))
        .route("/api/v1/executors/{id}/drain", post(drain))
        .route("/api/v1/executors/{id}", delete(deregister))
        .route("/api/v1/tasks/{ns}/{name}", get(get_task).put(put_task))
        .route("/api/v1/runs/{id}/report", post(report))
        .route("/api/v1/runs/{id}/logs", post(logs))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, fake)
}

/// Polls `check` until it holds, failing after 10 s with `what`.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn envelope(task: &str, report_url: Option<String>, params: Value) -> RunEnvelope {
    RunEnvelope {
        run_id: "7".into(),
        task: task.into(),
        attempt: 3,
        scheduled_at: Utc::now(),
        params: params.as_object().cloned().unwrap_or_default(),
        shard: ShardInfo::default(),
        deadline: Utc::now() + chrono::Duration::seconds(30),
        report_url,
    }
}

/// A running node: its URL, the shutdown trigger and the `serve_http` outcome.
struct Running {
    url: String,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<Result<(), ExecutorError>>,
}

impl Running {
    async fn start(node: &ExecutorNode) -> Running {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let node = node.clone();
        let done = tokio::spawn(async move {
            node.serve_http(listener, async {
                let _ = stopped.await;
            })
            .await
        });
        Running { url, stop: Some(stop), done }
    }

    fn shutdown(&mut self) {
        let _ = self.stop.take().expect("shut down once").send(());
    }

    async fn stopped(self) -> Result<(), ExecutorError> {
        tokio::time::timeout(Duration::from_secs(20), self.done).await.expect("serve_http returned").unwrap()
    }
}

async fn post_envelope(url: &str, path: &str, env: &RunEnvelope) -> reqwest::Response {
    rota_tls::install_crypto_provider();
    reqwest::Client::new().post(format!("{url}{path}")).json(env).send().await.unwrap()
}

fn count(fake: &Shared, prefix: &str) -> usize {
    fake.lock().unwrap().events.iter().filter(|e| e.starts_with(prefix)).count()
}

fn position(fake: &Shared, event: &str) -> usize {
    let f = fake.lock().unwrap();
    f.events.iter().position(|e| e == event).unwrap_or_else(|| panic!("no {event:?} in {:?}", f.events))
}

#[tokio::test(flavor = "multi_thread")]
async fn registers_heartbeats_serves_and_drains() {
    let (sched, fake) = start_fake().await;
    let release = Arc::new(Notify::new());
    let released = release.clone();
    let node = ExecutorNode::builder("billing")
        .scheduler(&sched)
        .token(Some("s3cret".to_string()))
        .id("n1")
        .labels([("zone", "a")])
        .weight(3)
        .capacity(8)
        .handler("report", |ctx: RunContext| async move {
            ctx.log("sync line").await;
            Ok(json!({"rows": 42, "attempt": ctx.attempt()}))
        })
        .async_handler("export", move |ctx: RunContext| {
            let released = released.clone();
            async move {
                ctx.log("export started").await;
                released.notified().await;
                ctx.log("export done").await;
                Ok(json!({"exported": true}))
            }
        })
        .task("metadata: {namespace: billing, name: report}\nspec: {schedule: {manual: true}}\n")
        .build()
        .unwrap();
    let mut running = Running::start(&node).await;

    // Registered with everything the builder was given, and the declared task applied with what it left out.
    eventually("registration", || count(&fake, "register n1") == 1).await;
    let reg = fake.lock().unwrap().registrations[0].clone();
    assert_eq!(
        reg,
        ExecutorRegistration {
            id: "n1".into(),
            service: "billing".into(),
            address: running.url.clone(),
            protocol: rota_proto::ExecutorProtocol::Http,
            labels: [("zone".to_string(), "a".to_string())].into(),
            weight: 3,
            capacity: 8,
        }
    );
    eventually("the declared task", || count(&fake, "put billing/report") == 1).await;
    let doc = fake.lock().unwrap().tasks["billing/report"].1.clone();
    assert_eq!(doc["spec"]["candidates"], json!({"service": "billing"}));
    assert_eq!(doc["spec"]["target"], json!({"http": {"path": "/report"}}));
    assert_eq!((doc["apiVersion"].as_str(), doc["kind"].as_str()), (Some("rota/v1"), Some("Task")));

    // Heartbeats at the lease's interval; a 404 makes the node register again.
    eventually("heartbeats", || count(&fake, "heartbeat n1") >= 2).await;
    fake.lock().unwrap().forget = true;
    eventually("re-registration", || count(&fake, "register n1") == 2).await;

    // A sync dispatch: logs reach the scheduler before the result.
    let report_url = format!("{sched}/api/v1/runs/7");
    let res =
        post_envelope(&running.url, "/report", &envelope("billing/report", Some(report_url.clone()), json!({}))).await;
    assert_eq!(res.status(), 200);
    let result: RunResult = res.json().await.unwrap();
    assert_eq!(result, RunResult::succeeded(Some(json!({"rows": 42, "attempt": 3}))));
    assert_eq!(fake.lock().unwrap().logs, ["sync line"]);

    // An async dispatch is accepted at once and keeps running through the shutdown.
    let res = post_envelope(&running.url, "/jobs/export", &envelope("billing/exp", Some(report_url), json!({}))).await;
    assert_eq!(res.status(), 202);
    eventually("the async handler started", || node.in_flight() == 1).await;
    running.shutdown();
    eventually("drain", || count(&fake, "drain n1") == 1).await;
    assert!(node.is_draining());
    let env = envelope("billing/report", None, json!({}));
    let res = post_envelope(&running.url, "/report", &env).await;
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    let health = reqwest::get(format!("{}/healthz", running.url)).await.unwrap();
    assert_eq!(health.status(), 503);
    assert_eq!(count(&fake, "delete n1"), 0, "still running the export");

    // Releasing the handler delivers its report (with the lines not sent yet), then the node deregisters.
    release.notify_one();
    running.stopped().await.unwrap();
    let (report, logs, auth) = {
        let f = fake.lock().unwrap();
        (f.reports.last().expect("a report").clone(), f.logs.clone(), f.auth.clone())
    };
    assert_eq!((report.attempt, report.status, report.node.as_deref()), (3, ResultStatus::Succeeded, Some("n1")));
    assert_eq!(report.output, Some(json!({"exported": true})));
    let mut all_lines = logs;
    all_lines.extend(report.logs.clone());
    assert_eq!(all_lines, ["sync line", "export started", "export done"], "each line once, in order");
    assert!(auth.iter().all(|a| a.as_deref() == Some("Bearer s3cret")), "{auth:?}");
    assert!(position(&fake, "drain n1") < position(&fake, "report 7"));
    assert!(position(&fake, "report 7") < position(&fake, "delete n1"));
    let heartbeats_then = count(&fake, "heartbeat n1");
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(count(&fake, "heartbeat n1"), heartbeats_then, "no heartbeat after deregistering");
}

#[tokio::test(flavor = "multi_thread")]
async fn reports_are_retried_on_5xx_and_not_on_4xx() {
    let (sched, fake) = start_fake().await;
    fake.lock().unwrap().report_failures = 2;
    let node = ExecutorNode::builder("svc")
        .id("n2")
        .async_handler("later", |ctx: RunContext| async move {
            ctx.log("working").await;
            Err(HandlerError::msg("bucket full"))
        })
        .build()
        .unwrap();
    let mut running = Running::start(&node).await;
    let report_url = format!("{sched}/api/v1/runs/7");
    let res = post_envelope(&running.url, "/", &envelope("ns/later", Some(report_url.clone()), json!({}))).await;
    assert_eq!(res.status(), 202);
    eventually("the report", || !fake.lock().unwrap().reports.is_empty()).await;
    assert_eq!(count(&fake, "report 7"), 3, "two 503s, then accepted");
    let report = fake.lock().unwrap().reports[0].clone();
    assert_eq!((report.status, report.error.as_deref()), (ResultStatus::Failed, Some("bucket full")));
    assert_eq!(report.logs, ["working"]);
    assert_eq!(report.node.as_deref(), Some("n2"));
    eventually("nothing in flight", || node.in_flight() == 0).await;

    // A 4xx (the attempt is not current any more) is final.
    fake.lock().unwrap().report_status = Some(409);
    let res = post_envelope(&running.url, "/", &envelope("ns/later", Some(report_url), json!({}))).await;
    assert_eq!(res.status(), 202);
    eventually("the refused report", || count(&fake, "report 7") == 4).await;
    eventually("nothing in flight", || node.in_flight() == 0).await;
    assert_eq!(count(&fake, "report 7"), 4);

    // Without a scheduler configured, the node neither registers nor deregisters.
    running.shutdown();
    running.stopped().await.unwrap();
    assert_eq!(count(&fake, "register"), 0);
    assert_eq!(count(&fake, "delete"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_are_answered_400() {
    let node = ExecutorNode::builder("svc").handler("a", |_| async { Ok(Value::Null) }).build().unwrap();
    let mut running = Running::start(&node).await;
    rota_tls::install_crypto_provider();
    let http = reqwest::Client::new();
    let res = http.post(format!("{}/a", running.url)).body("{not json").send().await.unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_argument");
    assert!(body["error"]["message"].as_str().unwrap().starts_with("the body is not JSON"), "{body}");
    let res = http.post(format!("{}/a", running.url)).json(&json!({"run_id": 1})).send().await.unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().starts_with("the body is not a run envelope"), "{body}");
    let res = http.get(format!("{}/a", running.url)).send().await.unwrap();
    assert_eq!(res.status(), 405);
    let res = http.get(format!("{}/healthz", running.url)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    // An unknown handler is a failed result, not a transport error.
    let res = post_envelope(&running.url, "/jobs/zzz", &envelope("ns/yyy", None, json!({}))).await;
    assert_eq!(res.status(), 200);
    let result: RunResult = res.json().await.unwrap();
    assert_eq!(result.status, ResultStatus::Failed);
    assert!(result.error.unwrap().starts_with("no handler \"zzz\""));
    running.shutdown();
    running.stopped().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_registration_is_a_startup_error() {
    let (sched, fake) = start_fake().await;
    fake.lock().unwrap().refuse_registration = true;
    let node = ExecutorNode::builder("svc").scheduler(&sched).id("n1").build().unwrap();
    let running = Running::start(&node).await;
    let err = running.stopped().await.unwrap_err();
    let ExecutorError::Register { id, source: ClientError::Api { status, code, message, .. } } = &err else {
        panic!("{err:?}")
    };
    assert_eq!((id.as_str(), *status, code.as_str()), ("n1", 409, "conflict"));
    assert_eq!(message, "node id n1 belongs to service other");
    assert!(err.to_string().contains("node id n1 belongs to service other"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn identical_declared_tasks_are_not_applied_again() {
    let (sched, fake) = start_fake().await;
    let build = |schedule: &str| {
        ExecutorNode::builder("svc")
            .scheduler(&sched)
            .id("n3")
            .handler("h", |_| async { Ok(Value::Null) })
            .task_for("h", format!("metadata: {{name: t}}\nspec: {{schedule: {schedule}}}\n"))
            .build()
            .unwrap()
    };
    for _ in 0..2 {
        let node = build("{every: 10s}");
        let mut running = Running::start(&node).await;
        eventually("started", || count(&fake, "get default/t") > 0 && count(&fake, "heartbeat n3") > 0).await;
        running.shutdown();
        running.stopped().await.unwrap();
    }
    assert_eq!(count(&fake, "put default/t"), 1, "the restart found the same task");
    // A changed document is applied.
    let node = build("{every: 20s}");
    let mut running = Running::start(&node).await;
    eventually("applied again", || count(&fake, "put default/t") == 2).await;
    running.shutdown();
    running.stopped().await.unwrap();
    let doc = &fake.lock().unwrap().tasks["default/t"];
    assert_eq!((doc.0, &doc.1["spec"]["target"]["http"]["path"]), (2, &json!("/h")));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_drain_timeout_bounds_the_wait() {
    let (sched, fake) = start_fake().await;
    let node = ExecutorNode::builder("svc")
        .scheduler(&sched)
        .id("n4")
        .drain_timeout(Duration::from_millis(200))
        .async_handler("forever", |_| std::future::pending::<Result<Value, HandlerError>>())
        .build()
        .unwrap();
    let mut running = Running::start(&node).await;
    eventually("registration", || count(&fake, "register n4") == 1).await;
    let env = envelope("ns/forever", Some(format!("{sched}/api/v1/runs/7")), json!({}));
    assert_eq!(post_envelope(&running.url, "/", &env).await.status(), 202);
    running.shutdown();
    running.stopped().await.unwrap();
    assert_eq!(count(&fake, "delete n4"), 1);
    assert_eq!(node.in_flight(), 1, "the handler was left running");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drain_waits_for_a_sync_handler_whose_caller_gave_up() {
    let release = Arc::new(Notify::new());
    let released = release.clone();
    let node = ExecutorNode::builder("svc")
        .handler("slow", move |_| {
            let released = released.clone();
            async move {
                released.notified().await;
                Ok(Value::Null)
            }
        })
        .build()
        .unwrap();
    let mut running = Running::start(&node).await;
    let env = envelope("ns/slow", None, json!({}));
    rota_tls::install_crypto_provider();
    let http = reqwest::Client::new();
    let gave_up = http.post(format!("{}/", running.url)).json(&env).timeout(Duration::from_millis(100)).send().await;
    assert!(gave_up.unwrap_err().is_timeout());
    assert_eq!(node.in_flight(), 1, "still running after the caller left");
    running.shutdown();
    eventually("draining", || node.is_draining()).await;
    assert!(!running.done.is_finished(), "the drain waits for the handler");
    release.notify_one();
    running.stopped().await.unwrap();
    assert_eq!(node.in_flight(), 0);
}
