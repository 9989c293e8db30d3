//! Parsed task specs, cached by (task id, version).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rota_spec::{CompiledSchedule, ConcurrencyPolicy, Task};
use rota_store::TaskRecord;

use crate::{CoreError, CoreResult};

/// A stored task's spec, parsed and compiled once per version.
pub(crate) struct LoadedTask {
    pub id: i64,
    pub version: i64,
    pub task: Task,
    /// `None` for a dependency-only task (no `spec.schedule`).
    pub schedule: Option<CompiledSchedule>,
    /// Round-robin position among candidates.
    round_robin: AtomicUsize,
}

impl LoadedTask {
    pub fn new(id: i64, version: i64, task: Task) -> Result<Self, String> {
        let schedule = task.compiled_schedule().map_err(|e| e.to_string())?;
        Ok(LoadedTask { id, version, task, schedule, round_robin: AtomicUsize::new(0) })
    }

    pub fn from_record(rec: &TaskRecord) -> Result<Self, String> {
        let task: Task = serde_json::from_value(rec.spec.clone()).map_err(|e| e.to_string())?;
        Self::new(rec.id, rec.version, task)
    }

    pub fn concurrency(&self) -> ConcurrencyPolicy {
        self.task.spec.schedule.as_ref().map(|s| s.concurrency).unwrap_or_default()
    }

    /// The attempt timeout: `spec.timeout`, else the node's default.
    pub fn timeout(&self, default: Duration) -> Duration {
        self.task.spec.timeout.map(|d| d.as_std()).unwrap_or(default)
    }

    /// The task's round-robin position (advanced by every node choice).
    pub fn next_round_robin(&self) -> usize {
        self.round_robin.fetch_add(1, Ordering::Relaxed)
    }
}

/// Parsed specs by task id (one version each), bounded: memory follows what fires, not how many tasks exist.
pub(crate) struct SpecCache {
    capacity: usize,
    map: Mutex<HashMap<i64, std::sync::Arc<LoadedTask>>>,
}

impl SpecCache {
    pub fn new(capacity: usize) -> Self {
        SpecCache { capacity: capacity.max(1), map: Mutex::new(HashMap::new()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, std::sync::Arc<LoadedTask>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn put(&self, t: std::sync::Arc<LoadedTask>) {
        let mut map = self.lock();
        if map.len() >= self.capacity && !map.contains_key(&t.id) {
            // Evict an arbitrary entry; a miss only costs a JSON parse.
            if let Some(k) = map.keys().next().copied() {
                map.remove(&k);
            }
        }
        map.insert(t.id, t);
    }

    /// The cached spec of task `id`, whatever its version.
    pub fn get(&self, id: i64) -> Option<std::sync::Arc<LoadedTask>> {
        self.lock().get(&id).cloned()
    }

    /// Drops the cached spec of task `id` unless it is `version`.
    pub fn forget_if_stale(&self, id: i64, version: i64) {
        let mut map = self.lock();
        if map.get(&id).is_some_and(|t| t.version != version) {
            map.remove(&id);
        }
    }

    pub fn remove(&self, id: i64) {
        self.lock().remove(&id);
    }

    /// The parsed spec of `rec` (cached by id and version).
    pub fn load(&self, rec: &TaskRecord) -> CoreResult<std::sync::Arc<LoadedTask>> {
        if let Some(t) = self.lock().get(&rec.id).filter(|t| t.version == rec.version) {
            return Ok(t.clone());
        }
        let t = std::sync::Arc::new(LoadedTask::from_record(rec).map_err(|reason| CoreError::InvalidArgument {
            field: format!("stored spec of task {} (version {})", rec.key(), rec.version),
            reason,
        })?);
        self.put(t.clone());
        Ok(t)
    }
}
