//! [`ContainerRuntime`] over the Docker Engine API (bollard), which Docker and Podman both serve.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, KillContainerOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures::StreamExt;
use serde::Deserialize;

use super::{
    ContainerInfo, ContainerRuntime, ContainerSpec, ImageInfo, LogChunk, LogChunks, LogStream, RuntimeError, WaitStatus,
};

/// The socket used when neither an endpoint nor `DOCKER_HOST` is given.
pub const DEFAULT_DOCKER_SOCKET: &str = "unix:///var/run/docker.sock";

/// Slack added to the HTTP timeout of long requests (wait, stop, pull) beyond their own bound.
const SLACK: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
enum Transport {
    Unix(String),
    Http(String),
}

/// A Docker Engine API client: Docker, or Podman's Docker-compatible service
/// (`podman system service unix:///run/podman/podman.sock`).
///
/// Connecting is lazy: constructing never fails because the runtime is down, and every operation reconnects
/// (negotiating the API version with the server) after the runtime was unreachable, so the executor keeps
/// working when it comes back.
pub struct DockerRuntime {
    endpoint: String,
    transport: Transport,
    api_timeout: Duration,
    client: tokio::sync::Mutex<Option<Docker>>,
    /// Plain JSON access for listing: bollard's typed container summaries reject states Podman reports
    /// (`stopped`, `configured`).
    raw: reqwest::Client,
    raw_base: String,
}

impl std::fmt::Debug for DockerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerRuntime")
            .field("endpoint", &self.endpoint)
            .field("api_timeout", &self.api_timeout)
            .finish()
    }
}

impl DockerRuntime {
    /// A client for `endpoint`: `unix:///path/to.sock`, a bare socket path (`/run/podman/podman.sock`),
    /// `tcp://host:port` or `http://host:port` (plain HTTP; TLS is not supported yet).
    pub fn new(endpoint: &str) -> Result<Self, RuntimeError> {
        let endpoint = endpoint.trim();
        let transport = if let Some(path) = endpoint.strip_prefix("unix://") {
            Transport::Unix(path.to_string())
        } else if endpoint.starts_with('/') {
            Transport::Unix(endpoint.to_string())
        } else if let Some(rest) = endpoint.strip_prefix("tcp://") {
            Transport::Http(format!("http://{rest}"))
        } else if endpoint.starts_with("http://") {
            Transport::Http(endpoint.to_string())
        } else {
            return Err(RuntimeError::Api(format!(
                "unsupported container runtime endpoint {endpoint:?}: use unix:///path, /path, tcp://host:port or \
                 http://host:port"
            )));
        };
        let endpoint = match &transport {
            Transport::Unix(p) => format!("unix://{p}"),
            Transport::Http(u) => u.clone(),
        };
        rota_tls::install_crypto_provider();
        let builder = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
        let (builder, raw_base) = match &transport {
            Transport::Unix(path) => (builder.unix_socket(path.as_str()), "http://localhost".to_string()),
            Transport::Http(url) => (builder, url.trim_end_matches('/').to_string()),
        };
        let raw = builder.build().map_err(|e| RuntimeError::Api(format!("cannot build an HTTP client: {e}")))?;
        Ok(DockerRuntime {
            endpoint,
            transport,
            api_timeout: Duration::from_secs(60),
            client: Default::default(),
            raw,
            raw_base,
        })
    }

    /// A client for `$DOCKER_HOST`, or [`DEFAULT_DOCKER_SOCKET`] when it is unset.
    pub fn from_env() -> Result<Self, RuntimeError> {
        match std::env::var("DOCKER_HOST") {
            Ok(host) if !host.trim().is_empty() => DockerRuntime::new(&host),
            _ => DockerRuntime::new(DEFAULT_DOCKER_SOCKET),
        }
    }

    /// Bound on each short API call (create, start, inspect, remove, …). Default 60 s.
    pub fn with_api_timeout(mut self, timeout: Duration) -> Self {
        self.api_timeout = timeout;
        self
    }

    fn unavailable(&self, reason: impl Into<String>) -> RuntimeError {
        RuntimeError::Unavailable { endpoint: self.endpoint.clone(), reason: reason.into() }
    }

    /// The connected client (API version negotiated), connecting when needed.
    async fn client(&self) -> Result<Docker, RuntimeError> {
        let mut cached = self.client.lock().await;
        if let Some(c) = cached.as_ref() {
            return Ok(c.clone());
        }
        let secs = self.api_timeout.as_secs().max(1);
        let docker = match &self.transport {
            Transport::Unix(path) => {
                if !std::path::Path::new(path).exists() {
                    return Err(self.unavailable("no such socket"));
                }
                Docker::connect_with_unix(path, secs, bollard::API_DEFAULT_VERSION)
            }
            Transport::Http(url) => Docker::connect_with_http(url, secs, bollard::API_DEFAULT_VERSION),
        }
        .map_err(|e| self.unavailable(e.to_string()))?;
        let docker = match tokio::time::timeout(self.api_timeout, docker.negotiate_version()).await {
            Err(_) => return Err(self.unavailable(format!("no answer within {:?}", self.api_timeout))),
            Ok(Err(e)) => return Err(self.unavailable(e.to_string())),
            Ok(Ok(d)) => d,
        };
        *cached = Some(docker.clone());
        Ok(docker)
    }

    /// Maps a bollard error; forgets the connection when the runtime was unreachable.
    async fn error(&self, e: BollardError) -> RuntimeError {
        let mapped = match e {
            BollardError::DockerResponseServerError { status_code: 404, message } => RuntimeError::NotFound(message),
            BollardError::DockerResponseServerError { message, .. }
                if message.to_ascii_lowercase().contains("no such container") =>
            {
                RuntimeError::NotFound(message)
            }
            BollardError::DockerResponseServerError { status_code, message } => {
                RuntimeError::Api(format!("the runtime answered {status_code}: {}", message.trim()))
            }
            BollardError::DockerStreamError { error } => RuntimeError::Api(error),
            BollardError::JsonDataError { .. } | BollardError::JsonSerdeError { .. } => {
                RuntimeError::Api(format!("unexpected answer from the runtime: {e}"))
            }
            BollardError::RequestTimeoutError => self.unavailable("no answer in time"),
            other => self.unavailable(other.to_string()),
        };
        if matches!(mapped, RuntimeError::Unavailable { .. }) {
            *self.client.lock().await = None;
        }
        mapped
    }

    /// Runs a short call bounded by the API timeout.
    async fn call<T>(&self, fut: impl Future<Output = Result<T, BollardError>>) -> Result<T, RuntimeError> {
        match tokio::time::timeout(self.api_timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.error(e).await),
            Err(_) => {
                *self.client.lock().await = None;
                Err(self.unavailable(format!("no answer within {:?}", self.api_timeout)))
            }
        }
    }
}

/// `image` with `:latest` when it names neither a tag nor a digest (the API would pull every tag otherwise).
fn with_default_tag(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') || last.contains(':') { image.to_string() } else { format!("{image}:latest") }
}

/// The Docker API body creating `spec`'s container.
pub(crate) fn create_body(spec: &ContainerSpec) -> ContainerCreateBody {
    let non_empty = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        entrypoint: non_empty(&spec.command),
        cmd: non_empty(&spec.args),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        working_dir: spec.working_dir.clone(),
        labels: Some(spec.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        attach_stdin: Some(false),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(false),
        open_stdin: Some(false),
        host_config: Some(HostConfig {
            nano_cpus: spec.limits.nano_cpus,
            memory: spec.limits.memory_bytes,
            network_mode: spec.network.clone(),
            auto_remove: Some(false),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    }
}

#[async_trait]
impl ContainerRuntime for DockerRuntime {
    fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    async fn inspect_image(&self, image: &str) -> Result<Option<ImageInfo>, RuntimeError> {
        let docker = self.client().await?;
        match self.call(docker.inspect_image(image)).await {
            Ok(i) => Ok(Some(ImageInfo { id: i.id.unwrap_or_default() })),
            Err(RuntimeError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn pull_image(&self, image: &str) -> Result<(), RuntimeError> {
        let docker = self.client().await?;
        let reference = with_default_tag(image);
        let options = CreateImageOptionsBuilder::new().from_image(&reference).build();
        // Pulls are long: bounded by the caller (the attempt's deadline), not by the API timeout.
        let docker = docker.with_timeout(Duration::from_secs(24 * 3600));
        let mut progress = docker.create_image(Some(options), None, None);
        while let Some(item) = progress.next().await {
            match item {
                Ok(info) => {
                    if let Some(message) = info.error_detail.and_then(|d| d.message) {
                        return Err(RuntimeError::Api(message));
                    }
                }
                Err(e) => return Err(self.error(e).await),
            }
        }
        Ok(())
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let docker = self.client().await?;
        let options = CreateContainerOptionsBuilder::new().name(&spec.name).build();
        let created = self.call(docker.create_container(Some(options), create_body(spec))).await?;
        Ok(created.id)
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let docker = self.client().await?;
        self.call(docker.start_container(id, None)).await
    }

    async fn wait(&self, id: &str, timeout: Duration) -> Result<WaitStatus, RuntimeError> {
        let docker = self.client().await?.with_timeout(timeout + SLACK);
        let mut waiting = docker.wait_container(id, None);
        let code = match tokio::time::timeout(timeout, waiting.next()).await {
            Err(_) => return Ok(WaitStatus::TimedOut),
            Ok(None) => return Err(RuntimeError::Api("the runtime ended the wait without an exit code".into())),
            Ok(Some(Ok(r))) => r.status_code,
            Ok(Some(Err(BollardError::DockerContainerWaitError { code, .. }))) => code,
            Ok(Some(Err(e))) => return Err(self.error(e).await),
        };
        let oom_killed = match self.call(docker.inspect_container(id, None)).await {
            Ok(c) => c.state.and_then(|s| s.oom_killed).unwrap_or(false),
            Err(_) => false,
        };
        Ok(WaitStatus::Exited { code, oom_killed })
    }

    async fn logs(&self, id: &str, follow: bool) -> Result<LogChunks, RuntimeError> {
        let docker = self.client().await?.with_timeout(Duration::from_secs(24 * 3600));
        let options = LogsOptionsBuilder::new().follow(follow).stdout(true).stderr(true).build();
        let endpoint = self.endpoint.clone();
        let stream = docker.logs(id, Some(options)).filter_map(move |item| {
            let out = match item {
                Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                    Some(Ok(LogChunk { stream: LogStream::Stdout, data: message.to_vec() }))
                }
                Ok(LogOutput::StdErr { message }) => {
                    Some(Ok(LogChunk { stream: LogStream::Stderr, data: message.to_vec() }))
                }
                Ok(LogOutput::StdIn { .. }) => None,
                Err(e) => Some(Err(RuntimeError::Api(format!("reading output from {endpoint}: {e}")))),
            };
            futures::future::ready(out)
        });
        Ok(stream.boxed())
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let docker = self.client().await?;
        let secs = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        let options = StopContainerOptionsBuilder::new().t(secs).build();
        let docker = docker.with_timeout(grace + self.api_timeout);
        match tokio::time::timeout(grace + self.api_timeout, docker.stop_container(id, Some(options))).await {
            Err(_) => Err(self.unavailable("no answer to stop in time")),
            Ok(Ok(())) => Ok(()),
            // 304: already stopped.
            Ok(Err(BollardError::DockerResponseServerError { status_code: 304, .. })) => Ok(()),
            Ok(Err(e)) => match self.error(e).await {
                RuntimeError::NotFound(_) => Ok(()),
                e => Err(e),
            },
        }
    }

    async fn kill(&self, id: &str) -> Result<(), RuntimeError> {
        let docker = self.client().await?;
        let options = KillContainerOptionsBuilder::new().signal("SIGKILL").build();
        match tokio::time::timeout(self.api_timeout, docker.kill_container(id, Some(options))).await {
            Err(_) => Err(self.unavailable("no answer to kill in time")),
            Ok(Ok(())) => Ok(()),
            // 409: not running.
            Ok(Err(BollardError::DockerResponseServerError { status_code: 409, .. })) => Ok(()),
            Ok(Err(e)) => match self.error(e).await {
                RuntimeError::NotFound(_) => Ok(()),
                e => Err(e),
            },
        }
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let docker = self.client().await?;
        let options = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
        match self.call(docker.remove_container(id, Some(options))).await {
            Ok(()) | Err(RuntimeError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn list(&self, labels: &BTreeMap<String, String>) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let filters = serde_json::json!({ "label": wanted }).to_string();
        let request = self
            .raw
            .get(format!("{}/containers/json", self.raw_base))
            .query(&[("all", "true"), ("filters", filters.as_str())])
            .timeout(self.api_timeout);
        let response = request.send().await.map_err(|e| self.unavailable(error_chain(&e)))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| self.unavailable(error_chain(&e)))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            return Err(RuntimeError::Api(format!("the runtime answered {}: {}", status.as_u16(), text.trim())));
        }
        let found: Vec<RawSummary> = serde_json::from_slice(&body)
            .map_err(|e| RuntimeError::Api(format!("unexpected answer from the runtime: {e}")))?;
        Ok(found
            .into_iter()
            // Filter again: a runtime that ignored the filter must not make us touch foreign containers.
            .filter(|c| labels_match(&c.labels, &wanted))
            .map(|c| ContainerInfo {
                id: c.id,
                name: c.names.into_iter().next().map(|n| n.trim_start_matches('/').to_string()),
                labels: c.labels,
                state: c.state,
            })
            .collect())
    }
}

#[derive(serde::Deserialize)]
struct RawSummary {
    #[serde(rename = "Id")]
    id: String,
    #[serde(rename = "Names", default)]
    names: Vec<String>,
    #[serde(rename = "Labels", default, deserialize_with = "null_as_default")]
    labels: BTreeMap<String, String>,
    #[serde(rename = "State", default)]
    state: Option<String>,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + serde::Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// An error with its causes (reqwest's own message hides them: "error sending request").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn labels_match(labels: &BTreeMap<String, String>, wanted: &[String]) -> bool {
    wanted.iter().all(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        labels.get(k).is_some_and(|have| have == v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::Limits;
    use rota_spec::PullPolicy;

    #[test]
    fn endpoints() {
        assert_eq!(DockerRuntime::new("unix:///run/x.sock").unwrap().endpoint(), "unix:///run/x.sock");
        assert_eq!(DockerRuntime::new("/run/x.sock").unwrap().endpoint(), "unix:///run/x.sock");
        assert_eq!(DockerRuntime::new("tcp://10.0.0.1:2375").unwrap().endpoint(), "http://10.0.0.1:2375");
        assert!(DockerRuntime::new("ssh://host").unwrap_err().to_string().contains("unsupported"));
    }

    #[test]
    fn default_tags() {
        assert_eq!(with_default_tag("busybox"), "busybox:latest");
        assert_eq!(with_default_tag("localhost:5000/x"), "localhost:5000/x:latest");
        assert_eq!(with_default_tag("localhost:5000/x:1"), "localhost:5000/x:1");
        assert_eq!(with_default_tag("x@sha256:abc"), "x@sha256:abc");
    }

    #[test]
    fn create_body_carries_the_spec() {
        let spec = ContainerSpec {
            name: "rota-1-1-0000abcd".into(),
            image: "busybox".into(),
            command: vec!["sh".into(), "-c".into()],
            args: vec!["echo hi".into()],
            env: BTreeMap::from([("A".into(), "1".into())]),
            working_dir: Some("/tmp".into()),
            labels: BTreeMap::from([("rota.managed".into(), "true".into())]),
            network: Some("none".into()),
            limits: Limits { nano_cpus: Some(500_000_000), memory_bytes: Some(64 << 20) },
            pull_policy: PullPolicy::Never,
            timeout: Duration::from_secs(5),
        };
        let body = serde_json::to_value(create_body(&spec)).unwrap();
        assert_eq!(body["Entrypoint"], serde_json::json!(["sh", "-c"]));
        assert_eq!(body["Cmd"], serde_json::json!(["echo hi"]));
        assert_eq!(body["Env"], serde_json::json!(["A=1"]));
        assert_eq!(body["WorkingDir"], "/tmp");
        assert_eq!(body["Labels"]["rota.managed"], "true");
        assert_eq!(body["HostConfig"]["NanoCpus"], 500_000_000);
        assert_eq!(body["HostConfig"]["Memory"], 64 << 20);
        assert_eq!(body["HostConfig"]["NetworkMode"], "none");
        let bare = ContainerSpec { command: vec![], args: vec![], limits: Limits::default(), network: None, ..spec };
        let body = serde_json::to_value(create_body(&bare)).unwrap();
        assert!(body.get("Entrypoint").is_none() && body.get("Cmd").is_none());
        assert!(body["HostConfig"].get("NanoCpus").is_none() && body["HostConfig"].get("Memory").is_none());
    }
}
