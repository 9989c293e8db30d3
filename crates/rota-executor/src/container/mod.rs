//! Container targets: one fresh container per attempt, removed afterwards.
//!
//! [`ContainerExecutor`] implements [`rota_core::Executor`] for `target.container` on top of a
//! [`ContainerRuntime`]: [`DockerRuntime`] (Docker Engine API, served by Docker and Podman alike) or, with the
//! `kubernetes` feature, `kubernetes::KubernetesRuntime` (one Job per attempt). The contract (environment,
//! labels, outcomes, logs, cleanup, limits) is documented in the crate docs, section "Containers".

mod docker;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use rota_core::{Dispatch, DispatchOutcome, Executor, RunLogSink};
use rota_proto::{ResultStatus, RunEnvelope, RunResult};
use rota_spec::{ContainerTarget, PullPolicy, Resources, Target};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::time::Instant;

pub use docker::{DEFAULT_DOCKER_SOCKET, DockerRuntime};

/// Label carrying the run id (decimal) on every container Rota starts.
pub const LABEL_RUN_ID: &str = "rota.run-id";
/// Label carrying the task key `namespace/name`.
pub const LABEL_TASK: &str = "rota.task";
/// Label carrying the attempt number (1-based).
pub const LABEL_ATTEMPT: &str = "rota.attempt";
/// Label `rota.managed=true`: the container belongs to Rota (the orphan sweep looks for it).
pub const LABEL_MANAGED: &str = "rota.managed";
/// Label naming the executor instance that started the container ([`ContainerExecutorConfig::owner`]).
pub const LABEL_OWNER: &str = "rota.owner";

/// Default bound on the lines of output kept per attempt (both streams together).
pub const DEFAULT_MAX_LOG_LINES: usize = 10_000;
/// Default bound on the bytes of output kept per attempt (both streams together, newlines included).
pub const DEFAULT_MAX_LOG_BYTES: usize = 1024 * 1024;

/// The environment variables through which a container receives its run envelope.
pub const ENVELOPE_VARIABLES: [&str; 9] = [
    "ROTA_RUN_ID",
    "ROTA_TASK",
    "ROTA_ATTEMPT",
    "ROTA_SCHEDULED_AT",
    "ROTA_DEADLINE",
    "ROTA_SHARD_INDEX",
    "ROTA_SHARD_TOTAL",
    "ROTA_PARAMS",
    "ROTA_ENVELOPE",
];

/// Why a runtime operation failed. Messages are safe to store and show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// The runtime could not be reached (socket missing, connection refused, no answer in time).
    #[error("container runtime unavailable at {endpoint}: {reason}")]
    Unavailable { endpoint: String, reason: String },
    /// The container or image does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The runtime answered with an error.
    #[error("{0}")]
    Api(String),
    /// The container cannot run, for a reason the message explains (e.g. its image cannot be pulled).
    #[error("{0}")]
    CannotRun(String),
}

/// Resource limits as the runtime applies them (and as they appear in a run's output under `limits`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// CPU limit in billionths of a CPU (`resources.cpu` millicores × 1,000,000): Docker's `NanoCpus`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nano_cpus: Option<i64>,
    /// Memory limit in bytes: Docker's `Memory`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<i64>,
}

impl Limits {
    /// The limits of a container target's `resources`.
    pub fn from_resources(resources: Option<&Resources>) -> Self {
        let Some(r) = resources else { return Limits::default() };
        Limits {
            nano_cpus: r.cpu.map(|c| i64::try_from(c.millicores().saturating_mul(1_000_000)).unwrap_or(i64::MAX)),
            memory_bytes: r.memory_bytes().map(|b| i64::try_from(b).unwrap_or(i64::MAX)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.nano_cpus.is_none() && self.memory_bytes.is_none()
    }
}

/// Everything a runtime needs to create the container of one attempt (built by [`container_spec`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSpec {
    /// Container (or Job) name: `rota-<run id>-<attempt>-<8 random hex digits>`.
    pub name: String,
    pub image: String,
    /// Entrypoint override (`target.container.command`); empty keeps the image's.
    pub command: Vec<String>,
    /// Arguments (`target.container.args`); empty keeps the image's (unless `command` is set).
    pub args: Vec<String>,
    /// The target's env with the envelope variables ([`envelope_env`]) on top.
    pub env: BTreeMap<String, String>,
    pub working_dir: Option<String>,
    /// The target's labels with Rota's labels on top.
    pub labels: BTreeMap<String, String>,
    pub network: Option<String>,
    pub limits: Limits,
    pub pull_policy: PullPolicy,
    /// The attempt's timeout (runtimes that enforce deadlines themselves, like Kubernetes, use it).
    pub timeout: Duration,
}

/// How [`ContainerRuntime::wait`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStatus {
    /// The container's main process exited.
    Exited { code: i64, oom_killed: bool },
    /// The timeout passed first; the container is still running.
    TimedOut,
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogStream {
    Stdout,
    Stderr,
}

impl LogStream {
    /// `stdout` or `stderr`: the stream name used with [`RunLogSink`].
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }

    fn index(self) -> usize {
        match self {
            LogStream::Stdout => 0,
            LogStream::Stderr => 1,
        }
    }
}

/// A piece of a container's output (not necessarily whole lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    pub stream: LogStream,
    pub data: Vec<u8>,
}

/// A container's output, as [`ContainerRuntime::logs`] returns it.
pub type LogChunks = BoxStream<'static, Result<LogChunk, RuntimeError>>;

/// An image the runtime has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub id: String,
}

/// A container found by [`ContainerRuntime::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub name: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Runtime-specific state (`running`, `exited`, …) when known.
    pub state: Option<String>,
}

/// The operations [`ContainerExecutor`] needs from a container runtime.
///
/// `id` is whatever [`create`](Self::create) returned (runtimes also accept the container's name). Operations
/// on a container that no longer exists: [`remove`](Self::remove), [`kill`](Self::kill) and
/// [`stop`](Self::stop) succeed; the others fail with [`RuntimeError::NotFound`].
#[async_trait]
pub trait ContainerRuntime: Send + Sync + 'static {
    /// Where the runtime is (`unix:///run/podman/podman.sock`, `http://127.0.0.1:8001`), for messages.
    fn endpoint(&self) -> String;

    /// Whether the runtime applies [`ContainerSpec::pull_policy`] itself (Kubernetes does, through the Pod's
    /// `imagePullPolicy`). When `false` (the default), the executor calls [`inspect_image`](Self::inspect_image)
    /// and [`pull_image`](Self::pull_image) before [`create`](Self::create).
    fn applies_pull_policy(&self) -> bool {
        false
    }

    /// The image, or `None` when the runtime does not have it.
    async fn inspect_image(&self, image: &str) -> Result<Option<ImageInfo>, RuntimeError>;

    /// Pulls `image` (a reference without tag or digest means `:latest`).
    async fn pull_image(&self, image: &str) -> Result<(), RuntimeError>;

    /// Creates (does not start) the container; returns its id.
    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError>;

    async fn start(&self, id: &str) -> Result<(), RuntimeError>;

    /// Waits until the container exits, or `timeout` passes (then it is left running).
    async fn wait(&self, id: &str, timeout: Duration) -> Result<WaitStatus, RuntimeError>;

    /// The container's output from its start. With `follow`, the stream goes on while the container runs and
    /// ends when it stops; without, it ends with the output produced so far.
    async fn logs(&self, id: &str, follow: bool) -> Result<LogChunks, RuntimeError>;

    /// Sends SIGTERM, then SIGKILL when the container is still running after `grace`.
    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError>;

    /// Sends SIGKILL.
    async fn kill(&self, id: &str) -> Result<(), RuntimeError>;

    /// Removes the container, killing it first when it runs.
    async fn remove(&self, id: &str) -> Result<(), RuntimeError>;

    /// Every container (running or not) carrying all of `labels`.
    async fn list(&self, labels: &BTreeMap<String, String>) -> Result<Vec<ContainerInfo>, RuntimeError>;
}

/// The envelope variables of a dispatch (see the crate docs, "Containers"): `ROTA_RUN_ID`, `ROTA_TASK`,
/// `ROTA_ATTEMPT`, `ROTA_SCHEDULED_AT`, `ROTA_DEADLINE`, `ROTA_SHARD_INDEX`, `ROTA_SHARD_TOTAL`, `ROTA_PARAMS`
/// (JSON object) and `ROTA_ENVELOPE` (the whole [`RunEnvelope`] as JSON, exactly what an HTTP executor node
/// receives).
pub fn envelope_env(d: &Dispatch) -> BTreeMap<String, String> {
    let envelope = RunEnvelope {
        run_id: d.run_id.to_string(),
        task: d.task_key(),
        attempt: d.attempt,
        scheduled_at: d.scheduled_at,
        params: d.params.clone(),
        shard: d.shard,
        deadline: d.deadline,
        report_url: d.report_url.clone(),
    };
    let json = serde_json::to_value(&envelope).unwrap_or(Value::Null);
    let instant = |key: &str| json.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
    BTreeMap::from([
        ("ROTA_RUN_ID".to_string(), envelope.run_id.clone()),
        ("ROTA_TASK".to_string(), envelope.task.clone()),
        ("ROTA_ATTEMPT".to_string(), d.attempt.to_string()),
        ("ROTA_SCHEDULED_AT".to_string(), instant("scheduled_at")),
        ("ROTA_DEADLINE".to_string(), instant("deadline")),
        ("ROTA_SHARD_INDEX".to_string(), d.shard.index.to_string()),
        ("ROTA_SHARD_TOTAL".to_string(), d.shard.total.to_string()),
        ("ROTA_PARAMS".to_string(), Value::Object(d.params.clone()).to_string()),
        ("ROTA_ENVELOPE".to_string(), json.to_string()),
    ])
}

/// Rota's labels for an attempt: `rota.run-id`, `rota.task`, `rota.attempt`, `rota.managed=true`,
/// `rota.owner`.
pub fn rota_labels(d: &Dispatch, owner: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_RUN_ID.to_string(), d.run_id.to_string()),
        (LABEL_TASK.to_string(), d.task_key()),
        (LABEL_ATTEMPT.to_string(), d.attempt.to_string()),
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_OWNER.to_string(), owner.to_string()),
    ])
}

/// The container of one attempt: the target's settings, the envelope variables over the target's `env`, Rota's
/// labels over the target's `labels`, limits from `resources`, and a fresh name.
pub fn container_spec(d: &Dispatch, target: &ContainerTarget, owner: &str) -> ContainerSpec {
    let mut env = target.env.clone();
    env.extend(envelope_env(d));
    let mut labels = target.labels.clone();
    labels.extend(rota_labels(d, owner));
    ContainerSpec {
        name: format!("rota-{}-{}-{:08x}", d.run_id, d.attempt, random_u64() as u32),
        image: target.image.clone(),
        command: target.command.clone(),
        args: target.args.clone(),
        env,
        working_dir: target.working_dir.clone(),
        labels,
        network: target.network.clone(),
        limits: Limits::from_resources(target.resources.as_ref()),
        pull_policy: target.pull_policy,
        timeout: d.timeout,
    }
}

fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.finish()
}

/// Settings of a [`ContainerExecutor`].
#[derive(Debug, Clone)]
pub struct ContainerExecutorConfig {
    /// Names this executor instance in the `rota.owner` label; [`ContainerExecutor::cleanup_orphans`] only
    /// removes containers of its own owner, so servers sharing a runtime must use distinct owners (the server
    /// uses its node id). Default `rota`.
    pub owner: String,
    /// How long a container may take to exit after SIGTERM (on timeout) before it is killed. Default 10 s.
    pub stop_grace: Duration,
    /// Lines of output kept per attempt, both streams together. Default [`DEFAULT_MAX_LOG_LINES`].
    pub max_log_lines: usize,
    /// Bytes of output kept per attempt, both streams together. Default [`DEFAULT_MAX_LOG_BYTES`].
    pub max_log_bytes: usize,
    /// How often the output of a running container is read and appended to the run's logs. Default 1 s.
    pub log_poll_interval: Duration,
    /// Bound on one read of a container's output. Default 10 s.
    pub log_read_timeout: Duration,
}

impl Default for ContainerExecutorConfig {
    fn default() -> Self {
        ContainerExecutorConfig {
            owner: "rota".into(),
            stop_grace: Duration::from_secs(10),
            max_log_lines: DEFAULT_MAX_LOG_LINES,
            max_log_bytes: DEFAULT_MAX_LOG_BYTES,
            log_poll_interval: Duration::from_secs(1),
            log_read_timeout: Duration::from_secs(10),
        }
    }
}

/// Runs `target.container` dispatches: one fresh container per attempt, always removed afterwards.
///
/// Cheap to clone (clones share state). See the crate docs, section "Containers", for the contract.
#[derive(Clone)]
pub struct ContainerExecutor {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: Arc<dyn ContainerRuntime>,
    sink: Arc<dyn RunLogSink>,
    config: ContainerExecutorConfig,
    flights: Mutex<HashMap<u64, Flight>>,
    next_flight: AtomicU64,
    /// Containers whose removal failed (runtime down): retried before each dispatch and by the orphan sweep.
    leftovers: Mutex<HashSet<String>>,
}

struct Flight {
    run_id: i64,
    attempt: u32,
    /// The container's name, known before it is created (so the orphan sweep spares a creation in flight).
    name: Option<String>,
    container: Option<String>,
    cancelled: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl fmt::Debug for ContainerExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContainerExecutor")
            .field("runtime", &self.inner.runtime.endpoint())
            .field("config", &self.inner.config)
            .finish()
    }
}

impl ContainerExecutor {
    /// An executor over `runtime`, appending containers' output to `sink`.
    pub fn new(runtime: Arc<dyn ContainerRuntime>, sink: Arc<dyn RunLogSink>, config: ContainerExecutorConfig) -> Self {
        ContainerExecutor {
            inner: Arc::new(Inner {
                runtime,
                sink,
                config,
                flights: Mutex::new(HashMap::new()),
                next_flight: AtomicU64::new(1),
                leftovers: Mutex::new(HashSet::new()),
            }),
        }
    }

    /// An executor over the Docker Engine API at `endpoint` (see [`DockerRuntime::new`]).
    pub fn docker(
        endpoint: &str,
        sink: Arc<dyn RunLogSink>,
        config: ContainerExecutorConfig,
    ) -> Result<Self, RuntimeError> {
        Ok(ContainerExecutor::new(Arc::new(DockerRuntime::new(endpoint)?), sink, config))
    }

    pub fn runtime(&self) -> &Arc<dyn ContainerRuntime> {
        &self.inner.runtime
    }

    pub fn config(&self) -> &ContainerExecutorConfig {
        &self.inner.config
    }

    /// Removes the containers a previous process of the same [owner](ContainerExecutorConfig::owner) left
    /// behind (labels `rota.managed=true` and `rota.owner=<owner>`, running or not), except those of attempts
    /// this executor is running now, and retries removals that failed earlier. The server calls it on start.
    /// Returns how many containers were removed; fails only when the runtime cannot list containers.
    pub async fn cleanup_orphans(&self) -> Result<usize, RuntimeError> {
        let inner = &self.inner;
        let labels = BTreeMap::from([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_OWNER.to_string(), inner.config.owner.clone()),
        ]);
        let found = inner.runtime.list(&labels).await?;
        let busy: HashSet<String> =
            lock(&inner.flights).values().flat_map(|f| f.name.iter().chain(f.container.iter()).cloned()).collect();
        let mut removed = 0;
        for c in found {
            let name_busy = c.name.as_ref().is_some_and(|n| busy.contains(n));
            if busy.contains(&c.id) || name_busy {
                continue;
            }
            match inner.runtime.remove(&c.id).await {
                Ok(()) => {
                    removed += 1;
                    lock(&inner.leftovers).remove(&c.id);
                    tracing::info!(container = %c.id, run_id = c.labels.get(LABEL_RUN_ID).map(String::as_str),
                        "removed an orphaned container");
                }
                Err(e) => tracing::warn!(container = %c.id, error = %e, "could not remove an orphaned container"),
            }
        }
        inner.retry_leftovers().await;
        Ok(removed)
    }
}

#[async_trait]
impl Executor for ContainerExecutor {
    async fn dispatch(&self, d: Dispatch) -> DispatchOutcome {
        let inner = self.inner.clone();
        let flight = inner.next_flight.fetch_add(1, Ordering::Relaxed);
        lock(&inner.flights).insert(
            flight,
            Flight { run_id: d.run_id, attempt: d.attempt, name: None, container: None, cancelled: false },
        );
        // The attempt runs in its own task so that its container is removed even when the caller stops waiting
        // (the core drops a dispatch that outlives its deadline or is cancelled).
        let task = tokio::spawn(async move {
            let guard = FlightGuard { inner: inner.clone(), flight };
            let outcome = inner.run(d, flight).await;
            drop(guard);
            outcome
        });
        match task.await {
            Ok(outcome) => outcome,
            Err(e) => DispatchOutcome::Failed { error: format!("the container executor failed: {e}") },
        }
    }

    async fn cancel(&self, run_id: i64, attempt: u32, _target: &Target) {
        let inner = &self.inner;
        let mut ids: Vec<String> = Vec::new();
        for f in lock(&inner.flights).values_mut() {
            if f.run_id == run_id && f.attempt == attempt {
                f.cancelled = true;
                ids.extend(f.container.clone());
            }
        }
        let labels = BTreeMap::from([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_RUN_ID.to_string(), run_id.to_string()),
            (LABEL_ATTEMPT.to_string(), attempt.to_string()),
        ]);
        match inner.runtime.list(&labels).await {
            Ok(found) => ids.extend(found.into_iter().map(|c| c.id)),
            Err(e) => tracing::warn!(run_id, attempt, error = %e, "could not list the run's containers to cancel"),
        }
        let mut seen = HashSet::new();
        for id in ids.into_iter().filter(|id| seen.insert(id.clone())) {
            inner.remove_container(&id).await;
        }
    }
}

struct FlightGuard {
    inner: Arc<Inner>,
    flight: u64,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        lock(&self.inner.flights).remove(&self.flight);
    }
}

fn failed(error: impl Into<String>) -> DispatchOutcome {
    DispatchOutcome::Failed { error: error.into() }
}

const CANCELLED: &str = "the attempt was cancelled: its container was killed and removed";

impl Inner {
    fn cancelled(&self, flight: u64) -> bool {
        lock(&self.flights).get(&flight).is_some_and(|f| f.cancelled)
    }

    async fn log(&self, run_id: i64, line: String) {
        self.sink.append(run_id, "executor", vec![line]).await;
    }

    async fn run(self: &Arc<Self>, d: Dispatch, flight: u64) -> DispatchOutcome {
        let Some(target) = d.target.container.clone() else {
            return failed("the container executor only runs `target.container` targets");
        };
        let deadline = Instant::now() + d.timeout;
        if !lock(&self.leftovers).is_empty() {
            let inner = self.clone();
            tokio::spawn(async move { inner.retry_leftovers().await });
        }
        let spec = container_spec(&d, &target, &self.config.owner);

        if !self.runtime.applies_pull_policy() {
            match tokio::time::timeout_at(deadline, self.ensure_image(&spec.image, spec.pull_policy)).await {
                Err(_) => return DispatchOutcome::TimedOut,
                Ok(Err(error)) => return failed(error),
                Ok(Ok(())) => {}
            }
        }
        if let Some(f) = lock(&self.flights).get_mut(&flight) {
            if f.cancelled {
                return failed(CANCELLED);
            }
            f.name = Some(spec.name.clone());
        }

        let id = match tokio::time::timeout_at(deadline, self.runtime.create(&spec)).await {
            Ok(Ok(id)) => id,
            result => {
                // The runtime may have created it before the error or the deadline: remove by name.
                self.remove_container(&spec.name).await;
                return match result {
                    Ok(Err(e @ RuntimeError::Unavailable { .. })) => failed(e.to_string()),
                    Ok(Err(e)) => failed(format!("could not create the container: {e}")),
                    _ => DispatchOutcome::TimedOut,
                };
            }
        };
        if let Some(f) = lock(&self.flights).get_mut(&flight) {
            f.container = Some(id.clone());
        }
        let outcome = if self.cancelled(flight) {
            failed(CANCELLED)
        } else {
            self.supervise(&d, &spec, &id, flight, deadline).await
        };
        self.remove_container(&id).await;
        outcome
    }

    async fn ensure_image(&self, image: &str, policy: PullPolicy) -> Result<(), String> {
        let pull = match policy {
            PullPolicy::Always => true,
            PullPolicy::IfNotPresent | PullPolicy::Never => match self.runtime.inspect_image(image).await {
                Ok(Some(_)) => false,
                Ok(None) if policy == PullPolicy::Never => {
                    return Err(format!("image {image} is not present and pullPolicy is never"));
                }
                Ok(None) => true,
                Err(e @ RuntimeError::Unavailable { .. }) => return Err(e.to_string()),
                Err(e) => return Err(format!("could not inspect image {image}: {e}")),
            },
        };
        if pull {
            match self.runtime.pull_image(image).await {
                Ok(()) => {}
                Err(e @ RuntimeError::Unavailable { .. }) => return Err(e.to_string()),
                Err(e) => return Err(format!("could not pull image {image}: {e}")),
            }
        }
        Ok(())
    }

    async fn supervise(
        self: &Arc<Self>,
        d: &Dispatch,
        spec: &ContainerSpec,
        id: &str,
        flight: u64,
        deadline: Instant,
    ) -> DispatchOutcome {
        match tokio::time::timeout_at(deadline, self.runtime.start(id)).await {
            Err(_) => return DispatchOutcome::TimedOut,
            Ok(Err(e @ RuntimeError::Unavailable { .. })) => return failed(e.to_string()),
            Ok(Err(e)) => return failed(format!("could not start the container: {e}")),
            Ok(Ok(())) => {}
        }
        let short: String = id.chars().take(12).collect();
        self.log(d.run_id, format!("started container {} ({short}) from image {}", spec.name, spec.image)).await;

        let (stop_logs, stop_rx) = oneshot::channel();
        let poller = tokio::spawn(self.clone().poll_logs(id.to_string(), d.run_id, stop_rx));
        let remaining = deadline.saturating_duration_since(Instant::now());
        let waited = self.runtime.wait(id, remaining).await;
        let outcome = match waited {
            Ok(WaitStatus::TimedOut) => {
                let grace = self.config.stop_grace;
                self.log(
                    d.run_id,
                    format!(
                        "timed out after {:?}: sending SIGTERM, SIGKILL after {grace:?}",
                        Duration::from_millis(d.timeout.as_millis() as u64)
                    ),
                )
                .await;
                if let Err(e) = self.runtime.stop(id, grace).await {
                    tracing::warn!(run_id = d.run_id, container = id, error = %e, "could not stop the container");
                    let _ = self.runtime.kill(id).await;
                }
                DispatchOutcome::TimedOut
            }
            _ if self.cancelled(flight) => failed(CANCELLED),
            Ok(WaitStatus::Exited { code, oom_killed }) => {
                DispatchOutcome::Completed(exit_result(code, oom_killed, spec.limits))
            }
            Err(e @ (RuntimeError::Unavailable { .. } | RuntimeError::CannotRun(_))) => failed(e.to_string()),
            Err(e) => failed(format!("waiting for the container failed: {e}")),
        };
        // Stop polling, then read the output once more for whatever came after the last poll.
        let _ = stop_logs.send(());
        let mut capture = poller.await.unwrap_or_else(|_| self.capture());
        self.read_logs(id, d.run_id, &mut capture).await;
        capture.finish();
        capture.flush(&*self.sink, d.run_id).await;
        outcome
    }

    fn capture(&self) -> LogCapture {
        LogCapture::new(self.config.max_log_lines, self.config.max_log_bytes)
    }

    /// Appends the container's output to the sink while it runs, reading it every
    /// [`ContainerExecutorConfig::log_poll_interval`].
    ///
    /// Output is read whole (not followed) each time and what was read before is skipped by its byte count:
    /// followed streams lose lines under load on some runtimes (Podman 4), whole reads do not.
    async fn poll_logs(self: Arc<Self>, id: String, run_id: i64, mut stop: oneshot::Receiver<()>) -> LogCapture {
        let mut capture = self.capture();
        while !capture.truncated {
            tokio::select! {
                _ = &mut stop => break,
                _ = tokio::time::sleep(self.config.log_poll_interval) => {}
            }
            self.read_logs(&id, run_id, &mut capture).await;
        }
        capture
    }

    /// Reads the output produced so far into `capture`, past what it already holds; bounded by
    /// [`ContainerExecutorConfig::log_read_timeout`].
    async fn read_logs(&self, id: &str, run_id: i64, capture: &mut LogCapture) {
        if capture.truncated {
            return;
        }
        let limit = self.config.log_read_timeout;
        match tokio::time::timeout(limit, self.runtime.logs(id, false)).await {
            Ok(Ok(stream)) => {
                let skip = capture.consumed;
                self.pump(run_id, stream, capture, skip, tokio::time::sleep(limit)).await;
            }
            Ok(Err(e)) => tracing::debug!(run_id, container = id, error = %e, "could not read the container's output"),
            Err(_) => tracing::debug!(run_id, container = id, "the container's output was not read in time"),
        }
    }

    /// Reads `stream` into `capture` until it ends, the capture is full, or `stop` completes; the first
    /// `skip[stream]` bytes of each stream were read before and are passed over.
    async fn pump(
        &self,
        run_id: i64,
        mut stream: LogChunks,
        capture: &mut LogCapture,
        skip: [u64; 2],
        stop: impl Future<Output = ()>,
    ) {
        let mut seen = [0u64; 2];
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                biased;
                _ = &mut stop => break,
                item = stream.next() => match item {
                    Some(Ok(chunk)) => {
                        let i = chunk.stream.index();
                        let len = chunk.data.len() as u64;
                        let already = skip[i].saturating_sub(seen[i]).min(len) as usize;
                        seen[i] += len;
                        capture.push(chunk.stream, &chunk.data[already..]);
                        if capture.truncated {
                            break;
                        }
                        if capture.pending_lines() >= 512 {
                            capture.flush(&*self.sink, run_id).await;
                        }
                    }
                    Some(Err(e)) => {
                        tracing::debug!(run_id, error = %e, "container output stream failed");
                        break;
                    }
                    None => break,
                },
                _ = tick.tick() => capture.flush(&*self.sink, run_id).await,
            }
        }
        capture.flush(&*self.sink, run_id).await;
    }

    /// Removes a container, remembering it for a later retry when the runtime cannot be reached.
    async fn remove_container(&self, id: &str) {
        match self.runtime.remove(id).await {
            Ok(()) | Err(RuntimeError::NotFound(_)) => {
                lock(&self.leftovers).remove(id);
            }
            Err(e) => {
                tracing::warn!(container = id, error = %e, "could not remove the container; will retry");
                lock(&self.leftovers).insert(id.to_string());
            }
        }
    }

    async fn retry_leftovers(&self) {
        let ids: Vec<String> = lock(&self.leftovers).iter().cloned().collect();
        for id in ids {
            if let Ok(()) | Err(RuntimeError::NotFound(_)) = self.runtime.remove(&id).await {
                lock(&self.leftovers).remove(&id);
            }
        }
    }
}

/// The result of a container that exited with `code`.
pub fn exit_result(code: i64, oom_killed: bool, limits: Limits) -> RunResult {
    let mut output = json!({ "exitCode": code });
    if !limits.is_empty() {
        output["limits"] = serde_json::to_value(limits).unwrap_or(Value::Null);
    }
    if oom_killed {
        output["oomKilled"] = Value::Bool(true);
    }
    if code == 0 {
        return RunResult { status: ResultStatus::Succeeded, output: Some(output), error: None };
    }
    let error = match (oom_killed, limits.memory_bytes) {
        (true, Some(m)) => format!("container exited with code {code} (killed: out of memory, limit {m} bytes)"),
        (true, None) => format!("container exited with code {code} (killed: out of memory)"),
        _ => format!("container exited with code {code}"),
    };
    RunResult { status: ResultStatus::Failed, output: Some(output), error: Some(error) }
}

/// The line appended (to the stream that overflowed) when a run's output exceeds the bounds.
pub fn truncation_marker(max_lines: usize, max_bytes: usize) -> String {
    format!("[rota] output truncated: more than {max_lines} lines or {max_bytes} bytes; the rest was discarded")
}

/// Splits output chunks into lines and keeps at most `max_lines` lines / `max_bytes` bytes of them.
struct LogCapture {
    max_lines: usize,
    max_bytes: usize,
    lines: usize,
    bytes: usize,
    truncated: bool,
    /// Bytes read so far from each stream (kept or not).
    consumed: [u64; 2],
    partial: [Vec<u8>; 2],
    pending: [Vec<String>; 2],
}

impl LogCapture {
    fn new(max_lines: usize, max_bytes: usize) -> Self {
        LogCapture {
            max_lines,
            max_bytes,
            lines: 0,
            bytes: 0,
            truncated: false,
            consumed: [0, 0],
            partial: [Vec::new(), Vec::new()],
            pending: [Vec::new(), Vec::new()],
        }
    }

    fn pending_lines(&self) -> usize {
        self.pending[0].len() + self.pending[1].len()
    }

    fn push(&mut self, stream: LogStream, mut data: &[u8]) {
        let i = stream.index();
        self.consumed[i] += data.len() as u64;
        while !self.truncated && !data.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                Some(n) => {
                    let mut line = std::mem::take(&mut self.partial[i]);
                    line.extend_from_slice(&data[..n]);
                    data = &data[n + 1..];
                    self.line(stream, line);
                }
                None => {
                    self.partial[i].extend_from_slice(data);
                    data = &[];
                    if self.partial[i].len() > self.max_bytes {
                        let line = std::mem::take(&mut self.partial[i]);
                        self.line(stream, line);
                    }
                }
            }
        }
    }

    fn line(&mut self, stream: LogStream, mut bytes: Vec<u8>) {
        if self.truncated {
            return;
        }
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        let cost = bytes.len() + 1;
        if self.lines + 1 > self.max_lines || self.bytes + cost > self.max_bytes {
            self.truncated = true;
            self.pending[stream.index()].push(truncation_marker(self.max_lines, self.max_bytes));
            return;
        }
        self.lines += 1;
        self.bytes += cost;
        self.pending[stream.index()].push(String::from_utf8_lossy(&bytes).into_owned());
    }

    /// Turns unterminated last lines into lines.
    fn finish(&mut self) {
        for stream in [LogStream::Stdout, LogStream::Stderr] {
            let rest = std::mem::take(&mut self.partial[stream.index()]);
            if !rest.is_empty() {
                self.line(stream, rest);
            }
        }
    }

    async fn flush(&mut self, sink: &dyn RunLogSink, run_id: i64) {
        for stream in [LogStream::Stdout, LogStream::Stderr] {
            let lines = std::mem::take(&mut self.pending[stream.index()]);
            if !lines.is_empty() {
                sink.append(run_id, stream.as_str(), lines).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use rota_proto::ShardInfo;
    use serde_json::Map;

    pub(crate) fn dispatch(target: ContainerTarget) -> Dispatch {
        let mut params = Map::new();
        params.insert("report".into(), json!("daily"));
        Dispatch {
            run_id: 42,
            attempt: 2,
            namespace: "billing".into(),
            name: "nightly".into(),
            scheduled_at: Utc.with_ymd_and_hms(2026, 11, 25, 2, 30, 0).unwrap(),
            params,
            shard: ShardInfo { index: 1, total: 3 },
            deadline: Utc.with_ymd_and_hms(2026, 11, 25, 2, 40, 0).unwrap(),
            timeout: Duration::from_secs(600),
            target: Target { container: Some(target), ..Target::default() },
            node: None,
            report_url: None,
        }
    }

    #[test]
    fn envelope_variables_are_exactly_the_documented_ones() {
        let d = dispatch(ContainerTarget { image: "x".into(), ..ContainerTarget::default() });
        let env = envelope_env(&d);
        let keys: Vec<&str> = env.keys().map(String::as_str).collect();
        let mut documented = ENVELOPE_VARIABLES.to_vec();
        documented.sort_unstable();
        assert_eq!(keys, documented);
        assert_eq!(env["ROTA_RUN_ID"], "42");
        assert_eq!(env["ROTA_TASK"], "billing/nightly");
        assert_eq!(env["ROTA_ATTEMPT"], "2");
        assert_eq!(env["ROTA_SCHEDULED_AT"], "2026-11-25T02:30:00Z");
        assert_eq!(env["ROTA_DEADLINE"], "2026-11-25T02:40:00Z");
        assert_eq!(env["ROTA_SHARD_INDEX"], "1");
        assert_eq!(env["ROTA_SHARD_TOTAL"], "3");
        assert_eq!(env["ROTA_PARAMS"], r#"{"report":"daily"}"#);
        let envelope: RunEnvelope = serde_json::from_str(&env["ROTA_ENVELOPE"]).unwrap();
        assert_eq!(envelope.run_id, "42");
        assert_eq!(envelope.shard, ShardInfo { index: 1, total: 3 });
    }

    #[test]
    fn spec_puts_rota_env_and_labels_over_the_targets() {
        let d = dispatch(ContainerTarget::default());
        let t = ContainerTarget {
            image: "busybox".into(),
            env: BTreeMap::from([("ROTA_RUN_ID".into(), "spoofed".into()), ("MODE".into(), "fast".into())]),
            labels: BTreeMap::from([(LABEL_MANAGED.into(), "false".into()), ("team".into(), "finance".into())]),
            resources: Some(Resources {
                cpu: Some(rota_spec::CpuQuantity::parse("500m").unwrap()),
                memory: Some("64Mi".into()),
            }),
            ..ContainerTarget::default()
        };
        let spec = container_spec(&d, &t, "node-1");
        assert!(spec.name.starts_with("rota-42-2-") && spec.name.len() == "rota-42-2-".len() + 8, "{}", spec.name);
        assert_eq!(spec.env["ROTA_RUN_ID"], "42");
        assert_eq!(spec.env["MODE"], "fast");
        assert_eq!(spec.labels[LABEL_MANAGED], "true");
        assert_eq!(spec.labels[LABEL_OWNER], "node-1");
        assert_eq!(spec.labels[LABEL_TASK], "billing/nightly");
        assert_eq!(spec.labels[LABEL_ATTEMPT], "2");
        assert_eq!(spec.labels["team"], "finance");
        assert_eq!(spec.limits, Limits { nano_cpus: Some(500_000_000), memory_bytes: Some(64 << 20) });
        assert_ne!(spec.name, container_spec(&d, &t, "node-1").name);
    }

    #[test]
    fn exit_codes_map_to_results() {
        let ok = exit_result(0, false, Limits::default());
        assert_eq!(ok, RunResult::succeeded(Some(json!({"exitCode": 0}))));
        let limits = Limits { nano_cpus: Some(250_000_000), memory_bytes: None };
        let bad = exit_result(3, false, limits);
        assert_eq!(bad.status, ResultStatus::Failed);
        assert_eq!(bad.error.as_deref(), Some("container exited with code 3"));
        assert_eq!(bad.output, Some(json!({"exitCode": 3, "limits": {"nanoCpus": 250_000_000}})));
        let oom = exit_result(137, true, Limits { nano_cpus: None, memory_bytes: Some(1024) });
        assert_eq!(
            oom.error.as_deref(),
            Some("container exited with code 137 (killed: out of memory, limit 1024 bytes)")
        );
    }

    #[test]
    fn capture_splits_lines_and_truncates() {
        let mut c = LogCapture::new(3, 1000);
        c.push(LogStream::Stdout, b"a\nb");
        c.push(LogStream::Stderr, b"e1\r\n");
        c.push(LogStream::Stdout, b"c\nd\ne\n");
        c.finish();
        assert_eq!(c.pending[0], vec!["a".to_string(), "bc".into(), truncation_marker(3, 1000)]);
        assert_eq!(c.pending[1], vec!["e1".to_string()]);
        assert!(c.truncated);

        let mut c = LogCapture::new(100, 11);
        c.push(LogStream::Stdout, b"12345\n1234\n1\n");
        assert_eq!(c.pending[0], vec!["12345".to_string(), "1234".into(), truncation_marker(100, 11)]);

        let mut c = LogCapture::new(100, 100);
        c.push(LogStream::Stdout, b"no newline");
        assert!(c.pending[0].is_empty());
        c.finish();
        assert_eq!(c.pending[0], vec!["no newline".to_string()]);
    }
}
