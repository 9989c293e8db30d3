//! The shards this node holds: a map shard → [`Lease`].
//!
//! The set is dynamic. The lease loop ([`crate::scheduler`]) asks [`crate::membership`] which shards this node
//! should hold, acquires those it lacks, renews those it holds every `lease_ttl / 3` and releases those it should
//! no longer hold. A lease that is lost (`Fenced` on renew or on a fenced write) is dropped together with its timer
//! entries.

use std::collections::HashMap;
use std::sync::Mutex;

use rota_store::{Fence, Lease};

#[derive(Default)]
pub(crate) struct Leases {
    held: Mutex<HashMap<u32, Lease>>,
}

impl Leases {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Lease>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The fence of `shard`, when this node holds it.
    pub fn fence(&self, shard: u32) -> Option<Fence> {
        self.lock().get(&shard).map(Lease::fence)
    }

    pub fn holds(&self, shard: u32) -> bool {
        self.lock().contains_key(&shard)
    }

    /// Whether `shard` is held and its lease has not expired by this node's clock at `now` (a node that was paused
    /// past its lease must not send work before the lease tick finds out whether it still holds it).
    pub fn valid_at(&self, shard: u32, now: chrono::DateTime<chrono::Utc>) -> bool {
        self.lock().get(&shard).is_some_and(|l| l.expires_at > now)
    }

    /// The held shards, ascending.
    pub fn shards(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.lock().keys().copied().collect();
        v.sort_unstable();
        v
    }

    pub fn get(&self, shard: u32) -> Option<Lease> {
        self.lock().get(&shard).cloned()
    }

    /// Records an acquired or renewed lease; returns whether the shard is new to this node.
    pub fn put(&self, lease: Lease) -> bool {
        self.lock().insert(lease.shard, lease).is_none()
    }

    /// Forgets a shard only if it is still held at `epoch` (a concurrent re-acquisition wins).
    pub fn remove_if_epoch(&self, shard: u32, epoch: i64) -> bool {
        let mut held = self.lock();
        if held.get(&shard).is_some_and(|l| l.epoch == epoch) {
            held.remove(&shard);
            true
        } else {
            false
        }
    }

    pub fn take_all(&self) -> Vec<Lease> {
        self.lock().drain().map(|(_, l)| l).collect()
    }
}
