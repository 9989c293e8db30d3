//! Kubernetes Jobs as a [`ContainerRuntime`] (cargo feature `kubernetes`).
//!
//! Each attempt is one `batch/v1` Job (`backoffLimit: 0`, `restartPolicy: Never`) whose single container is
//! named `task`. The manifest is plain JSON ([`job_manifest`]) sent with reqwest; there is no dependency on the
//! kube / k8s-openapi crates.
//!
//! | runtime operation | Kubernetes API |
//! | --- | --- |
//! | `create` | `POST /apis/batch/v1/namespaces/{ns}/jobs` with `spec.suspend: true` |
//! | `start` | merge-patch `{"spec":{"suspend":false}}` (the `activeDeadlineSeconds` clock starts here) |
//! | `wait` | polls the Job and its Pods (label `job-name`) and maps them with [`job_state`] |
//! | `logs` | `GET /api/v1/namespaces/{ns}/pods/{pod}/log?container=task` (stdout and stderr arrive merged, as `stdout`) |
//! | `stop` / `kill` | deletes the Job's Pods with `gracePeriodSeconds` = grace / 0 (SIGTERM, then SIGKILL) |
//! | `remove` | deletes the Pods (grace 0), then the Job with `propagationPolicy: Background` |
//! | `list` | `GET …/jobs?labelSelector=…` |
//! | images | the kubelet pulls per `imagePullPolicy` (`Always`, `IfNotPresent`, `Never` from `pullPolicy`); an image that cannot be pulled fails the attempt with the Pod's reason (`ErrImagePull`, `ImagePullBackOff`, `ErrImageNeverPull`, …) |
//!
//! Status: manifest construction and status mapping are unit-tested, and the whole executor flow is tested
//! against a fake API server; it has **not** been run against a real cluster yet. The API server is reached
//! over plain HTTP (e.g. `kubectl proxy`, `http://127.0.0.1:8001`) until Rota has TLS support; `https://` URLs
//! are rejected with a clear message.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use rota_spec::PullPolicy;
use serde_json::{Value, json};

use super::{
    ContainerInfo, ContainerRuntime, ContainerSpec, ImageInfo, LABEL_TASK, LogChunk, LogChunks, LogStream,
    RuntimeError, WaitStatus,
};

/// The name of the Job's only container.
pub const CONTAINER_NAME: &str = "task";

/// Where and how to create Jobs.
#[derive(Clone)]
pub struct KubernetesConfig {
    /// API server base URL, plain HTTP for now (e.g. `kubectl proxy` on `http://127.0.0.1:8001`).
    pub api_url: String,
    /// Namespace the Jobs are created in.
    pub namespace: String,
    /// Bearer token sent with every request (never logged nor shown in errors).
    pub token: Option<String>,
    /// Service account of the Pods (namespace default when `None`).
    pub service_account: Option<String>,
    /// `ttlSecondsAfterFinished` of every Job, so the cluster removes Jobs Rota could not. Default 600.
    pub ttl_seconds_after_finished: u32,
    /// How often `wait` polls the Job. Default 1 s.
    pub poll_interval: Duration,
    /// Bound on each API call. Default 30 s.
    pub api_timeout: Duration,
}

impl KubernetesConfig {
    pub fn new(api_url: impl Into<String>, namespace: impl Into<String>) -> Self {
        KubernetesConfig {
            api_url: api_url.into(),
            namespace: namespace.into(),
            token: None,
            service_account: None,
            ttl_seconds_after_finished: 600,
            poll_interval: Duration::from_secs(1),
            api_timeout: Duration::from_secs(30),
        }
    }
}

impl std::fmt::Debug for KubernetesConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesConfig")
            .field("api_url", &self.api_url)
            .field("namespace", &self.namespace)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("service_account", &self.service_account)
            .field("ttl_seconds_after_finished", &self.ttl_seconds_after_finished)
            .field("poll_interval", &self.poll_interval)
            .field("api_timeout", &self.api_timeout)
            .finish()
    }
}

/// A label value as Kubernetes accepts it: at most 63 characters of `[A-Za-z0-9._-]`, starting and ending
/// alphanumeric. Other characters become `.` (so the task key `billing/nightly` becomes `billing.nightly`).
pub fn label_value(v: &str) -> String {
    let mapped: String =
        v.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '.' }).collect();
    let cut: String = mapped.chars().take(63).collect();
    cut.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_string()
}

/// The Job of an attempt, created suspended.
pub fn job_manifest(spec: &ContainerSpec, config: &KubernetesConfig) -> Result<Value, RuntimeError> {
    let labels: BTreeMap<&str, String> = spec.labels.iter().map(|(k, v)| (k.as_str(), label_value(v))).collect();
    let mut annotations = BTreeMap::new();
    if let Some(task) = spec.labels.get(LABEL_TASK) {
        annotations.insert(LABEL_TASK, task.clone());
    }
    let env: Vec<Value> = spec.env.iter().map(|(k, v)| json!({"name": k, "value": v})).collect();
    let mut container = json!({
        "name": CONTAINER_NAME,
        "image": spec.image,
        "imagePullPolicy": match spec.pull_policy {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        },
        "env": env,
    });
    if !spec.command.is_empty() {
        container["command"] = json!(spec.command);
    }
    if !spec.args.is_empty() {
        container["args"] = json!(spec.args);
    }
    if let Some(wd) = &spec.working_dir {
        container["workingDir"] = json!(wd);
    }
    let mut limits = serde_json::Map::new();
    if let Some(n) = spec.limits.nano_cpus {
        limits.insert("cpu".into(), json!(format!("{}m", (n / 1_000_000).max(1))));
    }
    if let Some(m) = spec.limits.memory_bytes {
        limits.insert("memory".into(), json!(m.to_string()));
    }
    if !limits.is_empty() {
        // Requests default to the limits.
        container["resources"] = json!({ "limits": limits });
    }
    let mut pod_spec = json!({
        "restartPolicy": "Never",
        "containers": [container],
    });
    match spec.network.as_deref() {
        None | Some("default") | Some("bridge") => {}
        Some("host") => pod_spec["hostNetwork"] = json!(true),
        Some(other) => {
            return Err(RuntimeError::Api(format!(
                "target.container.network {other:?} is not supported on Kubernetes (only \"host\" or the default)"
            )));
        }
    }
    if let Some(sa) = &config.service_account {
        pod_spec["serviceAccountName"] = json!(sa);
    }
    let deadline = spec.timeout.as_secs() + u64::from(spec.timeout.subsec_nanos() > 0);
    Ok(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": spec.name,
            "namespace": config.namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {
            "suspend": true,
            "backoffLimit": 0,
            "activeDeadlineSeconds": deadline.max(1),
            "ttlSecondsAfterFinished": config.ttl_seconds_after_finished,
            "template": {
                "metadata": { "labels": labels, "annotations": annotations },
                "spec": pod_spec,
            },
        },
    }))
}

/// Where a Job stands, from its status and its Pods' (see [`job_state`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Not running yet (suspended, scheduling, pulling the image).
    Pending,
    Running,
    /// The container exited.
    Exited {
        code: i64,
        oom_killed: bool,
    },
    /// `activeDeadlineSeconds` passed.
    DeadlineExceeded,
    /// The container could not run (image pull failure, bad configuration, eviction): the message says why.
    Failed(String),
}

/// Pod waiting reasons that will not resolve by themselves.
const FATAL_WAITING: [&str; 7] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

fn text(v: &Value, pointer: &str) -> Option<String> {
    v.pointer(pointer).and_then(Value::as_str).map(str::to_string)
}

/// Maps a Job (`GET …/jobs/{name}`) and its Pod list (`GET …/pods?labelSelector=job-name={name}`) to a state.
pub fn job_state(job: &Value, pods: &Value) -> JobState {
    let conditions = job.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    let condition = |kind: &str| {
        conditions.iter().find(|c| {
            c.get("type").and_then(Value::as_str) == Some(kind)
                && c.get("status").and_then(Value::as_str) == Some("True")
        })
    };
    let items = pods.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
    let statuses: Vec<&Value> = items
        .iter()
        .filter_map(|p| p.pointer("/status/containerStatuses").and_then(Value::as_array))
        .flatten()
        .filter(|s| s.get("name").and_then(Value::as_str) == Some(CONTAINER_NAME))
        .collect();
    let terminated = statuses.iter().find_map(|s| s.pointer("/state/terminated")).map(|t| JobState::Exited {
        code: t.get("exitCode").and_then(Value::as_i64).unwrap_or(-1),
        oom_killed: t.get("reason").and_then(Value::as_str) == Some("OOMKilled"),
    });

    if condition("Complete").is_some() || condition("SuccessCriteriaMet").is_some() {
        return terminated.unwrap_or(JobState::Exited { code: 0, oom_killed: false });
    }
    if let Some(failed) = condition("Failed").or_else(|| condition("FailureTarget")) {
        if failed.get("reason").and_then(Value::as_str) == Some("DeadlineExceeded") {
            return JobState::DeadlineExceeded;
        }
        if let Some(t) = terminated {
            return t;
        }
        let reason = text(failed, "/reason").unwrap_or_else(|| "Failed".into());
        let message = text(failed, "/message").unwrap_or_default();
        return JobState::Failed(format!("the Job failed: {reason}: {message}").trim_end_matches(": ").to_string());
    }
    // The Job controller lags behind the Pods: a terminated container is final with restartPolicy Never.
    if let Some(t) = terminated {
        return t;
    }
    for pod in &items {
        if text(pod, "/status/phase").as_deref() == Some("Failed") {
            let reason = text(pod, "/status/reason").unwrap_or_default();
            if reason == "DeadlineExceeded" {
                return JobState::DeadlineExceeded;
            }
            let message = text(pod, "/status/message").unwrap_or_default();
            return JobState::Failed(format!("the Pod failed: {reason}: {message}"));
        }
    }
    for s in &statuses {
        if let Some(w) = s.pointer("/state/waiting") {
            let reason = text(w, "/reason").unwrap_or_default();
            if FATAL_WAITING.contains(&reason.as_str()) {
                let message = text(w, "/message").unwrap_or_default();
                let image = text(s, "/image").unwrap_or_default();
                return JobState::Failed(if reason.contains("Image") {
                    format!("image {image} could not be pulled: {reason}: {message}")
                } else {
                    format!("the container could not be created: {reason}: {message}")
                });
            }
        }
    }
    if statuses.iter().any(|s| s.pointer("/state/running").is_some()) {
        return JobState::Running;
    }
    JobState::Pending
}

/// One Job per attempt on a Kubernetes cluster.
pub struct KubernetesRuntime {
    config: KubernetesConfig,
    base: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for KubernetesRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesRuntime").field("config", &self.config).finish()
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters (for path segments and query values).
fn encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl KubernetesRuntime {
    pub fn new(config: KubernetesConfig) -> Result<Self, RuntimeError> {
        let base = config.api_url.trim_end_matches('/').to_string();
        if base.starts_with("https://") {
            return Err(RuntimeError::Api(format!(
                "the Kubernetes API server {base} needs TLS, which Rota does not support yet: reach it through \
                 `kubectl proxy` (http://127.0.0.1:8001)"
            )));
        }
        if !base.starts_with("http://") {
            return Err(RuntimeError::Api(format!("the Kubernetes API URL {base:?} must start with http://")));
        }
        rota_tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| RuntimeError::Api(format!("cannot build an HTTP client: {e}")))?;
        Ok(KubernetesRuntime { config, base, http })
    }

    pub fn config(&self) -> &KubernetesConfig {
        &self.config
    }

    fn jobs(&self) -> String {
        format!("{}/apis/batch/v1/namespaces/{}/jobs", self.base, encode(&self.config.namespace))
    }

    fn pods(&self) -> String {
        format!("{}/api/v1/namespaces/{}/pods", self.base, encode(&self.config.namespace))
    }

    fn request(&self, method: Method, url: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, url).header("accept", "application/json");
        if let Some(token) = &self.config.token {
            r = r.bearer_auth(token);
        }
        r
    }

    fn unavailable(&self, e: &reqwest::Error) -> RuntimeError {
        let mut reason = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            reason.push_str(": ");
            reason.push_str(&s.to_string());
            source = s.source();
        }
        RuntimeError::Unavailable { endpoint: self.base.clone(), reason }
    }

    /// Sends a request and decodes a JSON answer; `404` is [`RuntimeError::NotFound`].
    async fn send(&self, request: reqwest::RequestBuilder, what: &str) -> Result<Value, RuntimeError> {
        let response = request.timeout(self.config.api_timeout).send().await.map_err(|e| self.unavailable(&e))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| self.unavailable(&e))?;
        if status == StatusCode::NOT_FOUND {
            return Err(RuntimeError::NotFound(what.to_string()));
        }
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if !status.is_success() {
            let message = text(&value, "/message").unwrap_or_else(|| {
                String::from_utf8_lossy(&body).chars().take(256).collect::<String>().trim().to_string()
            });
            return Err(RuntimeError::Api(format!(
                "the Kubernetes API answered {} for {what}: {message}",
                status.as_u16()
            )));
        }
        Ok(value)
    }

    async fn job_pods(&self, name: &str) -> Result<Value, RuntimeError> {
        let url = format!("{}?labelSelector={}", self.pods(), encode(&format!("job-name={name}")));
        self.send(self.request(Method::GET, &url), &format!("pods of job {name}")).await
    }

    async fn delete_pods(&self, name: &str, grace: Duration) -> Result<(), RuntimeError> {
        let pods = match self.job_pods(name).await {
            Err(RuntimeError::NotFound(_)) => return Ok(()),
            other => other?,
        };
        for pod in pods.get("items").and_then(Value::as_array).into_iter().flatten() {
            let Some(pod_name) = text(pod, "/metadata/name") else { continue };
            let url = format!("{}/{}", self.pods(), encode(&pod_name));
            let body = json!({"gracePeriodSeconds": grace.as_secs()});
            match self.send(self.request(Method::DELETE, &url).json(&body), &format!("pod {pod_name}")).await {
                Ok(_) | Err(RuntimeError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[async_trait]
impl ContainerRuntime for KubernetesRuntime {
    fn endpoint(&self) -> String {
        self.base.clone()
    }

    fn applies_pull_policy(&self) -> bool {
        true
    }

    async fn inspect_image(&self, image: &str) -> Result<Option<ImageInfo>, RuntimeError> {
        Err(RuntimeError::Api(format!(
            "cannot inspect {image}: on Kubernetes the kubelet pulls images according to imagePullPolicy"
        )))
    }

    async fn pull_image(&self, _image: &str) -> Result<(), RuntimeError> {
        Ok(()) // the kubelet pulls, per the Pod's imagePullPolicy
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let manifest = job_manifest(spec, &self.config)?;
        let created =
            self.send(self.request(Method::POST, &self.jobs()).json(&manifest), &format!("job {}", spec.name)).await?;
        Ok(text(&created, "/metadata/name").unwrap_or_else(|| spec.name.clone()))
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let url = format!("{}/{}", self.jobs(), encode(id));
        let patch = json!({"spec": {"suspend": false}}).to_string();
        let request =
            self.request(Method::PATCH, &url).header("content-type", "application/merge-patch+json").body(patch);
        self.send(request, &format!("job {id}")).await.map(|_| ())
    }

    async fn wait(&self, id: &str, timeout: Duration) -> Result<WaitStatus, RuntimeError> {
        let until = tokio::time::Instant::now() + timeout;
        let url = format!("{}/{}", self.jobs(), encode(id));
        loop {
            let job = self.send(self.request(Method::GET, &url), &format!("job {id}")).await?;
            let pods = self.job_pods(id).await?;
            match job_state(&job, &pods) {
                JobState::Exited { code, oom_killed } => return Ok(WaitStatus::Exited { code, oom_killed }),
                JobState::DeadlineExceeded => return Ok(WaitStatus::TimedOut),
                JobState::Failed(message) => return Err(RuntimeError::CannotRun(message)),
                JobState::Pending | JobState::Running => {}
            }
            let now = tokio::time::Instant::now();
            if now >= until {
                return Ok(WaitStatus::TimedOut);
            }
            tokio::time::sleep(self.config.poll_interval.min(until - now)).await;
        }
    }

    async fn logs(&self, id: &str, follow: bool) -> Result<LogChunks, RuntimeError> {
        let pods = self.job_pods(id).await?;
        let newest = pods
            .get("items")
            .and_then(Value::as_array)
            .and_then(|items| items.iter().max_by_key(|p| text(p, "/metadata/creationTimestamp")))
            .and_then(|p| text(p, "/metadata/name"));
        let Some(pod) = newest else { return Ok(futures::stream::empty().boxed()) };
        let mut url = format!("{}/{}/log?container={CONTAINER_NAME}", self.pods(), encode(&pod));
        if follow {
            url.push_str("&follow=true");
        }
        let mut request = self.request(Method::GET, &url);
        if !follow {
            request = request.timeout(self.config.api_timeout);
        }
        let response = request.send().await.map_err(|e| self.unavailable(&e))?;
        match response.status() {
            s if s.is_success() => {}
            // The container has not started yet: no output so far.
            StatusCode::BAD_REQUEST => return Ok(futures::stream::empty().boxed()),
            StatusCode::NOT_FOUND => return Err(RuntimeError::NotFound(format!("pod {pod}"))),
            s => {
                return Err(RuntimeError::Api(format!(
                    "the Kubernetes API answered {} for the logs of {pod}",
                    s.as_u16()
                )));
            }
        }
        let endpoint = self.base.clone();
        let stream = futures::stream::unfold(Some(response), move |state| {
            let endpoint = endpoint.clone();
            async move {
                let mut response = state?;
                match response.chunk().await {
                    Ok(Some(bytes)) => {
                        Some((Ok(LogChunk { stream: LogStream::Stdout, data: bytes.to_vec() }), Some(response)))
                    }
                    Ok(None) => None,
                    Err(e) => Some((Err(RuntimeError::Api(format!("reading logs from {endpoint}: {e}"))), None)),
                }
            }
        });
        Ok(stream.boxed())
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        self.delete_pods(id, grace).await
    }

    async fn kill(&self, id: &str) -> Result<(), RuntimeError> {
        self.delete_pods(id, Duration::ZERO).await
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.delete_pods(id, Duration::ZERO).await?;
        let url = format!("{}/{}", self.jobs(), encode(id));
        let body = json!({"propagationPolicy": "Background"});
        match self.send(self.request(Method::DELETE, &url).json(&body), &format!("job {id}")).await {
            Ok(_) | Err(RuntimeError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn list(&self, labels: &BTreeMap<String, String>) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let selector: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={}", label_value(v))).collect();
        let url = format!("{}?labelSelector={}", self.jobs(), encode(&selector.join(",")));
        let jobs = self.send(self.request(Method::GET, &url), "jobs").await?;
        Ok(jobs
            .get("items")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|j| {
                let name = text(j, "/metadata/name")?;
                let labels: BTreeMap<String, String> = j
                    .pointer("/metadata/labels")
                    .and_then(Value::as_object)
                    .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
                    .unwrap_or_default();
                let state = match job_state(j, &Value::Null) {
                    JobState::Pending if j.pointer("/status/active").and_then(Value::as_i64).unwrap_or(0) > 0 => {
                        "running"
                    }
                    JobState::Pending => "pending",
                    JobState::Running => "running",
                    _ => "finished",
                };
                Some(ContainerInfo { id: name.clone(), name: Some(name), labels, state: Some(state.into()) })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::{
        ContainerExecutor, ContainerExecutorConfig, LABEL_ATTEMPT, LABEL_MANAGED, LABEL_OWNER, LABEL_RUN_ID,
        container_spec, tests::dispatch,
    };
    use rota_core::{DispatchOutcome, Executor, RunLogSink};
    use rota_proto::{ResultStatus, RunResult};
    use rota_spec::{ContainerTarget, CpuQuantity, Resources};
    use std::sync::{Arc, Mutex};

    fn target() -> ContainerTarget {
        ContainerTarget {
            image: "registry.example/reports:1.2".into(),
            command: vec!["/bin/report".into()],
            args: vec!["--daily".into()],
            env: BTreeMap::from([("MODE".into(), "fast".into())]),
            working_dir: Some("/work".into()),
            resources: Some(Resources { cpu: Some(CpuQuantity::parse("1.5").unwrap()), memory: Some("256Mi".into()) }),
            pull_policy: PullPolicy::Never,
            labels: BTreeMap::from([("team".into(), "finance".into())]),
            network: None,
        }
    }

    #[test]
    fn job_manifest_from_a_target_and_envelope() {
        let d = dispatch(target());
        let spec = container_spec(&d, d.target.container.as_ref().unwrap(), "node-1");
        let mut config = KubernetesConfig::new("http://127.0.0.1:8001", "rota-jobs");
        config.service_account = Some("runner".into());
        config.ttl_seconds_after_finished = 120;
        let job = job_manifest(&spec, &config).unwrap();

        assert_eq!(job["apiVersion"], "batch/v1");
        assert_eq!(job["kind"], "Job");
        assert_eq!(job["metadata"]["name"], spec.name);
        assert_eq!(job["metadata"]["namespace"], "rota-jobs");
        let labels = json!({
            LABEL_RUN_ID: "42", LABEL_TASK: "billing.nightly", LABEL_ATTEMPT: "2", LABEL_MANAGED: "true",
            LABEL_OWNER: "node-1", "team": "finance",
        });
        assert_eq!(job["metadata"]["labels"], labels);
        assert_eq!(job["metadata"]["annotations"], json!({LABEL_TASK: "billing/nightly"}));
        assert_eq!(job["spec"]["suspend"], true);
        assert_eq!(job["spec"]["backoffLimit"], 0);
        assert_eq!(job["spec"]["activeDeadlineSeconds"], 600);
        assert_eq!(job["spec"]["ttlSecondsAfterFinished"], 120);
        let pod = &job["spec"]["template"];
        assert_eq!(pod["metadata"]["labels"], labels);
        assert_eq!(pod["spec"]["restartPolicy"], "Never");
        assert_eq!(pod["spec"]["serviceAccountName"], "runner");
        assert!(pod["spec"].get("hostNetwork").is_none());
        let c = &pod["spec"]["containers"][0];
        assert_eq!(pod["spec"]["containers"].as_array().unwrap().len(), 1);
        assert_eq!(c["name"], "task");
        assert_eq!(c["image"], "registry.example/reports:1.2");
        assert_eq!(c["imagePullPolicy"], "Never");
        assert_eq!(c["command"], json!(["/bin/report"]));
        assert_eq!(c["args"], json!(["--daily"]));
        assert_eq!(c["workingDir"], "/work");
        assert_eq!(c["resources"], json!({"limits": {"cpu": "1500m", "memory": "268435456"}}));
        let env: BTreeMap<String, String> = c["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap().to_string(), e["value"].as_str().unwrap().to_string()))
            .collect();
        assert_eq!(env.len(), 10, "MODE and the 9 envelope variables: {env:?}");
        assert_eq!(env["MODE"], "fast");
        assert_eq!(env["ROTA_RUN_ID"], "42");
        assert_eq!(env["ROTA_TASK"], "billing/nightly");
        assert_eq!(env["ROTA_ATTEMPT"], "2");
        assert_eq!(env["ROTA_SCHEDULED_AT"], "2026-11-25T02:30:00Z");
        assert_eq!(env["ROTA_DEADLINE"], "2026-11-25T02:40:00Z");
        assert_eq!(env["ROTA_SHARD_INDEX"], "1");
        assert_eq!(env["ROTA_SHARD_TOTAL"], "3");
        assert_eq!(env["ROTA_PARAMS"], r#"{"report":"daily"}"#);
        let envelope: Value = serde_json::from_str(&env["ROTA_ENVELOPE"]).unwrap();
        assert_eq!(envelope["run_id"], "42");
    }

    #[test]
    fn manifest_options() {
        let mut t = ContainerTarget { image: "busybox".into(), ..ContainerTarget::default() };
        let d = dispatch(t.clone());
        let config = KubernetesConfig::new("http://k", "default");
        let mut spec = container_spec(&d, &t, "o");
        spec.timeout = Duration::from_millis(1500);
        let job = job_manifest(&spec, &config).unwrap();
        assert_eq!(job["spec"]["activeDeadlineSeconds"], 2, "rounded up");
        let c = &job["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert!(c.get("command").is_none() && c.get("args").is_none() && c.get("resources").is_none());
        t.network = Some("host".into());
        let job = job_manifest(&container_spec(&d, &t, "o"), &config).unwrap();
        assert_eq!(job["spec"]["template"]["spec"]["hostNetwork"], true);
        t.network = Some("backend".into());
        let err = job_manifest(&container_spec(&d, &t, "o"), &config).unwrap_err();
        assert!(err.to_string().contains("network \"backend\" is not supported on Kubernetes"), "{err}");
    }

    #[test]
    fn label_values() {
        assert_eq!(label_value("billing/nightly"), "billing.nightly");
        assert_eq!(label_value("true"), "true");
        assert_eq!(label_value(&"a".repeat(80)).len(), 63);
        assert_eq!(label_value("/x/"), "x");
    }

    #[test]
    fn https_is_refused_until_tls_lands() {
        let err = KubernetesRuntime::new(KubernetesConfig::new("https://10.0.0.1:6443", "d")).unwrap_err();
        assert!(err.to_string().contains("kubectl proxy"), "{err}");
        assert!(KubernetesRuntime::new(KubernetesConfig::new("ftp://x", "d")).is_err());
        let mut config = KubernetesConfig::new("http://127.0.0.1:8001", "d");
        config.token = Some("s3cret".into());
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    fn pod(status: Value) -> Value {
        json!({"items": [{"metadata": {"name": "j-abcde"}, "status": status}]})
    }

    fn container(state: Value) -> Value {
        json!({"containerStatuses": [{"name": "task", "image": "reg/x:1", "state": state}]})
    }

    #[test]
    fn status_mapping() {
        let none = json!({"items": []});
        let job = |conditions: Value| json!({"status": {"conditions": conditions}});
        let complete = job(json!([{"type": "Complete", "status": "True"}]));
        let failed = job(json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
            "message": "Job has reached the specified backoff limit"}]));
        let deadline = job(json!([{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]));
        let exited =
            |code: i64, reason: &str| pod(container(json!({"terminated": {"exitCode": code, "reason": reason}})));

        assert_eq!(job_state(&json!({}), &none), JobState::Pending);
        assert_eq!(job_state(&json!({"spec": {"suspend": true}}), &none), JobState::Pending);
        assert_eq!(
            job_state(&json!({}), &pod(container(json!({"waiting": {"reason": "ContainerCreating"}})))),
            JobState::Pending
        );
        assert_eq!(job_state(&json!({}), &pod(container(json!({"running": {}})))), JobState::Running);
        assert_eq!(job_state(&complete, &none), JobState::Exited { code: 0, oom_killed: false });
        assert_eq!(job_state(&complete, &exited(0, "Completed")), JobState::Exited { code: 0, oom_killed: false });
        assert_eq!(job_state(&failed, &exited(3, "Error")), JobState::Exited { code: 3, oom_killed: false });
        assert_eq!(job_state(&failed, &exited(137, "OOMKilled")), JobState::Exited { code: 137, oom_killed: true });
        // The Pod is ahead of the Job controller.
        assert_eq!(job_state(&json!({}), &exited(3, "Error")), JobState::Exited { code: 3, oom_killed: false });
        assert_eq!(job_state(&deadline, &pod(container(json!({"running": {}})))), JobState::DeadlineExceeded);
        assert_eq!(
            job_state(&json!({}), &pod(json!({"phase": "Failed", "reason": "DeadlineExceeded"}))),
            JobState::DeadlineExceeded
        );
        assert_eq!(
            job_state(&failed, &none),
            JobState::Failed(
                "the Job failed: BackoffLimitExceeded: Job has reached the specified backoff limit".into()
            )
        );
        assert_eq!(
            job_state(&json!({}), &pod(json!({"phase": "Failed", "reason": "Evicted", "message": "low memory"}))),
            JobState::Failed("the Pod failed: Evicted: low memory".into())
        );
        let never = container(json!({"waiting": {"reason": "ErrImageNeverPull",
            "message": "Container image \"reg/x:1\" is not present with pull policy of Never"}}));
        assert_eq!(
            job_state(&json!({}), &pod(never)),
            JobState::Failed(
                "image reg/x:1 could not be pulled: ErrImageNeverPull: Container image \"reg/x:1\" is not present \
                 with pull policy of Never"
                    .into()
            )
        );
        let backoff = container(json!({"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling"}}));
        assert!(matches!(job_state(&json!({}), &pod(backoff)), JobState::Failed(m) if m.starts_with("image reg/x:1")));
        let config = container(json!({"waiting": {"reason": "CreateContainerConfigError", "message": "no secret"}}));
        assert_eq!(
            job_state(&json!({}), &pod(config)),
            JobState::Failed("the container could not be created: CreateContainerConfigError: no secret".into())
        );
    }

    // A fake API server: enough of /apis/batch/v1 and /api/v1 to run the executor's whole flow without a
    // cluster. The image decides what the "container" does: `ok` prints and exits 0, `fail` exits 3, `missing`
    // cannot be pulled, anything else runs until its Pod is deleted.
    mod fake {
        use super::*;
        use axum::Router;
        use axum::extract::{Path, Query, State};
        use axum::http::StatusCode;
        use axum::routing::get;
        use std::collections::HashMap;

        #[derive(Default)]
        pub struct Api {
            pub jobs: Mutex<BTreeMap<String, Value>>,
            pub requests: Mutex<Vec<String>>,
            pub deleted_pods: Mutex<Vec<(String, u64)>>,
        }

        impl Api {
            fn deleted(&self, job: &str) -> bool {
                self.deleted_pods.lock().unwrap().iter().any(|(p, _)| *p == format!("{job}-pod"))
            }
        }

        type S = State<Arc<Api>>;

        fn image(job: &Value) -> String {
            text(job, "/spec/template/spec/containers/0/image").unwrap_or_default()
        }

        fn pod_of(name: &str, job: &Value, deleted: bool) -> Option<Value> {
            if job["spec"]["suspend"] == true {
                return None;
            }
            let state = match image(job).as_str() {
                _ if deleted => json!({"terminated": {"exitCode": 137, "reason": "Error"}}),
                "ok" => json!({"terminated": {"exitCode": 0, "reason": "Completed"}}),
                "fail" => json!({"terminated": {"exitCode": 3, "reason": "Error"}}),
                "missing" => json!({"waiting": {"reason": "ErrImageNeverPull", "message": "not present"}}),
                _ => json!({"running": {}}),
            };
            Some(json!({
                "metadata": {"name": format!("{name}-pod"), "creationTimestamp": "2026-11-25T00:00:00Z",
                    "labels": {"job-name": name}},
                "status": {"containerStatuses": [{"name": "task", "image": image(job), "state": state}]},
            }))
        }

        fn selector_matches(labels: &Value, selector: &str) -> bool {
            selector.split(',').filter(|s| !s.is_empty()).all(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                labels.get(k).and_then(Value::as_str) == Some(v)
            })
        }

        pub fn router(api: Arc<Api>) -> Router {
            Router::new()
                .route(
                    "/apis/batch/v1/namespaces/{ns}/jobs",
                    get(|State(api): S, Query(q): Query<HashMap<String, String>>| async move {
                        api.requests.lock().unwrap().push("list jobs".into());
                        let sel = q.get("labelSelector").cloned().unwrap_or_default();
                        let items: Vec<Value> = api
                            .jobs
                            .lock()
                            .unwrap()
                            .values()
                            .filter(|j| selector_matches(&j["metadata"]["labels"], &sel))
                            .cloned()
                            .collect();
                        axum::Json(json!({"items": items}))
                    })
                    .post(
                        |State(api): S, Path(ns): Path<String>, axum::Json(job): axum::Json<Value>| async move {
                            let name = text(&job, "/metadata/name").unwrap();
                            api.requests.lock().unwrap().push(format!("create job {name} in {ns}"));
                            api.jobs.lock().unwrap().insert(name, job.clone());
                            (StatusCode::CREATED, axum::Json(job))
                        },
                    ),
                )
                .route(
                    "/apis/batch/v1/namespaces/{ns}/jobs/{name}",
                    get(|State(api): S, Path((_ns, name)): Path<(String, String)>| async move {
                        let jobs = api.jobs.lock().unwrap();
                        let Some(job) = jobs.get(&name) else { return Err(StatusCode::NOT_FOUND) };
                        let mut job = job.clone();
                        let deleted = api.deleted(&name);
                        if let Some(p) = pod_of(&name, &job, deleted) {
                            let t = &p["status"]["containerStatuses"][0]["state"]["terminated"];
                            if t["exitCode"] == 0 {
                                job["status"] = json!({"conditions": [{"type": "Complete", "status": "True"}]});
                            } else if t.is_object() {
                                job["status"] = json!({"conditions": [{"type": "Failed", "status": "True",
                                    "reason": "BackoffLimitExceeded"}]});
                            } else {
                                job["status"] = json!({"active": 1});
                            }
                        }
                        Ok(axum::Json(job))
                    })
                    .patch(|State(api): S, Path((_ns, name)): Path<(String, String)>, body: String| async move {
                        let patch: Value = serde_json::from_str(&body).unwrap();
                        api.requests.lock().unwrap().push(format!("patch job {name} {patch}"));
                        let mut jobs = api.jobs.lock().unwrap();
                        let Some(job) = jobs.get_mut(&name) else { return Err(StatusCode::NOT_FOUND) };
                        job["spec"]["suspend"] = patch["spec"]["suspend"].clone();
                        Ok(axum::Json(job.clone()))
                    })
                    .delete(
                        |State(api): S, Path((_ns, name)): Path<(String, String)>, body: String| async move {
                            let opts: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                            api.requests.lock().unwrap().push(format!("delete job {name} {opts}"));
                            match api.jobs.lock().unwrap().remove(&name) {
                                Some(_) => Ok(axum::Json(json!({"kind": "Status", "status": "Success"}))),
                                None => Err(StatusCode::NOT_FOUND),
                            }
                        },
                    ),
                )
                .route(
                    "/api/v1/namespaces/{ns}/pods",
                    get(|State(api): S, Query(q): Query<HashMap<String, String>>| async move {
                        let sel = q.get("labelSelector").cloned().unwrap_or_default();
                        let name = sel.strip_prefix("job-name=").unwrap().to_string();
                        let deleted = api.deleted(&name);
                        let items: Vec<Value> = api
                            .jobs
                            .lock()
                            .unwrap()
                            .get(&name)
                            .and_then(|j| pod_of(&name, j, deleted))
                            .into_iter()
                            .collect();
                        axum::Json(json!({"items": items}))
                    }),
                )
                .route(
                    "/api/v1/namespaces/{ns}/pods/{pod}",
                    axum::routing::delete(
                        |State(api): S, Path((_ns, pod)): Path<(String, String)>, body: String| async move {
                            let opts: Value = serde_json::from_str(&body).unwrap();
                            let grace = opts["gracePeriodSeconds"].as_u64().unwrap();
                            api.deleted_pods.lock().unwrap().push((pod, grace));
                            axum::Json(json!({}))
                        },
                    ),
                )
                .route(
                    "/api/v1/namespaces/{ns}/pods/{pod}/log",
                    get(|Query(q): Query<HashMap<String, String>>| async move {
                        assert_eq!(q.get("container").map(String::as_str), Some("task"));
                        "hello\nworld\n"
                    }),
                )
                .with_state(api)
        }
    }

    #[derive(Default)]
    struct Sink(Mutex<Vec<(String, String)>>);

    #[async_trait]
    impl RunLogSink for Sink {
        async fn append(&self, _run_id: i64, stream: &str, lines: Vec<String>) {
            self.0.lock().unwrap().extend(lines.into_iter().map(|l| (stream.to_string(), l)));
        }
    }

    async fn serve() -> (Arc<fake::Api>, KubernetesRuntime) {
        let api = Arc::new(fake::Api::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = fake::router(api.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let mut config = KubernetesConfig::new(format!("http://{addr}"), "rota-jobs");
        config.poll_interval = Duration::from_millis(20);
        (api, KubernetesRuntime::new(config).unwrap())
    }

    fn executor(rt: KubernetesRuntime, sink: Arc<Sink>) -> ContainerExecutor {
        let config = ContainerExecutorConfig { log_poll_interval: Duration::from_millis(50), ..Default::default() };
        ContainerExecutor::new(Arc::new(rt), sink, config)
    }

    #[tokio::test]
    async fn executor_flow_against_a_fake_api_server() {
        let (api, rt) = serve().await;
        let sink = Arc::new(Sink::default());
        let ex = executor(rt, sink.clone());

        let ok = ex.dispatch(dispatch(ContainerTarget { image: "ok".into(), ..Default::default() })).await;
        assert_eq!(ok, DispatchOutcome::Completed(RunResult::succeeded(Some(json!({"exitCode": 0})))));
        let stdout: Vec<String> =
            sink.0.lock().unwrap().iter().filter(|(s, _)| s == "stdout").map(|(_, l)| l.clone()).collect();
        assert_eq!(stdout, vec!["hello".to_string(), "world".into()]);
        let requests = api.requests.lock().unwrap().clone();
        assert!(requests[0].starts_with("create job rota-42-2-") && requests[0].ends_with(" in rota-jobs"));
        assert!(requests[1].ends_with(r#"{"spec":{"suspend":false}}"#), "{requests:?}");
        assert!(requests.last().unwrap().ends_with(r#"{"propagationPolicy":"Background"}"#), "{requests:?}");
        assert!(api.jobs.lock().unwrap().is_empty(), "the Job is removed");

        let fail = ex.dispatch(dispatch(ContainerTarget { image: "fail".into(), ..Default::default() })).await;
        let DispatchOutcome::Completed(r) = fail else { panic!("{fail:?}") };
        assert_eq!((r.status, r.error.as_deref()), (ResultStatus::Failed, Some("container exited with code 3")));

        let missing = ex.dispatch(dispatch(ContainerTarget { image: "missing".into(), ..Default::default() })).await;
        assert_eq!(
            missing,
            DispatchOutcome::Failed {
                error: "image missing could not be pulled: ErrImageNeverPull: not present".into()
            }
        );
        assert!(api.jobs.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn timeout_cancel_and_orphans_against_a_fake_api_server() {
        let (api, rt) = serve().await;
        let sink = Arc::new(Sink::default());
        let ex = executor(rt, sink);
        let mut d = dispatch(ContainerTarget { image: "forever".into(), ..Default::default() });
        d.timeout = Duration::from_millis(300);
        assert_eq!(ex.dispatch(d).await, DispatchOutcome::TimedOut);
        let deleted = api.deleted_pods.lock().unwrap().clone();
        assert_eq!(deleted[0].1, 10, "SIGTERM with the executor's stop grace first: {deleted:?}");
        assert!(api.jobs.lock().unwrap().is_empty());

        // An orphan of this owner, and a cancel of a Job started elsewhere.
        api.deleted_pods.lock().unwrap().clear();
        let rt = ex.runtime().clone();
        let d = dispatch(ContainerTarget { image: "forever".into(), ..Default::default() });
        let spec = container_spec(&d, d.target.container.as_ref().unwrap(), "rota");
        rt.create(&spec).await.unwrap();
        rt.start(&spec.name).await.unwrap();
        ex.cancel(42, 2, &d.target).await;
        assert!(api.jobs.lock().unwrap().is_empty(), "cancel removed the Job");
        let spec = container_spec(&d, d.target.container.as_ref().unwrap(), "rota");
        rt.create(&spec).await.unwrap();
        assert_eq!(ex.cleanup_orphans().await.unwrap(), 1);
        assert!(api.jobs.lock().unwrap().is_empty());
    }
}
