//! The hot path's fused and batched calls: `fire` on a paused task, `fire_batch`, `start_attempt(s)`,
//! `complete_attempt(s)`, and the documented error order of `transition_run`.
//!
//! A batch means "these calls, one after the other": every item has its own all-or-nothing outcome, a failing item
//! writes nothing and does not affect the others, and items touching the same task, run or attempt see the effect
//! of the earlier ones.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::support::*;
use crate::{
    AttemptRecord, AttemptState, CompleteAttempt, FireOutcome, FireRequest, NewAttempt, PageRequest, RunFilter,
    RunPatch, RunRecord, RunState, Store, StoreError, StoreResult, TaskRecord, Transition,
};

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

async fn runs_of<S: Store>(store: &S, task_id: i64) -> Vec<RunRecord> {
    let mut v = store
        .list_runs(&RunFilter { task_id: Some(task_id), ..Default::default() }, &PageRequest::first(1000))
        .await
        .must(format_args!("list_runs(task {task_id})"))
        .items;
    v.reverse();
    v
}

async fn instants_of<S: Store>(store: &S, task_id: i64) -> Vec<DateTime<Utc>> {
    let mut v: Vec<_> = runs_of(store, task_id).await.iter().map(|r| r.scheduled_at).collect();
    v.sort();
    v
}

async fn next_fire_at<S: Store>(store: &S, task_id: i64) -> Option<DateTime<Utc>> {
    store.get_task_by_id(task_id).await.must("get_task_by_id").expect("task exists").next_fire_at
}

async fn run_now<S: Store>(store: &S, id: i64) -> RunRecord {
    store.get_run(id).await.must("get_run").unwrap_or_else(|| panic!("run {id} exists"))
}

fn new_attempt(run_id: i64, n: u32, node: &str, started: i64) -> NewAttempt {
    NewAttempt { run_id, attempt: n, node: node.into(), started_at: ts(started), deadline: Some(ts(started + 300)) }
}

/// The transition the scheduler applies when it starts an attempt.
fn dispatch(run: &RunRecord, n: u32, owner: &str, at: i64) -> Transition {
    Transition {
        run_id: run.id,
        from: vec![RunState::Scheduled],
        to: RunState::Dispatching,
        patch: RunPatch {
            attempts: Some(n),
            owner: Some(Some(owner.into())),
            started_at: Some(ts(at)),
            next_attempt_at: Some(Some(ts(at + 300))),
            ..Default::default()
        },
        fence: None,
        now: ts(at),
    }
}

fn complete(a: &AttemptRecord, state: AttemptState, at: i64) -> CompleteAttempt {
    CompleteAttempt {
        attempt_id: a.id,
        state,
        output: Some(json!({"attempt": a.id, "state": state.as_str()})),
        error: (state != AttemptState::Succeeded).then(|| format!("attempt {} {}", a.id, state.as_str())),
        now: ts(at),
    }
}

/// Starts an attempt on a scheduled run (through `start_attempt`) and expects success.
async fn started<S: Store>(store: &S, run: &RunRecord, node: &str, at: i64) -> (RunRecord, AttemptRecord) {
    store
        .start_attempt(dispatch(run, 1, "sched-a", at), new_attempt(run.id, 1, node, at))
        .await
        .must(format_args!("start_attempt(run {})", run.id))
}

fn ok<T: std::fmt::Debug>(r: &StoreResult<T>, what: impl std::fmt::Display) -> &T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: expected success, got {e} ({e:?})"),
    }
}

fn expect_len<T>(v: &[T], n: usize, what: &str) {
    assert_eq!(v.len(), n, "{what}: one outcome per item, in request order");
}

// ---------------------------------------------------------------------------------------------------------------
// fire / fire_batch
// ---------------------------------------------------------------------------------------------------------------

/// `fire` of a paused task is `Conflict` (even with the right `expected_next_fire_at`) and writes nothing; after
/// resuming, it fires.
pub async fn fire_paused_conflict<S: Store>(store: S) {
    let task = create_task(&store, "ns", "t", 2, Some(ts(0))).await;
    store.set_paused("ns", "t", true, None, ts(-1)).await.must("pause");
    assert_err!(store.fire(fire_req(&task, 0, 60, &[0])).await, StoreError::Conflict { .. }, "fire of a paused task");
    assert_eq!(next_fire_at(&store, task.id).await, Some(ts(0)), "a paused task's next_fire_at is unchanged");
    assert!(runs_of(&store, task.id).await.is_empty(), "no run written for a paused task");
    let out = store.fire_batch(vec![fire_req(&task, 0, 60, &[0])]).await.must("fire_batch");
    expect_len(&out, 1, "fire_batch of a paused task");
    assert_err!(&out[0], StoreError::Conflict { .. }, "fire_batch item of a paused task");
    assert!(runs_of(&store, task.id).await.is_empty(), "no run written for a paused task (batch)");

    store.set_paused("ns", "t", false, Some(ts(0)), ts(-1)).await.must("resume");
    let out = store.fire(fire_req(&task, 0, 60, &[0])).await.must("fire after resuming");
    assert_eq!(out.inserted.len(), 1);
    assert_eq!(next_fire_at(&store, task.id).await, Some(ts(60)));
}

/// One batch with every outcome: success (fenced and unfenced), CAS conflict, stale fence, unknown task, a
/// duplicate instant (success with `duplicates`), a paused task. Each item's outcome is its own; failed items
/// write nothing; outcomes are in request order.
pub async fn fire_batch_mixed_outcomes<S: Store>(store: S) {
    assert!(store.fire_batch(Vec::new()).await.must("empty fire_batch").is_empty(), "an empty batch");
    let lease = acquire(&store, 1, "me", secs(30), t0()).await;
    let (old, _new) = takeover(&store, 2).await;
    let ok_plain = create_task(&store, "ns", "ok-plain", 1, Some(ts(0))).await;
    let ok_fenced = create_task(&store, "ns", "ok-fenced", 1, Some(ts(0))).await;
    let moved = create_task(&store, "ns", "moved", 1, Some(ts(60))).await;
    let fenced = create_task(&store, "ns", "fenced", 2, Some(ts(0))).await;
    let dup = create_task(&store, "ns", "dup", 1, Some(ts(0))).await;
    let existing = run_at(&store, &dup, ts(0)).await;
    let paused = create_task(&store, "ns", "paused", 1, Some(ts(0))).await;
    store.set_paused("ns", "paused", true, None, ts(-1)).await.must("pause");
    let mut ghost = ok_plain.clone();
    ghost.id += 1_000_000;

    let mut reqs = vec![
        fire_req(&ok_plain, 0, 60, &[0]),
        fire_req(&moved, 0, 120, &[0]),
        fire_req(&fenced, 0, 60, &[0]),
        fire_req(&ghost, 0, 60, &[0]),
        fire_req(&dup, 0, 60, &[0, 30]),
        fire_req(&paused, 0, 60, &[0]),
        fire_req(&ok_fenced, 0, 90, &[0, 45]),
    ];
    reqs[2].fence = fence_of(&old);
    reqs[6].fence = fence_of(&lease);
    let out = store.fire_batch(reqs.clone()).await.must("fire_batch");
    expect_len(&out, 7, "fire_batch");

    let o = ok(&out[0], "item 0 (plain)");
    assert_eq!(o.inserted.iter().map(|r| r.scheduled_at).collect::<Vec<_>>(), vec![ts(0)], "item 0 inserted");
    assert!(o.duplicates.is_empty());
    assert_eq!(o.inserted[0].task_id, ok_plain.id);
    assert_eq!(o.inserted[0].state, RunState::Scheduled);
    assert_eq!(o.inserted[0].created_at, reqs[0].now, "created_at is the item's now");
    assert_eq!(store.get_run(o.inserted[0].id).await.must("get_run").as_ref(), Some(&o.inserted[0]), "stored");
    assert_eq!(next_fire_at(&store, ok_plain.id).await, Some(ts(60)), "item 0 advanced");

    assert_err!(&out[1], StoreError::Conflict { .. }, "item 1 (stale expected_next_fire_at)");
    assert_eq!(next_fire_at(&store, moved.id).await, Some(ts(60)), "item 1 unchanged");
    assert!(runs_of(&store, moved.id).await.is_empty(), "item 1 wrote no run");

    assert_err!(&out[2], StoreError::Fenced { .. }, "item 2 (stale fence)");
    assert_eq!(next_fire_at(&store, fenced.id).await, Some(ts(0)), "item 2 unchanged");
    assert!(runs_of(&store, fenced.id).await.is_empty(), "item 2 wrote no run");

    assert_err!(&out[3], StoreError::NotFound { .. }, "item 3 (unknown task)");
    assert!(runs_of(&store, ghost.id).await.is_empty(), "item 3 wrote no run");

    let o = ok(&out[4], "item 4 (duplicate instant)");
    assert_eq!(o.inserted.iter().map(|r| r.scheduled_at).collect::<Vec<_>>(), vec![ts(30)], "item 4 inserted");
    assert_eq!(o.duplicates, vec![ts(0)], "item 4 duplicates");
    assert_eq!(run_now(&store, existing.id).await, existing, "the existing run is untouched");
    assert_eq!(next_fire_at(&store, dup.id).await, Some(ts(60)), "item 4 advanced");

    assert_err!(&out[5], StoreError::Conflict { .. }, "item 5 (paused task)");
    assert_eq!(next_fire_at(&store, paused.id).await, Some(ts(0)), "item 5 unchanged");
    assert!(runs_of(&store, paused.id).await.is_empty(), "item 5 wrote no run");

    let o = ok(&out[6], "item 6 (current fence)");
    assert_eq!(o.inserted.iter().map(|r| r.scheduled_at).collect::<Vec<_>>(), vec![ts(0), ts(45)], "item 6");
    assert_eq!(next_fire_at(&store, ok_fenced.id).await, Some(ts(90)), "item 6 advanced");

    let mut ids: Vec<i64> = out.iter().flatten().flat_map(|o| o.inserted.iter().map(|r| r.id)).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4, "distinct run ids across the batch");
}

/// Items of one batch on the same task apply in request order, each seeing the previous ones.
pub async fn fire_batch_same_task_in_order<S: Store>(store: S) {
    let task = create_task(&store, "ns", "t", 4, Some(ts(0))).await;
    let other = create_task(&store, "ns", "other", 4, Some(ts(0))).await;
    let reqs = vec![
        fire_req(&task, 0, 60, &[0]),
        fire_req(&other, 0, 60, &[0]),
        fire_req(&task, 60, 120, &[60]),
        fire_req(&task, 0, 180, &[0, 90]),
        fire_req(&task, 120, 180, &[0, 120]),
    ];
    let out = store.fire_batch(reqs).await.must("fire_batch");
    expect_len(&out, 5, "fire_batch");
    assert_eq!(ok(&out[0], "item 0").inserted.len(), 1);
    assert_eq!(ok(&out[1], "item 1").inserted.len(), 1);
    assert_eq!(ok(&out[2], "item 2 (expects item 0's new next_fire_at)").inserted.len(), 1);
    assert_err!(&out[3], StoreError::Conflict { .. }, "item 3 (expects the value item 0 replaced)");
    let o: &FireOutcome = ok(&out[4], "item 4");
    assert_eq!(o.duplicates, vec![ts(0)], "item 4 sees item 0's run as a duplicate");
    assert_eq!(o.inserted.iter().map(|r| r.scheduled_at).collect::<Vec<_>>(), vec![ts(120)]);
    assert_eq!(instants_of(&store, task.id).await, vec![ts(0), ts(60), ts(120)], "runs of the task");
    assert_eq!(next_fire_at(&store, task.id).await, Some(ts(180)));
    assert_eq!(instants_of(&store, other.id).await, vec![ts(0)]);
}

/// Two scheduler nodes fire the same due tasks in batches (in opposite orders) over several instants: every
/// (task, instant) gets exactly one run, every item is `Ok` for exactly one node and `Conflict` for the other.
pub async fn race_fire_batch<S: Store>(store: S) {
    const TASKS: usize = 24;
    const STEPS: i64 = 5;
    let store = Arc::new(store);
    let mut tasks = Vec::new();
    for i in 0..TASKS {
        tasks.push(create_task(&*store, "ns", &format!("t{i}"), (i % 3) as u32, Some(ts(0))).await);
    }
    let tasks = Arc::new(tasks);
    let results = race(2, |node| {
        let store = store.clone();
        let tasks = tasks.clone();
        async move {
            let mut got = Vec::new();
            for k in 0..STEPS {
                let mut order: Vec<usize> = (0..TASKS).collect();
                if node == 1 {
                    order.reverse();
                }
                let reqs: Vec<FireRequest> =
                    order.iter().map(|&i| fire_req(&tasks[i], k * 60, (k + 1) * 60, &[k * 60])).collect();
                let out = store.fire_batch(reqs).await;
                let out = match out {
                    Ok(o) => o,
                    Err(e) => panic!("node {node}, step {k}: fire_batch failed as a whole: {e} ({e:?})"),
                };
                assert_eq!(out.len(), TASKS, "node {node}, step {k}: one outcome per item");
                for (&i, r) in order.iter().zip(out) {
                    got.push((i, k, r));
                }
            }
            got
        }
    })
    .await;
    let mut wins: BTreeMap<(usize, i64), usize> = BTreeMap::new();
    for (node, got) in results.into_iter().enumerate() {
        for (i, k, r) in got {
            match r {
                Ok(o) => {
                    assert_eq!(
                        o.inserted.iter().map(|r| r.scheduled_at).collect::<Vec<_>>(),
                        vec![ts(k * 60)],
                        "node {node}: the winner of (task {i}, step {k}) inserted its run"
                    );
                    assert!(o.duplicates.is_empty(), "node {node}, task {i}, step {k}: no duplicates");
                    *wins.entry((i, k)).or_default() += 1;
                }
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => panic!("node {node}, task {i}, step {k}: expected Ok or Conflict, got {e} ({e:?})"),
            }
        }
    }
    for i in 0..TASKS {
        for k in 0..STEPS {
            assert_eq!(wins.get(&(i, k)).copied(), Some(1), "(task {i}, step {k}) fired exactly once");
        }
        let want: Vec<_> = (0..STEPS).map(|k| ts(k * 60)).collect();
        assert_eq!(instants_of(&*store, tasks[i].id).await, want, "task {i}: exactly one run per instant");
        assert_eq!(next_fire_at(&*store, tasks[i].id).await, Some(ts(STEPS * 60)), "task {i}: next_fire_at");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// transition_run error order
// ---------------------------------------------------------------------------------------------------------------

/// `transition_run` reports NotFound, then Fenced, then Conflict, then InvalidTransition.
pub async fn run_transition_error_order<S: Store>(store: S) {
    let task = create_task(&store, "ns", "t", 9, None).await;
    let run = run_at(&store, &task, ts(0)).await;
    let (old, new) = takeover(&store, 9).await;
    let mut t = transition(run.id + 1_000_000, &[RunState::Running], RunState::Running, ts(30));
    t.fence = fence_of(&old);
    assert_err!(store.transition_run(t.clone()).await, StoreError::NotFound { .. }, "unknown run, stale fence");
    t.run_id = run.id;
    assert_err!(store.transition_run(t.clone()).await, StoreError::Fenced { .. }, "stale fence, wrong from");
    t.fence = fence_of(&new);
    assert_err!(store.transition_run(t.clone()).await, StoreError::Conflict { .. }, "wrong from, invalid to");
    t.from = vec![RunState::Scheduled];
    assert_err!(store.transition_run(t).await, StoreError::InvalidTransition { .. }, "scheduled -> running");
    assert_eq!(run_now(&store, run.id).await, run, "no error wrote anything");
}

// ---------------------------------------------------------------------------------------------------------------
// start_attempt / start_attempts
// ---------------------------------------------------------------------------------------------------------------

/// `start_attempt` applies the transition and inserts the attempt atomically: any error writes nothing.
pub async fn start_attempt_atomic<S: Store>(store: S) {
    let task = create_task(&store, "ns", "t", 3, None).await;
    let r1 = run_at(&store, &task, ts(0)).await;
    let (run, att) = store
        .start_attempt(dispatch(&r1, 1, "sched-a", 1), new_attempt(r1.id, 1, "node-a", 1))
        .await
        .must("start_attempt");
    assert_eq!(run.state, RunState::Dispatching);
    assert_eq!(run.attempts, 1);
    assert_eq!(run.owner.as_deref(), Some("sched-a"));
    assert_eq!(run.started_at, Some(ts(1)));
    assert_eq!(run.next_attempt_at, Some(ts(301)));
    assert_eq!(run.updated_at, ts(1));
    assert_eq!(run_now(&store, r1.id).await, run, "the returned run is what is stored");
    assert_eq!(
        (att.run_id, att.attempt, att.node.as_str(), att.state, att.started_at, att.deadline),
        (r1.id, 1, "node-a", AttemptState::Running, ts(1), Some(ts(301))),
        "the attempt record"
    );
    assert_eq!(store.list_attempts(r1.id).await.must("list_attempts"), vec![att.clone()], "the attempt is stored");

    // CAS failure: the run is no longer scheduled. No attempt is written.
    assert_err!(
        store.start_attempt(dispatch(&r1, 2, "sched-b", 2), new_attempt(r1.id, 2, "node-b", 2)).await,
        StoreError::Conflict { .. },
        "start_attempt on a dispatching run (from [scheduled])"
    );
    assert_eq!(store.list_attempts(r1.id).await.must("list_attempts"), vec![att], "no attempt after a CAS failure");
    assert_eq!(run_now(&store, r1.id).await, run, "run unchanged after a CAS failure");

    // Duplicate attempt: the run does not move.
    let r2 = run_at(&store, &task, ts(60)).await;
    let existing = store.insert_attempt(new_attempt(r2.id, 1, "node-a", 61)).await.must("insert_attempt");
    assert_err!(
        store.start_attempt(dispatch(&r2, 1, "sched-a", 62), new_attempt(r2.id, 1, "node-a", 62)).await,
        StoreError::Conflict { .. },
        "start_attempt with a duplicate (run, attempt, node)"
    );
    assert_eq!(run_now(&store, r2.id).await, r2, "a duplicate attempt leaves the run untouched");
    assert_eq!(store.list_attempts(r2.id).await.must("list_attempts"), vec![existing]);

    // Unknown run.
    let ghost = r2.id + 1_000_000;
    let mut t = dispatch(&r2, 1, "sched-a", 63);
    t.run_id = ghost;
    assert_err!(
        store.start_attempt(t, new_attempt(ghost, 1, "node-a", 63)).await,
        StoreError::NotFound { .. },
        "start_attempt on an unknown run"
    );
    assert!(store.list_attempts(ghost).await.unwrap_or_default().is_empty(), "no attempt for an unknown run");

    // Invalid transition.
    let r3 = run_at(&store, &task, ts(120)).await;
    let mut t = dispatch(&r3, 1, "sched-a", 121);
    t.to = RunState::Running;
    assert_err!(
        store.start_attempt(t, new_attempt(r3.id, 1, "node-a", 121)).await,
        StoreError::InvalidTransition { .. },
        "start_attempt scheduled -> running"
    );
    assert_eq!(run_now(&store, r3.id).await, r3);
    assert!(store.list_attempts(r3.id).await.must("list_attempts").is_empty());

    // Stale fence, then the current one.
    let (old, new) = takeover(&store, 3).await;
    let mut t = dispatch(&r3, 1, "old-holder", 122);
    t.fence = fence_of(&old);
    assert_err!(
        store.start_attempt(t.clone(), new_attempt(r3.id, 1, "node-a", 122)).await,
        StoreError::Fenced { .. },
        "start_attempt with a stale fence"
    );
    assert_eq!(run_now(&store, r3.id).await, r3, "a fenced start writes nothing");
    assert!(store.list_attempts(r3.id).await.must("list_attempts").is_empty(), "a fenced start writes no attempt");
    t.fence = fence_of(&new);
    let (run, _) = store.start_attempt(t, new_attempt(r3.id, 1, "node-a", 122)).await.must("current fence");
    assert_eq!(run.state, RunState::Dispatching);
}

/// `start_attempts`: one outcome per item, in order; failed items write nothing; a later item on the same run sees
/// the earlier one.
pub async fn start_attempts_mixed_outcomes<S: Store>(store: S) {
    assert!(store.start_attempts(Vec::new()).await.must("empty start_attempts").is_empty());
    let task = create_task(&store, "ns", "t", 3, None).await;
    let r1 = run_at(&store, &task, ts(0)).await;
    let r2 = drive_to(&store, run_at(&store, &task, ts(60)).await, RunState::Dispatching, ts(1)).await;
    let r3 = run_at(&store, &task, ts(120)).await;
    let dup = store.insert_attempt(new_attempt(r3.id, 1, "node-a", 1)).await.must("insert_attempt");
    let r4 = run_at(&store, &task, ts(180)).await;
    let ghost = r4.id + 1_000_000;
    let mut ghost_t = dispatch(&r4, 1, "sched-a", 2);
    ghost_t.run_id = ghost;

    let items = vec![
        (dispatch(&r1, 1, "sched-a", 2), new_attempt(r1.id, 1, "node-a", 2)),
        (dispatch(&r2, 2, "sched-a", 2), new_attempt(r2.id, 2, "node-a", 2)),
        (dispatch(&r3, 1, "sched-a", 2), new_attempt(r3.id, 1, "node-a", 2)),
        (ghost_t, new_attempt(ghost, 1, "node-a", 2)),
        (dispatch(&r4, 1, "sched-a", 2), new_attempt(r4.id, 1, "node-b", 2)),
        (dispatch(&r1, 2, "sched-a", 3), new_attempt(r1.id, 2, "node-a", 3)),
    ];
    let out = store.start_attempts(items).await.must("start_attempts");
    expect_len(&out, 6, "start_attempts");

    let (run, att) = ok(&out[0], "item 0");
    assert_eq!((run.id, run.state, run.attempts), (r1.id, RunState::Dispatching, 1));
    assert_eq!((att.run_id, att.attempt, att.node.as_str()), (r1.id, 1, "node-a"));
    assert_eq!(&run_now(&store, r1.id).await, run, "item 0 stored");

    assert_err!(&out[1], StoreError::Conflict { .. }, "item 1 (run already dispatching)");
    assert_eq!(run_now(&store, r2.id).await, r2, "item 1 left its run untouched");
    assert!(store.list_attempts(r2.id).await.must("list_attempts").is_empty(), "item 1 wrote no attempt");

    assert_err!(&out[2], StoreError::Conflict { .. }, "item 2 (duplicate attempt)");
    assert_eq!(run_now(&store, r3.id).await, r3, "item 2 left its run untouched");
    assert_eq!(store.list_attempts(r3.id).await.must("list_attempts"), vec![dup]);

    assert_err!(&out[3], StoreError::NotFound { .. }, "item 3 (unknown run)");

    let (run, att) = ok(&out[4], "item 4");
    assert_eq!((run.state, att.node.as_str()), (RunState::Dispatching, "node-b"));
    assert_eq!(store.list_attempts(r4.id).await.must("list_attempts"), vec![att.clone()]);

    assert_err!(&out[5], StoreError::Conflict { .. }, "item 5 (same run as item 0, which moved it)");
    let (first, first_att) = ok(&out[0], "item 0");
    assert_eq!(&run_now(&store, r1.id).await, first, "item 5 did not touch the run");
    assert_eq!(&store.list_attempts(r1.id).await.must("list_attempts"), &vec![first_att.clone()], "item 5: no attempt");
}

// ---------------------------------------------------------------------------------------------------------------
// complete_attempt / complete_attempts
// ---------------------------------------------------------------------------------------------------------------

/// `complete_attempt` finishes the attempt and moves the run atomically: any error writes nothing.
pub async fn complete_attempt_atomic<S: Store>(store: S) {
    let task = create_task(&store, "ns", "t", 5, None).await;

    // Success, with and without a transition.
    let (r1, a1) = started(&store, &run_at(&store, &task, ts(0)).await, "node-a", 1).await;
    let c = complete(&a1, AttemptState::Succeeded, 5);
    let mut t = transition(r1.id, &[RunState::Dispatching, RunState::Running], RunState::Succeeded, ts(5));
    t.patch.output = c.output.clone();
    t.patch.finished_at = Some(ts(5));
    let (run, att) = store.complete_attempt(c.clone(), Some(t)).await.must("complete_attempt");
    let run = run.expect("a run record when a transition is given");
    assert_eq!((run.state, run.finished_at, &run.output), (RunState::Succeeded, Some(ts(5)), &c.output));
    assert_eq!(att, AttemptRecord { state: AttemptState::Succeeded, finished_at: Some(ts(5)), output: c.output, ..a1 });
    assert_eq!(run_now(&store, r1.id).await, run, "run stored");
    assert_eq!(store.list_attempts(r1.id).await.must("list_attempts"), vec![att], "attempt stored");

    let (r2, a2) = started(&store, &run_at(&store, &task, ts(60)).await, "node-a", 61).await;
    let (none, att) =
        store.complete_attempt(complete(&a2, AttemptState::Failed, 62), None).await.must("complete without transition");
    assert!(none.is_none(), "no run record without a transition");
    assert_eq!((att.state, att.error.is_some()), (AttemptState::Failed, true));
    assert_eq!(run_now(&store, r2.id).await, r2, "the run is untouched without a transition");

    // Already finished attempt: Conflict, the run does not move.
    let mut t = transition(r2.id, &[RunState::Dispatching], RunState::Succeeded, ts(63));
    assert_err!(
        store.complete_attempt(complete(&a2, AttemptState::Succeeded, 63), Some(t.clone())).await,
        StoreError::Conflict { .. },
        "complete_attempt of a finished attempt"
    );
    assert_eq!(run_now(&store, r2.id).await, r2, "the run did not move");
    assert_eq!(store.list_attempts(r2.id).await.must("list_attempts")[0].state, AttemptState::Failed, "first outcome");

    // Transition conflict: the attempt stays running.
    let (r3, a3) = started(&store, &run_at(&store, &task, ts(120)).await, "node-a", 121).await;
    t = transition(r3.id, &[RunState::Running], RunState::Succeeded, ts(122));
    assert_err!(
        store.complete_attempt(complete(&a3, AttemptState::Succeeded, 122), Some(t)).await,
        StoreError::Conflict { .. },
        "complete_attempt whose transition conflicts"
    );
    assert_eq!(store.list_attempts(r3.id).await.must("list_attempts"), vec![a3.clone()], "the attempt stays running");
    assert_eq!(run_now(&store, r3.id).await, r3);

    // Unknown attempt.
    let mut ghost = a3.clone();
    ghost.id += 1_000_000;
    assert_err!(
        store.complete_attempt(complete(&ghost, AttemptState::Succeeded, 123), None).await,
        StoreError::NotFound { .. },
        "complete_attempt of an unknown attempt"
    );

    // Stale fence on the transition: Fenced, the attempt stays running; the current fence works.
    let (old, new) = takeover(&store, 5).await;
    let mut t = transition(r3.id, &[RunState::Dispatching], RunState::TimedOut, ts(124));
    t.fence = fence_of(&old);
    assert_err!(
        store.complete_attempt(complete(&a3, AttemptState::TimedOut, 124), Some(t.clone())).await,
        StoreError::Fenced { .. },
        "complete_attempt with a stale fence"
    );
    assert_eq!(store.list_attempts(r3.id).await.must("list_attempts"), vec![a3.clone()], "still running");
    assert_eq!(run_now(&store, r3.id).await, r3);
    t.fence = fence_of(&new);
    let (run, att) =
        store.complete_attempt(complete(&a3, AttemptState::TimedOut, 124), Some(t)).await.must("current fence");
    assert_eq!((run.map(|r| r.state), att.state), (Some(RunState::TimedOut), AttemptState::TimedOut));
}

/// `complete_attempts`: one outcome per item, in order; failed items write nothing; items on the same attempt or
/// run see the earlier ones (broadcast attempts of one run complete in one batch).
pub async fn complete_attempts_mixed_outcomes<S: Store>(store: S) {
    assert!(store.complete_attempts(Vec::new()).await.must("empty complete_attempts").is_empty());
    let task = create_task(&store, "ns", "t", 5, None).await;
    let mut started_runs = Vec::new();
    for k in 0..4 {
        started_runs.push(started(&store, &run_at(&store, &task, ts(k * 60)).await, "node-a", k * 60 + 1).await);
    }
    let [(r1, a1), (r2, a2), (r3, a3), (r4, a4)] = <[_; 4]>::try_from(started_runs).expect("four runs");
    store.finish_attempt(a2.id, AttemptState::Failed, None, Some("lost".into()), ts(300)).await.must("finish a2");
    // A broadcast run: two attempts.
    let r5 = run_at(&store, &task, ts(600)).await;
    let (r5, a5a) = started(&store, &r5, "node-a", 601).await;
    let a5b = store.insert_attempt(new_attempt(r5.id, 1, "node-b", 601)).await.must("broadcast attempt");
    let mut ghost = a1.clone();
    ghost.id += 1_000_000;

    let mut retry = transition(r4.id, &[RunState::Dispatching], RunState::Scheduled, ts(400));
    retry.patch.next_attempt_at = Some(Some(ts(460)));
    retry.patch.error = Some("exit 1".into());
    let items = vec![
        (
            complete(&a1, AttemptState::Succeeded, 400),
            Some(transition(r1.id, &[RunState::Dispatching], RunState::Succeeded, ts(400))),
        ),
        (
            complete(&a2, AttemptState::Succeeded, 400),
            Some(transition(r2.id, &[RunState::Dispatching], RunState::Succeeded, ts(400))),
        ),
        (
            complete(&a3, AttemptState::Succeeded, 400),
            Some(transition(r3.id, &[RunState::Running], RunState::Succeeded, ts(400))),
        ),
        (complete(&ghost, AttemptState::Succeeded, 400), None),
        (complete(&a4, AttemptState::Failed, 400), Some(retry)),
        (complete(&a1, AttemptState::Failed, 401), None),
        (complete(&a5a, AttemptState::Succeeded, 402), None),
        (
            complete(&a5b, AttemptState::Succeeded, 403),
            Some(transition(r5.id, &[RunState::Dispatching], RunState::Succeeded, ts(403))),
        ),
    ];
    let out = store.complete_attempts(items).await.must("complete_attempts");
    expect_len(&out, 8, "complete_attempts");

    let (run, att) = ok(&out[0], "item 0");
    assert_eq!((run.as_ref().map(|r| r.state), att.state), (Some(RunState::Succeeded), AttemptState::Succeeded));
    assert_eq!(Some(run_now(&store, r1.id).await).as_ref(), run.as_ref(), "item 0 run stored");

    assert_err!(&out[1], StoreError::Conflict { .. }, "item 1 (attempt already finished)");
    assert_eq!(run_now(&store, r2.id).await, r2, "item 1: the run did not move");

    assert_err!(&out[2], StoreError::Conflict { .. }, "item 2 (transition conflict)");
    assert_eq!(store.list_attempts(r3.id).await.must("list_attempts"), vec![a3], "item 2: attempt stays running");
    assert_eq!(run_now(&store, r3.id).await, r3, "item 2: run untouched");

    assert_err!(&out[3], StoreError::NotFound { .. }, "item 3 (unknown attempt)");

    let (run, att) = ok(&out[4], "item 4 (retry)");
    let run = run.as_ref().expect("run");
    assert_eq!(
        (run.state, run.next_attempt_at, run.error.as_deref()),
        (RunState::Scheduled, Some(ts(460)), Some("exit 1"))
    );
    assert_eq!(att.state, AttemptState::Failed);
    assert_eq!(&run_now(&store, r4.id).await, run);

    assert_err!(&out[5], StoreError::Conflict { .. }, "item 5 (attempt finished by item 0)");
    let listed = store.list_attempts(r1.id).await.must("list_attempts");
    assert_eq!(listed, vec![ok(&out[0], "item 0").1.clone()], "item 0's outcome stays");

    let (none, att) = ok(&out[6], "item 6 (broadcast, no transition)");
    assert!(none.is_none());
    assert_eq!(att.state, AttemptState::Succeeded);
    let (run, att) = ok(&out[7], "item 7 (broadcast, last attempt moves the run)");
    assert_eq!((run.as_ref().map(|r| r.state), att.state), (Some(RunState::Succeeded), AttemptState::Succeeded));
    let listed = store.list_attempts(r5.id).await.must("list_attempts");
    assert!(listed.iter().all(|a| a.state == AttemptState::Succeeded), "both broadcast attempts finished: {listed:?}");
}
