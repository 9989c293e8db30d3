//! Rota's scheduling core.
//!
//! The core owns *when* and *where* work runs: it scans the due index of the shards it holds, keeps what is due
//! within a short look-ahead window in an in-memory timer, fires each task exactly once per scheduled instant
//! (inserting the run and advancing the task's next fire time in one store transaction), dispatches attempts
//! through an [`Executor`], retries with backoff, enforces timeouts, misfire and concurrency policies, and
//! publishes every lifecycle change on one [`EventBus`].
//!
//! It depends on traits only: [`rota_store::Store`] for persistence and [`Executor`] for transports.
//!
//! # The loops of a [`Scheduler`]
//!
//! [`Scheduler::start`] acquires shard leases, then runs three loops until [`Scheduler::shutdown`]:
//!
//! * **Leases and membership** (every `lease_ttl / 3`): heartbeats this node's registration in the node registry
//!   (kind `scheduler`), reads the live scheduler nodes, computes the shards it should hold with
//!   [`membership::assign_shards`] (balanced rendezvous hashing: every node computes the same split from the same
//!   registry), renews the leases it holds (one `renew_leases` call), releases those another node should now
//!   hold and acquires the ones it should hold and lacks (free or expired). A shard whose renewal or fenced write
//!   is `Fenced` (someone else took it) is dropped with its timer entries. When a shard is acquired, runs left
//!   `dispatching` in it by this node (a crash or restart mid-dispatch) or by a scheduler node that is no longer
//!   alive (a failover) are resolved: a failed attempt ("scheduler restarted during dispatch", "scheduler node X
//!   stopped during the dispatch"), then retried or failed by the task's retry policy; and the shard is scanned at
//!   once. Nothing is silently dropped.
//!
//! # The scheduling cluster
//!
//! Any number of nodes may share a store whose [`Store::supports_cluster`](rota_store::Store::supports_cluster)
//! is true (PostgreSQL, MySQL/MariaDB); on SQLite a second node refuses to start. Nodes find each other only
//! through the store: there is no node-to-node protocol.
//!
//! * **Join:** a node checks that no live node uses another shard count (fatal) and that its own id is not
//!   registered by a live process (it waits up to two lease TTLs for a predecessor's registration to expire,
//!   then fails), registers, and takes its share of the shards; the others release theirs at their next tick.
//! * **Leave:** on shutdown a node releases its leases and deregisters; the others take its shards at their next
//!   tick (about `lease_ttl / 3`).
//! * **Failover:** a node that dies or is cut off stops heartbeating; `lease_ttl` after its last renewal its
//!   registration and leases have expired, and the survivors take its shards at their next tick, then scan them.
//!   Takeover is bounded by `lease_ttl + lease_ttl / 3 + one scan` (default 3 s + 1 s + 1 s; measured in
//!   `docs/benchmarks.md`). Fires that fell due meanwhile are late, so the task's misfire policy applies.
//!   Its in-flight dispatches (`dispatching` runs it owns) are resolved as failed attempts and retried by
//!   policy: delivery of a run whose node died mid-dispatch is at-least-once (the executor may have received it),
//!   while firing stays exactly once. Its `running` runs (asynchronous executors) keep waiting for the report
//!   until their deadline, as on one node.
//! * **Pause:** a node paused past its lease (SIGSTOP, a long GC-like stall, a partition) still believes it holds
//!   its shards until its next lease tick. Every fire and every `scheduled → dispatching` write it tries carries
//!   the old epoch and is refused by the store (`Fenced`), which drops the shard; and a dispatch is not sent when
//!   the local lease has expired by the node's clock.
//! * **Scan** (every `scan_interval`, per held shard):
//!   * `due_tasks(shard, now + lookahead)` into the timer (one entry per task, keyed by id);
//!   * `pending_runs(shard, now + lookahead)` (the durable queue of retries and not-yet-dispatched runs) into the
//!     timer at their `next_attempt_at`, skipping runs already in flight on this node;
//!   * the **timeout sweeper**: `running` runs past their deadline get a `timed_out` attempt and are retried or
//!     finished `timed_out`. For a `dispatching` or `running` run, `next_attempt_at` holds the current attempt's
//!     deadline, so the sweeper needs no join with attempts.
//! * **Timer**: sleeps until the earliest entry (woken early when an earlier one arrives) and fires tasks or
//!   dispatches runs as their instants come. The timer is a cache of the store: it holds what is due within the
//!   window, so memory follows what is due soon, not how many tasks exist, and losing it loses nothing.
//!
//! **Group commit.** The writes of the hot path (fires, attempt starts, attempt completions) are queued to three
//! batchers, each writing whatever is queued (up to 512) with one `fire_batch` / `start_attempts` /
//! `complete_attempts` call (one transaction on the SQL backends); each caller awaits its own item's outcome, and
//! each item keeps its own all-or-nothing semantics. On SQLite (one writer) the batches take turns; on other
//! backends up to four batches of each kind are in flight. A fire uses the cached parsed spec (refreshed by
//! `apply` and by the due scan when the due index shows another version) instead of reading the task.
//!
//! [`Scheduler::apply`], [`Scheduler::pause`], [`Scheduler::resume`] and [`Scheduler::delete_task`] update the
//! timer immediately, so changes take effect without a restart.
//!
//! # Guarantees
//!
//! * **Exactly once per (task, instant).** A firing is one `store.fire` (an item of a `fire_batch`) that checks
//!   the shard's fencing epoch, compare-and-sets the task's `next_fire_at` against the instant the timer held, and
//!   inserts the run(s), unique per (task, scheduled instant). A `Conflict` means someone else advanced the task
//!   (the core re-reads it); a `Fenced` means the shard was lost (the core drops it).
//! * **Fencing.** Writes that fire or start a dispatch (`scheduled → dispatching`) carry the shard's fence; a
//!   paused or partitioned node cannot fire or dispatch work it lost. Outcomes (results, reports, retries,
//!   cancellations) are recorded unfenced: they describe what happened, whoever observed it.
//! * **Misfires.** A fire processed more than `misfire_threshold` after its instant follows the task's policy:
//!   `skip` records one `skipped` run for the latest missed instant ("misfire: skipped N fires"), `run_once` runs
//!   the latest missed instant once, `run_all` runs the missed instants oldest first (the most recent
//!   `catchUpLimit` of them); `next_fire_at` then moves past now. A `Misfired` event is always published.
//! * **Concurrency policies** are applied when a run is created: `forbid` stores the new run `skipped` while
//!   another run of the task is not terminal, `replace` cancels the active runs and starts the new one.
//! * **Durable retries.** A failed or timed-out attempt with attempts left puts the run back to `scheduled` with
//!   `next_attempt_at = now + backoff`; the pending scan finds it after any restart.
//! * **One outcome per attempt.** The attempt row is finished before the run moves, and the store refuses a second
//!   finish, so of a synchronous answer, an asynchronous report, the timeout sweeper and a cancellation exactly one
//!   settles an attempt; a report must name the run's current attempt.
//! * **No transaction across a network call.** Every state change is a single store call; the executor is called
//!   between them.
//! * **Graceful shutdown.** No new fires or dispatches start; in-flight dispatches get `shutdown_grace` to finish,
//!   after which they are aborted and recorded as failed attempts (retried by policy); leases are released.
//!
//! # The execution cluster
//!
//! A task's `candidates` are a static list or a service name resolved through the scheduler's [`Discovery`]
//! (set with [`Scheduler::with_discovery`]; `rota-discovery` provides the registry, static and DNS sources).
//! Executor nodes join through [`Scheduler::register_executor`] and heartbeat every `executor_ttl / 3`; a node
//! whose registration expired is no longer listed by the registry, a draining one is listed but never chosen.
//! For each attempt the core filters the candidates (active, speaking the target's protocol, matching
//! `dispatch.selector`, not in cool-down, and with `retry.switchNode` not used by an earlier attempt of the run —
//! each filter only while it leaves a node), then applies the dispatch mode and the load-balancing strategy:
//!
//! * `unicast` — one node; `multicast` — `count` nodes (default all that pass the filters); `broadcast` — every
//!   node; `sharded` — every node (or exactly `count`), each told `shard.index` / `shard.total`.
//! * `round_robin` (per task), `random`, `weighted` (random by weight), `least_active` (fewest dispatches in
//!   flight from this scheduler node; ties take turns), `consistent_hash` (rendezvous hash of the `hashKey` param,
//!   else of the task key), `first`, `last` (fixed positions: they ignore cool-down), `failover` (first node not in
//!   cool-down), `busy_over` (first node below its capacity; all busy fails the attempt).
//!
//! An attempt to several nodes has one attempt row per node, sent concurrently; each row gets its node's outcome
//! (synchronously, or from the node's own report, which must name the node), and when every row has finished
//! the run gets the aggregate: with `dispatch.success: all` (default) it succeeded only if every node did, with
//! `any` if one did. The output is an object of the succeeded nodes' outputs by node id; a failure's error names
//! the nodes that failed, and is a timeout when all of them timed out. A retry sends to the nodes chosen again.
//!
//! A dispatch that fails or times out counts against its node; `breaker_threshold` consecutive ones put the node
//! in cool-down for `breaker_cool_down` (an answer of any kind resets the count).
//!
//! # Limits of this version
//!
//! * Retries and timeouts use the retry policy and timeout of the task's *current* spec version (a run records the
//!   version it was created from, but a spec replaced meanwhile governs its remaining attempts).
//! * `least_active` and `busy_over` count the dispatches *this* scheduler node has in flight to each executor
//!   node (a call waiting for the node's answer); work a node accepted asynchronously (`202`) or got from another
//!   scheduler node is not counted. Circuit breakers are per scheduler node too.
//! * `loadBalance: plugin` fails the attempt: node-selection plugins are not available yet.
//! * Nodes' clocks must roughly agree: lease and registration expiry compare one node's `now + ttl` with another's
//!   `now`. A skew of `d` shortens or lengthens failover by `d`; fencing (not clocks) keeps fires exactly once.
//! * A run's asynchronous report goes to the `report_url` of the node that dispatched it; if that node dies, give
//!   nodes a shared `public_url` (a load balancer in front of the cluster) or the run times out and is retried.
//! * Dropping a [`Scheduler`] does not stop its loops: call [`Scheduler::shutdown`].
//!
//! Every lifecycle change is published as an [`Event`] and logged with `tracing` under the target
//! `rota::events` (outcomes at `info`/`warn`).

mod balance;
mod batch;
pub mod discovery;
mod dispatch;
pub mod events;
pub mod executor;
pub mod executors;
mod fire;
mod health;
mod leases;
pub mod membership;
mod plan;
mod scheduler;
pub mod secrets;
mod shard;
mod tasks;
mod timer;

pub use discovery::{Candidate, Discovery, DiscoveryError};
pub use events::{Event, EventBus, EventKind};
pub use executor::{Dispatch, DispatchOutcome, Executor, NodeEndpoint, RunLogSink, StoreLogSink};
pub use scheduler::{Scheduler, SchedulerConfig};
pub use secrets::{SecretChain, SecretError, SecretResolver, SecretValue};

/// The shard a task hashes into: FNV-1a 64 of `namespace/name`, modulo `shard_count` (stable across nodes,
/// platforms and versions). [`Scheduler::shard_of`] is the same with the node's shard count.
pub fn shard_of(namespace: &str, name: &str, shard_count: u32) -> u32 {
    shard::shard_of(namespace, name, shard_count)
}

use rota_store::StoreError;

/// Errors of the core's operations (mapped to HTTP status codes only by the API layer).
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The task specification is invalid; every problem names its field.
    #[error("invalid task specification: {0}")]
    InvalidSpec(#[from] rota_spec::ValidationErrors),
    /// An argument other than a spec is invalid (names the field).
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    #[error("{entity} not found: {key}")]
    NotFound { entity: &'static str, key: String },
    /// The request conflicts with the current state (e.g. reporting a finished run, version mismatch).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The scheduler is shutting down and takes no new work.
    #[error("the scheduler is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for CoreError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { entity, key } => CoreError::NotFound { entity, key },
            StoreError::Conflict { entity, key, reason } => CoreError::Conflict(format!("{entity} {key}: {reason}")),
            StoreError::InvalidTransition { run_id, from, to } => {
                CoreError::Conflict(format!("run {run_id} is {from}; it cannot become {to}"))
            }
            other => CoreError::Store(other),
        }
    }
}

pub type CoreResult<T> = Result<T, CoreError>;
