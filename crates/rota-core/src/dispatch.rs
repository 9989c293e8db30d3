//! Dispatching runs and recording outcomes: the run state machine as the core drives it.
//!
//! ```text
//! scheduled ──(CAS, fenced: attempts+1, owner, deadline)──► dispatching ──► executor.dispatch
//!    ▲                                                          │
//!    │ retry (next_attempt_at = now + backoff)                  ├─ Completed(succeeded) ─► succeeded
//!    ├──────────────────────────────────────────────────────────┼─ Completed(failed) / Failed ─► retry or failed
//!    │                                                          ├─ TimedOut ─► retry or timed_out
//!    │                                                          └─ Accepted ─► running (next_attempt_at = deadline)
//!    │                                                                            │ report / deadline sweep
//!    └────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! The attempt row is finished *before* the run transitions: `finish_attempt` refuses a second outcome, so of
//! several writers (a synchronous answer, a report, the timeout sweeper, a cancel) exactly one settles an attempt.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rota_proto::{ResultStatus, RunReport, ShardInfo};
use rota_store::{
    AttemptState, CompleteAttempt, NewAttempt, RunPatch, RunRecord, RunState, StoreError, Transition, truncate_millis,
};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::events::EventKind;
use crate::scheduler::{Inner, add, lock, now};
use crate::tasks::LoadedTask;
use crate::timer::TimerKey;
use crate::{CoreError, CoreResult, Dispatch, DispatchOutcome};

/// How long past an attempt's timeout the core waits for an executor that does not bound its own waiting.
const EXECUTOR_GRACE: Duration = Duration::from_secs(1);

/// The outcome of one attempt, as recorded on the run.
#[derive(Debug, Clone)]
pub(crate) enum Settle {
    Succeeded(Option<Value>),
    Failed(String),
    TimedOut(String),
}

/// Removes a run from the in-flight set when its dispatch task ends (even by panic).
struct InFlightGuard {
    inner: Arc<Inner>,
    run_id: i64,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        lock(&self.inner.in_flight).remove(&self.run_id);
    }
}

impl Inner {
    /// Starts dispatching a `scheduled` run in the background, unless it is already in flight on this node or the
    /// node is stopping (the run then stays in the durable pending queue). `run`/`task` avoid re-reading what the
    /// caller has just written.
    pub(crate) fn spawn_dispatch(self: &Arc<Self>, run_id: i64, run: Option<RunRecord>, task: Option<Arc<LoadedTask>>) {
        if self.stop.is_cancelled() {
            return;
        }
        let token = {
            let mut in_flight = lock(&self.in_flight);
            if in_flight.contains_key(&run_id) {
                return;
            }
            let token = self.abort.child_token();
            in_flight.insert(run_id, token.clone());
            token
        };
        let this = self.clone();
        self.tracker.spawn(async move {
            let _guard = InFlightGuard { inner: this.clone(), run_id };
            this.dispatch(run_id, run, task, token).await;
        });
    }

    async fn dispatch(
        self: &Arc<Self>,
        run_id: i64,
        run: Option<RunRecord>,
        task: Option<Arc<LoadedTask>>,
        token: CancellationToken,
    ) {
        let _permit = tokio::select! {
            p = self.dispatch_slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = self.stop.cancelled() => return,
            _ = token.cancelled() => return,
        };
        if self.stop.is_cancelled() {
            return;
        }
        let run = match run {
            Some(r) => r,
            None => match self.store.get_run(run_id).await {
                Ok(Some(r)) => r,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(run_id, error = %e, "could not load run to dispatch; the next scan retries");
                    return;
                }
            },
        };
        if run.state != RunState::Scheduled {
            return;
        }
        let now = now();
        if let Some(at) = run.next_attempt_at.filter(|at| *at > now) {
            // Not yet (a stale timer entry): wait for the stored instant.
            if self.leases.holds(run.shard) && at <= add(now, self.config.lookahead) {
                self.timer.schedule(TimerKey::Run(run.id), at, run.shard);
            }
            return;
        }
        let Some(fence) = self.leases.fence(run.shard) else { return };
        let task = match task {
            Some(t) => t,
            None => match self.store.get_task_by_id(run.task_id).await {
                Ok(Some(rec)) => match self.specs.load(&rec) {
                    Ok(t) => t,
                    Err(e) => {
                        // A spec that no longer parses cannot be dispatched: fail the run visibly.
                        self.fail_undispatchable(&run, &e.to_string()).await;
                        return;
                    }
                },
                Ok(None) => {
                    self.cancel_quietly(run.id, "task deleted").await;
                    return;
                }
                Err(e) => {
                    tracing::warn!(run_id, error = %e, "could not load task to dispatch; the next scan retries");
                    return;
                }
            },
        };

        let attempt = run.attempts + 1;
        let timeout = task.timeout(self.config.default_timeout);
        let deadline = truncate_millis(add(now, timeout));
        let node = task.choose_node();
        let node_label = match &node {
            Ok(Some(n)) => n.id.clone(),
            _ => String::new(),
        };
        let patch = RunPatch {
            attempts: Some(attempt),
            owner: Some(Some(self.config.node_id.clone())),
            // While dispatching or running, next_attempt_at holds the attempt's deadline (see the crate docs).
            next_attempt_at: Some(Some(deadline)),
            started_at: run.started_at.is_none().then_some(now),
            ..RunPatch::default()
        };
        let t = Transition {
            run_id,
            from: vec![RunState::Scheduled],
            to: RunState::Dispatching,
            patch,
            fence: Some(fence),
            now,
        };
        let new_attempt =
            NewAttempt { run_id, attempt, node: node_label.clone(), started_at: now, deadline: Some(deadline) };
        // One store call: the fenced `scheduled → dispatching` CAS and the attempt row.
        let (run, att) = match self.writes.start_attempt(t, new_attempt).await {
            Ok(ra) => ra,
            Err(StoreError::Fenced { .. }) => {
                self.lose_shard(run.shard, fence.epoch);
                return;
            }
            Err(StoreError::Conflict { .. } | StoreError::InvalidTransition { .. } | StoreError::NotFound { .. }) => {
                return; // cancelled or dispatched meanwhile
            }
            Err(e) => {
                // A backend that starts attempts in two steps may have moved the run without recording the attempt:
                // settle it now rather than leaving it to the timeout sweeper.
                if let Ok(Some(r)) = self.store.get_run(run_id).await
                    && r.state == RunState::Dispatching
                    && r.attempts == attempt
                    && r.owner.as_deref() == Some(self.config.node_id.as_str())
                    && self.store.list_attempts(run_id).await.is_ok_and(|a| a.iter().all(|a| a.attempt != attempt))
                {
                    let msg = format!("could not record the attempt: {e}");
                    let _ = self.settle(&r, attempt, Settle::Failed(msg), Some(task)).await;
                } else {
                    tracing::warn!(run_id, error = %e, "could not start dispatch; the next scan retries");
                }
                return;
            }
        };
        let endpoint = match node {
            Ok(n) => n,
            Err(msg) => {
                let _ = self.finish_and_settle(&run, att.id, attempt, Settle::Failed(msg), Some(task)).await;
                return;
            }
        };
        if self.store.supports_cluster() && !self.leases.valid_at(run.shard, crate::scheduler::now()) {
            // The lease ran out between the fenced start and now (this process was paused, or the store is slow):
            // another node may hold the shard. Do not send; record the attempt as failed (retried by policy).
            let msg = "the shard lease expired before the dispatch was sent".to_string();
            let _ = self.finish_and_settle(&run, att.id, attempt, Settle::Failed(msg), Some(task)).await;
            return;
        }
        self.publish_run(&run, EventKind::Dispatched { attempt, node: node_label });

        let d = Dispatch {
            run_id,
            attempt,
            namespace: run.namespace.clone(),
            name: run.name.clone(),
            scheduled_at: run.scheduled_at,
            params: match &run.params {
                Value::Object(m) => m.clone(),
                _ => Map::new(),
            },
            shard: ShardInfo::default(),
            deadline,
            timeout,
            target: task.task.spec.target.clone(),
            node: endpoint,
            report_url: self
                .config
                .public_url
                .as_deref()
                .map(|base| format!("{}/api/v1/runs/{run_id}", base.trim_end_matches('/'))),
        };
        let outcome = tokio::select! {
            o = self.executor.dispatch(d) => Some(o),
            _ = tokio::time::sleep(timeout + EXECUTOR_GRACE) => Some(DispatchOutcome::TimedOut),
            _ = token.cancelled() => None,
        };
        let settle = match outcome {
            None if self.abort.is_cancelled() => {
                Settle::Failed("scheduler shut down before the attempt finished".into())
            }
            None => return, // cancelled (cancel_run / replace): the run and attempt are already recorded
            Some(DispatchOutcome::Completed(res)) => match res.status {
                ResultStatus::Succeeded => Settle::Succeeded(res.output),
                ResultStatus::Failed => {
                    Settle::Failed(res.error.unwrap_or_else(|| "the executor reported a failure".into()))
                }
            },
            Some(DispatchOutcome::Failed { error }) => Settle::Failed(error),
            Some(DispatchOutcome::TimedOut) => Settle::TimedOut(timed_out_message(attempt, timeout)),
            Some(DispatchOutcome::Accepted) => {
                let t = Transition {
                    run_id,
                    from: vec![RunState::Dispatching],
                    to: RunState::Running,
                    patch: RunPatch { next_attempt_at: Some(Some(deadline)), ..RunPatch::default() },
                    fence: None,
                    now: crate::scheduler::now(),
                };
                match self.store.transition_run(t).await {
                    Ok(r) => self.publish_run(&r, EventKind::Running { attempt }),
                    // Already reported (a fast executor) or cancelled: nothing to do.
                    Err(StoreError::Conflict { .. } | StoreError::InvalidTransition { .. }) => {}
                    Err(e) => tracing::warn!(run_id, error = %e, "could not record the accepted attempt"),
                }
                return;
            }
        };
        match self.finish_and_settle(&run, att.id, attempt, settle, Some(task)).await {
            Ok(_) => {}
            // Someone else settled the attempt first (a report, a cancel): theirs wins.
            Err(CoreError::Conflict(e)) => tracing::debug!(run_id, error = %e, "attempt already settled"),
            // The outcome may not be recorded; the timeout sweeper resolves the run from its attempt row once the
            // deadline passes, so it is never left dispatching.
            Err(e) => tracing::warn!(run_id, error = %e, "could not record the attempt's outcome"),
        }
    }

    /// Finishes the attempt row and settles the run, in one store call (`complete_attempt`). `Conflict` when the
    /// attempt was already finished (by a report, the sweeper or a cancel) or the run moved meanwhile (cancelled):
    /// the first outcome wins.
    async fn finish_and_settle(
        self: &Arc<Self>,
        run: &RunRecord,
        attempt_id: i64,
        attempt: u32,
        outcome: Settle,
        task: Option<Arc<LoadedTask>>,
    ) -> CoreResult<RunRecord> {
        let now = now();
        let (state, output, error) = match &outcome {
            Settle::Succeeded(o) => (AttemptState::Succeeded, o.clone(), None),
            Settle::Failed(e) => (AttemptState::Failed, None, Some(e.clone())),
            Settle::TimedOut(e) => (AttemptState::TimedOut, None, Some(e.clone())),
        };
        let (t, event) = self.settle_transition(run, attempt, outcome, task.as_deref(), now);
        let complete = CompleteAttempt { attempt_id, state, output, error, now };
        let (updated, _) = self.writes.complete_attempt(complete, Some(t)).await?;
        let updated = updated.ok_or_else(|| CoreError::Conflict(format!("run {} was not moved", run.id)))?;
        self.after_settle(&updated, event, now);
        Ok(updated)
    }

    /// Records an attempt's outcome on its run (when there is no attempt row to finish).
    pub(crate) async fn settle(
        self: &Arc<Self>,
        run: &RunRecord,
        attempt: u32,
        outcome: Settle,
        task: Option<Arc<LoadedTask>>,
    ) -> CoreResult<RunRecord> {
        let now = now();
        let (t, event) = self.settle_transition(run, attempt, outcome, task.as_deref(), now);
        let updated = self.store.transition_run(t).await?;
        self.after_settle(&updated, event, now);
        Ok(updated)
    }

    /// The run transition recording an attempt's outcome: `succeeded`; or, for a failure or timeout, back to
    /// `scheduled` with `next_attempt_at = now + backoff` while attempts remain (a durable retry), else `failed` /
    /// `timed_out`. Outcomes are recorded unfenced (they describe what happened, whoever observed it).
    fn settle_transition(
        &self,
        run: &RunRecord,
        attempt: u32,
        outcome: Settle,
        task: Option<&LoadedTask>,
        now: DateTime<Utc>,
    ) -> (Transition, EventKind) {
        let from = vec![RunState::Dispatching, RunState::Running];
        let retry = task.map(|t| &t.task.spec.retry).filter(|r| attempt < r.max_attempts);
        let (to, patch, event) = match outcome {
            Settle::Succeeded(output) => (
                RunState::Succeeded,
                RunPatch { output, finished_at: Some(now), next_attempt_at: Some(None), ..RunPatch::default() },
                EventKind::Succeeded { attempt },
            ),
            Settle::Failed(error) | Settle::TimedOut(error) if retry.is_some() => {
                let retry = retry.expect("checked");
                let delay = retry.delay_before_attempt(attempt + 1, rand::random::<f64>());
                let next = truncate_millis(add(now, delay));
                tracing::info!(run_id = run.id, attempt, error = error.as_str(), "attempt failed");
                (
                    RunState::Scheduled,
                    RunPatch { next_attempt_at: Some(Some(next)), error: Some(error), ..RunPatch::default() },
                    EventKind::Retried { attempt, next_attempt_at: next },
                )
            }
            Settle::Failed(error) => (
                RunState::Failed,
                RunPatch {
                    error: Some(error.clone()),
                    finished_at: Some(now),
                    next_attempt_at: Some(None),
                    ..RunPatch::default()
                },
                EventKind::Failed { attempt, error },
            ),
            Settle::TimedOut(error) => (
                RunState::TimedOut,
                RunPatch {
                    error: Some(error),
                    finished_at: Some(now),
                    next_attempt_at: Some(None),
                    ..RunPatch::default()
                },
                EventKind::TimedOut { attempt },
            ),
        };
        (Transition { run_id: run.id, from, to, patch, fence: None, now }, event)
    }

    /// Puts a near retry into the timer and publishes the outcome.
    fn after_settle(&self, updated: &RunRecord, event: EventKind, now: DateTime<Utc>) {
        if let EventKind::Retried { next_attempt_at, .. } = &event
            && self.leases.holds(updated.shard)
            && *next_attempt_at <= add(now, self.config.lookahead)
        {
            self.timer.schedule(TimerKey::Run(updated.id), *next_attempt_at, updated.shard);
        }
        self.publish_run(updated, event);
    }

    /// A `scheduled` run whose task spec cannot be used: fail it (with an attempt row explaining why) rather than
    /// retrying forever.
    async fn fail_undispatchable(self: &Arc<Self>, run: &RunRecord, error: &str) {
        let t = Transition {
            run_id: run.id,
            from: vec![RunState::Scheduled],
            to: RunState::Dispatching,
            patch: RunPatch { attempts: Some(run.attempts + 1), ..RunPatch::default() },
            fence: self.leases.fence(run.shard),
            now: now(),
        };
        if let Ok(r) = self.store.transition_run(t).await {
            let _ = self.settle(&r, r.attempts, Settle::Failed(error.to_string()), None).await;
        }
    }

    /// Resolves a run stuck in `expected` (`running` past its deadline, or `dispatching` with nobody dispatching
    /// it) from its current attempt: a still-running attempt is finished (timed out for `running`, failed with
    /// `reason` for `dispatching`) and the run retried or finished; an attempt already finished (a crash between
    /// the two writes) gives its outcome to the run.
    pub(crate) async fn resolve_stuck(self: &Arc<Self>, run: RunRecord, expected: RunState, reason: &str) {
        let run = match self.store.get_run(run.id).await {
            Ok(Some(r)) if r.state == expected && !self.is_in_flight(r.id) => r,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(run_id = run.id, error = %e, "could not load run");
                return;
            }
        };
        if expected == RunState::Running && run.next_attempt_at.is_none_or(|d| d > now()) {
            return;
        }
        let task = match self.store.get_task_by_id(run.task_id).await {
            Ok(Some(rec)) => self.specs.load(&rec).ok(),
            _ => None,
        };
        let attempts = match self.store.list_attempts(run.id).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(run_id = run.id, error = %e, "could not list attempts");
                return;
            }
        };
        let current = attempts
            .iter()
            .filter(|a| a.attempt == run.attempts)
            .max_by_key(|a| (a.state == AttemptState::Running, a.id));
        let result = match current {
            Some(a) if a.state == AttemptState::Running => {
                let outcome = if expected == RunState::Running {
                    let timeout = a.deadline.and_then(|d| (d - a.started_at).to_std().ok()).unwrap_or_default();
                    Settle::TimedOut(timed_out_message(run.attempts, timeout))
                } else {
                    Settle::Failed(reason.to_string())
                };
                self.finish_and_settle(&run, a.id, run.attempts, outcome, task).await
            }
            Some(a) => {
                let outcome = match a.state {
                    AttemptState::Succeeded => Settle::Succeeded(a.output.clone()),
                    AttemptState::TimedOut => {
                        Settle::TimedOut(a.error.clone().unwrap_or_else(|| format!("attempt {} timed out", a.attempt)))
                    }
                    AttemptState::Cancelled => {
                        self.cancel_quietly(run.id, "attempt was cancelled").await;
                        return;
                    }
                    _ => Settle::Failed(a.error.clone().unwrap_or_else(|| reason.to_string())),
                };
                self.settle(&run, run.attempts, outcome, task).await
            }
            // No attempt row: the node stopped between the `dispatching` transition and the attempt insert.
            None => self.settle(&run, run.attempts, Settle::Failed(reason.to_string()), task).await,
        };
        if let Err(e) = result {
            tracing::debug!(run_id = run.id, error = %e, "stuck run resolved elsewhere");
        }
    }

    pub(crate) async fn report(self: &Arc<Self>, run_id: i64, report: RunReport) -> CoreResult<RunRecord> {
        let run = self
            .store
            .get_run(run_id)
            .await?
            .ok_or_else(|| CoreError::NotFound { entity: "run", key: run_id.to_string() })?;
        if !matches!(run.state, RunState::Dispatching | RunState::Running) {
            return Err(CoreError::Conflict(format!(
                "run {run_id} is {}; only a dispatching or running run accepts a report",
                run.state
            )));
        }
        if report.attempt != run.attempts {
            return Err(CoreError::Conflict(format!(
                "run {run_id} is at attempt {}; a report for attempt {} is not accepted",
                run.attempts, report.attempt
            )));
        }
        if !report.logs.is_empty() {
            self.store.append_logs(run_id, "executor", &report.logs, now()).await?;
        }
        let attempt = self
            .store
            .list_attempts(run_id)
            .await?
            .into_iter()
            .find(|a| a.attempt == report.attempt && a.state == AttemptState::Running)
            .ok_or_else(|| {
                CoreError::Conflict(format!("attempt {} of run {run_id} has already finished", report.attempt))
            })?;
        let outcome = match report.status {
            ResultStatus::Succeeded => Settle::Succeeded(report.output),
            ResultStatus::Failed => {
                Settle::Failed(report.error.unwrap_or_else(|| "the executor reported a failure".into()))
            }
        };
        let task = match self.store.get_task_by_id(run.task_id).await? {
            Some(rec) => self.specs.load(&rec).ok(),
            None => None,
        };
        self.finish_and_settle(&run, attempt.id, report.attempt, outcome, task).await
    }

    pub(crate) async fn cancel(self: &Arc<Self>, run_id: i64, reason: &str) -> CoreResult<RunRecord> {
        let run = self
            .store
            .get_run(run_id)
            .await?
            .ok_or_else(|| CoreError::NotFound { entity: "run", key: run_id.to_string() })?;
        if run.state.is_terminal() {
            return Err(CoreError::Conflict(format!("run {run_id} has already finished ({})", run.state)));
        }
        let now = now();
        let t = Transition {
            run_id,
            from: vec![RunState::Scheduled, RunState::Dispatching, RunState::Running],
            to: RunState::Cancelled,
            patch: RunPatch {
                reason: Some(reason.to_string()),
                finished_at: Some(now),
                next_attempt_at: Some(None),
                ..RunPatch::default()
            },
            fence: None,
            now,
        };
        let cancelled = self.store.transition_run(t).await?;
        self.timer.remove(TimerKey::Run(run_id));
        if let Some(token) = lock(&self.in_flight).get(&run_id) {
            token.cancel();
        }
        let mut running_attempt = None;
        for a in self.store.list_attempts(run_id).await? {
            if a.state == AttemptState::Running {
                match self.store.finish_attempt(a.id, AttemptState::Cancelled, None, Some(reason.into()), now).await {
                    Ok(_) | Err(StoreError::Conflict { .. }) => {}
                    Err(e) => tracing::warn!(run_id, error = %e, "could not finish the cancelled attempt"),
                }
                running_attempt = Some(a.attempt);
            }
        }
        if let Some(attempt) = running_attempt
            && let Ok(Some(rec)) = self.store.get_task_by_id(cancelled.task_id).await
            && let Ok(task) = self.specs.load(&rec)
        {
            self.executor.cancel(run_id, attempt, &task.task.spec.target).await;
        }
        self.publish_run(&cancelled, EventKind::Cancelled { reason: reason.to_string() });
        Ok(cancelled)
    }

    /// Cancels a run, logging instead of failing (replace policy, deleted task).
    pub(crate) async fn cancel_quietly(self: &Arc<Self>, run_id: i64, reason: &str) {
        match self.cancel(run_id, reason).await {
            Ok(_) | Err(CoreError::Conflict(_)) | Err(CoreError::NotFound { .. }) => {}
            Err(e) => tracing::warn!(run_id, error = %e, "could not cancel run"),
        }
    }
}

fn timed_out_message(attempt: u32, timeout: Duration) -> String {
    format!("attempt {attempt} timed out after {}", humanize(timeout))
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 { format!("{}s", d.as_secs()) } else { format!("{}ms", d.as_millis()) }
}
