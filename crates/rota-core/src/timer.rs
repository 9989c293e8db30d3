//! The in-memory timer: what is due soon, ordered by instant.
//!
//! It holds two kinds of entries, deduplicated by key: *fire* entries (a task whose `next_fire_at` falls within
//! the look-ahead window; the entry's instant is that `next_fire_at`, which the fire compare-and-sets against) and
//! *run* entries (a `scheduled` run whose `next_attempt_at` falls within the window: a retry or a recovered
//! dispatch). It is a cache of the store's due index and pending queue, rebuilt by scanning: losing it loses
//! nothing, and its size follows what is due within the window, not the number of tasks.
//!
//! One timer task sleeps until the earliest entry; [`Timer::schedule`] wakes it (through a [`Notify`]) when an
//! earlier entry arrives.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

/// What a timer entry is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum TimerKey {
    /// Fire the task with this id.
    Fire(i64),
    /// Dispatch the (scheduled) run with this id.
    Run(i64),
}

/// A popped entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Due {
    pub key: TimerKey,
    pub at: DateTime<Utc>,
    pub shard: u32,
}

#[derive(Default)]
struct State {
    queue: BTreeSet<(DateTime<Utc>, TimerKey)>,
    index: HashMap<TimerKey, (DateTime<Utc>, u32)>,
}

#[derive(Default)]
pub(crate) struct Timer {
    state: Mutex<State>,
    notify: Notify,
}

impl Timer {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves the maps consistent (every method updates both or neither before
        // any operation that can panic), so a poisoned lock is safe to reuse.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Inserts or moves an entry. Wakes the timer task when the entry becomes the earliest.
    pub fn schedule(&self, key: TimerKey, at: DateTime<Utc>, shard: u32) {
        let wake = {
            let mut st = self.lock();
            if let Some((old, _)) = st.index.insert(key, (at, shard)) {
                st.queue.remove(&(old, key));
            }
            st.queue.insert((at, key));
            st.queue.first().is_some_and(|(first, k)| *first == at && *k == key)
        };
        if wake {
            self.notify.notify_one();
        }
    }

    pub fn remove(&self, key: TimerKey) {
        let mut st = self.lock();
        if let Some((at, _)) = st.index.remove(&key) {
            st.queue.remove(&(at, key));
        }
    }

    #[cfg(test)]
    pub fn contains(&self, key: TimerKey) -> bool {
        self.lock().index.contains_key(&key)
    }

    /// Drops every entry of `shard` (the shard's lease was lost).
    pub fn remove_shard(&self, shard: u32) {
        let mut st = self.lock();
        let gone: Vec<(TimerKey, DateTime<Utc>)> =
            st.index.iter().filter(|(_, (_, s))| *s == shard).map(|(k, (at, _))| (*k, *at)).collect();
        for (key, at) in gone {
            st.index.remove(&key);
            st.queue.remove(&(at, key));
        }
    }

    /// Removes and returns every entry due at or before `now`, earliest first.
    pub fn pop_due(&self, now: DateTime<Utc>) -> Vec<Due> {
        let mut st = self.lock();
        let mut out = Vec::new();
        while let Some(&(at, key)) = st.queue.first() {
            if at > now {
                break;
            }
            st.queue.pop_first();
            let shard = st.index.remove(&key).map(|(_, s)| s).unwrap_or_default();
            out.push(Due { key, at, shard });
        }
        out
    }

    /// The earliest instant in the timer.
    pub fn next_at(&self) -> Option<DateTime<Utc>> {
        self.lock().queue.first().map(|(at, _)| *at)
    }

    pub fn len(&self) -> usize {
        self.lock().index.len()
    }

    /// Resolves when an entry earlier than the previous earliest was scheduled (a wake-up is never lost: it is
    /// stored when nobody waits).
    pub async fn changed(&self) {
        self.notify.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn dedups_by_key_and_pops_in_order() {
        let timer = Timer::default();
        timer.schedule(TimerKey::Fire(1), t(5), 0);
        timer.schedule(TimerKey::Fire(2), t(3), 1);
        timer.schedule(TimerKey::Run(1), t(4), 0);
        timer.schedule(TimerKey::Fire(1), t(2), 0); // moves
        assert_eq!(timer.len(), 3);
        assert_eq!(timer.next_at(), Some(t(2)));
        let due = timer.pop_due(t(3));
        assert_eq!(due.iter().map(|d| d.key).collect::<Vec<_>>(), vec![TimerKey::Fire(1), TimerKey::Fire(2)]);
        assert_eq!(due[1].shard, 1);
        assert_eq!(timer.len(), 1);
        assert!(timer.contains(TimerKey::Run(1)));
        timer.remove(TimerKey::Run(1));
        assert_eq!(timer.len(), 0);
        assert_eq!(timer.next_at(), None);
    }

    #[test]
    fn remove_shard_drops_only_that_shard() {
        let timer = Timer::default();
        timer.schedule(TimerKey::Fire(1), t(1), 7);
        timer.schedule(TimerKey::Run(9), t(2), 7);
        timer.schedule(TimerKey::Fire(2), t(3), 8);
        timer.remove_shard(7);
        assert_eq!(timer.len(), 1);
        assert_eq!(timer.pop_due(t(10)).len(), 1);
    }

    #[tokio::test]
    async fn earlier_entry_wakes_the_waiter() {
        let timer = std::sync::Arc::new(Timer::default());
        timer.schedule(TimerKey::Fire(1), t(10), 0);
        // The first schedule stored a wake-up permit; consume it.
        timer.changed().await;
        let waiter = {
            let timer = timer.clone();
            tokio::spawn(async move { timer.changed().await })
        };
        tokio::task::yield_now().await;
        timer.schedule(TimerKey::Fire(2), t(1), 0);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await.unwrap().unwrap();
    }
}
