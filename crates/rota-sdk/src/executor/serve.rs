//! What both transports share around their server: the listener ([`Listen`]), the advertised address, and the
//! serving lifecycle (start answering, register, apply declared tasks, heartbeat; on shutdown drain, deregister
//! and stop the server).

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::time::Duration;

use rota_proto::ExecutorProtocol;

use super::lifecycle::Shutdown;
use super::{ExecutorError, ExecutorNode};

/// How long the server waits for open connections after the drain before it stops anyway.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// What [`ExecutorNode::serve_http`] and [`ExecutorNode::serve_grpc`] listen on: a bound listener (tokio or
/// std) or an address to bind.
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
pub(crate) fn default_address(local: SocketAddr) -> String {
    let ip = match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, local.port()))
}

/// Resolves when the transport's server must stop accepting and close (after the drain).
pub(crate) type StopSignal = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;
/// A transport's server, serving until its [`StopSignal`] resolves.
pub(crate) type ServerFuture = Pin<Box<dyn Future<Output = Result<(), ExecutorError>> + Send + 'static>>;

impl ExecutorNode {
    /// Serves with the transport `server` (given the bound listener and its stop signal) until `shutdown`
    /// resolves, around it the lifecycle of [`ExecutorNode::serve_http`]: the node registers with `protocol`
    /// and the advertised (or listener's) address.
    pub(crate) async fn serve_with(
        &self,
        listen: Listen,
        protocol: ExecutorProtocol,
        shutdown: impl Future<Output = ()> + Send,
        server: impl FnOnce(tokio::net::TcpListener, StopSignal) -> ServerFuture,
    ) -> Result<(), ExecutorError> {
        let listener = listen.bind().await?;
        let local =
            listener.local_addr().map_err(|source| ExecutorError::Listen { addr: "(listener)".into(), source })?;
        let id = self.resolve_id(Some(local.port())).to_string();
        let mut address = self.inner.advertise.clone().unwrap_or_else(|| default_address(local));
        if self.inner.advertise.is_none() && self.inner.tls.is_some() {
            address = address.replacen("http://", "https://", 1);
        }
        if self.inner.advertise.is_none() && local.ip().is_unspecified() && self.inner.scheduler.is_some() {
            tracing::warn!(%address, "listening on all interfaces without an advertised URL: only a scheduler on \
                this host can reach {address} (set ExecutorNodeBuilder::advertise)");
        }

        let (stop_server, mut server_stopped) = tokio::sync::watch::channel(false);
        let stop: StopSignal = Box::pin(async move {
            let _ = server_stopped.wait_for(|s| *s).await;
        });
        let mut server = tokio::spawn(server(listener, stop));
        tracing::info!(%id, service = %self.inner.service, protocol = protocol.as_str(), listen = %local, %address,
            "executor node serving");

        let mut shutdown: Shutdown<'_> = Box::pin(shutdown);
        let registration = self.registration(&address, protocol);
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

fn server_error(res: Result<Result<(), ExecutorError>, tokio::task::JoinError>) -> Result<(), ExecutorError> {
    match res {
        Ok(res) => res,
        Err(e) => Err(ExecutorError::Serve(std::io::Error::other(e.to_string()))),
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
