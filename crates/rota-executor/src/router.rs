//! Routing dispatches to the executor registered for their target kind.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use rota_core::{Dispatch, DispatchOutcome, Executor};
use rota_spec::{Target, TargetKind};

use crate::grpc::{GrpcProtocol, GrpcProtocolConfig};
use crate::http::{BuildError, HttpExecutor, HttpExecutorConfig};
use crate::protocol::{Protocol, ProtocolExecutor};

/// An [`Executor`] that hands each dispatch to the executor registered for its target kind (`http`, `grpc`,
/// `container`). A kind without an executor fails its dispatches with
/// `"<kind> targets are not supported by this server yet"`.
#[derive(Clone, Default)]
pub struct Router {
    routes: HashMap<TargetKind, Arc<dyn Executor>>,
}

impl Router {
    /// A router with no executors: every dispatch fails as unsupported.
    pub fn new() -> Self {
        Router::default()
    }

    /// The server's standard set: [`HttpExecutor`] for `http` targets and [`GrpcProtocol`] (default settings)
    /// for `grpc` targets; containers are registered by the server when a runtime is configured.
    pub fn standard(http: HttpExecutorConfig) -> Result<Self, BuildError> {
        Router::standard_with(http, GrpcProtocolConfig::default())
    }

    /// [`Router::standard`] with explicit gRPC settings.
    pub fn standard_with(http: HttpExecutorConfig, grpc: GrpcProtocolConfig) -> Result<Self, BuildError> {
        Ok(Router::new()
            .with(TargetKind::Http, Arc::new(HttpExecutor::new(http)?))
            .with_protocol(TargetKind::Grpc, Arc::new(GrpcProtocol::new(grpc)?)))
    }

    /// Registers a wire [`Protocol`] for `kind` (wrapped in a [`ProtocolExecutor`], which bounds every call by
    /// the attempt's timeout), replacing any previous executor (builder style).
    pub fn with_protocol(self, kind: TargetKind, protocol: Arc<dyn Protocol>) -> Self {
        self.with(kind, Arc::new(ProtocolExecutor::new(protocol)))
    }

    /// Registers `executor` for `kind`, replacing any previous one (builder style).
    pub fn with(mut self, kind: TargetKind, executor: Arc<dyn Executor>) -> Self {
        self.insert(kind, executor);
        self
    }

    /// Registers `executor` for `kind`; returns the one it replaces.
    pub fn insert(&mut self, kind: TargetKind, executor: Arc<dyn Executor>) -> Option<Arc<dyn Executor>> {
        self.routes.insert(kind, executor)
    }

    /// The executor registered for `kind`.
    pub fn get(&self, kind: TargetKind) -> Option<&Arc<dyn Executor>> {
        self.routes.get(&kind)
    }

    /// Whether dispatches of `kind` have an executor.
    pub fn supports(&self, kind: TargetKind) -> bool {
        self.routes.contains_key(&kind)
    }

    fn route(&self, target: &Target) -> Result<&Arc<dyn Executor>, String> {
        let kind = target
            .kind()
            .ok_or_else(|| "the target must set exactly one of `http`, `grpc`, `container`".to_string())?;
        self.routes.get(&kind).ok_or_else(|| format!("{kind} targets are not supported by this server yet"))
    }
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kinds: Vec<_> = self.routes.keys().map(TargetKind::as_str).collect();
        kinds.sort_unstable();
        f.debug_struct("Router").field("kinds", &kinds).finish()
    }
}

#[async_trait]
impl Executor for Router {
    async fn dispatch(&self, dispatch: Dispatch) -> DispatchOutcome {
        match self.route(&dispatch.target) {
            Ok(executor) => executor.dispatch(dispatch).await,
            Err(error) => DispatchOutcome::Failed { error },
        }
    }

    async fn cancel(&self, run_id: i64, attempt: u32, target: &Target) {
        if let Ok(executor) = self.route(target) {
            executor.cancel(run_id, attempt, target).await;
        }
    }
}
