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
use rota_spec::{DispatchMode, SuccessPolicy};
use rota_store::{
    AttemptRecord, AttemptState, CompleteAttempt, NewAttempt, RunPatch, RunRecord, RunState, StoreError, Transition,
    truncate_millis,
};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::balance::{self, SelectState};
use crate::discovery::Candidate;
use crate::events::EventKind;
use crate::scheduler::{Inner, add, lock, now};
use crate::tasks::LoadedTask;
use crate::timer::TimerKey;
use crate::{CoreError, CoreResult, Dispatch, DispatchOutcome, NodeEndpoint};

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
        if self.store.supports_cluster() && !self.leases.valid_at(run.shard, now) {
            // Our lease on the shard has run out by our clock (a slow renewal): start nothing until the lease tick
            // settles who holds it; the run stays `scheduled` and the next scan of the shard's holder picks it up.
            return;
        }
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
        let plan = self.plan_targets(&task, &run, attempt).await;
        // Discovery may have taken a while: the attempt's clock starts now.
        let now = crate::scheduler::now();
        let deadline = truncate_millis(add(now, timeout));
        let node_label = match &plan {
            Ok(targets) => targets.first().and_then(|t| t.node.as_ref()).map(|n| n.id.clone()).unwrap_or_default(),
            Err(_) => String::new(),
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
        let targets = match plan {
            Ok(t) => t,
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
        if targets.len() > 1 {
            self.dispatch_many(run, att, targets, task, deadline, timeout, token).await;
            return;
        }
        let target = targets.into_iter().next().unwrap_or(Target { node: None, shard: ShardInfo::default() });
        self.publish_run(&run, EventKind::Dispatched { attempt, node: node_label });

        let d = self.dispatch_of(&run, attempt, &task, &target, deadline, timeout);
        let node_id = target.node.as_ref().map(|n| n.id.clone());
        let outcome = {
            let _active = node_id.as_deref().map(|id| self.health.start(id));
            tokio::select! {
                o = self.executor.dispatch(d) => Some(o),
                _ = tokio::time::sleep(timeout + EXECUTOR_GRACE) => Some(DispatchOutcome::TimedOut),
                _ = token.cancelled() => None,
            }
        };
        if let (Some(id), Some(o)) = (&node_id, &outcome) {
            self.health.record(id, node_answered(o));
        }
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
        let rows: Vec<&AttemptRecord> = attempts.iter().filter(|a| a.attempt == run.attempts).collect();
        if rows.len() > 1 {
            // A multi-node attempt: finish every row still running, then settle the run with the aggregate.
            for a in rows.iter().filter(|a| a.state == AttemptState::Running) {
                let (state, error) = if expected == RunState::Running {
                    let timeout = a.deadline.and_then(|d| (d - a.started_at).to_std().ok()).unwrap_or_default();
                    (AttemptState::TimedOut, timed_out_message(run.attempts, timeout))
                } else {
                    (AttemptState::Failed, reason.to_string())
                };
                match self.store.finish_attempt(a.id, state, None, Some(error), now()).await {
                    Ok(_) | Err(StoreError::Conflict { .. }) => {}
                    Err(e) => {
                        tracing::warn!(run_id = run.id, error = %e, "could not finish a node's attempt");
                        return;
                    }
                }
            }
            self.conclude_many(run.id, run.attempts, task).await;
            return;
        }
        let current = rows.into_iter().max_by_key(|a| (a.state == AttemptState::Running, a.id));
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
        let task = match self.store.get_task_by_id(run.task_id).await? {
            Some(rec) => self.specs.load(&rec).ok(),
            None => None,
        };
        let rows: Vec<AttemptRecord> =
            self.store.list_attempts(run_id).await?.into_iter().filter(|a| a.attempt == report.attempt).collect();
        let from_static = task.as_ref().is_some_and(|t| {
            t.task.spec.candidates.as_ref().is_some_and(|c| c.r#static.as_ref().is_some_and(|l| !l.is_empty()))
        });
        let row = match &report.node {
            Some(node) => match rows.iter().find(|a| &a.node == node) {
                Some(a) => a,
                // Static candidates are known by address, not by node id: a single-node attempt to one of them
                // accepts a report naming any node.
                None if rows.len() == 1 && from_static => &rows[0],
                None => {
                    return Err(CoreError::Conflict(format!(
                        "attempt {} of run {run_id} was not dispatched to node {node:?}; a node can report only \
                         runs it was given",
                        report.attempt
                    )));
                }
            },
            None if rows.len() > 1 => {
                return Err(CoreError::Conflict(format!(
                    "attempt {} of run {run_id} went to {} nodes; the report must name its node",
                    report.attempt,
                    rows.len()
                )));
            }
            None => rows.first().ok_or_else(|| {
                CoreError::Conflict(format!("attempt {} of run {run_id} has not started", report.attempt))
            })?,
        };
        if row.state != AttemptState::Running {
            return Err(CoreError::Conflict(match &report.node {
                Some(node) => format!("attempt {} of run {run_id} on node {node} has already finished", report.attempt),
                None => format!("attempt {} of run {run_id} has already finished", report.attempt),
            }));
        }
        if !report.logs.is_empty() {
            self.store.append_logs(run_id, "executor", &report.logs, now()).await?;
        }
        let outcome = match report.status {
            ResultStatus::Succeeded => Settle::Succeeded(report.output),
            ResultStatus::Failed => {
                Settle::Failed(report.error.unwrap_or_else(|| "the executor reported a failure".into()))
            }
        };
        if rows.len() == 1 {
            return self.finish_and_settle(&run, row.id, report.attempt, outcome, task).await;
        }
        let (state, output, error) = match outcome {
            Settle::Succeeded(o) => (AttemptState::Succeeded, o, None),
            Settle::Failed(e) | Settle::TimedOut(e) => (AttemptState::Failed, None, Some(e)),
        };
        self.store.finish_attempt(row.id, state, output, error, now()).await?;
        match self.conclude_many(run_id, report.attempt, task).await {
            Some(r) => Ok(r),
            None => self
                .store
                .get_run(run_id)
                .await?
                .ok_or_else(|| CoreError::NotFound { entity: "run", key: run_id.to_string() }),
        }
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

/// One node (or none: a container, an `http.url` target) of an attempt, with its shard.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub node: Option<NodeEndpoint>,
    pub shard: ShardInfo,
}

/// Whether the node answered (any result, or "accepted"): a breaker counts only failed or timed-out dispatches.
fn node_answered(o: &DispatchOutcome) -> bool {
    matches!(o, DispatchOutcome::Completed(_) | DispatchOutcome::Accepted)
}

/// The outcome of an attempt that went to several nodes, from its finished rows (one per node), by the task's
/// success policy: `all` — succeeded when every node succeeded; `any` — when at least one did. The output of a
/// successful run is an object of the succeeded nodes' outputs by node id. A failed run's error lists the nodes
/// that failed; it is a timeout when every failure was one.
pub(crate) fn aggregate(rows: &[AttemptRecord], policy: SuccessPolicy) -> Settle {
    let total = rows.len();
    let succeeded: Vec<&AttemptRecord> = rows.iter().filter(|a| a.state == AttemptState::Succeeded).collect();
    let failed: Vec<&AttemptRecord> = rows.iter().filter(|a| a.state != AttemptState::Succeeded).collect();
    let ok = match policy {
        SuccessPolicy::All => failed.is_empty(),
        SuccessPolicy::Any => !succeeded.is_empty(),
    };
    if ok {
        let outputs: Map<String, Value> =
            succeeded.iter().map(|a| (a.node.clone(), a.output.clone().unwrap_or(Value::Null))).collect();
        return Settle::Succeeded(Some(Value::Object(outputs)));
    }
    let reasons: Vec<String> =
        failed.iter().map(|a| format!("{}: {}", a.node, a.error.as_deref().unwrap_or(a.state.as_str()))).collect();
    let msg = format!("{} of {total} nodes failed: {}", failed.len(), reasons.join("; "));
    if failed.iter().all(|a| a.state == AttemptState::TimedOut) { Settle::TimedOut(msg) } else { Settle::Failed(msg) }
}

impl Inner {
    /// The node(s) of the next attempt of `run`: from the task's static list or its service's discovery, through
    /// the filters, dispatch mode and load-balancing strategy of [`crate::balance`]. A task without candidates
    /// (container, `http.url`) gets one target without a node. `Err` is the attempt's error.
    pub(crate) async fn plan_targets(
        &self,
        task: &LoadedTask,
        run: &RunRecord,
        attempt: u32,
    ) -> Result<Vec<Target>, String> {
        let spec = &task.task.spec;
        let none = || vec![Target { node: None, shard: ShardInfo::default() }];
        let Some(c) = &spec.candidates else { return Ok(none()) };
        let protocol = balance::protocol_for(&spec.target);
        let candidates: Vec<Candidate> = if let Some(list) = c.r#static.as_ref().filter(|l| !l.is_empty()) {
            list.iter().map(|a| Candidate { protocol: protocol.to_string(), ..Candidate::from_address(a) }).collect()
        } else if let Some(service) = &c.service {
            let discovery = self.discovery();
            match discovery.candidates(service).await {
                Ok(c) => c,
                Err(e) => return Err(e.to_string()),
            }
        } else {
            return Ok(none());
        };
        let switch = spec.retry.switch_node && attempt > 1;
        let used = if switch {
            match self.store.list_attempts(run.id).await {
                Ok(rows) => rows.into_iter().map(|a| a.node).collect(),
                Err(e) => {
                    tracing::debug!(run_id = run.id, error = %e, "could not read earlier attempts; not switching");
                    Default::default()
                }
            }
        } else {
            Default::default()
        };
        let state = SelectState {
            round_robin: task.next_round_robin(),
            active: self.health.active(),
            cooling: self.health.cooling(),
            used,
        };
        let params = match &run.params {
            Value::Object(m) => m.clone(),
            _ => Map::new(),
        };
        let hash = balance::hash_value(spec.dispatch.hash_key.as_deref(), &params, &task.task.key());
        let chosen =
            balance::select(&spec.dispatch, protocol, candidates, &hash, &state, switch).map_err(|e| {
                match &c.service {
                    Some(s) => format!("{e} (service {s})"),
                    None => e,
                }
            })?;
        let fans = !matches!(spec.dispatch.mode, DispatchMode::Unicast);
        Ok(chosen
            .into_iter()
            .map(|ch| Target {
                node: Some(NodeEndpoint { id: ch.node.id, address: ch.node.address }),
                shard: if fans && spec.dispatch.mode == DispatchMode::Sharded {
                    ShardInfo { index: ch.shard_index, total: ch.shard_total }
                } else {
                    ShardInfo::default()
                },
            })
            .collect())
    }

    /// The dispatch of one attempt of `run` to one target.
    fn dispatch_of(
        &self,
        run: &RunRecord,
        attempt: u32,
        task: &LoadedTask,
        target: &Target,
        deadline: DateTime<Utc>,
        timeout: Duration,
    ) -> Dispatch {
        Dispatch {
            run_id: run.id,
            attempt,
            namespace: run.namespace.clone(),
            name: run.name.clone(),
            scheduled_at: run.scheduled_at,
            params: match &run.params {
                Value::Object(m) => m.clone(),
                _ => Map::new(),
            },
            shard: target.shard,
            deadline,
            timeout,
            target: task.task.spec.target.clone(),
            node: target.node.clone(),
            report_url: self
                .config
                .public_url
                .as_deref()
                .map(|base| format!("{}/api/v1/runs/{}", base.trim_end_matches('/'), run.id)),
        }
    }

    /// Sends one attempt to several nodes at once (multicast, broadcast, sharded): one attempt row per node, all
    /// sent concurrently, each row finished with its node's outcome; when every row has finished the run gets
    /// the aggregate outcome ([`aggregate`]); while asynchronous nodes are still working it is `running`.
    #[allow(clippy::too_many_arguments)]
    async fn dispatch_many(
        self: &Arc<Self>,
        run: RunRecord,
        first: AttemptRecord,
        targets: Vec<Target>,
        task: Arc<LoadedTask>,
        deadline: DateTime<Utc>,
        timeout: Duration,
        token: CancellationToken,
    ) {
        let attempt = first.attempt;
        let mut rows = vec![(targets[0].clone(), first)];
        for t in &targets[1..] {
            let node = t.node.as_ref().map(|n| n.id.clone()).unwrap_or_default();
            let new = NewAttempt { run_id: run.id, attempt, node, started_at: now(), deadline: Some(deadline) };
            match self.store.insert_attempt(new).await {
                Ok(a) => rows.push((t.clone(), a)),
                Err(e) => {
                    // Nothing has been sent: fail the rows recorded so far and settle the run by its retry policy.
                    let msg = format!("could not record the attempt of every node: {e}");
                    for (_, a) in &rows {
                        let _ =
                            self.store.finish_attempt(a.id, AttemptState::Failed, None, Some(msg.clone()), now()).await;
                    }
                    let _ = self.settle(&run, attempt, Settle::Failed(msg), Some(task)).await;
                    return;
                }
            }
        }
        if self.store.supports_cluster() && !self.leases.valid_at(run.shard, now()) {
            let msg = "the shard lease expired before the dispatch was sent".to_string();
            for (_, a) in &rows {
                let _ = self.store.finish_attempt(a.id, AttemptState::Failed, None, Some(msg.clone()), now()).await;
            }
            let _ = self.settle(&run, attempt, Settle::Failed(msg), Some(task)).await;
            return;
        }
        for (t, _) in &rows {
            let node = t.node.as_ref().map(|n| n.id.clone()).unwrap_or_default();
            self.publish_run(&run, EventKind::Dispatched { attempt, node });
        }
        let sends = rows.iter().map(|(t, a)| {
            let d = self.dispatch_of(&run, attempt, &task, t, deadline, timeout);
            let node = t.node.as_ref().map(|n| n.id.clone()).unwrap_or_default();
            let this = self.clone();
            let attempt_id = a.id;
            async move {
                let outcome = {
                    let _active = this.health.start(&node);
                    tokio::time::timeout(timeout + EXECUTOR_GRACE, this.executor.dispatch(d))
                        .await
                        .unwrap_or(DispatchOutcome::TimedOut)
                };
                this.health.record(&node, node_answered(&outcome));
                (attempt_id, outcome)
            }
        });
        let outcomes = tokio::select! {
            o = futures::future::join_all(sends) => o,
            _ = token.cancelled() => {
                if self.abort.is_cancelled() {
                    let msg = "scheduler shut down before the attempt finished";
                    for (_, a) in &rows {
                        let _ = self.store.finish_attempt(a.id, AttemptState::Failed, None, Some(msg.into()), now()).await;
                    }
                    self.conclude_many(run.id, attempt, Some(task)).await;
                }
                return; // otherwise cancelled: the run and its attempts are already recorded
            }
        };
        for (attempt_id, outcome) in outcomes {
            let (state, output, error) = match outcome {
                DispatchOutcome::Accepted => continue,
                DispatchOutcome::Completed(res) => match res.status {
                    ResultStatus::Succeeded => (AttemptState::Succeeded, res.output, None),
                    ResultStatus::Failed => (
                        AttemptState::Failed,
                        None,
                        Some(res.error.unwrap_or_else(|| "the executor reported a failure".into())),
                    ),
                },
                DispatchOutcome::Failed { error } => (AttemptState::Failed, None, Some(error)),
                DispatchOutcome::TimedOut => (AttemptState::TimedOut, None, Some(timed_out_message(attempt, timeout))),
            };
            match self.store.finish_attempt(attempt_id, state, output, error, now()).await {
                Ok(_) | Err(StoreError::Conflict { .. }) => {}
                Err(e) => tracing::warn!(run_id = run.id, error = %e, "could not record a node's outcome"),
            }
        }
        self.conclude_many(run.id, attempt, Some(task)).await;
    }

    /// After a row of a multi-node attempt finished: when every row of the attempt has, settles the run with the
    /// aggregate outcome; otherwise marks it `running` (asynchronous nodes are still working). Racing callers
    /// are fine: the run's compare-and-set lets one of them settle it.
    pub(crate) async fn conclude_many(
        self: &Arc<Self>,
        run_id: i64,
        attempt: u32,
        task: Option<Arc<LoadedTask>>,
    ) -> Option<RunRecord> {
        let rows: Vec<AttemptRecord> = match self.store.list_attempts(run_id).await {
            Ok(r) => r.into_iter().filter(|a| a.attempt == attempt).collect(),
            Err(e) => {
                tracing::warn!(run_id, error = %e, "could not list attempts; the timeout sweeper settles the run");
                return None;
            }
        };
        let run = match self.store.get_run(run_id).await {
            Ok(Some(r)) if matches!(r.state, RunState::Dispatching | RunState::Running) && r.attempts == attempt => r,
            Ok(r) => return r,
            Err(e) => {
                tracing::warn!(run_id, error = %e, "could not load the run");
                return None;
            }
        };
        if rows.iter().any(|a| a.state == AttemptState::Running) {
            if run.state == RunState::Dispatching {
                let t = Transition {
                    run_id,
                    from: vec![RunState::Dispatching],
                    to: RunState::Running,
                    patch: RunPatch { next_attempt_at: run.next_attempt_at.map(Some), ..RunPatch::default() },
                    fence: None,
                    now: now(),
                };
                if let Ok(r) = self.store.transition_run(t).await {
                    self.publish_run(&r, EventKind::Running { attempt });
                    return Some(r);
                }
            }
            return Some(run);
        }
        let policy = task.as_ref().map(|t| t.task.spec.dispatch.success).unwrap_or_default();
        let outcome = aggregate(&rows, policy);
        match self.settle(&run, attempt, outcome, task).await {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::debug!(run_id, error = %e, "the multi-node run was settled elsewhere");
                None
            }
        }
    }
}

fn timed_out_message(attempt: u32, timeout: Duration) -> String {
    format!("attempt {attempt} timed out after {}", humanize(timeout))
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 { format!("{}s", d.as_secs()) } else { format!("{}ms", d.as_millis()) }
}
