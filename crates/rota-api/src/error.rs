//! The one JSON error shape of the API, and the only place where core and store errors become HTTP statuses.
//!
//! Every error response, including axum's own rejections, unknown routes, wrong methods, oversized bodies and
//! timeouts, has the body
//!
//! ```json
//! {"error": {"code": "invalid_spec", "message": "…", "details": [{"path": "spec.retry.maxAttempts", "message": "must be >= 1"}]}}
//! ```
//!
//! `code` is one of [`ErrorCode`]'s stable snake_case names; `details` is always present (possibly empty) and
//! names the offending field (a document path, a query parameter, a header, a path segment) where there is one.

use std::fmt;

use axum::Json;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rota_core::CoreError;
use rota_spec::{SpecError, ValidationErrors};
use rota_store::StoreError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The stable error codes. Clients branch on these, never on messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the task document is malformed or breaks validation rules (`details` lists every problem).
    InvalidSpec,
    /// 400: a path segment, query parameter, header or non-task body is invalid (`details` names it).
    InvalidArgument,
    /// 401: no credentials, or malformed, unknown, expired or revoked ones. The message never echoes them.
    Unauthenticated,
    /// 403: the caller is authenticated but its role (or credential scope) does not allow the request.
    Forbidden,
    /// 404: the addressed task or run (or route) does not exist.
    NotFound,
    /// 409: the request conflicts with the current state (version mismatch, finished run, …).
    Conflict,
    /// 413: the request body is larger than the configured limit.
    PayloadTooLarge,
    /// 415: the request body's content type is not accepted here.
    UnsupportedMediaType,
    /// 405: the route exists but not with this method.
    MethodNotAllowed,
    /// 429: too many failed authentication attempts from this address; retry after `Retry-After` seconds.
    RateLimited,
    /// 503: the scheduler is shutting down and takes no new work.
    ShuttingDown,
    /// 503: a dependency (the store) is unavailable or the request timed out; retrying later may succeed.
    Unavailable,
    /// 500: an unexpected failure; details are logged, never returned.
    Internal,
}

impl ErrorCode {
    /// Every code, in declaration order.
    pub const ALL: [ErrorCode; 13] = [
        ErrorCode::InvalidSpec,
        ErrorCode::InvalidArgument,
        ErrorCode::Unauthenticated,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::Conflict,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::MethodNotAllowed,
        ErrorCode::RateLimited,
        ErrorCode::ShuttingDown,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    /// The wire name (`invalid_spec`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidSpec => "invalid_spec",
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status every response with this code has.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::InvalidSpec | ErrorCode::InvalidArgument => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::ShuttingDown | ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The code used for an error response produced outside the handlers (a rejection, a layer), by status.
    pub fn for_status(status: StatusCode) -> ErrorCode {
        match status {
            StatusCode::UNAUTHORIZED => ErrorCode::Unauthenticated,
            StatusCode::FORBIDDEN => ErrorCode::Forbidden,
            StatusCode::TOO_MANY_REQUESTS => ErrorCode::RateLimited,
            StatusCode::NOT_FOUND => ErrorCode::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
            StatusCode::CONFLICT | StatusCode::PRECONDITION_FAILED => ErrorCode::Conflict,
            StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT | StatusCode::REQUEST_TIMEOUT => {
                ErrorCode::Unavailable
            }
            s if s.is_client_error() => ErrorCode::InvalidArgument,
            _ => ErrorCode::Internal,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem with one named input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Where: a document field path (`spec.retry.maxAttempts`), a query parameter (`limit`), a header
    /// (`If-Match`) or a path segment (`id`).
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

/// The error object inside [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorInfo {
    pub code: ErrorCode,
    /// Human-readable summary; never contains secrets or internal details.
    pub message: String,
    /// Per-field problems (empty when the error is not about a particular input).
    pub details: Vec<ErrorDetail>,
}

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorInfo,
}

/// An error answered to a client. Build it from a [`CoreError`], [`StoreError`] or [`SpecError`] with `?`/`into`,
/// or with the constructors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Vec<ErrorDetail>,
}

/// Result alias of the handlers.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into(), details: Vec::new() }
    }

    /// Adds a field detail.
    pub fn with_detail(mut self, path: impl Into<String>, message: impl Into<String>) -> Self {
        self.details.push(ErrorDetail { path: path.into(), message: message.into() });
        self
    }

    /// `invalid_argument` naming one input.
    pub fn invalid_argument(path: impl Into<String>, message: impl Into<String>) -> Self {
        let (path, message) = (path.into(), message.into());
        ApiError::new(ErrorCode::InvalidArgument, format!("invalid {path}: {message}")).with_detail(path, message)
    }

    pub fn not_found(what: impl fmt::Display) -> Self {
        ApiError::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    /// `internal`: logs `detail` (which may contain anything) and answers a generic message.
    pub fn internal(context: &str, detail: &dyn fmt::Display) -> Self {
        tracing::error!(error = %detail, "{context}");
        ApiError::new(ErrorCode::Internal, "internal error; see the server log")
    }

    /// An error for a response produced by a rejection or a layer: the code follows the status; server-side
    /// messages are replaced by a generic one.
    pub fn from_status(status: StatusCode, message: impl Into<String>) -> Self {
        let code = ErrorCode::for_status(status);
        let message = message.into();
        let message = if status.is_server_error() || message.trim().is_empty() {
            match code {
                ErrorCode::Unavailable => "the service is unavailable or the request timed out; retry later".into(),
                ErrorCode::Internal => "internal error; see the server log".into(),
                _ => status.canonical_reason().unwrap_or("error").to_string(),
            }
        } else {
            message
        };
        ApiError::new(code, message)
    }

    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody { error: ErrorInfo { code: self.code, message: self.message.clone(), details: self.details.clone() } }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status(), Json(self.body())).into_response()
    }
}

fn validation_details(v: &ValidationErrors) -> Vec<ErrorDetail> {
    v.iter().map(|e| ErrorDetail { path: e.path.clone(), message: e.message.clone() }).collect()
}

impl From<ValidationErrors> for ApiError {
    fn from(v: ValidationErrors) -> Self {
        let n = v.len();
        ApiError {
            code: ErrorCode::InvalidSpec,
            message: format!("the task document is invalid ({n} problem{})", if n == 1 { "" } else { "s" }),
            details: validation_details(&v),
        }
    }
}

impl From<SpecError> for ApiError {
    fn from(e: SpecError) -> Self {
        match e {
            SpecError::Invalid(v) => v.into(),
            SpecError::Parse { path, message } => ApiError {
                code: ErrorCode::InvalidSpec,
                message: "the task document cannot be parsed".into(),
                details: vec![ErrorDetail { path, message }],
            },
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { entity, key } => ApiError::not_found(format!("{entity} {key}")),
            StoreError::Conflict { entity, key, reason } => {
                ApiError::new(ErrorCode::Conflict, format!("conflict on {entity} {key}: {reason}"))
            }
            StoreError::InvalidTransition { run_id, from, to } => {
                ApiError::new(ErrorCode::Conflict, format!("run {run_id} is {from}; it cannot become {to}"))
            }
            StoreError::InvalidArgument { field, reason } => ApiError::invalid_argument(field, reason),
            StoreError::Fenced { .. } => {
                tracing::warn!(error = %e, "store write fenced");
                ApiError::new(
                    ErrorCode::Unavailable,
                    "this scheduler node no longer owns the task's shard; retry the request",
                )
            }
            StoreError::Backend(ref source) => {
                tracing::error!(error = %e, source = ?source, "store backend error");
                ApiError::new(ErrorCode::Unavailable, "the store is unavailable; retry later")
            }
        }
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::InvalidSpec(v) => v.into(),
            CoreError::InvalidArgument { field, reason } => ApiError::invalid_argument(field, reason),
            CoreError::NotFound { entity, key } => ApiError::not_found(format!("{entity} {key}")),
            CoreError::Conflict(m) => ApiError::new(ErrorCode::Conflict, m),
            CoreError::ShuttingDown => {
                ApiError::new(ErrorCode::ShuttingDown, "the scheduler is shutting down and takes no new work")
            }
            CoreError::Store(s) => s.into(),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::from_status(r.status(), r.body_text())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        let status = r.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(ErrorCode::PayloadTooLarge, "the request body is larger than the server accepts")
        } else {
            ApiError::from_status(status, r.body_text())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_their_wire_names() {
        for code in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), serde_json::Value::String(code.as_str().into()));
        }
    }

    #[test]
    fn core_errors_map_to_statuses() {
        let cases: Vec<(CoreError, StatusCode, ErrorCode)> = vec![
            (CoreError::NotFound { entity: "task", key: "a/b".into() }, StatusCode::NOT_FOUND, ErrorCode::NotFound),
            (CoreError::Conflict("x".into()), StatusCode::CONFLICT, ErrorCode::Conflict),
            (CoreError::ShuttingDown, StatusCode::SERVICE_UNAVAILABLE, ErrorCode::ShuttingDown),
            (
                CoreError::InvalidArgument { field: "params".into(), reason: "bad".into() },
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidArgument,
            ),
            (
                CoreError::Store(StoreError::backend(std::io::Error::other("postgres://user:secret@db"))),
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
            ),
        ];
        for (e, status, code) in cases {
            let api = ApiError::from(e);
            assert_eq!((api.status(), api.code), (status, code));
            assert!(!api.message.contains("secret"));
        }
    }

    #[test]
    fn validation_errors_keep_every_path() {
        let mut v = ValidationErrors::new();
        v.push("spec.retry.maxAttempts", "must be >= 1");
        v.push("metadata.name", "must be a DNS label");
        let api = ApiError::from(CoreError::InvalidSpec(v));
        assert_eq!(api.code, ErrorCode::InvalidSpec);
        let paths: Vec<_> = api.details.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, ["spec.retry.maxAttempts", "metadata.name"]);
    }
}
