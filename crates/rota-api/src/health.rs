//! Liveness, readiness and the OpenAPI document.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

use crate::ApiState;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::views::HealthView;

/// Liveness: 200 while the process serves requests.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    operation_id = "healthz",
    responses((status = 200, description = "The process is alive", body = HealthView))
)]
pub async fn healthz() -> Json<HealthView> {
    Json(HealthView { status: "ok".into(), store: None })
}

/// Readiness: 200 when the store answers, 503 `unavailable` otherwise.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    operation_id = "readyz",
    responses(
        (status = 200, description = "Ready to serve", body = HealthView),
        (status = 503, description = "The store does not answer", body = ErrorBody),
    )
)]
pub async fn readyz(State(state): State<ApiState>) -> Response {
    let backend = state.store.backend_name();
    match state.store.ping().await {
        Ok(()) => Json(HealthView { status: "ready".into(), store: Some(backend.into()) }).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, store = backend, "readiness check failed");
            ApiError::new(ErrorCode::Unavailable, format!("the {backend} store does not answer")).into_response()
        }
    }
}

/// The OpenAPI 3.1 document of this API.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "health",
    operation_id = "openapi",
    responses((status = 200, description = "This document", content_type = "application/json", body = Object))
)]
pub async fn openapi() -> Json<&'static serde_json::Value> {
    Json(crate::openapi::document())
}
