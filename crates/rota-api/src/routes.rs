//! The route table: every route of the API, with the permission it requires, registered in one place.
//!
//! Authentication and authorization are not enforced yet. When they are, they go into `authorize`, the one
//! middleware every route passes through after matching; it already knows the route's [`Permission`] (as data,
//! from [`route_table`]) and the path parameters (e.g. the namespace a permission is scoped to).

use axum::extract::{Request, State};
use axum::handler::Handler;
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{MethodFilter, MethodRouter, on};
use serde::Serialize;

use crate::{ApiState, cluster, executors, health, runs, tasks};

/// What a caller must be allowed to do to use a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// No authentication: probes and the OpenAPI document.
    Public,
    /// Read tasks and their versions (scoped to the task's namespace).
    TasksRead,
    /// Create, replace, delete, pause and resume tasks (namespace-scoped).
    TasksWrite,
    /// Fire tasks by hand (namespace-scoped).
    TasksTrigger,
    /// Read runs, attempts and logs.
    RunsRead,
    /// Cancel runs.
    RunsCancel,
    /// Executor nodes: report results and append logs (node tokens).
    ExecutorReport,
    /// Executor nodes: register, heartbeat, drain and leave the execution cluster (node credentials).
    ExecutorRegister,
    /// Read the state of the scheduler cluster: nodes, shard leases, lag (not namespace-scoped).
    ClusterRead,
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
    vec![
        route(Method::GET, "/healthz", Public, "healthz", health::healthz),
        route(Method::GET, "/readyz", Public, "readyz", health::readyz),
        route(Method::GET, "/openapi.json", Public, "openapi", health::openapi),
        route(Method::GET, "/api/v1/tasks", TasksRead, "list_tasks", tasks::list_tasks),
        route(Method::PUT, TASK, TasksWrite, "put_task", tasks::put_task),
        route(Method::GET, TASK, TasksRead, "get_task", tasks::get_task),
        route(Method::DELETE, TASK, TasksWrite, "delete_task", tasks::delete_task),
        route(Method::POST, "/api/v1/tasks/{namespace}/{name}/pause", TasksWrite, "pause_task", tasks::pause_task),
        route(Method::POST, "/api/v1/tasks/{namespace}/{name}/resume", TasksWrite, "resume_task", tasks::resume_task),
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
    ]
}

/// Every route of the API with its required permission.
pub fn route_table() -> Vec<RouteInfo> {
    routes().into_iter().map(|r| r.info).collect()
}

/// Runs for every matched route, before its handler. Today it only records the required permission; the
/// authentication/authorization layer goes here.
pub(crate) async fn authorize(State(permission): State<Permission>, mut req: Request, next: Next) -> Response {
    req.extensions_mut().insert(RequiredPermission(permission));
    next.run(req).await
}

/// Registers every route of the table on a router, each behind [`authorize`] with its permission.
pub(crate) fn register(mut router: axum::Router<ApiState>) -> axum::Router<ApiState> {
    for Route { info, handler } in routes() {
        let handler = handler.route_layer(middleware::from_fn_with_state(info.permission, authorize));
        router = router.route(info.path, handler);
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
