//! A complete Rota executor node: answers every run envelope with the run's params.
//!
//! ```sh
//! cargo run -p rota-sdk --example echo-executor               # listens on 127.0.0.1:7071
//! cargo run -p rota-sdk --example echo-executor -- 0.0.0.0:9000
//! rota apply -f examples/tasks/echo.yaml                      # a task that calls it every 10 s
//! rota trigger default/echo --param fail=true                 # see a failed run (and its retries)
//! ```
//!
//! It speaks the HTTP `rota` protocol (see the `rota-executor` crate docs): the scheduler POSTs a run envelope
//! to any path, and the node answers `200 {"status": "succeeded"|"failed", "output": …, "error": …}`.
//! Params change its behaviour, so one task can show every outcome:
//!
//! | param | effect |
//! | --- | --- |
//! | `fail: true` | answers `failed` (the task's retry policy applies) |
//! | `sleep_ms: N` | waits N ms before answering (longer than the task's timeout: a `timed_out` attempt) |
//! | `async: true` | answers `202 Accepted` and reports the result later to the envelope's `report_url` |
//!
//! When the envelope has a `report_url` (the server knows its public address), the node also appends a log line
//! to the run (`POST {report_url}/logs`), which `rota logs RUN_ID` shows.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rota_proto::{LogAppend, ResultStatus, RunEnvelope, RunReport, RunResult};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let listen = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:7071".to_string());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    let addr: SocketAddr = listener.local_addr()?;
    println!("echo executor listening on http://{addr} (any path; Ctrl-C to stop)");
    let app = axum::Router::new().fallback(axum::routing::post(handle));
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

async fn handle(Json(envelope): Json<RunEnvelope>) -> Response {
    let params = &envelope.params;
    println!(
        "run {} of {} (attempt {}, scheduled {}): params {}",
        envelope.run_id,
        envelope.task,
        envelope.attempt,
        envelope.scheduled_at,
        Value::Object(params.clone())
    );
    let http = reqwest::Client::new();
    if let Some(report_url) = &envelope.report_url {
        let line = format!("echo executor received attempt {} of run {}", envelope.attempt, envelope.run_id);
        let append = LogAppend { stream: Some("executor".into()), lines: vec![line] };
        // Logging is best-effort: a failure here must not fail the run.
        let _ = http.post(format!("{report_url}/logs")).json(&append).timeout(Duration::from_secs(2)).send().await;
    }
    if let Some(ms) = params.get("sleep_ms").and_then(Value::as_u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let result = outcome(&envelope);
    let is_async = params.get("async").and_then(Value::as_bool) == Some(true);
    match (&envelope.report_url, is_async) {
        (Some(report_url), true) => {
            let report = RunReport {
                attempt: envelope.attempt,
                status: result.status,
                output: result.output,
                error: result.error,
                logs: vec!["reported asynchronously".into()],
                node: None,
            };
            let url = format!("{report_url}/report");
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if let Err(e) = http.post(&url).json(&report).send().await {
                    eprintln!("could not report to {url}: {e}");
                }
            });
            StatusCode::ACCEPTED.into_response()
        }
        _ => Json(result).into_response(),
    }
}

fn outcome(envelope: &RunEnvelope) -> RunResult {
    let output = json!({
        "echo": envelope.params,
        "task": envelope.task,
        "run_id": envelope.run_id,
        "attempt": envelope.attempt,
        "shard": {"index": envelope.shard.index, "total": envelope.shard.total},
    });
    if envelope.params.get("fail").and_then(Value::as_bool) == Some(true) {
        RunResult {
            status: ResultStatus::Failed,
            output: Some(output),
            error: Some("asked to fail (fail=true)".into()),
        }
    } else {
        RunResult { status: ResultStatus::Succeeded, output: Some(output), error: None }
    }
}
