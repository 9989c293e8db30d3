//! Rota's storage abstraction.
//!
//! The scheduler keeps everything that must survive a crash in a store: task specifications (versioned),
//! the due index (which task fires next, per shard), runs and their attempts and logs, the executor and scheduler
//! node registry, shard leases with fencing epochs, the audit log, and the API tokens (hashes only) and role
//! bindings of the management API. This crate defines that contract as public traits ([`TaskStore`],
//! [`RunStore`], [`NodeStore`], [`LeaseStore`], [`AuditStore`], [`AuthStore`], bundled as [`Store`]), one error
//! type ([`StoreError`]) and, behind the `conformance` feature, the conformance suite that every implementation
//! runs unchanged.
//!
//! Rota's own backends (SQLite, PostgreSQL, MySQL in `rota-store-sql`) implement these traits exactly as a user's
//! backend would; nothing in the scheduler knows which one it talks to.
//!
//! # Writing your own backend
//!
//! 1. Implement every trait of [`Store`] for your type (it must be `Send + Sync + 'static`).
//! 2. Add `rota-store = { version = "…", features = ["conformance"] }` to your `[dev-dependencies]`.
//! 3. In a test file, give the suite an async expression that builds a *fresh, empty* store, and invoke the macro:
//!
//! ```ignore
//! async fn fresh() -> MyStore { MyStore::connect_to_new_empty_database().await.unwrap() }
//! rota_store::conformance_tests!(fresh().await);
//! ```
//!
//! The macro expands to one `#[test]` per conformance case, each on its own multi-threaded Tokio runtime (the
//! backend crate needs no Tokio dev-dependency for it), so a failure names the case. The same suite runs against
//! SQLite, PostgreSQL and MySQL in this repository; see the `conformance` module (feature `conformance`).
//!
//! # Time
//!
//! All instants are `DateTime<Utc>` with millisecond precision: backends may truncate to milliseconds and callers
//! must not rely on anything finer. "now" is always passed in by the caller, so the suite (and the scheduler's
//! tests) control time.
//!
//! # Fencing
//!
//! A scheduler node acts on a shard only while it holds that shard's lease. Each acquisition of a shard by a new
//! holder increments the shard's *epoch*. Writes that fire or dispatch work carry a [`Fence`] (shard + epoch); the
//! store rejects them with [`StoreError::Fenced`] unless the shard's current epoch still equals the fence's, checked
//! atomically with the write. Expiry is not part of the fence check: an expired lease that nobody took over still
//! protects the shard, because nobody else can act on it without bumping the epoch.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[cfg(feature = "conformance")]
pub mod conformance;

/// Result alias used by every store method.
pub type StoreResult<T> = Result<T, StoreError>;

/// The one error type of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The addressed entity does not exist.
    #[error("{entity} not found: {key}")]
    NotFound { entity: &'static str, key: String },
    /// An optimistic-concurrency precondition failed (wrong version, already exists, state changed meanwhile).
    #[error("conflict on {entity} {key}: {reason}")]
    Conflict { entity: &'static str, key: String, reason: String },
    /// The write carried a fencing epoch that is no longer current for its shard.
    #[error("fenced: shard {shard} is no longer held at epoch {epoch}")]
    Fenced { shard: u32, epoch: i64 },
    /// A run state transition that the run state machine does not allow.
    #[error("invalid run transition for run {run_id}: {from} -> {to}")]
    InvalidTransition { run_id: i64, from: RunState, to: RunState },
    /// An argument the store cannot accept (names the field).
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    /// The backend failed (connection lost, I/O, unexpected data). The message never contains secrets.
    #[error("storage backend error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl StoreError {
    /// Wraps any backend error.
    pub fn backend(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Backend(Box::new(e))
    }

    /// Shorthand for [`StoreError::NotFound`].
    pub fn not_found(entity: &'static str, key: impl fmt::Display) -> Self {
        StoreError::NotFound { entity, key: key.to_string() }
    }

    /// Shorthand for [`StoreError::Conflict`].
    pub fn conflict(entity: &'static str, key: impl fmt::Display, reason: impl Into<String>) -> Self {
        StoreError::Conflict { entity, key: key.to_string(), reason: reason.into() }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }

    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict { .. })
    }

    pub fn is_fenced(&self) -> bool {
        matches!(self, StoreError::Fenced { .. })
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Pagination
// ---------------------------------------------------------------------------------------------------------------

/// Keyset pagination request. `cursor` is the opaque `next_cursor` of the previous page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    pub cursor: Option<String>,
    /// Maximum items; backends clamp it to `1..=MAX_PAGE_SIZE` (0 means the default of 100).
    pub limit: u32,
}

/// Largest page any backend returns.
pub const MAX_PAGE_SIZE: u32 = 1000;

impl PageRequest {
    pub fn first(limit: u32) -> Self {
        PageRequest { cursor: None, limit }
    }

    pub fn after(cursor: impl Into<String>, limit: u32) -> Self {
        PageRequest { cursor: Some(cursor.into()), limit }
    }

    /// The effective limit: 0 → 100, capped at [`MAX_PAGE_SIZE`].
    pub fn effective_limit(&self) -> u32 {
        match self.limit {
            0 => 100,
            n => n.min(MAX_PAGE_SIZE),
        }
    }
}

/// One page of results. `next_cursor` is `None` on the last page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Cursor helpers for backends whose keyset is a single integer id (the default backends use them; a user's
/// backend may encode cursors any way it likes, they are opaque to callers).
pub mod cursor {
    use super::StoreError;

    pub fn encode_id(id: i64) -> String {
        format!("i{id}")
    }

    pub fn decode_id(cursor: &str) -> Result<i64, StoreError> {
        cursor
            .strip_prefix('i')
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or_else(|| StoreError::InvalidArgument { field: "cursor", reason: "malformed cursor".into() })
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Tasks
// ---------------------------------------------------------------------------------------------------------------

/// What to store for a task. `spec` is the full task document (opaque to the store); the other fields are
/// denormalised from it (or computed by the scheduler) so the store can index them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskWrite {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub spec: Value,
    /// Shard the task hashes into (computed by the scheduler from namespace/name).
    pub shard: u32,
    /// Next instant the task fires by time; `None` for manual or finished tasks.
    pub next_fire_at: Option<DateTime<Utc>>,
}

/// Optimistic-concurrency precondition of [`TaskStore::put_task`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Create or replace, whatever is there.
    Any,
    /// Create only; [`StoreError::Conflict`] if the task exists.
    MustNotExist,
    /// Replace only if the current version equals this one; otherwise `Conflict` (or `NotFound`).
    Version(i64),
}

/// A stored task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub id: i64,
    pub namespace: String,
    pub name: String,
    /// Starts at 1, incremented by every `put_task` that replaces the spec.
    pub version: i64,
    pub labels: BTreeMap<String, String>,
    pub spec: Value,
    pub shard: u32,
    pub next_fire_at: Option<DateTime<Utc>>,
    pub paused: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl TaskRecord {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// One historical version of a task's spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskVersion {
    pub task_id: i64,
    pub version: i64,
    pub spec: Value,
    pub created_at: DateTime<Utc>,
}

/// Filters of [`TaskStore::list_tasks`]. Every given label must match exactly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    pub namespace: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub paused: Option<bool>,
}

/// A task that is due (from the due index).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DueTask {
    pub task_id: i64,
    pub namespace: String,
    pub name: String,
    pub version: i64,
    pub next_fire_at: DateTime<Utc>,
}

/// Tasks, their versions, and the due index.
#[async_trait]
pub trait TaskStore: Send + Sync {
    /// Creates or replaces a task. Replacing keeps `paused`, increments `version` and records the new version in
    /// the version history; `shard` and `next_fire_at` are taken from `task`.
    async fn put_task(
        &self,
        task: TaskWrite,
        precondition: Precondition,
        now: DateTime<Utc>,
    ) -> StoreResult<TaskRecord>;

    async fn get_task(&self, namespace: &str, name: &str) -> StoreResult<Option<TaskRecord>>;

    async fn get_task_by_id(&self, id: i64) -> StoreResult<Option<TaskRecord>>;

    /// Deletes a task, its versions and labels. Runs stay as history. Returns whether the task existed.
    async fn delete_task(&self, namespace: &str, name: &str) -> StoreResult<bool>;

    /// Lists tasks matching the filter in a stable order (the default backends: creation order), keyset paginated.
    async fn list_tasks(&self, filter: &TaskFilter, page: &PageRequest) -> StoreResult<Page<TaskRecord>>;

    /// The version history of a task, oldest first.
    async fn task_versions(&self, namespace: &str, name: &str) -> StoreResult<Vec<TaskVersion>>;

    /// Pauses or resumes a task. Resuming sets `next_fire_at` to the given value (the scheduler recomputes it).
    async fn set_paused(
        &self,
        namespace: &str,
        name: &str,
        paused: bool,
        next_fire_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> StoreResult<TaskRecord>;

    /// Up to `limit` unpaused tasks of `shard` whose `next_fire_at <= until`, ordered by `next_fire_at` then id.
    async fn due_tasks(&self, shard: u32, until: DateTime<Utc>, limit: u32) -> StoreResult<Vec<DueTask>>;

    /// Atomically: checks the fence (if any), checks that the task's `next_fire_at` still equals
    /// `expected_next_fire_at` (compare-and-set, so two firers cannot both advance it), inserts `runs` (skipping any
    /// whose (task, scheduled_at) already exists) and sets `next_fire_at` to `new_next_fire_at`.
    ///
    /// Errors: `Fenced` when the fence is stale; `Conflict` when `next_fire_at` moved meanwhile **or the task is
    /// paused** (checked atomically, so a pause acknowledged before the fire wins); `NotFound` when the task is
    /// gone. Nothing is written on error.
    async fn fire(&self, req: FireRequest) -> StoreResult<FireOutcome>;

    /// Several independent [`fire`](TaskStore::fire)s in as few round trips as the backend can manage (the
    /// default backends: one transaction). Each request keeps its own all-or-nothing semantics and its own
    /// outcome: a `Conflict`, `NotFound` or `Fenced` of one request writes nothing for it and does not affect the
    /// others. The outer error is for failures that affect the whole batch (e.g. the connection dropped), in which
    /// case nothing of the batch is written. Outcomes are in request order.
    ///
    /// The default implementation calls `fire` for each request (correct, not faster).
    async fn fire_batch(&self, reqs: Vec<FireRequest>) -> StoreResult<Vec<StoreResult<FireOutcome>>> {
        let mut out = Vec::with_capacity(reqs.len());
        for r in reqs {
            out.push(self.fire(r).await);
        }
        Ok(out)
    }
}

/// Input of [`TaskStore::fire`].
#[derive(Debug, Clone, PartialEq)]
pub struct FireRequest {
    pub task_id: i64,
    pub expected_next_fire_at: Option<DateTime<Utc>>,
    pub new_next_fire_at: Option<DateTime<Utc>>,
    pub runs: Vec<NewRun>,
    pub fence: Option<Fence>,
    pub now: DateTime<Utc>,
}

/// Result of [`TaskStore::fire`]: the runs actually inserted (in request order) and those that already existed.
#[derive(Debug, Clone, PartialEq)]
pub struct FireOutcome {
    pub inserted: Vec<RunRecord>,
    pub duplicates: Vec<DateTime<Utc>>,
}

// ---------------------------------------------------------------------------------------------------------------
// Runs, attempts, logs
// ---------------------------------------------------------------------------------------------------------------

/// The states of a run. Terminal: `succeeded`, `failed`, `timed_out`, `skipped`, `cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Scheduled,
    Dispatching,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Skipped,
    Cancelled,
}

impl RunState {
    pub const ALL: [RunState; 8] = [
        RunState::Scheduled,
        RunState::Dispatching,
        RunState::Running,
        RunState::Succeeded,
        RunState::Failed,
        RunState::TimedOut,
        RunState::Skipped,
        RunState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Scheduled => "scheduled",
            RunState::Dispatching => "dispatching",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::TimedOut => "timed_out",
            RunState::Skipped => "skipped",
            RunState::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunState::Succeeded | RunState::Failed | RunState::TimedOut | RunState::Skipped | RunState::Cancelled
        )
    }

    /// The run state machine:
    ///
    /// ```text
    /// scheduled ──► dispatching ──► running ──► succeeded | failed | timed_out
    ///     ▲              │             │
    ///     └──────────────┴─────────────┘   (retry: back to scheduled with a later next_attempt_at)
    /// scheduled | dispatching | running ──► cancelled;  scheduled ──► skipped
    /// dispatching ──► succeeded | failed | timed_out  (synchronous executors answer within the dispatch)
    /// ```
    /// Terminal states never change.
    pub fn can_transition_to(self, to: RunState) -> bool {
        use RunState::*;
        matches!(
            (self, to),
            (Scheduled, Dispatching | Skipped | Cancelled)
                | (Dispatching, Running | Scheduled | Succeeded | Failed | TimedOut | Cancelled)
                | (Running, Scheduled | Succeeded | Failed | TimedOut | Cancelled)
        )
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunState {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| StoreError::InvalidArgument { field: "state", reason: format!("unknown run state {s:?}") })
    }
}

/// Why a run exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerKind {
    Schedule,
    Manual,
    Dependency,
    CatchUp,
}

impl TriggerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerKind::Schedule => "schedule",
            TriggerKind::Manual => "manual",
            TriggerKind::Dependency => "dependency",
            TriggerKind::CatchUp => "catch_up",
        }
    }
}

impl FromStr for TriggerKind {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [TriggerKind::Schedule, TriggerKind::Manual, TriggerKind::Dependency, TriggerKind::CatchUp]
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| StoreError::InvalidArgument { field: "trigger", reason: format!("unknown trigger {s:?}") })
    }
}

/// A run to insert. Unique per (`task_id`, `scheduled_at`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewRun {
    pub task_id: i64,
    pub namespace: String,
    pub name: String,
    pub task_version: i64,
    pub shard: u32,
    pub scheduled_at: DateTime<Utc>,
    pub trigger: TriggerKind,
    /// Initial state: `scheduled`, or `skipped` (misfire skip / concurrency forbid) — both allowed.
    pub state: RunState,
    /// When the scheduler should (next) dispatch it; `None` means "now".
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub params: Value,
    /// Free-form reason (e.g. why it was skipped).
    pub reason: Option<String>,
}

/// A stored run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: i64,
    pub task_id: i64,
    pub namespace: String,
    pub name: String,
    pub task_version: i64,
    pub shard: u32,
    pub scheduled_at: DateTime<Utc>,
    pub trigger: TriggerKind,
    pub state: RunState,
    /// Number of attempts started so far.
    pub attempts: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub params: Value,
    pub output: Option<Value>,
    pub error: Option<String>,
    pub reason: Option<String>,
    /// The scheduler node that last moved the run (dispatching/running), for failover.
    pub owner: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// Result of [`RunStore::insert_run`].
#[derive(Debug, Clone, PartialEq)]
pub enum InsertRun {
    Inserted(RunRecord),
    /// A run for this (task, scheduled_at) exists already; here is it.
    Duplicate(RunRecord),
}

impl InsertRun {
    pub fn record(&self) -> &RunRecord {
        match self {
            InsertRun::Inserted(r) | InsertRun::Duplicate(r) => r,
        }
    }

    pub fn is_inserted(&self) -> bool {
        matches!(self, InsertRun::Inserted(_))
    }
}

/// Fields a transition may set. `None` leaves a field unchanged, except where noted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunPatch {
    /// Sets `next_attempt_at` (outer `Some`); `Some(None)` clears it.
    pub next_attempt_at: Option<Option<DateTime<Utc>>>,
    pub attempts: Option<u32>,
    pub output: Option<Value>,
    pub error: Option<String>,
    pub reason: Option<String>,
    /// Sets the owner (outer `Some`); `Some(None)` clears it.
    pub owner: Option<Option<String>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// Input of [`RunStore::transition_run`].
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub run_id: i64,
    /// The transition applies only if the run is currently in one of these states (compare-and-set).
    pub from: Vec<RunState>,
    pub to: RunState,
    pub patch: RunPatch,
    pub fence: Option<Fence>,
    pub now: DateTime<Utc>,
}

/// Filters of [`RunStore::list_runs`]. Time range applies to `scheduled_at`: `from <= scheduled_at < to`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunFilter {
    pub task_id: Option<i64>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// Empty = any state.
    pub states: Vec<RunState>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// Outcome of an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptState {
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
}

impl AttemptState {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptState::Running => "running",
            AttemptState::Succeeded => "succeeded",
            AttemptState::Failed => "failed",
            AttemptState::TimedOut => "timed_out",
            AttemptState::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        self != AttemptState::Running
    }
}

impl FromStr for AttemptState {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            AttemptState::Running,
            AttemptState::Succeeded,
            AttemptState::Failed,
            AttemptState::TimedOut,
            AttemptState::Cancelled,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
        .ok_or_else(|| StoreError::InvalidArgument { field: "state", reason: format!("unknown attempt state {s:?}") })
    }
}

/// One dispatch of a run to one executor node (a broadcast attempt has one row per node).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewAttempt {
    pub run_id: i64,
    /// 1-based attempt number.
    pub attempt: u32,
    /// Executor node id or address; `""` when there is none (e.g. a container).
    pub node: String,
    pub started_at: DateTime<Utc>,
    pub deadline: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub id: i64,
    pub run_id: i64,
    pub attempt: u32,
    pub node: String,
    pub state: AttemptState,
    pub started_at: DateTime<Utc>,
    pub deadline: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub output: Option<Value>,
    pub error: Option<String>,
}

/// One log line of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    pub seq: i64,
    pub run_id: i64,
    pub at: DateTime<Utc>,
    /// `stdout`, `stderr`, `executor`, `scheduler`, …
    pub stream: String,
    pub line: String,
}

/// Runs, attempts and run logs.
#[async_trait]
pub trait RunStore: Send + Sync {
    /// Inserts a run unless one exists for (task_id, scheduled_at); concurrent inserts of the same pair yield
    /// exactly one `Inserted`. The fence, if any, is checked first (a stale fence is `Fenced` even when the run
    /// exists).
    async fn insert_run(&self, run: NewRun, fence: Option<Fence>, now: DateTime<Utc>) -> StoreResult<InsertRun>;

    async fn get_run(&self, id: i64) -> StoreResult<Option<RunRecord>>;

    /// Compare-and-set state transition. Errors, checked in this order: `NotFound`; `Fenced` with a stale fence;
    /// `Conflict` when the current state is not in `from`; `InvalidTransition` when `to` is not reachable from
    /// the current state by the state machine.
    async fn transition_run(&self, t: Transition) -> StoreResult<RunRecord>;

    /// History query, newest first (by id), keyset paginated.
    async fn list_runs(&self, filter: &RunFilter, page: &PageRequest) -> StoreResult<Page<RunRecord>>;

    /// Runs of `shard` in state `scheduled` whose `next_attempt_at` is `<= until` (or unset), oldest (by id) first:
    /// the durable queue of pending dispatches and retries.
    async fn pending_runs(&self, shard: u32, until: DateTime<Utc>, limit: u32) -> StoreResult<Vec<RunRecord>>;

    /// Runs of `shard` in one of `states` (non-terminal), oldest first: used to find in-flight work after failover
    /// and to enforce concurrency policies.
    async fn active_runs(&self, shard: u32, states: &[RunState], limit: u32) -> StoreResult<Vec<RunRecord>>;

    /// Non-terminal runs of one task (for concurrency policies), oldest first.
    async fn active_runs_of_task(&self, task_id: i64) -> StoreResult<Vec<RunRecord>>;

    /// Starts an attempt. Unique per (run_id, attempt, node): `Conflict` on a duplicate.
    async fn insert_attempt(&self, a: NewAttempt) -> StoreResult<AttemptRecord>;

    /// Finishes a running attempt. `Conflict` when it is already finished (so a late or lying report cannot
    /// overwrite an outcome).
    async fn finish_attempt(
        &self,
        attempt_id: i64,
        state: AttemptState,
        output: Option<Value>,
        error: Option<String>,
        now: DateTime<Utc>,
    ) -> StoreResult<AttemptRecord>;

    /// Attempts of a run, by attempt number then id.
    async fn list_attempts(&self, run_id: i64) -> StoreResult<Vec<AttemptRecord>>;

    /// Appends log lines to a run; returns the sequence number of the last line appended.
    async fn append_logs(&self, run_id: i64, stream: &str, lines: &[String], now: DateTime<Utc>) -> StoreResult<i64>;

    /// Log lines with `seq > after_seq`, in order, at most `limit`.
    async fn read_logs(&self, run_id: i64, after_seq: i64, limit: u32) -> StoreResult<Vec<LogLine>>;

    /// Deletes terminal runs (with attempts and logs) finished before `before`; returns how many runs went.
    async fn prune_runs(&self, before: DateTime<Utc>, limit: u32) -> StoreResult<u64>;

    /// Starts an attempt: atomically applies `transition` (normally `scheduled → dispatching`, setting attempts,
    /// owner, started_at and `next_attempt_at` = the attempt's deadline) and inserts `attempt`. Errors as
    /// [`transition_run`](RunStore::transition_run) and [`insert_attempt`](RunStore::insert_attempt); on error
    /// nothing is written (the conformance suite checks both halves).
    async fn start_attempt(
        &self,
        transition: Transition,
        attempt: NewAttempt,
    ) -> StoreResult<(RunRecord, AttemptRecord)>;

    /// Finishes an attempt and, when `transition` is given, moves the run, atomically. `Conflict` if the attempt
    /// was already finished, other errors as [`transition_run`](RunStore::transition_run); on error nothing is
    /// written (a rejected transition leaves the attempt running).
    async fn complete_attempt(
        &self,
        complete: CompleteAttempt,
        transition: Option<Transition>,
    ) -> StoreResult<(Option<RunRecord>, AttemptRecord)>;

    /// Several [`start_attempt`](RunStore::start_attempt)s, each with its own all-or-nothing outcome, in as few
    /// round trips as the backend can manage. Outcomes are in request order.
    async fn start_attempts(
        &self,
        items: Vec<(Transition, NewAttempt)>,
    ) -> StoreResult<Vec<StoreResult<(RunRecord, AttemptRecord)>>> {
        let mut out = Vec::with_capacity(items.len());
        for (t, a) in items {
            out.push(self.start_attempt(t, a).await);
        }
        Ok(out)
    }

    /// Several [`complete_attempt`](RunStore::complete_attempt)s, each with its own all-or-nothing outcome, in as
    /// few round trips as the backend can manage. Outcomes are in request order.
    async fn complete_attempts(
        &self,
        items: Vec<(CompleteAttempt, Option<Transition>)>,
    ) -> StoreResult<Vec<StoreResult<(Option<RunRecord>, AttemptRecord)>>> {
        let mut out = Vec::with_capacity(items.len());
        for (c, t) in items {
            out.push(self.complete_attempt(c, t).await);
        }
        Ok(out)
    }
}

/// Input of [`RunStore::complete_attempt`].
#[derive(Debug, Clone, PartialEq)]
pub struct CompleteAttempt {
    pub attempt_id: i64,
    pub state: AttemptState,
    pub output: Option<Value>,
    pub error: Option<String>,
    pub now: DateTime<Utc>,
}

// ---------------------------------------------------------------------------------------------------------------
// Node registry
// ---------------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    Scheduler,
    Executor,
}

impl NodeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::Scheduler => "scheduler",
            NodeKind::Executor => "executor",
        }
    }
}

impl FromStr for NodeKind {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "scheduler" => Ok(NodeKind::Scheduler),
            "executor" => Ok(NodeKind::Executor),
            _ => Err(StoreError::InvalidArgument { field: "kind", reason: format!("unknown node kind {s:?}") }),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    Active,
    Draining,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Active => "active",
            NodeState::Draining => "draining",
        }
    }
}

impl FromStr for NodeState {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(NodeState::Active),
            "draining" => Ok(NodeState::Draining),
            _ => Err(StoreError::InvalidArgument { field: "state", reason: format!("unknown node state {s:?}") }),
        }
    }
}

/// A node registering (or re-registering) itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRegistration {
    pub id: String,
    pub kind: NodeKind,
    /// Service name (executor nodes) or cluster name (scheduler nodes).
    pub service: String,
    pub address: String,
    pub protocol: String,
    pub labels: BTreeMap<String, String>,
    pub weight: u32,
    pub capacity: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: String,
    pub kind: NodeKind,
    pub service: String,
    pub address: String,
    pub protocol: String,
    pub labels: BTreeMap<String, String>,
    pub weight: u32,
    pub capacity: u32,
    pub state: NodeState,
    pub registered_at: DateTime<Utc>,
    pub last_heartbeat_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Filter of [`NodeStore::list_nodes`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFilter {
    pub kind: Option<NodeKind>,
    pub service: Option<String>,
    /// When set, only nodes whose `expires_at > alive_at`.
    pub alive_at: Option<DateTime<Utc>>,
}

/// The registry of scheduler and executor nodes, with heartbeat expiry.
#[async_trait]
pub trait NodeStore: Send + Sync {
    /// Registers a node or refreshes its registration (upsert by id; state becomes `active`).
    async fn register_node(
        &self,
        reg: NodeRegistration,
        ttl: std::time::Duration,
        now: DateTime<Utc>,
    ) -> StoreResult<NodeRecord>;

    /// Extends the node's expiry. `NotFound` for an unknown node.
    async fn heartbeat_node(&self, id: &str, ttl: std::time::Duration, now: DateTime<Utc>) -> StoreResult<NodeRecord>;

    async fn set_node_state(&self, id: &str, state: NodeState) -> StoreResult<NodeRecord>;

    async fn get_node(&self, id: &str) -> StoreResult<Option<NodeRecord>>;

    /// Removes a node; returns whether it existed.
    async fn deregister_node(&self, id: &str) -> StoreResult<bool>;

    /// Nodes matching the filter, ordered by id.
    async fn list_nodes(&self, filter: &NodeFilter) -> StoreResult<Vec<NodeRecord>>;

    /// Deletes nodes that expired before `before`; returns how many.
    async fn prune_nodes(&self, before: DateTime<Utc>) -> StoreResult<u64>;
}

// ---------------------------------------------------------------------------------------------------------------
// Shard leases
// ---------------------------------------------------------------------------------------------------------------

/// A held shard lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub shard: u32,
    pub owner: String,
    pub epoch: i64,
    pub expires_at: DateTime<Utc>,
}

impl Lease {
    pub fn fence(&self) -> Fence {
        Fence { shard: self.shard, epoch: self.epoch }
    }
}

/// The fencing token carried by writes that act on a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fence {
    pub shard: u32,
    pub epoch: i64,
}

/// Time-bounded shard leases with fencing epochs.
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Takes `shard` for `owner` if it is free, expired (`expires_at <= now`) or already held by `owner`.
    /// A change of holder (or a first acquisition) increments the epoch; re-acquiring one's own live lease keeps
    /// it. Returns `None` when another owner holds a live lease. Concurrent acquirers: at most one wins.
    async fn acquire_lease(
        &self,
        shard: u32,
        owner: &str,
        ttl: std::time::Duration,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Lease>>;

    /// Extends a lease the caller still holds at the same epoch (even if it expired, as long as nobody took it).
    /// `Fenced` otherwise.
    async fn renew_lease(&self, lease: &Lease, ttl: std::time::Duration, now: DateTime<Utc>) -> StoreResult<Lease>;

    /// Renews several leases at once, with [`renew_lease`](Self::renew_lease)'s semantics for each: one result per
    /// lease, in order (`Fenced` for a lease the caller lost; the others are still renewed). The outer error is
    /// for a failure of the whole call (e.g. the store is unreachable), after which nothing is known to be renewed.
    /// A scheduler node renews all its leases with one call every `lease_ttl / 3`; backends should do it in one
    /// round trip or transaction. The default calls `renew_lease` for each.
    async fn renew_leases(
        &self,
        leases: &[Lease],
        ttl: std::time::Duration,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StoreResult<Lease>>> {
        let mut out = Vec::with_capacity(leases.len());
        for lease in leases {
            match self.renew_lease(lease, ttl, now).await {
                Ok(l) => out.push(Ok(l)),
                Err(e @ StoreError::Fenced { .. }) => out.push(Err(e)),
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Gives a lease up (it becomes free; the epoch is kept so the next holder gets a higher one). `Fenced` if the
    /// caller no longer holds it.
    async fn release_lease(&self, lease: &Lease) -> StoreResult<()>;

    /// Every shard lease row (held or expired), ordered by shard.
    async fn list_leases(&self) -> StoreResult<Vec<Lease>>;
}

// ---------------------------------------------------------------------------------------------------------------
// Audit log
// ---------------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewAuditEntry {
    pub at: DateTime<Utc>,
    /// Who: a token id, a user subject, `system`.
    pub actor: String,
    /// What: `task.put`, `task.delete`, `run.cancel`, …
    pub action: String,
    /// On what: `task/billing/nightly`, `run/42`, …
    pub resource: String,
    /// From where: client address, if known.
    pub source: Option<String>,
    pub detail: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub resource: String,
    pub source: Option<String>,
    pub detail: Value,
}

/// Filter of [`AuditStore::list_audit`]. `resource_prefix` matches the start of `resource`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub resource_prefix: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// Append-only audit log.
#[async_trait]
pub trait AuditStore: Send + Sync {
    async fn append_audit(&self, entry: NewAuditEntry) -> StoreResult<AuditEntry>;

    /// Newest first, keyset paginated.
    async fn list_audit(&self, filter: &AuditFilter, page: &PageRequest) -> StoreResult<Page<AuditEntry>>;
}

// ---------------------------------------------------------------------------------------------------------------
// Authentication: API tokens and role bindings
// ---------------------------------------------------------------------------------------------------------------

/// A role within a namespace (or cluster-wide with namespace `*`). Ordered: each role includes the ones before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read tasks, runs and logs.
    Viewer,
    /// Viewer, plus trigger, pause/resume and cancel.
    Operator,
    /// Operator, plus create, replace and delete tasks.
    Editor,
    /// Editor, plus API tokens and role bindings of the namespace (`*:admin` is the cluster admin).
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Operator, Role::Editor, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Editor => "editor",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| StoreError::InvalidArgument {
            field: "role",
            reason: format!("unknown role {s:?}; one of viewer, operator, editor, admin"),
        })
    }
}

/// The namespace of a cluster-wide grant.
pub const ALL_NAMESPACES: &str = "*";

/// A role in a namespace (`*`: every namespace and the cluster-wide views).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Grant {
    pub namespace: String,
    pub role: Role,
}

impl Grant {
    pub fn new(namespace: impl Into<String>, role: Role) -> Self {
        Grant { namespace: namespace.into(), role }
    }

    /// Whether the grant is cluster-wide (`*`).
    pub fn is_cluster_wide(&self) -> bool {
        self.namespace == ALL_NAMESPACES
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.namespace, self.role)
    }
}

impl FromStr for Grant {
    type Err = StoreError;

    /// `namespace:role` (`billing:editor`, `*:admin`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((ns, role)) = s.rsplit_once(':').filter(|(ns, _)| !ns.is_empty()) else {
            return Err(StoreError::InvalidArgument {
                field: "grant",
                reason: format!("expected namespace:role (e.g. billing:editor, *:admin), got {s:?}"),
            });
        };
        Ok(Grant { namespace: ns.to_string(), role: role.parse()? })
    }
}

/// What a token may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TokenScope {
    /// A user's (or a tool's) token: roles per namespace.
    User { grants: Vec<Grant> },
    /// An executor node credential: register, heartbeat and report for the nodes of one service.
    Executor { service: String },
}

impl TokenScope {
    /// Whether this scope holds `*:admin`.
    pub fn is_cluster_admin(&self) -> bool {
        matches!(self, TokenScope::User { grants } if grants.iter().any(|g| g.is_cluster_wide() && g.role == Role::Admin))
    }
}

/// A token to store. Only the SHA-256 hash of its secret is ever stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewApiToken {
    /// Public, random identifier (lower-case letters and digits), used to look the token up.
    pub id: String,
    pub name: String,
    /// Lower-case hex SHA-256 of the secret.
    pub secret_hash: String,
    pub scope: TokenScope,
    pub created_at: DateTime<Utc>,
    /// Who created it (a principal id, or `system` for the bootstrap token).
    pub created_by: String,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A stored token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiTokenRecord {
    pub id: String,
    pub name: String,
    pub secret_hash: String,
    pub scope: TokenScope,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiTokenRecord {
    /// Neither revoked nor expired at `now`.
    pub fn is_usable(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| e > now)
    }
}

/// Who a role binding is for: an OIDC subject (`sub` claim) or a group (from the configured groups claim).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectKind {
    // Declared in the order of the wire names, so that every backend orders bindings alike.
    Group,
    Subject,
}

impl SubjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectKind::Subject => "subject",
            SubjectKind::Group => "group",
        }
    }
}

impl FromStr for SubjectKind {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "subject" => Ok(SubjectKind::Subject),
            "group" => Ok(SubjectKind::Group),
            _ => Err(StoreError::InvalidArgument {
                field: "kind",
                reason: format!("unknown subject kind {s:?}; subject or group"),
            }),
        }
    }
}

/// A role granted to an OIDC subject or group in a namespace (`*`: cluster-wide). Unique per
/// (kind, subject, namespace).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleBinding {
    pub kind: SubjectKind,
    pub subject: String,
    pub namespace: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
}

/// Filter of [`AuthStore::list_role_bindings`]; every given field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleBindingFilter {
    pub kind: Option<SubjectKind>,
    pub subject: Option<String>,
    pub namespace: Option<String>,
}

/// API tokens (stored as hashes) and role bindings of OIDC subjects and groups.
#[async_trait]
pub trait AuthStore: Send + Sync {
    /// Stores a new token. `Conflict` when the id exists.
    async fn create_token(&self, token: NewApiToken) -> StoreResult<ApiTokenRecord>;

    async fn get_token(&self, id: &str) -> StoreResult<Option<ApiTokenRecord>>;

    /// Every token (revoked and expired ones too), by id, keyset paginated.
    async fn list_tokens(&self, page: &PageRequest) -> StoreResult<Page<ApiTokenRecord>>;

    /// Revokes a token at `now`; revoking a revoked token keeps its first `revoked_at`. `NotFound` for an
    /// unknown id.
    async fn revoke_token(&self, id: &str, now: DateTime<Utc>) -> StoreResult<ApiTokenRecord>;

    /// Creates or replaces (by kind, subject, namespace) a role binding.
    async fn put_role_binding(&self, binding: RoleBinding) -> StoreResult<RoleBinding>;

    /// Role bindings matching the filter, ordered by (kind, subject, namespace).
    async fn list_role_bindings(&self, filter: &RoleBindingFilter) -> StoreResult<Vec<RoleBinding>>;

    /// Removes a role binding; returns whether it existed.
    async fn delete_role_binding(&self, kind: SubjectKind, subject: &str, namespace: &str) -> StoreResult<bool>;
}

/// Everything a Rota store provides.
#[async_trait]
pub trait Store:
    TaskStore + RunStore + NodeStore + LeaseStore + AuditStore + AuthStore + Send + Sync + 'static
{
    /// Checks that the store is reachable (for `/readyz`).
    async fn ping(&self) -> StoreResult<()>;

    /// A short name for logs and `/readyz` (e.g. `sqlite`, `postgres`, `mysql`).
    fn backend_name(&self) -> &'static str;

    /// Whether several scheduler nodes may share this store (SQLite: no).
    fn supports_cluster(&self) -> bool;
}

/// Truncates an instant to whole milliseconds (the precision every backend keeps).
pub fn truncate_millis(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).expect("in range")
}
