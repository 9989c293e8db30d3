//! The execution cluster with real processes: one `rota server` (SQLite in a temporary directory, executor
//! registrations expiring after 2 s) and three SDK executor nodes (`rota-echo-executor`, the SDK's example built
//! as a binary of this package) on 127.0.0.1, over HTTP and over gRPC. Tasks are applied and triggered through
//! the management API and checked there (`GET /api/v1/runs/{id}`: the run and its attempt rows):
//!
//! * unicast `round_robin` spreads runs evenly; `broadcast` reaches every node; `sharded` gives each node its own
//!   index of the same total;
//! * a node killed with `kill -9` stops getting work once its registration expired, and the runs it failed
//!   meanwhile are retried on another node (`retry.switchNode`);
//! * `switchNode` moves the retries of a run whose handler fails on one node to the other nodes.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Server, collect, eventually};
use rota_sdk::{AttemptState, Client, Params, RunDetail, RunState};
use serde_json::{Value, json};

const ECHO_BIN: &str = env!("CARGO_BIN_EXE_rota-echo-executor");
/// Executor registrations expire this long after the last heartbeat (nodes heartbeat every third of it).
const EXECUTOR_TTL: &str = "2s";
/// Bound on every wait of these tests.
const WAIT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http,
    Grpc,
}

/// One `rota-echo-executor` process, killed (SIGKILL) when dropped.
struct EchoNode {
    id: String,
    child: Option<Child>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl EchoNode {
    /// Starts a node of `service` with id `id`, registering with `scheduler`; waits until it has bound its port.
    fn start(scheduler: &str, service: &str, id: &str, protocol: Protocol) -> EchoNode {
        let mut cmd = std::process::Command::new(ECHO_BIN);
        cmd.args(["--listen", "127.0.0.1:0", "--no-task", "--scheduler", scheduler, "--service", service, "--id", id]);
        if protocol == Protocol::Grpc {
            cmd.arg("--grpc");
        }
        cmd.env_remove("ROTA_SCHEDULER").env_remove("ROTA_TOKEN").env("RUST_LOG", "info");
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn rota-echo-executor");
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        collect(child.stdout.take().unwrap(), stdout.clone());
        collect(child.stderr.take().unwrap(), stderr.clone());
        let mut node = EchoNode { id: id.to_string(), child: Some(child), stdout, stderr };
        let deadline = Instant::now() + WAIT;
        loop {
            if node.stdout.lock().unwrap().contains("echo executor listening on http://") {
                return node;
            }
            if let Some(status) = node.child.as_mut().unwrap().try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(200)); // let the readers drain
                panic!("executor {id} exited with {status} before listening:\n{}", node.output());
            }
            assert!(Instant::now() < deadline, "executor {id} did not start within {WAIT:?}:\n{}", node.output());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn output(&self) -> String {
        format!(
            "--- {} stdout ---\n{}--- {} stderr ---\n{}",
            self.id,
            self.stdout.lock().unwrap(),
            self.id,
            self.stderr.lock().unwrap()
        )
    }

    /// `kill -9`, then reaps the process.
    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for EchoNode {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("{}", self.output());
        }
    }
}

/// A scheduler process and its executor nodes, all of one service.
struct Stack {
    rota: Client,
    service: String,
    nodes: Vec<EchoNode>,
    // Dropped after the nodes (fields drop in order): the server outlives its executors.
    _server: Server,
    _dir: tempfile::TempDir,
}

impl Stack {
    /// Starts the server and one node per id; returns once every node is registered and active.
    async fn start(service: &str, ids: &[&str], protocol: Protocol) -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(&["--data-dir", dir.path().to_str().unwrap(), "--executor-ttl", EXECUTOR_TTL]);
        // Listening on 127.0.0.1, the server takes its own address as the public URL it gives nodes to report to.
        let public = format!("public URL {}", server.url);
        assert!(server.stdout().contains(&public), "the server tells nodes where to report:\n{}", server.output());
        let rota = Client::new(&server.url).unwrap();
        let nodes = ids.iter().map(|id| EchoNode::start(&server.url, service, id, protocol)).collect();
        let stack = Stack { rota, service: service.to_string(), nodes, _server: server, _dir: dir };
        let want: BTreeSet<String> = ids.iter().map(|s| s.to_string()).collect();
        let expect = if protocol == Protocol::Grpc { "grpc" } else { "http" };
        stack
            .eventually("every node registered and active", || async {
                let nodes = stack.rota.executors(Some(service)).await.ok()?;
                let live: BTreeSet<String> = nodes
                    .iter()
                    .filter(|n| n.alive && n.state == "active" && n.protocol == expect)
                    .map(|n| n.id.clone())
                    .collect();
                (live == want).then_some(())
            })
            .await;
        stack
    }

    /// [`eventually`] within [`WAIT`] (on a timeout the processes' output is printed as they are dropped).
    async fn eventually<T, F, Fut>(&self, what: &str, check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        eventually(what, WAIT, check).await
    }

    fn node(&mut self, id: &str) -> &mut EchoNode {
        self.nodes.iter_mut().find(|n| n.id == id).expect("a node with this id")
    }

    /// Applies the task `namespace/echo` (the nodes' handler is `echo`: over gRPC it is found by the task's
    /// name) dispatched to the stack's service; `spec` is YAML lines added under `spec:` (indented two spaces).
    async fn apply(&self, namespace: &str, protocol: Protocol, spec: &str) {
        let target = match protocol {
            Protocol::Http => "{http: {path: /echo}}",
            Protocol::Grpc => "{grpc: {}}",
        };
        let doc = format!(
            "apiVersion: rota/v1\nkind: Task\nmetadata: {{namespace: {namespace}, name: echo}}\nspec:\n  \
             schedule: {{manual: true}}\n  target: {target}\n  candidates: {{service: {}}}\n  timeout: 5s\n{spec}",
            self.service
        );
        self.rota.apply(doc.as_str()).await.unwrap_or_else(|e| panic!("apply {namespace}/echo: {e}\n{doc}"));
    }

    /// Triggers `namespace/echo` `n` times with `params`; returns the run ids.
    async fn trigger(&self, namespace: &str, n: usize, params: Value) -> Vec<i64> {
        let Value::Object(params) = params else { panic!("params must be an object") };
        let mut ids = Vec::new();
        for _ in 0..n {
            let run = self.rota.trigger(namespace, "echo", Params::clone(&params)).await.expect("trigger");
            ids.push(run.id);
        }
        ids
    }

    /// Waits until every run of `ids` has finished; returns them with their attempts, in the order of `ids`.
    async fn finished(&self, ids: &[i64]) -> Vec<RunDetail> {
        let done: Mutex<BTreeMap<i64, RunDetail>> = Mutex::default();
        self.eventually(&format!("{} run(s) to finish", ids.len()), || async {
            let pending: Vec<i64> = ids.iter().copied().filter(|id| !done.lock().unwrap().contains_key(id)).collect();
            for id in pending {
                let detail = self.rota.get_run(id).await.ok()?;
                if detail.run.state.is_terminal() {
                    done.lock().unwrap().insert(id, detail);
                }
            }
            (done.lock().unwrap().len() == ids.len()).then_some(())
        })
        .await;
        let mut done = done.into_inner().unwrap();
        ids.iter().map(|id| done.remove(id).unwrap()).collect()
    }
}

/// Runs `n` unicast round-robin runs over the three nodes of a stack: each node gets exactly a third.
async fn round_robin_spreads_evenly(protocol: Protocol) {
    let service = format!("rr-{protocol:?}").to_lowercase();
    let ids = ["rr1", "rr2", "rr3"];
    let stack = Stack::start(&service, &ids, protocol).await;
    stack.apply("rr", protocol, "  dispatch: {mode: unicast, loadBalance: round_robin}\n").await;
    let runs = stack.finished(&stack.trigger("rr", 30, json!({"n": 1})).await).await;
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for d in &runs {
        assert_eq!(d.run.state, RunState::Succeeded, "{d:?}");
        assert_eq!(d.attempts.len(), 1, "one attempt, no retry: {d:?}");
        let node = d.attempts[0].node.clone();
        assert_eq!(d.run.output.as_ref().unwrap()["node"], json!(node), "the output names the node that ran it");
        *per_node.entry(node).or_default() += 1;
    }
    let want: BTreeMap<String, usize> = ids.iter().map(|id| (id.to_string(), 10)).collect();
    assert_eq!(per_node, want, "30 runs, round robin over 3 nodes");
}

/// A broadcast run reaches every node: one attempt row per node, the run's output keyed by node id.
async fn broadcast_reaches_every_node(protocol: Protocol) {
    let service = format!("bc-{protocol:?}").to_lowercase();
    let ids = ["bc1", "bc2", "bc3"];
    let stack = Stack::start(&service, &ids, protocol).await;
    stack.apply("bc", protocol, "  dispatch: {mode: broadcast}\n").await;
    // A synchronous run and one each node answers `accepted` and reports later (over HTTP, also from gRPC nodes).
    let mut run_ids = stack.trigger("bc", 1, json!({"greeting": "hi"})).await;
    run_ids.extend(stack.trigger("bc", 1, json!({"greeting": "hi", "async": true})).await);
    let runs = stack.finished(&run_ids).await;
    for d in &runs {
        assert_eq!(d.run.state, RunState::Succeeded, "{d:?}");
        let mut nodes: Vec<&str> = d.attempts.iter().map(|a| a.node.as_str()).collect();
        nodes.sort_unstable();
        assert_eq!(nodes, ids, "one attempt row per node: {d:?}");
        assert!(d.attempts.iter().all(|a| a.attempt == 1 && a.state == AttemptState::Succeeded), "{d:?}");
        let output = d.run.output.as_ref().and_then(Value::as_object).expect("an object output");
        assert_eq!(output.keys().map(String::as_str).collect::<Vec<_>>(), ids, "keyed by node id: {d:?}");
        for id in ids {
            assert_eq!(output[id]["node"], json!(id), "{d:?}");
            assert_eq!(output[id]["echo"]["greeting"], "hi", "{d:?}");
            assert_eq!(output[id]["shard"], json!({"index": 0, "total": 1}), "broadcast is not sharded: {d:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn http_round_robin_spreads_runs_evenly() {
    round_robin_spreads_evenly(Protocol::Http).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn http_broadcast_reaches_every_node() {
    broadcast_reaches_every_node(Protocol::Http).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_round_robin_spreads_runs_evenly() {
    round_robin_spreads_evenly(Protocol::Grpc).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_broadcast_reaches_every_node() {
    broadcast_reaches_every_node(Protocol::Grpc).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn http_sharded_gives_each_node_its_own_index() {
    let ids = ["sh1", "sh2", "sh3"];
    let stack = Stack::start("sharded", &ids, Protocol::Http).await;
    stack.apply("sh", Protocol::Http, "  dispatch: {mode: sharded}\n").await;
    let runs = stack.finished(&stack.trigger("sh", 2, json!({})).await).await;
    for d in &runs {
        assert_eq!(d.run.state, RunState::Succeeded, "{d:?}");
        assert_eq!(d.attempts.len(), 3, "{d:?}");
        let mut shards: Vec<(u64, u64)> = Vec::new();
        let mut nodes = BTreeSet::new();
        for a in &d.attempts {
            assert_eq!(a.state, AttemptState::Succeeded, "{d:?}");
            let out = a.output.as_ref().expect("each row has its node's output");
            assert_eq!(out["node"], json!(a.node), "{d:?}");
            shards.push((out["shard"]["index"].as_u64().unwrap(), out["shard"]["total"].as_u64().unwrap()));
            nodes.insert(a.node.as_str());
        }
        shards.sort_unstable();
        assert_eq!(shards, [(0, 3), (1, 3), (2, 3)], "indexes 0, 1, 2 of 3: {d:?}");
        assert_eq!(nodes.into_iter().collect::<Vec<_>>(), ids, "on distinct nodes: {d:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_node_loses_its_work_to_the_survivors() {
    let ids = ["k1", "k2", "k3"];
    let mut stack = Stack::start("killable", &ids, Protocol::Http).await;
    stack
        .apply(
            "kill",
            Protocol::Http,
            "  retry: {maxAttempts: 3, switchNode: true, backoff: {kind: fixed, initial: 100ms}}\n",
        )
        .await;
    let before = stack.finished(&stack.trigger("kill", 6, json!({})).await).await;
    let used: BTreeSet<&str> = before.iter().map(|d| d.attempts[0].node.as_str()).collect();
    assert_eq!(used.into_iter().collect::<Vec<_>>(), ids, "every node worked before the kill");

    stack.node("k2").kill9();
    // Still registered for up to the TTL: some of these go to k2, fail to connect and are retried elsewhere.
    let during = stack.finished(&stack.trigger("kill", 6, json!({})).await).await;
    let mut moved = 0;
    for d in &during {
        assert_eq!(d.run.state, RunState::Succeeded, "{d:?}");
        let last = d.attempts.last().unwrap();
        assert_eq!(last.state, AttemptState::Succeeded, "{d:?}");
        assert_ne!(last.node, "k2", "{d:?}");
        if d.attempts.len() > 1 {
            let nodes: Vec<&str> = d.attempts.iter().map(|a| a.node.as_str()).collect();
            assert_eq!(nodes[0], "k2", "only k2 fails: {d:?}");
            assert_eq!(d.attempts[0].state, AttemptState::Failed, "{d:?}");
            assert_eq!(nodes.iter().collect::<BTreeSet<_>>().len(), nodes.len(), "switchNode: {d:?}");
            moved += 1;
        } else {
            assert_ne!(d.attempts[0].node, "k2", "{d:?}");
        }
    }
    assert!(moved >= 1, "a run went to the dead node before its registration expired: {during:?}");

    stack
        .eventually("k2's registration to expire", || async {
            let nodes = stack.rota.executors(Some("killable")).await.ok()?;
            nodes.iter().all(|n| n.id != "k2" || !n.alive).then_some(())
        })
        .await;
    // The scheduler's registry answers are cached this long: one fetched before the expiry may still list k2.
    tokio::time::sleep(rota_discovery::DEFAULT_REGISTRY_CACHE + Duration::from_millis(100)).await;
    let after = stack.finished(&stack.trigger("kill", 10, json!({})).await).await;
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for d in &after {
        assert_eq!(d.run.state, RunState::Succeeded, "{d:?}");
        assert_eq!(d.attempts.len(), 1, "no retry once k2 is gone: {d:?}");
        *per_node.entry(d.attempts[0].node.as_str()).or_default() += 1;
    }
    assert_eq!(per_node, BTreeMap::from([("k1", 5), ("k3", 5)]), "only the survivors, in turn");
}

#[tokio::test(flavor = "multi_thread")]
async fn switch_node_retries_land_on_other_nodes() {
    let ids = ["s1", "s2", "s3"];
    let stack = Stack::start("switching", &ids, Protocol::Http).await;
    let retry = |switch: bool| {
        format!(
            "  dispatch: {{loadBalance: first}}\n  retry: {{maxAttempts: 3, switchNode: {switch}, backoff: {{kind: \
             fixed, initial: 100ms}}}}\n"
        )
    };
    // `first` always picks the same node: the one a retry must leave.
    stack.apply("sw", Protocol::Http, &retry(true)).await;
    let probe = stack.finished(&stack.trigger("sw", 1, json!({})).await).await;
    let first = probe[0].attempts[0].node.clone();
    // The node ordered last, so that with `first` the run goes through every node.
    let only = ids.iter().copied().rev().find(|id| *id != first).unwrap();

    let run = &stack.finished(&stack.trigger("sw", 1, json!({"fail_unless_node": only})).await).await[0];
    assert_eq!(run.run.state, RunState::Succeeded, "{run:?}");
    let nodes: Vec<&str> = run.attempts.iter().map(|a| a.node.as_str()).collect();
    assert_eq!(nodes[0], first, "{run:?}");
    assert_eq!(nodes.last().copied(), Some(only), "{run:?}");
    assert_eq!(nodes.iter().collect::<BTreeSet<_>>().len(), nodes.len(), "every retry on another node: {run:?}");
    for a in &run.attempts[..run.attempts.len() - 1] {
        assert_eq!(a.state, AttemptState::Failed, "{run:?}");
        let error = a.error.as_deref().unwrap_or_default();
        assert!(error.contains(&format!("asked to fail on every node but {only}")), "{run:?}");
    }
    assert_eq!(run.run.output.as_ref().unwrap()["node"], json!(only));

    // Without switchNode, `first` retries on the same node (so the above is switchNode's doing).
    stack.apply("sw", Protocol::Http, &retry(false)).await;
    let run = &stack.finished(&stack.trigger("sw", 1, json!({"fail_unless_node": only})).await).await[0];
    assert_eq!(run.run.state, RunState::Failed, "{run:?}");
    let nodes: Vec<&str> = run.attempts.iter().map(|a| a.node.as_str()).collect();
    assert_eq!(nodes, [first.as_str(); 3], "{run:?}");
}
