//! Task handlers: create/replace, read, list, delete, pause/resume, trigger, version history.

use axum::Json;
use axum::extract::State;
use axum::http::header::{ETAG, IF_MATCH, IF_NONE_MATCH, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rota_spec::Task;
use rota_store::{Precondition, TaskFilter};

use crate::error::{ApiError, ApiResult, ErrorBody, ErrorCode};
use crate::extract::{OptionalJsonBody, QueryParams, RawBody, TaskPath, etag, media_type, parse_label_selectors};
use crate::views::{RunView, TaskDocument, TaskList, TaskVersionList, TaskView, TriggerRequest};
use crate::{ApiState, page_request};

/// How a task body is to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DocFormat {
    Json,
    Yaml,
    /// No (or a generic) content type: JSON when the body starts with `{`, YAML otherwise.
    Sniff,
}

fn doc_format(headers: &HeaderMap) -> ApiResult<DocFormat> {
    Ok(match media_type(headers)?.as_deref() {
        None | Some("text/plain") | Some("application/octet-stream") => DocFormat::Sniff,
        Some("application/json") => DocFormat::Json,
        Some("application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml") => DocFormat::Yaml,
        Some(m) if m.starts_with("application/") && m.ends_with("+json") => DocFormat::Json,
        Some(m) if m.ends_with("+yaml") => DocFormat::Yaml,
        Some(other) => {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                format!("task documents are application/json or application/yaml, not {other}"),
            )
            .with_detail("Content-Type", "expected application/json, application/yaml or text/yaml"));
        }
    })
}

/// Parses (and validates) a task document; also tells whether it named its namespace explicitly.
fn parse_task(format: DocFormat, body: &[u8]) -> ApiResult<(Task, bool)> {
    let text = std::str::from_utf8(body).map_err(|e| {
        ApiError::new(ErrorCode::InvalidSpec, "the task document is not UTF-8").with_detail("(root)", e.to_string())
    })?;
    if text.trim().is_empty() {
        return Err(ApiError::new(ErrorCode::InvalidSpec, "the request has no task document")
            .with_detail("(root)", "a task document is required"));
    }
    let format = match format {
        DocFormat::Sniff if text.trim_start().starts_with('{') => DocFormat::Json,
        DocFormat::Sniff => DocFormat::Yaml,
        f => f,
    };
    let task = match format {
        DocFormat::Json => rota_spec::parse_json(text)?,
        _ => rota_spec::parse_yaml(text)?,
    };
    // `metadata.namespace` defaults during parsing; find out whether the document gave it.
    let raw: Option<serde_json::Value> = match format {
        DocFormat::Json => serde_json::from_str(text).ok(),
        _ => serde_yaml::from_str(text).ok(),
    };
    let namespace_given =
        raw.as_ref().and_then(|v| v.get("metadata")).and_then(|m| m.get("namespace")).is_some_and(|n| !n.is_null());
    Ok((task, namespace_given))
}

fn precondition(headers: &HeaderMap) -> ApiResult<Precondition> {
    let if_match = headers.get(IF_MATCH);
    let if_none_match = headers.get(IF_NONE_MATCH);
    match (if_match, if_none_match) {
        (Some(_), Some(_)) => Err(ApiError::invalid_argument("If-Match", "cannot be combined with If-None-Match")),
        (Some(v), None) => {
            let s = v.to_str().unwrap_or("").trim();
            let digits = s.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(s);
            match digits.parse::<i64>() {
                Ok(n) if n >= 1 => Ok(Precondition::Version(n)),
                _ => Err(ApiError::invalid_argument(
                    "If-Match",
                    format!("expected a task version (e.g. 3 or \"3\"), got {s:?}"),
                )),
            }
        }
        (None, Some(v)) => match v.to_str().unwrap_or("").trim() {
            "*" => Ok(Precondition::MustNotExist),
            other => Err(ApiError::invalid_argument("If-None-Match", format!("only `*` is supported, got {other:?}"))),
        },
        (None, None) => Ok(Precondition::Any),
    }
}

fn task_response(status: StatusCode, record: rota_store::TaskRecord) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(ETAG, etag(record.version));
    if status == StatusCode::CREATED
        && let Ok(loc) = HeaderValue::from_str(&format!("/api/v1/tasks/{}/{}", record.namespace, record.name))
    {
        headers.insert(LOCATION, loc);
    }
    (status, headers, Json(TaskView::from(record))).into_response()
}

/// Create or replace a task.
///
/// The body is a task document as JSON or YAML (by `Content-Type`; sniffed when absent). Its `metadata.name`
/// (and `metadata.namespace`, when given) must match the path. `If-Match: <version>` replaces only that version;
/// `If-None-Match: *` only creates.
#[utoipa::path(
    put,
    path = "/api/v1/tasks/{namespace}/{name}",
    tag = "tasks",
    operation_id = "put_task",
    params(
        ("namespace" = String, Path, description = "Task namespace"),
        ("name" = String, Path, description = "Task name"),
        ("If-Match" = Option<String>, Header, description = "Replace only if the current version is this one"),
        ("If-None-Match" = Option<String>, Header, description = "`*`: create only"),
    ),
    request_body(
        description = "The task document",
        content(
            (TaskDocument = "application/json"),
            (TaskDocument = "application/yaml"),
        )
    ),
    responses(
        (status = 201, description = "Created", body = TaskView, headers(("ETag" = String), ("Location" = String))),
        (status = 200, description = "Replaced", body = TaskView, headers(("ETag" = String))),
        (status = 400, description = "Invalid document (`invalid_spec`, every field path in `details`) or metadata/path mismatch (`invalid_argument`)", body = ErrorBody),
        (status = 409, description = "`If-Match`/`If-None-Match` precondition failed", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Unsupported content type", body = ErrorBody),
    )
)]
pub async fn put_task(
    State(state): State<ApiState>,
    path: TaskPath,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> ApiResult<Response> {
    let format = doc_format(&headers)?;
    let precondition = precondition(&headers)?;
    let (mut task, namespace_given) = parse_task(format, &body)?;

    let mut mismatch = ApiError::new(ErrorCode::InvalidArgument, "the document's metadata does not match the URL");
    if task.metadata.name != path.name {
        mismatch = mismatch.with_detail(
            "metadata.name",
            format!("is {:?} but the URL names task {:?}", task.metadata.name, path.name),
        );
    }
    if namespace_given && task.metadata.namespace != path.namespace {
        mismatch = mismatch.with_detail(
            "metadata.namespace",
            format!("is {:?} but the URL names namespace {:?}", task.metadata.namespace, path.namespace),
        );
    }
    if !mismatch.details.is_empty() {
        return Err(mismatch);
    }
    if !namespace_given && task.metadata.namespace != path.namespace {
        task.metadata.namespace = path.namespace.clone();
        task.validate()?;
    }

    let record = state.scheduler.apply(task, precondition).await?;
    let status = if record.version == 1 { StatusCode::CREATED } else { StatusCode::OK };
    Ok(task_response(status, record))
}

/// List tasks.
#[utoipa::path(
    get,
    path = "/api/v1/tasks",
    tag = "tasks",
    operation_id = "list_tasks",
    params(
        ("namespace" = Option<String>, Query, description = "Only tasks of this namespace"),
        ("label" = Option<Vec<String>>, Query, description = "`key=value`; repeatable; every label must match", explode = true),
        ("labels" = Option<String>, Query, description = "`key=value,key2=value2`; every label must match"),
        ("paused" = Option<bool>, Query, description = "Only paused (`true`) or unpaused (`false`) tasks"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
        ("limit" = Option<u32>, Query, description = "Page size, 1..=1000 (default 100)"),
    ),
    responses(
        (status = 200, description = "One page of tasks", body = TaskList),
        (status = 400, description = "Invalid query parameter", body = ErrorBody),
    )
)]
pub async fn list_tasks(State(state): State<ApiState>, mut q: QueryParams) -> ApiResult<Json<TaskList>> {
    let namespace = q.take("namespace")?;
    let labels = parse_label_selectors(q.take_all("label"), q.take_all("labels"))?;
    let paused = q.take_parsed::<bool>("paused", "true or false")?;
    let page = page_request(&mut q)?;
    q.finish()?;
    let filter = TaskFilter { namespace, labels, paused };
    let page = state.store.list_tasks(&filter, &page).await?;
    Ok(Json(TaskList { items: page.items.into_iter().map(TaskView::from).collect(), next_cursor: page.next_cursor }))
}

/// Get a task.
#[utoipa::path(
    get,
    path = "/api/v1/tasks/{namespace}/{name}",
    tag = "tasks",
    operation_id = "get_task",
    params(("namespace" = String, Path), ("name" = String, Path)),
    responses(
        (status = 200, description = "The task", body = TaskView, headers(("ETag" = String))),
        (status = 404, description = "No such task", body = ErrorBody),
    )
)]
pub async fn get_task(State(state): State<ApiState>, path: TaskPath) -> ApiResult<Response> {
    match state.store.get_task(&path.namespace, &path.name).await? {
        Some(record) => Ok(task_response(StatusCode::OK, record)),
        None => Err(ApiError::not_found(format!("task {}", path.key()))),
    }
}

/// Delete a task (its runs stay as history).
#[utoipa::path(
    delete,
    path = "/api/v1/tasks/{namespace}/{name}",
    tag = "tasks",
    operation_id = "delete_task",
    params(("namespace" = String, Path), ("name" = String, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such task", body = ErrorBody),
    )
)]
pub async fn delete_task(State(state): State<ApiState>, path: TaskPath) -> ApiResult<StatusCode> {
    if state.scheduler.delete_task(&path.namespace, &path.name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("task {}", path.key())))
    }
}

/// Pause a task: it stops firing by time until resumed.
#[utoipa::path(
    post,
    path = "/api/v1/tasks/{namespace}/{name}/pause",
    tag = "tasks",
    operation_id = "pause_task",
    params(("namespace" = String, Path), ("name" = String, Path)),
    responses(
        (status = 200, description = "The paused task", body = TaskView),
        (status = 404, description = "No such task", body = ErrorBody),
    )
)]
pub async fn pause_task(State(state): State<ApiState>, path: TaskPath) -> ApiResult<Json<TaskView>> {
    Ok(Json(state.scheduler.pause(&path.namespace, &path.name).await?.into()))
}

/// Resume a paused task (its next fire time is recomputed from now).
#[utoipa::path(
    post,
    path = "/api/v1/tasks/{namespace}/{name}/resume",
    tag = "tasks",
    operation_id = "resume_task",
    params(("namespace" = String, Path), ("name" = String, Path)),
    responses(
        (status = 200, description = "The resumed task", body = TaskView),
        (status = 404, description = "No such task", body = ErrorBody),
    )
)]
pub async fn resume_task(State(state): State<ApiState>, path: TaskPath) -> ApiResult<Json<TaskView>> {
    Ok(Json(state.scheduler.resume(&path.namespace, &path.name).await?.into()))
}

/// Fire a task now. The optional body's `params` are merged over the task's.
#[utoipa::path(
    post,
    path = "/api/v1/tasks/{namespace}/{name}/trigger",
    tag = "tasks",
    operation_id = "trigger_task",
    params(("namespace" = String, Path), ("name" = String, Path)),
    request_body(content = Option<TriggerRequest>, description = "Optional parameter overrides", content_type = "application/json"),
    responses(
        (status = 201, description = "The new run", body = RunView, headers(("Location" = String))),
        (status = 400, description = "Invalid body", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 503, description = "Shutting down", body = ErrorBody),
    )
)]
pub async fn trigger_task(
    State(state): State<ApiState>,
    path: TaskPath,
    OptionalJsonBody(body): OptionalJsonBody<TriggerRequest>,
) -> ApiResult<Response> {
    let params = body.unwrap_or_default().params;
    let run = state.scheduler.trigger(&path.namespace, &path.name, params).await?;
    let mut headers = HeaderMap::new();
    headers.insert(LOCATION, HeaderValue::from_str(&format!("/api/v1/runs/{}", run.id)).expect("ascii"));
    Ok((StatusCode::CREATED, headers, Json(RunView::from(run))).into_response())
}

/// The version history of a task, oldest first.
#[utoipa::path(
    get,
    path = "/api/v1/tasks/{namespace}/{name}/versions",
    tag = "tasks",
    operation_id = "list_task_versions",
    params(("namespace" = String, Path), ("name" = String, Path)),
    responses(
        (status = 200, description = "Every stored version", body = TaskVersionList),
        (status = 404, description = "No such task", body = ErrorBody),
    )
)]
pub async fn list_task_versions(State(state): State<ApiState>, path: TaskPath) -> ApiResult<Json<TaskVersionList>> {
    if state.store.get_task(&path.namespace, &path.name).await?.is_none() {
        return Err(ApiError::not_found(format!("task {}", path.key())));
    }
    let versions = state.store.task_versions(&path.namespace, &path.name).await?;
    Ok(Json(TaskVersionList { items: versions.into_iter().map(Into::into).collect() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn formats_by_content_type() {
        assert_eq!(doc_format(&headers(&[])).unwrap(), DocFormat::Sniff);
        assert_eq!(
            doc_format(&headers(&[("content-type", "application/json; charset=utf-8")])).unwrap(),
            DocFormat::Json
        );
        assert_eq!(doc_format(&headers(&[("content-type", "text/yaml")])).unwrap(), DocFormat::Yaml);
        assert_eq!(doc_format(&headers(&[("content-type", "Application/YAML")])).unwrap(), DocFormat::Yaml);
        let err = doc_format(&headers(&[("content-type", "application/xml")])).unwrap_err();
        assert_eq!(err.code, ErrorCode::UnsupportedMediaType);
    }

    #[test]
    fn preconditions() {
        assert_eq!(precondition(&headers(&[])).unwrap(), Precondition::Any);
        assert_eq!(precondition(&headers(&[("if-match", "3")])).unwrap(), Precondition::Version(3));
        assert_eq!(precondition(&headers(&[("if-match", "\"7\"")])).unwrap(), Precondition::Version(7));
        assert_eq!(precondition(&headers(&[("if-none-match", "*")])).unwrap(), Precondition::MustNotExist);
        assert_eq!(precondition(&headers(&[("if-match", "x")])).unwrap_err().details[0].path, "If-Match");
    }
}
