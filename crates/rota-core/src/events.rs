//! The one stream every lifecycle change goes through.
//!
//! The core publishes an [`Event`] for each change of a run or task (scheduled, dispatched, succeeded, failed,
//! retried, timed out, misfired, skipped, cancelled, …). Logging, metrics, tracing and alerting subscribe here and
//! nowhere else, so instrumentation plugs into one place.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::broadcast;

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// A run was created (by the timer, a manual trigger, a dependency or a catch-up).
    Scheduled {
        trigger: rota_store::TriggerKind,
    },
    /// An attempt was sent to a node.
    Dispatched {
        attempt: u32,
        node: String,
    },
    /// The executor accepted the attempt and will report later.
    Running {
        attempt: u32,
    },
    Succeeded {
        attempt: u32,
    },
    Failed {
        attempt: u32,
        error: String,
    },
    /// A failed or timed-out attempt will be retried at `next_attempt_at`.
    Retried {
        attempt: u32,
        next_attempt_at: DateTime<Utc>,
    },
    TimedOut {
        attempt: u32,
    },
    /// Fires fell due while nobody could fire them; `policy` tells what was done.
    Misfired {
        missed: u32,
        policy: String,
    },
    Skipped {
        reason: String,
    },
    Cancelled {
        reason: String,
    },
    TaskApplied {
        version: i64,
    },
    TaskDeleted,
    TaskPaused,
    TaskResumed,
}

impl EventKind {
    /// A stable short name (`scheduled`, `dispatched`, …) for metrics labels and logs.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Scheduled { .. } => "scheduled",
            EventKind::Dispatched { .. } => "dispatched",
            EventKind::Running { .. } => "running",
            EventKind::Succeeded { .. } => "succeeded",
            EventKind::Failed { .. } => "failed",
            EventKind::Retried { .. } => "retried",
            EventKind::TimedOut { .. } => "timed_out",
            EventKind::Misfired { .. } => "misfired",
            EventKind::Skipped { .. } => "skipped",
            EventKind::Cancelled { .. } => "cancelled",
            EventKind::TaskApplied { .. } => "task_applied",
            EventKind::TaskDeleted => "task_deleted",
            EventKind::TaskPaused => "task_paused",
            EventKind::TaskResumed => "task_resumed",
        }
    }
}

/// One lifecycle event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub at: DateTime<Utc>,
    /// `namespace/name`.
    pub task: String,
    pub run_id: Option<i64>,
    pub scheduled_at: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// Fan-out of events to any number of subscribers. Slow subscribers lose the oldest events (and see a `Lagged`
/// error from the receiver), they never slow the scheduler down.
#[derive(Debug, Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Event>,
}

impl EventBus {
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(16));
        EventBus { tx }
    }

    pub fn publish(&self, event: Event) {
        // No subscribers is fine.
        let _ = self.tx.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus::new(65_536)
    }
}
