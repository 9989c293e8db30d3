//! The container executor against a real Podman (Docker-compatible API).
//!
//! `scripts/podman-setup.sh` installs Podman, starts its API service on `/run/rota-podman.sock` and builds the
//! local image `localhost/rota-test-busybox:latest`; `ROTA_TEST_CONTAINER_SOCKET` overrides the socket. No
//! registry is reachable, so tests only use that image. A missing runtime fails these tests (it never skips
//! them). Every test uses its own run id and owner, and checks that no container of its run is left.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use rota_core::{Dispatch, DispatchOutcome, Executor, RunLogSink};
use rota_executor::container::{
    ContainerInfo, ContainerRuntime, ContainerSpec, ImageInfo, LABEL_ATTEMPT, LABEL_MANAGED, LABEL_OWNER, LABEL_RUN_ID,
    LABEL_TASK, LogChunks, RuntimeError, WaitStatus, truncation_marker,
};
use rota_executor::{ContainerExecutor, ContainerExecutorConfig, DockerRuntime};
use rota_proto::{ResultStatus, RunEnvelope, ShardInfo};
use rota_spec::{ContainerTarget, CpuQuantity, PullPolicy, Resources, Target};
use serde_json::{Map, Value, json};

const IMAGE: &str = "localhost/rota-test-busybox:latest";

fn socket() -> String {
    std::env::var("ROTA_TEST_CONTAINER_SOCKET").unwrap_or_else(|_| "/run/rota-podman.sock".into())
}

/// The runtime under test; panics (never skips) when Podman's socket or the test image is missing.
async fn runtime() -> Arc<DockerRuntime> {
    let socket = socket();
    let rt = Arc::new(DockerRuntime::new(&socket).unwrap());
    match rt.inspect_image(IMAGE).await {
        Ok(Some(_)) => rt,
        Ok(None) => panic!("the test image {IMAGE} is missing on {socket}: run scripts/podman-setup.sh"),
        Err(e) => panic!(
            "the container runtime (Podman API socket {socket}, ROTA_TEST_CONTAINER_SOCKET) is not available: {e}; \
             run scripts/podman-setup.sh"
        ),
    }
}

fn unique_run_id() -> i64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    (h.finish() >> 2) as i64
}

#[derive(Default)]
struct MemSink {
    lines: Mutex<Vec<(i64, String, String)>>,
}

impl MemSink {
    fn lines(&self, run_id: i64, stream: &str) -> Vec<String> {
        let all = self.lines.lock().unwrap();
        all.iter().filter(|(r, s, _)| *r == run_id && s == stream).map(|(_, _, l)| l.clone()).collect()
    }
}

#[async_trait]
impl RunLogSink for MemSink {
    async fn append(&self, run_id: i64, stream: &str, lines: Vec<String>) {
        let mut all = self.lines.lock().unwrap();
        all.extend(lines.into_iter().map(|l| (run_id, stream.to_string(), l)));
    }
}

struct Harness {
    runtime: Arc<dyn ContainerRuntime>,
    sink: Arc<MemSink>,
    executor: ContainerExecutor,
    run_id: i64,
}

impl Harness {
    async fn new() -> Self {
        Harness::with(|_| {}).await
    }

    async fn with(tweak: impl FnOnce(&mut ContainerExecutorConfig)) -> Self {
        let runtime: Arc<dyn ContainerRuntime> = runtime().await;
        Harness::over(runtime, tweak)
    }

    fn over(runtime: Arc<dyn ContainerRuntime>, tweak: impl FnOnce(&mut ContainerExecutorConfig)) -> Self {
        let run_id = unique_run_id();
        let mut config = ContainerExecutorConfig {
            owner: format!("test-{run_id}"),
            stop_grace: Duration::from_secs(1),
            ..ContainerExecutorConfig::default()
        };
        tweak(&mut config);
        let sink = Arc::new(MemSink::default());
        let executor = ContainerExecutor::new(runtime.clone(), sink.clone(), config);
        Harness { runtime, sink, executor, run_id }
    }

    fn dispatch(&self, target: ContainerTarget, timeout: Duration) -> Dispatch {
        let mut params = Map::new();
        params.insert("report".into(), json!("daily"));
        let now = Utc::now();
        Dispatch {
            run_id: self.run_id,
            attempt: 1,
            namespace: "tests".into(),
            name: "containers".into(),
            scheduled_at: now,
            params,
            shard: ShardInfo::default(),
            deadline: now + chrono::Duration::from_std(timeout).unwrap(),
            timeout,
            target: Target { container: Some(target), ..Target::default() },
            node: None,
            report_url: None,
        }
    }

    async fn run(&self, target: ContainerTarget, timeout: Duration) -> DispatchOutcome {
        self.executor.dispatch(self.dispatch(target, timeout)).await
    }

    fn stdout(&self) -> Vec<String> {
        self.sink.lines(self.run_id, "stdout")
    }

    fn stderr(&self) -> Vec<String> {
        self.sink.lines(self.run_id, "stderr")
    }

    /// No container of this test's run is left, running or not.
    async fn assert_no_container_left(&self) {
        let rt = runtime().await;
        let left = rt.list(&BTreeMap::from([(LABEL_RUN_ID.to_string(), self.run_id.to_string())])).await.unwrap();
        assert!(left.is_empty(), "containers left behind by run {}: {left:?}", self.run_id);
    }
}

fn sh(script: &str) -> ContainerTarget {
    ContainerTarget {
        image: IMAGE.into(),
        command: vec!["/bin/sh".into(), "-c".into()],
        args: vec![script.into()],
        pull_policy: PullPolicy::Never,
        ..ContainerTarget::default()
    }
}

fn completed(outcome: DispatchOutcome) -> rota_proto::RunResult {
    match outcome {
        DispatchOutcome::Completed(r) => r,
        other => panic!("expected a completed run, got {other:?}"),
    }
}

fn failed(outcome: DispatchOutcome) -> String {
    match outcome {
        DispatchOutcome::Failed { error } => error,
        other => panic!("expected a failed dispatch, got {other:?}"),
    }
}

const T: Duration = Duration::from_secs(60);

#[tokio::test]
async fn success_captures_stdout_and_sees_the_envelope() {
    let h = Harness::new().await;
    let mut target =
        sh("echo run=$ROTA_RUN_ID task=$ROTA_TASK attempt=$ROTA_ATTEMPT shard=$ROTA_SHARD_INDEX/$ROTA_SHARD_TOTAL; \
            echo \"$ROTA_PARAMS\"; echo \"$ROTA_ENVELOPE\"; echo \"$ROTA_SCHEDULED_AT $ROTA_DEADLINE\"; \
            echo mode=$MODE; pwd");
    target.env = BTreeMap::from([("MODE".into(), "fast".into())]);
    target.working_dir = Some("/tmp".into());
    let d = h.dispatch(target, T);
    let (scheduled, deadline) = (d.scheduled_at, d.deadline);
    let result = completed(h.executor.dispatch(d).await);
    assert_eq!(result.status, ResultStatus::Succeeded, "{result:?}");
    assert_eq!(result.output, Some(json!({"exitCode": 0})));
    assert_eq!(result.error, None);
    let out = h.stdout();
    assert_eq!(out[0], format!("run={} task=tests/containers attempt=1 shard=0/1", h.run_id));
    assert_eq!(serde_json::from_str::<Value>(&out[1]).unwrap(), json!({"report": "daily"}));
    let envelope: RunEnvelope = serde_json::from_str(&out[2]).unwrap();
    assert_eq!(envelope.run_id, h.run_id.to_string());
    assert_eq!(envelope.task, "tests/containers");
    assert_eq!((envelope.scheduled_at, envelope.deadline), (scheduled, deadline));
    let instants: Vec<&str> = out[3].split(' ').collect();
    assert_eq!(instants[0].parse::<chrono::DateTime<Utc>>().unwrap(), scheduled);
    assert_eq!(instants[1].parse::<chrono::DateTime<Utc>>().unwrap(), deadline);
    assert_eq!(out[4], "mode=fast");
    assert_eq!(out[5], "/tmp");
    assert_eq!(out.len(), 6, "{out:?}");
    let executor_lines = h.sink.lines(h.run_id, "executor");
    assert!(executor_lines.iter().any(|l| l.starts_with("started container rota-")), "{executor_lines:?}");
    h.assert_no_container_left().await;
}

#[tokio::test]
async fn non_zero_exit_is_a_failed_result_with_the_code() {
    let h = Harness::new().await;
    let result = completed(h.run(sh("echo about to fail; exit 3"), T).await);
    assert_eq!(result.status, ResultStatus::Failed);
    assert_eq!(result.error.as_deref(), Some("container exited with code 3"));
    assert_eq!(result.output, Some(json!({"exitCode": 3})));
    assert_eq!(h.stdout(), vec!["about to fail".to_string()]);
    h.assert_no_container_left().await;
}

#[tokio::test]
async fn image_default_command_runs_when_none_is_given() {
    let h = Harness::new().await;
    // The image's CMD is /bin/sh, which exits 0 at once on an empty stdin.
    let target = ContainerTarget { image: IMAGE.into(), pull_policy: PullPolicy::IfNotPresent, ..Default::default() };
    let result = completed(h.run(target, T).await);
    assert_eq!(result.status, ResultStatus::Succeeded, "{result:?}");
    h.assert_no_container_left().await;
}

#[tokio::test]
async fn stdout_and_stderr_are_both_captured() {
    let h = Harness::new().await;
    let result = completed(h.run(sh("echo out1; echo err1 >&2; echo out2; printf 'no newline' >&2"), T).await);
    assert_eq!(result.status, ResultStatus::Succeeded);
    assert_eq!(h.stdout(), vec!["out1".to_string(), "out2".into()]);
    assert_eq!(h.stderr(), vec!["err1".to_string(), "no newline".into()]);
    h.assert_no_container_left().await;
}

#[tokio::test]
async fn output_is_bounded_to_10000_lines_by_default() {
    let h = Harness::new().await;
    let result = completed(h.run(sh("seq 1 25000; echo done >&2"), T).await);
    assert_eq!(result.status, ResultStatus::Succeeded);
    let out = h.stdout();
    let err = h.stderr();
    assert_eq!(out.len() + err.len(), 10_001, "10,000 lines and one marker");
    let expected: Vec<String> = (1..=10_000).map(|i| i.to_string()).collect();
    if out[..10_000] != expected[..] {
        let at = out.iter().zip(&expected).position(|(a, b)| a != b).unwrap();
        panic!("lines differ from index {at}: {:?}", &out[at.saturating_sub(2)..(at + 5).min(out.len())]);
    }
    assert_eq!(out[10_000], truncation_marker(10_000, 1024 * 1024));
    assert!(err.is_empty(), "{err:?}");
    h.assert_no_container_left().await;
}

#[tokio::test]
async fn output_is_bounded_in_bytes() {
    let h = Harness::with(|c| c.max_log_bytes = 4096).await;
    // 100 lines of 99 characters + newline: 40 fit in 4096 bytes.
    let result = completed(h.run(sh("yes $(printf '%099d' 7) | head -n 100"), T).await);
    assert_eq!(result.status, ResultStatus::Succeeded);
    let out = h.stdout();
    assert_eq!(out.len(), 41, "{out:?}");
    assert!(out[..40].iter().all(|l| l.len() == 99));
    assert_eq!(out[40], truncation_marker(10_000, 4096));
    h.assert_no_container_left().await;
}

#[tokio::test]
async fn timeout_sends_sigterm_then_times_out() {
    // A long grace: the container must end well before it, on SIGTERM alone. The timeout leaves the container
    // time to start and install its trap even on a loaded machine.
    let h = Harness::with(|c| c.stop_grace = Duration::from_secs(60)).await;
    let started = Instant::now();
    let target = sh("trap 'echo got TERM; exit 0' TERM; echo waiting; sleep 120 & wait");
    let outcome = h.run(target, Duration::from_secs(6)).await;
    let took = started.elapsed();
    assert_eq!(outcome, DispatchOutcome::TimedOut);
    assert!(took >= Duration::from_secs(6), "{took:?}");
    assert!(took < Duration::from_secs(40), "the container handles SIGTERM, so no grace wait: {took:?}");
    assert_eq!(h.stdout(), vec!["waiting".to_string(), "got TERM".into()]);
    h.assert_no_container_left().await;
}

#[tokio::test]
async fn a_container_ignoring_sigterm_is_killed_after_the_grace() {
    let h = Harness::with(|c| c.stop_grace = Duration::from_secs(2)).await;
    let started = Instant::now();
    let outcome = h.run(sh("trap '' TERM; sleep 60"), Duration::from_secs(2)).await;
    let took = started.elapsed();
    assert_eq!(outcome, DispatchOutcome::TimedOut);
    assert!(took >= Duration::from_secs(4), "timeout 2 s + grace 2 s: {took:?}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    h.assert_no_container_left().await;
}

#[tokio::test]
async fn cancel_kills_and_removes_the_running_container() {
    let h = Harness::new().await;
    let target = sh("echo started; sleep 60");
    let executor = h.executor.clone();
    let d = h.dispatch(target.clone(), T);
    let started = Instant::now();
    let running = tokio::spawn(async move { executor.dispatch(d).await });
    // Wait until the container runs.
    let labels = BTreeMap::from([(LABEL_RUN_ID.to_string(), h.run_id.to_string())]);
    loop {
        let found = h.runtime.list(&labels).await.unwrap();
        if found.iter().any(|c| c.state.as_deref() == Some("running")) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the container never ran: {found:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let target = Target { container: Some(target), ..Target::default() };
    h.executor.cancel(h.run_id, 1, &target).await;
    let outcome = tokio::time::timeout(Duration::from_secs(20), running).await.expect("dispatch ends").unwrap();
    assert!(failed(outcome).contains("cancelled"));
    assert!(started.elapsed() < Duration::from_secs(30));
    h.assert_no_container_left().await;
}

#[tokio::test]
async fn dropping_the_dispatch_still_removes_the_container() {
    let h = Harness::new().await;
    let d = h.dispatch(sh("sleep 60"), Duration::from_secs(3));
    let labels = BTreeMap::from([(LABEL_RUN_ID.to_string(), h.run_id.to_string())]);
    // The core drops a dispatch future that outlives its deadline; the container must go anyway.
    tokio::select! {
        outcome = h.executor.dispatch(d) => panic!("the dispatch ended first: {outcome:?}"),
        _ = async {
            while !h.runtime.list(&labels).await.unwrap().iter().any(|c| c.state.as_deref() == Some("running")) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        } => {}
    }
    // Dropped while the container runs: it is stopped at the deadline and removed.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !h.runtime.list(&labels).await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the container was not removed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    h.assert_no_container_left().await;
}

#[tokio::test]
async fn missing_image_with_pull_policy_never_fails_clearly() {
    let h = Harness::new().await;
    let target = ContainerTarget { image: "localhost/rota-no-such-image:1".into(), ..sh("true") };
    let error = failed(h.run(target, T).await);
    assert_eq!(error, "image localhost/rota-no-such-image:1 is not present and pullPolicy is never");
    h.assert_no_container_left().await;
}

#[tokio::test]
async fn unpullable_image_fails_clearly() {
    let h = Harness::new().await;
    // No registry is reachable: the pull of a missing image fails.
    let target = ContainerTarget {
        image: "localhost/rota-no-such-image:1".into(),
        pull_policy: PullPolicy::IfNotPresent,
        ..sh("true")
    };
    let error = failed(h.run(target, T).await);
    assert!(error.starts_with("could not pull image localhost/rota-no-such-image:1: "), "{error}");
    h.assert_no_container_left().await;
}

#[tokio::test]
async fn runtime_down_fails_clearly_and_recovers_when_it_is_back() {
    runtime().await; // the real one is up
    let dir = std::env::temp_dir().join(format!("rota-test-socket-{}", unique_run_id()));
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("runtime.sock");
    let endpoint = format!("unix://{}", link.display());
    let rt: Arc<dyn ContainerRuntime> = Arc::new(DockerRuntime::new(&endpoint).unwrap());
    let h = Harness::over(rt, |_| {});

    let error = failed(h.run(sh("echo hi"), T).await);
    assert!(error.starts_with(&format!("container runtime unavailable at {endpoint}: ")), "{error}");

    // The runtime comes back at that path.
    std::os::unix::fs::symlink(socket(), &link).unwrap();
    let result = completed(h.run(sh("echo hi"), T).await);
    assert_eq!(result.status, ResultStatus::Succeeded, "{result:?}");
    assert_eq!(h.stdout(), vec!["hi".to_string()]);
    h.assert_no_container_left().await;

    // And goes away again.
    std::fs::remove_file(&link).unwrap();
    let error = failed(h.run(sh("echo hi"), T).await);
    assert!(error.starts_with("container runtime unavailable at "), "{error}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn leftover_spec(run_id: i64, owner: &str) -> ContainerSpec {
    ContainerSpec {
        name: format!("rota-{run_id}-1-{}", owner.len()),
        image: IMAGE.into(),
        command: vec!["/bin/sh".into(), "-c".into()],
        args: vec!["sleep 60".into()],
        env: BTreeMap::new(),
        working_dir: None,
        labels: BTreeMap::from([
            (LABEL_RUN_ID.to_string(), run_id.to_string()),
            (LABEL_TASK.to_string(), "tests/orphans".to_string()),
            (LABEL_ATTEMPT.to_string(), "1".to_string()),
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_OWNER.to_string(), owner.to_string()),
        ]),
        network: None,
        limits: Default::default(),
        pull_policy: PullPolicy::Never,
        timeout: T,
    }
}

#[tokio::test]
async fn cleanup_orphans_removes_the_owners_leftovers_only() {
    let h = Harness::new().await;
    let owner = h.executor.config().owner.clone();
    // Left by "a previous process" of the same owner: one running, one never started.
    let running = h.runtime.create(&leftover_spec(h.run_id, &owner)).await.unwrap();
    h.runtime.start(&running).await.unwrap();
    let mut created = leftover_spec(h.run_id, &owner);
    created.name.push_str("-b");
    h.runtime.create(&created).await.unwrap();
    // Another owner's container is not ours to remove.
    let other_owner = format!("{owner}-other");
    let foreign = h.runtime.create(&leftover_spec(h.run_id, &other_owner)).await.unwrap();

    assert_eq!(h.executor.cleanup_orphans().await.unwrap(), 2);
    let left = h.runtime.list(&BTreeMap::from([(LABEL_RUN_ID.to_string(), h.run_id.to_string())])).await.unwrap();
    assert_eq!(left.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), vec![foreign.as_str()]);
    assert_eq!(h.executor.cleanup_orphans().await.unwrap(), 0);

    h.runtime.remove(&foreign).await.unwrap();
    h.assert_no_container_left().await;
}

#[tokio::test]
async fn cleanup_orphans_spares_running_attempts() {
    let h = Harness::new().await;
    let executor = h.executor.clone();
    let d = h.dispatch(sh("sleep 3; echo survived"), T);
    let running = tokio::spawn(async move { executor.dispatch(d).await });
    let labels = BTreeMap::from([(LABEL_RUN_ID.to_string(), h.run_id.to_string())]);
    let started = Instant::now();
    while h.runtime.list(&labels).await.unwrap().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.executor.cleanup_orphans().await.unwrap(), 0);
    let result = completed(running.await.unwrap());
    assert_eq!(result.status, ResultStatus::Succeeded);
    assert_eq!(h.stdout(), vec!["survived".to_string()]);
    h.assert_no_container_left().await;
}

/// Delegates to Podman and records the created container's `HostConfig` and labels as the runtime reports them.
struct Inspecting {
    inner: Arc<DockerRuntime>,
    docker: bollard::Docker,
    seen: Mutex<Option<(HashMap<String, String>, bollard::models::HostConfig)>>,
}

#[async_trait]
impl ContainerRuntime for Inspecting {
    fn endpoint(&self) -> String {
        self.inner.endpoint()
    }
    async fn inspect_image(&self, image: &str) -> Result<Option<ImageInfo>, RuntimeError> {
        self.inner.inspect_image(image).await
    }
    async fn pull_image(&self, image: &str) -> Result<(), RuntimeError> {
        self.inner.pull_image(image).await
    }
    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let id = self.inner.create(spec).await?;
        let c = self.docker.inspect_container(&id, None).await.unwrap();
        *self.seen.lock().unwrap() = Some((c.config.unwrap().labels.unwrap(), c.host_config.unwrap()));
        Ok(id)
    }
    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.inner.start(id).await
    }
    async fn wait(&self, id: &str, timeout: Duration) -> Result<WaitStatus, RuntimeError> {
        self.inner.wait(id, timeout).await
    }
    async fn logs(&self, id: &str, follow: bool) -> Result<LogChunks, RuntimeError> {
        self.inner.logs(id, follow).await
    }
    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        self.inner.stop(id, grace).await
    }
    async fn kill(&self, id: &str) -> Result<(), RuntimeError> {
        self.inner.kill(id).await
    }
    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.inner.remove(id).await
    }
    async fn list(&self, labels: &BTreeMap<String, String>) -> Result<Vec<ContainerInfo>, RuntimeError> {
        self.inner.list(labels).await
    }
}

#[tokio::test]
async fn limits_and_labels_are_applied_by_the_runtime() {
    let inner = runtime().await;
    let docker = bollard::Docker::connect_with_unix(&socket(), 60, bollard::API_DEFAULT_VERSION).unwrap();
    let inspecting = Arc::new(Inspecting { inner, docker, seen: Mutex::new(None) });
    let h = Harness::over(inspecting.clone(), |_| {});
    // The container reads its own cgroup limits (cgroup v2 first, then v1).
    let mut target =
        sh("cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes; \
         cat /sys/fs/cgroup/cpu.max 2>/dev/null || \
         echo $(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) $(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)");
    target.resources = Some(Resources { cpu: Some(CpuQuantity::parse("500m").unwrap()), memory: Some("64Mi".into()) });
    target.labels = BTreeMap::from([("team".into(), "finance".into()), (LABEL_MANAGED.into(), "spoofed".into())]);
    let result = completed(h.run(target, T).await);
    assert_eq!(result.status, ResultStatus::Succeeded, "{result:?}");
    assert_eq!(
        result.output,
        Some(json!({"exitCode": 0, "limits": {"nanoCpus": 500_000_000, "memoryBytes": 67_108_864}}))
    );
    assert_eq!(h.stdout(), vec!["67108864".to_string(), "50000 100000".into()]);

    let (labels, host) = inspecting.seen.lock().unwrap().clone().expect("container inspected");
    assert_eq!(host.nano_cpus, Some(500_000_000));
    assert_eq!(host.memory, Some(67_108_864));
    assert_eq!(labels[LABEL_RUN_ID], h.run_id.to_string());
    assert_eq!(labels[LABEL_TASK], "tests/containers");
    assert_eq!(labels[LABEL_ATTEMPT], "1");
    assert_eq!(labels[LABEL_MANAGED], "true");
    assert_eq!(labels[LABEL_OWNER], h.executor.config().owner);
    assert_eq!(labels["team"], "finance");
    h.assert_no_container_left().await;
}

#[tokio::test]
async fn network_none_is_applied() {
    let h = Harness::new().await;
    let mut target = sh("ls /sys/class/net");
    target.network = Some("none".into());
    let result = completed(h.run(target, T).await);
    assert_eq!(result.status, ResultStatus::Succeeded, "{result:?}");
    assert_eq!(h.stdout(), vec!["lo".to_string()]);
    h.assert_no_container_left().await;
}

#[tokio::test]
async fn a_command_that_cannot_start_fails_clearly() {
    let h = Harness::new().await;
    let target = ContainerTarget {
        image: IMAGE.into(),
        command: vec!["/no/such/binary".into()],
        pull_policy: PullPolicy::Never,
        ..ContainerTarget::default()
    };
    let outcome = h.run(target, T).await;
    match outcome {
        DispatchOutcome::Failed { error } => assert!(error.contains("/no/such/binary"), "{error}"),
        DispatchOutcome::Completed(r) => assert_eq!(r.status, ResultStatus::Failed, "{r:?}"),
        other => panic!("{other:?}"),
    }
    h.assert_no_container_left().await;
}

#[tokio::test]
async fn the_memory_limit_is_enforced() {
    let h = Harness::new().await;
    // Holding 100 MB in a shell variable cannot fit in 16 MiB: the kernel kills the container.
    let mut target = sh("x=$(yes | head -c 100000000); echo survived");
    target.resources = Some(Resources { cpu: None, memory: Some("16Mi".into()) });
    let result = completed(h.run(target, T).await);
    assert_eq!(result.status, ResultStatus::Failed, "{result:?}");
    let output = result.output.unwrap();
    assert_eq!(output["exitCode"], 137, "{output}");
    assert_eq!(output["limits"], json!({"memoryBytes": 16 << 20}));
    assert!(result.error.unwrap().starts_with("container exited with code 137"));
    assert!(!h.stdout().contains(&"survived".to_string()));
    h.assert_no_container_left().await;
}

#[tokio::test]
async fn output_reaches_the_sink_while_the_container_runs() {
    let h = Harness::with(|c| c.log_poll_interval = Duration::from_millis(200)).await;
    let executor = h.executor.clone();
    let d = h.dispatch(sh("echo first; echo first-err >&2; sleep 4; echo second"), T);
    let running = tokio::spawn(async move { executor.dispatch(d).await });
    let started = Instant::now();
    while h.stdout().is_empty() || h.stderr().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(30), "no output while running");
        assert!(!running.is_finished(), "the container finished before its output was seen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(h.stdout(), vec!["first".to_string()]);
    assert_eq!(h.stderr(), vec!["first-err".to_string()]);
    let result = completed(running.await.unwrap());
    assert_eq!(result.status, ResultStatus::Succeeded);
    assert_eq!(h.stdout(), vec!["first".to_string(), "second".into()]);
    assert_eq!(h.stderr(), vec!["first-err".to_string()]);
    h.assert_no_container_left().await;
}
