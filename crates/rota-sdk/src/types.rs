//! The JSON shapes of the management API, as the client sees them.
//!
//! These types are the public client contract: they mirror what `/api/v1` answers (see `/openapi.json`), are
//! deserialized leniently (unknown fields are ignored, optional fields may be absent, unknown enum values become
//! `Unknown`) so that an older client keeps working against a newer server, and serialize back to the same JSON.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A stored task (`GET /api/v1/tasks/{namespace}/{name}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    pub namespace: String,
    pub name: String,
    /// Starts at 1 and grows with every replacement.
    pub version: i64,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The task document as stored (`apiVersion`, `kind`, `metadata`, `spec`).
    #[serde(default)]
    pub spec: Value,
    #[serde(default)]
    pub paused: bool,
    /// Next instant the task fires by time; absent for paused, manual, dependency-triggered or finished tasks.
    #[serde(default)]
    pub next_fire_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl TaskView {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// A one-line summary of `spec.schedule`: `cron 0 30 2 * * * (Asia/Shanghai)`, `every 5s`, `once …`,
    /// `manual`, or `after a/b, c/d` for a dependency-only task; empty when the document has none of these.
    pub fn schedule_summary(&self) -> String {
        let spec = &self.spec["spec"];
        let schedule = &spec["schedule"];
        let text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let mut out = if let Some(cron) = schedule.get("cron").filter(|v| !v.is_null()) {
            format!("cron {}", text(cron))
        } else if let Some(every) = schedule.get("every").filter(|v| !v.is_null()) {
            format!("every {}", text(every))
        } else if let Some(once) = schedule.get("once").filter(|v| !v.is_null()) {
            format!("once {}", text(once))
        } else if schedule.get("manual").and_then(Value::as_bool) == Some(true) {
            "manual".to_string()
        } else {
            String::new()
        };
        if let Some(tz) = schedule.get("timezone").and_then(Value::as_str)
            && !out.is_empty()
            && tz != "UTC"
        {
            out.push_str(&format!(" ({tz})"));
        }
        if let Some(after) = spec.get("after").and_then(Value::as_array).filter(|a| !a.is_empty()) {
            let deps: Vec<String> = after.iter().filter_map(|d| d["task"].as_str().map(str::to_string)).collect();
            if !out.is_empty() {
                out.push_str("; ");
            }
            out.push_str(&format!("after {}", deps.join(", ")));
        }
        out
    }
}

/// One page of tasks (`GET /api/v1/tasks`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskList {
    pub items: Vec<TaskView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// One historical version of a task's document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskVersionView {
    pub version: i64,
    #[serde(default)]
    pub spec: Value,
    pub created_at: DateTime<Utc>,
}

/// The version history of a task, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskVersionList {
    pub items: Vec<TaskVersionView>,
}

/// The outcome of [`Client::apply`](crate::Client::apply).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    /// `true` when the task did not exist before (HTTP 201), `false` when it was replaced (HTTP 200).
    pub created: bool,
    pub task: TaskView,
}

impl Applied {
    /// `created` or `configured`, as the CLI prints it.
    pub fn action(&self) -> &'static str {
        if self.created { "created" } else { "configured" }
    }
}

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
            /// A value this client does not know (sent by a newer server).
            #[serde(other)]
            Unknown,
        }

        impl $name {
            /// Every known value.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire,)+
                    $name::Unknown => "unknown",
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, String> {
                let s = s.trim();
                $name::ALL.iter().copied().find(|v| v.as_str() == s).ok_or_else(|| {
                    let all: Vec<&str> = $name::ALL.iter().map(|v| v.as_str()).collect();
                    format!("unknown value {s:?}; expected one of {}", all.join(", "))
                })
            }
        }
    };
}

wire_enum!(
    /// The states of a run. Terminal: `succeeded`, `failed`, `timed_out`, `skipped`, `cancelled`.
    RunState {
        Scheduled => "scheduled",
        Dispatching => "dispatching",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        TimedOut => "timed_out",
        Skipped => "skipped",
        Cancelled => "cancelled",
    }
);

impl RunState {
    /// Whether the run has finished (its state never changes again).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunState::Succeeded | RunState::Failed | RunState::TimedOut | RunState::Skipped | RunState::Cancelled
        )
    }
}

wire_enum!(
    /// Why a run exists.
    RunTrigger {
        Schedule => "schedule",
        Manual => "manual",
        Dependency => "dependency",
        CatchUp => "catch_up",
    }
);

wire_enum!(
    /// Outcome of one attempt.
    AttemptState {
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        TimedOut => "timed_out",
        Cancelled => "cancelled",
    }
);

/// One run of a task (`GET /api/v1/runs`, `POST …/trigger`, `POST /api/v1/runs/{id}/cancel`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunView {
    pub id: i64,
    /// `namespace/name` of the task.
    pub task: String,
    pub namespace: String,
    pub name: String,
    /// The task version the run was created from.
    #[serde(default)]
    pub task_version: i64,
    pub scheduled_at: DateTime<Utc>,
    pub trigger: RunTrigger,
    pub state: RunState,
    /// Attempts started so far.
    #[serde(default)]
    pub attempts: u32,
    /// When the next attempt is due (`scheduled`) or the current one times out (`running`).
    #[serde(default)]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The parameters the run was dispatched with.
    #[serde(default)]
    pub params: Value,
    #[serde(default)]
    pub output: Option<Value>,
    #[serde(default)]
    pub error: Option<String>,
    /// Why the run was skipped or cancelled, when it was.
    #[serde(default)]
    pub reason: Option<String>,
    /// The scheduler node that last moved the run.
    #[serde(default)]
    pub owner: Option<String>,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// One page of runs, newest first (`GET /api/v1/runs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunList {
    pub items: Vec<RunView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// One dispatch of a run to one executor node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptView {
    /// 1-based attempt number.
    pub attempt: u32,
    /// Executor node id or address; empty when there is none (e.g. a container).
    #[serde(default)]
    pub node: String,
    pub state: AttemptState,
    pub started_at: DateTime<Utc>,
    #[serde(default)]
    pub deadline: Option<DateTime<Utc>>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub output: Option<Value>,
    #[serde(default)]
    pub error: Option<String>,
}

/// A run with its attempts (`GET /api/v1/runs/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunDetail {
    pub run: RunView,
    /// Every attempt, by attempt number.
    #[serde(default)]
    pub attempts: Vec<AttemptView>,
}

/// One log line of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    /// Increasing per run; pass the last one seen as `after` to read on.
    pub seq: i64,
    pub at: DateTime<Utc>,
    /// `stdout`, `stderr`, `executor`, `scheduler`, …
    #[serde(default)]
    pub stream: String,
    pub line: String,
}

/// A slice of a run's log (`GET /api/v1/runs/{id}/logs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogPage {
    pub items: Vec<LogLine>,
    /// The `seq` to pass as `after` for the lines that follow.
    pub next_after: i64,
}

wire_enum!(
    /// The registry state of a scheduler node.
    NodeState {
        Active => "active",
        Draining => "draining",
    }
);

/// One scheduler node of [`ClusterView`]: its registry row (when it has one) and the shard leases it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterNodeView {
    /// The node id (also the owner name of its leases).
    pub id: String,
    /// Its public URL; empty when it has none or is not registered.
    #[serde(default)]
    pub address: String,
    /// Whether the node has a row in the node registry (`false`: it holds live leases without one).
    #[serde(default)]
    pub registered: bool,
    /// Registry state; absent when not registered.
    #[serde(default)]
    pub state: Option<NodeState>,
    /// Registered nodes: the registration has not expired. Unregistered lease holders count as alive.
    #[serde(default)]
    pub alive: bool,
    #[serde(default)]
    pub registered_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    /// When the registration expires unless heartbeated.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// The shards the node holds a live lease on, ascending.
    #[serde(default)]
    pub shards: Vec<u32>,
    #[serde(default)]
    pub shards_held: u32,
    /// The earliest expiry among its live leases; absent when it holds none.
    #[serde(default)]
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// The largest delay, over its shards, of a task that is due and has not fired (0: none overdue).
    #[serde(default)]
    pub lag_ms: u64,
}

/// The scheduler cluster sharing the server's store (`GET /api/v1/cluster`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    /// The store backend (`sqlite`, `postgres`, `mysql`, …).
    #[serde(default)]
    pub backend: String,
    /// Whether several scheduler nodes may share the store.
    #[serde(default)]
    pub supports_cluster: bool,
    /// The number of shards tasks hash into.
    pub shard_count: u32,
    /// The instant the view was taken at (liveness, leases and lag are relative to it).
    pub now: DateTime<Utc>,
    /// Registered scheduler nodes and every holder of a live lease, by id.
    #[serde(default)]
    pub nodes: Vec<ClusterNodeView>,
    /// Shards without a live lease, ascending.
    #[serde(default)]
    pub unowned_shards: Vec<u32>,
}

/// Answer of `/healthz` (`status: ok`) and `/readyz` (`status: ready`, with the store backend).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthView {
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
}

/// One problem with one named input, in an API error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// A document field path (`spec.retry.maxAttempts`), a query parameter (`limit`), a header or a path segment.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ErrorDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// The body of every API error: `{"error": {"code", "message", "details": [{"path", "message"}]}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorInfo,
}

/// The object inside [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// A stable snake_case code (`invalid_spec`, `not_found`, `conflict`, …); branch on it, never on messages.
    pub code: String,
    pub message: String,
    #[serde(default)]
    pub details: Vec<ErrorDetail>,
}

/// Filter of [`Client::list_tasks`](crate::Client::list_tasks). `Default` lists every task.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    /// Only tasks of this namespace.
    pub namespace: Option<String>,
    /// Only tasks carrying every one of these labels (`key`, `value`).
    pub labels: Vec<(String, String)>,
    /// Only paused (`Some(true)`) or unpaused (`Some(false)`) tasks.
    pub paused: Option<bool>,
}

impl TaskFilter {
    /// Tasks of one namespace.
    pub fn namespace(namespace: impl Into<String>) -> Self {
        TaskFilter { namespace: Some(namespace.into()), ..TaskFilter::default() }
    }

    /// Adds a label the tasks must carry (builder style).
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.push((key.into(), value.into()));
        self
    }
}

/// Filter of [`Client::list_runs`](crate::Client::list_runs). `Default` lists every run, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    /// Only runs of this task: `(namespace, name)`.
    pub task: Option<(String, String)>,
    /// Only runs of tasks in this namespace.
    pub namespace: Option<String>,
    /// Only runs in one of these states.
    pub states: Vec<RunState>,
    /// Only runs scheduled at or after this instant.
    pub from: Option<DateTime<Utc>>,
    /// Only runs scheduled before this instant.
    pub to: Option<DateTime<Utc>>,
}

impl RunFilter {
    /// Runs of one task.
    pub fn task(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        RunFilter { task: Some((namespace.into(), name.into())), ..RunFilter::default() }
    }

    /// Adds a state the runs may be in (builder style).
    pub fn state(mut self, state: RunState) -> Self {
        self.states.push(state);
        self
    }
}

/// Parameters of a manual trigger, merged over the task's `spec.params` for that run.
pub type Params = Map<String, Value>;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task(spec: Value) -> TaskView {
        serde_json::from_value(json!({
            "namespace": "a", "name": "b", "version": 1, "spec": spec,
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
            "some_future_field": true
        }))
        .unwrap()
    }

    #[test]
    fn schedule_summaries() {
        assert_eq!(task(json!({"spec": {"schedule": {"every": "5s"}}})).schedule_summary(), "every 5s");
        assert_eq!(
            task(json!({"spec": {"schedule": {"cron": "0 * * * * *", "timezone": "Asia/Shanghai"}}}))
                .schedule_summary(),
            "cron 0 * * * * * (Asia/Shanghai)"
        );
        assert_eq!(task(json!({"spec": {"schedule": {"manual": true}}})).schedule_summary(), "manual");
        assert_eq!(task(json!({"spec": {"after": [{"task": "x/y"}]}})).schedule_summary(), "after x/y");
        assert_eq!(task(json!(null)).schedule_summary(), "");
    }

    #[test]
    fn unknown_enum_values_are_tolerated() {
        let s: RunState = serde_json::from_value(json!("paused_by_quota")).unwrap();
        assert_eq!(s, RunState::Unknown);
        let s: RunState = serde_json::from_value(json!("timed_out")).unwrap();
        assert_eq!((s, s.is_terminal()), (RunState::TimedOut, true));
        assert_eq!("catch_up".parse::<RunTrigger>().unwrap(), RunTrigger::CatchUp);
        assert!("bogus".parse::<RunState>().unwrap_err().contains("expected one of scheduled"));
    }
}

/// A registered executor node (`GET /api/v1/executors`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutorNodeView {
    pub id: String,
    pub service: String,
    pub address: String,
    /// `http` or `grpc`.
    pub protocol: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub weight: u32,
    /// 0 = unbounded.
    pub capacity: u32,
    /// `active` or `draining`.
    pub state: String,
    /// The registration has not expired.
    pub alive: bool,
    pub registered_at: DateTime<Utc>,
    pub last_heartbeat_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Answer of `GET /api/v1/executors`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutorList {
    pub items: Vec<ExecutorNodeView>,
}

/// An API token (`GET /api/v1/tokens`); never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenView {
    /// The public id (the part after `rota_`), used to revoke it.
    pub id: String,
    pub name: String,
    /// `user` or `executor`.
    pub kind: String,
    /// `namespace:role` grants of a user token.
    #[serde(default)]
    pub grants: Vec<String>,
    /// The service of an executor credential.
    #[serde(default)]
    pub executor_service: Option<String>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Answer of `POST /api/v1/tokens`: the only time the token text is shown.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedToken {
    /// `rota_<id>_<secret>`.
    pub token: String,
    pub info: TokenView,
}

impl fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedToken").field("token", &"(not shown)").field("info", &self.info).finish()
    }
}

/// What a new token may do: user grants (`namespace:role`) or an executor credential of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewToken {
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor_service: Option<String>,
    /// Lifetime such as `720h`; none: no expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<String>,
}

/// Answer of `GET /api/v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenList {
    pub items: Vec<TokenView>,
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// A role bound to an OIDC subject or group (`/api/v1/role-bindings`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleBindingView {
    /// `subject` or `group`.
    pub kind: String,
    pub subject: String,
    pub namespace: String,
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
}

/// Answer of `GET /api/v1/role-bindings`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleBindingList {
    pub items: Vec<RoleBindingView>,
}

/// One audit log entry (`GET /api/v1/audit`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// `token:<id>`, `oidc:<subject>`, `anonymous`, `system`.
    pub actor: String,
    /// The operation id (`put_task`, `cancel_run`, …).
    pub action: String,
    /// The request path.
    pub resource: String,
    #[serde(default)]
    pub source: Option<String>,
    /// `outcome` (`ok`/`denied`), `status`, `method`, `reason`.
    #[serde(default)]
    pub detail: Value,
}

/// Answer of `GET /api/v1/audit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditList {
    pub items: Vec<AuditEntry>,
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// Filters of [`Client::audit`](crate::Client::audit).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    /// Path prefix.
    pub resource: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}
