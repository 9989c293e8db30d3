//! The [`Protocol`] trait: one implementation per wire protocol spoken with executor nodes.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use rota_core::{Dispatch, DispatchOutcome, Executor};
use rota_spec::Target;

/// A wire protocol between the scheduler and executor nodes: sends one attempt ([`Dispatch`]) to the node the
/// core chose (`dispatch.node`) and turns the node's answer into a [`DispatchOutcome`].
///
/// Rota's own protocols implement it ([`crate::HttpExecutor`] for `target.http`, [`crate::GrpcProtocol`] for
/// `target.grpc`), exactly as another RPC stack would; register one in the [`crate::Router`] with
/// [`crate::Router::with_protocol`], which wraps it in a [`ProtocolExecutor`].
///
/// Contract:
///
/// * [`ProtocolExecutor`] calls `send` only with a non-zero `dispatch.timeout` and bounds the whole call by it
///   (reporting [`DispatchOutcome::TimedOut`] and dropping the future when it runs out), so `send` must be
///   cancel-safe; it should still pass the deadline on to the node when the protocol can (a gRPC deadline, for
///   instance) and may return `TimedOut` itself when the node says the deadline passed.
/// * Failures are `Failed { error }` with a short message that is safe to store and show: name the node by its
///   origin (`scheme://host:port`), never a path, a query, credentials or header values.
#[async_trait]
pub trait Protocol: Send + Sync + 'static {
    /// Short name used in logs (`http`, `grpc`, …).
    fn name(&self) -> &'static str;

    /// Sends `dispatch` to its node and waits for the answer.
    async fn send(&self, dispatch: &Dispatch) -> DispatchOutcome;

    /// Best-effort cancellation of an attempt in flight; the default does nothing (nodes learn about a
    /// cancelled run when they report).
    async fn cancel(&self, _run_id: i64, _attempt: u32, _target: &Target) {}
}

/// The [`Executor`] of a [`Protocol`]: a zero timeout is [`DispatchOutcome::TimedOut`] without calling, and
/// every call is bounded by `dispatch.timeout`.
#[derive(Clone)]
pub struct ProtocolExecutor {
    protocol: Arc<dyn Protocol>,
}

impl ProtocolExecutor {
    pub fn new(protocol: Arc<dyn Protocol>) -> Self {
        ProtocolExecutor { protocol }
    }

    pub fn protocol(&self) -> &Arc<dyn Protocol> {
        &self.protocol
    }
}

impl fmt::Debug for ProtocolExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProtocolExecutor").field("protocol", &self.protocol.name()).finish()
    }
}

#[async_trait]
impl Executor for ProtocolExecutor {
    async fn dispatch(&self, dispatch: Dispatch) -> DispatchOutcome {
        if dispatch.timeout.is_zero() {
            return DispatchOutcome::TimedOut;
        }
        let outcome = tokio::time::timeout(dispatch.timeout, self.protocol.send(&dispatch))
            .await
            .unwrap_or(DispatchOutcome::TimedOut);
        tracing::debug!(
            run_id = dispatch.run_id,
            attempt = dispatch.attempt,
            protocol = self.protocol.name(),
            ?outcome,
            "dispatch"
        );
        outcome
    }

    async fn cancel(&self, run_id: i64, attempt: u32, target: &Target) {
        self.protocol.cancel(run_id, attempt, target).await;
    }
}
