//! Rota's management REST API.
//!
//! [`router`] builds the axum [`Router`] of the API: task documents and their lifecycle, run history, logs and
//! cancellation, the executor-facing report and log endpoints, the scheduler cluster's state, probes, and the
//! OpenAPI 3.1 document.
//! Writes go through the [`Scheduler`] facade (which validates, stores and makes changes take effect); reads go
//! to the [`Store`] directly. The crate contains no scheduling logic.
//!
//! | method | path | permission | answer |
//! | --- | --- | --- | --- |
//! | `PUT` | `/api/v1/tasks/{namespace}/{name}` | tasks_write | 201 created / 200 replaced, [`TaskView`](views::TaskView) |
//! | `GET` | `/api/v1/tasks` | tasks_read | [`TaskList`](views::TaskList) (`namespace`, `label`, `labels`, `paused`, `cursor`, `limit`) |
//! | `GET` | `/api/v1/tasks/{namespace}/{name}` | tasks_read | [`TaskView`](views::TaskView) |
//! | `DELETE` | `/api/v1/tasks/{namespace}/{name}` | tasks_write | 204 |
//! | `POST` | `/api/v1/tasks/{namespace}/{name}/pause`, `/resume` | tasks_pause | [`TaskView`](views::TaskView) |
//! | `POST` | `/api/v1/tasks/{namespace}/{name}/trigger` | tasks_trigger | 201, [`RunView`](views::RunView) |
//! | `GET` | `/api/v1/tasks/{namespace}/{name}/versions` | tasks_read | [`TaskVersionList`](views::TaskVersionList) |
//! | `GET` | `/api/v1/runs` | runs_read | [`RunList`](views::RunList) (`task`, `namespace`, `state`, `from`, `to`, `cursor`, `limit`) |
//! | `GET` | `/api/v1/runs/{id}` | runs_read | [`RunDetail`](views::RunDetail) |
//! | `GET` | `/api/v1/runs/{id}/logs` | runs_read | [`LogPage`](views::LogPage) (`after`, `limit`) |
//! | `POST` | `/api/v1/runs/{id}/cancel` | runs_cancel | [`RunView`](views::RunView) |
//! | `POST` | `/api/v1/runs/{id}/report` | executor_report | [`RunView`](views::RunView) |
//! | `POST` | `/api/v1/runs/{id}/logs` | executor_report | [`AppendLogsResponse`](views::AppendLogsResponse) |
//! | `GET` | `/api/v1/cluster` | cluster_read | [`ClusterView`](views::ClusterView): scheduler nodes, their shards, lease expiry and lag; unowned shards |
//! | `GET` | `/api/v1/executors` | cluster_read | executor nodes |
//! | `POST` | `/api/v1/executors`, `/api/v1/executors/{id}/heartbeat`, `/drain`; `DELETE /api/v1/executors/{id}` | executor_register | registration, heartbeats, drain, leave |
//! | `POST`, `GET` | `/api/v1/tokens`; `DELETE /api/v1/tokens/{id}` | tokens_manage | [`CreatedToken`](access::CreatedToken) (the token, shown once), [`TokenList`](access::TokenList) |
//! | `GET` | `/api/v1/role-bindings`; `PUT`, `DELETE /api/v1/role-bindings/{namespace}/{kind}/{subject}` | roles_manage | [`RoleBindingList`](access::RoleBindingList), [`RoleBindingView`](access::RoleBindingView) |
//! | `GET` | `/api/v1/audit` | audit_read | [`AuditList`](access::AuditList) (`actor`, `action`, `resource`, `from`, `to`, `cursor`, `limit`) |
//! | `GET` | `/healthz`, `/readyz`, `/openapi.json` | public | probes, the OpenAPI document |
//!
//! Every non-public route needs `Authorization: Bearer <token>`; see [`auth`] for who may do what (roles per
//! namespace, executor credentials per service) and the audit log.
//!
//! Task bodies are YAML or JSON (by `Content-Type`: `application/json`, `application/yaml`, `text/yaml`;
//! sniffed when absent). Every error, including axum's own rejections, unknown routes (404), wrong methods (405),
//! oversized bodies (413) and timeouts, has the shape described in [`error`]; core and store errors become HTTP
//! statuses only there.
//!
//! Routes are registered from one table ([`routes::route_table`]) that names each route's required
//! [`Permission`]; every route passes [`routes`]' single `authorize` middleware, which authenticates, authorizes
//! and audits through [`ApiState::auth`].
//!
//! ```no_run
//! # async fn demo(scheduler: rota_core::Scheduler) -> std::io::Result<()> {
//! let app = rota_api::router(rota_api::ApiState::new(scheduler));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await
//! # }
//! ```

pub mod access;
pub mod auth;
pub mod cluster;
pub mod error;
pub mod executors;
pub mod extract;
mod health;
pub mod openapi;
pub mod routes;
mod runs;
mod tasks;
pub mod views;

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header::{ALLOW, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use rota_core::Scheduler;
use rota_store::{MAX_PAGE_SIZE, PageRequest, Store};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;

pub use auth::Auth;
pub use error::{ApiError, ApiResult, ErrorBody, ErrorCode, ErrorDetail};
pub use routes::{Permission, RouteInfo, route_table};

/// Tuning of the API. `Default` gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// Largest accepted request body (default 1 MiB); larger ones get `413 payload_too_large`.
    pub max_body_bytes: usize,
    /// Longest a request may take (default 30 s); slower ones get `503 unavailable`.
    pub request_timeout: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig { max_body_bytes: 1024 * 1024, request_timeout: Duration::from_secs(30) }
    }
}

/// What the handlers share: the scheduler (for every write), the store (for reads), the configuration, and who
/// may do what ([`Auth`]).
#[derive(Clone)]
pub struct ApiState {
    pub scheduler: Scheduler,
    pub store: Arc<dyn Store>,
    pub config: ApiConfig,
    pub auth: Auth,
}

impl ApiState {
    /// State reading from the scheduler's own store, with the default configuration and authentication by Rota's
    /// API tokens in that store ([`Auth::tokens`]): secure by default, every non-public route needs a token.
    pub fn new(scheduler: Scheduler) -> Self {
        let store = scheduler.store().clone();
        let auth = Auth::tokens(store.clone());
        ApiState { scheduler, store, config: ApiConfig::default(), auth }
    }

    pub fn with_config(mut self, config: ApiConfig) -> Self {
        self.config = config;
        self
    }

    /// Replaces the authentication and authorization (e.g. adding OIDC to the chain, or a user's policy).
    pub fn with_auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }
}

/// Builds the API's router (routes, fallbacks, body limit, timeout, panic catching, tracing, error shaping).
///
/// Serve it with `into_make_service_with_connect_info::<SocketAddr>()` so that the audit log records client
/// addresses and failed authentication is rate-limited per address (without it, all clients share one bucket).
pub fn router(state: ApiState) -> Router {
    let config = state.config.clone();
    with_common_layers(routes::register(Router::new(), &state).with_state(state), &config)
}

/// Fallbacks and the layers every request passes through (outermost first): tracing, error shaping, panic
/// catching, timeout, body limit.
fn with_common_layers(router: Router, config: &ApiConfig) -> Router {
    let layers = ServiceBuilder::new()
        .layer(TraceLayer::new_for_http())
        .layer(middleware::from_fn(json_errors))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn_with_state(config.request_timeout, timeout))
        .layer(RequestBodyLimitLayer::new(config.max_body_bytes))
        .layer(DefaultBodyLimit::max(config.max_body_bytes));
    router.fallback(unknown_route).method_not_allowed_fallback(method_not_allowed).layer(layers)
}

/// `cursor` and `limit` of a list request.
pub(crate) fn page_request(q: &mut extract::QueryParams) -> ApiResult<PageRequest> {
    let cursor = q.take("cursor")?;
    let limit = q.take_parsed::<u32>("limit", "an integer")?;
    if let Some(l) = limit
        && !(1..=MAX_PAGE_SIZE).contains(&l)
    {
        return Err(ApiError::invalid_argument("limit", format!("must be between 1 and {MAX_PAGE_SIZE}")));
    }
    Ok(PageRequest { cursor, limit: limit.unwrap_or(0) })
}

async fn unknown_route(req: Request) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no route for {} {}", req.method(), req.uri().path()))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed, format!("{} is not allowed on {}", req.method(), req.uri().path()))
}

async fn timeout(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(timeout = ?limit, "request timed out");
            ApiError::new(
                ErrorCode::Unavailable,
                format!("the request did not complete within {}s", limit.as_secs_f64()),
            )
            .into_response()
        }
    }
}

fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(non-string panic)");
    ApiError::internal("request handler panicked", &message).into_response()
}

/// Turns any error response that is not already the JSON error shape (axum rejections, layer responses) into it.
async fn json_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let allow: Option<HeaderValue> = response.headers().get(ALLOW).cloned();
    let text = match axum::body::to_bytes(response.into_body(), 4096).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_string(),
        Err(_) => String::new(),
    };
    let err = if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(ErrorCode::PayloadTooLarge, "the request body is larger than the server accepts")
    } else {
        ApiError::from_status(status, text)
    };
    let mut out = err.into_response();
    if let Some(allow) = allow {
        out.headers_mut().insert(ALLOW, allow);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    async fn call(router: Router, uri: &str) -> (StatusCode, serde_json::Value) {
        let res = router.oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    fn test_router() -> Router {
        let config = ApiConfig { request_timeout: Duration::from_millis(50), ..ApiConfig::default() };
        let router = Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            )
            .route(
                "/panic",
                get(|| async {
                    if std::hint::black_box(true) {
                        panic!("secret detail");
                    }
                    "unreachable"
                }),
            )
            .route("/teapot", get(|| async { (StatusCode::IM_A_TEAPOT, "short and stout") }));
        with_common_layers(router, &config)
    }

    #[tokio::test]
    async fn timeouts_are_503_unavailable() {
        let (status, body) = call(test_router(), "/slow").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"]["code"], "unavailable");
    }

    #[tokio::test]
    async fn panics_are_500_internal_without_details() {
        let (status, body) = call(test_router(), "/panic").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"]["code"], "internal");
        assert!(!body.to_string().contains("secret"));
    }

    #[tokio::test]
    async fn plain_text_errors_get_the_json_shape() {
        let (status, body) = call(test_router(), "/teapot").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["code"], "invalid_argument");
        assert_eq!(body["error"]["message"], "short and stout");
        assert_eq!(body["error"]["details"], serde_json::json!([]));
        let (status, body) = call(test_router(), "/missing").await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    }
}
