//! A complete Rota executor node on the SDK: answers every run with the run's params.
//!
//! ```sh
//! cargo run -p rota-sdk --example echo-executor               # listens on 127.0.0.1:7071
//! cargo run -p rota-sdk --example echo-executor -- 0.0.0.0:9000 --advertise http://10.0.0.5:9000
//! rota trigger default/echo --param fail=true                 # see a failed run (and its retries)
//! ```
//!
//! On start it registers with the scheduler (`--scheduler`, `$ROTA_SCHEDULER`, default `http://127.0.0.1:7070`)
//! as a node of the service `echo`, heartbeats, and declares the task `default/echo` (every 10 s, dispatched to
//! the service `echo`, path `/echo`). Ctrl-C drains it: the scheduler stops choosing it, running runs finish
//! and report, then it deregisters.
//!
//! Params change its behaviour, so one task can show every outcome:
//!
//! | param | effect |
//! | --- | --- |
//! | `fail: true` | answers `failed` (the task's retry policy applies) |
//! | `sleep_ms: N` | waits N ms before answering (longer than the task's timeout: a `timed_out` attempt) |
//! | `async: true` | answers `202 Accepted` and reports the result later to the envelope's `report_url` |
//!
//! Each run also appends a log line (`rota logs RUN_ID` shows it) when the scheduler knows its public URL.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use rota_sdk::executor::{ExecutorNode, HandlerError, RunContext};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(about = "Rota's example executor node: echoes the params of every run")]
struct Args {
    /// Address to listen on.
    #[arg(default_value = "127.0.0.1:7071")]
    listen: SocketAddr,
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
}

/// The task this node declares; the SDK adds `target: {http: {path: /echo}}` and `candidates: {service: echo}`.
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
        .init();
    let args = Args::parse();
    let mut builder = ExecutorNode::builder("echo")
        .scheduler(&args.scheduler)
        .token(args.token)
        .labels([("example", "echo")])
        .deferrable_handler("echo", |ctx: &RunContext| ctx.param::<bool>("async").ok().flatten() == Some(true), echo)
        .task(TASK);
    if let Some(url) = args.advertise {
        builder = builder.advertise(url);
    }
    if let Some(id) = args.id {
        builder = builder.id(id);
    }
    let node = builder.build()?;
    println!("echo executor listening on http://{} (scheduler {}; Ctrl-C to stop)", args.listen, args.scheduler);
    node.serve_http(args.listen, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}

async fn echo(ctx: RunContext) -> Result<Value, HandlerError> {
    println!(
        "run {} of {} (attempt {}, scheduled {}): params {}",
        ctx.run_id(),
        ctx.task(),
        ctx.attempt(),
        ctx.scheduled_at(),
        Value::Object(ctx.params().clone())
    );
    ctx.log(format!("echo executor received attempt {} of run {}", ctx.attempt(), ctx.run_id())).await;
    if let Some(ms) = ctx.param::<u64>("sleep_ms")? {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let output = json!({
        "echo": ctx.params(),
        "task": ctx.task(),
        "run_id": ctx.run_id(),
        "attempt": ctx.attempt(),
        "shard": {"index": ctx.shard_index(), "total": ctx.shard_total()},
    });
    if ctx.param::<bool>("fail")? == Some(true) {
        return Err(HandlerError::msg("asked to fail (fail=true)").with_output(output));
    }
    Ok(output)
}
