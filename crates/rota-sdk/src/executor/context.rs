//! [`RunContext`]: what a handler knows about its run, and its log.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;
use rota_proto::{LogAppend, RunEnvelope, ShardInfo};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::HandlerError;

/// Lines buffered beyond this many are sent at once, without waiting for the flush interval.
const MAX_BUFFERED_LINES: usize = 200;
/// Bound on one log append call (logging is best effort and must not hold a run up).
const LOG_CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// One attempt of one run, as its handler sees it. Cheap to clone (clones share the log buffer), so it can be
/// moved into tasks the handler spawns.
#[derive(Clone)]
pub struct RunContext {
    inner: Arc<Inner>,
}

struct Inner {
    envelope: RunEnvelope,
    node_id: String,
    http: reqwest::Client,
    auth: HeaderMap,
    flush_interval: Duration,
    buffer: Mutex<Buffer>,
    /// Held while taking lines out of the buffer and sending them, so batches arrive in order.
    sending: tokio::sync::Mutex<()>,
    /// The handler has returned: lines logged from now on are sent at once.
    finished: AtomicBool,
}

#[derive(Default)]
struct Buffer {
    lines: Vec<String>,
    /// A delayed flush is pending.
    armed: bool,
}

impl std::fmt::Debug for RunContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunContext")
            .field("envelope", &self.inner.envelope)
            .field("node_id", &self.inner.node_id)
            .finish_non_exhaustive()
    }
}

impl RunContext {
    pub(crate) fn new(
        envelope: RunEnvelope,
        node_id: String,
        http: reqwest::Client,
        auth: HeaderMap,
        flush_interval: Duration,
    ) -> Self {
        RunContext {
            inner: Arc::new(Inner {
                envelope,
                node_id,
                http,
                auth,
                flush_interval,
                buffer: Mutex::new(Buffer::default()),
                sending: tokio::sync::Mutex::new(()),
                finished: AtomicBool::new(false),
            }),
        }
    }

    /// The whole envelope the scheduler sent.
    pub fn envelope(&self) -> &RunEnvelope {
        &self.inner.envelope
    }

    /// The run's id.
    pub fn run_id(&self) -> &str {
        &self.inner.envelope.run_id
    }

    /// 1-based attempt number.
    pub fn attempt(&self) -> u32 {
        self.inner.envelope.attempt
    }

    /// `namespace/name` of the task.
    pub fn task(&self) -> &str {
        &self.inner.envelope.task
    }

    /// The task's namespace (`default` when the key has none).
    pub fn namespace(&self) -> &str {
        self.inner.envelope.task.split_once('/').map_or("default", |(ns, _)| ns)
    }

    /// The task's name (the key without its namespace).
    pub fn task_name(&self) -> &str {
        let task = &self.inner.envelope.task;
        task.split_once('/').map_or(task.as_str(), |(_, name)| name)
    }

    /// The instant the run was scheduled for (not when it was dispatched).
    pub fn scheduled_at(&self) -> DateTime<Utc> {
        self.inner.envelope.scheduled_at
    }

    /// After this instant the scheduler considers the attempt timed out.
    pub fn deadline(&self) -> DateTime<Utc> {
        self.inner.envelope.deadline
    }

    /// Time left until [`deadline`](Self::deadline) (zero once it passed).
    pub fn remaining(&self) -> Duration {
        (self.inner.envelope.deadline - Utc::now()).to_std().unwrap_or_default()
    }

    /// The run's params (the task's `spec.params` merged with a manual trigger's overrides).
    pub fn params(&self) -> &Map<String, Value> {
        &self.inner.envelope.params
    }

    /// One param, deserialized: `Ok(None)` when absent or `null`, an error naming the param when it has another
    /// type (so `let n: Option<u64> = ctx.param("limit")?;` fails the run with a clear message).
    pub fn param<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, HandlerError> {
        match self.inner.envelope.params.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => T::deserialize(v).map(Some).map_err(|e| HandlerError::msg(format!("param `{key}`: {e}"))),
        }
    }

    /// All params as one typed value (a struct with `#[derive(Deserialize)]`).
    pub fn params_as<T: DeserializeOwned>(&self) -> Result<T, HandlerError> {
        T::deserialize(Value::Object(self.inner.envelope.params.clone()))
            .map_err(|e| HandlerError::msg(format!("params: {e}")))
    }

    /// The shard of a sharded broadcast (`{index: 0, total: 1}` for a unicast run).
    pub fn shard(&self) -> ShardInfo {
        self.inner.envelope.shard
    }

    /// `shard().index`.
    pub fn shard_index(&self) -> u32 {
        self.inner.envelope.shard.index
    }

    /// `shard().total`.
    pub fn shard_total(&self) -> u32 {
        self.inner.envelope.shard.total
    }

    /// The id of the node running the attempt.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// Appends a line to the run's log (`rota logs RUN_ID`). Lines are buffered and sent, best effort, to
    /// `POST {report_url}/logs` within the flush interval, when many pile up, and before the result; they are
    /// also emitted as `tracing` events. Without a `report_url` they go to `tracing` only.
    pub async fn log(&self, line: impl Into<String>) {
        let line = line.into();
        tracing::info!(target: "rota_sdk::run", run_id = %self.run_id(), task = %self.task(), "{line}");
        if self.inner.envelope.report_url.is_none() {
            return;
        }
        let (flush_now, arm) = {
            let mut buffer = self.inner.buffer.lock().expect("log buffer lock");
            buffer.lines.push(line);
            let flush_now = buffer.lines.len() >= MAX_BUFFERED_LINES || self.inner.finished.load(Ordering::SeqCst);
            let arm = !flush_now && !buffer.armed;
            if arm {
                buffer.armed = true;
            }
            (flush_now, arm)
        };
        if flush_now {
            self.flush_logs().await;
        } else if arm {
            let ctx = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(ctx.inner.flush_interval).await;
                ctx.flush_logs().await;
            });
        }
    }

    /// Sends the buffered lines now (best effort; failures are logged at `debug` and the lines dropped).
    pub async fn flush_logs(&self) {
        let _sending = self.inner.sending.lock().await;
        let lines = self.take_buffered();
        if lines.is_empty() {
            return;
        }
        let Some(report_url) = &self.inner.envelope.report_url else { return };
        let url = format!("{report_url}/logs");
        let append = LogAppend { stream: None, lines };
        let sent = self
            .inner
            .http
            .post(&url)
            .headers(self.inner.auth.clone())
            .json(&append)
            .timeout(LOG_CALL_TIMEOUT)
            .send()
            .await;
        match sent {
            Ok(res) if res.status().is_success() => {}
            Ok(res) => tracing::debug!(run_id = %self.run_id(), status = res.status().as_u16(),
                "the scheduler refused {} log line(s)", append.lines.len()),
            Err(e) => tracing::debug!(run_id = %self.run_id(), error = %e,
                "could not send {} log line(s)", append.lines.len()),
        }
    }

    /// Marks the handler finished and sends what is buffered (sync handlers, before their result).
    pub(crate) async fn finish_logs(&self) {
        self.inner.finished.store(true, Ordering::SeqCst);
        self.flush_logs().await;
    }

    /// Marks the handler finished and returns the lines not sent yet (they travel in the async report).
    pub(crate) async fn take_unsent_logs(&self) -> Vec<String> {
        let _sending = self.inner.sending.lock().await;
        self.inner.finished.store(true, Ordering::SeqCst);
        self.take_buffered()
    }

    fn take_buffered(&self) -> Vec<String> {
        let mut buffer = self.inner.buffer.lock().expect("log buffer lock");
        buffer.armed = false;
        std::mem::take(&mut buffer.lines)
    }
}
