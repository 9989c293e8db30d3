//! The route table: every route of the API, with the permission it requires, registered in one place.
//!
//! Every route passes `authorize`, the one middleware that authenticates the caller, works out what the request
//! touches (namespace, run, executor service), asks the configured [`Authorizer`](crate::auth::Authorizer) and
//! writes the audit log; see [`crate::auth`]. Handlers never check permissions themselves, except the token and
//! role-binding handlers, which narrow what a namespace admin may grant.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, RawPathParams, Request, State};
use axum::handler::Handler;
use axum::http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use chrono::Utc;
use rota_store::{NewAuditEntry, NodeKind, Store};
use serde::Serialize;
use serde_json::{Value, json};

use crate::auth::{AccessRequest, AuthError, Credentials, Decision, ExecutorTarget, Principal, Target};
use crate::error::{ApiError, ErrorCode};
use crate::extract::QueryParams;
use crate::{ApiState, access, cluster, executors, health, runs, tasks};

/// What a caller must be allowed to do to use a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// No authentication: probes and the OpenAPI document.
    Public,
    /// Read tasks and their versions (scoped to the task's namespace).
    TasksRead,
    /// Create, replace and delete tasks (namespace-scoped; role `editor`).
    TasksWrite,
    /// Fire tasks by hand (namespace-scoped; role `operator`).
    TasksTrigger,
    /// Pause and resume tasks (namespace-scoped; role `operator`).
    TasksPause,
    /// Read runs, attempts and logs.
    RunsRead,
    /// Cancel runs.
    RunsCancel,
    /// Executor nodes: report results and append logs (node tokens).
    ExecutorReport,
    /// Executor nodes: register, heartbeat, drain and leave the execution cluster (node credentials).
    ExecutorRegister,
    /// Read the state of the scheduler cluster: nodes, shard leases, lag, executor nodes (cluster-wide `viewer`).
    ClusterRead,
    /// Create, list and revoke API tokens (`admin` of the namespaces granted; executor credentials: `*:admin`).
    TokensManage,
    /// Create, list and delete role bindings (`admin` of the binding's namespace).
    RolesManage,
    /// Read the audit log (`*:admin`).
    AuditRead,
}

/// The permission of the matched route, inserted into the request's extensions by the `authorize` middleware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequiredPermission(pub Permission);

/// One route of the API, as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    pub method: Method,
    /// axum path syntax (`/api/v1/tasks/{namespace}/{name}`), identical to the OpenAPI path.
    pub path: &'static str,
    pub permission: Permission,
    /// The OpenAPI `operationId`.
    pub operation_id: &'static str,
}

pub(crate) struct Route {
    pub info: RouteInfo,
    pub handler: MethodRouter<ApiState>,
}

fn route<H, T>(
    method: Method,
    path: &'static str,
    permission: Permission,
    operation_id: &'static str,
    handler: H,
) -> Route
where
    H: Handler<T, ApiState>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).expect("the table uses standard methods");
    Route { info: RouteInfo { method, path, permission, operation_id }, handler: on(filter, handler) }
}

pub(crate) fn routes() -> Vec<Route> {
    use Permission::*;
    const TASK: &str = "/api/v1/tasks/{namespace}/{name}";
    const RUN: &str = "/api/v1/runs/{id}";
    const BINDING: &str = "/api/v1/role-bindings/{namespace}/{kind}/{subject}";
    vec![
        route(Method::GET, "/healthz", Public, "healthz", health::healthz),
        route(Method::GET, "/readyz", Public, "readyz", health::readyz),
        route(Method::GET, "/openapi.json", Public, "openapi", health::openapi),
        route(Method::GET, "/api/v1/tasks", TasksRead, "list_tasks", tasks::list_tasks),
        route(Method::PUT, TASK, TasksWrite, "put_task", tasks::put_task),
        route(Method::GET, TASK, TasksRead, "get_task", tasks::get_task),
        route(Method::DELETE, TASK, TasksWrite, "delete_task", tasks::delete_task),
        route(Method::POST, "/api/v1/tasks/{namespace}/{name}/pause", TasksPause, "pause_task", tasks::pause_task),
        route(Method::POST, "/api/v1/tasks/{namespace}/{name}/resume", TasksPause, "resume_task", tasks::resume_task),
        route(
            Method::POST,
            "/api/v1/tasks/{namespace}/{name}/trigger",
            TasksTrigger,
            "trigger_task",
            tasks::trigger_task,
        ),
        route(
            Method::GET,
            "/api/v1/tasks/{namespace}/{name}/versions",
            TasksRead,
            "list_task_versions",
            tasks::list_task_versions,
        ),
        route(Method::GET, "/api/v1/runs", RunsRead, "list_runs", runs::list_runs),
        route(Method::GET, RUN, RunsRead, "get_run", runs::get_run),
        route(Method::GET, "/api/v1/runs/{id}/logs", RunsRead, "read_run_logs", runs::read_logs),
        route(Method::POST, "/api/v1/runs/{id}/cancel", RunsCancel, "cancel_run", runs::cancel_run),
        route(Method::POST, "/api/v1/runs/{id}/report", ExecutorReport, "report_run", runs::report_run),
        route(Method::POST, "/api/v1/runs/{id}/logs", ExecutorReport, "append_run_logs", runs::append_logs),
        route(Method::GET, "/api/v1/cluster", ClusterRead, "get_cluster", cluster::get_cluster),
        route(Method::GET, "/api/v1/executors", ClusterRead, "list_executors", executors::list_executors),
        route(Method::POST, "/api/v1/executors", ExecutorRegister, "register_executor", executors::register_executor),
        route(
            Method::POST,
            "/api/v1/executors/{id}/heartbeat",
            ExecutorRegister,
            "heartbeat_executor",
            executors::heartbeat_executor,
        ),
        route(
            Method::POST,
            "/api/v1/executors/{id}/drain",
            ExecutorRegister,
            "drain_executor",
            executors::drain_executor,
        ),
        route(
            Method::DELETE,
            "/api/v1/executors/{id}",
            ExecutorRegister,
            "deregister_executor",
            executors::deregister_executor,
        ),
        route(Method::POST, "/api/v1/tokens", TokensManage, "create_token", access::create_token),
        route(Method::GET, "/api/v1/tokens", TokensManage, "list_tokens", access::list_tokens),
        route(Method::DELETE, "/api/v1/tokens/{id}", TokensManage, "revoke_token", access::revoke_token),
        route(Method::GET, "/api/v1/role-bindings", RolesManage, "list_role_bindings", access::list_role_bindings),
        route(Method::PUT, BINDING, RolesManage, "put_role_binding", access::put_role_binding),
        route(Method::DELETE, BINDING, RolesManage, "delete_role_binding", access::delete_role_binding),
        route(Method::GET, "/api/v1/audit", AuditRead, "list_audit", access::list_audit),
    ]
}

/// Every route of the API with its required permission.
pub fn route_table() -> Vec<RouteInfo> {
    routes().into_iter().map(|r| r.info).collect()
}

/// Operations not written to the audit log although they change state: liveness signals, which arrive every few
/// seconds from every executor node and would drown everything else.
pub const AUDIT_EXEMPT: &[&str] = &["heartbeat_executor"];

/// List routes whose scope is the `namespace` query parameter; without one they need a cluster-wide grant.
const NAMESPACE_LISTS: &[&str] = &["list_tasks", "list_runs", "list_role_bindings"];

/// Runs for every matched route, before its handler: records the required permission and, for non-public
/// routes, authenticates, authorizes and audits (see [`crate::auth`]).
pub(crate) async fn authorize(
    State((state, info)): State<(ApiState, RouteInfo)>,
    mut req: Request,
    next: Next,
) -> Response {
    req.extensions_mut().insert(RequiredPermission(info.permission));
    if info.permission == Permission::Public {
        return next.run(req).await;
    }
    let source: Option<SocketAddr> = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let ip = source.map(|s| s.ip());
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let audit = Audit { store: &*state.store, info: &info, path: &path, method: &method, source };

    if let Some(left) = state.auth.limiter.blocked(ip) {
        let secs = left.as_secs().max(1);
        let mut res = ApiError::new(
            ErrorCode::RateLimited,
            format!("too many failed authentication attempts from this address; retry in {secs}s"),
        )
        .into_response();
        res.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
        return res;
    }

    let principal = match authenticate(&state, req.headers()).await {
        Ok(p) => p,
        Err(AuthError::Unavailable(m)) => return ApiError::new(ErrorCode::Unavailable, m).into_response(),
        Err(AuthError::Unauthenticated(message)) => {
            if state.auth.limiter.record_failure(ip) {
                tracing::warn!(source = ?ip, "too many failed authentication attempts; refusing the address for a while");
            }
            audit.denied(None, ErrorCode::Unauthenticated).await;
            let mut res = ApiError::new(ErrorCode::Unauthenticated, message).into_response();
            res.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"rota\""));
            return res;
        }
    };

    let (mut req, target) = match resolve_target(&state, &info, req).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if let Some(target) = target {
        let access = AccessRequest {
            permission: info.permission,
            operation_id: info.operation_id,
            method: method.to_string(),
            path: path.clone(),
            target,
        };
        if let Decision::Deny(mut message) = state.auth.authorizer.authorize(&principal, &access).await {
            if access.target == Target::Cluster && NAMESPACE_LISTS.contains(&info.operation_id) {
                message.push_str("; pass namespace=<namespace> to list one namespace");
            }
            audit.denied(Some(&principal), ErrorCode::Forbidden).await;
            return ApiError::new(ErrorCode::Forbidden, message).into_response();
        }
    }
    req.extensions_mut().insert(principal.clone());
    let response = next.run(req).await;
    let mutation = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    if mutation && response.status().is_success() && !AUDIT_EXEMPT.contains(&info.operation_id) {
        audit.append(&principal.id, json!({"outcome": "ok", "status": response.status().as_u16()})).await;
    }
    response
}

async fn authenticate(state: &ApiState, headers: &axum::http::HeaderMap) -> Result<Principal, AuthError> {
    let credentials = Credentials::from_headers(headers)?;
    if credentials.bearer.is_none() {
        return Err(AuthError::unauthenticated(
            "this endpoint needs credentials: send `Authorization: Bearer <token>` (an API token or an OIDC token)",
        ));
    }
    state
        .auth
        .authenticator
        .authenticate(&credentials)
        .await?
        .ok_or_else(|| AuthError::unauthenticated("the bearer token is not a credential this server accepts"))
}

/// Writes audit entries for one request. Failures to write are logged, never answered.
struct Audit<'a> {
    store: &'a dyn Store,
    info: &'a RouteInfo,
    path: &'a str,
    method: &'a Method,
    source: Option<SocketAddr>,
}

impl Audit<'_> {
    async fn denied(&self, principal: Option<&Principal>, code: ErrorCode) {
        let actor = principal.map_or("anonymous", |p| p.id.as_str());
        self.append(actor, json!({"outcome": "denied", "status": code.status().as_u16(), "reason": code.as_str()}))
            .await;
    }

    async fn append(&self, actor: &str, mut detail: Value) {
        detail["method"] = Value::String(self.method.to_string());
        let entry = NewAuditEntry {
            at: Utc::now(),
            actor: actor.chars().take(255).collect(),
            action: self.info.operation_id.to_string(),
            resource: self.path.chars().take(512).collect(),
            source: self.source.map(|s| s.to_string()),
            detail,
        };
        if let Err(e) = self.store.append_audit(entry).await {
            tracing::error!(error = %e, action = self.info.operation_id, "cannot append to the audit log");
        }
    }
}

/// What the request touches. `None`: nothing to check beyond authentication (the addressed run does not exist,
/// and the handler answers `404`).
async fn resolve_target(
    state: &ApiState,
    info: &RouteInfo,
    req: Request,
) -> Result<(Request, Option<Target>), ApiError> {
    let (mut parts, body) = req.into_parts();
    let params: Vec<(String, String)> = match RawPathParams::from_request_parts(&mut parts, &()).await {
        Ok(p) => p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        Err(_) => Vec::new(),
    };
    let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let mut body = Some(body);
    let mut bytes = None;
    if matches!(info.operation_id, "register_executor" | "report_run") {
        let b = axum::body::to_bytes(body.take().expect("body"), state.config.max_body_bytes).await.map_err(|_| {
            ApiError::new(ErrorCode::PayloadTooLarge, "the request body is larger than the server accepts")
        })?;
        bytes = Some(b);
    }
    let body_json = || bytes.as_ref().and_then(|b| serde_json::from_slice::<Value>(b).ok());
    let target = if let Some(ns) = param("namespace") {
        Some(Target::Namespace(ns))
    } else {
        match (info.permission, info.operation_id) {
            (_, "list_tasks" | "list_runs" | "list_role_bindings") => {
                let mut q = QueryParams::parse(parts.uri.query().unwrap_or(""));
                let task_ns = q.take("task")?.and_then(|t| t.split_once('/').map(|(ns, _)| ns.to_string()));
                let ns = q.take("namespace")?;
                Some(match task_ns.or(ns) {
                    Some(ns) => Target::Namespace(ns),
                    None => Target::Cluster,
                })
            }
            (Permission::RunsRead | Permission::RunsCancel | Permission::ExecutorReport, _) => {
                let run = match param("id").and_then(|id| id.parse::<i64>().ok()) {
                    Some(id) => state.store.get_run(id).await?,
                    None => None,
                };
                match run {
                    None => None,
                    Some(run) if info.permission != Permission::ExecutorReport => {
                        Some(Target::Namespace(run.namespace))
                    }
                    Some(run) => {
                        // The services of the nodes the current attempt went to (static candidates are not
                        // registered nodes: only the cluster admin reports for them) ...
                        let mut services = BTreeSet::new();
                        for a in state.store.list_attempts(run.id).await? {
                            if a.attempt == run.attempts
                                && let Some(node) = state.store.get_node(&a.node).await?
                                && node.kind == NodeKind::Executor
                            {
                                services.insert(node.service);
                            }
                        }
                        // ... and, when the report names its node, that node's service among them.
                        let named = body_json().and_then(|v| v.get("node").and_then(Value::as_str).map(str::to_string));
                        if let Some(n) = named {
                            let of_named = match state.store.get_node(&n).await? {
                                Some(node) if node.kind == NodeKind::Executor => Some(node.service),
                                _ => None,
                            };
                            services.retain(|s| of_named.as_ref() == Some(s));
                        }
                        Some(Target::Executor(ExecutorTarget {
                            namespace: Some(run.namespace),
                            services,
                            unresolved: false,
                        }))
                    }
                }
            }
            (Permission::ExecutorRegister, "register_executor") => {
                let service = body_json().and_then(|v| v.get("service").and_then(Value::as_str).map(str::to_string));
                Some(Target::Executor(match service {
                    Some(s) => ExecutorTarget { services: [s].into(), ..ExecutorTarget::default() },
                    // The handler rejects a registration without a service.
                    None => ExecutorTarget { unresolved: true, ..ExecutorTarget::default() },
                }))
            }
            (Permission::ExecutorRegister, _) => {
                let node = match param("id") {
                    Some(id) => state.store.get_node(&id).await?,
                    None => None,
                };
                Some(Target::Executor(match node {
                    Some(n) if n.kind == NodeKind::Executor => {
                        ExecutorTarget { services: [n.service].into(), ..ExecutorTarget::default() }
                    }
                    _ => ExecutorTarget { unresolved: true, ..ExecutorTarget::default() },
                }))
            }
            (Permission::TokensManage | Permission::RolesManage, _) => Some(Target::AnyNamespace),
            _ => Some(Target::Cluster),
        }
    };
    let body = match bytes {
        Some(b) => Body::from(b),
        None => body.take().expect("body not consumed"),
    };
    Ok((Request::from_parts(parts, body), target))
}

/// Registers every route of the table on a router, each behind [`authorize`] with its route info.
pub(crate) fn register(mut router: axum::Router<ApiState>, state: &ApiState) -> axum::Router<ApiState> {
    for Route { info, handler } in routes() {
        let path = info.path;
        let handler = handler.route_layer(middleware::from_fn_with_state((state.clone(), info), authorize));
        router = router.route(path, handler);
    }
    router
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table and the OpenAPI document describe the same routes.
    #[test]
    fn every_route_is_documented_with_its_operation_id() {
        let doc = crate::openapi::document();
        let paths = doc["paths"].as_object().unwrap();
        let table = route_table();
        for r in &table {
            let op = &paths[r.path][r.method.as_str().to_ascii_lowercase()];
            assert_eq!(op["operationId"], r.operation_id, "{} {}", r.method, r.path);
        }
        let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
        assert_eq!(documented, table.len(), "the document has operations the table lacks");
    }
}
