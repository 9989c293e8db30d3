//! The management API client.

use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use rota_proto::{ExecutorLease, ExecutorRegistration};
use serde::de::DeserializeOwned;
use serde_json::json;

pub use crate::document::{StreamDocument, TaskDocument, split_documents};
pub use crate::types::*;

/// Why a call failed.
///
/// [`ClientError::Api`] carries the API's own error (stable `code`, `message`, and `details` naming each
/// offending field); the other variants are failures to talk to the server at all.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error (`{"error": {"code", "message", "details"}}`).
    #[error("{code}: {message}")]
    Api {
        /// HTTP status of the answer.
        status: u16,
        /// Stable snake_case code: `invalid_spec`, `invalid_argument`, `not_found`, `conflict`, …
        code: String,
        message: String,
        /// Per-field problems (`path: message`), e.g. `spec.retry.maxAttempts: must be >= 1`.
        details: Vec<ErrorDetail>,
    },
    /// The document could not be read far enough to address it (no `metadata.name`, not YAML/JSON at all).
    /// Checked locally, before anything is sent; `code()` is `invalid_spec` like the server's equivalent.
    #[error("invalid_spec: {path}: {message}")]
    InvalidDocument { path: String, message: String },
    /// The server could not be reached or the exchange broke off.
    #[error("cannot reach the rota server at {url}: {reason}")]
    Transport {
        url: String,
        reason: String,
        #[source]
        source: reqwest::Error,
    },
    /// The server answered something that is not the API's JSON (a proxy's error page, another service).
    #[error("unexpected answer from {url} (HTTP {status}): {reason}")]
    Unexpected { url: String, status: u16, reason: String },
    /// The base URL given to [`Client::new`] is not usable.
    #[error("invalid server URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// The TLS settings (e.g. the `--ca-cert` file) are not usable; the message names the file.
    #[error("invalid TLS settings: {0}")]
    Tls(String),
}

impl ClientError {
    pub(crate) fn document(path: impl Into<String>, message: impl Into<String>) -> Self {
        ClientError::InvalidDocument { path: path.into(), message: message.into() }
    }

    /// The API error code (`not_found`, `invalid_spec`, …), when the error has one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            ClientError::InvalidDocument { .. } => Some("invalid_spec"),
            _ => None,
        }
    }

    /// The human-readable message (without the code).
    pub fn message(&self) -> String {
        match self {
            ClientError::Api { message, .. } => message.clone(),
            ClientError::InvalidDocument { .. } => "the task document cannot be read".to_string(),
            other => other.to_string(),
        }
    }

    /// Per-field problems: the API's `details`, or the local document problem.
    pub fn details(&self) -> Vec<ErrorDetail> {
        match self {
            ClientError::Api { details, .. } => details.clone(),
            ClientError::InvalidDocument { path, message } => {
                vec![ErrorDetail { path: path.clone(), message: message.clone() }]
            }
            _ => Vec::new(),
        }
    }

    /// The HTTP status of an API error or unexpected answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } | ClientError::Unexpected { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the addressed task or run does not exist.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some("not_found")
    }
}

/// Result of the client's calls.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// A client of one Rota server's management API. Cheap to clone (clones share the connection pool).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    /// `Authorization` header sent on every request, when a token is set.
    auth: Option<HeaderValue>,
}

impl Client {
    /// A client for the server at `base_url` (e.g. `http://127.0.0.1:7070`; a path prefix such as
    /// `http://host/rota/` is kept). Requests time out after 60 s.
    pub fn new(base_url: &str) -> Result<Client> {
        Client::with_ca_cert(base_url, None)
    }

    /// [`Client::new`] for an `https://` server whose certificate is signed by the CA bundle (PEM) at
    /// `ca_file`, trusted in addition to the system's roots (`None`: system roots only).
    pub fn with_ca_cert(base_url: &str, ca_file: Option<&std::path::Path>) -> Result<Client> {
        rota_tls::install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("rota-sdk/", env!("CARGO_PKG_VERSION")))
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10));
        if let Some(ca) = ca_file {
            let tls = rota_tls::ClientTls::with_ca(ca).map_err(|e| ClientError::Tls(e.to_string()))?;
            let certs = reqwest::Certificate::from_pem_bundle(tls.ca_pem().unwrap_or_default())
                .map_err(|e| ClientError::Tls(format!("CA bundle {}: {e}", ca.display())))?;
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::InvalidUrl { url: base_url.to_string(), reason: e.to_string() })?;
        Client::with_http_client(base_url, http)
    }

    /// [`Client::with_ca_cert`] with the CA bundle named by the environment variable `ROTA_CA_CERT`, when set.
    pub fn from_env(base_url: &str) -> Result<Client> {
        let ca = std::env::var_os("ROTA_CA_CERT").filter(|v| !v.is_empty()).map(std::path::PathBuf::from);
        Client::with_ca_cert(base_url, ca.as_deref())
    }

    /// A client using a preconfigured `reqwest::Client` (timeouts, proxies, headers).
    pub fn with_http_client(base_url: &str, http: reqwest::Client) -> Result<Client> {
        let invalid = |reason: &str| ClientError::InvalidUrl { url: base_url.to_string(), reason: reason.into() };
        let base = Url::parse(base_url.trim()).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid("the scheme must be http or https"));
        }
        if base.cannot_be_a_base() || base.host().is_none() {
            return Err(invalid("expected a URL like http://127.0.0.1:7070"));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(invalid("the URL must not have a query or fragment"));
        }
        Ok(Client { http, base, auth: None })
    }

    /// Sends `Authorization: Bearer {token}` on every request (`None` sends none). The token is never part of
    /// an error message.
    pub fn with_token(mut self, token: Option<&str>) -> Result<Client> {
        self.auth = match token.filter(|t| !t.is_empty()) {
            None => None,
            Some(t) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| ClientError::InvalidUrl {
                    url: self.base.to_string(),
                    reason: "the token is not a valid header value (value not shown)".into(),
                })?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        Ok(self)
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    // ---------------------------------------------------------------------------------------------------------
    // Tasks
    // ---------------------------------------------------------------------------------------------------------

    /// Creates or replaces a task from a document (YAML or JSON text, a JSON value or a [`rota_spec::Task`]).
    ///
    /// The document is sent to `PUT /api/v1/tasks/{namespace}/{name}`, addressed by its `metadata`; the server
    /// validates it and answers every problem with its field path ([`ClientError::Api`] with code
    /// `invalid_spec`).
    pub async fn apply(&self, document: impl Into<TaskDocument>) -> Result<Applied> {
        let prepared = document.into().prepare()?;
        let url = self.url(&["api", "v1", "tasks", &prepared.namespace, &prepared.name]);
        let req =
            self.http.request(Method::PUT, url.clone()).header(CONTENT_TYPE, prepared.content_type).body(prepared.body);
        let (status, task) = self.send::<TaskView>(req, &url).await?;
        Ok(Applied { created: status == StatusCode::CREATED, task })
    }

    /// One task.
    pub async fn get_task(&self, namespace: &str, name: &str) -> Result<TaskView> {
        self.get(self.url(&["api", "v1", "tasks", namespace, name]), &[]).await
    }

    /// One page of tasks matching `filter`, ordered by creation; pass the previous page's `next_cursor` as
    /// `cursor`. `limit` is the page size (1..=1000, server default 100).
    pub async fn list_tasks(&self, filter: &TaskFilter, cursor: Option<&str>, limit: Option<u32>) -> Result<TaskList> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(ns) = &filter.namespace {
            query.push(("namespace", ns.clone()));
        }
        for (k, v) in &filter.labels {
            query.push(("label", format!("{k}={v}")));
        }
        if let Some(p) = filter.paused {
            query.push(("paused", p.to_string()));
        }
        push_page(&mut query, cursor, limit);
        self.get(self.url(&["api", "v1", "tasks"]), &query).await
    }

    /// Every task matching `filter` (follows the cursor through all pages).
    pub async fn list_all_tasks(&self, filter: &TaskFilter) -> Result<Vec<TaskView>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self.list_tasks(filter, cursor.as_deref(), Some(1000)).await?;
            out.extend(page.items);
            match page.next_cursor {
                Some(c) if Some(&c) != cursor.as_ref() => cursor = Some(c),
                _ => return Ok(out),
            }
        }
    }

    /// Deletes a task (its runs stay as history). `not_found` if it does not exist.
    pub async fn delete_task(&self, namespace: &str, name: &str) -> Result<()> {
        let url = self.url(&["api", "v1", "tasks", namespace, name]);
        self.send_empty(self.http.request(Method::DELETE, url.clone()), &url).await
    }

    /// Pauses a task: it stops firing at once.
    pub async fn pause(&self, namespace: &str, name: &str) -> Result<TaskView> {
        self.post(self.url(&["api", "v1", "tasks", namespace, name, "pause"]), None).await
    }

    /// Resumes a paused task (the paused time is not replayed).
    pub async fn resume(&self, namespace: &str, name: &str) -> Result<TaskView> {
        self.post(self.url(&["api", "v1", "tasks", namespace, name, "resume"]), None).await
    }

    /// Fires a task now with `params` merged over its `spec.params`; returns the new run.
    pub async fn trigger(&self, namespace: &str, name: &str, params: Params) -> Result<RunView> {
        let body = json!({ "params": params });
        self.post(self.url(&["api", "v1", "tasks", namespace, name, "trigger"]), Some(body)).await
    }

    /// Every stored version of a task's document, oldest first.
    pub async fn task_versions(&self, namespace: &str, name: &str) -> Result<TaskVersionList> {
        self.get(self.url(&["api", "v1", "tasks", namespace, name, "versions"]), &[]).await
    }

    // ---------------------------------------------------------------------------------------------------------
    // Runs
    // ---------------------------------------------------------------------------------------------------------

    /// One page of runs matching `filter`, newest first; pass the previous page's `next_cursor` as `cursor`.
    pub async fn list_runs(&self, filter: &RunFilter, cursor: Option<&str>, limit: Option<u32>) -> Result<RunList> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some((ns, name)) = &filter.task {
            query.push(("task", format!("{ns}/{name}")));
        }
        if let Some(ns) = &filter.namespace {
            query.push(("namespace", ns.clone()));
        }
        if !filter.states.is_empty() {
            let states: Vec<&str> = filter.states.iter().map(|s| s.as_str()).collect();
            query.push(("state", states.join(",")));
        }
        if let Some(from) = filter.from {
            query.push(("from", from.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)));
        }
        if let Some(to) = filter.to {
            query.push(("to", to.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)));
        }
        push_page(&mut query, cursor, limit);
        self.get(self.url(&["api", "v1", "runs"]), &query).await
    }

    /// One run with its attempts.
    pub async fn get_run(&self, run_id: i64) -> Result<RunDetail> {
        self.get(self.url(&["api", "v1", "runs", &run_id.to_string()]), &[]).await
    }

    /// Log lines of a run with `seq > after` (0: from the start), at most `limit` (server default 1000).
    pub async fn logs(&self, run_id: i64, after: i64, limit: Option<u32>) -> Result<LogPage> {
        let mut query: Vec<(&str, String)> = vec![("after", after.to_string())];
        if let Some(l) = limit {
            query.push(("limit", l.to_string()));
        }
        self.get(self.url(&["api", "v1", "runs", &run_id.to_string(), "logs"]), &query).await
    }

    /// Cancels a run that has not finished (`conflict` if it has). `reason` is recorded on the run.
    pub async fn cancel_run(&self, run_id: i64, reason: Option<&str>) -> Result<RunView> {
        let body = reason.map(|r| json!({ "reason": r }));
        self.post(self.url(&["api", "v1", "runs", &run_id.to_string(), "cancel"]), body).await
    }

    // ---------------------------------------------------------------------------------------------------------
    // Cluster
    // ---------------------------------------------------------------------------------------------------------

    /// The scheduler nodes sharing the server's store, the shards each holds (with lease expiry and lag), and
    /// the shards nobody holds: `GET /api/v1/cluster`.
    pub async fn cluster(&self) -> Result<ClusterView> {
        self.get(self.url(&["api", "v1", "cluster"]), &[]).await
    }

    /// Registered executor nodes (alive or recently expired), optionally of one service:
    /// `GET /api/v1/executors`.
    pub async fn executors(&self, service: Option<&str>) -> Result<Vec<ExecutorNodeView>> {
        let query: Vec<(&str, String)> = service.map(|s| ("service", s.to_string())).into_iter().collect();
        let list: ExecutorList = self.get(self.url(&["api", "v1", "executors"]), &query).await?;
        Ok(list.items)
    }

    // ---------------------------------------------------------------------------------------------------------
    // Executor nodes
    // ---------------------------------------------------------------------------------------------------------

    /// Registers an executor node (or re-registers it after a restart or a lost registration):
    /// `POST /api/v1/executors`. The answer says how often to heartbeat.
    pub async fn register_executor(&self, registration: &ExecutorRegistration) -> Result<ExecutorLease> {
        let url = self.url(&["api", "v1", "executors"]);
        let req = self.http.post(url.clone()).json(registration);
        Ok(self.send(req, &url).await?.1)
    }

    /// Keeps an executor node's registration alive: `POST /api/v1/executors/{id}/heartbeat`. `not_found` means
    /// the scheduler forgot the node (it expired): register it again.
    pub async fn executor_heartbeat(&self, id: &str) -> Result<ExecutorLease> {
        let url = self.url(&["api", "v1", "executors", id, "heartbeat"]);
        Ok(self.send(self.http.post(url.clone()), &url).await?.1)
    }

    /// Marks an executor node draining (it finishes what it runs and is chosen for nothing new):
    /// `POST /api/v1/executors/{id}/drain`.
    pub async fn drain_executor(&self, id: &str) -> Result<()> {
        let url = self.url(&["api", "v1", "executors", id, "drain"]);
        self.send_empty(self.http.post(url.clone()), &url).await
    }

    /// Removes an executor node's registration: `DELETE /api/v1/executors/{id}`.
    pub async fn deregister_executor(&self, id: &str) -> Result<()> {
        let url = self.url(&["api", "v1", "executors", id]);
        self.send_empty(self.http.delete(url.clone()), &url).await
    }

    // ---------------------------------------------------------------------------------------------------------
    // Access: tokens, role bindings, audit log
    // ---------------------------------------------------------------------------------------------------------

    /// Creates an API token: `POST /api/v1/tokens`. The answer's `token` is shown only this once.
    pub async fn create_token(&self, token: &NewToken) -> Result<CreatedToken> {
        let url = self.url(&["api", "v1", "tokens"]);
        let req = self.http.post(url.clone()).json(token);
        Ok(self.send(req, &url).await?.1)
    }

    /// One page of the tokens the caller may manage: `GET /api/v1/tokens`.
    pub async fn list_tokens(&self, cursor: Option<&str>, limit: Option<u32>) -> Result<TokenList> {
        let mut query = Vec::new();
        push_page(&mut query, cursor, limit);
        self.get(self.url(&["api", "v1", "tokens"]), &query).await
    }

    /// Every token the caller may manage, following the pages.
    pub async fn list_all_tokens(&self) -> Result<Vec<TokenView>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self.list_tokens(cursor.as_deref(), Some(1000)).await?;
            out.extend(page.items);
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(out),
            }
        }
    }

    /// Revokes a token by id: `DELETE /api/v1/tokens/{id}`.
    pub async fn revoke_token(&self, id: &str) -> Result<TokenView> {
        let url = self.url(&["api", "v1", "tokens", id]);
        Ok(self.send(self.http.delete(url.clone()), &url).await?.1)
    }

    /// Binds `role` to an OIDC subject or group (`kind`: `subject` or `group`) in `namespace` (`*`:
    /// cluster-wide): `PUT /api/v1/role-bindings/{namespace}/{kind}/{subject}`.
    pub async fn put_role_binding(
        &self,
        namespace: &str,
        kind: &str,
        subject: &str,
        role: &str,
    ) -> Result<RoleBindingView> {
        let url = self.url(&["api", "v1", "role-bindings", namespace, kind, subject]);
        let req = self.http.put(url.clone()).json(&json!({ "role": role }));
        Ok(self.send(req, &url).await?.1)
    }

    /// Role bindings, of one namespace or (cluster admin) all: `GET /api/v1/role-bindings`.
    pub async fn list_role_bindings(&self, namespace: Option<&str>) -> Result<Vec<RoleBindingView>> {
        let query: Vec<(&str, String)> = namespace.map(|n| ("namespace", n.to_string())).into_iter().collect();
        let list: RoleBindingList = self.get(self.url(&["api", "v1", "role-bindings"]), &query).await?;
        Ok(list.items)
    }

    /// Removes a role binding: `DELETE /api/v1/role-bindings/{namespace}/{kind}/{subject}`.
    pub async fn delete_role_binding(&self, namespace: &str, kind: &str, subject: &str) -> Result<()> {
        let url = self.url(&["api", "v1", "role-bindings", namespace, kind, subject]);
        self.send_empty(self.http.delete(url.clone()), &url).await
    }

    /// One page of the audit log, newest first (cluster admin): `GET /api/v1/audit`.
    pub async fn audit(&self, filter: &AuditFilter, cursor: Option<&str>, limit: Option<u32>) -> Result<AuditList> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(v) = &filter.actor {
            query.push(("actor", v.clone()));
        }
        if let Some(v) = &filter.action {
            query.push(("action", v.clone()));
        }
        if let Some(v) = &filter.resource {
            query.push(("resource", v.clone()));
        }
        if let Some(v) = filter.from {
            query.push(("from", v.to_rfc3339()));
        }
        if let Some(v) = filter.to {
            query.push(("to", v.to_rfc3339()));
        }
        push_page(&mut query, cursor, limit);
        self.get(self.url(&["api", "v1", "audit"]), &query).await
    }

    // ---------------------------------------------------------------------------------------------------------
    // Probes
    // ---------------------------------------------------------------------------------------------------------

    /// Liveness: `GET /healthz`.
    pub async fn health(&self) -> Result<HealthView> {
        self.get(self.url(&["healthz"]), &[]).await
    }

    /// Readiness: `GET /readyz` (fails with `unavailable` while the store is unreachable).
    pub async fn ready(&self) -> Result<HealthView> {
        self.get(self.url(&["readyz"]), &[]).await
    }

    // ---------------------------------------------------------------------------------------------------------
    // Plumbing
    // ---------------------------------------------------------------------------------------------------------

    /// The base URL with `segments` appended, each percent-encoded as one path segment.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        {
            let mut path = url.path_segments_mut().expect("checked in with_http_client");
            path.pop_if_empty();
            path.extend(segments);
        }
        url
    }

    async fn get<T: DeserializeOwned>(&self, url: Url, query: &[(&str, String)]) -> Result<T> {
        let req = self.http.get(url.clone()).query(query);
        Ok(self.send(req, &url).await?.1)
    }

    async fn post<T: DeserializeOwned>(&self, url: Url, body: Option<serde_json::Value>) -> Result<T> {
        let mut req = self.http.post(url.clone());
        if let Some(body) = body {
            req = req.json(&body);
        }
        Ok(self.send(req, &url).await?.1)
    }

    async fn send_raw(&self, req: reqwest::RequestBuilder, url: &Url) -> Result<(StatusCode, Vec<u8>)> {
        let transport =
            |e: reqwest::Error| ClientError::Transport { url: origin(url), reason: error_chain(&e), source: e };
        let mut req = req.header(ACCEPT, "application/json");
        if let Some(auth) = &self.auth {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        let res = req.send().await.map_err(transport)?;
        let status = res.status();
        let body = res.bytes().await.map_err(transport)?.to_vec();
        if status.is_success() {
            return Ok((status, body));
        }
        match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(err) => Err(ClientError::Api {
                status: status.as_u16(),
                code: err.error.code,
                message: err.error.message,
                details: err.error.details,
            }),
            Err(_) => Err(ClientError::Unexpected {
                url: url.to_string(),
                status: status.as_u16(),
                reason: format!("not an API error body: {}", excerpt(&body)),
            }),
        }
    }

    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder, url: &Url) -> Result<(StatusCode, T)> {
        let (status, body) = self.send_raw(req, url).await?;
        let value = serde_json::from_slice::<T>(&body).map_err(|e| ClientError::Unexpected {
            url: url.to_string(),
            status: status.as_u16(),
            reason: format!("cannot decode the answer ({e}): {}", excerpt(&body)),
        })?;
        Ok((status, value))
    }

    async fn send_empty(&self, req: reqwest::RequestBuilder, url: &Url) -> Result<()> {
        self.send_raw(req, url).await.map(|_| ())
    }
}

fn push_page(query: &mut Vec<(&str, String)>, cursor: Option<&str>, limit: Option<u32>) {
    if let Some(c) = cursor {
        query.push(("cursor", c.to_string()));
    }
    if let Some(l) = limit {
        query.push(("limit", l.to_string()));
    }
}

/// `scheme://host:port` of a URL (what messages name; never a path or query).
fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// The root cause of a transport error (`Connection refused (os error 111)`, `operation timed out`), without the
/// URL and the layers of client plumbing reqwest puts around it.
fn error_chain(e: &reqwest::Error) -> String {
    let mut root = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        root = s.to_string();
        source = s.source();
    }
    if e.is_timeout() && !root.contains("timed out") {
        root.push_str(" (timed out)");
    }
    root
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".into();
    }
    let cut: String = text.chars().take(200).collect();
    if cut.len() < text.len() { format!("{cut}…") } else { cut }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_the_base_path_and_encode_segments() {
        let c = Client::new("http://127.0.0.1:7070").unwrap();
        assert_eq!(
            c.url(&["api", "v1", "tasks", "a b", "x/y"]).as_str(),
            "http://127.0.0.1:7070/api/v1/tasks/a%20b/x%2Fy"
        );
        let c = Client::new("http://h:1/rota/").unwrap();
        assert_eq!(c.url(&["healthz"]).as_str(), "http://h:1/rota/healthz");
        let c = Client::new("http://h:1/rota").unwrap();
        assert_eq!(c.url(&["healthz"]).as_str(), "http://h:1/rota/healthz");
        assert!(matches!(Client::new("ftp://h"), Err(ClientError::InvalidUrl { .. })));
        assert!(matches!(Client::new("127.0.0.1:7070"), Err(ClientError::InvalidUrl { .. })));
    }

    #[tokio::test]
    async fn unreachable_servers_are_transport_errors() {
        // Port 9 (discard) on localhost is closed on any sane test machine.
        let c = Client::new("http://127.0.0.1:9").unwrap();
        let err = c.health().await.unwrap_err();
        assert!(matches!(err, ClientError::Transport { .. }), "{err:?}");
        assert!(err.to_string().starts_with("cannot reach the rota server at http://127.0.0.1:9: "), "{err}");
        assert_eq!(err.code(), None);
    }
}
