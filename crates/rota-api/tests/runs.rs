//! Run endpoints over real HTTP: history with filters, detail with attempts, logs, cancel, executor reports.

mod common;

use common::{Server, assert_error, task_yaml};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn id(run: &Value) -> i64 {
    run["id"].as_i64().expect("run id")
}

#[tokio::test(flavor = "multi_thread")]
async fn run_detail_with_attempts_and_finished_report_conflict() {
    let s = Server::start().await;
    s.apply_yaml("ns", "ok", &task_yaml("ns", "ok", &[], "succeed")).await;
    let run = s.trigger("ns", "ok", None).await;
    let detail = s.wait_run(id(&run), &["succeeded"]).await;
    assert_eq!(detail["run"]["id"], run["id"]);
    assert_eq!(detail["run"]["attempts"], 1);
    assert!(detail["run"]["finished_at"].is_string(), "{detail}");
    let attempts = detail["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{detail}");
    assert_eq!(attempts[0]["attempt"], 1);
    assert_eq!(attempts[0]["state"], "succeeded");

    // A report for a finished run conflicts; one for an unknown run is 404.
    let report = json!({"attempt": 1, "status": "failed", "error": "late"});
    let (status, body) = s.post(&format!("/api/v1/runs/{}/report", id(&run)), Some(report.clone())).await;
    assert_error(status, &body, 409, "conflict");
    let (status, body) = s.post("/api/v1/runs/987654/report", Some(report)).await;
    assert_error(status, &body, 404, "not_found");
    // The outcome stands.
    assert_eq!(s.get(&format!("/api/v1/runs/{}", id(&run))).await.1["run"]["state"], "succeeded");

    let (status, body) = s.get("/api/v1/runs/987654").await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = s.get("/api/v1/runs/not-a-number").await;
    assert_eq!(assert_error(status, &body, 400, "invalid_argument"), ["id"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn async_report_and_logs() {
    let s = Server::start().await;
    s.apply_yaml("ns", "async", &task_yaml("ns", "async", &[], "accept")).await;
    let run = s.trigger("ns", "async", None).await;
    let rid = id(&run);
    s.wait_run(rid, &["running"]).await;

    let (status, body) =
        s.post(&format!("/api/v1/runs/{rid}/logs"), Some(json!({"lines": ["one", "two"], "stream": "stdout"}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let first_seq = body["last_seq"].as_i64().unwrap();
    let (status, body) = s.post(&format!("/api/v1/runs/{rid}/logs"), Some(json!({"lines": ["three"]}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["last_seq"].as_i64().unwrap() > first_seq);

    let (status, logs) = s.get(&format!("/api/v1/runs/{rid}/logs")).await;
    assert_eq!(status, StatusCode::OK, "{logs}");
    let lines: Vec<&str> = logs["items"].as_array().unwrap().iter().map(|l| l["line"].as_str().unwrap()).collect();
    let ours: Vec<&str> = lines.iter().copied().filter(|l| ["one", "two", "three"].contains(l)).collect();
    assert_eq!(ours, ["one", "two", "three"], "{logs}");
    let one = logs["items"].as_array().unwrap().iter().find(|l| l["line"] == "one").unwrap();
    assert_eq!(one["stream"], "stdout");
    let three = logs["items"].as_array().unwrap().iter().find(|l| l["line"] == "three").unwrap();
    assert_eq!(three["stream"], "executor");
    assert_eq!(logs["next_after"], logs["items"].as_array().unwrap().last().unwrap()["seq"]);

    // Paging through the log with `after` and `limit`.
    let one_seq = one["seq"].as_i64().unwrap().to_string();
    let (_, page) = s.get_query(&format!("/api/v1/runs/{rid}/logs"), &[("after", &one_seq), ("limit", "1")]).await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert!(items[0]["seq"].as_i64().unwrap() > one_seq.parse::<i64>().unwrap());
    assert_eq!(page["next_after"], items[0]["seq"]);
    let (status, body) = s.get_query(&format!("/api/v1/runs/{rid}/logs"), &[("limit", "0")]).await;
    assert_eq!(assert_error(status, &body, 400, "invalid_argument"), ["limit"]);

    // The executor reports the result.
    let report = json!({"attempt": 1, "status": "succeeded", "output": {"rows": 7}, "logs": ["done"]});
    let (status, body) = s.post(&format!("/api/v1/runs/{rid}/report"), Some(report.clone())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "succeeded");
    assert_eq!(body["output"], json!({"rows": 7}));
    let (_, logs) = s.get(&format!("/api/v1/runs/{rid}/logs")).await;
    assert!(logs["items"].as_array().unwrap().iter().any(|l| l["line"] == "done"), "{logs}");

    // Reporting twice conflicts.
    let (status, body) = s.post(&format!("/api/v1/runs/{rid}/report"), Some(report)).await;
    assert_error(status, &body, 409, "conflict");

    // Malformed reports name the field.
    let (status, body) =
        s.post(&format!("/api/v1/runs/{rid}/report"), Some(json!({"attempt": 1, "status": "done"}))).await;
    assert_eq!(assert_error(status, &body, 400, "invalid_argument"), ["status"]);
    let (status, body) = s.post(&format!("/api/v1/runs/{rid}/logs"), Some(json!({"lines": "x"}))).await;
    assert_eq!(assert_error(status, &body, 400, "invalid_argument"), ["lines"]);

    // Logs of unknown runs.
    let (status, body) = s.get("/api/v1/runs/987654/logs").await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = s.post("/api/v1/runs/987654/logs", Some(json!({"lines": ["x"]}))).await;
    assert_error(status, &body, 404, "not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel() {
    let s = Server::start().await;
    s.apply_yaml("ns", "slow", &task_yaml("ns", "slow", &[], "accept")).await;
    let run = s.trigger("ns", "slow", None).await;
    let rid = id(&run);
    s.wait_run(rid, &["running"]).await;

    let (status, body) =
        s.post(&format!("/api/v1/runs/{rid}/cancel"), Some(json!({"reason": "operator said so"}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "cancelled");
    assert_eq!(body["reason"], "operator said so");

    let (status, body) = s.post(&format!("/api/v1/runs/{rid}/cancel"), None).await;
    assert_error(status, &body, 409, "conflict");
    let (status, body) = s.post("/api/v1/runs/987654/cancel", None).await;
    assert_error(status, &body, 404, "not_found");

    // A late report for the cancelled run conflicts.
    let (status, body) =
        s.post(&format!("/api/v1/runs/{rid}/report"), Some(json!({"attempt": 1, "status": "succeeded"}))).await;
    assert_error(status, &body, 409, "conflict");

    // Cancelling without a body records a default reason.
    let run = s.trigger("ns", "slow", None).await;
    s.wait_run(id(&run), &["running"]).await;
    let (status, body) = s.post(&format!("/api/v1/runs/{}/cancel", id(&run)), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["reason"].as_str().is_some_and(|r| !r.is_empty()), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn list_runs_with_filters() {
    let s = Server::start().await;
    for (ns, name, mode) in [("a", "x", "succeed"), ("a", "y", "fail"), ("b", "z", "accept")] {
        s.apply_yaml(ns, name, &task_yaml(ns, name, &[], mode)).await;
    }
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    let x1 = s.trigger("a", "x", None).await;
    let x2 = s.trigger("a", "x", None).await;
    let y1 = s.trigger("a", "y", None).await;
    let z1 = s.trigger("b", "z", None).await;
    s.wait_run(id(&x1), &["succeeded"]).await;
    s.wait_run(id(&x2), &["succeeded"]).await;
    s.wait_run(id(&y1), &["failed"]).await;
    s.wait_run(id(&z1), &["running"]).await;
    let after = chrono::Utc::now() + chrono::Duration::seconds(1);

    let ids = |v: &Value| -> Vec<i64> { v["items"].as_array().unwrap().iter().map(id).collect() };
    let q = |pairs: &[(&str, &str)]| {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let s = &s;
        async move {
            let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let (status, body) = s.get_query("/api/v1/runs", &pairs).await;
            assert_eq!(status, StatusCode::OK, "{pairs:?}: {body}");
            body
        }
    };

    // Newest first.
    assert_eq!(ids(&q(&[]).await), [id(&z1), id(&y1), id(&x2), id(&x1)]);
    assert_eq!(ids(&q(&[("task", "a/x")]).await), [id(&x2), id(&x1)]);
    assert_eq!(ids(&q(&[("namespace", "a")]).await), [id(&y1), id(&x2), id(&x1)]);
    assert_eq!(ids(&q(&[("state", "succeeded")]).await), [id(&x2), id(&x1)]);
    assert_eq!(ids(&q(&[("state", "failed,running")]).await), [id(&z1), id(&y1)]);
    assert_eq!(ids(&q(&[("state", "failed"), ("state", "running")]).await), [id(&z1), id(&y1)]);
    assert_eq!(ids(&q(&[("namespace", "a"), ("state", "failed")]).await), [id(&y1)]);
    let (b, a) = (before.to_rfc3339(), after.to_rfc3339());
    assert_eq!(ids(&q(&[("from", &b), ("to", &a)]).await).len(), 4);
    assert!(ids(&q(&[("from", &a)]).await).is_empty());
    assert!(ids(&q(&[("to", &b)]).await).is_empty());

    // Cursor pagination.
    let mut seen = Vec::new();
    let mut cursor = None::<String>;
    loop {
        let mut pairs = vec![("limit", "1".to_string())];
        if let Some(c) = &cursor {
            pairs.push(("cursor", c.clone()));
        }
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let page = q(&pairs).await;
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.into()),
            None => break,
        }
        assert!(seen.len() <= 4, "pagination does not end: {seen:?}");
    }
    assert_eq!(seen, [id(&z1), id(&y1), id(&x2), id(&x1)]);

    for (pairs, path) in [
        (vec![("state", "exploded")], "state"),
        (vec![("from", "yesterday")], "from"),
        (vec![("task", "no-slash")], "task"),
        (vec![("task", "a/x"), ("namespace", "b")], "namespace"),
        (vec![("limit", "-1")], "limit"),
        (vec![("sort", "asc")], "sort"),
    ] {
        let (status, body) = s.get_query("/api/v1/runs", &pairs).await;
        assert_eq!(assert_error(status, &body, 400, "invalid_argument"), [path], "{pairs:?}");
    }
}
