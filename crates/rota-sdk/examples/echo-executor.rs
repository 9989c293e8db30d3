//! A complete Rota executor node on the SDK: answers every run with the run's params.
//!
//! ```sh
//! cargo run -p rota-sdk --example echo-executor               # listens on 127.0.0.1:7071
//! cargo run -p rota-sdk --example echo-executor -- 0.0.0.0:9000 --advertise http://10.0.0.5:9000
//! cargo run -p rota-sdk --example echo-executor -- --grpc     # serves rota.executor.v1.Executor instead
//! rota trigger default/echo --param fail=true                 # see a failed run (and its retries)
//! ```
//!
//! On start it registers with the scheduler (`--scheduler`, `$ROTA_SCHEDULER`, default `http://127.0.0.1:7070`)
//! as a node of the service `echo` (`--service`), heartbeats, and declares the task `default/echo` (every 10 s,
//! dispatched to the service, path `/echo`; with `--grpc`, `target: {grpc: {}}`; `--no-task` declares nothing).
//! Ctrl-C drains it: the scheduler stops choosing it, running runs finish and report, then it deregisters.
//!
//! It prints `echo executor listening on http://ADDR …` once it has bound its address (so `--listen
//! 127.0.0.1:0` shows the port it got). Over HTTP any path reaches the handler; over gRPC the handler is found
//! by the task's name, so other tasks it serves must be named `echo` (in any namespace).
//!
//! Params change its behaviour, so one task can show every outcome:
//!
//! | param | effect |
//! | --- | --- |
//! | `fail: true` | answers `failed` (the task's retry policy applies) |
//! | `fail_unless_node: ID` | answers `failed` on every node but the one with id `ID` (see `retry.switchNode`) |
//! | `sleep_ms: N` | waits N ms before answering (longer than the task's timeout: a `timed_out` attempt) |
//! | `async: true` | answers `202 Accepted` and reports the result later to the envelope's `report_url` |
//!
//! The output holds the params, the task, run, attempt, the node's id and the shard (`{index, total}`). Each run
//! also appends a log line (`rota logs RUN_ID` shows it) when the scheduler knows its public URL.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use rota_sdk::executor::{ExecutorNode, HandlerError, RunContext};
use serde_json::{Value, json};

const DEFAULT_LISTEN: &str = "127.0.0.1:7071";

#[derive(Parser)]
#[command(about = "Rota's example executor node: echoes the params of every run")]
struct Args {
    /// Address to listen on (default 127.0.0.1:7071; port 0 picks a free one).
    #[arg(value_name = "LISTEN")]
    addr: Option<SocketAddr>,
    /// Address to listen on (the same as the positional argument).
    #[arg(long, conflicts_with = "addr")]
    listen: Option<SocketAddr>,
    /// Serve the gRPC protocol (`rota.executor.v1.Executor`) instead of HTTP.
    #[arg(long)]
    grpc: bool,
    /// Management API of the scheduler to register with.
    #[arg(long, env = "ROTA_SCHEDULER", default_value = "http://127.0.0.1:7070")]
    scheduler: String,
    /// Bearer token for the scheduler.
    #[arg(long, env = "ROTA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// URL the scheduler reaches this node at (default: http:// + the listen address).
    #[arg(long)]
    advertise: Option<String>,
    /// Node id (default: hostname-port).
    #[arg(long)]
    id: Option<String>,
    /// Service the node registers in (the name tasks use in `candidates.service`).
    #[arg(long, default_value = "echo")]
    service: String,
    /// Do not declare the task `default/echo`.
    #[arg(long)]
    no_task: bool,
}

/// The task this node declares; the SDK adds `target: {http: {path: /echo}}` (or `{grpc: {}}`) and
/// `candidates: {service: echo}`.
const TASK: &str = r#"
apiVersion: rota/v1
kind: Task
metadata:
  namespace: default
  name: echo
  labels: {app: echo}
  description: Echo the params back, every ten seconds.
spec:
  schedule: {every: 10s, concurrency: allow}
  retry: {maxAttempts: 3, backoff: {kind: fixed, initial: 1s}}
  timeout: 5s
  params: {message: hello from rota}
"#;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,rota_sdk=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let listen = args.listen.or(args.addr).unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("default address"));
    let mut builder = ExecutorNode::builder(&args.service)
        .scheduler(&args.scheduler)
        .token(args.token)
        .labels([("example", "echo")])
        .deferrable_handler("echo", |ctx: &RunContext| ctx.param::<bool>("async").ok().flatten() == Some(true), echo);
    if !args.no_task {
        builder = builder.task(TASK);
    }
    if let Some(url) = args.advertise {
        builder = builder.advertise(url);
    }
    if let Some(id) = args.id {
        builder = builder.id(id);
    }
    let node = builder.build()?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let bound = listener.local_addr()?;
    println!(
        "echo executor listening on http://{bound} ({}; scheduler {}; Ctrl-C to stop)",
        if args.grpc { "gRPC" } else { "HTTP" },
        args.scheduler
    );
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    if args.grpc {
        node.serve_grpc(listener, shutdown).await?;
    } else {
        node.serve_http(listener, shutdown).await?;
    }
    Ok(())
}

async fn echo(ctx: RunContext) -> Result<Value, HandlerError> {
    println!(
        "run {} of {} (attempt {}, scheduled {}, shard {}/{}) on {}: params {}",
        ctx.run_id(),
        ctx.task(),
        ctx.attempt(),
        ctx.scheduled_at(),
        ctx.shard_index(),
        ctx.shard_total(),
        ctx.node_id(),
        Value::Object(ctx.params().clone())
    );
    ctx.log(format!("echo executor {} received attempt {} of run {}", ctx.node_id(), ctx.attempt(), ctx.run_id()))
        .await;
    if let Some(ms) = ctx.param::<u64>("sleep_ms")? {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let output = json!({
        "echo": ctx.params(),
        "task": ctx.task(),
        "run_id": ctx.run_id(),
        "attempt": ctx.attempt(),
        "node": ctx.node_id(),
        "shard": {"index": ctx.shard_index(), "total": ctx.shard_total()},
    });
    if ctx.param::<bool>("fail")? == Some(true) {
        return Err(HandlerError::msg("asked to fail (fail=true)").with_output(output));
    }
    if let Some(only) = ctx.param::<String>("fail_unless_node")?
        && only != ctx.node_id()
    {
        return Err(HandlerError::msg(format!("asked to fail on every node but {only} (this is {})", ctx.node_id()))
            .with_output(output));
    }
    Ok(output)
}
