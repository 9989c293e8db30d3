//! Multi-process scheduler-cluster benchmark: N `rota server` processes sharing one PostgreSQL store.
//!
//! ```text
//! cargo build --release -p rota -p rota-bench
//! /work/target/release/cluster-bench --nodes 1,3 --tasks 100000 --every 10s --seconds 30
//! /work/target/release/cluster-bench --nodes 3 --tasks 20000 --every 10s --seconds 30 --kill
//! ```
//!
//! For each node count of `--nodes` (a comma list; every configuration gets a fresh database, and the figures of
//! the later ones are also given as ratios to the first):
//!
//! 1. creates the database `rota_b_<pid>` on the server of `--postgres-url` (dropped at the end, also on errors),
//!    migrates it by opening a `rota_store_sql::SqlStore`, and bulk-loads `--tasks` tasks with
//!    `SqlStore::bulk_insert_tasks`: `every: <--every>`, `misfire: run_all` (`--misfire`), an HTTP target in the
//!    `rota` protocol whose only static candidate is this process's no-op recording executor. The shard is
//!    `Scheduler::shard_of` (FNV-1a of `namespace/name` modulo `--shards`) and `next_fire_at` the spec's
//!    `next_after` truncated to milliseconds, as `Scheduler::apply` computes them. By default the tasks are spread
//!    evenly over the period (task *i* has `startAt = epoch + i·period/tasks`), so the cluster sees a steady
//!    `tasks / period` fires per second; `--aligned` makes them all due at the same instant instead.
//! 2. starts N `rota server` processes (`--database-url`, `--node-id bench-<i>`, `--listen 127.0.0.1:0`,
//!    `--shards`), waits for `rota listening on` on each one's stdout, waits until the shard leases are split
//!    (every node holds at least ⌊shards/N⌋ live leases; reported, at most `--balance-timeout`), warms up for
//!    `--warmup`, then measures the scheduled instants of a window of `--seconds`, after which it waits `--drain`
//!    seconds for late deliveries.
//! 3. with `--kill`, kills one node (the one holding the most shards) with SIGKILL, waits `--after-kill` seconds
//!    plus `--drain`, and reports the failover (definitions below).
//!
//! Every dispatch the executor receives is recorded as (task, scheduled_at, run_id, attempt, received_at).
//! Definitions (instants are the tasks' scheduled instants, `[w0, w1)` the window):
//!
//! * **fire lag** = `received_at - scheduled_at` of every attempt-1 dispatch of an instant in the window;
//! * **fires/s** = distinct (task, instant) pairs of the window received / window length;
//! * **missed** = expected (task, instant) pairs in the window (computed from each task's anchor and period) that
//!   were never received (by the end of the drain);
//! * **duplicates** = extra attempt-1 deliveries of one (task, instant), and separately extra run ids for one
//!   (task, instant) (either breaks exactly-once); retries (attempt > 1) are counted apart;
//! * **CPU** = utime + stime deltas of each `rota server` process (`/proc/<pid>/stat`) over the window, as % of one
//!   core; also the bench process itself, all `postgres` processes (approximate: backends that exit in the window
//!   are lost) and the whole machine (`/proc/stat`, % of one core, so 200 % is both cores of a 2-core machine);
//! * **failover** (with `--kill` and at least 2 nodes, at instant `T`): the killed node's shards are the ones whose
//!   lease row names it just before the kill. Per killed shard, *resume* = the first `received_at` of a dispatch, of a task of that
//!   shard, for an instant scheduled at or after `T`, minus `T`; **failover time** = the maximum over the killed
//!   shards (also min and median). **Lag recovery** = the last `received_at` of an attempt-1 dispatch of a killed
//!   shard's instant scheduled in `[T, T + after-kill)` whose lag exceeds max(2 × the window's p99, 100 ms),
//!   minus `T` (0 when none does). Missed and duplicate fires are counted over all tasks for the instants of
//!   `[w1, T + after-kill)` (the drain before the kill, the kill, the takeover and the catch-up).
//!
//! The baseline, measured in the same run before any server starts, is the rate a bare HTTP load loop (reqwest,
//! `--concurrency` connections, no scheduler) gets from the same no-op executor; fires/s are also given as a
//! ratio of it.
//!
//! The output is a plain-text report followed by one line of JSON (`{"bench":"cluster-bench",…}`).

use rota_bench::bare_http_rate;
use std::collections::{BTreeMap, HashMap};
use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use axum::Json;
use axum::routing::post;
use chrono::{DateTime, TimeDelta, Utc};
use clap::Parser;
use rota_core::{Scheduler, SchedulerConfig};
use rota_executor::{HttpExecutorConfig, Router};
use rota_proto::{RunEnvelope, RunResult};
use rota_store::{LeaseStore, TaskWrite, truncate_millis};
use rota_store_sql::SqlStore;
use serde_json::{Value, json};
use sqlx::{Connection as _, Executor as _};

const NAMESPACE: &str = "bench";

#[derive(Parser, Debug)]
#[command(about = "Scheduler-cluster benchmark: N `rota server` processes on one PostgreSQL store")]
struct Args {
    /// Admin URL of the PostgreSQL server; the bench creates (and drops) the database `rota_b_<pid>` on it.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres_url: String,
    /// Node counts to measure, in order, each on a fresh database (e.g. `1,3`); ratios are to the first.
    #[arg(long, default_value = "1", value_delimiter = ',')]
    nodes: Vec<usize>,
    /// Number of tasks.
    #[arg(long, default_value_t = 100_000)]
    tasks: usize,
    /// Period of every task (`every:`).
    #[arg(long, default_value = "10s")]
    every: String,
    /// Length of the measured window (seconds of scheduled instants).
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Warm-up after the servers are up and the shards are split.
    #[arg(long, default_value_t = 15)]
    warmup: u64,
    /// Wait after a window for late deliveries before counting misses.
    #[arg(long, default_value_t = 10)]
    drain: u64,
    /// The `rota` binary [default: $CARGO_TARGET_DIR/release/rota, else <workspace>/target/release/rota].
    #[arg(long)]
    rota_bin: Option<PathBuf>,
    /// After the window, kill -9 one node (the one holding most shards) and measure the failover.
    #[arg(long)]
    kill: bool,
    /// How long to observe after the kill (instants scheduled in [kill, kill + this) are checked).
    #[arg(long, default_value_t = 30)]
    after_kill: u64,
    /// `--lease-ttl` of the servers (when unset, their default).
    #[arg(long)]
    lease_ttl: Option<String>,
    /// `--scan-interval` of the servers (when unset, their default).
    #[arg(long)]
    scan_interval: Option<String>,
    /// Shards (`--shards` of the servers).
    #[arg(long, default_value_t = 256)]
    shards: u32,
    /// Misfire policy of the tasks: skip | run_once | run_all.
    #[arg(long, default_value = "run_all")]
    misfire: String,
    /// All tasks due at the same instant every period (default: spread evenly over the period).
    #[arg(long)]
    aligned: bool,
    /// Concurrent bulk loaders.
    #[arg(long, default_value_t = 4)]
    loaders: usize,
    /// How long to wait for the shard leases to be split among the nodes before warming up anyway.
    #[arg(long, default_value_t = 60)]
    balance_timeout: u64,
    /// Connections of the bare-HTTP baseline.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Length of the bare-HTTP baseline.
    #[arg(long, default_value_t = 5)]
    baseline_seconds: u64,
    /// RUST_LOG of the servers (their stderr goes to files under the temp dir).
    #[arg(long, default_value = "warn")]
    server_log: String,
}

// ---------------------------------------------------------------------------------------------------------------
// The no-op recording executor

#[derive(Clone, Copy)]
struct Rec {
    task: u32,
    sched: i64,
    run: i64,
    attempt: u32,
    recv: i64,
}

type Records = Arc<Mutex<Vec<Rec>>>;

/// A no-op `rota`-protocol executor on 127.0.0.1:0 answering every run `succeeded` at once; records each dispatch
/// when `record` is given.
async fn start_executor(record: Option<Records>) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/run",
        post(move |Json(env): Json<RunEnvelope>| {
            let record = record.clone();
            async move {
                if let Some(record) = record {
                    let recv = Utc::now().timestamp_millis();
                    let task = env.task.strip_prefix("bench/t").and_then(|n| n.parse::<u32>().ok()).unwrap_or(u32::MAX);
                    let run = env.run_id.parse::<i64>().unwrap_or(-1);
                    let rec = Rec { task, sched: env.scheduled_at.timestamp_millis(), run, attempt: env.attempt, recv };
                    record.lock().unwrap().push(rec);
                }
                Json(RunResult::succeeded(None))
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

// ---------------------------------------------------------------------------------------------------------------
// The database

/// The bench database `rota_b_<pid>` on the admin server; [`BenchDb::drop_db`] must be awaited (async drop).
struct BenchDb {
    admin: String,
    name: String,
    url: String,
}

impl BenchDb {
    async fn create(admin: &str) -> Result<BenchDb> {
        let name = format!("rota_b_{}", std::process::id());
        let mut u = url::Url::parse(admin).context("malformed --postgres-url")?;
        u.set_path(&format!("/{name}"));
        let db = BenchDb { admin: admin.to_owned(), name, url: u.to_string() };
        db.recreate().await?;
        Ok(db)
    }

    /// Drops (if it exists) and creates the database: a fresh, empty one.
    async fn recreate(&self) -> Result<()> {
        let name = &self.name;
        let admin = &self.admin;
        let mut conn = sqlx::PgConnection::connect(admin)
            .await
            .with_context(|| format!("cannot connect to PostgreSQL at {}", rota_store_sql::testing::redact(admin)))?;
        conn.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))).await?;
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .await
            .with_context(|| format!("cannot create the database {name}"))?;
        let _ = conn.close().await;
        Ok(())
    }

    async fn drop_db(&self) -> Result<()> {
        let mut conn = sqlx::PgConnection::connect(&self.admin).await?;
        conn.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name))).await?;
        let _ = conn.close().await;
        Ok(())
    }
}

/// What the bench knows about each task: its anchor offset (ms after the epoch, within one period) and shard.
struct Plan {
    period: i64,
    offsets: Vec<i64>,
    shards: Vec<u32>,
}

impl Plan {
    /// Number of instants `offset + k·period` in `[a, b)`.
    fn count_in(&self, task: usize, a: i64, b: i64) -> u64 {
        let ceil = |x: i64| -((-x).div_euclid(self.period));
        let o = self.offsets[task];
        (ceil(b - o) - ceil(a - o)).max(0) as u64
    }

    fn is_instant(&self, task: usize, at: i64) -> bool {
        (at - self.offsets[task]).rem_euclid(self.period) == 0
    }
}

fn ms_to_utc(ms: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(ms).expect("instant in range")
}

/// Builds and bulk-loads the tasks; returns the plan and the load time.
async fn load_tasks(
    store: &SqlStore,
    args: &Args,
    executor: SocketAddr,
    first_after: DateTime<Utc>,
) -> Result<(Plan, f64)> {
    let period_std = args.every.parse::<rota_spec::Duration>().map_err(|e| anyhow!("--every: {e}"))?.as_std();
    let period = period_std.as_millis() as i64;
    if period <= 0 {
        bail!("--every must be at least 1ms");
    }
    let doc = format!(
        "apiVersion: rota/v1\nkind: Task\nmetadata: {{namespace: {NAMESPACE}, name: t0}}\nspec:\n  schedule: {{every: \
         {}, misfire: {}}}\n  target: {{http: {{path: /run}}}}\n  candidates: {{static: [\"http://{executor}\"]}}\n  \
         timeout: 30s\n",
        args.every, args.misfire
    );
    let template = rota_spec::parse_yaml(&doc)?;
    template.validate()?;
    // Only for `shard_of`, the core's own shard function; never started.
    let shard_fn = Scheduler::new(
        Arc::new(store.clone()),
        Arc::new(Router::standard(HttpExecutorConfig::default())?),
        SchedulerConfig { shard_count: args.shards, ..SchedulerConfig::default() },
    );
    let n = args.tasks;
    let mut plan = Plan { period, offsets: Vec::with_capacity(n), shards: Vec::with_capacity(n) };
    let mut writes = Vec::with_capacity(n);
    for i in 0..n {
        let offset = if args.aligned { 0 } else { (i as i64 * period) / n as i64 };
        let mut task = template.clone();
        task.metadata.name = format!("t{i}");
        let schedule = task.spec.schedule.as_mut().expect("the template has a schedule");
        if !args.aligned {
            schedule.start_at = Some(ms_to_utc(offset));
        }
        // As `Scheduler::apply` (rota-core's `next_fire`): the first instant strictly after `first_after`, in ms.
        let compiled = schedule.compile()?;
        let mut t = first_after;
        let next_fire_at = loop {
            let Some(next) = compiled.next_after(t) else { break None };
            let next_ms = truncate_millis(next);
            if next_ms > first_after {
                break Some(next_ms);
            }
            t = next;
        };
        let shard = shard_fn.shard_of(NAMESPACE, &task.metadata.name);
        plan.offsets.push(offset);
        plan.shards.push(shard);
        writes.push(TaskWrite {
            namespace: NAMESPACE.into(),
            name: task.metadata.name.clone(),
            labels: Default::default(),
            spec: serde_json::to_value(&task)?,
            shard,
            next_fire_at,
        });
    }
    drop(shard_fn);
    let start = Instant::now();
    let now = Utc::now();
    let batches: Vec<Vec<TaskWrite>> = {
        let mut v = Vec::new();
        let mut it = writes.into_iter().peekable();
        while it.peek().is_some() {
            v.push(it.by_ref().take(5_000).collect());
        }
        v
    };
    let queue = Arc::new(Mutex::new(batches));
    let mut loaders = Vec::new();
    for _ in 0..args.loaders.max(1) {
        let (queue, store) = (queue.clone(), store.clone());
        loaders.push(tokio::spawn(async move {
            loop {
                let Some(batch) = queue.lock().unwrap().pop() else { return anyhow::Ok(()) };
                store.bulk_insert_tasks(&batch, now).await.map_err(|e| anyhow!("bulk insert: {e}"))?;
            }
        }));
    }
    for l in loaders {
        l.await??;
    }
    store.analyze().await.map_err(|e| anyhow!("analyze: {e}"))?;
    Ok((plan, start.elapsed().as_secs_f64()))
}

// ---------------------------------------------------------------------------------------------------------------
// The server processes

struct Node {
    id: String,
    child: Child,
    pid: u32,
    alive: bool,
    api: String,
}

/// The `rota server` processes; dropping it SIGKILLs and reaps every one still running (also on error paths).
struct Cluster {
    nodes: Vec<Node>,
    log_dir: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if n.alive {
                let _ = n.child.kill();
                let _ = n.child.wait();
                n.alive = false;
            }
        }
    }
}

fn default_rota_bin() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("release/rota"),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/rota"),
    }
}

impl Cluster {
    async fn start(args: &Args, bin: &Path, db_url: &str, count: usize) -> Result<Cluster> {
        let log_dir = std::env::temp_dir().join(format!("rota-cluster-bench-{}", std::process::id()));
        std::fs::create_dir_all(&log_dir)?;
        let mut cluster = Cluster { nodes: Vec::new(), log_dir };
        let mut ready = Vec::new();
        for i in 1..=count {
            let id = format!("bench-{i}");
            let log_path = cluster.log_dir.join(format!("{id}-{count}n.log"));
            let log = std::fs::File::create(&log_path)?;
            let mut cmd = Command::new(bin);
            cmd.arg("server")
                .args(["--database-url", db_url, "--node-id", &id, "--listen", "127.0.0.1:0"])
                .args(["--shards", &args.shards.to_string()]);
            if let Some(ttl) = &args.lease_ttl {
                cmd.args(["--lease-ttl", ttl]);
            }
            if let Some(s) = &args.scan_interval {
                cmd.args(["--scan-interval", s]);
            }
            cmd.env("RUST_LOG", &args.server_log).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log);
            let mut child = cmd.spawn().with_context(|| format!("cannot start {}", bin.display()))?;
            let pid = child.id();
            let stdout = child.stdout.take().expect("piped stdout");
            let (tx, rx) = mpsc::channel::<String>();
            // Reads the banner, then keeps draining stdout so the server never blocks on a full pipe.
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Some(addr) = line.strip_prefix("rota listening on ") {
                        let _ = tx.send(addr.trim().to_owned());
                    }
                }
            });
            cluster.nodes.push(Node { id, child, pid, alive: true, api: String::new() });
            ready.push((rx, log_path));
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        for (i, (rx, log_path)) in ready.into_iter().enumerate() {
            loop {
                match rx.try_recv() {
                    Ok(addr) => {
                        cluster.nodes[i].api = addr;
                        break;
                    }
                    Err(mpsc::TryRecvError::Empty) if Instant::now() < deadline => {
                        if let Some(status) = cluster.nodes[i].child.try_wait()? {
                            cluster.nodes[i].alive = false;
                            bail!(
                                "{} exited ({status}) before listening; log: {}",
                                cluster.nodes[i].id,
                                tail(&log_path)
                            );
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(_) => {
                        bail!("{} did not print `rota listening on`; log: {}", cluster.nodes[i].id, tail(&log_path))
                    }
                }
            }
        }
        Ok(cluster)
    }

    fn kill(&mut self, i: usize) -> Result<()> {
        let n = &mut self.nodes[i];
        n.child.kill()?;
        n.child.wait()?;
        n.alive = false;
        Ok(())
    }

    /// Nodes that exited on their own.
    fn exited(&mut self) -> Vec<String> {
        let mut v = Vec::new();
        for n in &mut self.nodes {
            if n.alive && matches!(n.child.try_wait(), Ok(Some(_))) {
                n.alive = false;
                v.push(n.id.clone());
            }
        }
        v
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

/// The owner of every shard's lease row (its last holder, also when the lease has just expired: a busy node may
/// renew its leases after they expire, which it may as long as nobody took them).
async fn lease_owners(store: &SqlStore) -> Result<BTreeMap<u32, String>> {
    Ok(store
        .list_leases()
        .await
        .map_err(|e| anyhow!("list_leases: {e}"))?
        .into_iter()
        .filter(|l| !l.owner.is_empty())
        .map(|l| (l.shard, l.owner))
        .collect())
}

fn per_owner(owners: &BTreeMap<u32, String>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for o in owners.values() {
        *m.entry(o.clone()).or_insert(0) += 1;
    }
    m
}

// ---------------------------------------------------------------------------------------------------------------
// CPU from /proc

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime (and, with `children`, cutime + cstime) of a process, in clock ticks.
fn proc_ticks(pid: &str, children: bool) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<u64> = rest.split_whitespace().skip(11).take(4).filter_map(|x| x.parse().ok()).collect();
    if f.len() < 4 {
        return None;
    }
    Some(f[0] + f[1] + if children { f[2] + f[3] } else { 0 })
}

/// Ticks of every `postgres` process (own + reaped children), by pid.
fn postgres_ticks() -> HashMap<String, u64> {
    let mut m = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let pid = e.file_name().to_string_lossy().into_owned();
            if !pid.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "postgres"
                && let Some(t) = proc_ticks(&pid, true)
            {
                m.insert(pid, t);
            }
        }
    }
    m
}

/// (busy, total) jiffies of the whole machine.
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> =
        stat.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total: u64 = f.iter().take(8).sum();
    let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

struct CpuSnap {
    at: Instant,
    nodes: Vec<Option<u64>>,
    bench: Option<u64>,
    postgres: HashMap<String, u64>,
    machine: (u64, u64),
}

fn cpu_snap(cluster: &Cluster) -> CpuSnap {
    CpuSnap {
        at: Instant::now(),
        nodes: cluster
            .nodes
            .iter()
            .map(|n| if n.alive { proc_ticks(&n.pid.to_string(), false) } else { None })
            .collect(),
        bench: proc_ticks("self", false),
        postgres: postgres_ticks(),
        machine: machine_ticks(),
    }
}

struct CpuUse {
    /// % of one core per node (None: not running over the whole interval).
    nodes: Vec<Option<f64>>,
    bench: f64,
    postgres: f64,
    /// % of one core (cores × 100 at most).
    machine: f64,
}

fn cpu_use(a: &CpuSnap, b: &CpuSnap, tck: f64) -> CpuUse {
    let secs = b.at.duration_since(a.at).as_secs_f64().max(1e-3);
    let pct = |ticks: u64| ticks as f64 / tck / secs * 100.0;
    let nodes = a
        .nodes
        .iter()
        .zip(&b.nodes)
        .map(|(x, y)| match (x, y) {
            (Some(x), Some(y)) => Some(pct(y.saturating_sub(*x))),
            _ => None,
        })
        .collect();
    let pg: u64 = b.postgres.iter().map(|(pid, t)| t.saturating_sub(a.postgres.get(pid).copied().unwrap_or(0))).sum();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    let (busy, total) = (b.machine.0.saturating_sub(a.machine.0), b.machine.1.saturating_sub(a.machine.1));
    CpuUse {
        nodes,
        bench: pct(b.bench.unwrap_or(0).saturating_sub(a.bench.unwrap_or(0))),
        postgres: pct(pg),
        machine: if total == 0 { 0.0 } else { busy as f64 / total as f64 * cores * 100.0 },
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Analysis

#[derive(Default)]
struct WindowStats {
    expected: u64,
    received: u64,
    missed: u64,
    dup_deliveries: u64,
    dup_runs: u64,
    retries: u64,
    off_schedule: u64,
    /// Sorted lags (ms) of attempt-1 deliveries.
    lags: Vec<i64>,
}

impl WindowStats {
    fn p(&self, q: f64) -> i64 {
        if self.lags.is_empty() {
            return 0;
        }
        self.lags[((self.lags.len() as f64 - 1.0) * q).round() as usize]
    }

    fn max(&self) -> i64 {
        self.lags.last().copied().unwrap_or(0)
    }
}

/// Statistics of the instants scheduled in `[a, b)` of the tasks `keep` selects.
fn analyze(plan: &Plan, recs: &[Rec], a: i64, b: i64, keep: &dyn Fn(usize) -> bool) -> WindowStats {
    let mut st = WindowStats::default();
    // (task, instant) → (attempt-1 deliveries, distinct run ids)
    let mut seen: HashMap<(u32, i64), (u32, Vec<i64>)> = HashMap::new();
    for r in recs {
        let t = r.task as usize;
        if r.sched < a || r.sched >= b || t >= plan.offsets.len() || !keep(t) {
            continue;
        }
        if !plan.is_instant(t, r.sched) {
            st.off_schedule += 1;
            continue;
        }
        let e = seen.entry((r.task, r.sched)).or_default();
        if r.attempt == 1 {
            e.0 += 1;
            st.lags.push(r.recv - r.sched);
        } else {
            st.retries += 1;
        }
        if !e.1.contains(&r.run) {
            e.1.push(r.run);
        }
    }
    st.expected = (0..plan.offsets.len()).filter(|t| keep(*t)).map(|t| plan.count_in(t, a, b)).sum();
    st.received = seen.len() as u64;
    st.missed = st.expected.saturating_sub(st.received);
    for (att1, runs) in seen.values() {
        st.dup_deliveries += u64::from(att1.saturating_sub(1));
        st.dup_runs += runs.len().saturating_sub(1) as u64;
    }
    st.lags.sort_unstable();
    st
}

fn window_json(s: &WindowStats, secs: f64) -> Value {
    json!({
        "expected": s.expected, "received": s.received, "missed": s.missed,
        "dup_deliveries": s.dup_deliveries, "dup_runs": s.dup_runs, "retries": s.retries,
        "off_schedule": s.off_schedule, "fires_per_s": s.received as f64 / secs,
        "lag_ms": {"p50": s.p(0.5), "p99": s.p(0.99), "max": s.max()},
    })
}

fn print_window(s: &WindowStats, secs: f64) {
    println!("  expected fires     {}", s.expected);
    println!("  received           {} ({:.0} fires/s)", s.received, s.received as f64 / secs);
    println!("  missed             {}", s.missed);
    println!(
        "  duplicates         {} deliveries, {} extra run ids (retries {})",
        s.dup_deliveries, s.dup_runs, s.retries
    );
    if s.off_schedule > 0 {
        println!("  off-schedule       {} (instants no task has)", s.off_schedule);
    }
    println!("  fire lag ms        p50 {} / p99 {} / max {}", s.p(0.5), s.p(0.99), s.max());
}

fn print_cpu(c: &CpuUse, cluster: &Cluster) {
    let nodes: Vec<String> = c
        .nodes
        .iter()
        .zip(&cluster.nodes)
        .map(|(p, n)| match p {
            Some(p) => format!("{} {p:.0}%", n.id),
            None => format!("{} -", n.id),
        })
        .collect();
    println!("  CPU (% of a core)  {}", nodes.join(", "));
    println!(
        "                     sum of nodes {:.0}%, postgres {:.0}%, bench {:.0}%, machine {:.0}% (of {} cores)",
        c.nodes.iter().flatten().sum::<f64>(),
        c.postgres,
        c.bench,
        c.machine,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
}

fn cpu_json(c: &CpuUse) -> Value {
    json!({
        "nodes_pct": c.nodes, "nodes_sum_pct": c.nodes.iter().flatten().sum::<f64>(),
        "postgres_pct": c.postgres, "bench_pct": c.bench, "machine_pct": c.machine,
    })
}

fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

async fn sleep_until_ms(at_ms: i64) {
    let wait = at_ms - Utc::now().timestamp_millis();
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// One configuration

async fn run_phase(args: &Args, bin: &Path, count: usize, db: &BenchDb, tck: f64) -> Result<Value> {
    println!("== {count} node(s), {} tasks every {} ==", args.tasks, args.every);
    let records: Records = Arc::new(Mutex::new(Vec::with_capacity(1 << 20)));
    let exec_addr = start_executor(Some(records.clone())).await?;
    let store = SqlStore::connect(&db.url).await.map_err(|e| anyhow!("cannot open the bench database: {e}"))?;

    // First instants after the estimated end of the load plus the servers' start, so no instant is a misfire
    // before any server runs.
    let allowance = TimeDelta::seconds(5 + (args.tasks / 5_000) as i64);
    let first_after = truncate_millis(Utc::now() + allowance);
    let (plan, load_secs) = load_tasks(&store, args, exec_addr, first_after).await?;
    println!(
        "  loaded             {} tasks in {load_secs:.1}s ({:.0}/s), {} shards, {}",
        args.tasks,
        args.tasks as f64 / load_secs,
        args.shards,
        if args.aligned { "all due at the same instant" } else { "spread evenly over the period" }
    );

    let t_start = Instant::now();
    let mut cluster = Cluster::start(args, bin, &db.url, count).await?;
    let up_secs = t_start.elapsed().as_secs_f64();
    println!("  servers up         {count} in {up_secs:.1}s (logs in {})", cluster.log_dir.display());

    // Wait for the shards to be split.
    let fair = args.shards as usize / count;
    let t_bal = Instant::now();
    let balance = loop {
        let owners = per_owner(&lease_owners(&store).await?);
        let ok = owners.values().sum::<usize>() == args.shards as usize
            && cluster.nodes.iter().all(|n| owners.get(&n.id).copied().unwrap_or(0) >= fair);
        if ok || t_bal.elapsed() > Duration::from_secs(args.balance_timeout) {
            break (ok, owners);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let balance_secs = t_bal.elapsed().as_secs_f64() + up_secs;
    println!(
        "  shard split        {} after {balance_secs:.1}s from the first spawn: {:?}",
        if balance.0 { "balanced" } else { "NOT balanced" },
        balance.1
    );

    sleep_until_ms(first_after.timestamp_millis().max(Utc::now().timestamp_millis())).await;
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    let w0 = (Utc::now().timestamp_millis() / 1000 + 1) * 1000;
    let w1 = w0 + args.seconds as i64 * 1000;
    sleep_until_ms(w0).await;
    let load_before = load_avg();
    let c0 = cpu_snap(&cluster);
    sleep_until_ms(w1).await;
    let c1 = cpu_snap(&cluster);
    let leases_w1 = lease_owners(&store).await?;
    sleep_until_ms(w1 + args.drain as i64 * 1000).await;
    let cpu = cpu_use(&c0, &c1, tck);
    let secs = args.seconds as f64;
    let win = {
        let recs = records.lock().unwrap();
        analyze(&plan, &recs, w0, w1, &|_| true)
    };
    let exited = cluster.exited();
    println!(
        "  window             {}s of instants after {}s warm-up (+{}s drain), load avg {load_before}",
        args.seconds, args.warmup, args.drain
    );
    println!("  leases at w1       {:?}", per_owner(&leases_w1));
    print_window(&win, secs);
    print_cpu(&cpu, &cluster);
    if !exited.is_empty() {
        println!("  EXITED             {exited:?}");
    }
    let mut out = json!({
        "nodes": count,
        "load_s": load_secs,
        "balanced": balance.0, "balance_s": balance_secs, "leases": per_owner(&leases_w1),
        "window": window_json(&win, secs),
        "cpu": cpu_json(&cpu),
        "load_avg": load_before,
        "exited": exited,
    });

    if args.kill && count < 2 {
        println!("  kill               skipped: with 1 node nobody can take over");
    } else if args.kill {
        let before = lease_owners(&store).await?;
        let counts = per_owner(&before);
        let victim = (0..cluster.nodes.len())
            .filter(|i| cluster.nodes[*i].alive)
            .max_by_key(|i| counts.get(&cluster.nodes[*i].id).copied().unwrap_or(0))
            .context("no node left to kill")?;
        let victim_id = cluster.nodes[victim].id.clone();
        let killed_shards: Vec<u32> = before.iter().filter(|(_, o)| **o == victim_id).map(|(s, _)| *s).collect();
        let k0 = cpu_snap(&cluster);
        let t_kill = Utc::now().timestamp_millis();
        cluster.kill(victim)?;
        println!("  killed             {victim_id} (SIGKILL), holding {} shards", killed_shards.len());
        let t_end = t_kill + args.after_kill as i64 * 1000;
        sleep_until_ms(t_end).await;
        let k1 = cpu_snap(&cluster);
        let leases_after = lease_owners(&store).await?;
        sleep_until_ms(t_end + args.drain as i64 * 1000).await;
        let kcpu = cpu_use(&k0, &k1, tck);
        let killed_set: std::collections::HashSet<u32> = killed_shards.iter().copied().collect();
        let threshold = (2 * win.p(0.99)).max(100);
        let (fail, resume, recovery, killed_missing) = {
            let recs = records.lock().unwrap();
            let fail = analyze(&plan, &recs, w1, t_end, &|_| true);
            let mut first: HashMap<u32, i64> = HashMap::new();
            let mut recovered_at = t_kill;
            for r in recs.iter() {
                let t = r.task as usize;
                if t >= plan.shards.len() || !killed_set.contains(&plan.shards[t]) || r.sched < t_kill {
                    continue;
                }
                let e = first.entry(plan.shards[t]).or_insert(r.recv);
                *e = (*e).min(r.recv);
                if r.attempt == 1 && r.sched < t_end && r.recv - r.sched > threshold {
                    recovered_at = recovered_at.max(r.recv);
                }
            }
            let mut resume: Vec<i64> = killed_shards.iter().filter_map(|s| first.get(s).map(|t| t - t_kill)).collect();
            resume.sort_unstable();
            let killed = analyze(&plan, &recs, t_kill, t_end, &|t| killed_set.contains(&plan.shards[t]));
            (fail, resume, recovered_at - t_kill, killed.missed)
        };
        let never = killed_shards.len() - resume.len();
        let median = resume.get(resume.len() / 2).copied();
        println!("  after the kill     {}s observed (+{}s drain)", args.after_kill, args.drain);
        println!("  leases after       {:?}", per_owner(&leases_after));
        println!(
            "  failover time      max {} ms (min {} / median {}) over {} killed shards{}",
            resume.last().map_or("-".into(), |v| v.to_string()),
            resume.first().map_or("-".into(), |v| v.to_string()),
            median.map_or("-".into(), |v| v.to_string()),
            killed_shards.len(),
            if never > 0 { format!(", {never} shards NEVER resumed") } else { String::new() }
        );
        println!(
            "  lag recovery       {recovery} ms (last delivery of a killed shard's instant with lag > {threshold} ms; \
             {killed_missing} of its instants in [kill, kill+{}s) missed)",
            args.after_kill
        );
        println!("  failover window    instants of [w1, kill+{}s), all tasks:", args.after_kill);
        print_window(&fail, (t_end - w1) as f64 / 1000.0);
        print_cpu(&kcpu, &cluster);
        out["kill"] = json!({
            "victim": victim_id, "killed_shards": killed_shards.len(),
            "failover_ms": {"max": resume.last(), "min": resume.first(), "median": median, "never_resumed": never},
            "lag_recovery_ms": recovery, "lag_threshold_ms": threshold, "killed_missed": killed_missing,
            "leases_after": per_owner(&leases_after),
            "window": window_json(&fail, (t_end - w1) as f64 / 1000.0),
            "cpu": cpu_json(&kcpu),
        });
    }
    drop(cluster);
    store.close().await;
    Ok(out)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.nodes.is_empty() || args.nodes.contains(&0) {
        bail!("--nodes needs node counts of at least 1");
    }
    let bin = args.rota_bin.clone().unwrap_or_else(default_rota_bin);
    if !bin.is_file() {
        bail!("no rota binary at {} (cargo build --release -p rota, or pass --rota-bin)", bin.display());
    }
    let tck = clk_tck();

    // Baseline first, before any server runs, against its own no-op executor (same code as the recording one).
    let base_addr = start_executor(None).await?;
    let bare = bare_http_rate(base_addr, args.concurrency, Duration::from_secs(args.baseline_seconds)).await?;
    println!(
        "baseline           bare HTTP {bare:.0} req/s (reqwest, {} connections, {}s)",
        args.concurrency, args.baseline_seconds
    );

    let db = BenchDb::create(&args.postgres_url).await?;
    println!("database           {} (dropped at the end)", db.name);
    let mut phases = Vec::new();
    let mut failure = None;
    for (i, &count) in args.nodes.iter().enumerate() {
        if i > 0 {
            // A fresh database for every configuration.
            if let Err(e) = db.recreate().await {
                failure = Some(e);
                break;
            }
        }
        match run_phase(&args, &bin, count, &db, tck).await {
            Ok(p) => phases.push(p),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    if let Err(e) = db.drop_db().await {
        eprintln!("warning: could not drop the database {}: {e:#}", db.name);
    }
    if let Some(e) = failure {
        return Err(e);
    }

    // Ratios: fires/s to the bare HTTP rate; later configurations to the first.
    let rate = |p: &Value| p["window"]["fires_per_s"].as_f64().unwrap_or(0.0);
    let cpu = |p: &Value| p["cpu"]["nodes_sum_pct"].as_f64().unwrap_or(0.0);
    let p99 = |p: &Value| p["window"]["lag_ms"]["p99"].as_f64().unwrap_or(0.0);
    println!("== ratios ==");
    for p in &phases {
        println!("  {} node(s): fires/s / bare HTTP = {:.3}", p["nodes"], rate(p) / bare);
    }
    let mut ratios = Vec::new();
    if let Some(first) = phases.first() {
        for p in phases.iter().skip(1) {
            // No ratio to a zero (e.g. a first configuration that delivered nothing).
            let ratio = |a: f64, b: f64| if b > 0.0 { Some(a / b) } else { None };
            let show = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.2}"));
            let (fr, cr, lr) = (ratio(rate(p), rate(first)), ratio(cpu(p), cpu(first)), ratio(p99(p), p99(first)));
            let r = json!({
                "nodes": p["nodes"], "to_nodes": first["nodes"], "fires_per_s": fr, "nodes_cpu": cr, "lag_p99": lr,
            });
            println!(
                "  {} / {} node(s): fires/s {}, CPU of all nodes {}, lag p99 {}",
                p["nodes"],
                first["nodes"],
                show(fr),
                show(cr),
                show(lr)
            );
            ratios.push(r);
        }
    }
    let summary = json!({
        "bench": "cluster-bench", "tasks": args.tasks, "every": args.every, "misfire": args.misfire,
        "aligned": args.aligned, "shards": args.shards, "window_s": args.seconds, "warmup_s": args.warmup,
        "lease_ttl": args.lease_ttl, "bare_http_rps": bare,
        "phases": phases, "ratios_to_first": ratios,
    });
    println!("{summary}");
    Ok(())
}
