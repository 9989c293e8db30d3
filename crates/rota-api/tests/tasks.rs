//! Task endpoints over real HTTP.

mod common;

use common::{Server, assert_error, task_json, task_yaml};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn create_get_replace_versions_delete() {
    let s = Server::start().await;
    let yaml = task_yaml("team-a", "job-1", &[("team", "a")], "succeed");

    let res = s
        .http
        .put(s.url("/api/v1/tasks/team-a/job-1"))
        .header("content-type", "application/yaml")
        .body(yaml.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(res.headers()["etag"], "\"1\"");
    assert_eq!(res.headers()["location"], "/api/v1/tasks/team-a/job-1");
    let (_, created) = common::into_json(res).await;
    assert_eq!(created["namespace"], "team-a");
    assert_eq!(created["name"], "job-1");
    assert_eq!(created["version"], 1);
    assert_eq!(created["labels"], json!({"team": "a"}));
    assert_eq!(created["paused"], false);
    assert_eq!(created["spec"]["metadata"]["name"], "job-1");
    assert_eq!(created["spec"]["spec"]["params"]["mode"], "succeed");
    for field in ["created_at", "updated_at"] {
        assert!(created[field].is_string(), "{field} in {created}");
    }
    assert!(created.as_object().unwrap().contains_key("next_fire_at"));

    let (status, got) = s.get("/api/v1/tasks/team-a/job-1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got, created);

    // Replace with a JSON document: 200 and version 2.
    let mut doc = task_json("team-a", "job-1", "fail");
    doc["metadata"]["labels"] = json!({"team": "b"});
    let (status, replaced) = s.put_task("team-a", "job-1", Some("application/json"), &doc.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{replaced}");
    assert_eq!(replaced["version"], 2);
    assert_eq!(replaced["labels"], json!({"team": "b"}));
    assert_eq!(replaced["spec"]["spec"]["params"]["mode"], "fail");

    let (status, versions) = s.get("/api/v1/tasks/team-a/job-1/versions").await;
    assert_eq!(status, StatusCode::OK);
    let items = versions["items"].as_array().unwrap();
    assert_eq!(items.iter().map(|v| v["version"].as_i64().unwrap()).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(items[0]["spec"]["spec"]["params"]["mode"], "succeed");
    assert_eq!(items[1]["spec"]["spec"]["params"]["mode"], "fail");

    let (status, body) = s.delete("/api/v1/tasks/team-a/job-1").await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
    let (status, body) = s.get("/api/v1/tasks/team-a/job-1").await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = s.delete("/api/v1/tasks/team-a/job-1").await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = s.get("/api/v1/tasks/team-a/job-1/versions").await;
    assert_error(status, &body, 404, "not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn preconditions() {
    let s = Server::start().await;
    let yaml = task_yaml("ns", "t", &[], "succeed");
    let put = |h: Option<(&'static str, &'static str)>| {
        let mut req = s.http.put(s.url("/api/v1/tasks/ns/t")).header("content-type", "text/yaml").body(yaml.clone());
        if let Some((k, v)) = h {
            req = req.header(k, v);
        }
        async move { common::into_json(req.send().await.unwrap()).await }
    };
    assert_eq!(put(Some(("if-none-match", "*"))).await.0, StatusCode::CREATED);
    let (status, body) = put(Some(("if-none-match", "*"))).await;
    assert_error(status, &body, 409, "conflict");
    assert_eq!(put(None).await.0, StatusCode::OK); // version 2
    let (status, body) = put(Some(("if-match", "1"))).await;
    assert_error(status, &body, 409, "conflict");
    let (status, body) = put(Some(("if-match", "\"2\""))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], 3);
    let (status, body) = put(Some(("if-match", "latest"))).await;
    assert_eq!(assert_error(status, &body, 400, "invalid_argument"), ["If-Match"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn validation_errors_name_every_field() {
    let s = Server::start().await;
    // Validation: several problems at once, all reported.
    let doc = "apiVersion: rota/v1\nkind: Task\nmetadata: {namespace: ns, name: bad}\n\
               spec:\n  schedule: {manual: true}\n  target: {http: {path: no-slash}}\n  retry: {maxAttempts: 0}\n";
    let (status, body) = s.put_task("ns", "bad", Some("application/yaml"), doc).await;
    let paths = assert_error(status, &body, 400, "invalid_spec");
    for want in ["spec.retry.maxAttempts", "spec.target.http.path", "spec.candidates"] {
        assert!(paths.iter().any(|p| p == want), "{want} missing from {paths:?}");
    }

    // Parse errors name the field too (JSON and YAML).
    let mut doc = task_json("ns", "bad", "succeed");
    doc["spec"]["retry"] = json!({"maxAttempts": "three"});
    let (status, body) = s.put_task("ns", "bad", Some("application/json"), &doc.to_string()).await;
    assert_eq!(assert_error(status, &body, 400, "invalid_spec"), ["spec.retry.maxAttempts"]);

    let doc = task_yaml("ns", "bad", &[], "succeed") + "  bogusField: 1\n";
    let (status, body) = s.put_task("ns", "bad", Some("application/yaml"), &doc).await;
    let paths = assert_error(status, &body, 400, "invalid_spec");
    assert_eq!(paths.len(), 1);
    assert!(paths[0].starts_with("spec"), "{paths:?}");

    let (status, body) = s.put_task("ns", "bad", Some("application/json"), "{\"apiVersion\": ").await;
    assert_error(status, &body, 400, "invalid_spec");
    let (status, body) = s.put_task("ns", "bad", Some("application/json"), "").await;
    assert_error(status, &body, 400, "invalid_spec");

    // Nothing was stored.
    let (status, body) = s.get("/api/v1/tasks/ns/bad").await;
    assert_error(status, &body, 404, "not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn metadata_must_match_the_path() {
    let s = Server::start().await;
    let (status, body) = s.put_task("ns", "other", Some("application/yaml"), &task_yaml("ns", "t", &[], "x")).await;
    assert_eq!(assert_error(status, &body, 400, "invalid_argument"), ["metadata.name"]);
    let (status, body) = s.put_task("elsewhere", "t", Some("application/yaml"), &task_yaml("ns", "t", &[], "x")).await;
    assert_eq!(assert_error(status, &body, 400, "invalid_argument"), ["metadata.namespace"]);
    let (status, body) = s.put_task("elsewhere", "u", Some("application/yaml"), &task_yaml("ns", "t", &[], "x")).await;
    assert_eq!(assert_error(status, &body, 400, "invalid_argument"), ["metadata.name", "metadata.namespace"]);

    // A document without a namespace takes the path's.
    let mut doc = task_json("ignored", "t", "succeed");
    doc["metadata"].as_object_mut().unwrap().remove("namespace");
    let (status, body) = s.put_task("from-path", "t", Some("application/json"), &doc.to_string()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["namespace"], "from-path");
    assert_eq!(body["spec"]["metadata"]["namespace"], "from-path");

    // ... and must then be a valid namespace.
    let (status, body) = s.put_task("Not_A_Label", "t", Some("application/json"), &doc.to_string()).await;
    assert_eq!(assert_error(status, &body, 400, "invalid_spec"), ["metadata.namespace"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn content_types() {
    let s = Server::start().await;
    let yaml = task_yaml("ns", "y", &[], "succeed");
    let json = task_json("ns", "j", "succeed").to_string();
    assert_eq!(s.put_task("ns", "y", Some("text/yaml; charset=utf-8"), &yaml).await.0, StatusCode::CREATED);
    assert_eq!(s.put_task("ns", "j", Some("application/json"), &json).await.0, StatusCode::CREATED);
    // Sniffed without a content type.
    assert_eq!(s.put_task("ns", "y", None, &yaml).await.0, StatusCode::OK);
    assert_eq!(s.put_task("ns", "j", None, &json).await.0, StatusCode::OK);
    // JSON is YAML, so JSON labelled YAML parses; YAML labelled JSON does not.
    assert_eq!(s.put_task("ns", "j", Some("application/yaml"), &json).await.0, StatusCode::OK);
    let (status, body) = s.put_task("ns", "y", Some("application/json"), &yaml).await;
    assert_error(status, &body, 400, "invalid_spec");
    let (status, body) = s.put_task("ns", "y", Some("application/xml"), "<task/>").await;
    assert_eq!(assert_error(status, &body, 415, "unsupported_media_type"), ["Content-Type"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn list_filters_and_cursor_pagination() {
    let s = Server::start().await;
    let tasks = [
        ("alpha", "t1", vec![("team", "a"), ("tier", "1")]),
        ("alpha", "t2", vec![("team", "a"), ("tier", "2")]),
        ("alpha", "t3", vec![("team", "b")]),
        ("beta", "t1", vec![("team", "a"), ("tier", "1")]),
        ("beta", "t2", vec![]),
    ];
    for (ns, name, labels) in &tasks {
        s.apply_yaml(ns, name, &task_yaml(ns, name, labels, "succeed")).await;
    }
    let keys = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| format!("{}/{}", t["namespace"].as_str().unwrap(), t["name"].as_str().unwrap()))
            .collect()
    };

    // Pages of 2 cover everything exactly once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let mut q = vec![("limit", "2".to_string())];
        if let Some(c) = &cursor {
            q.push(("cursor", c.clone()));
        }
        let q: Vec<(&str, &str)> = q.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, page) = s.get_query("/api/v1/tasks", &q).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(page["items"].as_array().unwrap().len() <= 2);
        seen.extend(keys(&page));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, ["alpha/t1", "alpha/t2", "alpha/t3", "beta/t1", "beta/t2"]);

    let (_, page) = s.get_query("/api/v1/tasks", &[("namespace", "beta")]).await;
    assert_eq!(keys(&page), ["beta/t1", "beta/t2"]);
    assert!(page["next_cursor"].is_null());
    let (_, page) = s.get_query("/api/v1/tasks", &[("label", "team=a")]).await;
    assert_eq!(keys(&page), ["alpha/t1", "alpha/t2", "beta/t1"]);
    let (_, page) = s.get_query("/api/v1/tasks", &[("label", "team=a"), ("label", "tier=1")]).await;
    assert_eq!(keys(&page), ["alpha/t1", "beta/t1"]);
    let (_, page) = s.get_query("/api/v1/tasks", &[("labels", "team=a,tier=1"), ("namespace", "alpha")]).await;
    assert_eq!(keys(&page), ["alpha/t1"]);

    let (status, _) = s.post("/api/v1/tasks/alpha/t3/pause", None).await;
    assert_eq!(status, StatusCode::OK);
    let (_, page) = s.get_query("/api/v1/tasks", &[("paused", "true")]).await;
    assert_eq!(keys(&page), ["alpha/t3"]);
    let (_, page) = s.get_query("/api/v1/tasks", &[("paused", "false"), ("namespace", "alpha")]).await;
    assert_eq!(keys(&page), ["alpha/t1", "alpha/t2"]);

    for (q, path) in [
        (("limit", "0"), "limit"),
        (("limit", "5000"), "limit"),
        (("limit", "ten"), "limit"),
        (("paused", "maybe"), "paused"),
        (("label", "novalue"), "label"),
        (("cursor", "garbage"), "cursor"),
        (("namespaces", "alpha"), "namespaces"),
    ] {
        let (status, body) = s.get_query("/api/v1/tasks", &[q]).await;
        assert_eq!(assert_error(status, &body, 400, "invalid_argument"), [path], "{q:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_and_resume() {
    let s = Server::start().await;
    s.apply_yaml("ns", "every", &task_yaml("ns", "every", &[], "succeed").replace("manual: true", "every: 1h")).await;
    let (_, before) = s.get("/api/v1/tasks/ns/every").await;
    assert!(before["next_fire_at"].is_string(), "{before}");

    let (status, paused) = s.post("/api/v1/tasks/ns/every/pause", None).await;
    assert_eq!(status, StatusCode::OK, "{paused}");
    assert_eq!(paused["paused"], true);
    assert_eq!(s.get("/api/v1/tasks/ns/every").await.1["paused"], true);

    let (status, resumed) = s.post("/api/v1/tasks/ns/every/resume", None).await;
    assert_eq!(status, StatusCode::OK, "{resumed}");
    assert_eq!(resumed["paused"], false);
    assert!(resumed["next_fire_at"].is_string(), "{resumed}");

    for action in ["pause", "resume", "trigger"] {
        let (status, body) = s.post(&format!("/api/v1/tasks/ns/missing/{action}"), None).await;
        assert_error(status, &body, 404, "not_found");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn trigger_with_params() {
    let s = Server::start().await;
    s.apply_yaml("ns", "t", &task_yaml("ns", "t", &[], "succeed")).await;

    let res = s
        .http
        .post(s.url("/api/v1/tasks/ns/t/trigger"))
        .json(&json!({"params": {"extra": 42, "mode": "succeed"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    let (_, run) = common::into_json(res).await;
    assert_eq!(location, format!("/api/v1/runs/{}", run["id"]));
    assert_eq!(run["task"], "ns/t");
    assert_eq!(run["trigger"], "manual");
    assert_eq!(run["params"]["extra"], 42);
    assert_eq!(run["params"]["mode"], "succeed");

    let detail = s.wait_run(run["id"].as_i64().unwrap(), &["succeeded"]).await;
    assert_eq!(detail["run"]["output"]["echo"]["extra"], 42);
    let dispatched = s.executor.dispatches.lock().unwrap().clone();
    assert!(dispatched.iter().any(|d| d.params.get("extra") == Some(&json!(42))));

    // No body, an empty object and `params: {}` all work.
    let plain = s.trigger("ns", "t", None).await;
    assert_eq!(plain["params"]["mode"], "succeed");
    let (status, _) = s.post("/api/v1/tasks/ns/t/trigger", Some(json!({}))).await;
    assert_eq!(status, StatusCode::CREATED);

    // Bad bodies name the field.
    let (status, body) = s.post("/api/v1/tasks/ns/t/trigger", Some(json!({"params": [1]}))).await;
    assert_eq!(assert_error(status, &body, 400, "invalid_argument"), ["params"]);
    let (status, body) = s.post("/api/v1/tasks/ns/t/trigger", Some(json!({"parms": {}}))).await;
    assert_error(status, &body, 400, "invalid_argument");
    let (status, body) = s.post_raw("/api/v1/tasks/ns/t/trigger", "application/json", "{oops").await;
    assert_error(status, &body, 400, "invalid_argument");
}
