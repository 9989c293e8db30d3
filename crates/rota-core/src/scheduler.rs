//! The scheduler: public facade, lifecycle and background loops (leases, scanning, timer).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use rota_proto::{LogAppend, RunReport};
use rota_spec::Task;
use rota_store::{
    NewRun, NodeFilter, NodeKind, NodeRecord, NodeRegistration, NodeState, Precondition, RunRecord, RunState, Store,
    StoreError, TaskRecord, TaskWrite, TriggerKind, truncate_millis,
};
use serde_json::{Map, Value};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::batch::Writes;
use crate::discovery::{Discovery, NoDiscovery};
use crate::events::{Event, EventKind};
use crate::health::NodeHealth;
use crate::leases::Leases;
use crate::membership::{self, CLUSTER_SERVICE, LABEL_INSTANCE, LABEL_SHARDS, View};
use crate::plan::next_fire;
use crate::tasks::{LoadedTask, SpecCache};
use crate::timer::{Due, Timer, TimerKey};
use crate::{CoreError, CoreResult, EventBus, Executor};

/// How long a dead node's registration stays visible (`alive: false` in the cluster view) before it is pruned.
const NODE_RETENTION: Duration = Duration::from_secs(3600);
/// How often a node prunes expired registrations.
const NODE_PRUNE_INTERVAL: Duration = Duration::from_secs(300);

/// Tuning of one scheduler node. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// This node's id (unique in the cluster; used as lease owner and run owner).
    pub node_id: String,
    /// Number of shards tasks hash into. Fixed for the lifetime of a store.
    pub shard_count: u32,
    /// How far ahead due tasks are loaded into the in-memory timer.
    pub lookahead: Duration,
    /// How often the due index and the pending-run queue are scanned.
    pub scan_interval: Duration,
    /// Shard lease time-to-live; leases are renewed, and this node's registration heartbeated, every
    /// `lease_ttl / 3`. It bounds failover: a node that dies is seen dead, and its shards are free, `lease_ttl`
    /// after its last renewal; the survivors take them at their next lease tick. Default 3 s.
    pub lease_ttl: Duration,
    /// Attempt timeout for tasks whose spec sets none.
    pub default_timeout: Duration,
    /// Maximum dispatches in flight on this node.
    pub max_in_flight: usize,
    /// Base URL under which this node's API is reachable (for `report_url` in envelopes).
    pub public_url: Option<String>,
    /// How long `shutdown` waits for in-flight dispatches.
    pub shutdown_grace: Duration,
    /// A fire processed more than this after its instant is a *misfire* (the node was down, the task paused, the
    /// node overloaded): the task's misfire policy decides what runs. Default 5 s.
    pub misfire_threshold: Duration,
    /// Page size of each per-shard scan (due tasks, pending runs, in-flight runs). Default 1000.
    pub scan_limit: u32,
    /// Maximum task firings processed concurrently. Firings are group-committed (one store batch holds whatever
    /// is queued, up to 512), so this bounds how many fires one batch can carry. Default 512.
    pub max_concurrent_fires: usize,
    /// Parsed task specs kept in memory. Default 10 000.
    pub spec_cache_capacity: usize,
    /// Registration time-to-live of executor nodes: they heartbeat every `executor_ttl / 3` and leave the
    /// candidate set `executor_ttl` after their last heartbeat. Default 10 s.
    pub executor_ttl: Duration,
    /// Consecutive failed dispatches (no answer, connection refused, timeout) after which an executor node is
    /// avoided for `breaker_cool_down`. Default 3.
    pub breaker_threshold: u32,
    /// How long a failing executor node is avoided. Default 30 s.
    pub breaker_cool_down: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            node_id: "rota-1".into(),
            shard_count: 256,
            lookahead: Duration::from_secs(5),
            scan_interval: Duration::from_secs(1),
            lease_ttl: Duration::from_secs(3),
            default_timeout: Duration::from_secs(3600),
            max_in_flight: 10_000,
            public_url: None,
            shutdown_grace: Duration::from_secs(30),
            misfire_threshold: Duration::from_secs(5),
            scan_limit: 1000,
            max_concurrent_fires: 512,
            spec_cache_capacity: 10_000,
            executor_ttl: Duration::from_secs(10),
            breaker_threshold: 3,
            breaker_cool_down: Duration::from_secs(30),
        }
    }
}

/// A scheduler node. Cheap to clone (shared state behind an `Arc`).
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    New,
    Running,
    Stopped,
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) executor: Arc<dyn Executor>,
    pub(crate) config: SchedulerConfig,
    pub(crate) events: EventBus,
    pub(crate) timer: Timer,
    pub(crate) leases: Leases,
    pub(crate) specs: SpecCache,
    /// Hot-path writes (fire, attempt start and completion), group-committed.
    pub(crate) writes: Writes,
    /// Runs whose dispatch is in progress on this node, with the token that aborts it (cancel, replace).
    pub(crate) in_flight: Mutex<HashMap<i64, CancellationToken>>,
    /// Tasks whose firing is in progress on this node.
    pub(crate) firing: Mutex<HashSet<i64>>,
    pub(crate) dispatch_slots: Arc<Semaphore>,
    pub(crate) fire_slots: Arc<Semaphore>,
    /// Stops the loops and the timer; no new fire or dispatch starts after it.
    pub(crate) stop: CancellationToken,
    /// Aborts in-flight dispatches (when the shutdown grace is over).
    pub(crate) abort: CancellationToken,
    pub(crate) tracker: TaskTracker,
    lifecycle: Mutex<Lifecycle>,
    /// This node's view of the scheduler cluster (refreshed every lease tick).
    pub(crate) view: Mutex<View>,
    /// A random id of this process, registered as the label `rota.instance`.
    instance: String,
    /// Shards whose acquisition is in progress.
    acquiring: Mutex<HashSet<u32>>,
    /// Where `candidates.service` finds executor nodes.
    discovery: std::sync::RwLock<Arc<dyn Discovery>>,
    /// In-flight dispatches per executor node and circuit breakers.
    pub(crate) health: NodeHealth,
}

impl Inner {
    /// The current discovery.
    pub(crate) fn discovery(&self) -> Arc<dyn Discovery> {
        self.discovery.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Locks a std mutex, ignoring poisoning (every critical section leaves its data consistent).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The current instant at the store's precision (milliseconds).
pub(crate) fn now() -> DateTime<Utc> {
    truncate_millis(Utc::now())
}

pub(crate) fn add(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t.checked_add_signed(TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

impl Scheduler {
    pub fn new(store: Arc<dyn Store>, executor: Arc<dyn Executor>, config: SchedulerConfig) -> Self {
        let health = NodeHealth::new(config.breaker_threshold, config.breaker_cool_down);
        let inner = Inner {
            health,
            dispatch_slots: Arc::new(Semaphore::new(config.max_in_flight.clamp(1, Semaphore::MAX_PERMITS))),
            fire_slots: Arc::new(Semaphore::new(config.max_concurrent_fires.clamp(1, Semaphore::MAX_PERMITS))),
            specs: SpecCache::new(config.spec_cache_capacity),
            writes: Writes::new(store.clone()),
            store,
            executor,
            config,
            events: EventBus::default(),
            timer: Timer::default(),
            leases: Leases::default(),
            in_flight: Mutex::new(HashMap::new()),
            firing: Mutex::new(HashSet::new()),
            stop: CancellationToken::new(),
            abort: CancellationToken::new(),
            tracker: TaskTracker::new(),
            lifecycle: Mutex::new(Lifecycle::New),
            view: Mutex::new(View::default()),
            instance: format!("{:016x}", rand::random::<u64>()),
            acquiring: Mutex::new(HashSet::new()),
            discovery: std::sync::RwLock::new(Arc::new(NoDiscovery)),
        };
        Scheduler { inner: Arc::new(inner) }
    }

    /// Sets where `candidates.service` finds executor nodes (by default nowhere: such tasks fail their attempts
    /// with "unknown executor service"). The server wires `rota-discovery`'s router (registry, static lists,
    /// DNS); any [`Discovery`] works.
    pub fn with_discovery(self, discovery: Arc<dyn Discovery>) -> Self {
        self.set_discovery(discovery);
        self
    }

    /// Replaces the discovery (takes effect for the next dispatch).
    pub fn set_discovery(&self, discovery: Arc<dyn Discovery>) {
        *self.inner.discovery.write().unwrap_or_else(|e| e.into_inner()) = discovery;
    }

    pub fn events(&self) -> &EventBus {
        &self.inner.events
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.inner.config
    }

    /// The shard a task hashes into (stable across nodes and versions): FNV-1a 64 of `namespace/name`, modulo
    /// `shard_count`.
    pub fn shard_of(&self, namespace: &str, name: &str) -> u32 {
        crate::shard::shard_of(namespace, name, self.inner.config.shard_count)
    }

    /// The shards this node currently holds a lease on, ascending.
    pub fn held_shards(&self) -> Vec<u32> {
        self.inner.leases.shards()
    }

    /// Number of entries in the in-memory timer (tasks and runs due within the look-ahead window).
    pub fn timer_len(&self) -> usize {
        self.inner.timer.len()
    }

    /// Number of dispatches in progress on this node.
    pub fn in_flight(&self) -> usize {
        lock(&self.inner.in_flight).len()
    }

    /// The live scheduler nodes as this node last saw them in the registry (itself included), ascending; empty
    /// before the first lease tick.
    pub fn live_nodes(&self) -> Vec<String> {
        let mut v: Vec<String> = lock(&self.inner.view).alive.iter().flatten().cloned().collect();
        v.sort_unstable();
        v
    }

    /// Starts the background loops (leases, due scanning, timer, pending-run queue, timeouts).
    ///
    /// Joins the cluster (registers this node; see the crate docs for the checks) and acquires its shard leases,
    /// so when it returns the node holds its shards; runs left `dispatching` in them by this node or by a dead node
    /// are resolved in the background. Calling it again while running is a no-op; after
    /// [`shutdown`](Self::shutdown) it fails with [`CoreError::ShuttingDown`].
    pub async fn start(&self) -> CoreResult<()> {
        {
            let mut lc = lock(&self.inner.lifecycle);
            match *lc {
                Lifecycle::Running => return Ok(()),
                Lifecycle::Stopped => return Err(CoreError::ShuttingDown),
                Lifecycle::New => *lc = Lifecycle::Running,
            }
        }
        if let Err(e) = self.inner.store.ping().await {
            *lock(&self.inner.lifecycle) = Lifecycle::New;
            return Err(CoreError::Store(e));
        }
        let inner = &self.inner;
        if let Err(e) = inner.join_cluster().await {
            *lock(&self.inner.lifecycle) = Lifecycle::New;
            return Err(e);
        }
        inner.maintain_leases(true).await;
        let i = inner.clone();
        inner.tracker.spawn(async move { i.lease_loop().await });
        let i = inner.clone();
        inner.tracker.spawn(async move { i.scan_loop().await });
        let i = inner.clone();
        inner.tracker.spawn(async move { i.timer_loop().await });
        tracing::info!(
            node = %inner.config.node_id,
            backend = inner.store.backend_name(),
            shards_held = inner.leases.shards().len(),
            shard_count = inner.config.shard_count,
            "scheduler started"
        );
        Ok(())
    }

    /// Stops firing, waits for in-flight dispatches up to `shutdown_grace`, releases leases.
    ///
    /// Dispatches still running when the grace is over are aborted and recorded as a failed attempt ("scheduler
    /// shut down before the attempt finished"), then retried or failed by the run's retry policy, so no run is left
    /// half-way. Idempotent.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        let was = std::mem::replace(&mut *lock(&inner.lifecycle), Lifecycle::Stopped);
        inner.stop.cancel();
        inner.tracker.close();
        if was == Lifecycle::New {
            return;
        }
        if tokio::time::timeout(inner.config.shutdown_grace, inner.tracker.wait()).await.is_err() {
            tracing::warn!(
                in_flight = lock(&inner.in_flight).len(),
                grace = ?inner.config.shutdown_grace,
                "shutdown grace is over; aborting the remaining dispatches"
            );
            inner.abort.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(10), inner.tracker.wait()).await;
        }
        for lease in inner.leases.take_all() {
            inner.timer.remove_shard(lease.shard);
            if let Err(e) = inner.store.release_lease(&lease).await {
                tracing::debug!(shard = lease.shard, error = %e, "could not release lease");
            }
        }
        if was == Lifecycle::Running
            && let Err(e) = inner.store.deregister_node(&inner.config.node_id).await
        {
            tracing::debug!(error = %e, "could not deregister this node");
        }
        if was == Lifecycle::Running {
            tracing::info!(node = %inner.config.node_id, "scheduler stopped");
        }
    }

    /// Validates and stores a task (create or replace); the change takes effect without restart.
    ///
    /// `next_fire_at` becomes the schedule's first instant after now (`None` for manual and dependency-only
    /// tasks), so a replaced schedule takes effect at once and never replays the past.
    pub async fn apply(&self, task: Task, precondition: Precondition) -> CoreResult<TaskRecord> {
        let inner = &self.inner;
        task.validate()?;
        let now = now();
        let loaded = LoadedTask::new(0, 0, task.clone())
            .map_err(|reason| CoreError::InvalidArgument { field: "spec.schedule".into(), reason })?;
        let next_fire_at = loaded.schedule.as_ref().and_then(|s| next_fire(s, now));
        let spec = serde_json::to_value(&task)
            .map_err(|e| CoreError::InvalidArgument { field: "spec".into(), reason: e.to_string() })?;
        let write = TaskWrite {
            namespace: task.metadata.namespace.clone(),
            name: task.metadata.name.clone(),
            labels: task.metadata.labels.clone(),
            spec,
            shard: self.shard_of(&task.metadata.namespace, &task.metadata.name),
            next_fire_at,
        };
        let rec = inner.store.put_task(write, precondition, now).await?;
        if let Ok(t) = LoadedTask::new(rec.id, rec.version, task) {
            inner.specs.put(Arc::new(t));
        }
        inner.refresh_fire_timer(&rec);
        inner.publish_task(&rec.key(), EventKind::TaskApplied { version: rec.version });
        Ok(rec)
    }

    /// Deletes a task (its runs stay as history). Returns whether it existed.
    pub async fn delete_task(&self, namespace: &str, name: &str) -> CoreResult<bool> {
        let inner = &self.inner;
        let existing = inner.store.get_task(namespace, name).await?;
        let deleted = inner.store.delete_task(namespace, name).await?;
        if let Some(rec) = existing {
            inner.timer.remove(TimerKey::Fire(rec.id));
            inner.specs.remove(rec.id);
        }
        if deleted {
            inner.publish_task(&format!("{namespace}/{name}"), EventKind::TaskDeleted);
        }
        Ok(deleted)
    }

    /// Pauses a task: it stops firing at once. Runs already created continue.
    pub async fn pause(&self, namespace: &str, name: &str) -> CoreResult<TaskRecord> {
        let inner = &self.inner;
        let rec = inner.store.set_paused(namespace, name, true, None, now()).await?;
        inner.timer.remove(TimerKey::Fire(rec.id));
        inner.publish_task(&rec.key(), EventKind::TaskPaused);
        Ok(rec)
    }

    /// Resumes a task. `next_fire_at` is recomputed from now, so the paused time is not replayed.
    pub async fn resume(&self, namespace: &str, name: &str) -> CoreResult<TaskRecord> {
        let inner = &self.inner;
        let current = inner
            .store
            .get_task(namespace, name)
            .await?
            .ok_or_else(|| CoreError::NotFound { entity: "task", key: format!("{namespace}/{name}") })?;
        let loaded = inner.specs.load(&current)?;
        let now = now();
        let next = loaded.schedule.as_ref().and_then(|s| next_fire(s, now));
        let rec = inner.store.set_paused(namespace, name, false, next, now).await?;
        inner.refresh_fire_timer(&rec);
        inner.publish_task(&rec.key(), EventKind::TaskResumed);
        Ok(rec)
    }

    /// Fires a task now, with `params` merged over the spec's params.
    ///
    /// The run's `scheduled_at` is now (milliseconds; a later millisecond if a run exists for this one), its
    /// trigger `manual`; the task's concurrency policy applies. The run is dispatched at once when this node holds
    /// the task's shard, else by the shard's holder from the pending queue. Works for paused tasks too.
    pub async fn trigger(&self, namespace: &str, name: &str, params: Map<String, Value>) -> CoreResult<RunRecord> {
        let inner = &self.inner;
        if inner.stop.is_cancelled() {
            return Err(CoreError::ShuttingDown);
        }
        let rec = inner
            .store
            .get_task(namespace, name)
            .await?
            .ok_or_else(|| CoreError::NotFound { entity: "task", key: format!("{namespace}/{name}") })?;
        let task = inner.specs.load(&rec)?;
        let mut merged = task.task.spec.params.clone();
        merged.extend(params);
        let policy = task.concurrency();
        let active = if policy == rota_spec::ConcurrencyPolicy::Allow {
            Vec::new()
        } else {
            inner.store.active_runs_of_task(rec.id).await?
        };
        let decision = crate::fire::admit_one(policy, &active);
        let now = now();
        let mut fence = inner.leases.fence(rec.shard);
        let mut at = now;
        let mut tries = 0;
        let run = loop {
            let new = NewRun {
                task_id: rec.id,
                namespace: rec.namespace.clone(),
                name: rec.name.clone(),
                task_version: rec.version,
                shard: rec.shard,
                scheduled_at: at,
                trigger: TriggerKind::Manual,
                state: if decision.skip_reason.is_some() { RunState::Skipped } else { RunState::Scheduled },
                next_attempt_at: None,
                params: Value::Object(merged.clone()),
                reason: decision.skip_reason.clone(),
            };
            match inner.store.insert_run(new, fence, now).await {
                Ok(rota_store::InsertRun::Inserted(r)) => break r,
                Ok(rota_store::InsertRun::Duplicate(_)) if tries < 1000 => {
                    tries += 1;
                    at += TimeDelta::milliseconds(1);
                }
                Ok(rota_store::InsertRun::Duplicate(r)) => {
                    return Err(CoreError::Conflict(format!("a run of {} exists at {}", rec.key(), r.scheduled_at)));
                }
                Err(StoreError::Fenced { shard, epoch }) => {
                    // We lost the shard meanwhile: store the run unfenced; the shard's holder dispatches it.
                    inner.lose_shard(shard, epoch);
                    fence = None;
                }
                Err(e) => return Err(e.into()),
            }
        };
        inner.publish_new_run(&run);
        if run.state == RunState::Scheduled {
            let reason = format!("concurrency: replace (superseded by run {})", run.id);
            for old in &decision.cancel {
                inner.cancel_quietly(old.id, &reason).await;
            }
            if fence.is_some() && inner.leases.holds(run.shard) && !inner.stop.is_cancelled() {
                inner.spawn_dispatch(run.id, Some(run.clone()), Some(task));
            }
        }
        Ok(run)
    }

    /// Cancels a run that has not finished.
    ///
    /// The run becomes `cancelled` (from `scheduled`, `dispatching` or `running`), its running attempt is finished
    /// as `cancelled`, a dispatch in progress on this node is aborted and the executor's `cancel` is called.
    /// `Conflict` if the run has already finished.
    pub async fn cancel_run(&self, run_id: i64, reason: &str) -> CoreResult<RunRecord> {
        self.inner.cancel(run_id, reason).await
    }

    /// Records an asynchronous result reported by an executor node.
    ///
    /// The run must be `dispatching` or `running` and `report.attempt` must be its current attempt, else
    /// `Conflict` (a late or duplicate report never overwrites an outcome); `NotFound` for an unknown run. The
    /// report's log lines are appended first. A failure is retried by the task's retry policy.
    pub async fn report(&self, run_id: i64, report: RunReport) -> CoreResult<RunRecord> {
        self.inner.report(run_id, report).await
    }

    /// Appends executor log lines to a run; returns the last sequence number.
    pub async fn append_logs(&self, run_id: i64, append: LogAppend) -> CoreResult<i64> {
        let inner = &self.inner;
        if inner.store.get_run(run_id).await?.is_none() {
            return Err(CoreError::NotFound { entity: "run", key: run_id.to_string() });
        }
        let stream = append.stream.as_deref().unwrap_or("executor");
        Ok(inner.store.append_logs(run_id, stream, &append.lines, now()).await?)
    }

    /// Registers (or re-registers) an executor node. `InvalidArgument` naming the field for a bad registration;
    /// `Conflict` when the id belongs to a scheduler node or to a live executor node at another address or of
    /// another service (a duplicate id). Re-registering a known node (same service and address) refreshes it and
    /// makes it `active` again.
    pub async fn register_executor(
        &self,
        reg: rota_proto::ExecutorRegistration,
    ) -> CoreResult<rota_proto::ExecutorLease> {
        self.inner.register_executor(reg).await
    }

    /// Extends an executor node's registration. `NotFound` for an unknown node (it should register again).
    pub async fn heartbeat_executor(&self, id: &str) -> CoreResult<rota_proto::ExecutorLease> {
        self.inner.heartbeat_executor(id).await
    }

    /// Marks an executor node draining: it is chosen for no new work; its runs still report.
    pub async fn drain_executor(&self, id: &str) -> CoreResult<rota_proto::ExecutorLease> {
        self.inner.drain_executor(id).await
    }

    /// Removes an executor node's registration. `NotFound` for an unknown node.
    pub async fn deregister_executor(&self, id: &str) -> CoreResult<()> {
        self.inner.deregister_executor(id).await
    }

    /// Registered executor nodes (alive or expired, not yet pruned), optionally of one service, by id.
    pub async fn list_executors(&self, service: Option<&str>) -> CoreResult<Vec<NodeRecord>> {
        self.inner.list_executors(service).await
    }
}

// -------------------------------------------------------------------------------------------------------------
// Loops
// -------------------------------------------------------------------------------------------------------------

impl Inner {
    /// This node's registration, as written to the node registry.
    fn registration(&self) -> NodeRegistration {
        let cfg = &self.config;
        NodeRegistration {
            id: cfg.node_id.clone(),
            kind: NodeKind::Scheduler,
            service: CLUSTER_SERVICE.to_string(),
            address: cfg.public_url.clone().unwrap_or_default(),
            protocol: "http".to_string(),
            labels: membership::labels(&self.instance, cfg.shard_count),
            weight: 1,
            capacity: u32::try_from(cfg.max_in_flight).unwrap_or(u32::MAX),
        }
    }

    /// Checks that this node may join the store's cluster, then registers it.
    ///
    /// * A live node with another shard count: error (tasks would hash differently).
    /// * A store without cluster support (SQLite) and another live scheduler node: error.
    /// * A live registration of this node id by another process: a predecessor that died (kill -9) within the
    ///   last lease TTL, or a second process started with the same id. Wait for it to expire (at most two TTLs);
    ///   if it keeps heartbeating, error.
    async fn join_cluster(self: &Arc<Self>) -> CoreResult<()> {
        let cfg = &self.config;
        let deadline = tokio::time::Instant::now() + cfg.lease_ttl * 2 + Duration::from_millis(500);
        loop {
            let now = now();
            let filter = NodeFilter {
                kind: Some(NodeKind::Scheduler),
                service: Some(CLUSTER_SERVICE.to_string()),
                alive_at: Some(now),
            };
            let live = self.store.list_nodes(&filter).await?;
            let mut same_id: Option<&NodeRecord> = None;
            for n in &live {
                let shards = n.labels.get(LABEL_SHARDS).and_then(|v| v.parse::<u32>().ok());
                if shards.is_some_and(|c| c != cfg.shard_count) {
                    return Err(CoreError::InvalidArgument {
                        field: "shard_count".into(),
                        reason: format!(
                            "this node has {} shards but the live scheduler node {} has {}; every node sharing a \
                             store must use the same shard count",
                            cfg.shard_count,
                            n.id,
                            shards.unwrap_or_default()
                        ),
                    });
                }
                if n.id == cfg.node_id {
                    if n.labels.get(LABEL_INSTANCE) != Some(&self.instance) {
                        same_id = Some(n);
                    }
                } else if !self.store.supports_cluster() {
                    return Err(CoreError::InvalidArgument {
                        field: "database_url".into(),
                        reason: format!(
                            "the {} store supports a single scheduler node, and node {} is running against it \
                             (use PostgreSQL or MySQL for a cluster)",
                            self.store.backend_name(),
                            n.id
                        ),
                    });
                }
            }
            let Some(other) = same_id else { break };
            if tokio::time::Instant::now() >= deadline {
                return Err(CoreError::Conflict(format!(
                    "node id {} is in use by a live scheduler node (last heartbeat {}); give this node another id",
                    cfg.node_id, other.last_heartbeat_at
                )));
            }
            let wait =
                (other.expires_at - now).to_std().unwrap_or_default().min(cfg.lease_ttl) + Duration::from_millis(50);
            tracing::info!(
                node = %cfg.node_id,
                expires_at = %other.expires_at,
                "a previous process of this node id is still registered; waiting for its registration to expire"
            );
            tokio::time::sleep(wait).await;
        }
        self.store.register_node(self.registration(), cfg.lease_ttl, now()).await?;
        Ok(())
    }

    /// Heartbeats this node's registration (re-registering it if it was pruned) and re-reads the live scheduler
    /// nodes. Returns the shards this node should hold, or `None` when the registry could not be read (then the
    /// lease tick only renews what is held).
    async fn refresh_membership(self: &Arc<Self>) -> Option<Vec<u32>> {
        let cfg = &self.config;
        let now = now();
        match self.store.heartbeat_node(&cfg.node_id, cfg.lease_ttl, now).await {
            Ok(rec) => {
                if rec.labels.get(LABEL_INSTANCE) != Some(&self.instance) {
                    tracing::error!(
                        node = %cfg.node_id,
                        "another process registered this node id; two nodes with one id share its leases"
                    );
                }
            }
            Err(StoreError::NotFound { .. }) => {
                if let Err(e) = self.store.register_node(self.registration(), cfg.lease_ttl, now).await {
                    tracing::warn!(error = %e, "could not register this node");
                    return None;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not heartbeat this node's registration");
                return None;
            }
        }
        if !self.store.supports_cluster() {
            lock(&self.view).alive = Some(HashSet::from([cfg.node_id.clone()]));
            return Some((0..cfg.shard_count.max(1)).collect());
        }
        let filter = NodeFilter {
            kind: Some(NodeKind::Scheduler),
            service: Some(CLUSTER_SERVICE.to_string()),
            alive_at: Some(now),
        };
        let nodes = match self.store.list_nodes(&filter).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "could not list the scheduler nodes");
                return None;
            }
        };
        let alive: HashSet<String> = nodes.iter().map(|n| n.id.clone()).chain([cfg.node_id.clone()]).collect();
        // Draining nodes keep their runs (they are alive) but get no shards.
        let mut active: Vec<&str> =
            nodes.iter().filter(|n| n.state == NodeState::Active).map(|n| n.id.as_str()).collect();
        if !active.contains(&cfg.node_id.as_str()) {
            active.push(&cfg.node_id);
        }
        let desired = membership::shards_for(&cfg.node_id, &active, cfg.shard_count);
        let changed = {
            let mut view = lock(&self.view);
            let changed = view.alive.as_ref() != Some(&alive);
            view.alive = Some(alive);
            changed
        };
        if changed {
            let mut ids: Vec<&str> = active.clone();
            ids.sort_unstable();
            tracing::info!(node = %cfg.node_id, nodes = ?ids, shards = desired.len(), "scheduler cluster changed");
        }
        Some(desired)
    }

    /// One lease tick: renew the held leases (one store call) first, so nothing else can delay it; then heartbeat
    /// and read the membership, release the shards another node should now hold and acquire the ones this node
    /// should hold and lacks (awaited when `wait`, at start; otherwise in the background). Work on newly acquired
    /// shards (resolving orphaned dispatches, the first scan) runs in the background, never in this loop.
    async fn maintain_leases(self: &Arc<Self>, wait: bool) {
        let cfg = &self.config;
        let held: Vec<rota_store::Lease> =
            self.leases.shards().into_iter().filter_map(|s| self.leases.get(s)).collect();
        if !held.is_empty() {
            match self.store.renew_leases(&held, cfg.lease_ttl, now()).await {
                Ok(results) => {
                    for (lease, r) in held.iter().zip(results) {
                        match r {
                            Ok(l) => {
                                self.leases.put(l);
                            }
                            Err(StoreError::Fenced { .. }) => self.lose_shard(lease.shard, lease.epoch),
                            Err(e) => tracing::warn!(shard = lease.shard, error = %e, "could not renew shard lease"),
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, leases = held.len(), "could not renew shard leases"),
            }
        }
        let desired = self.refresh_membership().await;
        if self.stop.is_cancelled() {
            return;
        }
        let Some(desired) = desired else { return };
        let desired_set: HashSet<u32> = desired.iter().copied().collect();
        // Give up shards another node should hold first, so it can take them at its next tick.
        for shard in self.leases.shards() {
            if !desired_set.contains(&shard)
                && let Some(lease) = self.leases.get(shard)
            {
                self.lose_shard(shard, lease.epoch);
                if let Err(e) = self.store.release_lease(&lease).await {
                    tracing::debug!(shard, error = %e, "could not release shard lease");
                }
            }
        }
        let missing: Vec<u32> = {
            let mut acquiring = lock(&self.acquiring);
            desired.into_iter().filter(|s| !self.leases.holds(*s) && acquiring.insert(*s)).collect()
        };
        if missing.is_empty() {
            return;
        }
        let this = self.clone();
        let acquire = async move { this.acquire_shards(missing).await };
        if wait {
            acquire.await;
        } else {
            // Off the renewal path: a lease row locked by a stalled node's transaction must not delay renewals.
            self.tracker.spawn(acquire);
        }
    }

    /// Tries to acquire `shards` (a few at a time); each one acquired is set up in the background.
    async fn acquire_shards(self: Arc<Self>, shards: Vec<u32>) {
        let slots = Arc::new(Semaphore::new(8));
        let mut set = tokio::task::JoinSet::new();
        for shard in shards {
            let this = self.clone();
            let slots = slots.clone();
            set.spawn(async move {
                let _permit = slots.acquire_owned().await;
                let cfg = &this.config;
                if !this.stop.is_cancelled() {
                    match this.store.acquire_lease(shard, &cfg.node_id, cfg.lease_ttl, now()).await {
                        Ok(Some(l)) => {
                            // A call that waited long (a lock held by a stalled node) returns a lease that is about
                            // to expire, or has: renew it at once, or the next renewal may come too late.
                            let l = if l.expires_at <= add(now(), cfg.lease_ttl / 2) {
                                match this.store.renew_lease(&l, cfg.lease_ttl, now()).await {
                                    Ok(renewed) => renewed,
                                    Err(e) => {
                                        tracing::debug!(shard, error = %e, "could not renew a late acquisition");
                                        lock(&this.acquiring).remove(&shard);
                                        return;
                                    }
                                }
                            } else {
                                l
                            };
                            if this.leases.put(l) {
                                let t = this.clone();
                                this.tracker.spawn(async move { t.on_shard_acquired(shard).await });
                            }
                        }
                        Ok(None) => {} // still held by its previous owner; it releases it or its lease expires
                        Err(e) => tracing::warn!(shard, error = %e, "could not acquire shard lease"),
                    }
                }
                lock(&this.acquiring).remove(&shard);
            });
        }
        while set.join_next().await.is_some() {}
    }

    /// A shard became ours: resolve runs left `dispatching` in it by this node (a crash or restart) or by a node
    /// that is no longer alive (a failover), so none is silently dropped; then scan it at once, so its due tasks,
    /// missed fires and pending runs are picked up without waiting for the scan loop.
    async fn on_shard_acquired(self: &Arc<Self>, shard: u32) {
        tracing::debug!(shard, "shard lease acquired");
        match self.store.active_runs(shard, &[RunState::Dispatching], self.config.scan_limit).await {
            Ok(runs) => {
                for run in runs {
                    if let Some(reason) = self.orphaned_dispatch(&run) {
                        self.resolve_stuck(run, RunState::Dispatching, &reason).await;
                    }
                }
            }
            Err(e) => tracing::warn!(shard, error = %e, "could not list dispatching runs"),
        }
        if !self.stop.is_cancelled() && self.leases.holds(shard) {
            self.scan_shard(shard).await;
        }
    }

    /// Why a `dispatching` run of a held shard has nobody dispatching it, or `None` if somebody may still be:
    /// this node's own run not in flight here (it restarted), or a run of a scheduler node that is not alive.
    /// A live node's dispatch is left alone until its deadline (the sweeper), even after the shard moved: its
    /// outcome is still coming, and resolving it early would run the work twice.
    pub(crate) fn orphaned_dispatch(&self, run: &RunRecord) -> Option<String> {
        if self.is_in_flight(run.id) {
            return None;
        }
        match run.owner.as_deref() {
            Some(o) if o == self.config.node_id => Some("scheduler restarted during dispatch".to_string()),
            _ => self.dead_owner(run),
        }
    }

    /// For a run of another scheduler node that is not alive (or of no node): why nobody dispatches it.
    fn dead_owner(&self, run: &RunRecord) -> Option<String> {
        match run.owner.as_deref() {
            Some(o) if o == self.config.node_id => None,
            Some(o) if !lock(&self.view).is_alive(o) => {
                Some(format!("scheduler node {o} stopped during the dispatch (its shard was taken over)"))
            }
            Some(_) => None,
            None => Some("dispatching run without an owner".to_string()),
        }
    }

    /// Forgets a shard whose lease was lost and drops its timer entries.
    pub(crate) fn lose_shard(&self, shard: u32, epoch: i64) {
        if self.leases.remove_if_epoch(shard, epoch) {
            self.timer.remove_shard(shard);
            tracing::warn!(shard, epoch, node = %self.config.node_id, "lost shard lease; its timers are dropped");
        }
    }

    async fn lease_loop(self: Arc<Self>) {
        let period = (self.config.lease_ttl / 3).max(Duration::from_millis(10));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_prune = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tick.tick() => self.maintain_leases(false).await,
            }
            if last_prune.elapsed() >= NODE_PRUNE_INTERVAL {
                last_prune = tokio::time::Instant::now();
                let before = now() - TimeDelta::from_std(NODE_RETENTION).unwrap_or(TimeDelta::MAX);
                match self.store.prune_nodes(before).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(removed = n, "pruned node registrations expired over an hour ago"),
                    Err(e) => tracing::debug!(error = %e, "could not prune expired node registrations"),
                }
            }
        }
    }

    async fn scan_loop(self: Arc<Self>) {
        let period = self.config.scan_interval.max(Duration::from_millis(1));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tick.tick() => {
                    for shard in self.leases.shards() {
                        if self.stop.is_cancelled() {
                            return;
                        }
                        self.scan_shard(shard).await;
                    }
                }
            }
        }
    }

    /// One scan of one shard: due tasks and pending runs into the timer; in-flight runs past their deadline out.
    async fn scan_shard(self: &Arc<Self>, shard: u32) {
        let now = now();
        let until = add(now, self.config.lookahead);
        let limit = self.config.scan_limit;
        match self.store.due_tasks(shard, until, limit).await {
            Ok(due) => {
                let firing = lock(&self.firing).clone();
                for d in due {
                    // A spec replaced elsewhere: forget the cached one, so the fire re-reads the task.
                    self.specs.forget_if_stale(d.task_id, d.version);
                    if !firing.contains(&d.task_id) && self.leases.holds(shard) {
                        self.timer.schedule(TimerKey::Fire(d.task_id), d.next_fire_at, shard);
                    }
                }
            }
            Err(e) => tracing::warn!(shard, error = %e, "due scan failed"),
        }
        match self.store.pending_runs(shard, until, limit).await {
            Ok(runs) => {
                for r in runs {
                    if !self.is_in_flight(r.id) && self.leases.holds(shard) {
                        self.timer.schedule(TimerKey::Run(r.id), r.next_attempt_at.unwrap_or(now), shard);
                    }
                }
            }
            Err(e) => tracing::warn!(shard, error = %e, "pending-run scan failed"),
        }
        // Timeout sweeper. For a `running` run, `next_attempt_at` holds its attempt deadline.
        match self.store.active_runs(shard, &[RunState::Running, RunState::Dispatching], limit).await {
            Ok(runs) => {
                for r in runs {
                    if self.is_in_flight(r.id) {
                        continue;
                    }
                    let past_deadline = r.next_attempt_at.is_some_and(|d| d <= now);
                    match r.state {
                        RunState::Running if past_deadline => {
                            self.resolve_stuck(r, RunState::Running, "").await;
                        }
                        RunState::Dispatching => {
                            // A dispatch of a node that died (failover), or one whose outcome was never recorded
                            // by the time its deadline passed (e.g. the store failed meanwhile, or its node hangs).
                            let reason = self.dead_owner(&r).or_else(|| {
                                past_deadline.then(|| match r.owner.as_deref() {
                                    Some(o) if o != self.config.node_id => {
                                        format!("the dispatch by scheduler node {o} did not finish by its deadline")
                                    }
                                    _ => "the dispatch was interrupted".to_string(),
                                })
                            });
                            if let Some(reason) = reason {
                                self.resolve_stuck(r, RunState::Dispatching, &reason).await;
                            }
                        }
                        _ => {}
                    }
                }
            }
            Err(e) => tracing::warn!(shard, error = %e, "timeout sweep failed"),
        }
    }

    async fn timer_loop(self: Arc<Self>) {
        loop {
            if self.stop.is_cancelled() {
                return;
            }
            for due in self.timer.pop_due(Utc::now()) {
                self.handle_due(due);
            }
            let sleep = match self.timer.next_at() {
                Some(at) => (at - Utc::now()).to_std().unwrap_or(Duration::ZERO),
                None => Duration::from_secs(60),
            }
            .min(Duration::from_secs(60));
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = self.timer.changed() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    fn handle_due(self: &Arc<Self>, due: Due) {
        if !self.leases.holds(due.shard) {
            return;
        }
        match due.key {
            TimerKey::Fire(task_id) => {
                if !lock(&self.firing).insert(task_id) {
                    return; // a firing of this task is in progress; it reschedules the task when done
                }
                let this = self.clone();
                self.tracker.spawn(async move {
                    let _guard = FiringGuard { inner: this.clone(), task_id };
                    let Ok(_permit) = this.fire_slots.clone().acquire_owned().await else { return };
                    if this.stop.is_cancelled() {
                        return;
                    }
                    this.fire_task(task_id, due.at, due.shard).await;
                });
            }
            TimerKey::Run(run_id) => self.spawn_dispatch(run_id, None, None),
        }
    }

    pub(crate) fn is_in_flight(&self, run_id: i64) -> bool {
        lock(&self.in_flight).contains_key(&run_id)
    }

    /// Schedules the task's fire in the timer if it falls within the look-ahead window and its shard is ours;
    /// otherwise removes any stale entry (a later scan loads it when it comes close).
    pub(crate) fn schedule_fire(&self, task_id: i64, at: DateTime<Utc>, shard: u32) {
        if self.leases.holds(shard) && at <= add(now(), self.config.lookahead) {
            self.timer.schedule(TimerKey::Fire(task_id), at, shard);
        } else {
            self.timer.remove(TimerKey::Fire(task_id));
        }
    }

    pub(crate) fn refresh_fire_timer(&self, rec: &TaskRecord) {
        match rec.next_fire_at {
            Some(at) if !rec.paused => self.schedule_fire(rec.id, at, rec.shard),
            _ => self.timer.remove(TimerKey::Fire(rec.id)),
        }
    }

    // ---------------------------------------------------------------------------------------------------------
    // Events
    // ---------------------------------------------------------------------------------------------------------

    /// Publishes an event and logs it (target `rota::events`; outcomes at info/warn, progress at debug).
    pub(crate) fn publish(
        &self,
        task: &str,
        run_id: Option<i64>,
        scheduled_at: Option<DateTime<Utc>>,
        kind: EventKind,
    ) {
        log_event(task, run_id, scheduled_at, &kind);
        self.events.publish(Event { at: Utc::now(), task: task.to_string(), run_id, scheduled_at, kind });
    }

    pub(crate) fn publish_run(&self, run: &RunRecord, kind: EventKind) {
        self.publish(&format!("{}/{}", run.namespace, run.name), Some(run.id), Some(run.scheduled_at), kind);
    }

    pub(crate) fn publish_task(&self, key: &str, kind: EventKind) {
        self.publish(key, None, None, kind);
    }

    /// `scheduled` for a new run, or `skipped` (with its reason) for a run created skipped.
    pub(crate) fn publish_new_run(&self, run: &RunRecord) {
        if run.state == RunState::Skipped {
            let reason = run.reason.clone().unwrap_or_default();
            self.publish_run(run, EventKind::Skipped { reason });
        } else {
            self.publish_run(run, EventKind::Scheduled { trigger: run.trigger });
        }
    }
}

struct FiringGuard {
    inner: Arc<Inner>,
    task_id: i64,
}

impl Drop for FiringGuard {
    fn drop(&mut self) {
        lock(&self.inner.firing).remove(&self.task_id);
    }
}

fn log_event(task: &str, run_id: Option<i64>, scheduled_at: Option<DateTime<Utc>>, kind: &EventKind) {
    let run_id = run_id.map(|r| r.to_string()).unwrap_or_default();
    let at = scheduled_at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)).unwrap_or_default();
    const T: &str = "rota::events";
    match kind {
        EventKind::Scheduled { trigger } => {
            tracing::debug!(target: T, task, run_id, scheduled_at = at, trigger = trigger.as_str(), "run scheduled")
        }
        EventKind::Dispatched { attempt, node } => {
            tracing::debug!(target: T, task, run_id, attempt, node = node.as_str(), scheduled_at = at, "run dispatched")
        }
        EventKind::Running { attempt } => {
            tracing::debug!(target: T, task, run_id, attempt, scheduled_at = at, "run accepted; running")
        }
        EventKind::Succeeded { attempt } => {
            tracing::info!(target: T, task, run_id, attempt, scheduled_at = at, "run succeeded")
        }
        EventKind::Failed { attempt, error } => {
            tracing::warn!(target: T, task, run_id, attempt, scheduled_at = at, error = error.as_str(), "run failed")
        }
        EventKind::Retried { attempt, next_attempt_at } => tracing::info!(
            target: T, task, run_id, attempt, scheduled_at = at,
            next_attempt_at = %next_attempt_at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            "attempt failed; run will be retried"
        ),
        EventKind::TimedOut { attempt } => {
            tracing::warn!(target: T, task, run_id, attempt, scheduled_at = at, "run timed out")
        }
        EventKind::Misfired { missed, policy } => {
            tracing::warn!(target: T, task, missed, policy = policy.as_str(), "task misfired")
        }
        EventKind::Skipped { reason } => {
            tracing::info!(target: T, task, run_id, scheduled_at = at, reason = reason.as_str(), "run skipped")
        }
        EventKind::Cancelled { reason } => {
            tracing::info!(target: T, task, run_id, scheduled_at = at, reason = reason.as_str(), "run cancelled")
        }
        EventKind::TaskApplied { version } => tracing::info!(target: T, task, version, "task applied"),
        EventKind::TaskDeleted => tracing::info!(target: T, task, "task deleted"),
        EventKind::TaskPaused => tracing::info!(target: T, task, "task paused"),
        EventKind::TaskResumed => tracing::info!(target: T, task, "task resumed"),
    }
}
