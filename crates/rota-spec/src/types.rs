//! The task document types (`apiVersion: rota/v1`, `kind: Task`).

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::Duration;

/// The only accepted `apiVersion`.
pub const API_VERSION: &str = "rota/v1";
/// The only accepted `kind`.
pub const KIND: &str = "Task";
/// Namespace used when `metadata.namespace` is omitted.
pub const DEFAULT_NAMESPACE: &str = "default";

fn is_false(b: &bool) -> bool {
    !*b
}
fn is_true(b: &bool) -> bool {
    *b
}
fn default_true() -> bool {
    true
}
fn default_namespace() -> String {
    DEFAULT_NAMESPACE.to_string()
}
fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// A Rota task: what to run, when, where, and how to retry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "Rota Task (rota/v1)")]
pub struct Task {
    /// Must be `rota/v1`.
    pub api_version: String,
    /// Must be `Task`.
    pub kind: String,
    /// Identity and labels.
    pub metadata: Metadata,
    /// What, when, where and how.
    pub spec: TaskSpec,
}

impl Task {
    /// The task's unique key, `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.metadata.namespace, self.metadata.name)
    }
}

/// Identity of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// DNS label (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters). Defaults to `default`.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// DNS label (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters), unique in the namespace.
    pub name: String,
    /// Free-form labels. Keys: `[A-Za-z0-9._-]`, at most 63 characters, optionally with a
    /// `prefix/` (prefix at most 253 characters). Values: at most 63 characters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Human-readable description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The body of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskSpec {
    /// When the task fires. May be omitted only when `after` is non-empty
    /// (the task is then triggered by its dependencies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    /// What to call: exactly one of `http`, `grpc`, `container`.
    pub target: Target,
    /// Where to call it: exactly one of `service`, `static`. Required for `http`
    /// (unless `http.url` is set) and `grpc` targets; not allowed for `container`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidates: Option<Candidates>,
    /// How to pick among the candidates.
    #[serde(default, skip_serializing_if = "is_default")]
    pub dispatch: Dispatch,
    /// Retry policy.
    #[serde(default, skip_serializing_if = "is_default")]
    pub retry: Retry,
    /// Deadline of one attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Upstream tasks (`namespace/name`) this task runs after.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<Dependency>,
    /// Name of the quota this task's runs count against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<String>,
    /// Plugins hooked into dispatch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<Plugin>,
    /// Arbitrary parameters passed to the executor.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub params: serde_json::Map<String, serde_json::Value>,
}

/// When a task fires: exactly one of `cron`, `every`, `once`, `manual: true`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Schedule {
    /// Cron expression with seconds (`sec min hour dom month dow`, optionally a 7th
    /// year field); a 5-field expression means seconds = 0. Evaluated in `timezone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// Fixed period; fires at `startAt + k * every` (anchor defaults to the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<Duration>,
    /// Fires once at this instant (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub once: Option<DateTime<Utc>>,
    /// `true`: never fires by time, only when triggered by hand or by the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manual: Option<bool>,
    /// IANA time zone for `cron` (default `UTC`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// What to do with fire times missed while no scheduler was running the task.
    #[serde(default, skip_serializing_if = "is_default")]
    pub misfire: MisfirePolicy,
    /// Upper bound on missed runs started by `misfire: run_all` (default 100).
    #[serde(default = "Schedule::default_catch_up_limit", skip_serializing_if = "Schedule::is_default_catch_up_limit")]
    pub catch_up_limit: u32,
    /// What to do when a fire time comes while the previous run is still going.
    #[serde(default, skip_serializing_if = "is_default")]
    pub concurrency: ConcurrencyPolicy,
    /// Anchor for `every` (default: the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<DateTime<Utc>>,
}

impl Schedule {
    /// Default of `catchUpLimit`.
    pub const DEFAULT_CATCH_UP_LIMIT: u32 = 100;
    /// Largest accepted `catchUpLimit`.
    pub const MAX_CATCH_UP_LIMIT: u32 = 10_000;

    fn default_catch_up_limit() -> u32 {
        Self::DEFAULT_CATCH_UP_LIMIT
    }
    fn is_default_catch_up_limit(v: &u32) -> bool {
        *v == Self::DEFAULT_CATCH_UP_LIMIT
    }

    fn empty() -> Self {
        Schedule {
            cron: None,
            every: None,
            once: None,
            manual: None,
            timezone: None,
            misfire: MisfirePolicy::default(),
            catch_up_limit: Self::DEFAULT_CATCH_UP_LIMIT,
            concurrency: ConcurrencyPolicy::default(),
            start_at: None,
        }
    }
    /// A cron schedule with all other settings at their defaults.
    pub fn cron(expr: impl Into<String>) -> Self {
        Schedule { cron: Some(expr.into()), ..Self::empty() }
    }
    /// An `every` schedule with all other settings at their defaults.
    pub fn every(period: Duration) -> Self {
        Schedule { every: Some(period), ..Self::empty() }
    }
    /// A `once` schedule with all other settings at their defaults.
    pub fn once(at: DateTime<Utc>) -> Self {
        Schedule { once: Some(at), ..Self::empty() }
    }
    /// A `manual: true` schedule with all other settings at their defaults.
    pub fn manual() -> Self {
        Schedule { manual: Some(true), ..Self::empty() }
    }
    /// Sets the time zone (builder style).
    pub fn with_timezone(mut self, tz: impl Into<String>) -> Self {
        self.timezone = Some(tz.into());
        self
    }
    /// Sets the anchor for `every` (builder style).
    pub fn with_start_at(mut self, at: DateTime<Utc>) -> Self {
        self.start_at = Some(at);
        self
    }
}

/// What to do with fire times missed while the task was not being scheduled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MisfirePolicy {
    /// Drop missed fire times; continue with the next future one.
    Skip,
    /// Run once for all missed fire times, then continue.
    #[default]
    RunOnce,
    /// Run every missed fire time, at most `catchUpLimit` of them (the most recent ones).
    RunAll,
}

/// What to do when a fire time arrives while a previous run is still active.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConcurrencyPolicy {
    /// Start the new run anyway.
    #[default]
    Allow,
    /// Skip the new run.
    Forbid,
    /// Cancel the running one and start the new run.
    Replace,
}

/// What a task calls: exactly one of `http`, `grpc`, `container`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Target {
    /// Call an HTTP endpoint on a candidate node (or a fixed `url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpTarget>,
    /// Call the executor gRPC service on a candidate node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcTarget>,
    /// Run a container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerTarget>,
}

/// Which kind of [`Target`] is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// `target.http`.
    Http,
    /// `target.grpc`.
    Grpc,
    /// `target.container`.
    Container,
}

impl TargetKind {
    /// The field name (`http`, `grpc`, `container`).
    pub fn as_str(&self) -> &'static str {
        match self {
            TargetKind::Http => "http",
            TargetKind::Grpc => "grpc",
            TargetKind::Container => "container",
        }
    }
}

impl fmt::Display for TargetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Target {
    /// The kinds that are set, in field order.
    pub fn kinds_set(&self) -> Vec<TargetKind> {
        let mut v = Vec::new();
        if self.http.is_some() {
            v.push(TargetKind::Http);
        }
        if self.grpc.is_some() {
            v.push(TargetKind::Grpc);
        }
        if self.container.is_some() {
            v.push(TargetKind::Container);
        }
        v
    }

    /// The kind of this target: `Some` when exactly one of `http`, `grpc`,
    /// `container` is set (always the case for a validated task), else `None`.
    pub fn kind(&self) -> Option<TargetKind> {
        match self.kinds_set().as_slice() {
            [k] => Some(*k),
            _ => None,
        }
    }
}

/// An HTTP call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpTarget {
    /// Path appended to the chosen candidate's base URL (must start with `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Full http(s) URL to call when there are no candidates (typically with `protocol: raw`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// HTTP method (default POST).
    #[serde(default, skip_serializing_if = "is_default")]
    pub method: HttpMethod,
    /// `rota`: the Rota executor protocol (run envelope, sync or async result).
    /// `raw`: any HTTP endpoint, success is a 2xx within the timeout.
    #[serde(default, skip_serializing_if = "is_default")]
    pub protocol: HttpProtocol,
    /// Extra request headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Request body template (only with `protocol: raw`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Credentials sent with every call, taken from secrets *by name* at dispatch time (the spec holds only the
    /// reference; put credentials here, never in `headers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<HttpAuth>,
}

/// Credentials of an HTTP target: exactly one of `bearer`, `basic`, `header`. Each names secrets, which the
/// scheduler resolves when it dispatches (environment variable `ROTA_SECRET_<NAME>`, a file in `--secrets-dir`,
/// or a user's resolver). Secret names are 1 to 128 letters, digits, `_`, `-` and `.`, starting with a letter
/// or digit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpAuth {
    /// `Authorization: Bearer <secret>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer: Option<BearerAuth>,
    /// `Authorization: Basic base64(<username>:<password secret>)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic: Option<BasicAuth>,
    /// A header of the target's choosing (e.g. `X-Api-Key`) whose value is a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<HeaderAuth>,
}

impl HttpAuth {
    /// The secret names this auth refers to.
    pub fn secret_refs(&self) -> Vec<&str> {
        let mut refs = Vec::new();
        refs.extend(self.bearer.as_ref().map(|b| b.secret_ref.as_str()));
        refs.extend(self.basic.as_ref().map(|b| b.password_ref.as_str()));
        refs.extend(self.header.as_ref().map(|h| h.value_ref.as_str()));
        refs
    }
}

/// A bearer token from a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BearerAuth {
    /// Name of the secret holding the token.
    pub secret_ref: String,
}

/// HTTP basic authentication; the password comes from a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BasicAuth {
    /// The user name (not a secret; no `:`).
    pub username: String,
    /// Name of the secret holding the password.
    pub password_ref: String,
}

/// A custom header whose value comes from a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderAuth {
    /// The header name (e.g. `X-Api-Key`).
    pub name: String,
    /// Name of the secret holding the value.
    pub value_ref: String,
}

/// HTTP request method (upper case; lower case is accepted on input).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// GET
    #[serde(alias = "get")]
    Get,
    /// POST (default)
    #[default]
    #[serde(alias = "post")]
    Post,
    /// PUT
    #[serde(alias = "put")]
    Put,
    /// PATCH
    #[serde(alias = "patch")]
    Patch,
    /// DELETE
    #[serde(alias = "delete")]
    Delete,
    /// HEAD
    #[serde(alias = "head")]
    Head,
}

impl HttpMethod {
    /// The method as sent on the wire (`POST`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Patch => "PATCH",
            HttpMethod::Delete => "DELETE",
            HttpMethod::Head => "HEAD",
        }
    }
}

/// Protocol spoken with an HTTP target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HttpProtocol {
    /// The Rota executor protocol (default).
    #[default]
    Rota,
    /// Plain HTTP: success is a 2xx within the timeout.
    Raw,
}

/// A gRPC call to the Rota executor service on a candidate node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcTarget {
    /// Fully qualified gRPC service name (default: the Rota executor service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Method name (default: the Rota executor's run method).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// A container started by the scheduler for each run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerTarget {
    /// Image reference, e.g. `docker.io/library/alpine:3.20`.
    pub image: String,
    /// Entrypoint override.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Working directory inside the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Resource limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// When to pull the image (default `if_not_present`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub pull_policy: PullPolicy,
    /// Network to attach to (runtime default when omitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Labels put on the container.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Container resource limits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    /// CPU limit: cores as a number (`0.5`, `2`) or a string (`"500m"`, `"1.5"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<crate::quantity::CpuQuantity>,
    /// Memory limit: bytes with an optional suffix (`"256Mi"`, `"1Gi"`, `"512M"`, `"1048576"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

impl Resources {
    /// The memory limit in bytes, if set and valid.
    pub fn memory_bytes(&self) -> Option<u64> {
        self.memory.as_deref().and_then(|m| crate::quantity::parse_memory(m).ok())
    }
}

/// When to pull a container image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PullPolicy {
    /// Pull before every run.
    Always,
    /// Pull only when the image is missing (default).
    #[default]
    IfNotPresent,
    /// Never pull; the image must exist.
    Never,
}

/// Where a task may run: exactly one of `service` or `static`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Candidates {
    /// Name of a registered executor service; its live nodes are the candidates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Fixed list of nodes: http(s) URLs or `host:port`.
    #[serde(rename = "static", default, skip_serializing_if = "Option::is_none")]
    pub r#static: Option<Vec<String>>,
}

/// How runs are spread across candidate nodes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Dispatch {
    /// `unicast` (one node, default), `multicast` (a subset), `broadcast` (all),
    /// `sharded` (all, each with a shard index/total).
    #[serde(skip_serializing_if = "is_default")]
    pub mode: DispatchMode,
    /// How the node(s) are chosen (default `round_robin`).
    #[serde(skip_serializing_if = "is_default")]
    pub load_balance: LoadBalance,
    /// Only candidates whose labels contain all of these.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    /// Number of nodes for `multicast` (and the shard count for `sharded`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Name of the param whose value is hashed by `consistent_hash`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash_key: Option<String>,
    /// When a run sent to several nodes (`multicast`, `broadcast`, `sharded`) succeeds: `all` (default) — every
    /// node it went to succeeded; `any` — at least one did.
    #[serde(skip_serializing_if = "is_default")]
    pub success: SuccessPolicy,
}

/// When a run dispatched to several nodes succeeds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SuccessPolicy {
    /// Every node the attempt went to succeeded (default).
    #[default]
    All,
    /// At least one node succeeded.
    Any,
}

/// Dispatch fan-out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DispatchMode {
    /// One node per run (default).
    #[default]
    Unicast,
    /// A subset of nodes (by `selector` and/or `count`).
    Multicast,
    /// Every candidate node.
    Broadcast,
    /// Every candidate node, each receiving its shard index and the shard total.
    Sharded,
}

/// Node selection strategy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalance {
    /// Rotate through the nodes (default).
    #[default]
    RoundRobin,
    /// Uniformly random node.
    Random,
    /// Random, weighted by node weight.
    Weighted,
    /// Node with the fewest active runs.
    LeastActive,
    /// Hash of the `hashKey` param picks the node.
    ConsistentHash,
    /// First node in order.
    First,
    /// Last node in order.
    Last,
    /// First healthy node in order.
    Failover,
    /// Skip busy nodes.
    BusyOver,
    /// Delegate to a `select_nodes` plugin.
    Plugin,
}

/// Retry policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Retry {
    /// Total attempts including the first (1..=100, default 1 = no retry).
    pub max_attempts: u32,
    /// Delay between attempts.
    #[serde(skip_serializing_if = "is_default")]
    pub backoff: Backoff,
    /// Prefer a different node for each retry.
    #[serde(skip_serializing_if = "is_false")]
    pub switch_node: bool,
}

impl Retry {
    /// Largest accepted `maxAttempts`.
    pub const MAX_ATTEMPTS: u32 = 100;
}

impl Default for Retry {
    fn default() -> Self {
        Retry { max_attempts: 1, backoff: Backoff::default(), switch_node: false }
    }
}

/// Delay between attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Backoff {
    /// `fixed` or `exponential` (default).
    pub kind: BackoffKind,
    /// Delay before the second attempt (default 1s).
    pub initial: Duration,
    /// Upper bound on any delay (default 1m).
    pub max: Duration,
    /// Growth factor for `exponential` (>= 1, default 2).
    pub multiplier: f64,
    /// Randomise each delay within [delay/2, delay].
    #[serde(skip_serializing_if = "is_false")]
    pub jitter: bool,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            kind: BackoffKind::default(),
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            multiplier: 2.0,
            jitter: false,
        }
    }
}

/// Backoff growth.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BackoffKind {
    /// Always `initial`.
    Fixed,
    /// `initial * multiplier^(n-1)` before the (n+1)-th attempt, capped at `max` (default).
    #[default]
    Exponential,
}

/// An upstream task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Dependency {
    /// Upstream task key, `namespace/name`.
    pub task: String,
    /// `true` (default): this task runs only if the upstream run succeeded.
    /// `false`: it runs once the upstream run finished, whatever the outcome.
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub required: bool,
}

/// A plugin hooked into dispatch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Plugin {
    /// Registered plugin name.
    pub name: String,
    /// Where the plugin is called.
    pub hook: PluginHook,
    /// Endpoint of an out-of-process plugin (http(s) URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// Plugin hook points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PluginHook {
    /// Chooses the node(s) (with `loadBalance: plugin`).
    SelectNodes,
    /// Called before each dispatch; may amend the request.
    BeforeDispatch,
    /// Called after each run with its outcome.
    AfterRun,
}
