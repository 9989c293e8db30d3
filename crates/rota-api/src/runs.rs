//! Run handlers: history, detail, logs, cancellation, and the executor-facing report and log endpoints.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use rota_proto::{LogAppend, RunReport};
use rota_store::{RunFilter, RunState};

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{JsonBody, OptionalJsonBody, QueryParams, RunId};
use crate::views::{
    AppendLogsResponse, CancelRequest, LogAppendDoc, LogLineView, LogPage, RunDetail, RunList, RunReportDoc, RunView,
};
use crate::{ApiState, page_request};

/// Reason recorded when a cancel request gives none.
pub const DEFAULT_CANCEL_REASON: &str = "cancelled through the API";

/// Largest `limit` of a log read.
pub const MAX_LOG_LINES: u32 = 10_000;

fn parse_instant(q: &mut QueryParams, name: &str) -> ApiResult<Option<DateTime<Utc>>> {
    match q.take(name)? {
        None => Ok(None),
        Some(s) => DateTime::parse_from_rfc3339(&s)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|e| ApiError::invalid_argument(name, format!("expected an RFC 3339 instant, got {s:?} ({e})"))),
    }
}

fn parse_states(values: Vec<String>) -> ApiResult<Vec<RunState>> {
    let mut states = Vec::new();
    for item in values.iter().flat_map(|v| v.split(',')).map(str::trim).filter(|s| !s.is_empty()) {
        let st = RunState::ALL.into_iter().find(|s| s.as_str() == item).ok_or_else(|| {
            let all: Vec<_> = RunState::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::invalid_argument("state", format!("unknown run state {item:?}; one of {}", all.join(", ")))
        })?;
        if !states.contains(&st) {
            states.push(st);
        }
    }
    Ok(states)
}

/// List runs, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/runs",
    tag = "runs",
    operation_id = "list_runs",
    params(
        ("task" = Option<String>, Query, description = "Only runs of this task (`namespace/name`)"),
        ("namespace" = Option<String>, Query, description = "Only runs of tasks in this namespace"),
        ("state" = Option<Vec<String>>, Query, description = "Only runs in these states; repeatable or comma-separated", explode = true),
        ("from" = Option<String>, Query, description = "Only runs scheduled at or after this RFC 3339 instant"),
        ("to" = Option<String>, Query, description = "Only runs scheduled before this RFC 3339 instant"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
        ("limit" = Option<u32>, Query, description = "Page size, 1..=1000 (default 100)"),
    ),
    responses(
        (status = 200, description = "One page of runs", body = RunList),
        (status = 400, description = "Invalid query parameter", body = ErrorBody),
    )
)]
pub async fn list_runs(State(state): State<ApiState>, mut q: QueryParams) -> ApiResult<Json<RunList>> {
    let mut filter = RunFilter::default();
    if let Some(task) = q.take("task")? {
        let Some((ns, name)) = task.split_once('/').filter(|(ns, n)| !ns.is_empty() && !n.is_empty()) else {
            return Err(ApiError::invalid_argument("task", format!("expected namespace/name, got {task:?}")));
        };
        filter.namespace = Some(ns.to_string());
        filter.name = Some(name.to_string());
    }
    if let Some(ns) = q.take("namespace")? {
        if filter.namespace.as_ref().is_some_and(|t| *t != ns) {
            return Err(ApiError::invalid_argument("namespace", "contradicts the namespace of `task`"));
        }
        filter.namespace = Some(ns);
    }
    filter.states = parse_states(q.take_all("state"))?;
    filter.from = parse_instant(&mut q, "from")?;
    filter.to = parse_instant(&mut q, "to")?;
    if let (Some(from), Some(to)) = (filter.from, filter.to)
        && from > to
    {
        return Err(ApiError::invalid_argument("to", "is before `from`"));
    }
    let page = page_request(&mut q)?;
    q.finish()?;
    let page = state.store.list_runs(&filter, &page).await?;
    Ok(Json(RunList { items: page.items.into_iter().map(RunView::from).collect(), next_cursor: page.next_cursor }))
}

/// Get a run with its attempts.
#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}",
    tag = "runs",
    operation_id = "get_run",
    params(("id" = i64, Path, description = "Run id")),
    responses(
        (status = 200, description = "The run", body = RunDetail),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody),
    )
)]
pub async fn get_run(State(state): State<ApiState>, RunId(id): RunId) -> ApiResult<Json<RunDetail>> {
    let Some(run) = state.store.get_run(id).await? else {
        return Err(ApiError::not_found(format!("run {id}")));
    };
    let attempts = state.store.list_attempts(id).await?;
    Ok(Json(RunDetail { run: run.into(), attempts: attempts.into_iter().map(Into::into).collect() }))
}

/// Read a run's log lines after a sequence number.
#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}/logs",
    tag = "runs",
    operation_id = "read_run_logs",
    params(
        ("id" = i64, Path, description = "Run id"),
        ("after" = Option<i64>, Query, description = "Only lines with a larger `seq` (default 0: from the start)"),
        ("limit" = Option<u32>, Query, description = "At most this many lines, 1..=10000 (default 1000)"),
    ),
    responses(
        (status = 200, description = "Log lines in order", body = LogPage),
        (status = 400, description = "Invalid parameter", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody),
    )
)]
pub async fn read_logs(
    State(state): State<ApiState>,
    RunId(id): RunId,
    mut q: QueryParams,
) -> ApiResult<Json<LogPage>> {
    let after = q.take_parsed::<i64>("after", "a sequence number")?.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::invalid_argument("after", "must be >= 0"));
    }
    let limit = q.take_parsed::<u32>("limit", "an integer")?.unwrap_or(1000);
    if !(1..=MAX_LOG_LINES).contains(&limit) {
        return Err(ApiError::invalid_argument("limit", format!("must be between 1 and {MAX_LOG_LINES}")));
    }
    q.finish()?;
    if state.store.get_run(id).await?.is_none() {
        return Err(ApiError::not_found(format!("run {id}")));
    }
    let lines = state.store.read_logs(id, after, limit).await?;
    let next_after = lines.last().map_or(after, |l| l.seq);
    Ok(Json(LogPage { items: lines.into_iter().map(LogLineView::from).collect(), next_after }))
}

/// Cancel a run that has not finished.
#[utoipa::path(
    post,
    path = "/api/v1/runs/{id}/cancel",
    tag = "runs",
    operation_id = "cancel_run",
    params(("id" = i64, Path, description = "Run id")),
    request_body(content = Option<CancelRequest>, description = "Optional reason", content_type = "application/json"),
    responses(
        (status = 200, description = "The cancelled run", body = RunView),
        (status = 404, description = "No such run", body = ErrorBody),
        (status = 409, description = "The run has already finished", body = ErrorBody),
    )
)]
pub async fn cancel_run(
    State(state): State<ApiState>,
    RunId(id): RunId,
    OptionalJsonBody(body): OptionalJsonBody<CancelRequest>,
) -> ApiResult<Json<RunView>> {
    let reason = body.and_then(|b| b.reason).filter(|r| !r.trim().is_empty());
    let reason = reason.as_deref().unwrap_or(DEFAULT_CANCEL_REASON);
    Ok(Json(state.scheduler.cancel_run(id, reason).await?.into()))
}

/// Report the result of an attempt that the executor accepted asynchronously (`202`). Executor-facing.
#[utoipa::path(
    post,
    path = "/api/v1/runs/{id}/report",
    tag = "executor",
    operation_id = "report_run",
    params(("id" = i64, Path, description = "Run id")),
    request_body(content = RunReportDoc, content_type = "application/json"),
    responses(
        (status = 200, description = "The run after recording the result", body = RunView),
        (status = 400, description = "Invalid report", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody),
        (status = 409, description = "The run has finished or the attempt is not current", body = ErrorBody),
    )
)]
pub async fn report_run(
    State(state): State<ApiState>,
    RunId(id): RunId,
    JsonBody(report): JsonBody<RunReport>,
) -> ApiResult<Json<RunView>> {
    Ok(Json(state.scheduler.report(id, report).await?.into()))
}

/// Append log lines to a run. Executor-facing.
#[utoipa::path(
    post,
    path = "/api/v1/runs/{id}/logs",
    tag = "executor",
    operation_id = "append_run_logs",
    params(("id" = i64, Path, description = "Run id")),
    request_body(content = LogAppendDoc, content_type = "application/json"),
    responses(
        (status = 200, description = "Appended", body = AppendLogsResponse),
        (status = 400, description = "Invalid body", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody),
    )
)]
pub async fn append_logs(
    State(state): State<ApiState>,
    RunId(id): RunId,
    JsonBody(append): JsonBody<LogAppend>,
) -> ApiResult<Json<AppendLogsResponse>> {
    let last_seq = state.scheduler.append_logs(id, append).await?;
    Ok(Json(AppendLogsResponse { last_seq }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_parse_from_lists_and_repeats() {
        let s = parse_states(vec!["running,failed".into(), "succeeded".into(), "failed".into()]).unwrap();
        assert_eq!(s, [RunState::Running, RunState::Failed, RunState::Succeeded]);
        assert_eq!(parse_states(vec!["bogus".into()]).unwrap_err().details[0].path, "state");
    }

    /// The documented mirrors must describe exactly the wire types' fields.
    #[test]
    fn documented_bodies_mirror_the_wire_types() {
        let report = RunReport {
            attempt: 1,
            status: rota_proto::ResultStatus::Succeeded,
            output: Some(serde_json::json!({"a": 1})),
            error: Some("e".into()),
            logs: vec!["l".into()],
            node: Some("n1".into()),
        };
        let wire = serde_json::to_value(&report).unwrap();
        let doc: RunReportDoc = serde_json::from_value(wire.clone()).unwrap();
        assert_eq!(serde_json::to_value(&doc).unwrap(), wire);

        let append = LogAppend { stream: Some("stdout".into()), lines: vec!["x".into()] };
        let wire = serde_json::to_value(&append).unwrap();
        let doc: LogAppendDoc = serde_json::from_value(wire.clone()).unwrap();
        assert_eq!(serde_json::to_value(&doc).unwrap(), wire);
    }
}
