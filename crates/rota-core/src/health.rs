//! This scheduler node's view of executor nodes' health: dispatches in flight per node and circuit breakers.
//!
//! Kept in memory, per scheduler node (a node that fails for one scheduler is avoided by it; the others learn
//! on their own). A breaker opens after `threshold` consecutive failed dispatches to a node (the dispatch failed
//! or timed out — a run that the executor answered "failed" is the task's failure, not the node's) and stays
//! open for `cool_down`; then the node is tried again (half-open): a success closes the breaker, a failure opens
//! it for another `cool_down`.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::scheduler::lock;

#[derive(Debug, Default, Clone, Copy)]
struct Breaker {
    consecutive_failures: u32,
    open_until: Option<Instant>,
}

/// In-flight counts and breakers by executor node id.
pub(crate) struct NodeHealth {
    threshold: u32,
    cool_down: Duration,
    breakers: Mutex<HashMap<String, Breaker>>,
    active: Mutex<HashMap<String, u32>>,
}

impl NodeHealth {
    pub fn new(threshold: u32, cool_down: Duration) -> Self {
        NodeHealth {
            threshold: threshold.max(1),
            cool_down,
            breakers: Mutex::new(HashMap::new()),
            active: Mutex::new(HashMap::new()),
        }
    }

    /// Nodes whose breaker is open now.
    pub fn cooling(&self) -> HashSet<String> {
        let now = Instant::now();
        lock(&self.breakers)
            .iter()
            .filter(|(_, b)| b.open_until.is_some_and(|t| t > now))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Dispatches in flight per node.
    pub fn active(&self) -> HashMap<String, u32> {
        lock(&self.active).clone()
    }

    /// Counts a dispatch to `node` as in flight until the guard drops.
    pub fn start(&self, node: &str) -> ActiveGuard<'_> {
        *lock(&self.active).entry(node.to_string()).or_insert(0) += 1;
        ActiveGuard { health: self, node: node.to_string() }
    }

    /// Records the outcome of a dispatch to `node`: `ok` = the node answered (with any result).
    pub fn record(&self, node: &str, ok: bool) {
        let mut breakers = lock(&self.breakers);
        if ok {
            breakers.remove(node);
            return;
        }
        let b = breakers.entry(node.to_string()).or_default();
        b.consecutive_failures = b.consecutive_failures.saturating_add(1);
        if b.consecutive_failures >= self.threshold {
            let was_open = b.open_until.is_some_and(|t| t > Instant::now());
            b.open_until = Some(Instant::now() + self.cool_down);
            if !was_open {
                tracing::warn!(node, failures = b.consecutive_failures, cool_down = ?self.cool_down,
                    "executor node keeps failing; avoiding it for the cool-down");
            }
        }
    }
}

/// Decrements a node's in-flight count on drop.
pub(crate) struct ActiveGuard<'a> {
    health: &'a NodeHealth,
    node: String,
}

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        let mut active = lock(&self.health.active);
        if let Some(n) = active.get_mut(&self.node) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                active.remove(&self.node);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_after_threshold_and_closes_on_success() {
        let h = NodeHealth::new(3, Duration::from_secs(60));
        h.record("a", false);
        h.record("a", false);
        assert!(h.cooling().is_empty());
        h.record("a", false);
        assert_eq!(h.cooling(), HashSet::from(["a".to_string()]));
        h.record("a", true);
        assert!(h.cooling().is_empty());
        // A success in between resets the count.
        h.record("b", false);
        h.record("b", false);
        h.record("b", true);
        h.record("b", false);
        assert!(h.cooling().is_empty());
    }

    #[test]
    fn cool_down_expires() {
        let h = NodeHealth::new(1, Duration::from_millis(1));
        h.record("a", false);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !h.cooling().is_empty() {
            assert!(Instant::now() < deadline, "the cool-down never ended");
            std::thread::yield_now();
        }
    }

    #[test]
    fn active_counts_follow_guards() {
        let h = NodeHealth::new(3, Duration::from_secs(1));
        let g1 = h.start("a");
        let g2 = h.start("a");
        let _g3 = h.start("b");
        assert_eq!(h.active()["a"], 2);
        drop(g1);
        assert_eq!(h.active()["a"], 1);
        drop(g2);
        assert!(!h.active().contains_key("a"));
        assert_eq!(h.active()["b"], 1);
    }
}
