//! The gRPC transport: tonic's HTTP/2 server with `rota.executor.v1.Executor` in front of
//! [`ExecutorNode::handle`].
//!
//! * `Run`: the request is converted with `RunEnvelope::try_from` (a failure is `INVALID_ARGUMENT`, naming the
//!   field); the handler is found by the task's name (there is no path); the answer is a `RunResponse` with
//!   `result` (sync) or `accepted` (async: reported later over HTTP), or `UNAVAILABLE` while draining.

use std::future::Future;

use rota_proto::grpc::v1;
use rota_proto::{ExecutorProtocol, HEADER_ATTEMPT, HEADER_RUN_ID, RunEnvelope};
use tonic::{Request, Response, Status};

use super::serve::{Listen, ServerFuture, StopSignal};
use super::{ExecutorError, ExecutorNode};

/// The node as a `rota.executor.v1.Executor` service.
struct Service {
    node: ExecutorNode,
}

#[tonic::async_trait]
impl v1::executor_server::Executor for Service {
    async fn run(&self, request: Request<v1::RunRequest>) -> Result<Response<v1::RunResponse>, Status> {
        let body = prost::Message::encode_to_vec(request.get_ref());
        let md = request.metadata();
        let path = format!("/{}/{}", rota_proto::grpc::SERVICE, rota_proto::grpc::METHOD_RUN);
        if let Err(e) = self.node.verify_dispatch("POST", &path, &body, |n| md.get(n).and_then(|v| v.to_str().ok())) {
            tracing::warn!(node = self.node.id(), error = %e, "refused an unauthenticated gRPC dispatch");
            return Err(Status::unauthenticated(format!("dispatch refused: {e}")));
        }
        let meta = |key: &str| request.metadata().get(key).and_then(|v| v.to_str().ok()).map(str::to_string);
        let (run_id, attempt) = (meta(HEADER_RUN_ID), meta(HEADER_ATTEMPT));
        let envelope = RunEnvelope::try_from(request.into_inner()).map_err(|e| {
            tracing::warn!(run_id = run_id.as_deref().unwrap_or("?"), attempt = attempt.as_deref().unwrap_or("?"),
                error = %e, "refused a gRPC run request");
            Status::invalid_argument(format!("the request is not a valid run envelope: {e}"))
        })?;
        match self.node.handle(envelope, None).await.into_run_answer() {
            Some(answer) => Ok(Response::new(answer.into())),
            None => {
                Err(Status::unavailable(format!("executor node {} is draining and takes no new runs", self.node.id())))
            }
        }
    }
}

impl ExecutorNode {
    /// Serves the node over gRPC (`rota.executor.v1.Executor/Run`, see `docs/protocols.md`) until `shutdown`
    /// resolves, then drains: the lifecycle of [`serve_http`](Self::serve_http), with the registration saying
    /// `protocol: grpc` and address `http://host:port` (the [advertised](super::ExecutorNodeBuilder::advertise)
    /// URL, else the listener's address).
    ///
    /// Dispatches are routed by the task's name (`namespace/name` → the handler `name`, else the handler
    /// `namespace/name`; a [declared task](super::ExecutorNodeBuilder::task_for) goes to the handler it was
    /// declared with). A request that does not convert to a [`RunEnvelope`] is answered `INVALID_ARGUMENT`, a
    /// dispatch while draining `UNAVAILABLE`. Declared tasks that leave `spec.target` out get
    /// `target: {grpc: {}}` (the Rota executor service). Asynchronous results and logs still go to the
    /// scheduler over HTTP (`report_url`).
    pub async fn serve_grpc(
        &self,
        listen: impl Into<Listen>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ExecutorError> {
        let service = v1::executor_server::ExecutorServer::new(Service { node: self.clone() });
        let tls = self.tls_config();
        let server = move |listener: tokio::net::TcpListener, stop: StopSignal| -> ServerFuture {
            Box::pin(async move {
                if let Some(tls) = tls {
                    let app = tonic::service::Routes::new(service).into_axum_router();
                    return rota_tls::serve(listener, tls, app, stop).await.map_err(ExecutorError::Serve);
                }
                let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
                tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming_shutdown(incoming, stop)
                    .await
                    .map_err(|e| ExecutorError::Serve(std::io::Error::other(e)))
            })
        };
        self.serve_with(listen.into(), ExecutorProtocol::Grpc, shutdown, server).await
    }
}
