//! `rota server --demo`: a tiny built-in executor node and the task `demo/hello` that calls it every 5 s.
//!
//! The executor speaks the HTTP `rota` protocol on an ephemeral `127.0.0.1` port and joins the execution cluster
//! as node `demo-1` of service `demo` (registered and heartbeated through the scheduler, as an executor node
//! registers through the API), so `demo/hello` finds it by `candidates.service: demo` and `rota get nodes` lists
//! it. It appends one log line to the run (when the envelope has a report URL) and answers
//! `200 {"status": "succeeded", "output": {"greeting": "hello from run N"}}`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::Json;
use axum::extract::State;
use rota_core::Scheduler;
use rota_proto::{ExecutorProtocol, ExecutorRegistration, LogAppend, RunEnvelope};
use rota_store::Precondition;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct Demo {
    addr: SocketAddr,
    stop: CancellationToken,
    server: JoinHandle<()>,
    heartbeat: JoinHandle<()>,
}

impl Demo {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.server).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.heartbeat).await;
    }
}

/// Node id and service of the demo executor.
pub const NODE_ID: &str = "demo-1";
pub const SERVICE: &str = "demo";

/// The demo task, calling the executor nodes of service `demo`.
pub fn task_document() -> String {
    format!(
        r#"apiVersion: rota/v1
kind: Task
metadata:
  namespace: demo
  name: hello
  labels: {{app: demo}}
  description: Built-in demo (rota server --demo) - says hello every five seconds.
spec:
  schedule: {{every: 5s}}
  target:
    http: {{path: /jobs/hello, protocol: rota}}
  candidates:
    service: {SERVICE}
  retry: {{maxAttempts: 2, backoff: {{kind: fixed, initial: 1s}}}}
  timeout: 3s
  params: {{greeting: hello}}
"#
    )
}

/// Starts the demo executor and applies `demo/hello` (replacing an earlier demo task, whose executor address is
/// gone with its process).
pub async fn start(scheduler: &Scheduler) -> anyhow::Result<Demo> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("cannot bind the demo executor")?;
    let addr = listener.local_addr()?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let app = axum::Router::new().fallback(axum::routing::post(handle)).with_state(http);
    let stop = CancellationToken::new();
    let server = {
        let stop = stop.clone();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await {
                tracing::warn!(target: "rota::demo", error = %e, "demo executor stopped");
            }
        })
    };
    let registration = ExecutorRegistration {
        id: NODE_ID.to_string(),
        service: SERVICE.to_string(),
        address: format!("http://{addr}"),
        protocol: ExecutorProtocol::Http,
        labels: [("app".to_string(), "demo".to_string())].into(),
        weight: 1,
        capacity: 0,
    };
    let lease = scheduler.register_executor(registration.clone()).await.context("cannot register the demo executor")?;
    let heartbeat = {
        // Heartbeat like an executor node: every `heartbeat_interval_ms`, registering again if forgotten.
        let (stop, scheduler) = (stop.clone(), scheduler.clone());
        let every = Duration::from_millis(lease.heartbeat_interval_ms.max(100));
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(every) => {}
                }
                if scheduler.heartbeat_executor(NODE_ID).await.is_err() {
                    let _ = scheduler.register_executor(registration.clone()).await;
                }
            }
            let _ = scheduler.deregister_executor(NODE_ID).await;
        })
    };
    let task = rota_spec::parse_yaml(&task_document()).context("the demo task is invalid")?;
    scheduler.apply(task, Precondition::Any).await.context("cannot apply the demo task")?;
    tracing::info!(target: "rota::demo", executor = %format!("http://{addr}"), "demo executor started; task demo/hello fires every 5s");
    Ok(Demo { addr, stop, server, heartbeat })
}

async fn handle(State(http): State<reqwest::Client>, Json(envelope): Json<RunEnvelope>) -> Json<Value> {
    let greeting = format!("hello from run {}", envelope.run_id);
    tracing::info!(target: "rota::demo", task = %envelope.task, run_id = %envelope.run_id, attempt = envelope.attempt, "demo executor: {greeting}");
    if let Some(report_url) = &envelope.report_url {
        let append =
            LogAppend { stream: Some("executor".into()), lines: vec![format!("demo executor says: {greeting}")] };
        if let Err(e) = http.post(format!("{report_url}/logs")).json(&append).send().await {
            tracing::debug!(target: "rota::demo", error = %e, "could not append the demo log line");
        }
    }
    Json(json!({"status": "succeeded", "output": {"greeting": greeting}}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_task_is_valid() {
        let task = rota_spec::parse_yaml(&task_document()).unwrap();
        assert_eq!(task.key(), "demo/hello");
    }
}
