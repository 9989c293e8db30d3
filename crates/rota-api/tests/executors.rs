//! Executor node registration endpoints over real HTTP.

mod common;

use common::{Server, assert_error};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn registration(id: &str, address: &str) -> Value {
    json!({"id": id, "service": "billing", "address": address, "labels": {"zone": "a"}, "weight": 2, "capacity": 4})
}

#[tokio::test(flavor = "multi_thread")]
async fn register_heartbeat_drain_list_and_leave() {
    let s = Server::start().await;
    let (status, lease) = s.post("/api/v1/executors", Some(registration("w-1", "http://127.0.0.1:9001"))).await;
    assert_eq!(status, StatusCode::OK, "{lease}");
    assert_eq!(lease["id"], "w-1");
    assert_eq!(lease["state"], "active");
    let interval = lease["heartbeat_interval_ms"].as_u64().unwrap();
    assert!(interval > 0 && interval < 10_000, "{lease}");
    let first_expiry = lease["expires_at"].as_str().unwrap().to_string();

    let (status, beat) = s.post("/api/v1/executors/w-1/heartbeat", None).await;
    assert_eq!(status, StatusCode::OK, "{beat}");
    assert!(beat["expires_at"].as_str().unwrap() >= first_expiry.as_str(), "{beat}");

    let (status, list) = s.get("/api/v1/executors").await;
    assert_eq!(status, StatusCode::OK);
    let node = &list["items"][0];
    assert_eq!(node["id"], "w-1");
    assert_eq!(node["service"], "billing");
    assert_eq!(node["address"], "http://127.0.0.1:9001");
    assert_eq!(node["protocol"], "http");
    assert_eq!(node["labels"], json!({"zone": "a"}));
    assert_eq!((node["weight"].as_u64(), node["capacity"].as_u64()), (Some(2), Some(4)));
    assert_eq!(node["alive"], true);
    // Executors are not scheduler nodes: the cluster view does not list them.
    let (_, cluster) = s.get("/api/v1/cluster").await;
    assert!(cluster["nodes"].as_array().unwrap().iter().all(|n| n["id"] != "w-1"), "{cluster}");

    let (_, other) = s.get_query("/api/v1/executors", &[("service", "other")]).await;
    assert_eq!(other["items"], json!([]));
    let (status, body) = s.get_query("/api/v1/executors", &[("servce", "billing")]).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST.as_u16(), "invalid_argument");

    let (status, drained) = s.post("/api/v1/executors/w-1/drain", None).await;
    assert_eq!((status, drained["state"].as_str()), (StatusCode::OK, Some("draining")));
    // A heartbeat keeps the node draining; re-registering makes it active again.
    let (_, beat) = s.post("/api/v1/executors/w-1/heartbeat", None).await;
    assert_eq!(beat["state"], "draining");
    let (_, again) = s.post("/api/v1/executors", Some(registration("w-1", "http://127.0.0.1:9001"))).await;
    assert_eq!(again["state"], "active");

    let (status, _) = s.delete("/api/v1/executors/w-1").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = s.post("/api/v1/executors/w-1/heartbeat", None).await;
    assert_error(status, &body, StatusCode::NOT_FOUND.as_u16(), "not_found");
    let (status, body) = s.delete("/api/v1/executors/w-1").await;
    assert_error(status, &body, StatusCode::NOT_FOUND.as_u16(), "not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_registrations_are_rejected_naming_the_field() {
    let s = Server::start().await;
    let cases = [
        (json!({"id": "w", "service": "s", "address": "not a url"}), "address"),
        (json!({"id": "w", "service": "s", "address": "ftp://h:1"}), "address"),
        (json!({"id": "w", "service": "s", "address": "http://u:secret@h:1"}), "address"),
        (json!({"id": "w", "service": "s", "address": "http://h:1/jobs"}), "address"),
        (json!({"id": "w", "service": "s", "address": "grpc://h", "protocol": "grpc"}), "address"),
        (json!({"id": "w x", "service": "s", "address": "http://h:1"}), "id"),
        (json!({"id": "w", "service": "", "address": "http://h:1"}), "service"),
        (json!({"id": "w", "service": "s", "address": "http://h:1", "weight": 0}), "weight"),
        (json!({"id": "w", "service": "s", "address": "http://h:1", "protocol": "smtp"}), "protocol"),
        (json!({"id": "w", "service": "s", "address": "http://h:1", "extra": 1}), "extra"),
        (json!({"service": "s", "address": "http://h:1"}), "id"),
    ];
    for (body, field) in cases {
        let (status, err) = s.post("/api/v1/executors", Some(body.clone())).await;
        let paths = assert_error(status, &err, StatusCode::BAD_REQUEST.as_u16(), "invalid_argument");
        let named = paths.iter().any(|p| p == field) || err.to_string().contains(&format!("`{field}`"));
        assert!(named, "{body} → {err} should name {field}");
        // The secret of a rejected address is never echoed back.
        assert!(!err.to_string().contains("secret"), "{err}");
    }
    let (_, list) = s.get("/api/v1/executors").await;
    assert_eq!(list["items"], json!([]), "nothing rejected was stored");
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_ids_and_unknown_nodes_are_rejected() {
    let s = Server::start().await;
    let (status, _) = s.post("/api/v1/executors", Some(registration("w-1", "http://127.0.0.1:9001"))).await;
    assert_eq!(status, StatusCode::OK);
    // Same id, another address, while the first registration is alive: a duplicate.
    let (status, body) = s.post("/api/v1/executors", Some(registration("w-1", "http://127.0.0.1:9002"))).await;
    assert_error(status, &body, StatusCode::CONFLICT.as_u16(), "conflict");
    assert!(body["error"]["message"].as_str().unwrap().contains("w-1"), "{body}");
    let (_, list) = s.get("/api/v1/executors").await;
    assert_eq!(list["items"][0]["address"], "http://127.0.0.1:9001", "the first registration is intact");
    // The scheduler node's own id cannot be taken by an executor.
    let (status, body) = s.post("/api/v1/executors", Some(registration("api-test", "http://127.0.0.1:9003"))).await;
    assert_error(status, &body, StatusCode::CONFLICT.as_u16(), "conflict");
    // Heartbeats, drains and leaves of unknown nodes (and of the scheduler node) are 404.
    for path in
        ["/api/v1/executors/ghost/heartbeat", "/api/v1/executors/ghost/drain", "/api/v1/executors/api-test/heartbeat"]
    {
        let (status, body) = s.post(path, None).await;
        assert_error(status, &body, StatusCode::NOT_FOUND.as_u16(), "not_found");
    }
}
