//! The HTTP executor: `target.http` with `protocol: rota` or `protocol: raw` (see the crate docs).

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use rota_core::{Dispatch, DispatchOutcome, Executor, SecretError, SecretResolver};
use rota_proto::signing::SigningKey;
use rota_proto::{CONTENT_TYPE_JSON, HEADER_ATTEMPT, HEADER_RUN_ID, ResultStatus, RunEnvelope, RunResult};
use rota_spec::{HttpAuth, HttpMethod, HttpProtocol, HttpTarget};
use rota_tls::ClientTls;
use serde_json::Value;

use crate::protocol::Protocol;
use crate::template;

/// Default for [`HttpExecutorConfig::max_response_bytes`]: 1 MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// A `protocol: raw` response body is kept as the run's output up to this many bytes (64 KiB).
pub const RAW_OUTPUT_LIMIT: usize = 64 * 1024;
/// Error messages quote at most this many characters of a response body.
pub const ERROR_EXCERPT_CHARS: usize = 256;
/// Bytes read from an error response to build the excerpt (enough for 256 characters of UTF-8).
const ERROR_READ_BYTES: usize = 4 * ERROR_EXCERPT_CHARS;
/// Bytes of a `202` body drained in the background so the connection can be reused.
const ACCEPTED_DRAIN_BYTES: usize = 64 * 1024;
const ACCEPTED_DRAIN_TIME: Duration = Duration::from_secs(5);

/// Request headers Rota owns: configuring them on a target is an error because they define the message framing
/// or the connection.
const RESERVED_HEADERS: &[&str] =
    &["content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection", "te", "upgrade"];

/// The user agent sent by default: `rota/<version>`.
pub fn default_user_agent() -> String {
    format!("rota/{}", env!("CARGO_PKG_VERSION"))
}

/// Settings of an [`HttpExecutor`] and its shared connection pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpExecutorConfig {
    /// Largest `200` body accepted from a `protocol: rota` executor; larger answers fail the dispatch with
    /// "response too large" without being buffered. Default 1 MiB.
    pub max_response_bytes: usize,
    /// `User-Agent` of every request. Default `rota/<version>`.
    pub user_agent: String,
    /// Idle keep-alive connections kept per host. Default 1024.
    pub pool_max_idle_per_host: usize,
    /// How long an idle connection stays in the pool. Default 90 s.
    pub pool_idle_timeout: Duration,
    /// Bound on establishing a TCP connection, so an unreachable host fails fast (and can be retried) instead of
    /// eating the whole attempt timeout. The attempt timeout still applies when it is shorter. Default 10 s.
    pub connect_timeout: Duration,
    /// Route requests through the proxy named by `HTTP_PROXY`/`ALL_PROXY`/`NO_PROXY`. Default `false`:
    /// executor nodes are called directly.
    pub use_env_proxy: bool,
    /// TLS for `https://` nodes and URLs: extra CAs trusted in addition to the system's roots, and the client
    /// certificate presented to nodes that require one (mTLS). Default: system roots, no client certificate.
    pub tls: ClientTls,
}

impl Default for HttpExecutorConfig {
    fn default() -> Self {
        HttpExecutorConfig {
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            user_agent: default_user_agent(),
            pool_max_idle_per_host: 1024,
            pool_idle_timeout: Duration::from_secs(90),
            connect_timeout: Duration::from_secs(10),
            use_env_proxy: false,
            tls: ClientTls::default(),
        }
    }
}

/// An executor client could not be built (e.g. an invalid user agent).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the {what} executor client: {reason}")]
pub struct BuildError {
    what: &'static str,
    reason: String,
}

impl BuildError {
    pub(crate) fn new(what: &'static str, reason: String) -> Self {
        BuildError { what, reason }
    }
}

/// Calls `target.http` targets: one shared connection pool for every dispatch. Cheap to clone.
///
/// With [`HttpExecutor::with_signing_key`] every request is signed ([`rota_proto::signing`]); with
/// [`HttpExecutor::with_secrets`] a target's `auth` is resolved at dispatch time (without a resolver every
/// secret reference fails the attempt as unavailable).
#[derive(Clone)]
pub struct HttpExecutor {
    client: reqwest::Client,
    config: Arc<HttpExecutorConfig>,
    signing: Option<Arc<SigningKey>>,
    secrets: Option<Arc<dyn SecretResolver>>,
}

impl std::fmt::Debug for HttpExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpExecutor")
            .field("config", &self.config)
            .field("signing_key", &self.signing.as_ref().map(|k| k.id.clone()))
            .field("secrets", &self.secrets.is_some())
            .finish()
    }
}

impl HttpExecutor {
    /// Builds the executor and its client (keep-alive pool, `TCP_NODELAY`, no redirects, HTTP/1.1).
    pub fn new(config: HttpExecutorConfig) -> Result<Self, BuildError> {
        let user_agent = HeaderValue::from_str(&config.user_agent)
            .map_err(|_| BuildError::new("HTTP", format!("invalid user agent {:?}", config.user_agent)))?;
        let mut builder = reqwest::Client::builder()
            .user_agent(user_agent)
            .pool_max_idle_per_host(config.pool_max_idle_per_host)
            .pool_idle_timeout(config.pool_idle_timeout)
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none());
        if !config.use_env_proxy {
            builder = builder.no_proxy();
        }
        rota_tls::install_crypto_provider();
        if let Some(ca) = config.tls.ca_pem() {
            let certs = reqwest::Certificate::from_pem_bundle(ca)
                .map_err(|e| BuildError::new("HTTP", format!("invalid executor CA bundle: {}", error_chain(&e))))?;
            builder = builder.tls_certs_merge(certs);
        }
        if let Some((cert, key)) = config.tls.identity_pem() {
            let identity = reqwest::Identity::from_pem(&[cert, b"\n", key].concat()).map_err(|e| {
                BuildError::new("HTTP", format!("invalid executor client certificate: {}", error_chain(&e)))
            })?;
            builder = builder.identity(identity);
        }
        let client = builder.build().map_err(|e| BuildError::new("HTTP", error_chain(&e.without_url())))?;
        Ok(Self::with_client(client, config))
    }

    /// Uses a client built by the caller (its pool, TLS and proxy settings); `config` then only supplies the
    /// response limits.
    pub fn with_client(client: reqwest::Client, config: HttpExecutorConfig) -> Self {
        HttpExecutor { client, config: Arc::new(config), signing: None, secrets: None }
    }

    /// Signs every request with `key` (headers `x-rota-timestamp`, `x-rota-signature`, `x-rota-key-id` over the
    /// method, the path and query as sent, the time and the body).
    pub fn with_signing_key(mut self, key: SigningKey) -> Self {
        self.signing = Some(Arc::new(key));
        self
    }

    /// Resolves the secret references of `target.http.auth` through `secrets`.
    pub fn with_secrets(mut self, secrets: Arc<dyn SecretResolver>) -> Self {
        self.secrets = Some(secrets);
        self
    }

    pub fn config(&self) -> &HttpExecutorConfig {
        &self.config
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    async fn exchange(&self, request: reqwest::Request, protocol: HttpProtocol, origin: &str) -> DispatchOutcome {
        let response = match self.client.execute(request).await {
            Ok(r) => r,
            Err(e) => return failed(send_error(&e, origin)),
        };
        match protocol {
            HttpProtocol::Rota => self.rota_answer(response, origin).await,
            HttpProtocol::Raw => raw_answer(response, origin).await,
        }
    }

    async fn rota_answer(&self, mut response: reqwest::Response, origin: &str) -> DispatchOutcome {
        let status = response.status();
        match status {
            StatusCode::OK => {
                let max = self.config.max_response_bytes;
                if response.content_length().is_some_and(|n| n > max as u64) {
                    return failed(too_large(max));
                }
                match read_limited(&mut response, max).await {
                    Ok((_, false)) => failed(too_large(max)),
                    Ok((body, true)) => match serde_json::from_slice::<RunResult>(&body) {
                        Ok(result) => DispatchOutcome::Completed(result),
                        Err(e) => failed(format!("executor returned an invalid result: {}", excerpt(&e.to_string()))),
                    },
                    Err(e) => failed(format!("error reading the response of {origin}: {}", error_chain(&e))),
                }
            }
            StatusCode::ACCEPTED => {
                // Drain a small body in the background so the keep-alive connection goes back to the pool; the
                // dispatch itself is done.
                tokio::spawn(async move {
                    let _ =
                        tokio::time::timeout(ACCEPTED_DRAIN_TIME, read_limited(&mut response, ACCEPTED_DRAIN_BYTES))
                            .await;
                });
                DispatchOutcome::Accepted
            }
            _ => failed(status_error(status, &mut response).await),
        }
    }
}

async fn raw_answer(mut response: reqwest::Response, origin: &str) -> DispatchOutcome {
    let status = response.status();
    if !status.is_success() {
        return failed(status_error(status, &mut response).await);
    }
    let (body, complete) = match read_limited(&mut response, RAW_OUTPUT_LIMIT).await {
        Ok(read) => read,
        Err(e) => return failed(format!("error reading the response of {origin}: {}", error_chain(&e))),
    };
    DispatchOutcome::Completed(RunResult {
        status: ResultStatus::Succeeded,
        output: raw_output(&body, complete),
        error: None,
    })
}

/// The output of a successful raw call: the body as JSON when it is complete and parses, else a JSON string of
/// the (possibly truncated) body; `None` for an empty body.
fn raw_output(body: &[u8], complete: bool) -> Option<Value> {
    if body.is_empty() {
        return None;
    }
    if complete && let Ok(v) = serde_json::from_slice::<Value>(body) {
        return Some(v);
    }
    // Do not cut a UTF-8 sequence in half at the truncation point.
    let end = match std::str::from_utf8(body) {
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        _ => body.len(),
    };
    Some(Value::String(String::from_utf8_lossy(&body[..end]).into_owned()))
}

impl HttpExecutor {
    /// The request of `dispatch`, its protocol and its origin, or the message of a misconfigured target (or of a
    /// secret that is not available).
    async fn prepare(&self, dispatch: &Dispatch) -> Result<(reqwest::Request, HttpProtocol, String), String> {
        let Some(http) = dispatch.target.http.as_ref() else {
            return Err("the HTTP executor was given a target without `http`".to_string());
        };
        let (mut request, origin) = build_request(&self.client, dispatch, http)?;
        if let Some(auth) = &http.auth {
            for (name, value) in self.auth_headers(auth).await? {
                request.headers_mut().insert(name, value);
            }
        }
        if let Some(key) = &self.signing {
            sign_request(key, &mut request);
        }
        Ok((request, http.protocol, origin))
    }

    /// The headers of `auth`, their values resolved now and marked sensitive (never logged by the HTTP stack).
    async fn auth_headers(&self, auth: &HttpAuth) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
        let resolve = async |name: &str| -> Result<String, String> {
            match &self.secrets {
                Some(s) => s.resolve(name).await.map(|v| v.expose().to_string()).map_err(|e| e.to_string()),
                None => Err(SecretError::NotAvailable(name.to_string()).to_string()),
            }
        };
        let sensitive = |name: &str, value: String| {
            let mut v = HeaderValue::from_str(&value)
                .map_err(|_| format!("secret {name} is not a valid HTTP header value (value not shown)"))?;
            v.set_sensitive(true);
            Ok::<_, String>(v)
        };
        let mut out = Vec::new();
        if let Some(b) = &auth.bearer {
            let token = resolve(&b.secret_ref).await?;
            out.push((AUTHORIZATION, sensitive(&b.secret_ref, format!("Bearer {token}"))?));
        }
        if let Some(b) = &auth.basic {
            let password = resolve(&b.password_ref).await?;
            let credentials = base64(format!("{}:{password}", b.username).as_bytes());
            out.push((AUTHORIZATION, sensitive(&b.password_ref, format!("Basic {credentials}"))?));
        }
        if let Some(h) = &auth.header {
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| format!("target.http.auth.header.name: invalid header name {:?}", h.name))?;
            let value = resolve(&h.value_ref).await?;
            out.push((name, sensitive(&h.value_ref, value)?));
        }
        Ok(out)
    }
}

/// Adds the signature headers of `key` to `request` (signed now).
fn sign_request(key: &SigningKey, request: &mut reqwest::Request) {
    let url = request.url();
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let body = request.body().and_then(|b| b.as_bytes()).unwrap_or_default().to_vec();
    let now = chrono::Utc::now().timestamp();
    for (name, value) in key.sign(request.method().as_str(), &path, now, &body) {
        if let Ok(value) = HeaderValue::from_str(&value) {
            request.headers_mut().insert(name, value);
        }
    }
}

/// Standard base64 with padding (RFC 4648), for `Authorization: Basic`.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The HTTP protocols (`rota` and `raw`) as a [`Protocol`]; the timeout is left to the caller.
#[async_trait]
impl Protocol for HttpExecutor {
    fn name(&self) -> &'static str {
        "http"
    }

    async fn send(&self, dispatch: &Dispatch) -> DispatchOutcome {
        match self.prepare(dispatch).await {
            Ok((request, protocol, origin)) => self.exchange(request, protocol, &origin).await,
            Err(message) => failed(message),
        }
    }
}

#[async_trait]
impl Executor for HttpExecutor {
    async fn dispatch(&self, dispatch: Dispatch) -> DispatchOutcome {
        // A misconfigured target fails even when the attempt has no time left, so the message reaches the user.
        let (request, protocol, origin) = match self.prepare(&dispatch).await {
            Ok(r) => r,
            Err(message) => return failed(message),
        };
        if dispatch.timeout.is_zero() {
            return DispatchOutcome::TimedOut;
        }
        let outcome = match tokio::time::timeout(dispatch.timeout, self.exchange(request, protocol, &origin)).await {
            Ok(outcome) => outcome,
            Err(_) => DispatchOutcome::TimedOut,
        };
        tracing::debug!(run_id = dispatch.run_id, attempt = dispatch.attempt, %origin, ?outcome, "http dispatch");
        outcome
    }
}

fn failed(error: String) -> DispatchOutcome {
    DispatchOutcome::Failed { error }
}

fn too_large(max: usize) -> String {
    format!("executor response too large: the body exceeds {max} bytes")
}

/// Builds the request of one dispatch; returns it with the origin (`scheme://host:port`) used in messages.
fn build_request(
    client: &reqwest::Client,
    dispatch: &Dispatch,
    http: &HttpTarget,
) -> Result<(reqwest::Request, String), String> {
    let url = resolve_url(dispatch, http)?;
    let origin = url.origin().ascii_serialization();
    let mut headers = HeaderMap::new();
    for (name, value) in &http.headers {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("target.http.headers: invalid header name {name:?}"))?;
        if RESERVED_HEADERS.contains(&header.as_str()) {
            return Err(format!("target.http.headers.{name}: this header is managed by Rota and cannot be set"));
        }
        // Never echo the value: headers carry credentials.
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("target.http.headers.{name}: invalid header value (value not shown)"))?;
        headers.append(header, value);
    }
    let (method, body) = match http.protocol {
        HttpProtocol::Rota => {
            let envelope = RunEnvelope {
                run_id: dispatch.run_id.to_string(),
                task: dispatch.task_key(),
                attempt: dispatch.attempt,
                scheduled_at: dispatch.scheduled_at,
                params: dispatch.params.clone(),
                shard: dispatch.shard,
                deadline: dispatch.deadline,
                report_url: dispatch.report_url.clone(),
            };
            let body = serde_json::to_vec(&envelope).map_err(|e| format!("cannot encode the run envelope: {e}"))?;
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_JSON));
            headers.insert(ACCEPT, HeaderValue::from_static(CONTENT_TYPE_JSON));
            (Method::POST, Some(body))
        }
        HttpProtocol::Raw => {
            let body = match &http.body {
                Some(t) => Some(template::render(t, dispatch).map_err(|e| format!("target.http.body: {e}"))?),
                None => None,
            };
            if let Some(body) = &body
                && !headers.contains_key(CONTENT_TYPE)
            {
                let kind = if serde_json::from_str::<serde::de::IgnoredAny>(body).is_ok() {
                    CONTENT_TYPE_JSON
                } else {
                    "text/plain; charset=utf-8"
                };
                headers.insert(CONTENT_TYPE, HeaderValue::from_static(kind));
            }
            (method(http.method), body.map(String::into_bytes))
        }
    };
    headers.insert(HEADER_RUN_ID, HeaderValue::from(dispatch.run_id));
    headers.insert(HEADER_ATTEMPT, HeaderValue::from(dispatch.attempt));
    let mut builder = client.request(method, url).headers(headers);
    if let Some(body) = body {
        builder = builder.body(body);
    }
    let request = builder
        .build()
        .map_err(|e| format!("cannot build the request to {origin}: {}", error_chain(&e.without_url())))?;
    Ok((request, origin))
}

fn method(m: HttpMethod) -> Method {
    match m {
        HttpMethod::Get => Method::GET,
        HttpMethod::Post => Method::POST,
        HttpMethod::Put => Method::PUT,
        HttpMethod::Patch => Method::PATCH,
        HttpMethod::Delete => Method::DELETE,
        HttpMethod::Head => Method::HEAD,
    }
}

/// `node.address` + `target.path` when a node was chosen, else `target.url`.
fn resolve_url(dispatch: &Dispatch, http: &HttpTarget) -> Result<Url, String> {
    let raw = match (&dispatch.node, &http.url) {
        (Some(node), _) => join_url(&node.address, http.path.as_deref()),
        (None, Some(url)) => url.clone(),
        (None, None) => return Err("the http target has no `url` and no executor node was chosen".to_string()),
    };
    // The URL itself is not echoed: a webhook URL can be a credential.
    let url = Url::parse(&raw).map_err(|e| format!("invalid executor URL: {e}"))?;
    match url.scheme() {
        "http" | "https" => {}
        other => return Err(format!("unsupported executor URL scheme {other:?} (expected http or https)")),
    }
    if url.host().is_none() {
        return Err("invalid executor URL: no host".to_string());
    }
    Ok(url)
}

/// Joins a node address (`http://host:port[/base]` or `host:port`) and a path (absent means `/`) with exactly one
/// `/` between them.
pub(crate) fn join_url(address: &str, path: Option<&str>) -> String {
    let address = address.trim();
    let base = if address.contains("://") { address.to_string() } else { format!("http://{address}") };
    let base = base.trim_end_matches('/');
    let path = path.unwrap_or("/");
    let path = path.trim_start_matches('/');
    format!("{base}/{path}")
}

/// Reads at most `limit` bytes of the body, chunk by chunk. Returns the bytes and whether the body ended within
/// the limit (`false`: it is longer and was not read further).
async fn read_limited(response: &mut reqwest::Response, limit: usize) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let hint = response.content_length().map_or(0, |n| n.min(limit as u64) as usize);
    let mut body = Vec::with_capacity(hint.min(64 * 1024));
    while let Some(chunk) = response.chunk().await? {
        let room = limit - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, false));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, true))
}

/// `executor answered HTTP 503: <excerpt>` (the excerpt is left out when the body is empty or unreadable).
async fn status_error(status: StatusCode, response: &mut reqwest::Response) -> String {
    let head = format!("executor answered HTTP {}", status.as_u16());
    let (body, complete) = read_limited(response, ERROR_READ_BYTES).await.unwrap_or_default();
    let mut text = excerpt(&String::from_utf8_lossy(&body));
    if !complete && !text.ends_with('…') {
        text.push('…');
    }
    if text.is_empty() { head } else { format!("{head}: {text}") }
}

/// The first [`ERROR_EXCERPT_CHARS`] characters of `text`, control characters replaced by spaces, trimmed,
/// with `…` appended when something was cut.
pub(crate) fn excerpt(text: &str) -> String {
    let mut out: String =
        text.chars().take(ERROR_EXCERPT_CHARS).map(|c| if c.is_control() { ' ' } else { c }).collect();
    let cut = text.chars().nth(ERROR_EXCERPT_CHARS).is_some();
    let trimmed = out.trim();
    if trimmed.len() != out.len() {
        out = trimmed.to_string();
    }
    if cut {
        out.push('…');
    }
    out
}

/// A message for a request that got no response: origin only (no path, query or credentials), then the root
/// cause.
fn send_error(e: &reqwest::Error, origin: &str) -> String {
    let what = if e.is_connect() {
        format!("could not connect to {origin}")
    } else if e.is_timeout() {
        format!("timed out talking to {origin}")
    } else {
        format!("request to {origin} failed")
    };
    format!("{what}: {}", root_cause(e))
}

/// The innermost error of a chain (e.g. `Connection refused (os error 111)`); never contains a URL, since
/// reqwest puts the URL only on its outermost error.
pub(crate) fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut current = e;
    while let Some(next) = current.source() {
        current = next;
    }
    excerpt(&current.to_string())
}

fn error_chain(e: &reqwest::Error) -> String {
    if e.source().is_some() { root_cause(e) } else { excerpt(&e.to_string()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_addresses_and_paths() {
        assert_eq!(join_url("http://h:1", Some("/jobs/a")), "http://h:1/jobs/a");
        assert_eq!(join_url("h:1", Some("/jobs/a")), "http://h:1/jobs/a");
        assert_eq!(join_url("h:1", None), "http://h:1/");
        assert_eq!(join_url("http://h:1/", Some("/x")), "http://h:1/x");
        assert_eq!(join_url("http://h:1/base/", Some("x?y=1")), "http://h:1/base/x?y=1");
        assert_eq!(join_url(" [::1]:8080 ", Some("")), "http://[::1]:8080/");
        assert_eq!(join_url("https://h", Some("/a")), "https://h/a");
    }

    #[test]
    fn excerpts_are_sanitised_and_bounded() {
        assert_eq!(excerpt("  boom\r\n\tline2\u{1b}[31m "), "boom   line2 [31m");
        let long = "é".repeat(300);
        let e = excerpt(&long);
        assert_eq!(e.chars().count(), ERROR_EXCERPT_CHARS + 1);
        assert!(e.ends_with('…'));
        assert_eq!(excerpt(""), "");
    }

    #[test]
    fn base64_matches_rfc4648() {
        for (input, out) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE=")]
        {
            assert_eq!(base64(input.as_bytes()), out);
        }
        assert_eq!(base64(b"svc:p@ss:w0rd"), "c3ZjOnBAc3M6dzByZA==");
    }

    #[test]
    fn raw_outputs() {
        assert_eq!(raw_output(b"", true), None);
        assert_eq!(raw_output(br#"{"a":1}"#, true), Some(serde_json::json!({"a": 1})));
        assert_eq!(raw_output(br#"{"a":1}"#, false), Some(Value::String(r#"{"a":1}"#.into())));
        assert_eq!(raw_output(b"ok\n", true), Some(Value::String("ok\n".into())));
        // A truncated multi-byte character is dropped, not replaced.
        assert_eq!(raw_output("aé".as_bytes()[..2].as_ref(), false), Some(Value::String("a".into())));
    }
}
