//! The boundary between the scheduling core and the ways work reaches executor nodes.
//!
//! The core decides *what* to dispatch *where* and *when*; an [`Executor`] performs one dispatch and tells the
//! core what happened. Rota's own HTTP executor (and later gRPC and container executors) implement this trait in
//! `rota-executor`, exactly as a user's executor would; the core never names a concrete transport.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rota_proto::{RunResult, ShardInfo};
use serde_json::{Map, Value};

/// The executor node chosen for a dispatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEndpoint {
    /// Registry id of the node, or the address itself for static candidates.
    pub id: String,
    /// Base URL (`http://host:port`) or `host:port`.
    pub address: String,
}

/// One attempt of one run, sent to one node (or to a container runtime when `node` is `None`).
#[derive(Debug, Clone, PartialEq)]
pub struct Dispatch {
    pub run_id: i64,
    pub attempt: u32,
    pub namespace: String,
    pub name: String,
    pub scheduled_at: DateTime<Utc>,
    pub params: Map<String, Value>,
    pub shard: ShardInfo,
    /// The attempt times out at this instant.
    pub deadline: DateTime<Utc>,
    /// `deadline - now` at dispatch time; executors bound their own waiting by it.
    pub timeout: Duration,
    /// The task's target (`http`, `grpc` or `container`).
    pub target: rota_spec::Target,
    pub node: Option<NodeEndpoint>,
    /// Absolute URL the node may report to asynchronously (`…/api/v1/runs/{id}`), when the server knows its own
    /// public address.
    pub report_url: Option<String>,
}

impl Dispatch {
    pub fn task_key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// What happened to a dispatch.
#[derive(Debug, Clone, PartialEq)]
pub enum DispatchOutcome {
    /// The executor answered with a result (synchronous completion).
    Completed(RunResult),
    /// The executor accepted the work and will report later (HTTP `202`).
    Accepted,
    /// The dispatch itself failed: connection refused, a non-success status, a garbage body, … The message is
    /// safe to store and show (no secrets).
    Failed { error: String },
    /// No answer before the deadline.
    TimedOut,
}

/// Performs dispatches. Implementations must be cancel-safe and must bound every wait by `dispatch.timeout`.
#[async_trait]
pub trait Executor: Send + Sync + 'static {
    async fn dispatch(&self, dispatch: Dispatch) -> DispatchOutcome;

    /// Best-effort cancellation of an attempt that is running on `node` (e.g. a container to kill). The default
    /// does nothing: HTTP executors are told through the run's state when they report.
    async fn cancel(&self, _run_id: i64, _attempt: u32, _target: &rota_spec::Target) {}
}

/// Where executors that capture output themselves (containers, for instance) append a run's log lines.
///
/// Executors receive a sink at construction; the server wires one that writes to the store
/// ([`rota_store::RunStore::append_logs`]). Implementations must not fail the dispatch when logging fails.
#[async_trait]
pub trait RunLogSink: Send + Sync + 'static {
    /// Appends `lines` of `stream` (`stdout`, `stderr`, `executor`, …) to run `run_id`.
    async fn append(&self, run_id: i64, stream: &str, lines: Vec<String>);
}

/// A [`RunLogSink`] writing to a store.
pub struct StoreLogSink {
    store: std::sync::Arc<dyn rota_store::Store>,
}

impl StoreLogSink {
    pub fn new(store: std::sync::Arc<dyn rota_store::Store>) -> Self {
        StoreLogSink { store }
    }
}

#[async_trait]
impl RunLogSink for StoreLogSink {
    async fn append(&self, run_id: i64, stream: &str, lines: Vec<String>) {
        if lines.is_empty() {
            return;
        }
        if let Err(e) = self.store.append_logs(run_id, stream, &lines, Utc::now()).await {
            tracing::warn!(run_id, error = %e, "could not append run logs");
        }
    }
}
