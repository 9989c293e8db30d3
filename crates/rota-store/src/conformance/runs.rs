//! Runs: insert/duplicate, timestamps, transitions and the state machine, listing and queues, pruning.

use std::collections::BTreeSet;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;

use super::support::*;
use crate::{
    InsertRun, NewAttempt, PageRequest, RunFilter, RunPatch, RunRecord, RunState, Store, StoreError, Transition,
    TriggerKind, truncate_millis,
};

/// `insert_run` inserts once; the same (task, scheduled_at) again returns the existing record as `Duplicate`.
pub async fn run_insert_and_duplicate<S: Store>(store: S) {
    let task = create_task(&store, "ns", "t", 3, None).await;
    let mut nr = new_run(&task, ts(0));
    nr.trigger = TriggerKind::Manual;
    nr.params = json!({"who": "alice", "n": [1, 2, 3], "ü": "✓"});
    nr.reason = Some("requested via API".into());
    nr.next_attempt_at = Some(ts(5));
    let first = match store.insert_run(nr.clone(), None, ts(1)).await.must("insert_run") {
        InsertRun::Inserted(r) => r,
        other => panic!("first insert_run: expected Inserted, got {other:?}"),
    };
    assert_eq!(first.task_id, task.id);
    assert_eq!((first.namespace.as_str(), first.name.as_str()), ("ns", "t"));
    assert_eq!(first.task_version, 1);
    assert_eq!(first.shard, 3);
    assert_eq!(first.scheduled_at, ts(0));
    assert_eq!(first.trigger, TriggerKind::Manual);
    assert_eq!(first.state, RunState::Scheduled);
    assert_eq!(first.attempts, 0);
    assert_eq!(first.next_attempt_at, Some(ts(5)));
    assert_eq!(first.params, nr.params, "params round trip");
    assert_eq!(first.output, None);
    assert_eq!(first.error, None);
    assert_eq!(first.reason.as_deref(), Some("requested via API"));
    assert_eq!(first.owner, None);
    assert_eq!(first.created_at, ts(1), "created_at is insert_run's now");
    assert_eq!(first.updated_at, ts(1), "updated_at is insert_run's now");
    assert_eq!((first.started_at, first.finished_at), (None, None));
    assert_eq!(
        store.get_run(first.id).await.must("get_run"),
        Some(first.clone()),
        "get_run equals the inserted record"
    );

    let mut again = nr.clone();
    again.params = json!({"different": true});
    again.trigger = TriggerKind::Schedule;
    again.reason = None;
    match store.insert_run(again, None, ts(2)).await.must("insert_run duplicate") {
        InsertRun::Duplicate(r) => assert_eq!(r, first, "Duplicate carries the existing record, unchanged"),
        other => panic!("second insert_run of the same (task, scheduled_at): expected Duplicate, got {other:?}"),
    }
    assert_eq!(store.get_run(first.id).await.must("get_run"), Some(first.clone()), "duplicate insert changes nothing");

    // One millisecond later is a different run; so is the same instant for another task.
    let next_ms = insert_run_ok(&store, new_run(&task, tms(1))).await;
    assert_ne!(next_ms.id, first.id, "scheduled_at 1 ms later is a distinct run");
    let other_task = create_task(&store, "ns", "other", 3, None).await;
    let other = insert_run_ok(&store, new_run(&other_task, ts(0))).await;
    assert_ne!(other.id, first.id);

    // A skipped run can be inserted directly.
    let mut skipped = new_run(&task, ts(60));
    skipped.state = RunState::Skipped;
    skipped.reason = Some("concurrency policy forbid".into());
    let s = insert_run_ok(&store, skipped).await;
    assert_eq!(s.state, RunState::Skipped);
    assert_eq!(s.reason.as_deref(), Some("concurrency policy forbid"));

    assert_eq!(store.get_run(s.id + 1_000_000).await.must("get_run unknown"), None, "unknown run id");
}

/// Every timestamp of a run round-trips with millisecond precision (sub-millisecond parts may be truncated).
pub async fn run_timestamps_millisecond_precision<S: Store>(store: S) {
    let task = create_task(&store, "ns", "t", 0, None).await;
    let instants: [DateTime<Utc>; 4] = [
        chrono::TimeZone::timestamp_millis_opt(&Utc, 1_790_000_000_123).single().expect("valid"),
        chrono::TimeZone::timestamp_millis_opt(&Utc, 1_790_000_000_999).single().expect("valid"),
        chrono::TimeZone::timestamp_millis_opt(&Utc, 4_102_444_800_001).single().expect("valid"), // 2100-01-01
        chrono::TimeZone::timestamp_millis_opt(&Utc, 946_684_800_007).single().expect("valid"),   // 2000-01-01
    ];
    for (i, &at) in instants.iter().enumerate() {
        let mut nr = new_run(&task, at);
        nr.next_attempt_at = Some(at + TimeDelta::milliseconds(1));
        let r = match store.insert_run(nr, None, at + TimeDelta::milliseconds(2)).await.must("insert_run") {
            InsertRun::Inserted(r) => r,
            other => panic!("insert_run #{i}: expected Inserted, got {other:?}"),
        };
        let got = store.get_run(r.id).await.must("get_run").expect("exists");
        assert_eq!(got.scheduled_at, at, "scheduled_at #{i} keeps its milliseconds");
        assert_eq!(got.next_attempt_at, Some(at + TimeDelta::milliseconds(1)), "next_attempt_at #{i}");
        assert_eq!(got.created_at, at + TimeDelta::milliseconds(2), "created_at #{i}");
        let mut t = transition(r.id, &[RunState::Scheduled], RunState::Dispatching, at + TimeDelta::milliseconds(3));
        t.patch.started_at = Some(at + TimeDelta::milliseconds(4));
        store.transition_run(t).await.must("transition_run");
        let mut t = transition(r.id, &[RunState::Dispatching], RunState::Succeeded, at + TimeDelta::milliseconds(5));
        t.patch.finished_at = Some(at + TimeDelta::milliseconds(6));
        store.transition_run(t).await.must("transition_run");
        let got = store.get_run(r.id).await.must("get_run").expect("exists");
        assert_eq!(got.updated_at, at + TimeDelta::milliseconds(5), "updated_at #{i}");
        assert_eq!(got.started_at, Some(at + TimeDelta::milliseconds(4)), "started_at #{i}");
        assert_eq!(got.finished_at, Some(at + TimeDelta::milliseconds(6)), "finished_at #{i}");
    }

    // Sub-millisecond input: kept or truncated to the millisecond, nothing else.
    let fine = ts(5) + TimeDelta::nanoseconds(456_789);
    let r = match store.insert_run(new_run(&task, fine), None, fine).await.must("insert_run sub-ms") {
        InsertRun::Inserted(r) => r,
        other => panic!("insert_run sub-ms: expected Inserted, got {other:?}"),
    };
    let got = store.get_run(r.id).await.must("get_run").expect("exists");
    assert!(
        got.scheduled_at == fine || got.scheduled_at == truncate_millis(fine),
        "a sub-millisecond scheduled_at is kept or truncated to milliseconds, got {}",
        got.scheduled_at
    );
    assert!(got.created_at == fine || got.created_at == truncate_millis(fine), "sub-ms created_at: {}", got.created_at);
}

/// The happy path scheduled → dispatching → running → succeeded, with every patch field.
pub async fn run_transition_lifecycle<S: Store>(store: S) {
    let task = create_task(&store, "ns", "t", 1, None).await;
    let mut nr = new_run(&task, ts(0));
    nr.next_attempt_at = Some(ts(1));
    let run = insert_run_ok(&store, nr).await;

    let d = store
        .transition_run(Transition {
            run_id: run.id,
            from: vec![RunState::Scheduled],
            to: RunState::Dispatching,
            patch: RunPatch {
                next_attempt_at: Some(None),
                attempts: Some(1),
                owner: Some(Some("scheduler-1".into())),
                ..Default::default()
            },
            fence: None,
            now: ts(2),
        })
        .await
        .must("scheduled -> dispatching");
    assert_eq!(d.state, RunState::Dispatching);
    assert_eq!(d.next_attempt_at, None, "Some(None) clears next_attempt_at");
    assert_eq!(d.attempts, 1, "attempts set");
    assert_eq!(d.owner.as_deref(), Some("scheduler-1"), "owner set");
    assert_eq!(d.updated_at, ts(2), "updated_at is the transition's now");
    assert_eq!(d.created_at, run.created_at, "created_at unchanged");
    assert_eq!(d.params, run.params, "params unchanged");
    assert_eq!(store.get_run(run.id).await.must("get_run"), Some(d.clone()), "returned record equals get_run");

    let r = store
        .transition_run(Transition {
            run_id: run.id,
            from: vec![RunState::Dispatching],
            to: RunState::Running,
            patch: RunPatch { started_at: Some(ts(3)), ..Default::default() },
            fence: None,
            now: ts(3),
        })
        .await
        .must("dispatching -> running");
    assert_eq!(r.state, RunState::Running);
    assert_eq!(r.started_at, Some(ts(3)), "started_at set");
    assert_eq!(r.owner.as_deref(), Some("scheduler-1"), "owner unchanged when the patch leaves it");
    assert_eq!(r.attempts, 1, "attempts unchanged when the patch leaves it");

    let output = json!({"exit_code": 0, "stdout_tail": "done ✓", "metrics": {"rows": 1_234_567_890_123_i64}});
    let s = store
        .transition_run(Transition {
            run_id: run.id,
            from: vec![RunState::Running, RunState::Dispatching],
            to: RunState::Succeeded,
            patch: RunPatch {
                output: Some(output.clone()),
                finished_at: Some(ts(9)),
                owner: Some(None),
                reason: Some("completed".into()),
                ..Default::default()
            },
            fence: None,
            now: ts(9),
        })
        .await
        .must("running -> succeeded");
    assert_eq!(s.state, RunState::Succeeded);
    assert_eq!(s.output, Some(output), "output JSON round trip");
    assert_eq!(s.finished_at, Some(ts(9)), "finished_at set");
    assert_eq!(s.owner, None, "Some(None) clears owner");
    assert_eq!(s.reason.as_deref(), Some("completed"), "reason set");
    assert_eq!(s.started_at, Some(ts(3)), "started_at unchanged");
    assert_eq!(s.error, None);
    assert_eq!(store.get_run(run.id).await.must("get_run"), Some(s));
}

/// A retry: running → scheduled with a later next_attempt_at and an error, then dispatched again and failed.
pub async fn run_transition_retry<S: Store>(store: S) {
    let task = create_task(&store, "ns", "t", 4, None).await;
    let run = run_at(&store, &task, ts(0)).await;
    let run = drive_to(&store, run, RunState::Running, ts(1)).await;
    let mut t = transition(run.id, &[RunState::Running], RunState::Scheduled, ts(2));
    t.patch = RunPatch {
        next_attempt_at: Some(Some(ts(30))),
        error: Some("connection refused".into()),
        attempts: Some(1),
        owner: Some(None),
        ..Default::default()
    };
    let retry = store.transition_run(t).await.must("running -> scheduled (retry)");
    assert_eq!(retry.state, RunState::Scheduled);
    assert_eq!(retry.next_attempt_at, Some(ts(30)), "next_attempt_at set for the retry");
    assert_eq!(retry.error.as_deref(), Some("connection refused"), "error recorded");
    assert_eq!(retry.owner, None);
    assert!(store.pending_runs(4, ts(29), 10).await.must("pending before").is_empty(), "not pending before backoff");
    let pending = store.pending_runs(4, ts(30), 10).await.must("pending at backoff");
    assert_eq!(pending, vec![retry.clone()], "pending once next_attempt_at is reached");

    let mut t = transition(run.id, &[RunState::Scheduled], RunState::Dispatching, ts(31));
    t.patch = RunPatch { attempts: Some(2), next_attempt_at: Some(None), ..Default::default() };
    let d = store.transition_run(t).await.must("scheduled -> dispatching (attempt 2)");
    assert_eq!(d.attempts, 2);
    assert_eq!(d.error.as_deref(), Some("connection refused"), "error unchanged when the patch leaves it");
    let mut t = transition(run.id, &[RunState::Dispatching], RunState::Failed, ts(32));
    t.patch = RunPatch { error: Some("exit code 3".into()), finished_at: Some(ts(32)), ..Default::default() };
    let f = store.transition_run(t).await.must("dispatching -> failed");
    assert_eq!(f.state, RunState::Failed);
    assert_eq!(f.error.as_deref(), Some("exit code 3"), "error replaced");
    assert!(store.pending_runs(4, ts(1000), 10).await.must("pending after failure").is_empty());
}

/// Every (from, to) pair: allowed transitions succeed, forbidden ones are `InvalidTransition` and change nothing.
pub async fn run_transition_state_machine<S: Store>(store: S) {
    let task = create_task(&store, "ns", "t", 0, None).await;
    let mut n = 0;
    for from in RunState::ALL {
        for to in RunState::ALL {
            n += 1;
            let run = run_at(&store, &task, ts(n)).await;
            let run = drive_to(&store, run, from, ts(n)).await;
            let res = store.transition_run(transition(run.id, &[from], to, ts(n) + TimeDelta::milliseconds(1))).await;
            if from.can_transition_to(to) {
                let r = res.must(format_args!("allowed transition {from} -> {to}"));
                assert_eq!(r.state, to, "allowed transition {from} -> {to}");
            } else {
                match res {
                    Err(StoreError::InvalidTransition { run_id, from: f, to: t }) => {
                        assert_eq!((run_id, f, t), (run.id, from, to), "InvalidTransition fields for {from} -> {to}");
                    }
                    other => panic!("forbidden transition {from} -> {to}: expected InvalidTransition, got {other:?}"),
                }
                let after = store.get_run(run.id).await.must("get_run").expect("exists");
                assert_eq!(after, run, "a forbidden transition {from} -> {to} changes nothing");
            }
        }
    }
}

/// `Conflict` when the current state is not in `from` (even though `to` is reachable from it).
pub async fn run_transition_conflict<S: Store>(store: S) {
    let task = create_task(&store, "ns", "t", 0, None).await;
    let run = run_at(&store, &task, ts(0)).await;
    let mut t = transition(run.id, &[RunState::Running, RunState::Dispatching], RunState::Cancelled, ts(1));
    t.patch.error = Some("should not be written".into());
    assert_err!(
        store.transition_run(t).await,
        StoreError::Conflict { .. },
        "transition from [running, dispatching] while the run is scheduled"
    );
    assert_eq!(
        store.get_run(run.id).await.must("get_run"),
        Some(run.clone()),
        "a conflicting transition writes nothing"
    );
    let d = move_run(&store, &run, RunState::Dispatching, ts(2)).await;
    assert_err!(
        store.transition_run(transition(run.id, &[RunState::Scheduled], RunState::Cancelled, ts(3))).await,
        StoreError::Conflict { .. },
        "stale `from` (scheduled) after the run moved to dispatching"
    );
    let r = store
        .transition_run(transition(run.id, &[RunState::Scheduled, RunState::Dispatching], RunState::Cancelled, ts(4)))
        .await
        .must("transition with the current state among several in `from`");
    assert_eq!(r.state, RunState::Cancelled);
    assert_eq!(d.id, r.id);
}

/// `NotFound` for an unknown run.
pub async fn run_transition_not_found<S: Store>(store: S) {
    assert_err!(
        store.transition_run(transition(424_242, &[RunState::Scheduled], RunState::Dispatching, ts(0))).await,
        StoreError::NotFound { .. },
        "transition_run of an unknown run"
    );
}

/// A stale fence is `Fenced` and writes nothing; the current fence works.
pub async fn run_transition_fenced<S: Store>(store: S) {
    let task = create_task(&store, "ns", "t", 8, None).await;
    let run = run_at(&store, &task, ts(0)).await;
    let (old, new) = takeover(&store, 8).await;
    let mut t = transition(run.id, &[RunState::Scheduled], RunState::Dispatching, ts(30));
    t.patch.owner = Some(Some("old-holder".into()));
    t.fence = fence_of(&old);
    assert_err!(store.transition_run(t.clone()).await, StoreError::Fenced { .. }, "transition_run with a stale fence");
    assert_eq!(store.get_run(run.id).await.must("get_run"), Some(run.clone()), "a fenced transition writes nothing");
    t.fence = fence_of(&new);
    t.patch.owner = Some(Some("new-holder".into()));
    let r = store.transition_run(t).await.must("transition_run with the current fence");
    assert_eq!(r.owner.as_deref(), Some("new-holder"));
}

/// Patch fields left `None` keep their values across transitions.
pub async fn run_patch_leaves_other_fields<S: Store>(store: S) {
    let task = create_task(&store, "ns", "t", 0, None).await;
    let run = run_at(&store, &task, ts(0)).await;
    let mut t = transition(run.id, &[RunState::Scheduled], RunState::Dispatching, ts(1));
    t.patch = RunPatch {
        next_attempt_at: Some(Some(ts(100))),
        attempts: Some(3),
        output: Some(json!({"partial": true})),
        error: Some("previous error".into()),
        reason: Some("some reason".into()),
        owner: Some(Some("node-a".into())),
        started_at: Some(ts(1)),
        finished_at: None,
    };
    let a = store.transition_run(t).await.must("transition with a full patch");
    assert_eq!(a.next_attempt_at, Some(ts(100)));
    assert_eq!(a.attempts, 3);
    assert_eq!(a.output, Some(json!({"partial": true})));
    assert_eq!(a.error.as_deref(), Some("previous error"));
    assert_eq!(a.reason.as_deref(), Some("some reason"));
    assert_eq!(a.owner.as_deref(), Some("node-a"));
    assert_eq!(a.started_at, Some(ts(1)));

    let b = store
        .transition_run(transition(run.id, &[RunState::Dispatching], RunState::Running, ts(2)))
        .await
        .must("transition with an empty patch");
    let mut want = a.clone();
    want.state = RunState::Running;
    want.updated_at = ts(2);
    assert_eq!(b, want, "an empty patch changes only state and updated_at");
}

async fn list_all_runs<S: Store>(store: &S, filter: &RunFilter, limit: u32, what: &str) -> Vec<RunRecord> {
    collect_pages(what, limit, |page| async move { store.list_runs(filter, &page).await }).await.concat()
}

fn ids(runs: &[RunRecord]) -> Vec<i64> {
    runs.iter().map(|r| r.id).collect()
}

/// `list_runs` filters by task, namespace/name, states and the half-open time range; newest first.
pub async fn list_runs_filters<S: Store>(store: S) {
    let a1 = create_task(&store, "a", "one", 0, None).await;
    let a2 = create_task(&store, "a", "two", 0, None).await;
    let b1 = create_task(&store, "b", "one", 0, None).await;
    let mut all = Vec::new();
    for i in 0..4 {
        for t in [&a1, &a2, &b1] {
            all.push(run_at(&store, t, ts(i * 60)).await);
        }
    }
    // States: drive some runs.
    let r_running = drive_to(&store, all[0].clone(), RunState::Running, ts(1)).await;
    let r_failed = drive_to(&store, all[4].clone(), RunState::Failed, ts(1)).await;
    let r_cancelled = drive_to(&store, all[8].clone(), RunState::Cancelled, ts(1)).await;
    let all: Vec<RunRecord> = {
        let mut v = Vec::new();
        for r in &all {
            v.push(store.get_run(r.id).await.must("get_run").expect("exists"));
        }
        v
    };
    let newest_first = |pred: &dyn Fn(&RunRecord) -> bool| {
        let mut v: Vec<RunRecord> = all.iter().filter(|r| pred(r)).cloned().collect();
        v.sort_by_key(|r| std::cmp::Reverse(r.id));
        v
    };
    let check = |filter: RunFilter, want: Vec<RunRecord>, what: &'static str| {
        let store = &store;
        async move {
            let got = list_all_runs(store, &filter, 100, what).await;
            assert_eq!(ids(&got), ids(&want), "list_runs {what} ({filter:?}): ids, newest first");
            assert_eq!(got, want, "list_runs {what}: records");
        }
    };

    check(RunFilter::default(), newest_first(&|_| true), "unfiltered").await;
    check(RunFilter { task_id: Some(a1.id), ..Default::default() }, newest_first(&|r| r.task_id == a1.id), "task_id")
        .await;
    check(RunFilter { namespace: Some("a".into()), ..Default::default() }, newest_first(&|r| r.namespace == "a"), "ns")
        .await;
    check(
        RunFilter { namespace: Some("a".into()), name: Some("one".into()), ..Default::default() },
        newest_first(&|r| r.task_id == a1.id),
        "namespace+name",
    )
    .await;
    check(
        RunFilter { states: vec![RunState::Running, RunState::Failed, RunState::Cancelled], ..Default::default() },
        newest_first(&|r| [r_running.id, r_failed.id, r_cancelled.id].contains(&r.id)),
        "states (three)",
    )
    .await;
    check(
        RunFilter { states: vec![RunState::Scheduled], ..Default::default() },
        newest_first(&|r| r.state == RunState::Scheduled),
        "states (scheduled)",
    )
    .await;
    check(RunFilter { states: vec![RunState::Succeeded], ..Default::default() }, vec![], "states (succeeded, none)")
        .await;
    check(
        RunFilter { from: Some(ts(60)), to: Some(ts(180)), ..Default::default() },
        newest_first(&|r| r.scheduled_at >= ts(60) && r.scheduled_at < ts(180)),
        "time range [60s, 180s)",
    )
    .await;
    check(
        RunFilter { from: Some(tms(60_001)), ..Default::default() },
        newest_first(&|r| r.scheduled_at >= ts(120)),
        "from only (1 ms after an instant excludes it)",
    )
    .await;
    check(
        RunFilter { to: Some(tms(60_001)), ..Default::default() },
        newest_first(&|r| r.scheduled_at <= ts(60)),
        "to only (1 ms after an instant includes it)",
    )
    .await;
    check(
        RunFilter {
            namespace: Some("a".into()),
            states: vec![RunState::Scheduled],
            from: Some(ts(0)),
            to: Some(ts(120)),
            ..Default::default()
        },
        newest_first(&|r| {
            r.namespace == "a" && r.state == RunState::Scheduled && r.scheduled_at >= ts(0) && r.scheduled_at < ts(120)
        }),
        "combined",
    )
    .await;
    check(RunFilter { task_id: Some(a1.id + 1_000_000), ..Default::default() }, vec![], "unknown task").await;
}

/// `list_runs` pagination: complete, newest first (strictly decreasing ids), default and malformed cursors.
pub async fn list_runs_pagination<S: Store>(store: S) {
    let task = create_task(&store, "ns", "t", 0, None).await;
    let mut want = BTreeSet::new();
    for i in 0..130 {
        want.insert(run_at(&store, &task, ts(i)).await.id);
    }
    let pages = collect_pages("list_runs(limit 25)", 25, |p| {
        let store = &store;
        async move { store.list_runs(&RunFilter::default(), &p).await }
    })
    .await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), vec![25, 25, 25, 25, 25, 5], "page sizes");
    let seq: Vec<i64> = pages.concat().iter().map(|r| r.id).collect();
    assert!(seq.windows(2).all(|w| w[0] > w[1]), "newest first: ids strictly decreasing across pages");
    assert_eq!(seq.iter().copied().collect::<BTreeSet<_>>(), want, "every run exactly once");
    let default = store.list_runs(&RunFilter::default(), &PageRequest::first(0)).await.must("limit 0");
    assert_eq!(default.items.len(), 100, "limit 0 means 100");
    let filtered = collect_pages("list_runs(task, limit 40)", 40, |p| {
        let store = &store;
        let f = RunFilter { task_id: Some(task.id), from: Some(ts(10)), ..Default::default() };
        async move { store.list_runs(&f, &p).await }
    })
    .await
    .concat();
    assert_eq!(filtered.len(), 120, "filtered pagination covers every match");
    assert_err!(
        store.list_runs(&RunFilter::default(), &PageRequest::after("not a cursor", 10)).await,
        StoreError::InvalidArgument { .. },
        "list_runs with a malformed cursor"
    );
}

/// `pending_runs`: shard, state scheduled, next_attempt_at unset or `<= until`, oldest first, limit.
pub async fn pending_runs_queue<S: Store>(store: S) {
    let task = create_task(&store, "ns", "t", 1, None).await;
    let other = create_task(&store, "ns", "other-shard", 2, None).await;
    let mk = |at: i64, next: Option<i64>| {
        let mut r = new_run(&task, ts(at));
        r.next_attempt_at = next.map(ts);
        r
    };
    let now_null = insert_run_ok(&store, mk(-30, None)).await;
    let past = insert_run_ok(&store, mk(-20, Some(-5))).await;
    let _future = insert_run_ok(&store, mk(-15, Some(5))).await;
    let exact = insert_run_ok(&store, mk(-10, Some(0))).await;
    let dispatching = insert_run_ok(&store, mk(-8, None)).await;
    move_run(&store, &dispatching, RunState::Dispatching, ts(-1)).await;
    let mut sk = mk(-6, None);
    sk.state = RunState::Skipped;
    insert_run_ok(&store, sk).await;
    insert_run_ok(&store, new_run(&other, ts(-40))).await;

    let pending = store.pending_runs(1, t0(), 100).await.must("pending_runs(shard 1, t0)");
    assert_eq!(
        ids(&pending),
        vec![now_null.id, past.id, exact.id],
        "scheduled runs of shard 1 with next_attempt_at unset or <= until, oldest first"
    );
    assert_eq!(pending[1], past, "pending_runs returns full records");
    let limited = store.pending_runs(1, t0(), 2).await.must("pending_runs limit 2");
    assert_eq!(ids(&limited), vec![now_null.id, past.id], "limit honoured");
    let later = store.pending_runs(1, ts(5), 100).await.must("pending_runs(+5s)");
    assert_eq!(later.len(), 4, "the future retry is pending once reached");
    let shard2 = store.pending_runs(2, t0(), 100).await.must("pending_runs(shard 2)");
    assert_eq!(shard2.len(), 1, "shard 2 has its own queue");
    assert!(store.pending_runs(3, ts(1000), 100).await.must("pending_runs(shard 3)").is_empty());
}

/// `active_runs`: shard, the given states, oldest first, limit.
pub async fn active_runs_by_state<S: Store>(store: S) {
    let task = create_task(&store, "ns", "t", 5, None).await;
    let other = create_task(&store, "ns", "o", 6, None).await;
    let mut by_state = Vec::new();
    for (i, st) in [
        RunState::Scheduled,
        RunState::Dispatching,
        RunState::Running,
        RunState::Dispatching,
        RunState::Succeeded,
        RunState::Running,
        RunState::Cancelled,
    ]
    .into_iter()
    .enumerate()
    {
        let r = run_at(&store, &task, ts(i as i64)).await;
        by_state.push(drive_to(&store, r, st, ts(100)).await);
    }
    let o = run_at(&store, &other, ts(0)).await;
    drive_to(&store, o, RunState::Running, ts(100)).await;

    let got = store.active_runs(5, &[RunState::Dispatching, RunState::Running], 100).await.must("active_runs");
    assert_eq!(
        ids(&got),
        vec![by_state[1].id, by_state[2].id, by_state[3].id, by_state[5].id],
        "dispatching and running runs of shard 5, oldest first"
    );
    assert_eq!(got[0], by_state[1], "full records");
    let running = store.active_runs(5, &[RunState::Running], 100).await.must("active_runs running");
    assert_eq!(ids(&running), vec![by_state[2].id, by_state[5].id]);
    let sched = store.active_runs(5, &[RunState::Scheduled], 100).await.must("active_runs scheduled");
    assert_eq!(ids(&sched), vec![by_state[0].id]);
    let lim = store.active_runs(5, &[RunState::Dispatching, RunState::Running], 3).await.must("active_runs limit");
    assert_eq!(ids(&lim), vec![by_state[1].id, by_state[2].id, by_state[3].id], "limit honoured");
    assert_eq!(store.active_runs(6, &[RunState::Running], 100).await.must("shard 6").len(), 1, "shard 6");
    assert!(store.active_runs(7, &[RunState::Running], 100).await.must("shard 7").is_empty());
}

/// `active_runs_of_task`: only non-terminal runs of that task, oldest first.
pub async fn active_runs_of_task_only_non_terminal<S: Store>(store: S) {
    let task = create_task(&store, "ns", "t", 5, None).await;
    let other = create_task(&store, "ns", "o", 5, None).await;
    let mut want = Vec::new();
    for (i, st) in RunState::ALL.into_iter().enumerate() {
        let r = run_at(&store, &task, ts(i as i64)).await;
        let r = drive_to(&store, r, st, ts(100)).await;
        if !st.is_terminal() {
            want.push(r);
        }
        run_at(&store, &other, ts(i as i64)).await;
    }
    let got = store.active_runs_of_task(task.id).await.must("active_runs_of_task");
    assert_eq!(got, want, "non-terminal runs of the task, oldest first");
    assert!(store.active_runs_of_task(task.id + 1_000_000).await.must("unknown task").is_empty());
}

/// `prune_runs` deletes terminal runs finished before the cutoff (with attempts and logs), honouring the limit.
pub async fn prune_runs_terminal_before_cutoff<S: Store>(store: S) {
    let task = create_task(&store, "ns", "t", 0, None).await;
    let finish = |run: RunRecord, to: RunState, at: i64| {
        let store = &store;
        async move {
            let run = drive_to(store, run, RunState::Running, ts(at - 1)).await;
            let mut t = transition(run.id, &[RunState::Running], to, ts(at));
            t.patch.finished_at = Some(ts(at));
            store.transition_run(t).await.must("finish run")
        }
    };
    let old_ok = finish(run_at(&store, &task, ts(0)).await, RunState::Succeeded, -100).await;
    let old_failed = finish(run_at(&store, &task, ts(1)).await, RunState::Failed, -50).await;
    let old_timeout = finish(run_at(&store, &task, ts(2)).await, RunState::TimedOut, -40).await;
    let at_cutoff = finish(run_at(&store, &task, ts(3)).await, RunState::Succeeded, 0).await;
    let recent = finish(run_at(&store, &task, ts(4)).await, RunState::Succeeded, 10).await;
    let running = drive_to(&store, run_at(&store, &task, ts(5)).await, RunState::Running, ts(-200)).await;
    let scheduled = run_at(&store, &task, ts(6)).await;
    // A non-terminal run with an (odd) old finished_at must survive too.
    let mut t = transition(running.id, &[RunState::Running], RunState::Scheduled, ts(-199));
    t.patch.finished_at = Some(ts(-199));
    let odd = store.transition_run(t).await.must("running -> scheduled with finished_at");

    let att = store
        .insert_attempt(NewAttempt {
            run_id: old_ok.id,
            attempt: 1,
            node: "n1".into(),
            started_at: ts(-101),
            deadline: None,
        })
        .await
        .must("insert_attempt");
    store.append_logs(old_ok.id, "stdout", &["to be pruned".to_string()], ts(-100)).await.must("append_logs");
    store
        .insert_attempt(NewAttempt {
            run_id: recent.id,
            attempt: 1,
            node: "n1".into(),
            started_at: ts(9),
            deadline: None,
        })
        .await
        .must("insert_attempt recent");
    store.append_logs(recent.id, "stdout", &["kept".to_string()], ts(10)).await.must("append_logs recent");

    let n = store.prune_runs(t0(), 1).await.must("prune_runs limit 1");
    assert_eq!(n, 1, "prune_runs honours its limit");
    let n = store.prune_runs(t0(), 1000).await.must("prune_runs");
    assert_eq!(n, 2, "the two remaining terminal runs finished strictly before the cutoff");
    assert_eq!(store.prune_runs(t0(), 1000).await.must("prune_runs again"), 0, "nothing left to prune");
    for gone in [&old_ok, &old_failed, &old_timeout] {
        assert_eq!(store.get_run(gone.id).await.must("get_run pruned"), None, "run {} pruned", gone.id);
    }
    for kept in [&at_cutoff, &recent, &odd, &scheduled] {
        assert_eq!(
            store.get_run(kept.id).await.must("get_run kept").as_ref(),
            Some(kept),
            "run {} ({}, finished_at {:?}) must survive prune_runs({})",
            kept.id,
            kept.state,
            kept.finished_at,
            t0()
        );
    }
    match store.list_attempts(old_ok.id).await {
        Ok(v) => assert!(v.is_empty(), "attempts of a pruned run are deleted: {v:?}"),
        Err(StoreError::NotFound { .. }) => {}
        Err(e) => panic!("list_attempts of a pruned run: {e:?}"),
    }
    match store.read_logs(old_ok.id, 0, 100).await {
        Ok(v) => assert!(v.is_empty(), "logs of a pruned run are deleted: {v:?}"),
        Err(StoreError::NotFound { .. }) => {}
        Err(e) => panic!("read_logs of a pruned run: {e:?}"),
    }
    assert_err!(
        store.finish_attempt(att.id, crate::AttemptState::Succeeded, None, None, ts(1)).await,
        StoreError::NotFound { .. },
        "finish_attempt of a pruned run's attempt"
    );
    assert_eq!(store.list_attempts(recent.id).await.must("list_attempts kept").len(), 1, "kept run's attempts stay");
    assert_eq!(store.read_logs(recent.id, 0, 100).await.must("read_logs kept").len(), 1, "kept run's logs stay");
    let pruned_ids = [old_ok.id, old_failed.id, old_timeout.id];
    let remaining = list_all_runs(&store, &RunFilter::default(), 100, "list_runs after prune").await;
    assert!(remaining.iter().all(|r| !pruned_ids.contains(&r.id)), "pruned runs are not listed");
    assert_eq!(remaining.len(), 4);
}

/// Large values round-trip unchanged: a 512 KiB spec and params/output, 100 KiB error, reason, log line and audit
/// detail (backends must not use column types that truncate or reject them).
pub async fn large_values_round_trip<S: Store>(store: S) {
    let chunk = "ünïcödé 🚀 0123456789 abcdefghijklmnopqrstuvwxyz ".repeat(8);
    let big_json = |n: usize| json!({"items": (0..n).map(|i| json!({"i": i, "s": chunk})).collect::<Vec<_>>()});
    let big_text = "é🚀x".repeat(100 * 1024 / 8);
    let spec = big_json(1300); // > 512 KiB serialized
    assert!(serde_json::to_string(&spec).expect("json").len() > 512 * 1024);
    let mut w = task_write("ns", "big", 0, Some(ts(0)));
    w.spec = spec.clone();
    store.put_task(w, crate::Precondition::MustNotExist, t0()).await.must("put_task with a large spec");
    let task = store.get_task("ns", "big").await.must("get_task").expect("exists");
    assert!(task.spec == spec, "a 512 KiB spec round-trips unchanged");
    let versions = store.task_versions("ns", "big").await.must("task_versions");
    assert!(versions[0].spec == spec, "a large spec round-trips through the version history");

    let mut nr = new_run(&task, ts(0));
    nr.params = big_json(1300);
    nr.reason = Some(big_text.clone());
    let run = insert_run_ok(&store, nr.clone()).await;
    let got = store.get_run(run.id).await.must("get_run").expect("exists");
    assert!(got.params == nr.params, "large params round-trip");
    assert!(got.reason == nr.reason, "a 100 KiB reason round-trips");
    let mut t = transition(run.id, &[RunState::Scheduled], RunState::Dispatching, ts(1));
    t.patch.output = Some(big_json(1300));
    t.patch.error = Some(big_text.clone());
    store.transition_run(t.clone()).await.must("transition with large output and error");
    let got = store.get_run(run.id).await.must("get_run").expect("exists");
    assert!(got.output == t.patch.output, "large output round-trips");
    assert!(got.error == t.patch.error, "a 100 KiB error round-trips");

    let a = store
        .insert_attempt(NewAttempt { run_id: run.id, attempt: 1, node: "n".into(), started_at: ts(1), deadline: None })
        .await
        .must("insert_attempt");
    let f = store
        .finish_attempt(a.id, crate::AttemptState::Failed, Some(big_json(1300)), Some(big_text.clone()), ts(2))
        .await
        .must("finish_attempt with large values");
    assert!(f.error.as_deref() == Some(big_text.as_str()), "a 100 KiB attempt error round-trips");
    let listed = store.list_attempts(run.id).await.must("list_attempts");
    assert!(listed[0] == f, "large attempt values round-trip through list_attempts");

    store.append_logs(run.id, "stdout", std::slice::from_ref(&big_text), ts(3)).await.must("append a 100 KiB line");
    let lines = store.read_logs(run.id, 0, 10).await.must("read_logs");
    assert!(lines.len() == 1 && lines[0].line == big_text, "a 100 KiB log line round-trips");

    let detail = big_json(1300);
    let e = store
        .append_audit(crate::NewAuditEntry {
            at: ts(4),
            actor: "a".into(),
            action: "task.put".into(),
            resource: "task/ns/big".into(),
            source: None,
            detail: detail.clone(),
        })
        .await
        .must("append_audit with a large detail");
    assert!(e.detail == detail, "a large audit detail round-trips");
}
