//! The due index and `fire()`.

use serde_json::json;

use super::support::*;
use crate::{
    DueTask, FireRequest, PageRequest, Precondition, RunFilter, RunRecord, RunState, Store, StoreError, TaskRecord,
    TriggerKind,
};

fn due_ids(due: &[DueTask]) -> Vec<i64> {
    due.iter().map(|d| d.task_id).collect()
}

async fn runs_of<S: Store>(store: &S, task_id: i64) -> Vec<RunRecord> {
    store
        .list_runs(&RunFilter { task_id: Some(task_id), ..Default::default() }, &PageRequest::first(1000))
        .await
        .must(format_args!("list_runs(task {task_id})"))
        .items
}

async fn next_fire_at<S: Store>(store: &S, task: &TaskRecord) -> Option<chrono::DateTime<chrono::Utc>> {
    store.get_task_by_id(task.id).await.must("get_task_by_id").expect("task exists").next_fire_at
}

fn fire_req(task: &TaskRecord, expected: i64, new: i64, runs: &[i64]) -> FireRequest {
    FireRequest {
        task_id: task.id,
        expected_next_fire_at: Some(ts(expected)),
        new_next_fire_at: Some(ts(new)),
        runs: runs.iter().map(|&s| new_run(task, ts(s))).collect(),
        fence: None,
        now: ts(expected + 1),
    }
}

/// `due_tasks`: only the shard, only unpaused, only `next_fire_at <= until`, never unset `next_fire_at`.
pub async fn due_tasks_filters<S: Store>(store: S) {
    let early = create_task(&store, "ns", "early", 1, Some(ts(-10))).await;
    let exact = create_task(&store, "ns", "exact", 1, Some(t0())).await;
    create_task(&store, "ns", "later", 1, Some(tms(1))).await;
    create_task(&store, "ns", "manual", 1, None).await;
    create_task(&store, "ns", "paused", 1, Some(ts(-20))).await;
    store.set_paused("ns", "paused", true, None, ts(-30)).await.must("pause");
    let other_shard = create_task(&store, "ns", "other-shard", 2, Some(ts(-30))).await;

    let due = store.due_tasks(1, t0(), 100).await.must("due_tasks(shard 1, t0)");
    assert_eq!(due_ids(&due), vec![early.id, exact.id], "due_tasks(shard 1, until t0): early and exact (inclusive)");
    assert_eq!(
        due[0],
        DueTask { task_id: early.id, namespace: "ns".into(), name: "early".into(), version: 1, next_fire_at: ts(-10) },
        "DueTask fields"
    );
    let due2 = store.due_tasks(2, t0(), 100).await.must("due_tasks(shard 2)");
    assert_eq!(due_ids(&due2), vec![other_shard.id], "due_tasks(shard 2)");
    assert!(store.due_tasks(3, ts(1_000_000), 100).await.must("due_tasks(shard 3)").is_empty(), "empty shard");
    let later = store.due_tasks(1, tms(1), 100).await.must("due_tasks(shard 1, t0+1ms)");
    assert_eq!(later.len(), 3, "one millisecond later the third task is due too: {later:?}");
    let far = store.due_tasks(1, ts(1_000_000_000), 100).await.must("due_tasks far future");
    assert!(far.iter().all(|d| d.name != "manual" && d.name != "paused"), "never manual or paused tasks: {far:?}");

    // The version reported is the current one.
    let mut w = task_write("ns", "early", 1, Some(ts(-10)));
    w.spec = json!({"v": 2});
    store.put_task(w, Precondition::Version(1), ts(1)).await.must("replace early");
    let due = store.due_tasks(1, t0(), 1).await.must("due_tasks after replace");
    assert_eq!(due[0].version, 2, "DueTask.version is the task's current version");
}

/// `due_tasks` orders by next_fire_at then id and honours the limit.
pub async fn due_tasks_ordering_and_limit<S: Store>(store: S) {
    let offsets = [50, -5, 10, -5, 0, 30, -100, 10, 10, 7];
    let mut tasks = Vec::new();
    for (i, off) in offsets.iter().enumerate() {
        tasks.push(create_task(&store, "ns", &format!("t{i}"), 6, Some(tms(off * 1000 + 1))).await);
    }
    let mut want: Vec<(chrono::DateTime<chrono::Utc>, i64)> =
        tasks.iter().map(|t| (t.next_fire_at.expect("set"), t.id)).collect();
    want.sort();
    let due = store.due_tasks(6, ts(1000), 100).await.must("due_tasks all");
    assert_eq!(
        due.iter().map(|d| (d.next_fire_at, d.task_id)).collect::<Vec<_>>(),
        want,
        "due_tasks ordered by next_fire_at, ties by id"
    );
    for limit in [1u32, 3, 4, 9] {
        let due = store.due_tasks(6, ts(1000), limit).await.must(format_args!("due_tasks limit {limit}"));
        assert_eq!(
            due.iter().map(|d| (d.next_fire_at, d.task_id)).collect::<Vec<_>>(),
            want[..limit as usize].to_vec(),
            "due_tasks with limit {limit} returns the first {limit}"
        );
    }
    let until_ten = store.due_tasks(6, tms(10_001), 100).await.must("due_tasks until +10s");
    assert_eq!(until_ten.len(), 8, "tasks due at or before +10.001s: {until_ten:?}");
}

/// The due index follows replacements, fires and pauses.
pub async fn due_tasks_follow_updates<S: Store>(store: S) {
    let task = create_task(&store, "ns", "t", 3, Some(ts(10))).await;
    assert!(store.due_tasks(3, ts(5), 10).await.must("due").is_empty());
    let v2 = store
        .put_task(task_write("ns", "t", 3, Some(ts(5))), Precondition::Version(1), ts(1))
        .await
        .must("move next_fire_at earlier");
    assert_eq!(due_ids(&store.due_tasks(3, ts(5), 10).await.must("due")), vec![task.id], "earlier next_fire_at");
    store.put_task(task_write("ns", "t", 4, Some(ts(5))), Precondition::Version(2), ts(2)).await.must("move shard");
    assert!(store.due_tasks(3, ts(5), 10).await.must("due old shard").is_empty(), "moved to another shard");
    assert_eq!(due_ids(&store.due_tasks(4, ts(5), 10).await.must("due new shard")), vec![task.id]);
    let mut req = fire_req(&v2, 5, 65, &[5]);
    req.expected_next_fire_at = Some(ts(5));
    store.fire(req).await.must("fire");
    assert!(store.due_tasks(4, ts(64), 10).await.must("due after fire").is_empty(), "fire advances next_fire_at");
    assert_eq!(due_ids(&store.due_tasks(4, ts(65), 10).await.must("due at new instant")), vec![task.id]);
    store.put_task(task_write("ns", "t", 4, None), Precondition::Any, ts(3)).await.must("clear next_fire_at");
    assert!(store.due_tasks(4, ts(1_000_000), 10).await.must("due cleared").is_empty(), "cleared next_fire_at");
}

/// `fire()` inserts the runs and advances next_fire_at; the inserted records are complete.
pub async fn fire_inserts_runs_and_advances<S: Store>(store: S) {
    let task = create_task(&store, "ns", "t", 2, Some(ts(0))).await;
    let mut req = fire_req(&task, 0, 60, &[0]);
    req.runs[0].params = json!({"param": ["x", 1]});
    let out = store.fire(req.clone()).await.must("fire");
    assert!(out.duplicates.is_empty(), "no duplicates: {:?}", out.duplicates);
    assert_eq!(out.inserted.len(), 1, "one run inserted");
    let run = &out.inserted[0];
    let want = &req.runs[0];
    assert_eq!(run.task_id, task.id);
    assert_eq!(run.namespace, "ns");
    assert_eq!(run.name, "t");
    assert_eq!(run.task_version, 1);
    assert_eq!(run.shard, 2);
    assert_eq!(run.scheduled_at, ts(0), "scheduled_at");
    assert_eq!(run.trigger, TriggerKind::Schedule);
    assert_eq!(run.state, RunState::Scheduled);
    assert_eq!(run.attempts, 0, "a new run has 0 attempts");
    assert_eq!(run.next_attempt_at, None);
    assert_eq!(run.params, want.params, "params");
    assert_eq!(run.output, None);
    assert_eq!(run.error, None);
    assert_eq!(run.reason, None);
    assert_eq!(run.owner, None);
    assert_eq!(run.created_at, req.now, "created_at is fire's now");
    assert_eq!(run.started_at, None);
    assert_eq!(run.finished_at, None);
    assert_eq!(store.get_run(run.id).await.must("get_run"), Some(run.clone()), "get_run equals the fired record");
    assert_eq!(next_fire_at(&store, &task).await, Some(ts(60)), "next_fire_at advanced");
    assert_eq!(runs_of(&store, task.id).await, vec![run.clone()], "exactly the fired run exists");
    assert!(store.due_tasks(2, ts(59), 10).await.must("due").is_empty(), "not due before the new instant");

    // Fire again from the new instant.
    let out2 = store.fire(fire_req(&task, 60, 120, &[60])).await.must("fire second time");
    assert_eq!(out2.inserted.len(), 1);
    assert_ne!(out2.inserted[0].id, run.id, "a new run id");
    assert_eq!(next_fire_at(&store, &task).await, Some(ts(120)));

    // Firing the last occurrence: next_fire_at becomes None.
    let mut last = fire_req(&task, 120, 0, &[120]);
    last.new_next_fire_at = None;
    store.fire(last).await.must("fire last occurrence");
    assert_eq!(next_fire_at(&store, &task).await, None, "new_next_fire_at None clears it");
    assert_eq!(runs_of(&store, task.id).await.len(), 3);
}

/// `fire()` with no runs just advances next_fire_at (a skipped occurrence).
pub async fn fire_without_runs_advances<S: Store>(store: S) {
    let task = create_task(&store, "ns", "t", 2, Some(ts(0))).await;
    let out = store.fire(fire_req(&task, 0, 60, &[])).await.must("fire without runs");
    assert!(out.inserted.is_empty() && out.duplicates.is_empty(), "nothing inserted: {out:?}");
    assert_eq!(next_fire_at(&store, &task).await, Some(ts(60)));
    assert!(runs_of(&store, task.id).await.is_empty());
}

/// A stale `expected_next_fire_at` is a `Conflict` and writes nothing.
pub async fn fire_cas_conflict_writes_nothing<S: Store>(store: S) {
    let task = create_task(&store, "ns", "t", 2, Some(ts(60))).await;
    assert_err!(
        store.fire(fire_req(&task, 0, 120, &[0, 60])).await,
        StoreError::Conflict { .. },
        "fire with a stale expected_next_fire_at"
    );
    assert_eq!(next_fire_at(&store, &task).await, Some(ts(60)), "next_fire_at unchanged after a conflict");
    assert!(runs_of(&store, task.id).await.is_empty(), "no run written after a conflict");
    // Off by one millisecond is still a conflict.
    let mut req = fire_req(&task, 60, 120, &[60]);
    req.expected_next_fire_at = Some(tms(60_001));
    assert_err!(store.fire(req).await, StoreError::Conflict { .. }, "fire with expected off by 1 ms");
    assert!(runs_of(&store, task.id).await.is_empty(), "no run written after a conflict");
    // The correct expectation works.
    store.fire(fire_req(&task, 60, 120, &[60])).await.must("fire with the current next_fire_at");
    assert_err!(
        store.fire(fire_req(&task, 60, 180, &[120])).await,
        StoreError::Conflict { .. },
        "second fire with the same (now stale) expectation"
    );
    assert_eq!(runs_of(&store, task.id).await.len(), 1, "only the successful fire wrote a run");
    assert_eq!(next_fire_at(&store, &task).await, Some(ts(120)));
}

/// The compare-and-set treats an unset next_fire_at as a value: None matches None only.
pub async fn fire_cas_with_unset_next_fire_at<S: Store>(store: S) {
    let manual = create_task(&store, "ns", "manual", 2, None).await;
    let mut req = fire_req(&manual, 0, 0, &[0]);
    req.expected_next_fire_at = Some(ts(0));
    req.new_next_fire_at = None;
    assert_err!(store.fire(req.clone()).await, StoreError::Conflict { .. }, "expected Some when the task has None");
    req.expected_next_fire_at = None;
    req.runs[0].trigger = TriggerKind::Manual;
    let out = store.fire(req).await.must("fire expecting None on a task with None");
    assert_eq!(out.inserted.len(), 1);
    assert_eq!(out.inserted[0].trigger, TriggerKind::Manual);
    assert_eq!(next_fire_at(&store, &manual).await, None);

    let timed = create_task(&store, "ns", "timed", 2, Some(ts(0))).await;
    let mut req = fire_req(&timed, 0, 60, &[0]);
    req.expected_next_fire_at = None;
    assert_err!(store.fire(req).await, StoreError::Conflict { .. }, "expected None when the task has Some");
    assert_eq!(next_fire_at(&store, &timed).await, Some(ts(0)), "unchanged after conflict");
    assert!(runs_of(&store, timed.id).await.is_empty());
}

/// Runs that already exist are reported in `duplicates`; the others are inserted and next_fire_at advances.
pub async fn fire_reports_duplicates<S: Store>(store: S) {
    let task = create_task(&store, "ns", "t", 2, Some(ts(0))).await;
    let existing = run_at(&store, &task, ts(60)).await;
    let out = store.fire(fire_req(&task, 0, 180, &[0, 60, 120])).await.must("fire with one duplicate");
    assert_eq!(
        out.inserted.iter().map(|r| r.scheduled_at).collect::<Vec<_>>(),
        vec![ts(0), ts(120)],
        "inserted runs, in request order"
    );
    assert_eq!(out.duplicates, vec![ts(60)], "the existing run is reported as a duplicate");
    assert_eq!(next_fire_at(&store, &task).await, Some(ts(180)), "next_fire_at advanced despite the duplicate");
    let runs = runs_of(&store, task.id).await;
    assert_eq!(runs.len(), 3, "three runs in total: {runs:?}");
    assert_eq!(store.get_run(existing.id).await.must("get_run"), Some(existing), "the existing run is untouched");

    // All duplicates.
    let mut req = fire_req(&task, 180, 240, &[0, 120]);
    req.runs.iter_mut().for_each(|r| r.params = json!("different"));
    let out = store.fire(req).await.must("fire with only duplicates");
    assert!(out.inserted.is_empty(), "nothing inserted");
    assert_eq!(out.duplicates, vec![ts(0), ts(120)], "all duplicates reported in request order");
    assert_eq!(next_fire_at(&store, &task).await, Some(ts(240)));
    assert_eq!(runs_of(&store, task.id).await.len(), 3);
}

/// `fire()` of a missing or deleted task is `NotFound`.
pub async fn fire_not_found<S: Store>(store: S) {
    let task = create_task(&store, "ns", "t", 2, Some(ts(0))).await;
    assert!(store.delete_task("ns", "t").await.must("delete_task"));
    assert_err!(store.fire(fire_req(&task, 0, 60, &[0])).await, StoreError::NotFound { .. }, "fire of a deleted task");
    assert!(runs_of(&store, task.id).await.is_empty(), "no run for a deleted task");
    let mut ghost = task.clone();
    ghost.id += 1_000_000;
    assert_err!(
        store.fire(fire_req(&ghost, 0, 60, &[0])).await,
        StoreError::NotFound { .. },
        "fire of a task id that never existed"
    );
}

/// Catch-up: several runs in one fire, with skipped ones recorded as `skipped`.
pub async fn fire_catch_up_and_skipped_runs<S: Store>(store: S) {
    let task = create_task(&store, "ns", "t", 2, Some(ts(0))).await;
    let mut req = fire_req(&task, 0, 300, &[0, 60, 120, 180, 240]);
    for (i, r) in req.runs.iter_mut().enumerate() {
        r.trigger = TriggerKind::CatchUp;
        if i < 3 {
            r.state = RunState::Skipped;
            r.reason = Some(format!("misfire: skipped occurrence {i}"));
        }
    }
    let out = store.fire(req.clone()).await.must("catch-up fire");
    assert!(out.duplicates.is_empty());
    assert_eq!(out.inserted.len(), 5, "all five runs inserted");
    for (got, want) in out.inserted.iter().zip(&req.runs) {
        assert_eq!(got.scheduled_at, want.scheduled_at, "inserted in request order");
        assert_eq!(got.state, want.state, "initial state (scheduled or skipped) is kept");
        assert_eq!(got.trigger, TriggerKind::CatchUp);
        assert_eq!(got.reason, want.reason, "reason");
        assert_eq!(store.get_run(got.id).await.must("get_run").as_ref(), Some(got));
    }
    let ids: Vec<i64> = out.inserted.iter().map(|r| r.id).collect();
    assert_eq!(ids.iter().collect::<std::collections::BTreeSet<_>>().len(), 5, "distinct ids");
    assert_eq!(next_fire_at(&store, &task).await, Some(ts(300)));
    let pending = store.pending_runs(2, ts(1000), 100).await.must("pending_runs");
    assert_eq!(
        pending.iter().map(|r| r.scheduled_at).collect::<Vec<_>>(),
        vec![ts(180), ts(240)],
        "skipped runs are not pending"
    );
}

/// A fence at the shard's current epoch is accepted.
pub async fn fire_with_current_fence<S: Store>(store: S) {
    let lease = acquire(&store, 2, "me", secs(30), t0()).await;
    let task = create_task(&store, "ns", "t", 2, Some(ts(0))).await;
    let mut req = fire_req(&task, 0, 60, &[0]);
    req.fence = fence_of(&lease);
    let out = store.fire(req).await.must("fire with the current fence");
    assert_eq!(out.inserted.len(), 1);
    // Still accepted after the lease expired, as long as nobody took the shard over.
    let mut req = fire_req(&task, 60, 120, &[60]);
    req.fence = fence_of(&lease);
    req.now = ts(1000);
    store.fire(req).await.must("fire with the current fence of an expired lease nobody took");
    assert_eq!(runs_of(&store, task.id).await.len(), 2);
}

/// A stale fence is `Fenced` and writes nothing.
pub async fn fire_stale_fence_writes_nothing<S: Store>(store: S) {
    let task = create_task(&store, "ns", "t", 2, Some(ts(0))).await;
    let (old, new) = takeover(&store, 2).await;
    let mut req = fire_req(&task, 0, 60, &[0]);
    req.fence = fence_of(&old);
    req.now = ts(30);
    assert_err!(store.fire(req.clone()).await, StoreError::Fenced { .. }, "fire with the old holder's fence");
    assert_eq!(next_fire_at(&store, &task).await, Some(ts(0)), "next_fire_at unchanged when fenced");
    assert!(runs_of(&store, task.id).await.is_empty(), "no run written when fenced");
    req.fence = fence_of(&new);
    store.fire(req).await.must("fire with the new holder's fence");
    assert_eq!(runs_of(&store, task.id).await.len(), 1);
}
