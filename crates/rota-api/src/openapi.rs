//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` annotations and the view types, with
//! the task specification's JSON Schema embedded as the `TaskDocument` schema (its definitions hoisted to
//! `components.schemas` as `TaskDocument.<Name>`).
//!
//! The committed snapshot `crates/rota-api/openapi.json` is compared with [`document`] by `tests/openapi.rs`;
//! `ROTA_BLESS=1` rewrites it.

use std::sync::OnceLock;

use serde_json::{Map, Value};
use utoipa::OpenApi;

use crate::access::*;
use crate::error::{ErrorBody, ErrorCode, ErrorDetail, ErrorInfo};
use crate::executors::*;
use crate::routes::{Permission, route_table};
use crate::views::*;
use crate::{access, cluster, executors, health, runs, tasks};

/// Prefix of the hoisted task-spec schema definitions.
const SPEC_PREFIX: &str = "TaskDocument.";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Rota management API",
        version = "1",
        description = "Manage tasks and runs of the Rota scheduler and inspect its cluster. Every error has the body \
            `{\"error\": {\"code\", \"message\", \"details\": [{\"path\", \"message\"}]}}` with a stable `code`. \
            Every operation except the probes and this document needs `Authorization: Bearer <token>`: a Rota API \
            token (`rota_<id>_<secret>`) or a JWT of the configured OIDC issuer.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        tasks::put_task,
        tasks::list_tasks,
        tasks::get_task,
        tasks::delete_task,
        tasks::pause_task,
        tasks::resume_task,
        tasks::trigger_task,
        tasks::list_task_versions,
        runs::list_runs,
        runs::get_run,
        runs::read_logs,
        runs::cancel_run,
        runs::report_run,
        runs::append_logs,
        cluster::get_cluster,
        executors::list_executors,
        executors::register_executor,
        executors::heartbeat_executor,
        executors::drain_executor,
        executors::deregister_executor,
        access::create_token,
        access::list_tokens,
        access::revoke_token,
        access::list_role_bindings,
        access::put_role_binding,
        access::delete_role_binding,
        access::list_audit,
        health::healthz,
        health::readyz,
        health::openapi,
    ),
    components(schemas(
        ErrorBody, ErrorInfo, ErrorDetail, ErrorCode,
        TaskDocument, TaskView, TaskList, TaskVersionView, TaskVersionList,
        RunView, RunList, RunDetail, RunStateView, TriggerView, AttemptView, AttemptStateView,
        LogLineView, LogPage, TriggerRequest, CancelRequest, AppendLogsResponse,
        RunReportDoc, LogAppendDoc, ResultStatusDoc, HealthView,
        ClusterView, ClusterNodeView, NodeStateView,
        ExecutorRegistrationDoc, ExecutorProtocolDoc, ExecutorLeaseView, ExecutorNodeView, ExecutorList,
        CreateTokenRequest, TokenView, CreatedToken, TokenList, RoleBindingRequest, RoleBindingView,
        RoleBindingList, AuditEntryView, AuditList,
    )),
    tags(
        (name = "tasks", description = "Task documents and their lifecycle"),
        (name = "runs", description = "Run history, logs and cancellation"),
        (name = "executor", description = "Called by executor nodes: registration, heartbeats, asynchronous results and logs"),
        (name = "cluster", description = "The scheduler nodes sharing the store and the shards they hold"),
        (name = "access", description = "API tokens, role bindings and the audit log"),
        (name = "health", description = "Probes and this document"),
    )
)]
struct ApiDoc;

/// The OpenAPI document (computed once).
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build)
}

/// The OpenAPI document as pretty JSON with a trailing newline (the snapshot's format).
pub fn document_pretty() -> String {
    let mut s = serde_json::to_string_pretty(document()).expect("JSON values serialize");
    s.push('\n');
    s
}

fn build() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serializes");
    embed_task_schema(&mut doc, rota_spec::json_schema());
    add_security(&mut doc);
    doc
}

/// The bearer scheme, and on every operation its security requirement and the 401/403/429 answers (public
/// operations: none).
fn add_security(doc: &mut Value) {
    doc["components"]["securitySchemes"] = serde_json::json!({
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "A Rota API token (`rota_<id>_<secret>`) or a JWT of the configured OIDC issuer"
        }
    });
    let error = |description: &str| {
        serde_json::json!({
            "description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
        })
    };
    for r in route_table() {
        let Some(op) = doc.pointer_mut(&format!(
            "/paths/{}/{}",
            r.path.replace('~', "~0").replace('/', "~1"),
            r.method.as_str().to_ascii_lowercase()
        )) else {
            continue;
        };
        if r.permission == Permission::Public {
            op["security"] = serde_json::json!([]);
            continue;
        }
        op["security"] = serde_json::json!([{"bearer": []}]);
        let responses = op["responses"].as_object_mut().expect("operations have responses");
        responses.insert("401".into(), error("Missing, malformed, unknown, expired or revoked credentials"));
        responses.insert("403".into(), error("The caller's role or credential scope does not allow this"));
        responses.insert("429".into(), error("Too many failed authentication attempts from this address"));
        sort_keys(responses);
    }
}

/// Replaces `components.schemas.TaskDocument` with the task spec's JSON Schema, hoisting its `$defs`.
fn embed_task_schema(doc: &mut Value, mut spec: Value) {
    let defs = spec
        .as_object_mut()
        .and_then(|o| {
            o.remove("$schema");
            o.remove("$defs").or_else(|| o.remove("definitions"))
        })
        .and_then(|d| match d {
            Value::Object(m) => Some(m),
            _ => None,
        })
        .unwrap_or_default();
    rewrite_refs(&mut spec);
    let schemas = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
        .expect("the document has component schemas");
    schemas.insert("TaskDocument".into(), spec);
    for (name, mut schema) in defs {
        rewrite_refs(&mut schema);
        schemas.insert(format!("{SPEC_PREFIX}{name}"), schema);
    }
    sort_keys(schemas);
}

fn rewrite_refs(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, child) in m.iter_mut() {
                if k == "$ref"
                    && let Value::String(r) = child
                {
                    for from in ["#/$defs/", "#/definitions/"] {
                        if let Some(name) = r.strip_prefix(from) {
                            *r = format!("#/components/schemas/{SPEC_PREFIX}{name}");
                        }
                    }
                    if r == "#" {
                        *r = "#/components/schemas/TaskDocument".into();
                    }
                } else {
                    rewrite_refs(child);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}

fn sort_keys(m: &mut Map<String, Value>) {
    let mut entries: Vec<_> = std::mem::take(m).into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    m.extend(entries);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect_refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, c) in m {
                    match (k.as_str(), c) {
                        ("$ref", Value::String(r)) => out.push(r.clone()),
                        _ => collect_refs(c, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|c| collect_refs(c, out)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        assert_eq!(doc["openapi"].as_str().map(|s| &s[..3]), Some("3.1"));
        let mut refs = Vec::new();
        collect_refs(doc, &mut refs);
        assert!(!refs.is_empty());
        for r in refs {
            let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("external reference {r}"));
            assert!(doc.pointer(pointer).is_some(), "dangling reference {r}");
        }
        assert!(doc.pointer("/components/schemas/TaskDocument/properties/spec").is_some());
    }
}
