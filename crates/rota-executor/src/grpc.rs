//! The gRPC protocol: `target.grpc` dispatches as `rota.executor.v1.Executor/Run` calls (see `docs/protocols.md`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use reqwest::Url;
use rota_core::{Dispatch, DispatchOutcome};
use rota_proto::grpc::{self as wire, RunAnswer, v1};
use rota_proto::signing::SigningKey;
use rota_proto::{HEADER_ATTEMPT, HEADER_RUN_ID, RunEnvelope};
use rota_tls::ClientTls;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

use crate::http::{BuildError, DEFAULT_MAX_RESPONSE_BYTES, default_user_agent, excerpt, root_cause};
use crate::protocol::Protocol;

/// Settings of a [`GrpcProtocol`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcProtocolConfig {
    /// Bound on establishing the connection to a node (a failure, retried by the task's retry policy, rather
    /// than a timeout). The attempt timeout still applies when it is shorter. Default 10 s.
    pub connect_timeout: Duration,
    /// `User-Agent` of every call (tonic appends its own token). Default `rota/<version>`.
    pub user_agent: String,
    /// Largest response message accepted; larger answers fail the dispatch. Default 1 MiB.
    pub max_response_bytes: usize,
    /// Channels (one per node address) kept open at most; past it an arbitrary one is dropped. Default 1024.
    pub max_channels: usize,
    /// TLS for `https://` / `grpcs://` nodes: with a CA bundle, nodes must present a certificate it signed;
    /// without one, the system's roots. The client certificate (mTLS) is presented to nodes that ask for one.
    pub tls: ClientTls,
}

impl Default for GrpcProtocolConfig {
    fn default() -> Self {
        GrpcProtocolConfig {
            connect_timeout: Duration::from_secs(10),
            user_agent: default_user_agent(),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            max_channels: 1024,
            tls: ClientTls::default(),
        }
    }
}

/// Calls `target.grpc` targets on the node the core chose: one unary `Run` call per attempt, over one cached
/// HTTP/2 [`Channel`] per node address (calls to the same node share its connection). Cheap to clone.
///
/// Channels are created on first use inside the caller's Tokio runtime and stay bound to it: use one
/// `GrpcProtocol` per runtime.
///
/// With [`GrpcProtocol::with_signing_key`] every call is signed ([`rota_proto::signing`]): method `POST`, path
/// `/{service}/{method}` (by default `/rota.executor.v1.Executor/Run`), body = the protobuf encoding of the
/// `RunRequest` message (not the gRPC length-prefixed frame), the headers sent as metadata.
#[derive(Clone)]
pub struct GrpcProtocol {
    config: Arc<GrpcProtocolConfig>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    tls: Option<ClientTlsConfig>,
    signing: Option<Arc<SigningKey>>,
}

impl std::fmt::Debug for GrpcProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcProtocol")
            .field("config", &self.config)
            .field("signing_key", &self.signing.as_ref().map(|k| k.id.clone()))
            .finish_non_exhaustive()
    }
}

impl GrpcProtocol {
    /// Checks the configuration (the user agent must be a valid header value); connects nothing yet.
    pub fn new(config: GrpcProtocolConfig) -> Result<Self, BuildError> {
        Endpoint::from_static("http://127.0.0.1:1")
            .user_agent(config.user_agent.clone())
            .map_err(|_| BuildError::new("gRPC", format!("invalid user agent {:?}", config.user_agent)))?;
        rota_tls::install_crypto_provider();
        let mut tls = ClientTlsConfig::new();
        match config.tls.ca_pem() {
            Some(ca) => tls = tls.ca_certificate(Certificate::from_pem(ca)),
            None => tls = tls.with_native_roots(),
        }
        if let Some((cert, key)) = config.tls.identity_pem() {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        // Check the material now (on a throw-away endpoint), so a bad file fails at start-up, not per dispatch.
        if !config.tls.is_empty() {
            Endpoint::from_static("https://127.0.0.1:1")
                .tls_config(tls.clone())
                .map_err(|e| BuildError::new("gRPC", format!("invalid TLS settings: {}", root_cause(&e))))?;
        }
        Ok(GrpcProtocol { config: Arc::new(config), channels: Arc::default(), tls: Some(tls), signing: None })
    }

    /// Signs every call with `key` (see the type's documentation).
    pub fn with_signing_key(mut self, key: SigningKey) -> Self {
        self.signing = Some(Arc::new(key));
        self
    }

    pub fn config(&self) -> &GrpcProtocolConfig {
        &self.config
    }

    /// How many node channels are cached.
    pub fn cached_channels(&self) -> usize {
        self.channels.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The cached channel to `origin` (`http://host:port`), created (lazily connecting) when missing.
    fn channel(&self, origin: &str) -> Result<Channel, String> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(channel) = channels.get(origin) {
            return Ok(channel.clone());
        }
        let mut endpoint = Endpoint::from_shared(origin.to_string())
            .map_err(|e| format!("invalid executor address {origin}: {}", root_cause(&e)))?
            .user_agent(self.config.user_agent.clone())
            .map_err(|_| "invalid user agent".to_string())?
            .connect_timeout(self.config.connect_timeout)
            .tcp_nodelay(true);
        if origin.starts_with("https://")
            && let Some(tls) = &self.tls
        {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| format!("cannot set up TLS to {origin}: {}", root_cause(&e)))?;
        }
        let channel = endpoint.connect_lazy();
        if channels.len() >= self.config.max_channels.max(1)
            && let Some(victim) = channels.keys().next().cloned()
        {
            channels.remove(&victim);
        }
        channels.insert(origin.to_string(), channel.clone());
        Ok(channel)
    }

    async fn call(&self, dispatch: &Dispatch) -> Result<DispatchOutcome, String> {
        let Some(grpc) = dispatch.target.grpc.as_ref() else {
            return Err("the gRPC protocol was given a target without `grpc`".to_string());
        };
        let path = rpc_path(grpc.service.as_deref(), grpc.method.as_deref())?;
        let Some(node) = dispatch.node.as_ref() else {
            return Err("a grpc target needs an executor node, and none was chosen".to_string());
        };
        let origin = grpc_origin(&node.address)?;
        let channel = self.channel(&origin)?;

        let message = v1::RunRequest::from(RunEnvelope {
            run_id: dispatch.run_id.to_string(),
            task: dispatch.task_key(),
            attempt: dispatch.attempt,
            scheduled_at: dispatch.scheduled_at,
            params: dispatch.params.clone(),
            shard: dispatch.shard,
            deadline: dispatch.deadline,
            report_url: dispatch.report_url.clone(),
        });
        let signature = self.signing.as_ref().map(|key| {
            let body = prost::Message::encode_to_vec(&message);
            key.sign("POST", path.as_str(), chrono::Utc::now().timestamp(), &body)
        });
        let mut request = tonic::Request::new(message);
        request.set_timeout(dispatch.timeout);
        for (name, value) in signature.into_iter().flatten() {
            if let Ok(value) = MetadataValue::try_from(value.as_str()) {
                request.metadata_mut().insert(name, value);
            }
        }
        request.metadata_mut().insert(HEADER_RUN_ID, MetadataValue::from(dispatch.run_id));
        request.metadata_mut().insert(HEADER_ATTEMPT, MetadataValue::from(dispatch.attempt));

        let started = Instant::now();
        let mut client = tonic::client::Grpc::new(channel).max_decoding_message_size(self.config.max_response_bytes);
        if let Err(e) = client.ready().await {
            let e: Box<dyn std::error::Error + Send + Sync> = e.into();
            return Err(format!("could not connect to {origin}: {}", root_cause(&*e)));
        }
        let codec = tonic_prost::ProstCodec::<v1::RunRequest, v1::RunResponse>::default();
        let rpc = path.clone();
        match client.unary(request, path, codec).await {
            Ok(response) => match RunAnswer::try_from(response.into_inner()) {
                Ok(RunAnswer::Completed(result)) => Ok(DispatchOutcome::Completed(result)),
                Ok(RunAnswer::Accepted) => Ok(DispatchOutcome::Accepted),
                Err(e) => Err(format!("executor returned an invalid result: {}", excerpt(&e.to_string()))),
            },
            Err(status) if is_deadline(&status, started.elapsed() >= dispatch.timeout) => Ok(DispatchOutcome::TimedOut),
            Err(status) => Err(status_error(&status, &origin, rpc.as_str(), &self.config)),
        }
    }
}

#[async_trait]
impl Protocol for GrpcProtocol {
    fn name(&self) -> &'static str {
        "grpc"
    }

    async fn send(&self, dispatch: &Dispatch) -> DispatchOutcome {
        self.call(dispatch).await.unwrap_or_else(|error| DispatchOutcome::Failed { error })
    }
}

/// `/{service}/{method}` of the call: the Rota executor service by default. Other names are accepted when they
/// are well-formed: the node must then serve the Rota messages under that name.
fn rpc_path(service: Option<&str>, method: Option<&str>) -> Result<PathAndQuery, String> {
    let service = service.unwrap_or(wire::SERVICE);
    let method = method.unwrap_or(wire::METHOD_RUN);
    let valid_service = !service.is_empty()
        && !service.starts_with('.')
        && !service.ends_with('.')
        && !service.contains("..")
        && service.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    if !valid_service {
        return Err(format!(
            "target.grpc.service: invalid gRPC service name {:?} (expected e.g. {})",
            excerpt(service),
            wire::SERVICE
        ));
    }
    if method.is_empty() || !method.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "target.grpc.method: invalid gRPC method name {:?} (expected e.g. {})",
            excerpt(method),
            wire::METHOD_RUN
        ));
    }
    PathAndQuery::from_maybe_shared(format!("/{service}/{method}"))
        .map_err(|_| "target.grpc: invalid service or method name".to_string())
}

/// The origin of a gRPC node address: `http://host:port` for `host:port`, `http://host:port` or
/// `grpc://host:port` (plaintext), `https://host:port` for `https://host:port` or `grpcs://host:port` (TLS).
/// Paths, queries and credentials are refused, and never echoed.
pub(crate) fn grpc_origin(address: &str) -> Result<String, String> {
    let address = address.trim();
    let (scheme, rest) = match address.split_once("://") {
        Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
        None => ("http".to_string(), address),
    };
    let tls = match scheme.as_str() {
        "http" | "grpc" => false,
        "https" | "grpcs" => true,
        other => {
            return Err(format!(
                "unsupported gRPC address scheme {:?} (expected host:port, http://, grpc://, https:// or grpcs://)",
                excerpt(other)
            ));
        }
    };
    let url = Url::parse(&format!("{}://{rest}", if tls { "https" } else { "http" }))
        .map_err(|e| format!("invalid gRPC executor address: {e}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("invalid gRPC executor address: credentials are not allowed in it".to_string());
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err("invalid gRPC executor address: it takes no path or query (host:port)".to_string());
    }
    if url.host().is_none() {
        return Err("invalid gRPC executor address: no host".to_string());
    }
    let default_port = if tls { ":443" } else { ":80" };
    if url.port().is_none() && !rest.trim_end_matches('/').ends_with(default_port) {
        return Err("invalid gRPC executor address: it needs a port (host:port)".to_string());
    }
    Ok(url.origin().ascii_serialization())
}

/// Whether a failed call means the attempt's deadline passed: the node said so, or a cancellation arrived
/// after the timeout (tonic servers cancel a handler at the `grpc-timeout` they were sent).
fn is_deadline(status: &Status, past_timeout: bool) -> bool {
    status.code() == Code::DeadlineExceeded || (past_timeout && status.code() == Code::Cancelled)
}

/// A short message for a call that ended with a non-OK status: origin only, then the code and a sanitised
/// excerpt of the status message.
fn status_error(status: &Status, origin: &str, path: &str, config: &GrpcProtocolConfig) -> String {
    let message = excerpt(status.message());
    match status.code() {
        // A transport failure carries its cause as the status's source; an UNAVAILABLE without one was sent by
        // the node itself (e.g. it is draining): the connection worked, the node refused the run.
        Code::Unavailable => match std::error::Error::source(status).map(root_cause) {
            Some(cause) if !cause.is_empty() => format!("could not connect to {origin}: {cause}"),
            Some(_) => format!("could not connect to {origin}"),
            None if message.is_empty() => format!("could not connect to {origin}"),
            None => format!("executor at {origin} is unavailable: {message}"),
        },
        // tonic's router answers UNIMPLEMENTED with an empty message; a node's own message is kept.
        Code::Unimplemented => format!(
            "executor at {origin} answered gRPC UNIMPLEMENTED: it does not serve {}{}",
            path.trim_start_matches('/'),
            if message.is_empty() { String::new() } else { format!(" ({message})") }
        ),
        // A transport failure after the connection was up (e.g. a TLS alert such as a refused client
        // certificate, which TLS 1.3 delivers after the client's side of the handshake completed).
        Code::Unknown | Code::Cancelled if std::error::Error::source(status).is_some() => {
            let cause = std::error::Error::source(status).map(root_cause).unwrap_or_default();
            format!("request to {origin} failed: {cause}")
        }
        // Raised by tonic's own decoder: the answer is not a `RunResponse`.
        Code::Internal if status.message().starts_with("failed to decode") => {
            format!("executor returned an undecodable answer: {message}")
        }
        Code::OutOfRange if status.message().contains("message length too large") => {
            format!("executor response too large: the message exceeds {} bytes", config.max_response_bytes)
        }
        code => {
            let head = format!("executor answered gRPC {}", code_name(code));
            if message.is_empty() { head } else { format!("{head}: {message}") }
        }
    }
}

/// The canonical upper-case name of a status code.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(grpc_origin("10.0.0.5:50051").unwrap(), "http://10.0.0.5:50051");
        assert_eq!(grpc_origin(" http://node-a:7000/ ").unwrap(), "http://node-a:7000");
        assert_eq!(grpc_origin("grpc://node-a:7000").unwrap(), "http://node-a:7000");
        assert_eq!(grpc_origin("GRPC://[::1]:7000").unwrap(), "http://[::1]:7000");
        assert_eq!(grpc_origin("http://h:80").unwrap(), "http://h");
        assert_eq!(grpc_origin("https://h:443").unwrap(), "https://h");
        assert_eq!(grpc_origin("grpcs://node-a:7443").unwrap(), "https://node-a:7443");
        assert!(grpc_origin("ftp://h:1").unwrap_err().starts_with("unsupported gRPC address scheme \"ftp\""));
        assert!(grpc_origin("h").unwrap_err().contains("needs a port"));
        assert!(grpc_origin("http://h:1/base").unwrap_err().contains("no path"));
        let e = grpc_origin("http://user:s3cret@h:1").unwrap_err();
        assert!(e.contains("credentials") && !e.contains("s3cret"), "{e}");
        assert!(grpc_origin("").is_err());
    }

    #[test]
    fn rpc_paths() {
        assert_eq!(rpc_path(None, None).unwrap().as_str(), "/rota.executor.v1.Executor/Run");
        assert_eq!(
            rpc_path(Some("acme.jobs.v2.Worker"), Some("Execute")).unwrap().as_str(),
            "/acme.jobs.v2.Worker/Execute"
        );
        assert_eq!(
            rpc_path(Some("rota.executor.v1.Executor"), Some("Run")).unwrap().as_str(),
            "/rota.executor.v1.Executor/Run"
        );
        assert!(rpc_path(Some("a/b"), None).unwrap_err().starts_with("target.grpc.service: invalid gRPC service name"));
        assert!(rpc_path(Some(".x"), None).is_err());
        assert!(rpc_path(Some(""), None).is_err());
        assert!(rpc_path(None, Some("Run/x")).unwrap_err().starts_with("target.grpc.method: invalid gRPC method name"));
        assert!(rpc_path(None, Some("")).is_err());
    }

    fn status_error_of(status: &Status, origin: &str, config: &GrpcProtocolConfig) -> String {
        status_error(status, origin, "/rota.executor.v1.Executor/Run", config)
    }

    #[test]
    fn status_messages() {
        let config = GrpcProtocolConfig::default();
        let o = "http://h:1";
        assert_eq!(
            status_error_of(&Status::unavailable("node n1 is draining"), o, &config),
            "executor at http://h:1 is unavailable: node n1 is draining"
        );
        assert_eq!(
            status_error_of(&Status::internal("db\ndown"), o, &config),
            "executor answered gRPC INTERNAL: db down"
        );
        assert_eq!(status_error_of(&Status::not_found(""), o, &config), "executor answered gRPC NOT_FOUND");
        assert_eq!(
            status_error_of(&Status::internal("failed to decode Protobuf message: x"), o, &config),
            "executor returned an undecodable answer: failed to decode Protobuf message: x"
        );
        assert_eq!(
            status_error_of(&Status::unimplemented(""), o, &config),
            "executor at http://h:1 answered gRPC UNIMPLEMENTED: it does not serve rota.executor.v1.Executor/Run"
        );
        assert_eq!(status_error_of(&Status::unavailable(""), o, &config), "could not connect to http://h:1");
        assert!(is_deadline(&Status::deadline_exceeded(""), false));
        assert!(is_deadline(&Status::cancelled("Timeout expired"), true));
        assert!(!is_deadline(&Status::cancelled("Timeout expired"), false));
    }
}
