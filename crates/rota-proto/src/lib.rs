//! Rota's executor wire formats.
//!
//! These are the messages exchanged between a scheduler node and an executor node speaking the `rota` HTTP
//! protocol (and the same messages over gRPC, see [`grpc`]):
//!
//! * the scheduler `POST`s a [`RunEnvelope`] (JSON) to the node;
//! * the node answers `200` with a [`RunResult`] (synchronous), or `202 Accepted` and later sends a
//!   [`RunReport`] to `POST /api/v1/runs/{run_id}/report` on the scheduler (asynchronous); it may append log
//!   lines with [`LogAppend`] to `POST /api/v1/runs/{run_id}/logs`.
//!
//! Field names are snake_case on the wire; instants are RFC 3339 strings in UTC.
//!
//! The same envelope and result travel over gRPC as the messages of `rota.executor.v1` (see [`grpc`], which
//! holds the generated messages and service stubs and the conversions to and from these types).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use serde_json::{Map, Value};

pub mod grpc;
pub mod signing;

/// Content type of every JSON message.
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// Header carrying the run id on every dispatch, so proxies and logs can correlate without parsing the body.
pub const HEADER_RUN_ID: &str = "x-rota-run-id";
/// Header carrying the attempt number on every dispatch.
pub const HEADER_ATTEMPT: &str = "x-rota-attempt";

/// The shard of a sharded broadcast (`index` in `0..total`); unicast runs get `{index: 0, total: 1}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    pub index: u32,
    pub total: u32,
}

impl Default for ShardInfo {
    fn default() -> Self {
        ShardInfo { index: 0, total: 1 }
    }
}

/// What the scheduler sends to an executor node for one attempt of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEnvelope {
    /// The run's id (as a string, so ids of any size survive JavaScript clients).
    pub run_id: String,
    /// `namespace/name` of the task.
    pub task: String,
    /// 1-based attempt number.
    pub attempt: u32,
    /// The instant the run was scheduled for (not when it was dispatched).
    pub scheduled_at: DateTime<Utc>,
    /// The task's params merged with any overrides of a manual trigger.
    pub params: Map<String, Value>,
    pub shard: ShardInfo,
    /// After this instant the scheduler considers the attempt timed out.
    pub deadline: DateTime<Utc>,
    /// Where to send an asynchronous report and logs (absolute URL of the scheduler's run resource), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_url: Option<String>,
}

/// The outcome an executor reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultStatus {
    Succeeded,
    Failed,
}

/// A synchronous answer (body of a `200`) or the payload of an asynchronous report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunResult {
    pub status: ResultStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl RunResult {
    pub fn succeeded(output: Option<Value>) -> Self {
        RunResult { status: ResultStatus::Succeeded, output, error: None }
    }

    pub fn failed(error: impl Into<String>) -> Self {
        RunResult { status: ResultStatus::Failed, output: None, error: Some(error.into()) }
    }
}

/// Body of `POST /api/v1/runs/{run_id}/report`: the result of an attempt that was answered with `202`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunReport {
    /// The attempt being reported (must be the run's current attempt).
    pub attempt: u32,
    pub status: ResultStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Log lines to append before the result is recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<String>,
    /// Id of the reporting executor node. Required when the attempt went to several nodes (broadcast, multicast,
    /// sharded); when given, it must be a node the attempt was dispatched to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// Body of `POST /api/v1/runs/{run_id}/logs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogAppend {
    /// Defaults to `executor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    pub lines: Vec<String>,
}

/// What an executor node speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutorProtocol {
    /// The `rota` HTTP protocol (JSON envelope, `200` result or `202` + report).
    #[default]
    Http,
    /// The Rota executor gRPC service (`rota.executor.v1.Executor`).
    Grpc,
}

impl ExecutorProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutorProtocol::Http => "http",
            ExecutorProtocol::Grpc => "grpc",
        }
    }
}

/// Body of `POST /api/v1/executors`: an executor node registering, or re-registering after a restart or a lost
/// registration (a heartbeat answered `404`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutorRegistration {
    /// Node id, unique in the cluster: `[A-Za-z0-9._:-]`, 1..=128 characters.
    pub id: String,
    /// Service (execution cluster) the node belongs to; tasks name it in `candidates.service`.
    pub service: String,
    /// Where the scheduler reaches the node: `http://host:port` / `https://host:port` for HTTP,
    /// `host:port` or `http(s)://host:port` for gRPC.
    pub address: String,
    #[serde(default)]
    pub protocol: ExecutorProtocol,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Relative weight for `weighted` load balancing (1..=10000, default 1).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Concurrent runs the node accepts; `0` (default) = unbounded.
    #[serde(default)]
    pub capacity: u32,
}

fn default_weight() -> u32 {
    1
}

/// Answer to a registration or a heartbeat: how the scheduler sees the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutorLease {
    pub id: String,
    /// `active` or `draining`.
    pub state: String,
    /// Send the next heartbeat within this many milliseconds.
    pub heartbeat_interval_ms: u64,
    /// Without a heartbeat the node leaves the candidate set at this instant.
    pub expires_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_wire_format_is_stable() {
        let env = RunEnvelope {
            run_id: "42".into(),
            task: "billing/nightly".into(),
            attempt: 2,
            scheduled_at: DateTime::parse_from_rfc3339("2026-11-25T02:30:00Z").unwrap().with_timezone(&Utc),
            params: serde_json::from_str(r#"{"report":"daily"}"#).unwrap(),
            shard: ShardInfo::default(),
            deadline: DateTime::parse_from_rfc3339("2026-11-25T02:40:00Z").unwrap().with_timezone(&Utc),
            report_url: None,
        };
        let json = serde_json::to_value(&env).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "run_id": "42", "task": "billing/nightly", "attempt": 2,
                "scheduled_at": "2026-11-25T02:30:00Z", "params": {"report": "daily"},
                "shard": {"index": 0, "total": 1}, "deadline": "2026-11-25T02:40:00Z"
            })
        );
        let back: RunEnvelope = serde_json::from_value(json).unwrap();
        assert_eq!(back, env);
    }

    #[test]
    fn result_rejects_garbage() {
        assert!(serde_json::from_str::<RunResult>(r#"{"status":"done"}"#).is_err());
        assert!(serde_json::from_str::<RunResult>(r#"{"status":"succeeded","extra":1}"#).is_err());
        assert!(serde_json::from_str::<RunResult>("[]").is_err());
        let ok: RunResult = serde_json::from_str(r#"{"status":"failed","error":"boom"}"#).unwrap();
        assert_eq!(ok, RunResult::failed("boom"));
    }
}
