//! Rate limiting of failed authentication, per client IP address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many failed authentications a client address may have in a window before it is refused for a cool-down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureLimit {
    /// Failures allowed per window (default 10); `0` disables the limit.
    pub max_failures: u32,
    /// The window (default 1 minute).
    pub window: Duration,
    /// How long a client that reached the limit is refused (`429 rate_limited`; default 1 minute).
    pub cooldown: Duration,
}

impl Default for FailureLimit {
    fn default() -> Self {
        FailureLimit { max_failures: 10, window: Duration::from_secs(60), cooldown: Duration::from_secs(60) }
    }
}

impl FailureLimit {
    /// No limit.
    pub fn unlimited() -> Self {
        FailureLimit { max_failures: 0, ..FailureLimit::default() }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    window_start: Instant,
    failures: u32,
    blocked_until: Option<Instant>,
}

/// Counts failed authentications per client address. Requests without a known address share one bucket.
#[derive(Debug)]
pub struct FailureLimiter {
    limit: FailureLimit,
    entries: Mutex<HashMap<Option<IpAddr>, Entry>>,
}

/// Addresses remembered at most (older entries are dropped first when the map is full).
const MAX_ENTRIES: usize = 100_000;

impl FailureLimiter {
    pub fn new(limit: FailureLimit) -> Self {
        FailureLimiter { limit, entries: Mutex::new(HashMap::new()) }
    }

    /// When `addr` is refused, how long it still is.
    pub fn blocked(&self, addr: Option<IpAddr>) -> Option<Duration> {
        if self.limit.max_failures == 0 {
            return None;
        }
        let now = Instant::now();
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.get(&addr).and_then(|e| e.blocked_until).filter(|until| *until > now).map(|until| until - now)
    }

    /// Records a failed authentication of `addr`; returns whether the address is now refused.
    pub fn record_failure(&self, addr: Option<IpAddr>) -> bool {
        if self.limit.max_failures == 0 {
            return false;
        }
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&addr) {
            let window = self.limit.window.max(self.limit.cooldown);
            entries
                .retain(|_, e| now.duration_since(e.window_start) < window || e.blocked_until.is_some_and(|u| u > now));
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        let e = entries.entry(addr).or_insert(Entry { window_start: now, failures: 0, blocked_until: None });
        if now.duration_since(e.window_start) >= self.limit.window {
            e.window_start = now;
            e.failures = 0;
        }
        e.failures += 1;
        if e.failures >= self.limit.max_failures {
            e.blocked_until = Some(now + self.limit.cooldown);
            e.failures = 0;
            e.window_start = now;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_blocks_one_address_only() {
        let l = FailureLimiter::new(FailureLimit {
            max_failures: 3,
            window: Duration::from_secs(60),
            cooldown: Duration::from_secs(60),
        });
        let a: Option<IpAddr> = Some("10.0.0.1".parse().unwrap());
        let b: Option<IpAddr> = Some("10.0.0.2".parse().unwrap());
        assert!(!l.record_failure(a));
        assert!(!l.record_failure(a));
        assert!(l.blocked(a).is_none());
        assert!(l.record_failure(a));
        assert!(l.blocked(a).is_some());
        assert!(l.blocked(b).is_none());
        assert!(FailureLimiter::new(FailureLimit::unlimited()).blocked(a).is_none());
    }
}
