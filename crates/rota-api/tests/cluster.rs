//! `GET /api/v1/cluster` over real HTTP: scheduler nodes and shard leases written through the store as the cluster
//! writes them, then read back through the API.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use common::Server;
use reqwest::StatusCode;
use rota_store::{
    LeaseStore, NodeKind, NodeRegistration, NodeStore, Precondition, TaskStore, TaskWrite, truncate_millis,
};
use serde_json::{Value, json};

fn scheduler_node(id: &str, address: &str) -> NodeRegistration {
    NodeRegistration {
        id: id.into(),
        kind: NodeKind::Scheduler,
        service: "rota".into(),
        address: address.into(),
        protocol: "http".into(),
        labels: Default::default(),
        weight: 1,
        capacity: 100,
    }
}

fn task_of_shard_1(next_fire_at: DateTime<Utc>) -> TaskWrite {
    TaskWrite {
        namespace: "ns".into(),
        name: "overdue".into(),
        labels: Default::default(),
        spec: json!({"apiVersion": "rota/v1", "kind": "Task"}),
        shard: 1,
        next_fire_at: Some(next_fire_at),
    }
}

fn node<'a>(view: &'a Value, id: &str) -> &'a Value {
    view["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == id)
        .unwrap_or_else(|| panic!("node {id} is not listed: {view:#}"))
}

fn instant(v: &Value) -> DateTime<Utc> {
    v.as_str().unwrap_or_else(|| panic!("not an instant: {v}")).parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_shards_lag_and_unowned_shards() {
    let s = Server::start_idle().await;
    let store = &s.store;
    let now = truncate_millis(Utc::now());
    let ago = |secs: i64| now - TimeDelta::seconds(secs);
    let ttl = |secs: u64| Duration::from_secs(secs);

    // sched-a: registered and heartbeating, holds shards 0 and 1 (leases with different expiries).
    store.register_node(scheduler_node("sched-a", "http://10.0.0.1:7070"), ttl(60), now).await.unwrap();
    let l0 = store.acquire_lease(0, "sched-a", ttl(20), now).await.unwrap().expect("shard 0 is free");
    store.acquire_lease(1, "sched-a", ttl(40), now).await.unwrap().expect("shard 1 is free");
    // sched-dead: its registration expired long ago; its lease on shard 3 expired too.
    store.register_node(scheduler_node("sched-dead", "http://10.0.0.2:7070"), ttl(10), ago(120)).await.unwrap();
    store.acquire_lease(3, "sched-dead", ttl(10), ago(120)).await.unwrap().expect("shard 3 is free");
    // sched-ghost: holds shard 2 but has no registry row.
    store.acquire_lease(2, "sched-ghost", ttl(30), now).await.unwrap().expect("shard 2 is free");
    // Executor nodes are not scheduler nodes.
    let exec = NodeRegistration { kind: NodeKind::Executor, ..scheduler_node("exec-1", "http://10.0.0.9:8080") };
    store.register_node(exec, ttl(60), now).await.unwrap();

    // A task of shard 1 due 30 s ago that nobody fired (the scheduler of this server is not running).
    store.put_task(task_of_shard_1(ago(30)), Precondition::Any, now).await.unwrap();

    let (status, view) = s.get("/api/v1/cluster").await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["backend"], "sqlite");
    assert_eq!(view["supports_cluster"], false);
    assert_eq!(view["shard_count"], 4);
    let at = instant(&view["now"]);
    assert!(at >= now && at - now < TimeDelta::seconds(20), "now {at} vs {now}");
    assert_eq!(view["unowned_shards"], json!([3]), "{view:#}");
    let ids: Vec<&str> = view["nodes"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["sched-a", "sched-dead", "sched-ghost"], "{view:#}");

    let a = node(&view, "sched-a");
    let keys: BTreeSet<&str> = a.as_object().unwrap().keys().map(String::as_str).collect();
    let want: BTreeSet<&str> = [
        "id",
        "address",
        "registered",
        "state",
        "alive",
        "registered_at",
        "last_heartbeat_at",
        "expires_at",
        "shards",
        "shards_held",
        "lease_expires_at",
        "lag_ms",
    ]
    .into();
    assert_eq!(keys, want, "{a:#}");
    assert_eq!(a["address"], "http://10.0.0.1:7070");
    assert_eq!((&a["registered"], &a["alive"], &a["state"]), (&json!(true), &json!(true), &json!("active")));
    assert_eq!(a["shards"], json!([0, 1]));
    assert_eq!(a["shards_held"], 2);
    assert_eq!(instant(&a["lease_expires_at"]), l0.expires_at, "the earliest of its leases");
    assert_eq!(instant(&a["registered_at"]), now);
    assert_eq!(instant(&a["last_heartbeat_at"]), now);
    assert_eq!(instant(&a["expires_at"]), now + TimeDelta::seconds(60));
    let lag = a["lag_ms"].as_u64().unwrap();
    assert!((30_000..50_000).contains(&lag), "lag of the overdue task: {lag} ms");

    let dead = node(&view, "sched-dead");
    assert_eq!((&dead["registered"], &dead["alive"]), (&json!(true), &json!(false)), "{dead:#}");
    assert_eq!(dead["shards"], json!([]));
    assert_eq!(dead["shards_held"], 0);
    assert_eq!(dead["lease_expires_at"], Value::Null);
    assert_eq!(dead["lag_ms"], 0);

    let ghost = node(&view, "sched-ghost");
    assert_eq!(ghost["registered"], false, "{ghost:#}");
    assert_eq!(ghost["alive"], true, "it renews a live lease");
    assert_eq!((&ghost["state"], &ghost["registered_at"], &ghost["address"]), (&Value::Null, &Value::Null, &json!("")));
    assert_eq!(ghost["shards"], json!([2]));
    assert_eq!(ghost["lag_ms"], 0);

    // Once the overdue task has moved on, the lag is gone; a lease handed over moves its shard.
    store.put_task(task_of_shard_1(now + TimeDelta::hours(1)), Precondition::Any, now).await.unwrap();
    store.release_lease(&l0).await.unwrap();
    store.acquire_lease(0, "sched-ghost", ttl(30), now).await.unwrap().expect("shard 0 was released");
    let (_, view) = s.get("/api/v1/cluster").await;
    assert_eq!(node(&view, "sched-a")["shards"], json!([1]), "{view:#}");
    assert_eq!(node(&view, "sched-a")["lag_ms"], 0);
    assert_eq!(node(&view, "sched-ghost")["shards"], json!([0, 2]));
    assert_eq!(view["unowned_shards"], json!([3]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_scheduler_holds_every_shard() {
    let s = Server::start().await;
    let node_id = &s.scheduler.config().node_id;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let view = loop {
        let (status, view) = s.get("/api/v1/cluster").await;
        assert_eq!(status, StatusCode::OK, "{view}");
        if view["unowned_shards"] == json!([]) {
            break view;
        }
        assert!(tokio::time::Instant::now() < deadline, "the scheduler did not take every shard: {view:#}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let me = node(&view, node_id);
    assert_eq!(me["shards"], json!([0, 1, 2, 3]), "{view:#}");
    assert_eq!(me["shards_held"], 4);
    assert_eq!(me["alive"], true);
    assert!(me["lease_expires_at"].is_string(), "{me:#}");
    // Registered once the scheduler registers itself; a lease holder either way.
    assert!(me["registered"].is_boolean(), "{me:#}");
}
