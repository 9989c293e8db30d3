//! The execution cluster as the core drives it: candidates from a discovery, load balancing, broadcast,
//! multicast and sharded attempts with aggregated outcomes, reports per node, switchNode and cool-down.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use common::*;
use rota_core::{
    Candidate, CoreError, Discovery, DiscoveryError, Dispatch, DispatchOutcome, Executor, Scheduler, SchedulerConfig,
};
use rota_proto::{ResultStatus, RunReport, RunResult};
use rota_store::{AttemptState, Precondition, RunRecord, RunState, Store};
use rota_store_sql::testing::Backend;
use serde_json::{Map, Value, json};

backend_tests!(
    unicast_round_robin_spreads_evenly,
    broadcast_reaches_every_node_and_aggregates,
    one_failing_node_fails_a_broadcast_unless_any_suffices,
    sharded_gives_each_node_its_index,
    multicast_by_selector_and_count,
    asynchronous_nodes_report_for_themselves_only,
    silent_asynchronous_nodes_time_out_together,
    switch_node_retries_elsewhere_and_failing_nodes_cool_down,
    draining_and_departed_nodes_get_no_work,
);

/// A discovery serving a list the test changes.
#[derive(Default)]
struct TestDiscovery {
    nodes: Mutex<Vec<Candidate>>,
}

impl TestDiscovery {
    fn with(ids: &[&str]) -> Arc<Self> {
        let d = Arc::new(TestDiscovery::default());
        d.set(ids.iter().map(|id| node(id, &[])).collect());
        d
    }

    fn set(&self, nodes: Vec<Candidate>) {
        *self.nodes.lock().unwrap() = nodes;
    }
}

#[async_trait]
impl Discovery for TestDiscovery {
    async fn candidates(&self, service: &str) -> Result<Vec<Candidate>, DiscoveryError> {
        if service != "workers" {
            return Err(DiscoveryError::UnknownService(service.to_string()));
        }
        Ok(self.nodes.lock().unwrap().clone())
    }
}

fn node(id: &str, labels: &[(&str, &str)]) -> Candidate {
    Candidate {
        id: id.to_string(),
        address: format!("http://{id}.invalid:1"),
        protocol: "http".into(),
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        weight: 1,
        capacity: 0,
        draining: false,
    }
}

/// An executor whose behaviour is chosen per node id (default: succeed with the node's id and shard).
#[derive(Default)]
struct NodesExecutor {
    steps: Mutex<HashMap<String, Step>>,
    seen: Mutex<Vec<Dispatch>>,
}

impl NodesExecutor {
    fn set(&self, node: &str, step: Step) {
        self.steps.lock().unwrap().insert(node.to_string(), step);
    }

    fn seen_of(&self, run_id: i64) -> Vec<Dispatch> {
        self.seen.lock().unwrap().iter().filter(|d| d.run_id == run_id).cloned().collect()
    }

    fn nodes_of(&self, run_id: i64) -> Vec<String> {
        let mut v: Vec<String> = self.seen_of(run_id).into_iter().map(|d| d.node.unwrap().id).collect();
        v.sort();
        v
    }
}

#[async_trait]
impl Executor for NodesExecutor {
    async fn dispatch(&self, d: Dispatch) -> DispatchOutcome {
        self.seen.lock().unwrap().push(d.clone());
        let id = d.node.as_ref().map(|n| n.id.clone()).unwrap_or_default();
        let step = self.steps.lock().unwrap().get(&id).cloned().unwrap_or(Step::Succeed);
        match step {
            Step::Fail => DispatchOutcome::Completed(RunResult::failed(format!("{id} says no"))),
            Step::Error(e) => DispatchOutcome::Failed { error: e.to_string() },
            Step::Accept => DispatchOutcome::Accepted,
            Step::Hang => {
                tokio::time::sleep(d.timeout).await;
                DispatchOutcome::TimedOut
            }
            _ => DispatchOutcome::Completed(RunResult::succeeded(Some(
                json!({"node": id, "index": d.shard.index, "total": d.shard.total}),
            ))),
        }
    }
}

struct Cluster {
    store: Arc<dyn Store>,
    exec: Arc<NodesExecutor>,
    discovery: Arc<TestDiscovery>,
    sched: Scheduler,
}

async fn cluster(backend: Backend, ids: &[&str], cfg: SchedulerConfig) -> Cluster {
    let store = store(backend).await;
    let exec = Arc::new(NodesExecutor::default());
    let discovery = TestDiscovery::with(ids);
    let sched = Scheduler::new(store.clone(), exec.clone(), cfg).with_discovery(discovery.clone());
    sched.start().await.unwrap();
    Cluster { store, exec, discovery, sched }
}

impl Cluster {
    async fn apply(&self, name: &str, spec: Value) {
        let mut s = json!({
            "schedule": {"manual": true},
            "target": {"http": {"path": "/run"}},
            "candidates": {"service": "workers"},
        });
        if let (Value::Object(base), Value::Object(extra)) = (&mut s, spec) {
            base.extend(extra);
        }
        let doc = json!({"apiVersion": "rota/v1", "kind": "Task", "metadata": {"namespace": "test", "name": name}, "spec": s});
        let task = rota_spec::parse_json(&doc.to_string()).unwrap();
        self.sched.apply(task, Precondition::Any).await.unwrap();
    }

    async fn trigger(&self, name: &str) -> RunRecord {
        self.sched.trigger("test", name, Map::new()).await.unwrap()
    }

    async fn until(&self, run_id: i64, state: RunState) -> RunRecord {
        let store = self.store.clone();
        eventually(secs(15), &format!("run {run_id} {state}"), || {
            let store = store.clone();
            async move { Some(run(&store, run_id).await).filter(|r| r.state == state) }
        })
        .await
    }

    async fn rows(&self, run_id: i64) -> Vec<(u32, String, AttemptState)> {
        let mut v: Vec<_> =
            self.store.list_attempts(run_id).await.unwrap().into_iter().map(|a| (a.attempt, a.node, a.state)).collect();
        v.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        v
    }
}

async fn unicast_round_robin_spreads_evenly(backend: Backend) {
    let c = cluster(backend, &["n1", "n2", "n3"], config("s1")).await;
    c.apply("rr", json!({})).await;
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..9 {
        let r = c.trigger("rr").await;
        c.until(r.id, RunState::Succeeded).await;
        for n in c.exec.nodes_of(r.id) {
            *count.entry(n).or_default() += 1;
        }
    }
    assert_eq!(count, BTreeMap::from([("n1".into(), 3), ("n2".into(), 3), ("n3".into(), 3)]));
    c.sched.shutdown().await;
}

async fn broadcast_reaches_every_node_and_aggregates(backend: Backend) {
    let c = cluster(backend, &["n1", "n2", "n3"], config("s1")).await;
    c.apply("all", json!({"dispatch": {"mode": "broadcast"}})).await;
    let r = c.trigger("all").await;
    let done = c.until(r.id, RunState::Succeeded).await;
    assert_eq!(c.exec.nodes_of(r.id), ["n1", "n2", "n3"]);
    let rows = c.rows(r.id).await;
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|(a, _, s)| *a == 1 && *s == AttemptState::Succeeded), "{rows:?}");
    let out = done.output.unwrap();
    assert_eq!(out["n2"]["node"], "n2", "{out}");
    assert_eq!(out.as_object().unwrap().len(), 3);
    c.sched.shutdown().await;
}

async fn one_failing_node_fails_a_broadcast_unless_any_suffices(backend: Backend) {
    let c = cluster(backend, &["n1", "n2", "n3"], config("s1")).await;
    c.exec.set("n2", Step::Fail);
    c.apply(
        "strict",
        json!({"dispatch": {"mode": "broadcast"}, "retry": {"maxAttempts": 2, "backoff": {"initial": "50ms"}}}),
    )
    .await;
    c.apply("lenient", json!({"dispatch": {"mode": "broadcast", "success": "any"}})).await;
    let r = c.trigger("strict").await;
    let failed = c.until(r.id, RunState::Failed).await;
    let err = failed.error.unwrap();
    assert!(err.contains("1 of 3 nodes failed") && err.contains("n2: n2 says no"), "{err}");
    // The retry went to all three again: 2 attempts × 3 nodes.
    assert_eq!(c.rows(r.id).await.len(), 6);

    let r = c.trigger("lenient").await;
    let ok = c.until(r.id, RunState::Succeeded).await;
    let out = ok.output.unwrap();
    assert_eq!(out.as_object().unwrap().keys().collect::<Vec<_>>(), ["n1", "n3"], "{out}");
    c.sched.shutdown().await;
}

async fn sharded_gives_each_node_its_index(backend: Backend) {
    let c = cluster(backend, &["n1", "n2", "n3", "n4"], config("s1")).await;
    c.apply("shards", json!({"dispatch": {"mode": "sharded"}})).await;
    let r = c.trigger("shards").await;
    c.until(r.id, RunState::Succeeded).await;
    let mut shards: Vec<(u32, u32)> = c.exec.seen_of(r.id).iter().map(|d| (d.shard.index, d.shard.total)).collect();
    shards.sort();
    assert_eq!(shards, [(0, 4), (1, 4), (2, 4), (3, 4)]);
    // Asking for more shards than nodes fails the attempt with a clear reason.
    c.apply("too-many", json!({"dispatch": {"mode": "sharded", "count": 5}})).await;
    let r = c.trigger("too-many").await;
    let failed = c.until(r.id, RunState::Failed).await;
    assert!(failed.error.unwrap().contains("needs 5 nodes"));
    c.sched.shutdown().await;
}

async fn multicast_by_selector_and_count(backend: Backend) {
    let c = cluster(backend, &[], config("s1")).await;
    c.discovery.set(vec![
        node("a1", &[("zone", "a")]),
        node("a2", &[("zone", "a")]),
        node("a3", &[("zone", "a")]),
        node("b1", &[("zone", "b")]),
    ]);
    c.apply("zone-a", json!({"dispatch": {"mode": "multicast", "selector": {"zone": "a"}, "count": 2}})).await;
    let mut seen = BTreeMap::<String, usize>::new();
    for _ in 0..3 {
        let r = c.trigger("zone-a").await;
        c.until(r.id, RunState::Succeeded).await;
        let nodes = c.exec.nodes_of(r.id);
        assert_eq!(nodes.len(), 2, "{nodes:?}");
        for n in nodes {
            assert!(n.starts_with('a'), "{n} is not in zone a");
            *seen.entry(n).or_default() += 1;
        }
    }
    assert_eq!(seen.values().sum::<usize>(), 6);
    assert_eq!(seen.len(), 3, "round robin rotates the pair: {seen:?}");
    c.apply("zone-c", json!({"dispatch": {"mode": "multicast", "selector": {"zone": "c"}}})).await;
    let r = c.trigger("zone-c").await;
    assert!(c.until(r.id, RunState::Failed).await.error.unwrap().contains("selector"));
    c.sched.shutdown().await;
}

async fn asynchronous_nodes_report_for_themselves_only(backend: Backend) {
    let c = cluster(backend, &["n1", "n2"], config("s1")).await;
    c.exec.set("n1", Step::Accept);
    c.exec.set("n2", Step::Accept);
    c.apply("async", json!({"dispatch": {"mode": "broadcast"}})).await;
    let r = c.trigger("async").await;
    c.until(r.id, RunState::Running).await;
    let report = |node: Option<&str>| RunReport {
        attempt: 1,
        status: ResultStatus::Succeeded,
        output: Some(json!({"by": node})),
        error: None,
        logs: vec![],
        node: node.map(str::to_string),
    };
    // Without a node, or from a node the attempt did not go to: rejected, nothing changes.
    match c.sched.report(r.id, report(None)).await {
        Err(CoreError::Conflict(m)) => assert!(m.contains("must name its node"), "{m}"),
        other => panic!("{other:?}"),
    }
    match c.sched.report(r.id, report(Some("intruder"))).await {
        Err(CoreError::Conflict(m)) => assert!(m.contains("not dispatched to node"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(c.rows(r.id).await.iter().all(|(_, _, s)| *s == AttemptState::Running));
    let after_one = c.sched.report(r.id, report(Some("n1"))).await.unwrap();
    assert_eq!(after_one.state, RunState::Running, "n2 has not reported yet");
    assert!(matches!(c.sched.report(r.id, report(Some("n1"))).await, Err(CoreError::Conflict(_))), "twice");
    let done = c.sched.report(r.id, report(Some("n2"))).await.unwrap();
    assert_eq!(done.state, RunState::Succeeded);
    assert_eq!(done.output.unwrap()["n2"]["by"], "n2");
    c.sched.shutdown().await;
}

async fn silent_asynchronous_nodes_time_out_together(backend: Backend) {
    let c = cluster(backend, &["n1", "n2"], config("s1")).await;
    c.exec.set("n1", Step::Accept);
    c.apply("quiet", json!({"dispatch": {"mode": "broadcast"}, "timeout": "500ms"})).await;
    let r = c.trigger("quiet").await;
    c.until(r.id, RunState::Running).await;
    let failed = c.until(r.id, RunState::TimedOut).await;
    assert!(failed.error.unwrap().contains("1 of 2 nodes failed"), "n2 answered; n1 never reported");
    let rows = c.rows(r.id).await;
    assert_eq!(rows[0], (1, "n1".into(), AttemptState::TimedOut));
    assert_eq!(rows[1], (1, "n2".into(), AttemptState::Succeeded));
    c.sched.shutdown().await;
}

async fn switch_node_retries_elsewhere_and_failing_nodes_cool_down(backend: Backend) {
    let cfg = SchedulerConfig { breaker_threshold: 2, breaker_cool_down: secs(60), ..config("s1") };
    let c = cluster(backend, &["n1", "n2", "n3"], cfg).await;
    c.exec.set("n1", Step::Error("connection refused"));
    let retry = json!({"maxAttempts": 3, "backoff": {"kind": "fixed", "initial": "50ms"}, "switchNode": true});
    c.apply("switch", json!({"dispatch": {"loadBalance": "first"}, "retry": retry})).await;
    let r = c.trigger("switch").await;
    c.until(r.id, RunState::Succeeded).await;
    let rows = c.rows(r.id).await;
    assert_eq!(rows, [(1, "n1".into(), AttemptState::Failed), (2, "n2".into(), AttemptState::Succeeded)]);

    // `failover` takes the first healthy node: after two consecutive failures n1 is in cool-down.
    c.apply(
        "fo",
        json!({"dispatch": {"loadBalance": "failover"}, "retry": {"maxAttempts": 2, "backoff": {"initial": "50ms"}}}),
    )
    .await;
    let r = c.trigger("fo").await;
    c.until(r.id, RunState::Succeeded).await;
    assert_eq!(c.rows(r.id).await[0].1, "n1", "second failure of n1 opens its breaker");
    for _ in 0..3 {
        let r = c.trigger("fo").await;
        c.until(r.id, RunState::Succeeded).await;
        assert_eq!(c.exec.nodes_of(r.id), ["n2"], "n1 is cooling down; n2 is the first healthy node");
    }
    c.sched.shutdown().await;
}

async fn draining_and_departed_nodes_get_no_work(backend: Backend) {
    let c = cluster(backend, &["n1", "n2"], config("s1")).await;
    let mut n1 = node("n1", &[]);
    n1.draining = true;
    c.discovery.set(vec![n1, node("n2", &[])]);
    c.apply("d", json!({})).await;
    for _ in 0..4 {
        let r = c.trigger("d").await;
        c.until(r.id, RunState::Succeeded).await;
        assert_eq!(c.exec.nodes_of(r.id), ["n2"]);
    }
    c.discovery.set(vec![]);
    let r = c.trigger("d").await;
    let failed = c.until(r.id, RunState::Failed).await;
    assert!(failed.error.unwrap().contains("no live executor node"));
    c.sched.shutdown().await;
}
