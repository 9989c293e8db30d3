//! Cross-cutting behaviour over real HTTP: the one error shape for axum's own rejections, body limits, unknown
//! routes and methods, probes, and the served OpenAPI document.

mod common;

use common::{Server, assert_error, task_yaml};
use reqwest::StatusCode;
use rota_api::ApiConfig;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn garbage_and_mistyped_bodies() {
    let s = Server::start().await;
    let (status, body) = s.post_raw("/api/v1/runs/1/report", "application/json", "{definitely not json").await;
    assert_error(status, &body, 400, "invalid_argument");
    let (status, body) = s.post_raw("/api/v1/runs/1/report", "application/json", "[]").await;
    assert_error(status, &body, 400, "invalid_argument");
    let (status, body) = s.post_raw("/api/v1/runs/1/report", "application/json", "").await;
    assert_error(status, &body, 400, "invalid_argument");
    let (status, body) = s.post_raw("/api/v1/runs/1/report", "text/plain", "{}").await;
    assert_eq!(assert_error(status, &body, 415, "unsupported_media_type"), ["Content-Type"]);
    let (status, body) = s.post_raw("/api/v1/runs/1/logs", "application/x-www-form-urlencoded", "lines=a").await;
    assert_error(status, &body, 415, "unsupported_media_type");
    let (status, body) = s.post_raw("/api/v1/runs/1/report", "application/json", vec![0xff, 0xfe, b'{']).await;
    assert_error(status, &body, 400, "invalid_argument");
    let (status, body) = s.put_task("ns", "t", Some("application/yaml"), "\u{0}\u{1}: [").await;
    assert_error(status, &body, 400, "invalid_spec");
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_bodies_are_413() {
    let limit = 16 * 1024;
    let s = Server::start_with(ApiConfig { max_body_bytes: limit, ..ApiConfig::default() }).await;
    let mut doc = task_yaml("ns", "big", &[], "succeed");
    doc.push_str(&format!("    padding: \"{}\"\n", "x".repeat(limit * 2)));
    let (status, body) = s.put_task("ns", "big", Some("application/yaml"), &doc).await;
    assert_error(status, &body, 413, "payload_too_large");

    let lines: Vec<String> = (0..200).map(|i| format!("{i:0>200}")).collect();
    let (status, body) = s.post("/api/v1/runs/1/logs", Some(json!({ "lines": lines }))).await;
    assert_error(status, &body, 413, "payload_too_large");

    // Within the limit is fine.
    let (status, _) = s.put_task("ns", "small", Some("application/yaml"), &task_yaml("ns", "small", &[], "x")).await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_routes_and_methods() {
    let s = Server::start().await;
    for path in ["/nope", "/api/v1/nope", "/api/v1/tasks/a/b/c/d", "/api/v2/tasks"] {
        let (status, body) = s.get(path).await;
        assert_error(status, &body, 404, "not_found");
    }
    let res = s.http.delete(s.url("/api/v1/runs")).send().await.unwrap();
    let allow = res.headers().get("allow").map(|v| v.to_str().unwrap().to_string());
    let (status, body) = common::into_json(res).await;
    assert_error(status, &body, 405, "method_not_allowed");
    assert!(allow.is_some_and(|a| a.contains("GET")), "Allow header");
    let (status, body) = s.post("/api/v1/tasks/ns/t", Some(json!({}))).await;
    assert_error(status, &body, 405, "method_not_allowed");
    let (status, body) = s.post("/healthz", None).await;
    assert_error(status, &body, 405, "method_not_allowed");
}

#[tokio::test(flavor = "multi_thread")]
async fn probes() {
    let s = Server::start().await;
    let (status, body) = s.get("/healthz").await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (status, body) = s.get("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["store"], "sqlite");

    // With the store gone, the process is alive but not ready.
    s.store.close().await;
    let (status, body) = s.get("/readyz").await;
    assert_error(status, &body, 503, "unavailable");
    let (status, _) = s.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_the_openapi_document() {
    let s = Server::start().await;
    let (status, doc) = s.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&doc, rota_api::openapi::document());
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for route in rota_api::route_table() {
        let op = &doc["paths"][route.path][route.method.as_str().to_ascii_lowercase()];
        assert_eq!(op["operationId"], route.operation_id);
    }
}
