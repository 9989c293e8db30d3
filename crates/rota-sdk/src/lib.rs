//! # rota-sdk: the Rust SDK of Rota
//!
//! The management API client ([`Client`]) and the executor side ([`executor`]).
//!
//! [`Client`] speaks the REST+JSON API every Rota server serves under `/api/v1` — the same API the `rota` CLI
//! and any console use. Its types ([`TaskView`], [`RunView`], [`RunDetail`], [`LogPage`], …) mirror the API's
//! JSON and are this crate's public contract; they are deserialized leniently, so an older client keeps working
//! against a newer server.
//!
//! Every failure is a [`ClientError`]. When the server refused the request, [`ClientError::Api`] carries the
//! API's stable `code` (`invalid_spec`, `not_found`, `conflict`, …), its message, and `details` naming every
//! offending field (`spec.retry.maxAttempts: must be >= 1`).
//!
//! ```no_run
//! use rota_sdk::{Client, ClientError, RunFilter, RunState, TaskFilter};
//!
//! # async fn demo() -> Result<(), ClientError> {
//! let rota = Client::new("http://127.0.0.1:7070")?;
//!
//! // Create or replace a task from its YAML (or JSON) document.
//! let applied = rota
//!     .apply(
//!         r#"
//! apiVersion: rota/v1
//! kind: Task
//! metadata: {namespace: billing, name: nightly-report, labels: {team: finance}}
//! spec:
//!   schedule: {cron: "0 30 2 * * *", timezone: Asia/Shanghai}
//!   target: {http: {path: /jobs/nightly-report}}
//!   candidates: {static: ["http://10.0.0.5:8080"]}
//! "#,
//!     )
//!     .await?;
//! println!("task {} {}", applied.task.key(), applied.action()); // "task billing/nightly-report created"
//!
//! // Fire it now with a parameter override, then look at what happened.
//! let mut params = serde_json::Map::new();
//! params.insert("report".into(), "weekly".into());
//! let run = rota.trigger("billing", "nightly-report", params).await?;
//! let detail = rota.get_run(run.id).await?;
//! println!("run {} is {} after {} attempt(s)", run.id, detail.run.state, detail.attempts.len());
//!
//! // Failed runs of the task, newest first.
//! let failed = rota.list_runs(&RunFilter::task("billing", "nightly-report").state(RunState::Failed), None, Some(20)).await?;
//! for r in failed.items {
//!     println!("{} {}", r.id, r.error.unwrap_or_default());
//! }
//!
//! // Every task labelled team=finance.
//! for t in rota.list_all_tasks(&TaskFilter::default().label("team", "finance")).await? {
//!     println!("{} {}", t.key(), t.schedule_summary());
//! }
//!
//! // Errors carry the API's code and field paths.
//! match rota.apply("apiVersion: rota/v1\nkind: Task\nmetadata: {name: x}\nspec: {timeout: soon}\n").await {
//!     Err(ClientError::Api { code, details, .. }) if code == "invalid_spec" => {
//!         for d in details {
//!             eprintln!("{}: {}", d.path, d.message); // e.g. "spec.timeout: invalid duration …"
//!         }
//!     }
//!     other => println!("{other:?}"),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! ## Executor nodes
//!
//! [`executor::ExecutorNode`] is the executor side: named handlers (sync, or async with a later report) served
//! over the HTTP `rota` protocol or gRPC (`rota.executor.v1.Executor`), registration with the scheduler as a node of a service, heartbeats, tasks the
//! node declares for itself, and a drain on shutdown. `examples/echo-executor.rs` in this crate is a complete
//! node: `cargo run -p rota-sdk --example echo-executor` registers it as service `echo` with the scheduler on
//! `http://127.0.0.1:7070` and declares the task `default/echo` (`-- --grpc` serves gRPC instead).

pub mod client;
mod document;
pub mod executor;
mod types;

pub use client::{Client, ClientError, Result};
pub use document::{StreamDocument, TaskDocument, split_documents};
pub use types::*;
