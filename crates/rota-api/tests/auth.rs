//! Authentication and authorization of every route, over real HTTP: missing, too weak, adequate, expired,
//! revoked and wrong-scope credentials; executor credentials scoped to a service; token management; the audit
//! log; the rate limit of failed authentication.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use common::{Server, assert_error, into_json, task_json, task_yaml};
use reqwest::{Method, StatusCode};
use rota_api::Permission;
use rota_api::auth::FailureLimit;
use rota_store::{NewAttempt, NewRun, RunPatch, RunState, RunStore, TaskStore, TokenScope, Transition, TriggerKind};
use serde_json::{Value, json};

/// Sends a request with an optional bearer token.
async fn call(
    s: &Server,
    token: Option<&str>,
    method: &Method,
    path: &str,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let client = match token {
        Some(t) => s.client(t),
        None => s.anon.clone(),
    };
    let mut req = client.request(method.clone(), s.url(path));
    if let Some(b) = body {
        req = req.json(b);
    }
    into_json(req.send().await.unwrap()).await
}

/// A concrete request for each operation of the API, against the fixture of [`every_route_checks_credentials`].
fn request_for(op: &str, run: i64, victim: &str) -> (String, Option<Value>) {
    let p = |s: &str| s.to_string();
    match op {
        "list_tasks" => (p("/api/v1/tasks?namespace=ns"), None),
        "put_task" => (p("/api/v1/tasks/ns/created"), Some(task_json("ns", "created", "succeed"))),
        "get_task" | "delete_task" => (p("/api/v1/tasks/ns/t"), None),
        "pause_task" => (p("/api/v1/tasks/ns/t/pause"), None),
        "resume_task" => (p("/api/v1/tasks/ns/t/resume"), None),
        "trigger_task" => (p("/api/v1/tasks/ns/t/trigger"), None),
        "list_task_versions" => (p("/api/v1/tasks/ns/t/versions"), None),
        "list_runs" => (p("/api/v1/runs?namespace=ns"), None),
        "get_run" => (format!("/api/v1/runs/{run}"), None),
        "read_run_logs" => (format!("/api/v1/runs/{run}/logs"), None),
        "cancel_run" => (format!("/api/v1/runs/{run}/cancel"), None),
        "report_run" => (format!("/api/v1/runs/{run}/report"), Some(json!({"attempt": 1, "status": "succeeded"}))),
        "append_run_logs" => (format!("/api/v1/runs/{run}/logs"), Some(json!({"lines": ["x"]}))),
        "get_cluster" => (p("/api/v1/cluster"), None),
        "list_executors" => (p("/api/v1/executors"), None),
        "register_executor" => {
            (p("/api/v1/executors"), Some(json!({"id": "n1", "service": "svc", "address": "http://127.0.0.1:9"})))
        }
        "heartbeat_executor" => (p("/api/v1/executors/n1/heartbeat"), None),
        "drain_executor" => (p("/api/v1/executors/n1/drain"), None),
        "deregister_executor" => (p("/api/v1/executors/n1"), None),
        "create_token" => (p("/api/v1/tokens"), Some(json!({"name": "made", "grants": ["ns:viewer"]}))),
        "list_tokens" => (p("/api/v1/tokens"), None),
        "revoke_token" => (format!("/api/v1/tokens/{victim}"), None),
        "list_role_bindings" => (p("/api/v1/role-bindings?namespace=ns"), None),
        "put_role_binding" | "delete_role_binding" => {
            (p("/api/v1/role-bindings/ns/group/devs"), Some(json!({"role": "viewer"})))
        }
        "list_audit" => (p("/api/v1/audit"), None),
        other => panic!("no request for operation {other}: add one to request_for"),
    }
}

/// (too weak, adequate) grants for a permission in namespace `ns`.
fn grants_for(permission: Permission) -> (&'static [&'static str], &'static [&'static str]) {
    use Permission::*;
    match permission {
        TasksRead | RunsRead => (&["other:admin"], &["ns:viewer"]),
        TasksTrigger | TasksPause | RunsCancel => (&["ns:viewer"], &["ns:operator"]),
        TasksWrite => (&["ns:operator"], &["ns:editor"]),
        ClusterRead => (&["ns:admin"], &["*:viewer"]),
        TokensManage | RolesManage => (&["ns:editor"], &["ns:admin"]),
        AuditRead => (&["ns:admin"], &["*:admin"]),
        ExecutorReport | ExecutorRegister => (&["*:editor"], &["*:admin"]),
        Public => (&[], &[]),
    }
}

/// Walks every operation of the OpenAPI document: without credentials it is `401 unauthenticated`, with a role
/// too weak `403 forbidden`, with an adequate one neither (public operations need nothing).
#[tokio::test(flavor = "multi_thread")]
async fn every_route_checks_credentials() {
    let s = Server::start().await;
    s.apply_yaml("ns", "t", &task_yaml("ns", "t", &[], "accept")).await;
    let run = s.trigger("ns", "t", None).await["id"].as_i64().unwrap();
    let victim = s.token(&["ns:viewer"]).await;
    let victim_id = victim.split('_').nth(1).unwrap().to_string();
    let (status, _) =
        s.post("/api/v1/executors", Some(json!({"id": "n1", "service": "svc", "address": "http://127.0.0.1:9"}))).await;
    assert_eq!(status, StatusCode::OK);

    let table: BTreeMap<(String, String), Permission> = rota_api::route_table()
        .into_iter()
        .map(|r| ((r.method.as_str().to_ascii_lowercase(), r.path.to_string()), r.permission))
        .collect();
    let doc = rota_api::openapi::document();
    let mut checked = 0;
    // Table order (registration before heartbeat before removal), checked against the document.
    for r in rota_api::route_table() {
        let method = r.method.as_str().to_ascii_lowercase();
        let op = &doc["paths"][r.path][&method];
        assert_eq!(op["operationId"], r.operation_id, "{method} {} is documented", r.path);
        let (path, body) = match r.permission {
            Permission::Public => (r.path.to_string(), None),
            _ => request_for(r.operation_id, run, &victim_id),
        };
        let what = format!("{} {} ({})", r.method, path, r.operation_id);
        if r.permission == Permission::Public {
            assert_eq!(op["security"], json!([]), "{what}: public in the document");
            let (status, body) = call(&s, None, &r.method, &path, None).await;
            assert!(status.is_success(), "{what} without credentials: {status} {body}");
            continue;
        }
        assert_eq!(op["security"], json!([{"bearer": []}]), "{what}: the document names the bearer scheme");
        assert!(op["responses"]["401"].is_object() && op["responses"]["403"].is_object(), "{what}");

        let (status, err) = call(&s, None, &r.method, &path, body.as_ref()).await;
        assert_error(status, &err, 401, "unauthenticated");

        let (weak, adequate) = grants_for(r.permission);
        let weak_token = s.token(weak).await;
        let (status, err) = call(&s, Some(&weak_token), &r.method, &path, body.as_ref()).await;
        assert_error(status, &err, 403, "forbidden");
        let executor = s.executor_token("unrelated").await;
        let (status, err) = call(&s, Some(&executor), &r.method, &path, body.as_ref()).await;
        assert_error(status, &err, 403, "forbidden");

        let good = s.token(adequate).await;
        let (status, res) = call(&s, Some(&good), &r.method, &path, body.as_ref()).await;
        assert!(
            status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
            "{what} with {adequate:?}: {status} {res}"
        );
        checked += 1;
    }
    assert_eq!(checked + 3, table.len(), "every non-public route was walked");
}

/// Expired, revoked, malformed, unknown and wrongly signed tokens are 401; the answer never echoes the token.
#[tokio::test(flavor = "multi_thread")]
async fn bad_tokens_are_unauthenticated_without_echoing_them() {
    let s = Server::start().await;
    let grants = TokenScope::User { grants: vec!["*:admin".parse().unwrap()] };
    let expired = s.issue(grants.clone(), Some(Utc::now() - TimeDelta::seconds(1))).await;
    let revoked = s.token(&["*:admin"]).await;
    let revoked_id = revoked.split('_').nth(1).unwrap().to_string();
    let (status, _) = s.delete(&format!("/api/v1/tokens/{revoked_id}")).await;
    assert_eq!(status, StatusCode::OK);
    let valid = s.token(&["*:admin"]).await;
    let wrong_secret = format!("{}x", &valid[..valid.len() - 1]);
    let unknown = "rota_00000000deadbeef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_string();
    let cases = [
        (expired.as_str(), "expired"),
        (revoked.as_str(), "revoked"),
        (wrong_secret.as_str(), "not valid"),
        (unknown.as_str(), "not valid"),
        ("rota_short", "malformed"),
        ("not-a-rota-token", "not a credential"),
    ];
    for (token, says) in cases {
        let (status, err) = call(&s, Some(token), &Method::GET, "/api/v1/tasks", None).await;
        assert_error(status, &err, 401, "unauthenticated");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{token}: {message}");
        let secret = token.splitn(3, '_').nth(2).unwrap_or(token);
        assert!(!err.to_string().contains(secret), "the answer echoes the token: {err}");
    }
    let res = s.anon.get(s.url("/api/v1/tasks")).header("authorization", "Basic dXNlcjpwYXNz").send().await.unwrap();
    assert_eq!(res.headers()["www-authenticate"], "Bearer realm=\"rota\"");
    let (status, err) = into_json(res).await;
    assert_error(status, &err, 401, "unauthenticated");
    let (status, _) = call(&s, Some(&valid), &Method::GET, "/api/v1/tasks", None).await;
    assert_eq!(status, StatusCode::OK);
}

/// Namespace-scoped grants stop at their namespace; lists without `namespace=` need a `*` grant.
#[tokio::test(flavor = "multi_thread")]
async fn grants_are_scoped_to_their_namespace() {
    let s = Server::start().await;
    s.apply_yaml("a", "t", &task_yaml("a", "t", &[], "succeed")).await;
    s.apply_yaml("b", "t", &task_yaml("b", "t", &[], "succeed")).await;
    let run_b = s.trigger("b", "t", None).await["id"].as_i64().unwrap();
    let a_admin = s.token(&["a:admin"]).await;
    let (status, _) = call(&s, Some(&a_admin), &Method::GET, "/api/v1/tasks/a/t", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, err) = call(&s, Some(&a_admin), &Method::GET, "/api/v1/tasks/b/t", None).await;
    assert_error(status, &err, 403, "forbidden");
    let (status, err) = call(&s, Some(&a_admin), &Method::GET, &format!("/api/v1/runs/{run_b}"), None).await;
    assert_error(status, &err, 403, "forbidden");
    let (status, err) = call(&s, Some(&a_admin), &Method::GET, "/api/v1/tasks", None).await;
    assert_error(status, &err, 403, "forbidden");
    assert!(err["error"]["message"].as_str().unwrap().contains("namespace="), "{err}");
    let (status, list) = call(&s, Some(&a_admin), &Method::GET, "/api/v1/runs?task=a/t", None).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let (status, err) = call(&s, Some(&a_admin), &Method::GET, "/api/v1/runs?task=b/t", None).await;
    assert_error(status, &err, 403, "forbidden");
    let everywhere = s.token(&["*:viewer"]).await;
    let (status, list) = call(&s, Some(&everywhere), &Method::GET, "/api/v1/tasks", None).await;
    assert_eq!((status, list["items"].as_array().unwrap().len()), (StatusCode::OK, 2));
    let (status, err) = call(&s, Some(&everywhere), &Method::DELETE, "/api/v1/tasks/a/t", None).await;
    assert_error(status, &err, 403, "forbidden");
}

/// Executor credentials: register only their service, heartbeat only its nodes, report and append logs only for
/// runs whose current attempt went to one of its nodes; nothing else.
#[tokio::test(flavor = "multi_thread")]
async fn executor_credentials_are_scoped_to_their_service() {
    let s = Server::start_idle().await;
    let svc = s.executor_token("svc").await;
    let oth = s.executor_token("oth").await;
    let reg = |id: &str, service: &str| json!({"id": id, "service": service, "address": "http://127.0.0.1:9"});
    let (status, body) = call(&s, Some(&svc), &Method::POST, "/api/v1/executors", Some(&reg("n-svc", "svc"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, err) = call(&s, Some(&svc), &Method::POST, "/api/v1/executors", Some(&reg("n-x", "oth"))).await;
    assert_error(status, &err, 403, "forbidden");
    let (status, _) = call(&s, Some(&oth), &Method::POST, "/api/v1/executors", Some(&reg("n-oth", "oth"))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&s, Some(&svc), &Method::POST, "/api/v1/executors/n-svc/heartbeat", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, err) = call(&s, Some(&oth), &Method::POST, "/api/v1/executors/n-svc/heartbeat", None).await;
    assert_error(status, &err, 403, "forbidden");
    let (status, err) = call(&s, Some(&oth), &Method::DELETE, "/api/v1/executors/n-svc", None).await;
    assert_error(status, &err, 403, "forbidden");
    // An unknown node answers 404 (so the node registers again), not 403.
    let (status, err) = call(&s, Some(&svc), &Method::POST, "/api/v1/executors/gone/heartbeat", None).await;
    assert_error(status, &err, 404, "not_found");
    let (status, err) = call(&s, Some(&svc), &Method::GET, "/api/v1/tasks?namespace=ns", None).await;
    assert_error(status, &err, 403, "forbidden");

    // A run whose current attempt went to n-svc, written through the store (the scheduler is idle).
    s.apply_yaml("ns", "t", &task_yaml("ns", "t", &[], "accept")).await;
    let task = s.store.get_task("ns", "t").await.unwrap().unwrap();
    let now = Utc::now();
    let new_run = NewRun {
        task_id: task.id,
        namespace: "ns".into(),
        name: "t".into(),
        task_version: task.version,
        shard: task.shard,
        scheduled_at: now,
        trigger: TriggerKind::Manual,
        state: RunState::Scheduled,
        next_attempt_at: None,
        params: json!({}),
        reason: None,
    };
    let run = s.store.insert_run(new_run, None, now).await.unwrap().record().clone();
    let t = Transition {
        run_id: run.id,
        from: vec![RunState::Scheduled],
        to: RunState::Dispatching,
        patch: RunPatch { attempts: Some(1), ..RunPatch::default() },
        fence: None,
        now,
    };
    let a = NewAttempt { run_id: run.id, attempt: 1, node: "n-svc".into(), started_at: now, deadline: None };
    s.store.start_attempt(t, a).await.unwrap();

    let logs = format!("/api/v1/runs/{}/logs", run.id);
    let report = format!("/api/v1/runs/{}/report", run.id);
    let (status, err) = call(&s, Some(&oth), &Method::POST, &logs, Some(&json!({"lines": ["x"]}))).await;
    assert_error(status, &err, 403, "forbidden");
    let (status, body) = call(&s, Some(&svc), &Method::POST, &logs, Some(&json!({"lines": ["x"]}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let lying = json!({"attempt": 1, "status": "succeeded", "node": "n-oth"});
    let (status, err) = call(&s, Some(&oth), &Method::POST, &report, Some(&lying)).await;
    assert_error(status, &err, 403, "forbidden");
    let (status, err) = call(&s, Some(&svc), &Method::POST, &report, Some(&lying)).await;
    assert_error(status, &err, 403, "forbidden");
    let honest = json!({"attempt": 1, "status": "succeeded", "node": "n-svc"});
    let (status, body) = call(&s, Some(&svc), &Method::POST, &report, Some(&honest)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "succeeded");
}

/// Namespace admins create, see and revoke tokens within their namespaces only; the secret is shown once.
#[tokio::test(flavor = "multi_thread")]
async fn token_management_stays_within_the_callers_namespaces() {
    let s = Server::start().await;
    let ns_admin = s.token(&["ns:admin"]).await;
    let create = |body: Value| {
        let s = &s;
        let t = ns_admin.clone();
        async move { call(s, Some(&t), &Method::POST, "/api/v1/tokens", Some(&body)).await }
    };
    let (status, created) = create(json!({"name": "ci", "grants": ["ns:editor"], "expires_in": "1h"})).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let token = created["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("rota_"));
    assert_eq!(created["info"]["grants"], json!(["ns:editor"]));
    assert!(created["info"]["expires_at"].is_string());
    let (status, _) =
        call(&s, Some(&token), &Method::PUT, "/api/v1/tasks/ns/x", Some(&task_json("ns", "x", "succeed"))).await;
    assert_eq!(status, StatusCode::CREATED);
    for forbidden in [
        json!({"name": "x", "grants": ["other:viewer"]}),
        json!({"name": "x", "grants": ["*:viewer"]}),
        json!({"name": "x", "grants": ["ns:viewer", "other:viewer"]}),
        json!({"name": "x", "executor_service": "svc"}),
    ] {
        let (status, err) = create(forbidden.clone()).await;
        assert_error(status, &err, 403, "forbidden");
    }
    let (status, err) = create(json!({"name": "x", "grants": ["ns:god"]})).await;
    assert_eq!(assert_error(status, &err, 400, "invalid_argument"), ["grants[0]"]);
    let (status, err) = create(json!({"name": "x"})).await;
    assert_error(status, &err, 400, "invalid_argument");

    let other = s.token(&["other:viewer"]).await;
    let other_id = other.split('_').nth(1).unwrap().to_string();
    let (status, list) = call(&s, Some(&ns_admin), &Method::GET, "/api/v1/tokens", None).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = list["items"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&created["info"]["id"].as_str().unwrap()) && !ids.contains(&other_id.as_str()), "{list}");
    assert!(!list.to_string().contains("hash") && !list.to_string().contains(token.splitn(3, '_').nth(2).unwrap()));
    let (status, err) = call(&s, Some(&ns_admin), &Method::DELETE, &format!("/api/v1/tokens/{other_id}"), None).await;
    assert_error(status, &err, 404, "not_found");
    let (_, all) = s.get("/api/v1/tokens").await;
    assert!(all["items"].as_array().unwrap().len() >= 4, "the cluster admin sees every token: {all}");
    let id = created["info"]["id"].as_str().unwrap();
    let (status, revoked) = call(&s, Some(&ns_admin), &Method::DELETE, &format!("/api/v1/tokens/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(revoked["revoked_at"].is_string());
    let (status, err) = call(&s, Some(&token), &Method::GET, "/api/v1/tasks/ns/x", None).await;
    assert_error(status, &err, 401, "unauthenticated");
}

/// Every successful mutation and every denied request is in the audit log: who, what, on what, from where.
#[tokio::test(flavor = "multi_thread")]
async fn the_audit_log_records_who_what_and_where() {
    let s = Server::start().await;
    let editor = s.token(&["ns:editor"]).await;
    let editor_id = format!("token:{}", editor.split('_').nth(1).unwrap());
    let (status, _) =
        call(&s, Some(&editor), &Method::PUT, "/api/v1/tasks/ns/a", Some(&task_json("ns", "a", "succeed"))).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = call(&s, Some(&editor), &Method::GET, "/api/v1/tasks/ns/a", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&s, Some(&editor), &Method::DELETE, "/api/v1/tasks/other/a", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(&s, None, &Method::POST, "/api/v1/tasks/ns/a/trigger", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, created) = s.post("/api/v1/tokens", Some(json!({"name": "n", "grants": ["ns:viewer"]}))).await;
    assert_eq!(status, StatusCode::CREATED);

    let (status, err) = call(&s, Some(&editor), &Method::GET, "/api/v1/audit", None).await;
    assert_error(status, &err, 403, "forbidden");
    let (status, page) = s.get(&format!("/api/v1/audit?actor={editor_id}")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let items = page["items"].as_array().unwrap();
    let actions: Vec<&str> = items.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["list_audit", "delete_task", "put_task"], "newest first; reads are not audited: {page}");
    let put = &items[2];
    assert_eq!(put["resource"], "/api/v1/tasks/ns/a");
    assert_eq!(put["detail"]["outcome"], "ok");
    assert!(put["source"].as_str().unwrap().starts_with("127.0.0.1:"), "{put}");
    assert_eq!(items[1]["detail"]["outcome"], "denied");
    assert_eq!(items[1]["detail"]["reason"], "forbidden");
    let (_, anon) = s.get("/api/v1/audit?actor=anonymous&action=trigger_task").await;
    assert_eq!(anon["items"][0]["resource"], "/api/v1/tasks/ns/a/trigger", "{anon}");
    assert_eq!(anon["items"][0]["detail"]["reason"], "unauthenticated");
    let (_, by_prefix) = s.get("/api/v1/audit?resource=/api/v1/tokens&limit=1").await;
    assert_eq!(by_prefix["items"].as_array().unwrap().len(), 1);
    assert_eq!(by_prefix["items"][0]["action"], "create_token");
    assert!(by_prefix["next_cursor"].is_null() || by_prefix["next_cursor"].is_string());
    let secret = created["token"].as_str().unwrap().splitn(3, '_').nth(2).unwrap().to_string();
    let (_, all) = s.get("/api/v1/audit?limit=1000").await;
    assert!(!all.to_string().contains(&secret), "a token secret reached the audit log");
    let (status, err) = s.get("/api/v1/audit?from=yesterday").await;
    assert_eq!(assert_error(status, &err, 400, "invalid_argument"), ["from"]);
}

/// Too many failed authentications from one address are refused for a cool-down, valid tokens included.
#[tokio::test(flavor = "multi_thread")]
async fn failed_authentication_is_rate_limited() {
    let s = Server::start_limited(FailureLimit {
        max_failures: 3,
        window: Duration::from_secs(60),
        cooldown: Duration::from_secs(60),
    })
    .await;
    for _ in 0..3 {
        let (status, _) = call(&s, Some("rota_bogus"), &Method::GET, "/api/v1/tasks", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let res = s.http.get(s.url("/api/v1/tasks")).send().await.unwrap();
    assert!(res.headers().contains_key("retry-after"));
    let (status, err) = into_json(res).await;
    assert_error(status, &err, 429, "rate_limited");
    let (status, _) = s.get("/healthz").await;
    assert_eq!(status, StatusCode::OK, "public routes are not limited");
}
