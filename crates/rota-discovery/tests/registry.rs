//! `RegistryDiscovery` against real stores: SQLite, PostgreSQL and MariaDB (`rota_store_sql::testing`; a missing
//! server fails the test, it is never skipped).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use rota_core::{Candidate, Discovery, DiscoveryError};
use rota_discovery::{Clock, ManualClock, RegistryDiscovery};
use rota_store::{NodeFilter, NodeKind, NodeRecord, NodeRegistration, NodeState, NodeStore, StoreError, StoreResult};
use rota_store_sql::SqlStore;
use rota_store_sql::testing::{self, Backend};

const TTL: Duration = Duration::from_secs(3);

fn t0() -> DateTime<Utc> {
    Utc.timestamp_millis_opt(1_790_000_000_000).single().expect("valid")
}

fn reg(id: &str, kind: NodeKind, service: &str) -> NodeRegistration {
    NodeRegistration {
        id: id.into(),
        kind,
        service: service.into(),
        address: format!("http://{id}.internal:8080"),
        protocol: "http".into(),
        labels: BTreeMap::new(),
        weight: 1,
        capacity: 0,
    }
}

async fn register(store: &SqlStore, r: NodeRegistration, now: DateTime<Utc>) {
    store.register_node(r, TTL, now).await.expect("register");
}

fn ids(c: &[Candidate]) -> Vec<&str> {
    c.iter().map(|c| c.id.as_str()).collect()
}

/// Every live executor of the service, in id order, draining flagged, fields mapped; schedulers, other
/// services and expired nodes left out.
async fn lists_live_executors(b: Backend) {
    let store = Arc::new(testing::fresh(b).await);
    let now = t0();
    let mut rich = reg("exec-b", NodeKind::Executor, "billing");
    rich.protocol = "grpc".into();
    rich.address = "grpc://10.0.0.2:9000".into();
    rich.labels = BTreeMap::from([("zone".into(), "b".into()), ("gpu".into(), "yes".into())]);
    rich.weight = 5;
    rich.capacity = 12;
    register(&store, rich, now).await;
    register(&store, reg("exec-c", NodeKind::Executor, "billing"), now).await;
    register(&store, reg("exec-a", NodeKind::Executor, "billing"), now).await;
    register(&store, reg("exec-x", NodeKind::Executor, "reports"), now).await;
    register(&store, reg("sched-1", NodeKind::Scheduler, "billing"), now).await;
    // Expired long ago.
    register(&store, reg("exec-old", NodeKind::Executor, "billing"), now - chrono::TimeDelta::seconds(60)).await;
    store.set_node_state("exec-c", NodeState::Draining).await.expect("drain");

    let clock = Arc::new(ManualClock::new(now));
    let d = RegistryDiscovery::new(store.clone()).with_clock(clock.clone());
    let got = d.candidates("billing").await.expect("candidates");
    assert_eq!(ids(&got), ["exec-a", "exec-b", "exec-c"]);
    assert_eq!(
        got[1],
        Candidate {
            id: "exec-b".into(),
            address: "grpc://10.0.0.2:9000".into(),
            protocol: "grpc".into(),
            labels: BTreeMap::from([("gpu".into(), "yes".into()), ("zone".into(), "b".into())]),
            weight: 5,
            capacity: 12,
            draining: false,
        }
    );
    assert_eq!(got[0].address, "http://exec-a.internal:8080");
    assert!(!got[0].draining);
    assert!(got[2].draining, "exec-c drains");
    assert_eq!(ids(&d.candidates("reports").await.expect("reports")), ["exec-x"]);
    assert_eq!(d.candidates("nobody").await.expect("unknown service"), Vec::<Candidate>::new());
}

/// A node that stops heartbeating leaves the list once its registration expires; one that heartbeats stays.
async fn expires_silent_nodes(b: Backend) {
    let store = Arc::new(testing::fresh(b).await);
    register(&store, reg("a", NodeKind::Executor, "svc"), t0()).await;
    register(&store, reg("b", NodeKind::Executor, "svc"), t0()).await;
    let clock = Arc::new(ManualClock::new(t0()));
    // No cache here, to see the registration expiry to the millisecond (the cache is tested below).
    let d = RegistryDiscovery::new(store.clone()).with_clock(clock.clone()).with_cache_ttl(Duration::ZERO);
    // With the default cache a node may be listed up to 500 ms past its expiry, never longer.
    let cached = RegistryDiscovery::new(store.clone()).with_clock(clock.clone());
    assert_eq!(ids(&d.candidates("svc").await.unwrap()), ["a", "b"]);

    clock.advance(Duration::from_secs(2));
    store.heartbeat_node("a", TTL, clock.now()).await.expect("heartbeat"); // a: alive until t0 + 5 s
    clock.advance(Duration::from_millis(999)); // t0 + 2.999 s: b still alive (expires at t0 + 3 s)
    assert_eq!(ids(&d.candidates("svc").await.unwrap()), ["a", "b"]);
    assert_eq!(ids(&cached.candidates("svc").await.unwrap()), ["a", "b"]);
    clock.advance(Duration::from_millis(1)); // t0 + 3 s: b expired (alive means expires_at > now)
    assert_eq!(ids(&d.candidates("svc").await.unwrap()), ["a"]);
    clock.advance(Duration::from_millis(498));
    assert_eq!(ids(&cached.candidates("svc").await.unwrap()), ["a", "b"], "cached until t0 + 2.999 s + 500 ms");
    clock.advance(Duration::from_millis(1));
    assert_eq!(ids(&cached.candidates("svc").await.unwrap()), ["a"]);
    clock.advance(Duration::from_millis(1501)); // t0 + 5 s
    assert_eq!(d.candidates("svc").await.unwrap(), Vec::<Candidate>::new());
}

/// Within the cache TTL the first answer is served, changes in the registry included; after it they show.
async fn caches_for_the_ttl(b: Backend) {
    let store = Arc::new(testing::fresh(b).await);
    register(&store, reg("a", NodeKind::Executor, "svc"), t0()).await;
    let clock = Arc::new(ManualClock::new(t0()));
    let d = RegistryDiscovery::new(store.clone()).with_clock(clock.clone());
    assert_eq!(d.cache_ttl(), Duration::from_millis(500), "the default");
    assert_eq!(ids(&d.candidates("svc").await.unwrap()), ["a"]);

    register(&store, reg("b", NodeKind::Executor, "svc"), t0()).await;
    store.deregister_node("a").await.expect("deregister");
    assert_eq!(ids(&d.candidates("svc").await.unwrap()), ["a"], "cached");
    clock.advance(Duration::from_millis(499));
    assert_eq!(ids(&d.candidates("svc").await.unwrap()), ["a"], "still cached at 499 ms");
    // Another service has an entry of its own.
    assert_eq!(ids(&d.candidates("other").await.unwrap()), Vec::<&str>::new());
    clock.advance(Duration::from_millis(1));
    assert_eq!(ids(&d.candidates("svc").await.unwrap()), ["b"], "refreshed at 500 ms");

    // A custom TTL, and zero: no cache.
    let d2 = RegistryDiscovery::new(store.clone()).with_clock(clock.clone()).with_cache_ttl(Duration::from_secs(2));
    assert_eq!(ids(&d2.candidates("svc").await.unwrap()), ["b"]);
    register(&store, reg("c", NodeKind::Executor, "svc"), clock.now()).await;
    clock.advance(Duration::from_millis(1999));
    assert_eq!(ids(&d2.candidates("svc").await.unwrap()), ["b"]);
    clock.advance(Duration::from_millis(1));
    assert_eq!(ids(&d2.candidates("svc").await.unwrap()), ["b", "c"]);
    let d0 = RegistryDiscovery::new(store.clone()).with_clock(clock.clone()).with_cache_ttl(Duration::ZERO);
    assert_eq!(ids(&d0.candidates("svc").await.unwrap()), ["b", "c"]);
    store.deregister_node("b").await.expect("deregister");
    assert_eq!(ids(&d0.candidates("svc").await.unwrap()), ["c"]);
}

/// With the system clock: a node registered after a lookup shows once the (short) cache TTL has passed.
async fn system_clock_refreshes(b: Backend) {
    let store = Arc::new(testing::fresh(b).await);
    register(&store, reg("a", NodeKind::Executor, "svc"), Utc::now()).await;
    let d = RegistryDiscovery::new(store.clone()).with_cache_ttl(Duration::from_millis(50));
    assert_eq!(ids(&d.candidates("svc").await.unwrap()), ["a"]);
    register(&store, reg("b", NodeKind::Executor, "svc"), Utc::now()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if ids(&d.candidates("svc").await.unwrap()) == ["a", "b"] {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "b never appeared");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

macro_rules! backend_tests {
    ($($case:ident),* $(,)?) => {
        mod sqlite { $( #[tokio::test] async fn $case() { super::$case(super::Backend::Sqlite).await } )* }
        mod postgres { $( #[tokio::test] async fn $case() { super::$case(super::Backend::Postgres).await } )* }
        mod mysql { $( #[tokio::test] async fn $case() { super::$case(super::Backend::MySql).await } )* }
    };
}

backend_tests!(lists_live_executors, expires_silent_nodes, caches_for_the_ttl, system_clock_refreshes);

/// A `NodeStore` delegating to a real store, counting `list_nodes` calls (which wait for the gate), or failing
/// them.
struct Wrapped {
    inner: Arc<SqlStore>,
    lists: AtomicUsize,
    fail: bool,
    gate: tokio::sync::Semaphore,
}

impl Wrapped {
    fn new(inner: Arc<SqlStore>, fail: bool) -> Wrapped {
        Wrapped { inner, lists: AtomicUsize::new(0), fail, gate: tokio::sync::Semaphore::new(0) }
    }
}

#[async_trait]
impl NodeStore for Wrapped {
    async fn register_node(&self, reg: NodeRegistration, ttl: Duration, now: DateTime<Utc>) -> StoreResult<NodeRecord> {
        self.inner.register_node(reg, ttl, now).await
    }
    async fn heartbeat_node(&self, id: &str, ttl: Duration, now: DateTime<Utc>) -> StoreResult<NodeRecord> {
        self.inner.heartbeat_node(id, ttl, now).await
    }
    async fn set_node_state(&self, id: &str, state: NodeState) -> StoreResult<NodeRecord> {
        self.inner.set_node_state(id, state).await
    }
    async fn get_node(&self, id: &str) -> StoreResult<Option<NodeRecord>> {
        self.inner.get_node(id).await
    }
    async fn deregister_node(&self, id: &str) -> StoreResult<bool> {
        self.inner.deregister_node(id).await
    }
    async fn list_nodes(&self, filter: &NodeFilter) -> StoreResult<Vec<NodeRecord>> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        if self.fail {
            #[derive(Debug, thiserror::Error)]
            #[error("error communicating with postgres://rota:s3cret@db.internal:5432/rota: connection refused")]
            struct Down;
            return Err(StoreError::backend(Down));
        }
        let _permit = self.gate.acquire().await.expect("gate open");
        self.inner.list_nodes(filter).await
    }
    async fn prune_nodes(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        self.inner.prune_nodes(before).await
    }
}

/// A dispatch storm on an empty cache makes one store query, not one per dispatch.
#[tokio::test]
async fn concurrent_lookups_share_one_query() {
    let inner = Arc::new(testing::fresh_sqlite().await);
    register(&inner, reg("a", NodeKind::Executor, "svc"), t0()).await;
    let store = Arc::new(Wrapped::new(inner, false));
    let d = Arc::new(RegistryDiscovery::new(store.clone()).with_clock(Arc::new(ManualClock::new(t0()))));
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let d = d.clone();
            tokio::spawn(async move { d.candidates("svc").await })
        })
        .collect();
    // Every caller runs while the first query is held at the gate; then the query may finish.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.lists.load(Ordering::SeqCst) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no query started");
        tokio::task::yield_now().await;
    }
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    store.gate.add_permits(1000);
    for c in calls {
        assert_eq!(ids(&c.await.unwrap().unwrap()), ["a"]);
    }
    assert_eq!(store.lists.load(Ordering::SeqCst), 1);
}

/// A failing store is `Unavailable` (not cached), and the message does not repeat the connection string.
#[tokio::test]
async fn store_errors_are_unavailable_without_secrets() {
    let inner = Arc::new(testing::fresh_sqlite().await);
    let store = Arc::new(Wrapped::new(inner, true));
    let d = RegistryDiscovery::new(store.clone()).with_clock(Arc::new(ManualClock::new(t0())));
    for _ in 0..2 {
        match d.candidates("svc").await {
            Err(DiscoveryError::Unavailable { service, reason }) => {
                assert_eq!(service, "svc");
                assert!(reason.contains("node registry"), "{reason}");
                assert!(reason.contains("connection refused"), "{reason}");
                assert!(!reason.contains("s3cret") && !reason.contains("db.internal"), "{reason}");
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
    assert_eq!(store.lists.load(Ordering::SeqCst), 2, "failures are not cached");
}

/// The registry source also takes the `Arc<dyn Store>` the server holds.
#[tokio::test]
async fn accepts_a_dyn_store() {
    let sql = testing::fresh_sqlite().await;
    register(&sql, reg("a", NodeKind::Executor, "svc"), Utc::now()).await;
    let store: Arc<dyn rota_store::Store> = Arc::new(sql);
    let d = RegistryDiscovery::new(store);
    assert_eq!(ids(&d.candidates("svc").await.unwrap()), ["a"]);
}
