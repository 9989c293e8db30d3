//! The HTTP transport: an axum server in front of [`ExecutorNode::handle`].
//!
//! * `POST` on any path: the body is a [`RunEnvelope`]; the answer is `200` + [`RunResult`](rota_proto::RunResult)
//!   (sync), `202` (async: reported later), `503` (draining) or `400` (not JSON, not an envelope).
//! * `GET /healthz`: `200 {"status":"ok"}`, or `503 {"status":"draining"}` while draining.
//! * With [signing keys](super::ExecutorNodeBuilder::signing_key), a dispatch (any method other than
//!   `GET /healthz`) whose signature is missing, wrong, outside the window or replayed is answered `401`
//!   (`unauthenticated`) before anything else; with [TLS](super::ExecutorNodeBuilder::tls) the server speaks
//!   HTTPS (optionally requiring a client certificate).
//!
//! Errors use the scheduler's JSON error shape `{"error":{"code","message","details":[]}}`.

use std::future::{Future, IntoFuture};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use rota_proto::{ExecutorProtocol, RunEnvelope};
use serde_json::json;

use super::serve::{Listen, ServerFuture, StopSignal};
use super::{Answer, ExecutorError, ExecutorNode};

impl ExecutorNode {
    /// Serves the node over HTTP until `shutdown` resolves, then drains.
    ///
    /// In order: binds (or takes) the listener and starts answering dispatches; registers with the scheduler
    /// (`protocol: http`; retrying while it is unreachable or failing with `5xx`; a refusal such as `400`/`409`
    /// is returned as [`ExecutorError::Register`]); applies the declared tasks; heartbeats. When `shutdown`
    /// resolves: tells the scheduler the node drains, answers `503` to new dispatches, waits for running
    /// handlers and pending reports (at most the drain timeout), deregisters and stops serving. Without a
    /// configured scheduler it only serves and drains locally.
    pub async fn serve_http(
        &self,
        listen: impl Into<Listen>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ExecutorError> {
        let node = self.clone();
        let server = move |listener: tokio::net::TcpListener, stop: StopSignal| -> ServerFuture {
            Box::pin(async move {
                match node.tls_config() {
                    Some(tls) => rota_tls::serve(listener, tls, router(node), stop).await.map_err(ExecutorError::Serve),
                    None => axum::serve(listener, router(node))
                        .with_graceful_shutdown(stop)
                        .into_future()
                        .await
                        .map_err(ExecutorError::Serve),
                }
            })
        };
        self.serve_with(listen.into(), ExecutorProtocol::Http, shutdown, server).await
    }
}

fn router(node: ExecutorNode) -> Router {
    Router::new().route("/healthz", axum::routing::get(health).post(dispatch)).fallback(dispatch).with_state(node)
}

async fn health(State(node): State<ExecutorNode>) -> Response {
    if node.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "draining"}))).into_response()
    } else {
        Json(json!({"status": "ok"})).into_response()
    }
}

fn error(status: StatusCode, code: &str, message: String) -> Response {
    (status, Json(json!({"error": {"code": code, "message": message, "details": []}}))).into_response()
}

async fn dispatch(
    State(node): State<ExecutorNode>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Err(e) = node.verify_dispatch(method.as_str(), path, &body, header) {
        tracing::warn!(node = node.id(), error = %e, "refused an unauthenticated dispatch");
        return error(StatusCode::UNAUTHORIZED, "unauthenticated", format!("dispatch refused: {e}"));
    }
    if method != Method::POST {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("executor nodes take run envelopes by POST, not {method}"),
        );
    }
    let envelope = match serde_json::from_slice::<RunEnvelope>(&body) {
        Ok(e) => e,
        Err(e) if e.is_data() => {
            return error(StatusCode::BAD_REQUEST, "invalid_argument", format!("the body is not a run envelope: {e}"));
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_argument", format!("the body is not JSON: {e}")),
    };
    match node.handle(envelope, Some(uri.path())).await {
        Answer::Completed(result) => Json(result).into_response(),
        Answer::Accepted => StatusCode::ACCEPTED.into_response(),
        Answer::Draining => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("executor node {} is draining and takes no new runs", node.id()),
        ),
    }
}
