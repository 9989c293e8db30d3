//! Firing a task: misfire and concurrency policies, one (group-committed) `store.fire` per firing.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rota_spec::ConcurrencyPolicy;
use rota_store::{FireRequest, NewRun, RunRecord, RunState, StoreError};
use serde_json::Value;

use crate::events::EventKind;
use crate::plan::{PlannedRun, plan_fire, policy_name};
use crate::scheduler::{Inner, now};

/// What the concurrency policy decides for one new run.
pub(crate) struct Admission {
    /// `Some`: the new run is stored `skipped` with this reason.
    pub skip_reason: Option<String>,
    /// Runs to cancel once the new run is stored (`replace`).
    pub cancel: Vec<RunRecord>,
}

/// The concurrency policy for one new run, given the task's non-terminal runs.
pub(crate) fn admit_one(policy: ConcurrencyPolicy, active: &[RunRecord]) -> Admission {
    match policy {
        ConcurrencyPolicy::Allow => Admission { skip_reason: None, cancel: Vec::new() },
        ConcurrencyPolicy::Forbid => Admission {
            skip_reason: active.first().map(|r| format!("concurrency: forbid (run {} still active)", r.id)),
            cancel: Vec::new(),
        },
        ConcurrencyPolicy::Replace => Admission { skip_reason: None, cancel: active.to_vec() },
    }
}

/// The concurrency policy for the runs of one firing (several for a `run_all` catch-up). With `forbid`, at most
/// the oldest new run starts (none if a run is active); with `replace`, only the newest starts and the active
/// runs are cancelled.
pub(crate) fn admit_batch(
    policy: ConcurrencyPolicy,
    mut runs: Vec<PlannedRun>,
    active: &[RunRecord],
) -> (Vec<PlannedRun>, Vec<RunRecord>) {
    let runnable: Vec<usize> =
        runs.iter().enumerate().filter(|(_, r)| r.skip_reason.is_none()).map(|(i, _)| i).collect();
    match policy {
        ConcurrencyPolicy::Allow => (runs, Vec::new()),
        ConcurrencyPolicy::Forbid => {
            let blocking = active.first().map(|r| r.id);
            let mut first_started: Option<DateTime<Utc>> = None;
            for i in runnable {
                if let Some(id) = blocking {
                    runs[i].skip_reason = Some(format!("concurrency: forbid (run {id} still active)"));
                } else if let Some(at) = first_started {
                    runs[i].skip_reason = Some(format!(
                        "concurrency: forbid (the catch-up run for {} is active)",
                        at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                    ));
                } else {
                    first_started = Some(runs[i].at);
                }
            }
            (runs, Vec::new())
        }
        ConcurrencyPolicy::Replace => {
            if let Some((&last, earlier)) = runnable.split_last() {
                let last_at = runs[last].at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
                for &i in earlier {
                    runs[i].skip_reason =
                        Some(format!("concurrency: replace (superseded by the catch-up run for {last_at})"));
                }
                (runs, active.to_vec())
            } else {
                (runs, Vec::new())
            }
        }
    }
}

impl Inner {
    /// Fires the task `task_id` for the instant `expected` (its `next_fire_at` from the due index).
    ///
    /// Exactly once: the runs and the new `next_fire_at` are written by one `store.fire` call that compare-and-sets
    /// `next_fire_at` against `expected`, inserts runs unique per (task, instant) and checks the shard's fence.
    pub(crate) async fn fire_task(self: &Arc<Self>, task_id: i64, expected: DateTime<Utc>, shard: u32) {
        let Some(fence) = self.leases.fence(shard) else { return };
        // The parsed spec from the cache when there is one (kept current by `apply` and by the due scan, which drops
        // a cached version that differs from the due index's); else one read of the task record. A task paused,
        // advanced or deleted meanwhile is caught atomically by the fire's compare-and-set (`Conflict`, then the
        // task is re-read) or `NotFound`.
        let task = match self.specs.get(task_id) {
            Some(t) => t,
            None => {
                let rec = match self.store.get_task_by_id(task_id).await {
                    Ok(Some(rec)) => rec,
                    Ok(None) => return, // deleted
                    Err(e) => {
                        tracing::warn!(task_id, error = %e, "could not load task to fire; the next scan retries");
                        return;
                    }
                };
                if rec.paused {
                    return;
                }
                if rec.next_fire_at != Some(expected) {
                    // Moved meanwhile (applied, resumed, fired elsewhere): follow the store.
                    self.refresh_fire_timer(&rec);
                    return;
                }
                match self.specs.load(&rec) {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::error!(task = %rec.key(), error = %e, "cannot fire task: its stored spec does not parse");
                        return;
                    }
                }
            }
        };
        let namespace = task.task.metadata.namespace.clone();
        let name = task.task.metadata.name.clone();
        let key = format!("{namespace}/{name}");
        let (Some(schedule), Some(spec_schedule)) = (task.schedule.as_ref(), task.task.spec.schedule.as_ref()) else {
            return;
        };
        let now = now();
        let plan = plan_fire(schedule, spec_schedule, expected, now, self.config.misfire_threshold);
        let policy = spec_schedule.concurrency;
        let wants_run = plan.runs.iter().any(|r| r.skip_reason.is_none());
        let active = if wants_run && policy != ConcurrencyPolicy::Allow {
            match self.store.active_runs_of_task(task_id).await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(task = %key, error = %e, "could not check active runs; the next scan retries");
                    return;
                }
            }
        } else {
            Vec::new()
        };
        let (runs, to_cancel) = admit_batch(policy, plan.runs, &active);
        let params = Value::Object(task.task.spec.params.clone());
        let new_runs: Vec<NewRun> = runs
            .into_iter()
            .map(|r| NewRun {
                task_id,
                namespace: namespace.clone(),
                name: name.clone(),
                task_version: task.version,
                shard,
                scheduled_at: r.at,
                trigger: r.trigger,
                state: if r.skip_reason.is_some() { RunState::Skipped } else { RunState::Scheduled },
                next_attempt_at: None,
                params: params.clone(),
                reason: r.skip_reason,
            })
            .collect();
        let req = FireRequest {
            task_id,
            expected_next_fire_at: Some(expected),
            new_next_fire_at: plan.new_next_fire_at,
            runs: new_runs,
            fence: Some(fence),
            now,
        };
        match self.writes.fire(req).await {
            Ok(out) => {
                if let Some(m) = &plan.misfire {
                    self.publish_task(
                        &key,
                        EventKind::Misfired {
                            missed: u32::try_from(m.missed).unwrap_or(u32::MAX),
                            policy: policy_name(m.policy).to_string(),
                        },
                    );
                }
                for r in &out.inserted {
                    self.publish_new_run(r);
                }
                if !out.duplicates.is_empty() {
                    tracing::debug!(task = %key, duplicates = ?out.duplicates, "runs existed already");
                }
                let started: Vec<&RunRecord> = out.inserted.iter().filter(|r| r.state == RunState::Scheduled).collect();
                if let Some(newest) = started.last() {
                    let reason = format!("concurrency: replace (superseded by run {})", newest.id);
                    for old in &to_cancel {
                        self.cancel_quietly(old.id, &reason).await;
                    }
                }
                for r in started {
                    self.spawn_dispatch(r.id, Some(r.clone()), Some(task.clone()));
                }
                if let Some(next) = plan.new_next_fire_at {
                    self.schedule_fire(task_id, next, shard);
                }
            }
            Err(StoreError::Conflict { .. }) => {
                // Someone else advanced it (or the task changed): follow the store.
                if let Ok(Some(rec)) = self.store.get_task_by_id(task_id).await {
                    self.specs.forget_if_stale(rec.id, rec.version);
                    self.refresh_fire_timer(&rec);
                }
            }
            Err(StoreError::Fenced { .. }) => self.lose_shard(shard, fence.epoch),
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => tracing::warn!(task = %key, error = %e, "fire failed; the next scan retries"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use rota_store::TriggerKind;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    fn run(id: i64) -> RunRecord {
        RunRecord {
            id,
            task_id: 1,
            namespace: "ns".into(),
            name: "t".into(),
            task_version: 1,
            shard: 0,
            scheduled_at: t(0),
            trigger: TriggerKind::Schedule,
            state: RunState::Running,
            attempts: 1,
            next_attempt_at: None,
            params: Value::Null,
            output: None,
            error: None,
            reason: None,
            owner: None,
            created_at: t(0),
            started_at: None,
            finished_at: None,
            updated_at: t(0),
        }
    }

    fn planned(ats: &[i64]) -> Vec<PlannedRun> {
        ats.iter().map(|s| PlannedRun { at: t(*s), trigger: TriggerKind::CatchUp, skip_reason: None }).collect()
    }

    #[test]
    fn forbid_skips_everything_while_a_run_is_active() {
        let (runs, cancel) = admit_batch(ConcurrencyPolicy::Forbid, planned(&[1, 2]), &[run(7)]);
        assert!(cancel.is_empty());
        assert!(runs.iter().all(|r| r.skip_reason.as_deref() == Some("concurrency: forbid (run 7 still active)")));
    }

    #[test]
    fn forbid_starts_only_the_oldest_of_a_batch() {
        let (runs, _) = admit_batch(ConcurrencyPolicy::Forbid, planned(&[1, 2, 3]), &[]);
        assert!(runs[0].skip_reason.is_none());
        assert!(runs[1].skip_reason.is_some() && runs[2].skip_reason.is_some());
    }

    #[test]
    fn replace_starts_the_newest_and_cancels_the_active() {
        let (runs, cancel) = admit_batch(ConcurrencyPolicy::Replace, planned(&[1, 2]), &[run(7)]);
        assert_eq!(cancel.iter().map(|r| r.id).collect::<Vec<_>>(), vec![7]);
        assert!(runs[0].skip_reason.is_some());
        assert!(runs[1].skip_reason.is_none());
        let a = admit_one(ConcurrencyPolicy::Forbid, &[run(3)]);
        assert_eq!(a.skip_reason.as_deref(), Some("concurrency: forbid (run 3 still active)"));
        assert!(admit_one(ConcurrencyPolicy::Allow, &[run(3)]).skip_reason.is_none());
    }
}
