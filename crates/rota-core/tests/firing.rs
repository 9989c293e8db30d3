//! Firing: exactly once per instant, schedule changes without restart, pause/resume, delete, misfire policies.

mod common;

use std::collections::HashSet;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use common::*;
use rota_core::{CoreError, EventKind};
use rota_store::{FireRequest, Precondition, RunState, TriggerKind};
use rota_store_sql::testing::Backend;
use serde_json::json;

backend_tests!(
    every_second_fires_once_per_instant,
    updated_schedule_takes_effect_without_restart,
    pause_stops_fires_and_resume_does_not_replay,
    delete_stops_fires,
    misfire_skip_records_one_skipped_run,
    misfire_run_once_runs_the_latest_missed_instant,
    misfire_run_all_runs_the_most_recent_missed_instants,
    misfire_after_real_downtime,
    apply_rejects_invalid_specs_and_stale_versions,
);

async fn every_second_fires_once_per_instant(backend: Backend) {
    let store = store(backend).await;
    let exec = TestExecutor::succeeding();
    let sched = scheduler(&store, &exec, config("node-1"));
    let events = Events::record(&sched);
    sched.start().await.unwrap();
    let applied_at = Utc::now();
    let rec = sched.apply(task("tick", json!({"schedule": {"every": "1s"}})), Precondition::Any).await.unwrap();
    assert_eq!(rec.shard, sched.shard_of("test", "tick"));
    assert!(rec.next_fire_at.is_some_and(|t| t > applied_at && whole_second(t)));

    let runs = eventually(secs(8), "four succeeded runs", || {
        let store = store.clone();
        async move {
            let runs = runs_of(&store, rec.id).await;
            (runs.iter().filter(|r| r.state == RunState::Succeeded).count() >= 4).then_some(runs)
        }
    })
    .await;
    sched.shutdown().await;
    let runs = runs_of(&store, rec.id).await.into_iter().take(runs.len()).collect::<Vec<_>>();

    // Exactly the schedule's instants: whole seconds, consecutive, none twice, none before the apply.
    let instants: Vec<DateTime<Utc>> = runs.iter().map(|r| r.scheduled_at).collect();
    assert!(instants.iter().all(|t| whole_second(*t)), "instants are whole seconds: {instants:?}");
    assert!(instants[0] > applied_at, "nothing before the apply: {instants:?}");
    for w in instants.windows(2) {
        assert_eq!(w[1] - w[0], TimeDelta::seconds(1), "consecutive instants, no gap, no duplicate: {instants:?}");
    }
    assert!(runs.iter().all(|r| r.trigger == TriggerKind::Schedule));
    // Each run was dispatched exactly once, as attempt 1.
    for r in runs.iter().filter(|r| r.state == RunState::Succeeded) {
        assert_eq!(r.attempts, 1);
        let d = exec.dispatches_of(r.id);
        assert_eq!(d.len(), 1, "one dispatch for run {}", r.id);
        assert_eq!(d[0].scheduled_at, r.scheduled_at);
        assert_eq!(d[0].attempt, 1);
        assert!(d[0].node.is_none(), "http.url target: no node");
        let kinds = events.names_of_run(r.id, "succeeded").await;
        assert_eq!(kinds, vec!["scheduled", "dispatched", "succeeded"], "events of run {}", r.id);
        let attempts = store.list_attempts(r.id).await.unwrap();
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].state, rota_store::AttemptState::Succeeded);
    }
    let dispatched: Vec<i64> = exec.dispatches().iter().map(|d| d.run_id).collect();
    assert_eq!(dispatched.len(), dispatched.iter().collect::<HashSet<_>>().len(), "no duplicate dispatch");
    assert!(events.named("task_applied").len() == 1);
}

async fn updated_schedule_takes_effect_without_restart(backend: Backend) {
    let store = store(backend).await;
    let exec = TestExecutor::succeeding();
    let sched = scheduler(&store, &exec, config("node-1"));
    sched.start().await.unwrap();
    let v1 = sched.apply(task("change", json!({"schedule": {"every": "1h"}})), Precondition::Any).await.unwrap();
    assert_eq!(v1.version, 1);
    let v2 = sched.apply(task("change", json!({"schedule": {"every": "1s"}})), Precondition::Version(1)).await.unwrap();
    assert_eq!(v2.version, 2);
    assert!(v2.next_fire_at.unwrap() - Utc::now() <= TimeDelta::seconds(1));
    let runs = eventually(secs(5), "a run of the new schedule", || {
        let store = store.clone();
        async move {
            let runs = runs_of(&store, v2.id).await;
            runs.iter().any(|r| r.state == RunState::Succeeded).then_some(runs)
        }
    })
    .await;
    assert!(runs.iter().all(|r| r.task_version == 2), "runs carry the new version");

    // And back to a slow schedule: firing stops at once.
    let v3 = sched.apply(task("change", json!({"schedule": {"every": "1h"}})), Precondition::Any).await.unwrap();
    let cutoff = Utc::now();
    tokio::time::sleep(ms(2500)).await;
    let late: Vec<_> = runs_of(&store, v3.id).await.into_iter().filter(|r| r.scheduled_at > cutoff).collect();
    assert!(late.is_empty(), "no fire of the replaced schedule: {late:?}");
    sched.shutdown().await;
}

async fn pause_stops_fires_and_resume_does_not_replay(backend: Backend) {
    let store = store(backend).await;
    let exec = TestExecutor::succeeding();
    let sched = scheduler(&store, &exec, config("node-1"));
    let events = Events::record(&sched);
    sched.start().await.unwrap();
    let rec = sched.apply(task("pausy", json!({"schedule": {"every": "1s"}})), Precondition::Any).await.unwrap();
    eventually(secs(5), "a first run", || {
        let store = store.clone();
        async move { (!runs_of(&store, rec.id).await.is_empty()).then_some(()) }
    })
    .await;

    let paused = sched.pause("test", "pausy").await.unwrap();
    assert!(paused.paused);
    let paused_at = Utc::now();
    let before = runs_of(&store, rec.id).await.len();
    tokio::time::sleep(ms(2500)).await; // absence of fires can only be observed by waiting
    let while_paused: Vec<_> =
        runs_of(&store, rec.id).await.into_iter().filter(|r| r.scheduled_at > paused_at).collect();
    assert!(while_paused.is_empty(), "no fire while paused: {while_paused:?}");
    assert_eq!(runs_of(&store, rec.id).await.len(), before);

    let resumed_at = Utc::now();
    let resumed = sched.resume("test", "pausy").await.unwrap();
    assert!(!resumed.paused);
    assert!(resumed.next_fire_at.is_some_and(|t| t > resumed_at), "next fire recomputed from now");
    let after = eventually(secs(5), "a run after resume", || {
        let store = store.clone();
        async move {
            let after: Vec<_> =
                runs_of(&store, rec.id).await.into_iter().filter(|r| r.scheduled_at > paused_at).collect();
            (!after.is_empty()).then_some(after)
        }
    })
    .await;
    assert!(
        after.iter().all(|r| r.scheduled_at > resumed_at && r.trigger == TriggerKind::Schedule),
        "the paused time is not replayed: {after:?}"
    );
    assert!(events.named("misfired").is_empty(), "resume is not a misfire");
    assert_eq!(events.named("task_paused").len(), 1);
    assert_eq!(events.named("task_resumed").len(), 1);
    sched.shutdown().await;
}

async fn delete_stops_fires(backend: Backend) {
    let store = store(backend).await;
    let exec = TestExecutor::succeeding();
    let sched = scheduler(&store, &exec, config("node-1"));
    sched.start().await.unwrap();
    let rec = sched.apply(task("doomed", json!({"schedule": {"every": "1s"}})), Precondition::Any).await.unwrap();
    eventually(secs(5), "a first run", || {
        let store = store.clone();
        async move { (!runs_of(&store, rec.id).await.is_empty()).then_some(()) }
    })
    .await;
    assert!(sched.delete_task("test", "doomed").await.unwrap());
    let deleted_at = Utc::now();
    tokio::time::sleep(ms(2500)).await;
    let runs = runs_of(&store, rec.id).await;
    assert!(!runs.is_empty(), "runs stay as history");
    assert!(runs.iter().all(|r| r.scheduled_at <= deleted_at), "no fire after delete: {runs:?}");
    assert!(!sched.delete_task("test", "doomed").await.unwrap(), "second delete: nothing to delete");
    sched.shutdown().await;
}

/// Applies `spec` on a scheduler that is not running, moves the task's `next_fire_at` 5 hours into the past (as
/// if every scheduler had been down), starts the scheduler and returns what it did.
async fn misfire_case(
    backend: Backend,
    name: &str,
    schedule: serde_json::Value,
) -> (std::sync::Arc<dyn rota_store::Store>, rota_core::Scheduler, i64, Events, DateTime<Utc>) {
    let store = store(backend).await;
    let exec = TestExecutor::succeeding();
    let sched = scheduler(&store, &exec, config("node-1"));
    let events = Events::record(&sched);
    let rec = sched.apply(task(name, json!({"schedule": schedule})), Precondition::Any).await.unwrap();
    let hour = Utc::now().duration_trunc(TimeDelta::hours(1)).unwrap();
    let past = hour - TimeDelta::hours(5);
    store
        .fire(FireRequest {
            task_id: rec.id,
            expected_next_fire_at: rec.next_fire_at,
            new_next_fire_at: Some(past),
            runs: vec![],
            fence: None,
            now: Utc::now(),
        })
        .await
        .unwrap();
    sched.start().await.unwrap();
    let misfired = eventually(secs(5), "a misfired event", || {
        let events = &events;
        async move { events.named("misfired").into_iter().next() }
    })
    .await;
    assert_eq!(misfired.task, format!("test/{name}"));
    (store, sched, rec.id, events, hour)
}

async fn missed_of(events: &Events) -> (u32, String) {
    let first = eventually(secs(5), "a misfired event", || {
        let e = events.named("misfired").into_iter().next();
        async move { e }
    })
    .await;
    match &first.kind {
        EventKind::Misfired { missed, policy } => (*missed, policy.clone()),
        other => panic!("not a misfire: {other:?}"),
    }
}

async fn misfire_skip_records_one_skipped_run(backend: Backend) {
    let (store, sched, task_id, events, hour) =
        misfire_case(backend, "skippy", json!({"every": "1h", "misfire": "skip"})).await;
    let (missed, policy) = missed_of(&events).await;
    assert_eq!(policy, "skip");
    let runs = eventually(secs(5), "the skipped run", || {
        let store = store.clone();
        async move { Some(runs_of(&store, task_id).await).filter(|r| !r.is_empty()) }
    })
    .await;
    // Missed: hour-5h ..= hour (6 instants), unless the test straddled an hour boundary.
    let latest = runs[0].scheduled_at;
    assert!(latest == hour || latest == hour + TimeDelta::hours(1), "latest missed instant: {latest}");
    assert_eq!(missed, if latest == hour { 6 } else { 7 });
    assert_eq!(runs.len(), 1, "one run records the misfire: {runs:?}");
    assert_eq!(runs[0].state, RunState::Skipped);
    assert_eq!(runs[0].reason.as_deref(), Some(format!("misfire: skipped {missed} fires").as_str()));
    let t = store.get_task_by_id(task_id).await.unwrap().unwrap();
    assert!(t.next_fire_at.is_some_and(|n| n > Utc::now()), "advanced past now");
    eventually(secs(5), "the skipped event", || {
        let n = events.named("skipped").len();
        async move { (n == 1).then_some(()) }
    })
    .await;
    assert!(events.named("dispatched").is_empty(), "a skipped misfire dispatches nothing");
    sched.shutdown().await;
}

async fn misfire_run_once_runs_the_latest_missed_instant(backend: Backend) {
    let (store, sched, task_id, events, hour) =
        misfire_case(backend, "oncey", json!({"every": "1h", "misfire": "run_once"})).await;
    assert_eq!(missed_of(&events).await.1, "run_once");
    let runs = eventually(secs(5), "the catch-up run succeeded", || {
        let store = store.clone();
        async move {
            let runs = runs_of(&store, task_id).await;
            runs.iter().any(|r| r.state == RunState::Succeeded).then_some(runs)
        }
    })
    .await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].trigger, TriggerKind::CatchUp);
    assert!(runs[0].scheduled_at == hour || runs[0].scheduled_at == hour + TimeDelta::hours(1));
    let t = store.get_task_by_id(task_id).await.unwrap().unwrap();
    assert!(t.next_fire_at.is_some_and(|n| n > Utc::now()));
    sched.shutdown().await;
}

async fn misfire_run_all_runs_the_most_recent_missed_instants(backend: Backend) {
    let (store, sched, task_id, events, hour) =
        misfire_case(backend, "ally", json!({"every": "1h", "misfire": "run_all", "catchUpLimit": 3})).await;
    let (missed, policy) = missed_of(&events).await;
    assert_eq!(policy, "run_all");
    let runs = eventually(secs(5), "three catch-up runs succeeded", || {
        let store = store.clone();
        async move {
            let runs = runs_of(&store, task_id).await;
            (runs.iter().filter(|r| r.state == RunState::Succeeded).count() == 3).then_some(runs)
        }
    })
    .await;
    assert_eq!(runs.len(), 3, "bounded by catchUpLimit: {runs:?}");
    let latest = runs[2].scheduled_at;
    assert!(latest == hour || latest == hour + TimeDelta::hours(1));
    assert_eq!(missed, if latest == hour { 6 } else { 7 }, "the event counts every missed fire");
    let want: Vec<_> = (0..3).rev().map(|k| latest - TimeDelta::hours(k)).collect();
    assert_eq!(runs.iter().map(|r| r.scheduled_at).collect::<Vec<_>>(), want, "the most recent, oldest first");
    assert!(runs.iter().all(|r| r.trigger == TriggerKind::CatchUp));
    sched.shutdown().await;
}

/// A real outage: the scheduler is stopped for longer than the misfire threshold, a new one catches up.
async fn misfire_after_real_downtime(backend: Backend) {
    let store = store(backend).await;
    let exec = TestExecutor::succeeding();
    let mut cfg = config("node-1");
    cfg.misfire_threshold = ms(500);
    let first = scheduler(&store, &exec, cfg.clone());
    first.start().await.unwrap();
    let rec = first
        .apply(task("outage", json!({"schedule": {"every": "1s", "misfire": "run_once"}})), Precondition::Any)
        .await
        .unwrap();
    eventually(secs(5), "a first run", || {
        let store = store.clone();
        async move { (!runs_of(&store, rec.id).await.is_empty()).then_some(()) }
    })
    .await;
    first.shutdown().await;
    let stopped_at = Utc::now();
    tokio::time::sleep(ms(2500)).await; // the outage

    let second = scheduler(&store, &exec, cfg);
    let events = Events::record(&second);
    second.start().await.unwrap();
    let catch_up = eventually(secs(5), "a catch-up run", || {
        let store = store.clone();
        async move { runs_of(&store, rec.id).await.into_iter().find(|r| r.trigger == TriggerKind::CatchUp) }
    })
    .await;
    assert!(catch_up.scheduled_at > stopped_at);
    let (missed, policy) = missed_of(&events).await;
    assert_eq!(policy, "run_once");
    assert!(missed >= 2, "at least two fires were missed during 2.5 s: {missed}");
    let outage: Vec<_> = runs_of(&store, rec.id)
        .await
        .into_iter()
        .filter(|r| r.scheduled_at > stopped_at && r.scheduled_at <= catch_up.scheduled_at)
        .collect();
    assert_eq!(outage.len(), 1, "one run for the whole outage: {outage:?}");
    second.shutdown().await;
}

async fn apply_rejects_invalid_specs_and_stale_versions(backend: Backend) {
    let store = store(backend).await;
    let exec = TestExecutor::succeeding();
    let sched = scheduler(&store, &exec, config("node-1"));
    let mut bad = task("bad", json!({"schedule": {"every": "1s"}}));
    bad.spec.retry.max_attempts = 0;
    match sched.apply(bad, Precondition::Any).await {
        Err(CoreError::InvalidSpec(e)) => assert!(e.has_path("spec.retry.maxAttempts"), "{e}"),
        other => panic!("expected InvalidSpec, got {other:?}"),
    }
    assert!(store.get_task("test", "bad").await.unwrap().is_none(), "nothing stored");
    sched.apply(task("v", json!({"schedule": {"manual": true}})), Precondition::MustNotExist).await.unwrap();
    assert!(matches!(
        sched.apply(task("v", json!({"schedule": {"manual": true}})), Precondition::MustNotExist).await,
        Err(CoreError::Conflict(_))
    ));
    assert!(matches!(
        sched.apply(task("v", json!({"schedule": {"manual": true}})), Precondition::Version(7)).await,
        Err(CoreError::Conflict(_))
    ));
    let manual = store.get_task("test", "v").await.unwrap().unwrap();
    assert_eq!(manual.next_fire_at, None, "manual tasks never fire by time");
    assert_eq!(manual.spec["spec"]["schedule"]["manual"], json!(true), "spec stored as the task document");
}
