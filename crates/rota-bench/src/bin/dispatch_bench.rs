//! Dispatch throughput of one scheduler node over HTTP and gRPC, against no-op SDK executor nodes, each as a ratio
//! to a bare load loop against the same nodes.
//!
//! ```text
//! cargo build --release -p rota-bench --bin dispatch-bench
//! target/release/dispatch-bench --protocol both --nodes 2 --concurrency 64 --seconds 20 --warmup 5 --rounds 2
//! target/release/dispatch-bench --protocol both --backend postgres --rounds 2
//! ```
//!
//! For each round and each protocol (HTTP first in odd rounds, gRPC first in even ones), in one process:
//!
//! 1. starts `--nodes` no-op executor nodes on 127.0.0.1:0: `rota-sdk` `ExecutorNode`s with sync handlers
//!    `d0`…`d{concurrency-1}` that return `null`, served with `serve_http` or `serve_grpc` (no scheduler
//!    configured: they do not register). `--node-impl plain` serves a plain axum (HTTP) or tonic (gRPC) no-op
//!    instead, which decodes the envelope and answers `succeeded`;
//! 2. **bare baseline**: `--concurrency` workers, each in a closed loop (send, wait for the answer, send again)
//!    against node `worker % nodes`: reqwest POSTing the JSON envelope (HTTP) or a tonic client calling `Run` over
//!    one HTTP/2 channel per node (gRPC); `--warmup` seconds, then a window of `--seconds`;
//! 3. **scheduler**: a fresh store (`--backend`), a scheduler (`rota-core` + `rota_executor::Router::standard`,
//!    as `rota server` wires them, wrapped in a shim that times each `Executor::dispatch` call), `--concurrency`
//!    tasks `bench/d<i>` with `schedule: {manual: true}`, target `http: {path: /d<i>}` or `grpc: {}`, all nodes
//!    in `candidates.static` (round robin, the default). `--concurrency` workers each trigger their own task
//!    (`Scheduler::trigger`), wait for the run's `succeeded` event on the `EventBus` (published after the outcome
//!    is stored), and trigger again: the same closed loop and concurrency as the baseline;
//! 4. stops the scheduler and the nodes.
//!
//! Reported: runs succeeded per second in the window (and the bare rate), their ratio per protocol, the
//! gRPC / HTTP ratio of both, latency p50/p99 of a run (trigger → succeeded), of the dispatch call alone and of
//! the bare request, and CPU over the window (this process, and the whole machine from `/proc/stat`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use async_trait::async_trait;
use clap::{Parser, ValueEnum};
use rota_bench::{LoadReport, Samples, bare_grpc_load, bare_http_load, closed_loop, noop_envelope, quantile_ms};
use rota_core::{Dispatch, DispatchOutcome, EventKind, Executor, Scheduler, SchedulerConfig};
use rota_executor::{HttpExecutorConfig, Router};
use rota_proto::grpc::{RunAnswer, v1};
use rota_proto::{RunEnvelope, RunResult};
use rota_sdk::executor::ExecutorNode;
use rota_store::{Precondition, RunFilter, RunState, Store};
use rota_store_sql::testing::{Backend, try_fresh};
use serde_json::Value;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;

#[derive(Parser, Debug)]
struct Args {
    /// Which protocol(s) to measure.
    #[arg(long, value_enum, default_value = "both")]
    protocol: ProtocolArg,
    /// Executor nodes (each its own server on 127.0.0.1).
    #[arg(long, default_value_t = 2)]
    nodes: usize,
    /// Runs (scheduler) or requests (bare) in flight: closed-loop workers.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Length of each measured window, seconds.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Warm-up before each window, seconds.
    #[arg(long, default_value_t = 5)]
    warmup: u64,
    /// Store of the scheduler: sqlite | postgres | mysql.
    #[arg(long, default_value = "sqlite")]
    backend: String,
    /// Rounds (each measures every selected protocol once: HTTP first in odd rounds, gRPC first in even ones).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Executor nodes: `sdk` (rota-sdk `ExecutorNode`, `serve_http` / `serve_grpc`) or `plain` (a bare axum /
    /// tonic no-op server).
    #[arg(long, value_enum, default_value = "sdk")]
    node_impl: NodeImpl,
    /// Shards.
    #[arg(long, default_value_t = 256)]
    shards: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ProtocolArg {
    Http,
    Grpc,
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
enum Protocol {
    Http,
    Grpc,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Http => "HTTP",
            Protocol::Grpc => "gRPC",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum NodeImpl {
    Sdk,
    Plain,
}

// ---------------------------------------------------------------------------------------------------------------
// Executor nodes
// ---------------------------------------------------------------------------------------------------------------

/// A running executor node.
struct Node {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<()>>,
}

impl Node {
    async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        match tokio::time::timeout(Duration::from_secs(10), self.task).await {
            Ok(joined) => joined?,
            Err(_) => bail!("executor node {} did not stop within 10 s", self.addr),
        }
    }
}

/// Handler (and task) names: `d0` … `d{concurrency-1}`; worker *i* runs task `bench/d<i>`.
fn handler_names(concurrency: usize) -> impl Iterator<Item = String> {
    (0..concurrency.max(1)).map(|i| format!("d{i}"))
}

async fn start_node(protocol: Protocol, index: usize, imp: NodeImpl, concurrency: usize) -> Result<Node> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let task = match imp {
        NodeImpl::Sdk => {
            let id = format!("bench-{}-{index}", protocol.name().to_ascii_lowercase());
            let mut builder = ExecutorNode::builder("bench").id(id);
            for name in handler_names(concurrency) {
                builder = builder.handler(name, |_ctx| async { Ok(Value::Null) });
            }
            let node = builder.build()?;
            tokio::spawn(async move {
                match protocol {
                    Protocol::Http => node.serve_http(listener, shutdown).await?,
                    Protocol::Grpc => node.serve_grpc(listener, shutdown).await?,
                }
                Ok(())
            })
        }
        NodeImpl::Plain => match protocol {
            Protocol::Http => tokio::spawn(async move {
                let app =
                    axum::Router::new().fallback(axum::routing::post(|axum::Json(_): axum::Json<RunEnvelope>| async {
                        axum::Json(RunResult::succeeded(None))
                    }));
                axum::serve(listener, app).with_graceful_shutdown(shutdown).await.map_err(anyhow::Error::from)
            }),
            Protocol::Grpc => tokio::spawn(async move {
                tonic::transport::Server::builder()
                    .add_service(v1::executor_server::ExecutorServer::new(NoopGrpc))
                    .serve_with_incoming_shutdown(
                        // As the SDK's serve_grpc: without TCP_NODELAY the node's HEADERS/DATA/trailers frames
                        // wait for delayed ACKs (dispatch calls of 6–7 ms p50 instead of 1 ms).
                        tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                        shutdown,
                    )
                    .await
                    .map_err(anyhow::Error::from)
            }),
        },
    };
    Ok(Node { addr, stop, task })
}

/// The plain no-op gRPC node: decodes the request into a [`RunEnvelope`] and answers `succeeded`.
struct NoopGrpc;

#[tonic::async_trait]
impl v1::executor_server::Executor for NoopGrpc {
    async fn run(
        &self,
        request: tonic::Request<v1::RunRequest>,
    ) -> Result<tonic::Response<v1::RunResponse>, tonic::Status> {
        let _envelope =
            RunEnvelope::try_from(request.into_inner()).map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        Ok(tonic::Response::new(RunAnswer::Completed(RunResult::succeeded(None)).into()))
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The scheduler side
// ---------------------------------------------------------------------------------------------------------------

/// The server's router with every `dispatch` call timed (two `Instant::now()` and a push under a mutex).
struct Timed {
    inner: Router,
    samples: Arc<Samples>,
}

#[async_trait]
impl Executor for Timed {
    async fn dispatch(&self, dispatch: Dispatch) -> DispatchOutcome {
        let start = Instant::now();
        let outcome = self.inner.dispatch(dispatch).await;
        if matches!(outcome, DispatchOutcome::Completed(_)) {
            self.samples.record(start);
        }
        outcome
    }

    async fn cancel(&self, run_id: i64, attempt: u32, target: &rota_spec::Target) {
        self.inner.cancel(run_id, attempt, target).await;
    }
}

struct SchedulerReport {
    load: LoadReport,
    dispatch_us: Vec<u32>,
    trigger_us: Vec<u32>,
    stored_succeeded: u64,
    lagged: u64,
    cpu: Cpu,
}

/// A run's end as the workers see it: `Ok` for `succeeded`, else the event's name and error.
type Outcome = Result<(), String>;

async fn run_scheduler(protocol: Protocol, addrs: &[SocketAddr], args: &Args) -> Result<SchedulerReport> {
    let backend = match args.backend.as_str() {
        "sqlite" => Backend::Sqlite,
        "postgres" => Backend::Postgres,
        "mysql" => Backend::MySql,
        other => bail!("unknown backend {other:?}"),
    };
    let store: Arc<dyn Store> =
        Arc::new(try_fresh(backend).await.map_err(anyhow::Error::msg).context("creating a fresh store")?);
    let dispatch_samples = Arc::new(Samples::default());
    let executor =
        Arc::new(Timed { inner: Router::standard(HttpExecutorConfig::default())?, samples: dispatch_samples.clone() });
    let config = SchedulerConfig {
        node_id: "bench-1".into(),
        shard_count: args.shards,
        lookahead: Duration::from_secs(3),
        scan_interval: Duration::from_millis(500),
        ..SchedulerConfig::default()
    };
    let scheduler = Scheduler::new(store.clone(), executor, config);

    let candidates: Vec<String> = addrs.iter().map(|a| format!("\"http://{a}\"")).collect();
    let candidates = candidates.join(", ");
    let workers = args.concurrency.max(1);
    for (i, name) in handler_names(workers).enumerate() {
        let target = match protocol {
            Protocol::Http => format!("{{http: {{path: /{name}}}}}"),
            Protocol::Grpc => "{grpc: {}}".to_string(),
        };
        let doc = format!(
            "apiVersion: rota/v1\nkind: Task\nmetadata: {{namespace: bench, name: {name}}}\nspec:\n  schedule: {{manual: \
             true}}\n  target: {target}\n  candidates: {{static: [{candidates}]}}\n  timeout: 30s\n"
        );
        let task = rota_spec::parse_yaml(&doc).with_context(|| format!("task {i}"))?;
        scheduler.apply(task, Precondition::Any).await?;
    }

    // Outcomes of runs, per worker (worker i owns task bench/d<i>, so at most one of its runs is in flight).
    let mut senders: HashMap<String, mpsc::UnboundedSender<(i64, Outcome)>> = HashMap::new();
    let mut receivers = Vec::new();
    for name in handler_names(workers) {
        let (tx, rx) = mpsc::unbounded_channel();
        senders.insert(format!("bench/{name}"), tx);
        receivers.push(Mutex::new(rx));
    }
    let receivers = Arc::new(receivers);
    let mut events = scheduler.events().subscribe();
    let listener = tokio::spawn(async move {
        let mut lagged = 0u64;
        loop {
            let event = match events.recv().await {
                Ok(e) => e,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    lagged += n;
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            };
            let outcome = match &event.kind {
                EventKind::Succeeded { .. } => Ok(()),
                EventKind::Failed { error, .. } => Err(format!("failed: {error}")),
                EventKind::TimedOut { .. } => Err("timed out".to_string()),
                EventKind::Cancelled { reason } => Err(format!("cancelled: {reason}")),
                EventKind::Skipped { reason } => Err(format!("skipped: {reason}")),
                _ => continue,
            };
            if let (Some(run_id), Some(tx)) = (event.run_id, senders.get(&event.task)) {
                let _ = tx.send((run_id, outcome));
            }
        }
        lagged
    });

    scheduler.start().await?;
    let trigger_samples = Arc::new(Samples::default());
    let (warmup, window) = (Duration::from_secs(args.warmup), Duration::from_secs(args.seconds));
    let cpu = tokio::spawn(Cpu::measure(warmup, window));
    let load = {
        let (scheduler, trigger_samples) = (scheduler.clone(), trigger_samples.clone());
        closed_loop(workers, warmup, window, move |worker| {
            let (scheduler, receivers, trigger_samples) =
                (scheduler.clone(), receivers.clone(), trigger_samples.clone());
            async move {
                let t0 = Instant::now();
                let run = scheduler.trigger("bench", &format!("d{worker}"), Default::default()).await?;
                trigger_samples.record(t0);
                let mut rx = receivers[worker].lock().await;
                loop {
                    match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
                        Ok(Some((id, outcome))) if id == run.id => {
                            return outcome.map_err(|e| anyhow!("run {id}: {e}"));
                        }
                        Ok(Some(_)) => continue, // a late outcome of an earlier run that timed out here
                        Ok(None) => bail!("the event listener stopped"),
                        Err(_) => bail!("run {}: no outcome within 30 s", run.id),
                    }
                }
            }
        })
        .await
    };
    let cpu = cpu.await?;
    scheduler.shutdown().await;
    drop(scheduler);
    let lagged = listener.await?;

    let mut stored_succeeded = 0u64;
    let mut page = rota_store::PageRequest::first(1000);
    let filter = RunFilter { states: vec![RunState::Succeeded], ..Default::default() };
    loop {
        let p = store.list_runs(&filter, &page).await?;
        stored_succeeded += p.items.len() as u64;
        match p.next_cursor {
            Some(c) => page = rota_store::PageRequest::after(c, 1000),
            None => break,
        }
    }
    let dispatch_us = dispatch_samples.in_window(load.window_start, load.window_end);
    let trigger_us = trigger_samples.in_window(load.window_start, load.window_end);
    Ok(SchedulerReport { load, dispatch_us, trigger_us, stored_succeeded, lagged, cpu })
}

// ---------------------------------------------------------------------------------------------------------------
// CPU
// ---------------------------------------------------------------------------------------------------------------

/// CPU over the window, % of one core: this process (`/proc/self/stat`) and the machine (`/proc/stat`).
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    process: f64,
    machine: f64,
}

impl Cpu {
    async fn measure(warmup: Duration, window: Duration) -> Cpu {
        tokio::time::sleep(warmup).await;
        let (p0, m0, t0) = (process_ticks(), machine_ticks(), Instant::now());
        tokio::time::sleep(window).await;
        let (p1, m1, secs) = (process_ticks(), machine_ticks(), t0.elapsed().as_secs_f64());
        let per_s = 100.0; // USER_HZ
        let pct = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => (b.saturating_sub(a)) as f64 / per_s / secs * 100.0,
            _ => f64::NAN,
        };
        Cpu { process: pct(p0, p1), machine: pct(m0, m1) }
    }
}

/// utime + stime of this process, in ticks.
fn process_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Busy ticks of the machine (all CPUs: total minus idle and iowait).
fn machine_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|s| s.parse().ok()).collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4)?;
    Some(total - idle)
}

// ---------------------------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------------------------

struct Measured {
    round: usize,
    protocol: Protocol,
    bare: LoadReport,
    sched: SchedulerReport,
}

fn lat(sorted: &[u32]) -> String {
    format!("{:.2} / {:.2}", quantile_ms(sorted, 0.50), quantile_ms(sorted, 0.99))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    let protocols = match args.protocol {
        ProtocolArg::Http => vec![Protocol::Http],
        ProtocolArg::Grpc => vec![Protocol::Grpc],
        ProtocolArg::Both => vec![Protocol::Http, Protocol::Grpc],
    };
    let (warmup, window) = (Duration::from_secs(args.warmup), Duration::from_secs(args.seconds));
    let mut results = Vec::new();
    for round in 1..=args.rounds.max(1) {
        // Odd rounds HTTP first, even rounds gRPC first, so that a drift in the machine's load favours neither.
        let mut order = protocols.clone();
        if round % 2 == 0 {
            order.reverse();
        }
        for &protocol in &order {
            let mut nodes = Vec::new();
            for i in 0..args.nodes {
                nodes.push(start_node(protocol, i, args.node_impl, args.concurrency).await?);
            }
            let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
            let envelope = noop_envelope("bench/d0");
            eprintln!("round {round} {}: bare baseline", protocol.name());
            let bare = match protocol {
                Protocol::Http => bare_http_load(&addrs, "/d0", &envelope, args.concurrency, warmup, window).await?,
                Protocol::Grpc => bare_grpc_load(&addrs, &envelope, args.concurrency, warmup, window).await?,
            };
            if let Some(e) = &bare.first_error {
                bail!("bare {} loop: {} errors, first: {e}", protocol.name(), bare.errors);
            }
            eprintln!("round {round} {}: scheduler", protocol.name());
            let sched = run_scheduler(protocol, &addrs, &args).await?;
            for node in nodes {
                node.stop().await?;
            }
            let m = Measured { round, protocol, bare, sched };
            print_one(&m, &args);
            results.push(m);
        }
    }
    print_summary(&results, &args);
    Ok(())
}

fn print_one(m: &Measured, args: &Args) {
    let s = &m.sched;
    println!(
        "--- round {} / {} ({} nodes, {} in flight, {})",
        m.round,
        m.protocol.name(),
        args.nodes,
        args.concurrency,
        args.backend
    );
    println!("bare               {:>8.0} req/s  latency p50/p99 {} ms", m.bare.rate(), lat(&m.bare.latencies_us));
    println!(
        "scheduler          {:>8.0} runs/s latency p50/p99 {} ms (trigger → succeeded)",
        s.load.rate(),
        lat(&s.load.latencies_us)
    );
    println!("  dispatch call    p50/p99 {} ms; trigger call p50/p99 {} ms", lat(&s.dispatch_us), lat(&s.trigger_us));
    println!(
        "  runs             {} succeeded in the window, {} in total ({} stored as succeeded), {} errors{}{}",
        s.load.ok,
        s.load.ok_total,
        s.stored_succeeded,
        s.load.errors,
        s.load.first_error.as_ref().map(|e| format!(" (first: {e})")).unwrap_or_default(),
        if s.lagged > 0 { format!(", {} events lost", s.lagged) } else { String::new() }
    );
    println!(
        "  CPU              bench process {:.0} %, machine {:.0} % (200 % = 2 cores)",
        s.cpu.process, s.cpu.machine
    );
    println!("ratio              {:.3} (scheduler / bare)", s.load.rate() / m.bare.rate());
}

fn print_summary(results: &[Measured], args: &Args) {
    println!();
    println!(
        "backend {}, {} nodes ({:?}), {} in flight, {} s window after {} s warm-up",
        args.backend, args.nodes, args.node_impl, args.concurrency, args.seconds, args.warmup
    );
    println!(
        "| round | protocol | bare (req/s) | scheduler (runs/s) | scheduler ÷ bare | run p50 / p99 (ms) | dispatch call p50 \
         / p99 (ms) | bare p50 / p99 (ms) | CPU process / machine |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for m in results {
        let s = &m.sched;
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.3} | {} | {} | {} | {:.0} % / {:.0} % |",
            m.round,
            m.protocol.name(),
            m.bare.rate(),
            s.load.rate(),
            s.load.rate() / m.bare.rate(),
            lat(&s.load.latencies_us),
            lat(&s.dispatch_us),
            lat(&m.bare.latencies_us),
            s.cpu.process,
            s.cpu.machine
        );
    }
    let rounds: Vec<usize> = {
        let mut r: Vec<usize> = results.iter().map(|m| m.round).collect();
        r.dedup();
        r
    };
    let find = |round, p| results.iter().find(|m| m.round == round && m.protocol == p);
    let mut printed_header = false;
    for round in rounds {
        if let (Some(h), Some(g)) = (find(round, Protocol::Http), find(round, Protocol::Grpc)) {
            if !printed_header {
                println!();
                println!("| round | gRPC ÷ HTTP, scheduler | gRPC ÷ HTTP, bare |");
                println!("|---|---|---|");
                printed_header = true;
            }
            println!(
                "| {round} | {:.3} | {:.3} |",
                g.sched.load.rate() / h.sched.load.rate(),
                g.bare.rate() / h.bare.rate()
            );
        }
    }
}
