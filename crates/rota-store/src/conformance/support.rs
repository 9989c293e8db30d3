//! Shared helpers of the conformance cases.

use std::collections::BTreeMap;
use std::fmt::{Debug, Display};
use std::future::Future;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use serde_json::{Value, json};

use crate::{
    Fence, InsertRun, Lease, NewRun, Page, PageRequest, RunPatch, RunRecord, RunState, Store, StoreResult, TaskRecord,
    TaskWrite, Transition, TriggerKind,
};

/// The suite's reference instant: 2026-09-21T…, with non-zero milliseconds.
pub(crate) fn t0() -> DateTime<Utc> {
    Utc.timestamp_millis_opt(1_790_000_000_123).single().expect("valid instant")
}

/// `t0()` plus `secs` seconds.
pub(crate) fn ts(secs: i64) -> DateTime<Utc> {
    t0() + TimeDelta::seconds(secs)
}

/// `t0()` plus `ms` milliseconds.
pub(crate) fn tms(ms: i64) -> DateTime<Utc> {
    t0() + TimeDelta::milliseconds(ms)
}

pub(crate) fn secs(n: u64) -> std::time::Duration {
    std::time::Duration::from_secs(n)
}

/// `Result` helpers with context.
pub(crate) trait Must<T> {
    /// Unwraps, panicking with `ctx` and the error.
    fn must(self, ctx: impl Display) -> T;
}

impl<T> Must<T> for StoreResult<T> {
    #[track_caller]
    fn must(self, ctx: impl Display) -> T {
        match self {
            Ok(v) => v,
            Err(e) => panic!("{ctx}: expected success, got error {e} ({e:?})"),
        }
    }
}

/// Asserts that a `StoreResult` is an error matching a pattern.
macro_rules! assert_err {
    ($res:expr, $pat:pat, $($ctx:tt)+) => {
        match $res {
            Err($pat) => {}
            other => panic!(
                "{}: expected Err({}), got {:?}",
                format_args!($($ctx)+),
                stringify!($pat),
                other
            ),
        }
    };
}
pub(crate) use assert_err;

pub(crate) fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

pub(crate) fn spec_for(namespace: &str, name: &str) -> Value {
    json!({
        "apiVersion": "rota/v1",
        "kind": "Task",
        "metadata": {"namespace": namespace, "name": name},
        "spec": {"schedule": {"cron": "*/5 * * * *"}, "target": {"http": {"url": "http://example.invalid/run"}}}
    })
}

pub(crate) fn task_write(namespace: &str, name: &str, shard: u32, next_fire_at: Option<DateTime<Utc>>) -> TaskWrite {
    TaskWrite {
        namespace: namespace.to_string(),
        name: name.to_string(),
        labels: BTreeMap::new(),
        spec: spec_for(namespace, name),
        shard,
        next_fire_at,
    }
}

/// Creates a task (`MustNotExist`) at `t0()`.
pub(crate) async fn create_task<S: Store>(
    store: &S,
    namespace: &str,
    name: &str,
    shard: u32,
    next_fire_at: Option<DateTime<Utc>>,
) -> TaskRecord {
    store
        .put_task(task_write(namespace, name, shard, next_fire_at), crate::Precondition::MustNotExist, t0())
        .await
        .must(format_args!("put_task({namespace}/{name}, MustNotExist)"))
}

pub(crate) fn new_run(task: &TaskRecord, scheduled_at: DateTime<Utc>) -> NewRun {
    NewRun {
        task_id: task.id,
        namespace: task.namespace.clone(),
        name: task.name.clone(),
        task_version: task.version,
        shard: task.shard,
        scheduled_at,
        trigger: TriggerKind::Schedule,
        state: RunState::Scheduled,
        next_attempt_at: None,
        params: json!({"scheduled": scheduled_at.timestamp_millis()}),
        reason: None,
    }
}

/// Inserts a run (no fence) and expects `Inserted`.
pub(crate) async fn insert_run_ok<S: Store>(store: &S, run: NewRun) -> RunRecord {
    let what = format!("insert_run(task {}, scheduled_at {})", run.task_id, run.scheduled_at);
    match store.insert_run(run, None, t0()).await.must(&what) {
        InsertRun::Inserted(r) => r,
        InsertRun::Duplicate(r) => panic!("{what}: expected Inserted, got Duplicate({r:?})"),
    }
}

/// Inserts a run for `task` at `scheduled_at` and expects `Inserted`.
pub(crate) async fn run_at<S: Store>(store: &S, task: &TaskRecord, scheduled_at: DateTime<Utc>) -> RunRecord {
    insert_run_ok(store, new_run(task, scheduled_at)).await
}

pub(crate) fn transition(run_id: i64, from: &[RunState], to: RunState, now: DateTime<Utc>) -> Transition {
    Transition { run_id, from: from.to_vec(), to, patch: RunPatch::default(), fence: None, now }
}

/// Applies an unfenced transition from the run's current state and expects success.
pub(crate) async fn move_run<S: Store>(store: &S, run: &RunRecord, to: RunState, now: DateTime<Utc>) -> RunRecord {
    let r = store
        .transition_run(transition(run.id, &[run.state], to, now))
        .await
        .must(format_args!("transition_run(run {}, {} -> {to})", run.id, run.state));
    assert_eq!(r.state, to, "transition_run(run {}, {} -> {to}) returned a record in another state", run.id, run.state);
    r
}

/// Drives a freshly inserted (scheduled) run into `target` through allowed transitions.
pub(crate) async fn drive_to<S: Store>(store: &S, run: RunRecord, target: RunState, now: DateTime<Utc>) -> RunRecord {
    use RunState::*;
    assert_eq!(run.state, Scheduled, "drive_to expects a scheduled run");
    let path: &[RunState] = match target {
        Scheduled => &[],
        Dispatching => &[Dispatching],
        Running => &[Dispatching, Running],
        Succeeded => &[Dispatching, Running, Succeeded],
        Failed => &[Dispatching, Running, Failed],
        TimedOut => &[Dispatching, Running, TimedOut],
        Skipped => &[Skipped],
        Cancelled => &[Cancelled],
    };
    let mut run = run;
    for &to in path {
        run = move_run(store, &run, to, now).await;
    }
    run
}

/// Acquires `shard` for `owner` at `now` and expects success.
pub(crate) async fn acquire<S: Store>(
    store: &S,
    shard: u32,
    owner: &str,
    ttl: std::time::Duration,
    now: DateTime<Utc>,
) -> Lease {
    store
        .acquire_lease(shard, owner, ttl, now)
        .await
        .must(format_args!("acquire_lease(shard {shard}, {owner})"))
        .unwrap_or_else(|| panic!("acquire_lease(shard {shard}, {owner}) at {now}: expected a lease, got None"))
}

/// Acquires `shard` for `old`, lets it expire and has `new` take it over; returns (stale, current) leases.
pub(crate) async fn takeover<S: Store>(store: &S, shard: u32) -> (Lease, Lease) {
    let old = acquire(store, shard, "old-holder", secs(10), ts(0)).await;
    let new = acquire(store, shard, "new-holder", secs(10), ts(20)).await;
    assert!(
        new.epoch > old.epoch,
        "takeover of shard {shard}: new holder's epoch {} must exceed the old holder's {}",
        new.epoch,
        old.epoch
    );
    (old, new)
}

pub(crate) fn fence_of(lease: &Lease) -> Option<Fence> {
    Some(lease.fence())
}

/// Follows `next_cursor` until it is `None`; returns the pages. Checks that no page exceeds the effective limit,
/// that only the final page may be empty (and only right after a full page) and that pagination terminates.
pub(crate) async fn collect_pages<T, F, Fut>(what: &str, limit: u32, mut fetch: F) -> Vec<Vec<T>>
where
    T: Debug,
    F: FnMut(PageRequest) -> Fut,
    Fut: Future<Output = StoreResult<Page<T>>>,
{
    let effective = PageRequest::first(limit).effective_limit() as usize;
    let mut pages: Vec<Vec<T>> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        assert!(pages.len() < 10_000, "{what}: pagination does not terminate (10000 pages)");
        let req = PageRequest { cursor: cursor.clone(), limit };
        let page = fetch(req).await.must(format_args!("{what}: page {} (cursor {cursor:?})", pages.len() + 1));
        assert!(
            page.items.len() <= effective,
            "{what}: page {} has {} items, more than the limit {effective}",
            pages.len() + 1,
            page.items.len()
        );
        if page.items.is_empty() {
            assert!(page.next_cursor.is_none(), "{what}: an empty page must be the last one (next_cursor None)");
            if let Some(prev) = pages.last() {
                assert_eq!(prev.len(), effective, "{what}: empty trailing page after a page that was not full");
            }
            if !pages.is_empty() {
                break;
            }
        } else if page.next_cursor.is_some() {
            assert_eq!(
                page.items.len(),
                effective,
                "{what}: page {} is not full ({} items) but has a next_cursor",
                pages.len() + 1,
                page.items.len()
            );
        }
        let done = page.next_cursor.is_none();
        cursor = page.next_cursor;
        pages.push(page.items);
        if done {
            break;
        }
    }
    pages
}

/// Runs `n` copies of a future factory concurrently on the runtime, released together by a barrier; returns the
/// results in spawn order (panics in a racer propagate).
pub(crate) async fn race<T, F, Fut>(n: usize, mut make: F) -> Vec<T>
where
    T: Send + 'static,
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(n));
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let fut = make(i);
        let barrier = barrier.clone();
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            fut.await
        }));
    }
    let mut out = Vec::with_capacity(n);
    for h in handles {
        match h.await {
            Ok(v) => out.push(v),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("racing task failed: {e}"),
        }
    }
    out
}
