//! Concurrency policies, durability across restarts, crash recovery, graceful shutdown.

mod common;

use std::sync::Arc;

use chrono::Utc;
use common::*;
use rota_store::{
    AttemptState, InsertRun, NewAttempt, NewRun, NodeKind, NodeRegistration, Precondition, RunPatch, RunRecord,
    RunState, Store, Transition, TriggerKind, truncate_millis,
};
use rota_store_sql::testing::Backend;
use serde_json::{Map, json};

backend_tests!(
    concurrency_forbid_skips_while_a_run_is_active,
    concurrency_replace_cancels_the_active_run,
    pending_retry_survives_a_restart,
    run_stuck_in_dispatching_is_resolved_on_start,
    shutdown_waits_for_in_flight_dispatches,
    shutdown_after_grace_records_the_interrupted_attempt,
    leases_are_held_and_released,
    dispatch_of_a_dead_node_is_taken_over,
    dispatch_of_a_live_node_is_left_alone,
    nodes_split_the_shards_and_take_over_on_leave,
);

async fn until_state(store: &Arc<dyn Store>, run_id: i64, state: RunState) -> RunRecord {
    eventually(secs(10), &format!("run {run_id} {state}"), || {
        let store = store.clone();
        async move { Some(run(&store, run_id).await).filter(|r| r.state == state) }
    })
    .await
}

async fn concurrency_forbid_skips_while_a_run_is_active(backend: Backend) {
    let store = store(backend).await;
    let exec = TestExecutor::new(vec![Step::Hang]);
    let sched = scheduler(&store, &exec, config("node-1"));
    sched.start().await.unwrap();
    let spec = json!({"schedule": {"every": "1s", "concurrency": "forbid"}, "timeout": "30s"});
    let rec = sched.apply(task("solo", spec), Precondition::Any).await.unwrap();
    let runs = eventually(secs(6), "a skipped second fire", || {
        let store = store.clone();
        async move {
            let runs = runs_of(&store, rec.id).await;
            runs.iter().any(|r| r.state == RunState::Skipped).then_some(runs)
        }
    })
    .await;
    let first = &runs[0];
    assert_eq!(first.state, RunState::Dispatching, "the first run hangs: {runs:?}");
    let skipped: Vec<_> = runs.iter().filter(|r| r.state == RunState::Skipped).collect();
    assert_eq!(
        skipped[0].reason.as_deref(),
        Some(format!("concurrency: forbid (run {} still active)", first.id).as_str())
    );
    assert_eq!(exec.dispatches().len(), 1, "only the first run was dispatched");
    sched.pause("test", "solo").await.unwrap();
    sched.cancel_run(first.id, "test over").await.unwrap();
    sched.shutdown().await;
}

async fn concurrency_replace_cancels_the_active_run(backend: Backend) {
    let store = store(backend).await;
    let exec = TestExecutor::new(vec![Step::Hang]);
    let sched = scheduler(&store, &exec, config("node-1"));
    sched.start().await.unwrap();
    let spec = json!({"schedule": {"every": "1s", "concurrency": "replace"}, "timeout": "30s"});
    let rec = sched.apply(task("newest", spec), Precondition::Any).await.unwrap();
    let runs = eventually(secs(6), "a replaced first run", || {
        let store = store.clone();
        async move {
            let runs = runs_of(&store, rec.id).await;
            (runs.len() >= 2 && runs[0].state == RunState::Cancelled).then_some(runs)
        }
    })
    .await;
    sched.pause("test", "newest").await.unwrap();
    let (first, second) = (&runs[0], &runs[1]);
    assert_eq!(
        first.reason.as_deref(),
        Some(format!("concurrency: replace (superseded by run {})", second.id).as_str())
    );
    // The run is cancelled first, then its attempt finished and the executor told.
    eventually(secs(5), "the replaced attempt is cancelled and the executor told", || {
        let (store, told) = (store.clone(), exec.cancels().contains(&(first.id, 1)));
        let id = first.id;
        async move { (told && store.list_attempts(id).await.unwrap()[0].state == AttemptState::Cancelled).then_some(()) }
    })
    .await;
    eventually(secs(5), "the new run was dispatched", || {
        let n = exec.dispatches_of(second.id).len();
        async move { (n == 1).then_some(()) }
    })
    .await;
    for r in runs_of(&store, rec.id).await.iter().filter(|r| !r.state.is_terminal()) {
        let _ = sched.cancel_run(r.id, "test over").await;
    }
    sched.shutdown().await;
}

async fn pending_retry_survives_a_restart(backend: Backend) {
    let store = store(backend).await;
    let failing = TestExecutor::new(vec![Step::Fail]);
    let first = scheduler(&store, &failing, config("node-1"));
    let events = Events::record(&first);
    first.start().await.unwrap();
    let spec = json!({"schedule": {"manual": true}, "retry": {"maxAttempts": 2, "backoff": {"kind": "fixed", "initial": "3s"}}});
    first.apply(task("durable", spec), Precondition::Any).await.unwrap();
    let r = first.trigger("test", "durable", Map::new()).await.unwrap();
    eventually(secs(5), "the retry is scheduled", || {
        let n = events.named("retried").len();
        async move { (n == 1).then_some(()) }
    })
    .await;
    first.shutdown().await;
    let pending = run(&store, r.id).await;
    assert_eq!(pending.state, RunState::Scheduled);
    assert_eq!(pending.attempts, 1);
    assert!(pending.next_attempt_at.is_some_and(|t| t > Utc::now()), "retry is in the future");

    let succeeding = TestExecutor::succeeding();
    let second = scheduler(&store, &succeeding, config("node-2"));
    second.start().await.unwrap();
    let done = until_state(&store, r.id, RunState::Succeeded).await;
    assert_eq!(done.attempts, 2);
    let d = succeeding.dispatches_of(r.id);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].attempt, 2);
    assert!(d[0].scheduled_at == r.scheduled_at);
    assert_eq!(done.owner.as_deref(), Some("node-2"));
    assert_eq!(failing.dispatches_of(r.id).len(), 1);
    second.shutdown().await;
}

/// Puts a run of `name` in `dispatching` owned by `node`, with a running attempt, as a crashed node leaves it.
async fn crashed_dispatch(store: &Arc<dyn Store>, sched: &rota_core::Scheduler, name: &str, node: &str) -> i64 {
    let rec = store.get_task("test", name).await.unwrap().unwrap();
    let now = truncate_millis(Utc::now());
    let new = NewRun {
        task_id: rec.id,
        namespace: "test".into(),
        name: name.into(),
        task_version: rec.version,
        shard: sched.shard_of("test", name),
        scheduled_at: now,
        trigger: TriggerKind::Schedule,
        state: RunState::Scheduled,
        next_attempt_at: None,
        params: json!({}),
        reason: None,
    };
    let InsertRun::Inserted(r) = store.insert_run(new, None, now).await.unwrap() else { panic!("duplicate") };
    store
        .transition_run(Transition {
            run_id: r.id,
            from: vec![RunState::Scheduled],
            to: RunState::Dispatching,
            patch: RunPatch {
                attempts: Some(1),
                owner: Some(Some(node.into())),
                started_at: Some(now),
                next_attempt_at: Some(Some(now + chrono::TimeDelta::hours(1))),
                ..Default::default()
            },
            fence: None,
            now,
        })
        .await
        .unwrap();
    store
        .insert_attempt(NewAttempt { run_id: r.id, attempt: 1, node: String::new(), started_at: now, deadline: None })
        .await
        .unwrap();
    r.id
}

async fn run_stuck_in_dispatching_is_resolved_on_start(backend: Backend) {
    let store = store(backend).await;
    let exec = TestExecutor::succeeding();
    let sched = scheduler(&store, &exec, config("node-1"));
    let retrying = json!({"schedule": {"manual": true}, "retry": {"maxAttempts": 2, "backoff": {"initial": "100ms"}}});
    sched.apply(task("crashy", retrying), Precondition::Any).await.unwrap();
    sched.apply(task("crashy-once", json!({"schedule": {"manual": true}})), Precondition::Any).await.unwrap();
    let retried = crashed_dispatch(&store, &sched, "crashy", "node-1").await;
    let failed = crashed_dispatch(&store, &sched, "crashy-once", "node-1").await;

    sched.start().await.unwrap();
    let done = until_state(&store, retried, RunState::Succeeded).await;
    assert_eq!(done.attempts, 2);
    let attempts = store.list_attempts(retried).await.unwrap();
    assert_eq!(attempts[0].state, AttemptState::Failed);
    assert_eq!(attempts[0].error.as_deref(), Some("scheduler restarted during dispatch"));
    let f = until_state(&store, failed, RunState::Failed).await;
    assert_eq!(f.error.as_deref(), Some("scheduler restarted during dispatch"));
    assert!(exec.dispatches_of(failed).is_empty());
    sched.shutdown().await;
}

async fn shutdown_waits_for_in_flight_dispatches(backend: Backend) {
    let store = store(backend).await;
    let exec = TestExecutor::new(vec![Step::Sleep(ms(800))]);
    let sched = scheduler(&store, &exec, config("node-1"));
    sched.start().await.unwrap();
    sched.apply(task("busy", json!({"schedule": {"manual": true}})), Precondition::Any).await.unwrap();
    let r = sched.trigger("test", "busy", Map::new()).await.unwrap();
    eventually(secs(5), "the dispatch is in flight", || {
        let n = exec.dispatches_of(r.id).len();
        async move { (n == 1).then_some(()) }
    })
    .await;
    sched.shutdown().await;
    assert_eq!(run(&store, r.id).await.state, RunState::Succeeded, "shutdown waited for the dispatch");
    assert_eq!(sched.in_flight(), 0);
    assert!(sched.held_shards().is_empty(), "leases released");
    assert!(matches!(sched.start().await, Err(rota_core::CoreError::ShuttingDown)));
}

async fn shutdown_after_grace_records_the_interrupted_attempt(backend: Backend) {
    let store = store(backend).await;
    let exec = TestExecutor::new(vec![Step::HangForever]);
    let mut cfg = config("node-1");
    cfg.shutdown_grace = ms(300);
    let sched = scheduler(&store, &exec, cfg);
    sched.start().await.unwrap();
    let spec = json!({"schedule": {"manual": true}, "retry": {"maxAttempts": 2, "backoff": {"initial": "1m"}}});
    sched.apply(task("endless", spec), Precondition::Any).await.unwrap();
    let r = sched.trigger("test", "endless", Map::new()).await.unwrap();
    eventually(secs(5), "the dispatch is in flight", || {
        let n = exec.dispatches_of(r.id).len();
        async move { (n == 1).then_some(()) }
    })
    .await;
    let started = std::time::Instant::now();
    sched.shutdown().await;
    assert!(started.elapsed() < secs(10), "shutdown is bounded");
    let after = run(&store, r.id).await;
    assert_eq!(after.state, RunState::Scheduled, "retried later, not left dispatching");
    let attempts = store.list_attempts(r.id).await.unwrap();
    assert_eq!(attempts[0].state, AttemptState::Failed);
    assert_eq!(attempts[0].error.as_deref(), Some("scheduler shut down before the attempt finished"));
}

async fn leases_are_held_and_released(backend: Backend) {
    let store = store(backend).await;
    let exec = TestExecutor::succeeding();
    let sched = scheduler(&store, &exec, config("node-1"));
    sched.start().await.unwrap();
    assert_eq!(sched.held_shards(), vec![0, 1, 2, 3]);
    let leases = store.list_leases().await.unwrap();
    assert_eq!(leases.len(), 4);
    assert!(leases.iter().all(|l| l.owner == "node-1" && l.expires_at > Utc::now()));
    let other = scheduler(&store, &exec, config("node-2"));
    if store.supports_cluster() {
        // Another node cannot take them while they are held (it gets its share once node-1 lets go).
        other.start().await.unwrap();
        assert!(other.held_shards().is_empty());
        other.shutdown().await;
    } else {
        let err = other.start().await.expect_err("a second node on a single-node store");
        assert!(err.to_string().contains("supports a single scheduler node"), "{err}");
    }
    sched.shutdown().await;
    // Released: a new node takes them at once, at a higher epoch.
    let third = scheduler(&store, &exec, config("node-3"));
    third.start().await.unwrap();
    assert_eq!(third.held_shards(), vec![0, 1, 2, 3]);
    let now = store.list_leases().await.unwrap();
    for (old, new) in leases.iter().zip(now.iter()) {
        assert_eq!(new.owner, "node-3");
        assert!(new.epoch > old.epoch);
    }
    third.shutdown().await;
}

/// Registers scheduler node `id` in the registry as of `at`, for `ttl`.
async fn register_scheduler(store: &Arc<dyn Store>, id: &str, ttl: std::time::Duration, at: chrono::DateTime<Utc>) {
    let reg = NodeRegistration {
        id: id.into(),
        kind: NodeKind::Scheduler,
        service: rota_core::membership::CLUSTER_SERVICE.into(),
        address: String::new(),
        protocol: "http".into(),
        labels: Default::default(),
        weight: 1,
        capacity: 1,
    };
    store.register_node(reg, ttl, at).await.unwrap();
}

/// Registers a scheduler node that then "dies": its registration expired long ago.
async fn dead_node(store: &Arc<dyn Store>, id: &str) {
    register_scheduler(store, id, ms(1), Utc::now() - chrono::TimeDelta::seconds(60)).await;
}

async fn dispatch_of_a_dead_node_is_taken_over(backend: Backend) {
    let store = store(backend).await;
    let exec = TestExecutor::succeeding();
    let sched = scheduler(&store, &exec, config("node-1"));
    let retrying = json!({"schedule": {"manual": true}, "retry": {"maxAttempts": 2, "backoff": {"initial": "100ms"}}});
    sched.apply(task("orphan", retrying), Precondition::Any).await.unwrap();
    sched.apply(task("orphan-once", json!({"schedule": {"manual": true}})), Precondition::Any).await.unwrap();
    dead_node(&store, "node-gone").await;
    let retried = crashed_dispatch(&store, &sched, "orphan", "node-gone").await;
    let failed = crashed_dispatch(&store, &sched, "orphan-once", "node-gone").await;

    sched.start().await.unwrap();
    let done = until_state(&store, retried, RunState::Succeeded).await;
    assert_eq!(done.attempts, 2, "re-dispatched by the retry policy");
    let attempts = store.list_attempts(retried).await.unwrap();
    let why = "scheduler node node-gone stopped during the dispatch (its shard was taken over)";
    assert_eq!(attempts[0].error.as_deref(), Some(why));
    let f = until_state(&store, failed, RunState::Failed).await;
    assert_eq!(f.error.as_deref(), Some(why), "no attempts left: marked failed, not dropped");
    assert!(exec.dispatches_of(failed).is_empty());
    sched.shutdown().await;
}

async fn dispatch_of_a_live_node_is_left_alone(backend: Backend) {
    let store = store(backend).await;
    if !store.supports_cluster() {
        return; // one node per store: there is no other live node
    }
    let exec = TestExecutor::succeeding();
    let sched = scheduler(&store, &exec, config("node-1"));
    sched.apply(task("elsewhere", json!({"schedule": {"manual": true}})), Precondition::Any).await.unwrap();
    // node-2 is registered and alive (an hour-long registration) but holds no shard: it lost the run's shard in
    // a rebalance while its dispatch is still in progress, and its outcome is still coming.
    register_scheduler(&store, "node-2", secs(3600), Utc::now()).await;
    let id = crashed_dispatch(&store, &sched, "elsewhere", "node-2").await;
    sched.start().await.unwrap();
    // node-1 holds the shard (node-2 never acquires any); let it tick and scan a few times.
    assert!(sched.held_shards().contains(&sched.shard_of("test", "elsewhere")));
    tokio::time::sleep(ms(1500)).await;
    assert_eq!(run(&store, id).await.state, RunState::Dispatching, "a live node's dispatch is not taken over");
    // node-2 dies (its registration is gone): the holder of the shard resolves the dispatch.
    store.deregister_node("node-2").await.unwrap();
    let f = until_state(&store, id, RunState::Failed).await;
    assert!(f.error.as_deref().unwrap_or_default().contains("node-2 stopped during the dispatch"), "{f:?}");
    sched.shutdown().await;
}

async fn nodes_split_the_shards_and_take_over_on_leave(backend: Backend) {
    let store = store(backend).await;
    if !store.supports_cluster() {
        return;
    }
    let exec = TestExecutor::succeeding();
    let cfg = |id: &str| {
        let mut c = config(id);
        c.shard_count = 8;
        c.lease_ttl = ms(900);
        c
    };
    let a = scheduler(&store, &exec, cfg("node-a"));
    let b = scheduler(&store, &exec, cfg("node-b"));
    a.start().await.unwrap();
    assert_eq!(a.held_shards().len(), 8, "a lone node holds every shard");
    b.start().await.unwrap();
    eventually(secs(10), "the shards split 4/4", || {
        let (ha, hb) = (a.held_shards(), b.held_shards());
        async move { (ha.len() == 4 && hb.len() == 4 && ha.iter().all(|s| !hb.contains(s))).then_some(()) }
    })
    .await;
    assert_eq!(a.live_nodes(), ["node-a", "node-b"]);
    // Every shard is held by exactly one node in the store too.
    let leases = store.list_leases().await.unwrap();
    assert_eq!(leases.iter().filter(|l| l.owner == "node-a").count(), 4);
    assert_eq!(leases.iter().filter(|l| l.owner == "node-b").count(), 4);
    b.shutdown().await;
    eventually(secs(10), "node-a takes node-b's shards", || {
        let n = a.held_shards().len();
        async move { (n == 8).then_some(()) }
    })
    .await;
    assert_eq!(a.live_nodes(), ["node-a"]);
    a.shutdown().await;
}
