//! `rota server`'s security wiring, kept apart from `server.rs`: the executors' TLS, signing and secrets, and
//! serving the API over TLS or plain HTTP.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use rota_core::{SecretChain, SecretResolver};
use rota_executor::{
    DirSecrets, EnvSecrets, GrpcProtocol, GrpcProtocolConfig, HttpExecutor, HttpExecutorConfig, Router,
};
use rota_spec::TargetKind;

use crate::config::Security;

/// `https` when the API serves TLS, else `http`.
pub fn scheme(security: &Security) -> &'static str {
    if security.tls.is_some() { "https" } else { "http" }
}

/// The secrets of `target.http.auth`: the secrets directory (when set), then `ROTA_SECRET_<NAME>`.
pub fn secrets(security: &Security) -> Arc<dyn SecretResolver> {
    let mut chain = SecretChain::new();
    if let Some(dir) = &security.secrets_dir {
        chain = chain.with(Arc::new(DirSecrets::new(dir)));
    }
    Arc::new(chain.with(Arc::new(EnvSecrets::new())))
}

/// The HTTP and gRPC executors with the configured TLS, signing key and secrets.
pub fn dispatch_router(security: &Security) -> anyhow::Result<Router> {
    let http = HttpExecutorConfig { tls: security.executor_tls.clone(), ..HttpExecutorConfig::default() };
    let mut http = HttpExecutor::new(http).context("cannot build the HTTP executor")?.with_secrets(secrets(security));
    let grpc = GrpcProtocolConfig { tls: security.executor_tls.clone(), ..GrpcProtocolConfig::default() };
    let mut grpc = GrpcProtocol::new(grpc).context("cannot build the gRPC executor")?;
    if let Some(key) = &security.signing {
        tracing::info!(key_id = %key.id, "dispatches are signed");
        http = http.with_signing_key(key.clone());
        grpc = grpc.with_signing_key(key.clone());
    }
    Ok(Router::new().with(TargetKind::Http, Arc::new(http)).with_protocol(TargetKind::Grpc, Arc::new(grpc)))
}

/// Serves the API on `listener`: over TLS with `tls`, else plain HTTP, until `stop`.
pub async fn serve_api(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rota_tls::rustls::ServerConfig>>,
    app: axum::Router,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match tls {
        Some(config) => rota_tls::serve(listener, config, app, stop).await,
        None => {
            let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
            axum::serve(listener, app).with_graceful_shutdown(stop).await
        }
    }
}
