//! The shards this node holds: a map shard → [`Lease`].
//!
//! The set is dynamic. The lease loop ([`crate::scheduler`]) asks [`desired_shards`] which shards this node should
//! hold, acquires those it lacks, renews those it holds every `lease_ttl / 3` and releases those it should no
//! longer hold. A lease that is lost (`Fenced` on renew) is dropped together with its timer entries. Today a
//! single node desires every shard; cluster rebalancing only has to change [`desired_shards`].

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

/// The shards this node should hold. A single node holds them all; the cluster issue replaces this with a
/// rebalancing decision (e.g. rendezvous hashing over the live scheduler nodes).
pub(crate) fn desired_shards(shard_count: u32) -> Vec<u32> {
    (0..shard_count.max(1)).collect()
}
