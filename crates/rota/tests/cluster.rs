//! The scheduling cluster with real processes: several `rota server` nodes on one PostgreSQL or MariaDB store,
//! tasks firing every second against a recording executor, nodes killed (`kill -9`), restarted, added and paused
//! (SIGSTOP past their lease). The executor's record must show every expected (task, instant) dispatched exactly
//! once, and the shard ownership must converge.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, TimeDelta, Utc};
use common::{Server, eventually};
use rota_proto::RunEnvelope;
use rota_store::{LeaseStore, NodeFilter, NodeKind, NodeStore, PageRequest, RunFilter, RunState, RunStore};
use rota_store_sql::SqlStore;
use serde_json::{Value, json};

const SHARDS: u32 = 32;
const TASKS: usize = 12;
/// The default lease TTL (3 s): failover is measured with what users get.
const LEASE_TTL: &str = "3s";

/// One dispatch as the executor saw it.
#[derive(Debug, Clone)]
struct Delivery {
    task: String,
    scheduled_at: DateTime<Utc>,
    run_id: String,
    attempt: u32,
}

/// An executor node that records every envelope and answers `succeeded` at once.
struct Recorder {
    url: String,
    got: Arc<Mutex<Vec<Delivery>>>,
}

impl Recorder {
    async fn start() -> Recorder {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let got = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new().fallback(axum::routing::post(record)).with_state(got.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Recorder { url, got }
    }
}

async fn record(State(got): State<Arc<Mutex<Vec<Delivery>>>>, Json(e): Json<RunEnvelope>) -> Json<Value> {
    got.lock().unwrap().push(Delivery {
        task: e.task,
        scheduled_at: e.scheduled_at,
        run_id: e.run_id,
        attempt: e.attempt,
    });
    Json(json!({"status": "succeeded"}))
}

/// A cluster under test: the store (read directly, as an operator's SQL would) and the nodes by id.
struct Cluster {
    db: String,
    store: SqlStore,
    nodes: BTreeMap<String, Server>,
    http: reqwest::Client,
}

impl Cluster {
    async fn new(db: String) -> Cluster {
        let store = SqlStore::connect(&db).await.expect("connect to the test database");
        rota_tls::install_crypto_provider();
        Cluster { db, store, nodes: BTreeMap::new(), http: reqwest::Client::new() }
    }

    fn start(&mut self, id: &str) {
        let server = Server::start(&[
            "--database-url",
            &self.db,
            "--node-id",
            id,
            "--shards",
            &SHARDS.to_string(),
            "--lease-ttl",
            LEASE_TTL,
            "--scan-interval",
            "500ms",
        ]);
        self.nodes.insert(id.to_string(), server);
    }

    fn any_url(&self) -> String {
        self.nodes.values().next().expect("a node").url.clone()
    }

    /// Applies `TASKS` tasks firing every second; returns each task's first fire instant.
    async fn apply_tasks(&self, executor: &str) -> BTreeMap<String, DateTime<Utc>> {
        let mut first = BTreeMap::new();
        for i in 0..TASKS {
            let name = format!("tick-{i:02}");
            let doc = json!({
                "apiVersion": "rota/v1", "kind": "Task",
                "metadata": {"namespace": "cluster", "name": name},
                "spec": {
                    "schedule": {"every": "1s", "misfire": "run_all", "catchUpLimit": 1000},
                    "target": {"http": {"path": format!("/jobs/{name}"), "protocol": "rota"}},
                    "candidates": {"static": [executor]},
                    "retry": {"maxAttempts": 3, "backoff": {"kind": "fixed", "initial": "200ms"}},
                    "timeout": "5s"
                }
            });
            let url = self.any_url();
            let res = common::authed(self.http.put(format!("{url}/api/v1/tasks/cluster/{name}")), &url)
                .json(&doc)
                .send()
                .await
                .expect("PUT task");
            assert!(res.status().is_success(), "PUT task: {}", res.status());
            let body: Value = res.json().await.unwrap();
            let at: DateTime<Utc> = body["next_fire_at"].as_str().expect("next_fire_at").parse().unwrap();
            first.insert(format!("cluster/{name}"), at);
        }
        first
    }

    /// Waits until the live leases are split evenly among exactly `expect` (and every shard is held).
    async fn converged(&self, expect: &[&str], within: Duration) -> Duration {
        let started = Instant::now();
        let mut want: Vec<String> = expect.iter().map(|s| s.to_string()).collect();
        want.sort();
        let store = &self.store;
        eventually(&format!("shards split among {want:?}"), within, || {
            let want = want.clone();
            async move {
                let now = Utc::now();
                let leases = store.list_leases().await.ok()?;
                let live: Vec<_> = leases.iter().filter(|l| l.expires_at > now && !l.owner.is_empty()).collect();
                let mut per: BTreeMap<String, usize> = BTreeMap::new();
                for l in &live {
                    *per.entry(l.owner.clone()).or_default() += 1;
                }
                let owners: Vec<String> = per.keys().cloned().collect();
                let (min, max) = (per.values().min().copied()?, per.values().max().copied()?);
                (live.len() == SHARDS as usize && owners == want && max - min <= 1).then_some(())
            }
        })
        .await;
        started.elapsed()
    }

    fn node(&mut self, id: &str) -> &mut Server {
        self.nodes.get_mut(id).expect("node")
    }
}

/// Every expected (task, instant) in `[first, cutoff]` has exactly one run, and the executor saw each exactly
/// once; a second delivery is tolerated only for a run whose first attempt a failover resolved (its node died
/// mid-dispatch), and none may be a duplicate of the same attempt. Returns (instants checked, redeliveries).
async fn check_exactly_once(
    store: &SqlStore,
    first: &BTreeMap<String, DateTime<Utc>>,
    cutoff: DateTime<Utc>,
    got: &[Delivery],
) -> (usize, usize) {
    let mut delivered: HashMap<(String, DateTime<Utc>), Vec<&Delivery>> = HashMap::new();
    for d in got {
        delivered.entry((d.task.clone(), d.scheduled_at)).or_default().push(d);
    }
    let mut checked = 0;
    let mut redelivered = 0;
    for (task, &start) in first {
        let (ns, name) = task.split_once('/').unwrap();
        let mut runs = Vec::new();
        let mut page = PageRequest::first(1000);
        loop {
            let filter = RunFilter { namespace: Some(ns.into()), name: Some(name.into()), ..RunFilter::default() };
            let p = store.list_runs(&filter, &page).await.expect("list runs");
            runs.extend(p.items);
            match p.next_cursor {
                Some(c) => page = PageRequest { cursor: Some(c), limit: 1000 },
                None => break,
            }
        }
        let by_instant: HashMap<DateTime<Utc>, &rota_store::RunRecord> =
            runs.iter().map(|r| (r.scheduled_at, r)).collect();
        assert_eq!(by_instant.len(), runs.len(), "{task}: two runs for one instant");
        let mut at = start;
        while at <= cutoff {
            let run = by_instant.get(&at).unwrap_or_else(|| panic!("{task}: no run for {at} (a lost fire)"));
            assert_eq!(run.state, RunState::Succeeded, "{task} at {at}: {run:?}");
            let ds = delivered.get(&(task.clone(), at)).map(Vec::as_slice).unwrap_or_default();
            assert!(!ds.is_empty(), "{task} at {at}: run {} succeeded but the executor never saw it", run.id);
            let mut attempts: Vec<u32> = ds.iter().map(|d| d.attempt).collect();
            attempts.sort_unstable();
            let before = attempts.len();
            attempts.dedup();
            assert_eq!(attempts.len(), before, "{task} at {at}: the same attempt delivered twice: {ds:?}");
            assert!(ds.iter().all(|d| d.run_id == run.id.to_string()), "{task} at {at}: foreign run ids {ds:?}");
            if ds.len() > 1 {
                let atts = store.list_attempts(run.id).await.expect("attempts");
                let first_attempt = atts.iter().find(|a| a.attempt == 1).expect("attempt 1");
                let why = first_attempt.error.as_deref().unwrap_or_default();
                assert!(
                    why.contains("stopped during the dispatch") || why.contains("lease expired"),
                    "{task} at {at}: dispatched {} times, attempt 1 ended {:?}: {why}",
                    ds.len(),
                    first_attempt.state
                );
                redelivered += 1;
            }
            checked += 1;
            at += TimeDelta::seconds(1);
        }
    }
    (checked, redelivered)
}

/// Waits until every run scheduled at or before `cutoff` has finished.
async fn settled(store: &SqlStore, cutoff: DateTime<Utc>) {
    eventually("the runs up to the cutoff to finish", Duration::from_secs(60), || async move {
        let filter = RunFilter {
            namespace: Some("cluster".into()),
            states: vec![RunState::Scheduled, RunState::Dispatching, RunState::Running],
            to: Some(cutoff + TimeDelta::milliseconds(1)), // `to` is exclusive
            ..RunFilter::default()
        };
        let p = store.list_runs(&filter, &PageRequest::first(10)).await.ok()?;
        p.items.is_empty().then_some(())
    })
    .await;
}

fn whole_second_before(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap()
}

async fn kill_restart_add(db: String) {
    let exec = Recorder::start().await;
    let mut c = Cluster::new(db).await;
    for id in ["n1", "n2", "n3"] {
        c.start(id);
    }
    c.converged(&["n1", "n2", "n3"], Duration::from_secs(30)).await;
    let first = c.apply_tasks(&exec.url).await;
    tokio::time::sleep(Duration::from_secs(3)).await; // let fires flow across the three nodes

    let killed_at = Instant::now();
    c.node("n2").kill9();
    c.nodes.remove("n2");
    let failover = c.converged(&["n1", "n3"], Duration::from_secs(30)).await;
    eprintln!("failover after kill -9: shards of n2 held by n1/n3 {:?} after the kill", killed_at.elapsed());
    assert!(failover < Duration::from_secs(15), "failover took {failover:?}");

    c.start("n2");
    c.converged(&["n1", "n2", "n3"], Duration::from_secs(30)).await;
    c.start("n4");
    c.converged(&["n1", "n2", "n3", "n4"], Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let cutoff = whole_second_before(Utc::now());
    settled(&c.store, cutoff).await;
    let got = exec.got.lock().unwrap().clone();
    let (checked, redelivered) = check_exactly_once(&c.store, &first, cutoff, &got).await;
    eprintln!("checked {checked} (task, instant) pairs; {redelivered} redelivered after a failover");
    assert!(checked >= TASKS * 10, "only {checked} instants checked");

    // The cluster view in the registry: four live scheduler nodes.
    let filter = NodeFilter { kind: Some(NodeKind::Scheduler), alive_at: Some(Utc::now()), ..NodeFilter::default() };
    let live: Vec<String> = c.store.list_nodes(&filter).await.unwrap().into_iter().map(|n| n.id).collect();
    assert_eq!(live, ["n1", "n2", "n3", "n4"]);
}

async fn pause_past_the_lease(db: String) {
    let exec = Recorder::start().await;
    let mut c = Cluster::new(db).await;
    for id in ["p1", "p2", "p3"] {
        c.start(id);
    }
    c.converged(&["p1", "p2", "p3"], Duration::from_secs(30)).await;
    let first = c.apply_tasks(&exec.url).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // p1 freezes with its timers full and its leases "held" in memory; the others take its shards.
    c.node("p1").signal("STOP");
    let frozen = c.converged(&["p2", "p3"], Duration::from_secs(30)).await;
    eprintln!("p1 stopped; its shards taken over after {frozen:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    // On SIGCONT p1's due timers fire at once, with stale fences: the store must refuse every one.
    c.node("p1").signal("CONT");
    c.converged(&["p1", "p2", "p3"], Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let cutoff = whole_second_before(Utc::now());
    settled(&c.store, cutoff).await;
    let got = exec.got.lock().unwrap().clone();
    let (checked, redelivered) = check_exactly_once(&c.store, &first, cutoff, &got).await;
    eprintln!("checked {checked} (task, instant) pairs; {redelivered} redelivered");
    let out = c.node("p1").output();
    assert!(out.contains("lost shard lease"), "p1 noticed it was fenced:\n{out}");
}

async fn postgres() -> String {
    rota_store_sql::testing::fresh_postgres_url().await.unwrap_or_else(|e| {
        panic!("PostgreSQL is required for this test (set ROTA_TEST_POSTGRES_URL or start it): {e}")
    })
}

async fn mysql() -> String {
    rota_store_sql::testing::fresh_mysql_url().await.unwrap_or_else(|e| {
        panic!("MariaDB/MySQL is required for this test (set ROTA_TEST_MYSQL_URL or start it): {e}")
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_cluster_survives_kill_restart_and_join_exactly_once() {
    kill_restart_add(postgres().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_cluster_survives_kill_restart_and_join_exactly_once() {
    kill_restart_add(mysql().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_paused_node_is_fenced() {
    pause_past_the_lease(postgres().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_paused_node_is_fenced() {
    pause_past_the_lease(mysql().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_with_different_shard_counts_refuse_to_share_a_store() {
    let db = postgres().await;
    // A long TTL, so the first node's registration cannot lapse on a loaded machine.
    let _a = Server::start(&["--database-url", &db, "--node-id", "a", "--shards", "32", "--lease-ttl", "60s"]);
    let stderr = must_fail(&["--database-url", &db, "--node-id", "b", "--shards", "64"]);
    assert!(stderr.contains("same shard count"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_refuses_a_second_scheduler_node() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let _a = Server::start(&["--data-dir", data, "--node-id", "a", "--lease-ttl", "60s"]);
    let stderr = must_fail(&["--data-dir", data, "--node-id", "b"]);
    assert!(stderr.contains("supports a single scheduler node"), "{stderr}");
}

/// Runs `rota server --listen 127.0.0.1:0 ARGS…`, which must exit with an error within 30 s; returns its stderr.
fn must_fail(args: &[&str]) -> String {
    let mut child = std::process::Command::new(common::BIN)
        .args(["server", "--listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("ROTA_DATABASE_URL")
        .env_remove("ROTA_DATA_DIR")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("rota server {args:?} did not refuse to start within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "rota server {args:?} exited successfully:\n{stderr}");
    stderr
}
