//! The client against the real API (rota-api over a real SQLite store and scheduler, served on 127.0.0.1:0) and a
//! real HTTP executor node: every typed method, and errors with their codes and field paths.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use rota_core::{Scheduler, SchedulerConfig};
use rota_executor::{HttpExecutorConfig, Router};
use rota_proto::{LogAppend, RunEnvelope};
use rota_sdk::{
    AttemptState, AuditFilter, Client, ClientError, NewToken, RunFilter, RunState, RunTrigger, TaskDocument, TaskFilter,
};
use serde_json::{Map, Value, json};

struct Api {
    url: String,
    /// The cluster admin's token (`*:admin`), created in the store.
    token: String,
    _scheduler: Scheduler,
}

/// A cluster-admin token in `store` (the API accepts nothing without credentials).
async fn admin_token(store: &dyn rota_store::Store) -> String {
    let scope = rota_store::TokenScope::User { grants: vec!["*:admin".parse().unwrap()] };
    rota_api::auth::issue_token(store, "sdk tests", scope, "system", None, chrono::Utc::now()).await.unwrap().token
}

async fn start_api() -> Api {
    let store = rota_store_sql::testing::fresh_sqlite().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let config = SchedulerConfig { public_url: Some(url.clone()), ..SchedulerConfig::default() };
    let router = Router::standard(HttpExecutorConfig::default()).unwrap();
    let scheduler = Scheduler::new(Arc::new(store), Arc::new(router), config);
    scheduler.start().await.unwrap();
    let token = admin_token(&**scheduler.store()).await;
    let app = rota_api::router(rota_api::ApiState::new(scheduler.clone()));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Api { url, token, _scheduler: scheduler }
}

/// An executor node: appends a log line through the report URL (with `token`: a static candidate is no node of a
/// service, so only the cluster admin may append for it), answers `succeeded` with the params as output.
async fn start_executor(token: &str) -> String {
    async fn handle(State(token): State<String>, Json(env): Json<RunEnvelope>) -> Json<Value> {
        if let Some(url) = &env.report_url {
            let append = LogAppend { stream: None, lines: vec![format!("ran {}", env.run_id)] };
            rota_tls::install_crypto_provider();
            let _ = reqwest::Client::new().post(format!("{url}/logs")).bearer_auth(&token).json(&append).send().await;
        }
        Json(json!({"status": "succeeded", "output": {"echo": env.params}}))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(axum::routing::post(handle)).with_state(token.to_string());
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn doc(namespace: &str, name: &str, executor: &str, extra: &str) -> String {
    format!(
        "apiVersion: rota/v1\nkind: Task\nmetadata: {{namespace: {namespace}, name: {name}, labels: {{team: t-{name}}}}}\n\
         spec:\n  schedule: {{manual: true}}\n  target: {{http: {{path: /jobs/x}}}}\n  \
         candidates: {{static: [\"{executor}\"]}}\n  params: {{a: 1}}\n{extra}"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn every_method_against_the_real_api() {
    let api = start_api().await;
    let exec = start_executor(&api.token).await;
    let rota = Client::new(&api.url).unwrap().with_token(Some(&api.token)).unwrap();

    assert_eq!(rota.health().await.unwrap().status, "ok");
    assert_eq!(rota.ready().await.unwrap().store.as_deref(), Some("sqlite"));

    // cluster: the one scheduler node holds every shard (the scheduler took its leases before start returned).
    let cluster = rota.cluster().await.unwrap();
    assert_eq!((cluster.backend.as_str(), cluster.supports_cluster), ("sqlite", false));
    assert_eq!(cluster.unowned_shards, Vec::<u32>::new());
    let node = cluster.nodes.iter().find(|n| n.shards_held > 0).expect("a lease holder");
    assert_eq!(node.id, SchedulerConfig::default().node_id);
    assert_eq!(node.shards, (0..cluster.shard_count).collect::<Vec<_>>());
    assert!(node.alive && node.lease_expires_at.is_some_and(|t| t > cluster.now), "{node:?}");

    // apply: YAML text, JSON text, a typed task; created, then configured.
    let applied = rota.apply(doc("sdk", "one", &exec, "")).await.unwrap();
    assert!(applied.created);
    assert_eq!((applied.task.key(), applied.task.version), ("sdk/one".to_string(), 1));
    let again = rota.apply(doc("sdk", "one", &exec, "")).await.unwrap();
    assert_eq!((again.created, again.task.version, again.action()), (false, 2, "configured"));
    let json_text =
        serde_json::to_string(&serde_yaml::from_str::<Value>(&doc("sdk", "two", &exec, "")).unwrap()).unwrap();
    assert!(rota.apply(json_text.as_str()).await.unwrap().created);
    let typed = rota_spec::parse_yaml(&doc("sdk", "three", &exec, "")).unwrap();
    let applied = rota.apply(&typed).await.unwrap();
    assert_eq!(applied.task.schedule_summary(), "manual");
    assert_eq!(TaskDocument::from(&typed).key().unwrap(), ("sdk".into(), "three".into()));

    // get / list with filters and cursors.
    let one = rota.get_task("sdk", "one").await.unwrap();
    assert_eq!(one.labels["team"], "t-one");
    let page = rota.list_tasks(&TaskFilter::namespace("sdk"), None, Some(2)).await.unwrap();
    assert_eq!(page.items.len(), 2);
    let cursor = page.next_cursor.expect("a second page");
    let rest = rota.list_tasks(&TaskFilter::namespace("sdk"), Some(&cursor), Some(2)).await.unwrap();
    assert_eq!(rest.items.len(), 1);
    assert_eq!(rota.list_all_tasks(&TaskFilter::default()).await.unwrap().len(), 3);
    let labelled = rota.list_all_tasks(&TaskFilter::default().label("team", "t-two")).await.unwrap();
    assert_eq!(labelled.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["two"]);

    // trigger → run → attempts, logs.
    let mut params = Map::new();
    params.insert("b".into(), json!("x"));
    let run = rota.trigger("sdk", "one", params).await.unwrap();
    assert_eq!((run.trigger, run.params.clone()), (RunTrigger::Manual, json!({"a": 1, "b": "x"})));
    let deadline = Instant::now() + Duration::from_secs(30);
    let detail = loop {
        let d = rota.get_run(run.id).await.unwrap();
        if d.run.state.is_terminal() {
            break d;
        }
        assert!(Instant::now() < deadline, "run {} did not finish: {d:?}", run.id);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(detail.run.state, RunState::Succeeded);
    assert_eq!(detail.run.output, Some(json!({"echo": {"a": 1, "b": "x"}})));
    assert_eq!(detail.attempts.len(), 1);
    assert_eq!((detail.attempts[0].state, detail.attempts[0].node.as_str()), (AttemptState::Succeeded, exec.as_str()));
    let logs = rota.logs(run.id, 0, None).await.unwrap();
    assert_eq!(logs.items.iter().map(|l| l.line.as_str()).collect::<Vec<_>>(), [format!("ran {}", run.id)]);
    assert_eq!(logs.next_after, logs.items[0].seq);
    assert!(rota.logs(run.id, logs.next_after, Some(10)).await.unwrap().items.is_empty());

    let runs = rota.list_runs(&RunFilter::task("sdk", "one").state(RunState::Succeeded), None, Some(10)).await.unwrap();
    assert_eq!(runs.items.iter().map(|r| r.id).collect::<Vec<_>>(), [run.id]);
    let none = rota.list_runs(&RunFilter::task("sdk", "one").state(RunState::Failed), None, None).await.unwrap();
    assert!(none.items.is_empty());

    // pause / resume / versions.
    assert!(rota.pause("sdk", "two").await.unwrap().paused);
    assert!(!rota.resume("sdk", "two").await.unwrap().paused);
    assert_eq!(rota.task_versions("sdk", "one").await.unwrap().items.len(), 2);

    // cancel: a finished run is a conflict; a pending one is cancelled with its reason.
    let err = rota.cancel_run(run.id, None).await.unwrap_err();
    assert_eq!((err.code(), err.status()), (Some("conflict"), Some(409)));
    // A node that accepts connections but never answers keeps the run in flight.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    rota.apply(doc("sdk", "stuck", &silent_url, "")).await.unwrap();
    let stuck = rota.trigger("sdk", "stuck", Map::new()).await.unwrap();
    let cancelled = rota.cancel_run(stuck.id, Some("test says stop")).await.unwrap();
    assert_eq!(cancelled.state, RunState::Cancelled);
    assert_eq!(cancelled.reason.as_deref(), Some("test says stop"));
    drop(silent);

    // delete; then not found.
    rota.delete_task("sdk", "three").await.unwrap();
    let err = rota.get_task("sdk", "three").await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert_eq!(err.to_string(), "not_found: task sdk/three not found");
    assert!(rota.delete_task("sdk", "three").await.unwrap_err().is_not_found());
    assert!(rota.get_run(987_654).await.unwrap_err().is_not_found());
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_carry_codes_and_field_paths() {
    let api = start_api().await;
    let rota = Client::new(&api.url).unwrap().with_token(Some(&api.token)).unwrap();

    let bad = doc("sdk", "Bad_Name", "http://127.0.0.1:9", "  retry: {maxAttempts: 0}\n");
    let err = rota.apply(bad.as_str()).await.unwrap_err();
    let ClientError::Api { status, code, details, .. } = &err else { panic!("{err:?}") };
    assert_eq!((*status, code.as_str()), (400, "invalid_spec"));
    let paths: Vec<&str> = details.iter().map(|d| d.path.as_str()).collect();
    assert!(paths.contains(&"spec.retry.maxAttempts") && paths.contains(&"metadata.name"), "{details:?}");
    assert_eq!(err.details().len(), details.len());

    // Problems the client catches before sending: no name to address the task by.
    let err = rota.apply("apiVersion: rota/v1\nkind: Task\nmetadata: {namespace: x}\n").await.unwrap_err();
    assert!(matches!(err, ClientError::InvalidDocument { .. }));
    assert_eq!((err.code(), err.details()[0].path.as_str()), (Some("invalid_spec"), "metadata.name"));
    let err = rota.apply("{not json").await.unwrap_err();
    assert_eq!(err.details()[0].path, "(root)");

    // Invalid query parameters name the parameter.
    let err = rota.list_tasks(&TaskFilter::default(), None, Some(0)).await.unwrap_err();
    assert_eq!((err.code(), err.details()[0].path.as_str()), (Some("invalid_argument"), "limit"));

    // Without credentials, or with a role too weak: the API's own codes.
    let anon = Client::new(&api.url).unwrap();
    let err = anon.list_tasks(&TaskFilter::default(), None, None).await.unwrap_err();
    assert_eq!((err.status(), err.code()), (Some(401), Some("unauthenticated")));
    let viewer = rota
        .create_token(&NewToken {
            name: "viewer".into(),
            grants: vec!["sdk:viewer".into()],
            executor_service: None,
            expires_in: None,
        })
        .await
        .unwrap();
    let as_viewer = Client::new(&api.url).unwrap().with_token(Some(&viewer.token)).unwrap();
    let err = as_viewer.delete_task("sdk", "x").await.unwrap_err();
    assert_eq!((err.status(), err.code()), (Some(403), Some("forbidden")));
    assert!(format!("{viewer:?}").contains("(not shown)"), "Debug hides the token");
    let listed = rota.list_all_tokens().await.unwrap();
    assert!(listed.iter().any(|t| t.id == viewer.info.id && t.grants == ["sdk:viewer"]), "{listed:?}");
    let revoked = rota.revoke_token(&viewer.info.id).await.unwrap();
    assert!(revoked.revoked_at.is_some());
    let err = as_viewer.get_task("sdk", "x").await.unwrap_err();
    assert_eq!(err.code(), Some("unauthenticated"));
    let filter = AuditFilter { action: Some("revoke_token".into()), ..Default::default() };
    let audit = rota.audit(&filter, None, None).await.unwrap();
    assert_eq!(audit.items.len(), 1, "{audit:?}");
    assert!(audit.items[0].actor.starts_with("token:"));
    let b = rota.put_role_binding("sdk", "group", "devs", "operator").await.unwrap();
    assert_eq!((b.kind.as_str(), b.role.as_str()), ("group", "operator"));
    assert_eq!(rota.list_role_bindings(Some("sdk")).await.unwrap().len(), 1);
    rota.delete_role_binding("sdk", "group", "devs").await.unwrap();
    assert!(rota.list_role_bindings(None).await.unwrap().is_empty());

    // Something that is not the API.
    let other = Client::new(&format!("{}/not-the-api/", api.url)).unwrap();
    let err = other.health().await.unwrap_err();
    assert_eq!(err.code(), Some("not_found"), "the API answers unknown routes in its own shape: {err:?}");
}
