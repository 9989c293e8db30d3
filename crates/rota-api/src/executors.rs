//! Executor nodes: registration, heartbeats, draining and leaving (called by executor nodes), and their listing.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use rota_proto::{ExecutorLease, ExecutorRegistration};
use rota_store::NodeRecord;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ApiState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{JsonBody, QueryParams};
use crate::views::NodeStateView;

/// `{id}` of an executor route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for NodeId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(id) = Path::<String>::from_request_parts(parts, state).await?;
        Ok(NodeId(id))
    }
}

/// What an executor node speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = ExecutorProtocol)]
pub enum ExecutorProtocolDoc {
    Http,
    Grpc,
}

/// Body of `POST /api/v1/executors` (the wire type is `rota_proto::ExecutorRegistration`; this mirrors it for
/// the OpenAPI document). Unknown fields are rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = ExecutorRegistration)]
pub struct ExecutorRegistrationDoc {
    /// Node id, unique in the cluster: letters, digits and `. _ : -`, 1 to 128 characters.
    pub id: String,
    /// The service (execution cluster) the node belongs to; tasks name it in `candidates.service`.
    pub service: String,
    /// Where the scheduler reaches the node: `http(s)://host[:port]`; gRPC nodes may also give `host:port` or
    /// `grpc://host:port`. No credentials, path or query.
    pub address: String,
    /// Default `http`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<ExecutorProtocolDoc>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Relative weight for `weighted` load balancing (1 to 10000, default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Concurrent runs the node accepts; 0 (default) = unbounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
}

/// The answer to a registration, heartbeat or drain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = ExecutorLease)]
pub struct ExecutorLeaseView {
    pub id: String,
    pub state: NodeStateView,
    /// Send the next heartbeat within this many milliseconds.
    pub heartbeat_interval_ms: u64,
    /// Without a heartbeat the node leaves the candidate set at this instant.
    pub expires_at: DateTime<Utc>,
}

impl From<ExecutorLease> for ExecutorLeaseView {
    fn from(l: ExecutorLease) -> Self {
        ExecutorLeaseView {
            id: l.id,
            state: if l.state == "draining" { NodeStateView::Draining } else { NodeStateView::Active },
            heartbeat_interval_ms: l.heartbeat_interval_ms,
            expires_at: l.expires_at,
        }
    }
}

/// A registered executor node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ExecutorNodeView {
    pub id: String,
    pub service: String,
    pub address: String,
    /// `http` or `grpc`.
    pub protocol: String,
    pub labels: BTreeMap<String, String>,
    pub weight: u32,
    /// 0 = unbounded.
    pub capacity: u32,
    pub state: NodeStateView,
    /// The registration has not expired: the node is a candidate (unless draining).
    pub alive: bool,
    pub registered_at: DateTime<Utc>,
    pub last_heartbeat_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl ExecutorNodeView {
    fn of(r: NodeRecord, now: DateTime<Utc>) -> Self {
        ExecutorNodeView {
            alive: r.expires_at > now,
            id: r.id,
            service: r.service,
            address: r.address,
            protocol: r.protocol,
            labels: r.labels,
            weight: r.weight,
            capacity: r.capacity,
            state: r.state.into(),
            registered_at: r.registered_at,
            last_heartbeat_at: r.last_heartbeat_at,
            expires_at: r.expires_at,
        }
    }
}

/// Registered executor nodes, by id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ExecutorList {
    pub items: Vec<ExecutorNodeView>,
}

/// Register an executor node (or re-register it after a restart or a heartbeat answered `404`). Executor-facing.
#[utoipa::path(
    post,
    path = "/api/v1/executors",
    tag = "executor",
    operation_id = "register_executor",
    request_body(content = ExecutorRegistrationDoc, content_type = "application/json"),
    responses(
        (status = 200, description = "Registered; heartbeat within `heartbeat_interval_ms`", body = ExecutorLeaseView),
        (status = 400, description = "Invalid registration (the details name the field)", body = ErrorBody),
        (status = 409, description = "The id is taken by another live node or by a scheduler node", body = ErrorBody),
    )
)]
pub async fn register_executor(
    State(state): State<ApiState>,
    JsonBody(reg): JsonBody<ExecutorRegistration>,
) -> ApiResult<Json<ExecutorLeaseView>> {
    Ok(Json(state.scheduler.register_executor(reg).await?.into()))
}

/// Extend an executor node's registration. A `404` means the scheduler does not know the node: register again.
#[utoipa::path(
    post,
    path = "/api/v1/executors/{id}/heartbeat",
    tag = "executor",
    operation_id = "heartbeat_executor",
    params(("id" = String, Path, description = "Executor node id")),
    responses(
        (status = 200, description = "Extended", body = ExecutorLeaseView),
        (status = 404, description = "Unknown node: register again", body = ErrorBody),
    )
)]
pub async fn heartbeat_executor(
    State(state): State<ApiState>,
    NodeId(id): NodeId,
) -> ApiResult<Json<ExecutorLeaseView>> {
    Ok(Json(state.scheduler.heartbeat_executor(&id).await?.into()))
}

/// Drain an executor node: it gets no new work; what it runs still reports.
#[utoipa::path(
    post,
    path = "/api/v1/executors/{id}/drain",
    tag = "executor",
    operation_id = "drain_executor",
    params(("id" = String, Path, description = "Executor node id")),
    responses(
        (status = 200, description = "Draining", body = ExecutorLeaseView),
        (status = 404, description = "Unknown node", body = ErrorBody),
    )
)]
pub async fn drain_executor(State(state): State<ApiState>, NodeId(id): NodeId) -> ApiResult<Json<ExecutorLeaseView>> {
    Ok(Json(state.scheduler.drain_executor(&id).await?.into()))
}

/// Remove an executor node's registration (it leaves the execution cluster).
#[utoipa::path(
    delete,
    path = "/api/v1/executors/{id}",
    tag = "executor",
    operation_id = "deregister_executor",
    params(("id" = String, Path, description = "Executor node id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "Unknown node", body = ErrorBody),
    )
)]
pub async fn deregister_executor(State(state): State<ApiState>, NodeId(id): NodeId) -> ApiResult<StatusCode> {
    state.scheduler.deregister_executor(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// List registered executor nodes (alive or recently expired), optionally of one service.
#[utoipa::path(
    get,
    path = "/api/v1/executors",
    tag = "cluster",
    operation_id = "list_executors",
    params(("service" = Option<String>, Query, description = "Only nodes of this service")),
    responses(
        (status = 200, description = "Executor nodes by id", body = ExecutorList),
        (status = 400, description = "Unknown query parameter", body = ErrorBody),
    )
)]
pub async fn list_executors(State(state): State<ApiState>, mut q: QueryParams) -> ApiResult<Json<ExecutorList>> {
    let service = q.take("service")?;
    q.finish()?;
    let now = Utc::now();
    let nodes = state.scheduler.list_executors(service.as_deref()).await?;
    Ok(Json(ExecutorList { items: nodes.into_iter().map(|n| ExecutorNodeView::of(n, now)).collect() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented mirror must describe exactly the wire type's fields.
    #[test]
    fn documented_registration_mirrors_the_wire_type() {
        let reg = ExecutorRegistration {
            id: "w1".into(),
            service: "s".into(),
            address: "http://127.0.0.1:1".into(),
            protocol: rota_proto::ExecutorProtocol::Grpc,
            labels: [("zone".to_string(), "a".to_string())].into(),
            weight: 2,
            capacity: 3,
        };
        let wire = serde_json::to_value(&reg).unwrap();
        let doc: ExecutorRegistrationDoc = serde_json::from_value(wire.clone()).unwrap();
        assert_eq!(serde_json::to_value(&doc).unwrap(), wire);
    }
}
