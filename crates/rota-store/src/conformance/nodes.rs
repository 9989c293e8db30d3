//! The node registry: register/upsert, heartbeat, state, listing, deregistration, pruning.

use super::support::*;
use crate::{NodeFilter, NodeKind, NodeRecord, NodeRegistration, NodeState, Store, StoreError};

fn reg(id: &str, kind: NodeKind, service: &str) -> NodeRegistration {
    NodeRegistration {
        id: id.into(),
        kind,
        service: service.into(),
        address: format!("http://{id}.invalid:8080"),
        protocol: "http".into(),
        labels: labels(&[("zone", "eu-1")]),
        weight: 10,
        capacity: 4,
    }
}

async fn register<S: Store>(store: &S, r: NodeRegistration, ttl: u64, now: i64) -> NodeRecord {
    let id = r.id.clone();
    store.register_node(r, secs(ttl), ts(now)).await.must(format_args!("register_node {id}"))
}

/// Registering returns an active record with the given fields and expiry `now + ttl`.
pub async fn node_register_and_get<S: Store>(store: S) {
    let mut r = reg("exec-1", NodeKind::Executor, "billing");
    r.labels = labels(&[("zone", "eu-1"), ("gpu", "true"), ("ünï", "çødé"), ("k=v", "a,b")]);
    r.weight = 0;
    r.capacity = u32::MAX;
    let ttl = std::time::Duration::from_millis(1_500);
    let rec = store.register_node(r.clone(), ttl, t0()).await.must("register_node");
    assert_eq!(rec.id, "exec-1");
    assert_eq!(rec.kind, NodeKind::Executor);
    assert_eq!(rec.service, "billing");
    assert_eq!(rec.address, r.address);
    assert_eq!(rec.protocol, "http");
    assert_eq!(rec.labels, r.labels, "labels round trip");
    assert_eq!((rec.weight, rec.capacity), (0, u32::MAX), "weight and capacity (full u32 range)");
    assert_eq!(rec.state, NodeState::Active, "a registered node is active");
    assert_eq!(rec.registered_at, t0());
    assert_eq!(rec.last_heartbeat_at, t0());
    assert_eq!(rec.expires_at, tms(1_500), "expires_at = now + ttl (ms precision)");
    assert_eq!(store.get_node("exec-1").await.must("get_node"), Some(rec), "get_node equals the registered record");
    assert_eq!(store.get_node("exec-2").await.must("get_node unknown"), None);
    let s = register(&store, reg("sched-1", NodeKind::Scheduler, "cluster-a"), 10, 0).await;
    assert_eq!(s.kind, NodeKind::Scheduler);
}

/// Re-registering upserts: fields refreshed, state back to active, expiry extended.
pub async fn node_reregister_refreshes<S: Store>(store: S) {
    register(&store, reg("n1", NodeKind::Executor, "svc"), 10, 0).await;
    store.set_node_state("n1", NodeState::Draining).await.must("set_node_state draining");
    let mut r2 = reg("n1", NodeKind::Executor, "svc2");
    r2.address = "grpc://10.0.0.9:9000".into();
    r2.protocol = "grpc".into();
    r2.labels = labels(&[("zone", "us-2")]);
    r2.weight = 7;
    r2.capacity = 99;
    let rec = register(&store, r2.clone(), 30, 5).await;
    assert_eq!(rec.state, NodeState::Active, "re-registering makes the node active again");
    assert_eq!(rec.service, "svc2");
    assert_eq!(rec.address, r2.address);
    assert_eq!(rec.protocol, "grpc");
    assert_eq!(rec.labels, r2.labels, "labels replaced");
    assert_eq!((rec.weight, rec.capacity), (7, 99));
    assert_eq!(rec.last_heartbeat_at, ts(5));
    assert_eq!(rec.expires_at, ts(35), "expiry refreshed");
    assert_eq!(store.get_node("n1").await.must("get_node"), Some(rec));
    assert_eq!(store.list_nodes(&NodeFilter::default()).await.must("list_nodes").len(), 1, "upsert, not insert");
}

/// Heartbeats extend the expiry; an unknown node is `NotFound`.
pub async fn node_heartbeat<S: Store>(store: S) {
    let rec = register(&store, reg("n1", NodeKind::Executor, "svc"), 10, 0).await;
    let hb = store.heartbeat_node("n1", secs(20), ts(8)).await.must("heartbeat_node");
    assert_eq!(hb.last_heartbeat_at, ts(8), "last_heartbeat_at = now");
    assert_eq!(hb.expires_at, ts(28), "expires_at = now + ttl");
    assert_eq!(hb.registered_at, rec.registered_at, "registered_at unchanged by a heartbeat");
    assert_eq!(hb.address, rec.address);
    assert_eq!(hb.state, NodeState::Active);
    assert_eq!(store.get_node("n1").await.must("get_node"), Some(hb));
    assert_err!(
        store.heartbeat_node("ghost", secs(20), ts(8)).await,
        StoreError::NotFound { .. },
        "heartbeat_node of an unknown node"
    );
    store.set_node_state("n1", NodeState::Draining).await.must("drain");
    let hb2 = store.heartbeat_node("n1", secs(20), ts(9)).await.must("heartbeat while draining");
    assert_eq!(hb2.state, NodeState::Draining, "a heartbeat does not undo draining");
}

/// `set_node_state` switches between active and draining; unknown nodes are `NotFound`.
pub async fn node_set_state<S: Store>(store: S) {
    let rec = register(&store, reg("n1", NodeKind::Executor, "svc"), 10, 0).await;
    let d = store.set_node_state("n1", NodeState::Draining).await.must("set_node_state draining");
    assert_eq!(d.state, NodeState::Draining);
    assert_eq!(d.expires_at, rec.expires_at, "state change keeps expiry");
    assert_eq!(store.get_node("n1").await.must("get_node").map(|n| n.state), Some(NodeState::Draining));
    let a = store.set_node_state("n1", NodeState::Active).await.must("set_node_state active");
    assert_eq!(a.state, NodeState::Active);
    assert_err!(
        store.set_node_state("ghost", NodeState::Draining).await,
        StoreError::NotFound { .. },
        "set_node_state of an unknown node"
    );
}

/// `list_nodes` filters by kind, service and liveness (`expires_at > alive_at`), ordered by id.
pub async fn node_list_filters<S: Store>(store: S) {
    register(&store, reg("e-b", NodeKind::Executor, "billing"), 10, 0).await;
    register(&store, reg("e-a", NodeKind::Executor, "billing"), 30, 0).await;
    register(&store, reg("e-c", NodeKind::Executor, "search"), 30, 0).await;
    register(&store, reg("s-1", NodeKind::Scheduler, "billing"), 30, 0).await;
    register(&store, reg("e-0", NodeKind::Executor, "billing"), 20, 0).await;
    let list = |f: NodeFilter| {
        let store = &store;
        async move {
            store
                .list_nodes(&f)
                .await
                .must(format_args!("list_nodes {f:?}"))
                .into_iter()
                .map(|n| n.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(NodeFilter::default()).await, vec!["e-0", "e-a", "e-b", "e-c", "s-1"], "all, ordered by id");
    assert_eq!(
        list(NodeFilter { kind: Some(NodeKind::Executor), ..Default::default() }).await,
        vec!["e-0", "e-a", "e-b", "e-c"],
        "kind executor"
    );
    assert_eq!(list(NodeFilter { kind: Some(NodeKind::Scheduler), ..Default::default() }).await, vec!["s-1"]);
    assert_eq!(
        list(NodeFilter { kind: Some(NodeKind::Executor), service: Some("billing".into()), ..Default::default() })
            .await,
        vec!["e-0", "e-a", "e-b"],
        "kind + service"
    );
    assert_eq!(
        list(NodeFilter { service: Some("billing".into()), alive_at: Some(ts(15)), ..Default::default() }).await,
        vec!["e-0", "e-a", "s-1"],
        "alive at +15s: e-b expired at +10s"
    );
    assert_eq!(
        list(NodeFilter { alive_at: Some(ts(20)), ..Default::default() }).await,
        vec!["e-a", "e-c", "s-1"],
        "alive_at is strict: a node expiring exactly at alive_at is not alive"
    );
    assert_eq!(
        list(NodeFilter { alive_at: Some(tms(19_999)), ..Default::default() }).await,
        vec!["e-0", "e-a", "e-c", "s-1"],
        "one millisecond before expiry the node is alive"
    );
    store.heartbeat_node("e-b", secs(100), ts(9)).await.must("heartbeat e-b");
    assert_eq!(
        list(NodeFilter { alive_at: Some(ts(50)), ..Default::default() }).await,
        vec!["e-b"],
        "a heartbeat keeps a node alive"
    );
    assert!(list(NodeFilter { service: Some("nope".into()), ..Default::default() }).await.is_empty());
}

/// Deregistering returns true then false and removes the node.
pub async fn node_deregister<S: Store>(store: S) {
    register(&store, reg("n1", NodeKind::Executor, "svc"), 10, 0).await;
    register(&store, reg("n2", NodeKind::Executor, "svc"), 10, 0).await;
    assert!(store.deregister_node("n1").await.must("deregister_node"), "existing node: true");
    assert!(!store.deregister_node("n1").await.must("deregister_node again"), "again: false");
    assert!(!store.deregister_node("ghost").await.must("deregister_node unknown"), "unknown: false");
    assert_eq!(store.get_node("n1").await.must("get_node"), None);
    let ids: Vec<String> =
        store.list_nodes(&NodeFilter::default()).await.must("list_nodes").into_iter().map(|n| n.id).collect();
    assert_eq!(ids, vec!["n2"]);
    assert_err!(
        store.heartbeat_node("n1", secs(5), ts(1)).await,
        StoreError::NotFound { .. },
        "heartbeat after deregister"
    );
    let again = register(&store, reg("n1", NodeKind::Executor, "svc"), 10, 2).await;
    assert_eq!(again.registered_at, ts(2), "a node registering after deregistration is new");
}

/// `prune_nodes` deletes nodes that expired before the cutoff.
pub async fn node_prune<S: Store>(store: S) {
    register(&store, reg("old", NodeKind::Executor, "svc"), 5, 0).await;
    register(&store, reg("older", NodeKind::Scheduler, "c"), 1, 0).await;
    register(&store, reg("fresh", NodeKind::Executor, "svc"), 100, 0).await;
    let n = store.prune_nodes(ts(50)).await.must("prune_nodes");
    assert_eq!(n, 2, "two nodes expired before +50s");
    let ids: Vec<String> =
        store.list_nodes(&NodeFilter::default()).await.must("list_nodes").into_iter().map(|n| n.id).collect();
    assert_eq!(ids, vec!["fresh"]);
    assert_eq!(store.prune_nodes(ts(50)).await.must("prune_nodes again"), 0);
    assert_eq!(store.prune_nodes(ts(99)).await.must("prune_nodes before expiry"), 0, "a live node is kept");
}
