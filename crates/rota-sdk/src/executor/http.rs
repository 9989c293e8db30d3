//! The HTTP transport: an axum server in front of [`ExecutorNode::handle`].
//!
//! * `POST` on any path: the body is a [`RunEnvelope`]; the answer is `200` + [`RunResult`](rota_proto::RunResult)
//!   (sync), `202` (async: reported later), `503` (draining) or `400` (not JSON, not an envelope).
//! * `GET /healthz`: `200 {"status":"ok"}`, or `503 {"status":"draining"}` while draining.
//!
//! Errors use the scheduler's JSON error shape `{"error":{"code","message","details":[]}}`.

use std::future::{Future, IntoFuture};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use rota_proto::RunEnvelope;
use serde_json::json;

use super::lifecycle::Shutdown;
use super::{Answer, ExecutorError, ExecutorNode};

/// How long the server waits for open connections after the drain before it stops anyway.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// What [`ExecutorNode::serve_http`] listens on: a bound listener (tokio or std) or an address to bind.
#[derive(Debug)]
pub enum Listen {
    Tokio(tokio::net::TcpListener),
    Std(std::net::TcpListener),
    Addr(SocketAddr),
}

impl From<tokio::net::TcpListener> for Listen {
    fn from(l: tokio::net::TcpListener) -> Self {
        Listen::Tokio(l)
    }
}

impl From<std::net::TcpListener> for Listen {
    fn from(l: std::net::TcpListener) -> Self {
        Listen::Std(l)
    }
}

impl From<SocketAddr> for Listen {
    fn from(a: SocketAddr) -> Self {
        Listen::Addr(a)
    }
}

impl Listen {
    async fn bind(self) -> Result<tokio::net::TcpListener, ExecutorError> {
        match self {
            Listen::Tokio(l) => Ok(l),
            Listen::Std(l) => {
                let addr = l.local_addr().map_or_else(|_| "(unknown)".to_string(), |a| a.to_string());
                l.set_nonblocking(true)
                    .and_then(|()| tokio::net::TcpListener::from_std(l))
                    .map_err(|source| ExecutorError::Listen { addr, source })
            }
            Listen::Addr(a) => tokio::net::TcpListener::bind(a)
                .await
                .map_err(|source| ExecutorError::Listen { addr: a.to_string(), source }),
        }
    }
}

/// `http://{addr}`, with a wildcard IP (`0.0.0.0`, `::`) replaced by the loopback address.
fn default_address(local: SocketAddr) -> String {
    let ip = match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, local.port()))
}

impl ExecutorNode {
    /// Serves the node over HTTP until `shutdown` resolves, then drains.
    ///
    /// In order: binds (or takes) the listener and starts answering dispatches; registers with the scheduler
    /// (retrying while it is unreachable or failing with `5xx`; a refusal such as `400`/`409` is returned as
    /// [`ExecutorError::Register`]); applies the declared tasks; heartbeats. When `shutdown` resolves: tells
    /// the scheduler the node drains, answers `503` to new dispatches, waits for running handlers and pending
    /// reports (at most the drain timeout), deregisters and stops serving. Without a configured scheduler it
    /// only serves and drains locally.
    pub async fn serve_http(
        &self,
        listen: impl Into<Listen>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ExecutorError> {
        let listener = listen.into().bind().await?;
        let local =
            listener.local_addr().map_err(|source| ExecutorError::Listen { addr: "(listener)".into(), source })?;
        let id = self.resolve_id(Some(local.port())).to_string();
        let address = self.inner.advertise.clone().unwrap_or_else(|| default_address(local));
        if self.inner.advertise.is_none() && local.ip().is_unspecified() && self.inner.scheduler.is_some() {
            tracing::warn!(%address, "listening on all interfaces without an advertised URL: only a scheduler on \
                this host can reach {address} (set ExecutorNodeBuilder::advertise)");
        }

        let (stop_server, mut server_stopped) = tokio::sync::watch::channel(false);
        let server = axum::serve(listener, router(self.clone()))
            .with_graceful_shutdown(async move {
                let _ = server_stopped.wait_for(|s| *s).await;
            })
            .into_future();
        let mut server = tokio::spawn(server);
        tracing::info!(%id, service = %self.inner.service, listen = %local, %address, "executor node serving");

        let mut shutdown: Shutdown<'_> = Box::pin(shutdown);
        let registration = self.registration(&address);
        let started = match self.start(&registration, &mut shutdown).await {
            Ok(started) => started,
            Err(e) => {
                let _ = stop_server.send(true);
                let _ = tokio::time::timeout(CLOSE_GRACE, &mut server).await;
                server.abort();
                return Err(e);
            }
        };
        let shutdown_pending = started.is_some() || self.inner.scheduler.is_none();
        let mut failure = None;
        if shutdown_pending {
            tokio::select! {
                () = &mut shutdown => {}
                res = &mut server => failure = Some(server_error(res)),
            }
        }
        tracing::info!(%id, in_flight = self.in_flight(), "executor node shutting down");
        self.drain(started).await;
        let _ = stop_server.send(true);
        if failure.is_none() {
            match tokio::time::timeout(CLOSE_GRACE, &mut server).await {
                Ok(res) => failure = Some(server_error(res)),
                Err(_) => {
                    tracing::warn!(%id, "connections still open after the drain; closing them");
                    server.abort();
                }
            }
        }
        tracing::info!(%id, "executor node stopped");
        match failure {
            Some(Err(e)) => Err(e),
            _ => Ok(()),
        }
    }
}

fn server_error(res: Result<std::io::Result<()>, tokio::task::JoinError>) -> Result<(), ExecutorError> {
    match res {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(ExecutorError::Serve(e)),
        Err(e) => Err(ExecutorError::Serve(std::io::Error::other(e.to_string()))),
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

async fn dispatch(State(node): State<ExecutorNode>, method: Method, uri: Uri, body: Bytes) -> Response {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_addresses_are_advertised_as_loopback() {
        assert_eq!(default_address("0.0.0.0:8080".parse().unwrap()), "http://127.0.0.1:8080");
        assert_eq!(default_address("[::]:8080".parse().unwrap()), "http://[::1]:8080");
        assert_eq!(default_address("10.1.2.3:9".parse().unwrap()), "http://10.1.2.3:9");
    }
}
