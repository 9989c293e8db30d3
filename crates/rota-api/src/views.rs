//! What the API returns and accepts (besides task documents): stable JSON views of store records, decoupled from
//! the store's own types so storage internals (ids, shards) can change without breaking clients.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rota_store::{
    AttemptRecord, AttemptState, LogLine, NodeState, RunRecord, RunState, TaskRecord, TaskVersion, TriggerKind,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// A task document (`apiVersion: rota/v1`, `kind: Task`), as YAML or JSON. The full schema is the task
/// specification's JSON Schema (`schema/task-v1.json`), embedded in this document under this name.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(value_type = Object)]
pub struct TaskDocument(pub Value);

/// A stored task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskView {
    pub namespace: String,
    pub name: String,
    /// Starts at 1 and grows with every replacement; usable as `If-Match` value.
    pub version: i64,
    pub labels: BTreeMap<String, String>,
    /// The task document as stored.
    #[schema(value_type = TaskDocument)]
    pub spec: Value,
    pub paused: bool,
    /// Next instant the task fires by time; absent for paused, manual, dependency-triggered or finished tasks.
    pub next_fire_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<TaskRecord> for TaskView {
    fn from(t: TaskRecord) -> Self {
        TaskView {
            namespace: t.namespace,
            name: t.name,
            version: t.version,
            labels: t.labels,
            spec: t.spec,
            paused: t.paused,
            next_fire_at: t.next_fire_at,
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

/// One page of tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskList {
    pub items: Vec<TaskView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// One historical version of a task's document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskVersionView {
    pub version: i64,
    #[schema(value_type = TaskDocument)]
    pub spec: Value,
    pub created_at: DateTime<Utc>,
}

impl From<TaskVersion> for TaskVersionView {
    fn from(v: TaskVersion) -> Self {
        TaskVersionView { version: v.version, spec: v.spec, created_at: v.created_at }
    }
}

/// The version history of a task, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskVersionList {
    pub items: Vec<TaskVersionView>,
}

/// The states of a run. Terminal: `succeeded`, `failed`, `timed_out`, `skipped`, `cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStateView {
    Scheduled,
    Dispatching,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Skipped,
    Cancelled,
}

impl From<RunState> for RunStateView {
    fn from(s: RunState) -> Self {
        match s {
            RunState::Scheduled => RunStateView::Scheduled,
            RunState::Dispatching => RunStateView::Dispatching,
            RunState::Running => RunStateView::Running,
            RunState::Succeeded => RunStateView::Succeeded,
            RunState::Failed => RunStateView::Failed,
            RunState::TimedOut => RunStateView::TimedOut,
            RunState::Skipped => RunStateView::Skipped,
            RunState::Cancelled => RunStateView::Cancelled,
        }
    }
}

/// Why a run exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TriggerView {
    Schedule,
    Manual,
    Dependency,
    CatchUp,
}

impl From<TriggerKind> for TriggerView {
    fn from(t: TriggerKind) -> Self {
        match t {
            TriggerKind::Schedule => TriggerView::Schedule,
            TriggerKind::Manual => TriggerView::Manual,
            TriggerKind::Dependency => TriggerView::Dependency,
            TriggerKind::CatchUp => TriggerView::CatchUp,
        }
    }
}

/// One run of a task (one scheduled instant or one manual trigger).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunView {
    pub id: i64,
    /// `namespace/name` of the task.
    pub task: String,
    pub namespace: String,
    pub name: String,
    /// The task version the run was created from.
    pub task_version: i64,
    pub scheduled_at: DateTime<Utc>,
    pub trigger: TriggerView,
    pub state: RunStateView,
    /// Attempts started so far.
    pub attempts: u32,
    /// When the next attempt is due (`scheduled`) or the current one times out (`running`).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The parameters the run was dispatched with.
    #[schema(value_type = Object)]
    pub params: Value,
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    pub error: Option<String>,
    /// Why the run was skipped or cancelled, when it was.
    pub reason: Option<String>,
    /// The scheduler node that last moved the run.
    pub owner: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

impl From<RunRecord> for RunView {
    fn from(r: RunRecord) -> Self {
        RunView {
            id: r.id,
            task: format!("{}/{}", r.namespace, r.name),
            namespace: r.namespace,
            name: r.name,
            task_version: r.task_version,
            scheduled_at: r.scheduled_at,
            trigger: r.trigger.into(),
            state: r.state.into(),
            attempts: r.attempts,
            next_attempt_at: r.next_attempt_at,
            params: r.params,
            output: r.output,
            error: r.error,
            reason: r.reason,
            owner: r.owner,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            updated_at: r.updated_at,
        }
    }
}

/// One page of runs, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunList {
    pub items: Vec<RunView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Outcome of an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptStateView {
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
}

impl From<AttemptState> for AttemptStateView {
    fn from(s: AttemptState) -> Self {
        match s {
            AttemptState::Running => AttemptStateView::Running,
            AttemptState::Succeeded => AttemptStateView::Succeeded,
            AttemptState::Failed => AttemptStateView::Failed,
            AttemptState::TimedOut => AttemptStateView::TimedOut,
            AttemptState::Cancelled => AttemptStateView::Cancelled,
        }
    }
}

/// One dispatch of a run to one executor node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AttemptView {
    /// 1-based attempt number.
    pub attempt: u32,
    /// Executor node id or address; empty when there is none (e.g. a container).
    pub node: String,
    pub state: AttemptStateView,
    pub started_at: DateTime<Utc>,
    pub deadline: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    pub error: Option<String>,
}

impl From<AttemptRecord> for AttemptView {
    fn from(a: AttemptRecord) -> Self {
        AttemptView {
            attempt: a.attempt,
            node: a.node,
            state: a.state.into(),
            started_at: a.started_at,
            deadline: a.deadline,
            finished_at: a.finished_at,
            output: a.output,
            error: a.error,
        }
    }
}

/// A run with its attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunDetail {
    pub run: RunView,
    /// Every attempt (one per node for broadcasts), by attempt number.
    pub attempts: Vec<AttemptView>,
}

/// One log line of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LogLineView {
    /// Increasing per run; pass the last one seen as `after` to read on.
    pub seq: i64,
    pub at: DateTime<Utc>,
    /// `stdout`, `stderr`, `executor`, `scheduler`, …
    pub stream: String,
    pub line: String,
}

impl From<LogLine> for LogLineView {
    fn from(l: LogLine) -> Self {
        LogLineView { seq: l.seq, at: l.at, stream: l.stream, line: l.line }
    }
}

/// A slice of a run's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LogPage {
    pub items: Vec<LogLineView>,
    /// The `seq` to pass as `after` for the lines that follow (the last line's, or the `after` given).
    pub next_after: i64,
}

/// Body of `POST /api/v1/tasks/{namespace}/{name}/trigger` (optional).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerRequest {
    /// Merged over the task's `spec.params` for this run.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub params: Map<String, Value>,
}

/// Body of `POST /api/v1/runs/{id}/cancel` (optional).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// Recorded as the run's `reason`.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Answer of `POST /api/v1/runs/{id}/logs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AppendLogsResponse {
    /// Sequence number of the last line appended.
    pub last_seq: i64,
}

/// Outcome an executor reports (mirror of `rota_proto::ResultStatus`, for the OpenAPI document).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = ResultStatus)]
#[serde(rename_all = "snake_case")]
pub enum ResultStatusDoc {
    Succeeded,
    Failed,
}

/// Body of `POST /api/v1/runs/{id}/report` (the wire type is `rota_proto::RunReport`; this mirrors it for the
/// OpenAPI document). Unknown fields are rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = RunReport)]
pub struct RunReportDoc {
    /// The attempt being reported (must be the run's current attempt).
    pub attempt: u32,
    pub status: ResultStatusDoc,
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    pub error: Option<String>,
    /// Log lines to append before the result is recorded.
    #[serde(default)]
    pub logs: Vec<String>,
    /// Id of the reporting executor node: required when the attempt went to several nodes; when given, it must
    /// be a node the attempt was dispatched to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// Body of `POST /api/v1/runs/{id}/logs` (the wire type is `rota_proto::LogAppend`; this mirrors it for the
/// OpenAPI document). Unknown fields are rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = LogAppend)]
pub struct LogAppendDoc {
    /// Defaults to `executor`.
    pub stream: Option<String>,
    pub lines: Vec<String>,
}

/// Answer of `/healthz` and `/readyz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HealthView {
    /// `ok` (liveness) or `ready` (readiness).
    pub status: String,
    /// The store backend (`sqlite`, `postgres`, `mysql`, …), on `/readyz`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
}

/// The registry state of a scheduler node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeStateView {
    Active,
    Draining,
}

impl From<NodeState> for NodeStateView {
    fn from(s: NodeState) -> Self {
        match s {
            NodeState::Active => NodeStateView::Active,
            NodeState::Draining => NodeStateView::Draining,
        }
    }
}

/// One scheduler node: its registry row (when it has one) and the shard leases it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClusterNodeView {
    /// The node id (also the owner name of its leases).
    pub id: String,
    /// Its public URL; empty when it has none or is not registered.
    pub address: String,
    /// Whether the node has a row in the node registry. `false` for a node that holds live leases without one
    /// (listed so that no lease holder is hidden).
    pub registered: bool,
    /// Registry state; absent when not registered.
    pub state: Option<NodeStateView>,
    /// Registered nodes: the registration has not expired (`expires_at > now`). Unregistered nodes are listed
    /// only while they hold live leases, which they renew, so they count as alive.
    pub alive: bool,
    pub registered_at: Option<DateTime<Utc>>,
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    /// When the registration expires unless heartbeated.
    pub expires_at: Option<DateTime<Utc>>,
    /// The shards the node holds a live lease on, ascending.
    pub shards: Vec<u32>,
    /// The number of `shards`.
    pub shards_held: u32,
    /// The earliest expiry among its live leases; absent when it holds none.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// How far behind the node is: over its shards, the largest `now - next_fire_at` of a task that is due and
    /// has not fired (0 when nothing is overdue).
    pub lag_ms: u64,
}

/// The scheduler cluster sharing this server's store: its nodes, the shards they hold, the shards nobody holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClusterView {
    /// The store backend (`sqlite`, `postgres`, `mysql`, …).
    pub backend: String,
    /// Whether several scheduler nodes may share the store (SQLite: no).
    pub supports_cluster: bool,
    /// The number of shards tasks hash into.
    pub shard_count: u32,
    /// The instant the view was taken at (liveness, lease and lag are relative to it).
    pub now: DateTime<Utc>,
    /// Registered scheduler nodes and every holder of a live lease, by id.
    pub nodes: Vec<ClusterNodeView>,
    /// Shards (`0..shard_count`) without a live lease, ascending.
    pub unowned_shards: Vec<u32>,
}
