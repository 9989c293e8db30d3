//! Fire-lag and dispatch-throughput benchmark of one scheduler node.
//!
//! ```text
//! cargo run --release -p rota-bench --bin fire-bench -- --backend sqlite --tasks 10000 --seconds 30
//! cargo run --release -p rota-bench --bin fire-bench -- --backend postgres --tasks 10000 --seconds 30
//! ```
//!
//! In one process it starts a no-op executor speaking the `rota` protocol on 127.0.0.1, a fresh store, and a
//! scheduler (`rota-core` with the HTTP executor of `rota-executor`, as `rota server` wires them); it applies
//! `--tasks` tasks with `every: 1s`, lets them fire for a warm-up, then measures a window of `--seconds`:
//!
//! * **fire lag**: for every dispatch the executor receives, `received_at - scheduled_at` (p50/p99/max);
//! * **missed** fires: expected (task, instant) pairs in the window the executor never received;
//! * **duplicates**: (task, instant) pairs received more than once;
//! * **throughput**: runs received per second in the window, and runs that reached `succeeded` in the store;
//!
//! and, as the baseline measured in the same run, the rate a bare HTTP load loop (reqwest, `--concurrency`
//! connections, no scheduler, no store) gets from the same no-op executor. The ratio is what we report.
//! If `wrk` is installed its rate is reported too.

use rota_bench::bare_http_rate;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::Json;
use axum::routing::post;
use chrono::{DateTime, Utc};
use clap::Parser;
use rota_core::{Scheduler, SchedulerConfig};
use rota_executor::{HttpExecutorConfig, Router};
use rota_proto::{RunEnvelope, RunResult};
use rota_store::{Precondition, RunFilter, RunState, Store};
use rota_store_sql::testing::{Backend, try_fresh};

#[derive(Parser, Debug)]
struct Args {
    /// sqlite | postgres | mysql
    #[arg(long, default_value = "sqlite")]
    backend: String,
    /// Number of tasks, each `every: 1s`.
    #[arg(long, default_value_t = 10_000)]
    tasks: usize,
    /// Length of the measured window.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Warm-up before the window.
    #[arg(long, default_value_t = 5)]
    warmup: u64,
    /// Connections of the bare-HTTP baseline.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Shards.
    #[arg(long, default_value_t = 256)]
    shards: u32,
}

#[derive(Default)]
struct Record {
    /// (task, scheduled_at ms) → receive times (ms).
    seen: HashMap<(String, i64), Vec<i64>>,
    count: u64,
}

async fn start_executor(record: Option<Arc<Mutex<Record>>>) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/run",
        post(move |Json(env): Json<RunEnvelope>| {
            let record = record.clone();
            async move {
                if let Some(record) = record {
                    let now = Utc::now().timestamp_millis();
                    let mut r = record.lock().unwrap();
                    r.count += 1;
                    r.seen.entry((env.task, env.scheduled_at.timestamp_millis())).or_default().push(now);
                }
                Json(RunResult::succeeded(None))
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn wrk_rate(addr: SocketAddr, concurrency: usize, seconds: u64) -> Option<f64> {
    let script = std::env::temp_dir().join("rota-fire-bench-wrk.lua");
    std::fs::write(
        &script,
        "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = \
         '{\"run_id\":\"1\",\"task\":\"bench/wrk\",\"attempt\":1,\"scheduled_at\":\"2026-01-01T00:00:00Z\",\
         \"params\":{},\"shard\":{\"index\":0,\"total\":1},\"deadline\":\"2026-01-01T00:00:00Z\"}'\n",
    )
    .ok()?;
    let out = std::process::Command::new("wrk")
        .args(["-t2", &format!("-c{concurrency}"), &format!("-d{seconds}s"), "-s"])
        .arg(&script)
        .arg(format!("http://{addr}/run"))
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().find(|l| l.starts_with("Requests/sec:"))?.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let backend = match args.backend.as_str() {
        "sqlite" => Backend::Sqlite,
        "postgres" => Backend::Postgres,
        "mysql" => Backend::MySql,
        other => bail!("unknown backend {other:?}"),
    };

    // Baseline first, on an idle machine, against its own no-op executor (same code as the recording one).
    let base_addr = start_executor(None).await?;
    let base_secs = args.seconds.min(10);
    let bare = bare_http_rate(base_addr, args.concurrency, Duration::from_secs(base_secs)).await?;
    let wrk = wrk_rate(base_addr, args.concurrency, base_secs);

    let record = Arc::new(Mutex::new(Record::default()));
    let addr = start_executor(Some(record.clone())).await?;
    let store: Arc<dyn Store> =
        Arc::new(try_fresh(backend).await.map_err(anyhow::Error::msg).context("creating a fresh store")?);
    let config = SchedulerConfig {
        node_id: "bench-1".into(),
        shard_count: args.shards,
        lookahead: Duration::from_secs(3),
        scan_interval: Duration::from_millis(500),
        ..SchedulerConfig::default()
    };
    let executor = Arc::new(Router::standard(HttpExecutorConfig::default())?);
    let scheduler = Scheduler::new(store.clone(), executor, config);

    let t_apply = Instant::now();
    for i in 0..args.tasks {
        let doc = format!(
            "apiVersion: rota/v1\nkind: Task\nmetadata: {{namespace: bench, name: t{i}}}\nspec:\n  schedule: {{every: 1s, \
             misfire: run_all}}\n  target: {{http: {{path: /run}}}}\n  candidates: {{static: [\"http://{addr}\"]}}\n  \
             timeout: 30s\n"
        );
        let task = rota_spec::parse_yaml(&doc)?;
        scheduler.apply(task, Precondition::Any).await?;
    }
    let apply_secs = t_apply.elapsed().as_secs_f64();
    eprintln!("applied {} tasks in {apply_secs:.1}s", args.tasks);

    scheduler.start().await?;
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    // The window: whole seconds [w0, w1).
    let w0 = (Utc::now().timestamp_millis() / 1000 + 1) * 1000;
    let w1 = w0 + args.seconds as i64 * 1000;
    let wait_until = DateTime::<Utc>::from_timestamp_millis(w1).unwrap() + chrono::Duration::seconds(5);
    while Utc::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    scheduler.shutdown().await;

    let (mut lags, duplicates, received_in_window) = {
        let rec = record.lock().unwrap();
        let mut lags = Vec::new();
        let mut duplicates = 0u64;
        let mut received_in_window = 0u64;
        for ((_, at), times) in rec.seen.iter() {
            if *at >= w0 && *at < w1 {
                received_in_window += 1;
                duplicates += times.len() as u64 - 1;
                lags.extend(times.iter().map(|t| t - at));
            }
        }
        (lags, duplicates, received_in_window)
    };
    lags.sort_unstable();
    let expected = args.tasks as u64 * args.seconds;
    let missed = expected.saturating_sub(received_in_window);
    let window = args.seconds as f64;
    let rate = received_in_window as f64 / window;

    let from = DateTime::<Utc>::from_timestamp_millis(w0);
    let to = DateTime::<Utc>::from_timestamp_millis(w1);
    let mut succeeded = 0u64;
    let mut page = rota_store::PageRequest::first(1000);
    let filter = RunFilter { states: vec![RunState::Succeeded], from, to, ..Default::default() };
    loop {
        let p = store.list_runs(&filter, &page).await?;
        succeeded += p.items.len() as u64;
        match p.next_cursor {
            Some(c) => page = rota_store::PageRequest::after(c, 1000),
            None => break,
        }
    }

    println!("backend            {}", args.backend);
    println!("tasks              {} (every 1s, {} shards)", args.tasks, args.shards);
    println!("window             {}s after {}s warm-up", args.seconds, args.warmup);
    println!("expected fires     {expected}");
    println!("received           {received_in_window}");
    println!("missed             {missed}");
    println!("duplicates         {duplicates}");
    println!("succeeded in store {succeeded}");
    println!(
        "fire lag ms        p50 {} / p99 {} / max {}",
        percentile(&lags, 0.50),
        percentile(&lags, 0.99),
        lags.last().copied().unwrap_or(0)
    );
    println!("scheduler rate     {rate:.0} runs/s");
    println!("bare HTTP rate     {bare:.0} req/s (reqwest, {} connections)", args.concurrency);
    if let Some(w) = wrk {
        println!("wrk rate           {w:.0} req/s");
    }
    println!("ratio              {:.3} (scheduler rate / bare HTTP rate)", rate / bare);
    Ok(())
}
