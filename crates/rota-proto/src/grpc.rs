//! The gRPC form of the executor protocol: the messages and service stubs generated from
//! `proto/rota/executor/v1/executor.proto` ([`v1`]) and lossless conversions to and from the JSON wire types.
//!
//! | JSON (`rota` HTTP protocol) | gRPC (`rota.executor.v1`) |
//! | --- | --- |
//! | [`RunEnvelope`] | [`v1::RunRequest`] (`params` → `params_json`, instants as the same RFC 3339 strings) |
//! | [`RunResult`] | [`v1::RunResult`] (`output` → `output_json`, status → [`v1::ResultStatus`]) |
//! | `200` + result / `202 Accepted` | [`v1::RunResponse`] with `result` / `accepted` ([`RunAnswer`]) |
//!
//! Only the stubs are generated here, not the transport: [`v1::executor_client::ExecutorClient`] works over any
//! `tonic::client::GrpcService` (a `tonic::transport::Channel` when tonic's `channel` feature is on), and an
//! executor node serves the service by implementing [`v1::executor_server::Executor`] and wrapping it in
//! [`v1::executor_server::ExecutorServer`] (with tonic's `server` feature, or any tower/axum stack).
//!
//! ```
//! use rota_proto::grpc::{RunAnswer, v1};
//! use rota_proto::{RunEnvelope, RunResult};
//!
//! struct Node;
//!
//! #[tonic::async_trait]
//! impl v1::executor_server::Executor for Node {
//!     async fn run(
//!         &self,
//!         request: tonic::Request<v1::RunRequest>,
//!     ) -> Result<tonic::Response<v1::RunResponse>, tonic::Status> {
//!         let envelope = RunEnvelope::try_from(request.into_inner())
//!             .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
//!         let result = RunResult::succeeded(Some(serde_json::json!({"task": envelope.task})));
//!         Ok(tonic::Response::new(RunAnswer::Completed(result).into()))
//!     }
//! }
//!
//! let _service = v1::executor_server::ExecutorServer::new(Node);
//! ```

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

use crate::{ResultStatus, RunEnvelope, RunResult, ShardInfo};

/// Generated from `rota/executor/v1/executor.proto` (package `rota.executor.v1`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("rota.executor.v1");
}

/// Fully qualified name of the Rota executor service.
pub const SERVICE: &str = "rota.executor.v1.Executor";
/// The method that runs an attempt.
pub const METHOD_RUN: &str = "Run";
/// The `.proto` source, for nodes that generate their own stubs (or serve reflection).
pub const PROTO_SOURCE: &str = include_str!("../proto/rota/executor/v1/executor.proto");

/// A gRPC message that does not translate to the JSON wire types. Messages name the field, never its content
/// beyond a short parser explanation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConversionError {
    /// A required field is absent (or empty).
    #[error("{field} is missing")]
    Missing { field: &'static str },
    /// A JSON text field does not parse.
    #[error("{field} is not valid JSON: {reason}")]
    InvalidJson { field: &'static str, reason: String },
    /// `params_json` parses but is not an object.
    #[error("{field} must be a JSON object")]
    NotAnObject { field: &'static str },
    /// An instant is not RFC 3339.
    #[error("{field} is not an RFC 3339 instant: {reason}")]
    InvalidInstant { field: &'static str, reason: String },
    /// The result status is `RESULT_STATUS_UNSPECIFIED` or a value this version does not know.
    #[error("unknown result status {0} (expected succeeded or failed)")]
    UnknownStatus(i32),
    /// The response sets neither `result` nor `accepted`.
    #[error("the response has neither a result nor accepted")]
    EmptyResponse,
}

/// The answer of an executor node to one attempt: the gRPC [`v1::RunResponse`] in Rust terms.
#[derive(Debug, Clone, PartialEq)]
pub enum RunAnswer {
    /// The node ran the attempt (HTTP `200` + [`RunResult`]).
    Completed(RunResult),
    /// The node will report asynchronously (HTTP `202`).
    Accepted,
}

/// An instant as on the JSON wire: RFC 3339 in UTC with `Z`, a fraction only when there is one.
pub fn format_instant(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Parses an RFC 3339 instant (any offset) into UTC.
pub fn parse_instant(field: &'static str, text: &str) -> Result<DateTime<Utc>, ConversionError> {
    if text.is_empty() {
        return Err(ConversionError::Missing { field });
    }
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|e| ConversionError::InvalidInstant { field, reason: e.to_string() })
}

fn parse_json(field: &'static str, text: &str) -> Result<Value, ConversionError> {
    serde_json::from_str(text).map_err(|e| ConversionError::InvalidJson { field, reason: e.to_string() })
}

fn to_json(value: &Value) -> String {
    // Serialising a `Value` cannot fail (its map keys are strings).
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_string())
}

fn params_json(params: &Map<String, Value>) -> String {
    serde_json::to_string(params).unwrap_or_else(|_| "{}".to_string())
}

impl From<&RunEnvelope> for v1::RunRequest {
    fn from(env: &RunEnvelope) -> Self {
        v1::RunRequest {
            run_id: env.run_id.clone(),
            task: env.task.clone(),
            attempt: env.attempt,
            scheduled_at: format_instant(&env.scheduled_at),
            params_json: params_json(&env.params),
            shard: Some(env.shard.into()),
            deadline: format_instant(&env.deadline),
            report_url: env.report_url.clone(),
        }
    }
}

impl From<RunEnvelope> for v1::RunRequest {
    fn from(env: RunEnvelope) -> Self {
        v1::RunRequest::from(&env)
    }
}

impl TryFrom<v1::RunRequest> for RunEnvelope {
    type Error = ConversionError;

    fn try_from(req: v1::RunRequest) -> Result<Self, ConversionError> {
        let params = if req.params_json.trim().is_empty() {
            Map::new()
        } else {
            match parse_json("params_json", &req.params_json)? {
                Value::Object(map) => map,
                _ => return Err(ConversionError::NotAnObject { field: "params_json" }),
            }
        };
        Ok(RunEnvelope {
            run_id: req.run_id,
            task: req.task,
            attempt: req.attempt,
            scheduled_at: parse_instant("scheduled_at", &req.scheduled_at)?,
            params,
            shard: req.shard.ok_or(ConversionError::Missing { field: "shard" })?.into(),
            deadline: parse_instant("deadline", &req.deadline)?,
            report_url: req.report_url,
        })
    }
}

impl From<ShardInfo> for v1::Shard {
    fn from(s: ShardInfo) -> Self {
        v1::Shard { index: s.index, total: s.total }
    }
}

impl From<v1::Shard> for ShardInfo {
    fn from(s: v1::Shard) -> Self {
        ShardInfo { index: s.index, total: s.total }
    }
}

impl From<ResultStatus> for v1::ResultStatus {
    fn from(s: ResultStatus) -> Self {
        match s {
            ResultStatus::Succeeded => v1::ResultStatus::Succeeded,
            ResultStatus::Failed => v1::ResultStatus::Failed,
        }
    }
}

impl From<&RunResult> for v1::RunResult {
    fn from(r: &RunResult) -> Self {
        v1::RunResult {
            status: v1::ResultStatus::from(r.status).into(),
            output_json: r.output.as_ref().map(to_json),
            error: r.error.clone(),
        }
    }
}

impl From<RunResult> for v1::RunResult {
    fn from(r: RunResult) -> Self {
        v1::RunResult::from(&r)
    }
}

impl TryFrom<v1::RunResult> for RunResult {
    type Error = ConversionError;

    fn try_from(r: v1::RunResult) -> Result<Self, ConversionError> {
        let status = match v1::ResultStatus::try_from(r.status) {
            Ok(v1::ResultStatus::Succeeded) => ResultStatus::Succeeded,
            Ok(v1::ResultStatus::Failed) => ResultStatus::Failed,
            Ok(v1::ResultStatus::Unspecified) | Err(_) => return Err(ConversionError::UnknownStatus(r.status)),
        };
        let output = r.output_json.as_deref().map(|text| parse_json("output_json", text)).transpose()?;
        Ok(RunResult { status, output, error: r.error })
    }
}

impl From<RunAnswer> for v1::RunResponse {
    fn from(answer: RunAnswer) -> Self {
        let outcome = match answer {
            RunAnswer::Completed(result) => v1::run_response::Outcome::Result(result.into()),
            RunAnswer::Accepted => v1::run_response::Outcome::Accepted(v1::Accepted {}),
        };
        v1::RunResponse { outcome: Some(outcome) }
    }
}

impl TryFrom<v1::RunResponse> for RunAnswer {
    type Error = ConversionError;

    fn try_from(r: v1::RunResponse) -> Result<Self, ConversionError> {
        match r.outcome {
            Some(v1::run_response::Outcome::Result(result)) => Ok(RunAnswer::Completed(result.try_into()?)),
            Some(v1::run_response::Outcome::Accepted(_)) => Ok(RunAnswer::Accepted),
            None => Err(ConversionError::EmptyResponse),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn envelope() -> RunEnvelope {
        RunEnvelope {
            run_id: "9007199254740993".into(),
            task: "billing/nightly".into(),
            attempt: 3,
            scheduled_at: at("2026-11-25T02:30:00Z"),
            params: serde_json::from_value(json!({
                "report": "daily", "n": 7, "big": 12345678901234567890u64, "f": 1.5,
                "tags": ["a", "b"], "nested": {"x": null, "ü": "✓"}
            }))
            .unwrap(),
            shard: ShardInfo { index: 2, total: 5 },
            deadline: at("2026-11-25T02:40:00.123456789Z"),
            report_url: Some("http://rota.example:8080/api/v1/runs/9007199254740993".into()),
        }
    }

    #[test]
    fn envelope_round_trips_losslessly() {
        let env = envelope();
        let req = v1::RunRequest::from(&env);
        assert_eq!(req.scheduled_at, "2026-11-25T02:30:00Z");
        assert_eq!(req.deadline, "2026-11-25T02:40:00.123456789Z");
        assert_eq!(req.shard, Some(v1::Shard { index: 2, total: 5 }));
        // The instants are the very strings of the JSON protocol.
        let json = serde_json::to_value(&env).unwrap();
        assert_eq!(json["scheduled_at"], req.scheduled_at);
        assert_eq!(json["deadline"], req.deadline);
        assert_eq!(RunEnvelope::try_from(req).unwrap(), env);

        let bare = RunEnvelope { params: Map::new(), report_url: None, ..envelope() };
        let req = v1::RunRequest::from(bare.clone());
        assert_eq!(req.params_json, "{}");
        assert_eq!(req.report_url, None);
        assert_eq!(RunEnvelope::try_from(req).unwrap(), bare);
    }

    #[test]
    fn envelope_accepts_offsets_and_empty_params() {
        let mut req = v1::RunRequest::from(&envelope());
        req.scheduled_at = "2026-11-25T03:30:00+01:00".into();
        req.params_json = String::new();
        let env = RunEnvelope::try_from(req).unwrap();
        assert_eq!(env.scheduled_at, at("2026-11-25T02:30:00Z"));
        assert!(env.params.is_empty());
    }

    #[test]
    fn bad_requests_fail_clearly() {
        let base = v1::RunRequest::from(&envelope());
        let err = |f: fn(&mut v1::RunRequest)| {
            let mut req = base.clone();
            f(&mut req);
            RunEnvelope::try_from(req).unwrap_err()
        };
        let e = err(|r| r.params_json = "{not json".into());
        assert!(matches!(e, ConversionError::InvalidJson { field: "params_json", .. }), "{e:?}");
        assert!(e.to_string().starts_with("params_json is not valid JSON: "), "{e}");
        assert_eq!(err(|r| r.params_json = "[1]".into()), ConversionError::NotAnObject { field: "params_json" });
        assert_eq!(err(|r| r.params_json = "null".into()).to_string(), "params_json must be a JSON object");
        let e = err(|r| r.deadline = "yesterday".into());
        assert!(matches!(e, ConversionError::InvalidInstant { field: "deadline", .. }), "{e:?}");
        assert!(e.to_string().starts_with("deadline is not an RFC 3339 instant: "), "{e}");
        let e = err(|r| r.scheduled_at = "2026-11-25 02:30:00".into());
        assert!(matches!(e, ConversionError::InvalidInstant { field: "scheduled_at", .. }), "{e:?}");
        assert_eq!(err(|r| r.scheduled_at.clear()), ConversionError::Missing { field: "scheduled_at" });
        assert_eq!(err(|r| r.shard = None).to_string(), "shard is missing");
    }

    #[test]
    fn results_round_trip_losslessly() {
        let cases = [
            RunResult::succeeded(None),
            RunResult::succeeded(Some(json!({"rows": 3, "ids": [1, 2], "ok": true}))),
            RunResult::succeeded(Some(json!("text"))),
            RunResult::succeeded(Some(json!(12345678901234567890u64))),
            RunResult::succeeded(Some(Value::Null)),
            RunResult::failed("boom"),
            RunResult { status: ResultStatus::Failed, output: Some(json!([1])), error: None },
        ];
        for result in cases {
            let msg = v1::RunResult::from(&result);
            assert_eq!(RunResult::try_from(msg.clone()).unwrap(), result, "{msg:?}");
            let response = v1::RunResponse::from(RunAnswer::Completed(result.clone()));
            assert_eq!(RunAnswer::try_from(response).unwrap(), RunAnswer::Completed(result));
        }
        let msg = v1::RunResult::from(RunResult::failed("boom"));
        assert_eq!(msg.status, v1::ResultStatus::Failed as i32);
        assert_eq!(msg.output_json, None);
        assert_eq!(msg.error.as_deref(), Some("boom"));
        let msg = v1::RunResult::from(RunResult::succeeded(Some(json!({"a": 1}))));
        assert_eq!(msg.status, v1::ResultStatus::Succeeded as i32);
        assert_eq!(msg.output_json.as_deref(), Some(r#"{"a":1}"#));
    }

    #[test]
    fn accepted_round_trips() {
        let response = v1::RunResponse::from(RunAnswer::Accepted);
        assert_eq!(response.outcome, Some(v1::run_response::Outcome::Accepted(v1::Accepted {})));
        assert_eq!(RunAnswer::try_from(response).unwrap(), RunAnswer::Accepted);
    }

    #[test]
    fn bad_results_fail_clearly() {
        let ok = v1::RunResult::from(RunResult::succeeded(None));
        let unspecified = v1::RunResult { status: 0, ..ok.clone() };
        assert_eq!(RunResult::try_from(unspecified).unwrap_err(), ConversionError::UnknownStatus(0));
        let future = v1::RunResult { status: 7, ..ok.clone() };
        assert_eq!(
            RunResult::try_from(future).unwrap_err().to_string(),
            "unknown result status 7 (expected succeeded or failed)"
        );
        let garbage = v1::RunResult { output_json: Some("{oops".into()), ..ok.clone() };
        let e = RunResult::try_from(garbage).unwrap_err();
        assert!(matches!(e, ConversionError::InvalidJson { field: "output_json", .. }), "{e:?}");
        let empty = v1::RunResult { output_json: Some(String::new()), ..ok };
        assert!(matches!(RunResult::try_from(empty), Err(ConversionError::InvalidJson { .. })));
        assert_eq!(RunAnswer::try_from(v1::RunResponse { outcome: None }).unwrap_err(), ConversionError::EmptyResponse);
    }

    #[test]
    fn the_proto_names_the_service() {
        assert!(PROTO_SOURCE.contains("package rota.executor.v1;"));
        assert_eq!(v1::executor_server::SERVICE_NAME, SERVICE);
    }
}
