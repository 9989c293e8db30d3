//! Scheduler-cluster membership and the shard assignment.
//!
//! Every scheduler node registers itself in the store's node registry (`NodeKind::Scheduler`, service
//! [`CLUSTER_SERVICE`]) with a time-to-live equal to the lease TTL and heartbeats it from the lease loop. Each
//! lease tick, a node lists the live scheduler nodes and computes, with [`assign_shards`], which shards it should
//! hold; every node computes the same answer from the same view, so the cluster converges without talking
//! node-to-node. The lease store stays the arbiter: a node only acquires a shard that is free or expired, so two
//! nodes with different views can disagree for a tick about who *should* hold a shard, never about who *does*.

use std::collections::{BTreeMap, HashSet};

use crate::shard::fnv1a64;

/// The registry service name of scheduler nodes.
pub const CLUSTER_SERVICE: &str = "rota";
/// Registry label: a random id of the running process, so a restarted node can tell its predecessor's record
/// (same node id, other instance) from its own.
pub const LABEL_INSTANCE: &str = "rota.instance";
/// Registry label: the node's shard count. Nodes with different shard counts must never share a store.
pub const LABEL_SHARDS: &str = "rota.shards";

/// Which node should hold each shard, as an index into `nodes` (one entry per shard, `shard_count` long).
///
/// Balanced rendezvous hashing: each shard ranks the nodes by a hash of (node id, shard) and goes to the
/// highest-ranked node still under its capacity (`floor(shard_count / nodes)`, one more for the first
/// `shard_count mod nodes` node ids), so loads differ by at most one
/// and a node joining or leaving moves a bounded share of the shards. Deterministic for a set of node ids
/// (their order in `nodes` does not matter). Empty when `nodes` is empty.
pub fn assign_shards(nodes: &[&str], shard_count: u32) -> Vec<usize> {
    if nodes.is_empty() {
        return Vec::new();
    }
    let shard_count = shard_count.max(1) as usize;
    // Capacities sum to exactly `shard_count`: `floor(S/N)` each, plus one for the first `S mod N` node ids.
    let (base, extra) = (shard_count / nodes.len(), shard_count % nodes.len());
    let mut by_id: Vec<usize> = (0..nodes.len()).collect();
    by_id.sort_unstable_by(|&a, &b| nodes[a].cmp(nodes[b]));
    let mut cap = vec![base; nodes.len()];
    for &i in by_id.iter().take(extra) {
        cap[i] += 1;
    }
    let mut load = vec![0usize; nodes.len()];
    let mut ranked: Vec<(u64, usize)> = Vec::with_capacity(nodes.len());
    (0..shard_count)
        .map(|shard| {
            ranked.clear();
            ranked.extend(nodes.iter().enumerate().map(|(i, id)| (score(id, shard as u32), i)));
            // Highest score first; ties (astronomically rare) by node id, so the order of `nodes` never matters.
            ranked.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| nodes[a.1].cmp(nodes[b.1])));
            let pick = ranked.iter().map(|&(_, i)| i).find(|&i| load[i] < cap[i]).expect("total capacity >= shards");
            load[pick] += 1;
            pick
        })
        .collect()
}

/// The shards `node` should hold among the live `nodes` (which must include it), ascending.
pub fn shards_for(node: &str, nodes: &[&str], shard_count: u32) -> Vec<u32> {
    let Some(me) = nodes.iter().position(|n| *n == node) else { return Vec::new() };
    assign_shards(nodes, shard_count)
        .into_iter()
        .enumerate()
        .filter(|&(_, owner)| owner == me)
        .map(|(shard, _)| shard as u32)
        .collect()
}

fn score(node: &str, shard: u32) -> u64 {
    // FNV-1a is weak in its low bits for short inputs; a SplitMix64 finalizer spreads it.
    let mut z = fnv1a64(&[node.as_bytes(), b"#", &shard.to_le_bytes()]);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// This node's view of the cluster, refreshed by the lease loop.
#[derive(Debug, Clone, Default)]
pub(crate) struct View {
    /// Ids of the live scheduler nodes (this one included), or `None` until the registry was read once.
    pub alive: Option<HashSet<String>>,
}

impl View {
    /// Whether `node` is alive in this view. Unknown (registry never read) counts as alive: the view is used to
    /// take over a dead node's work, and that must never happen on a guess.
    pub fn is_alive(&self, node: &str) -> bool {
        self.alive.as_ref().is_none_or(|a| a.contains(node))
    }
}

/// The labels a scheduler node registers with.
pub(crate) fn labels(instance: &str, shard_count: u32) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_INSTANCE.to_string(), instance.to_string()),
        (LABEL_SHARDS.to_string(), shard_count.to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loads(assign: &[usize], n: usize) -> Vec<usize> {
        let mut l = vec![0; n];
        for &o in assign {
            l[o] += 1;
        }
        l
    }

    #[test]
    fn every_shard_has_one_owner_and_loads_differ_by_at_most_one() {
        for n in 1..=9 {
            let ids: Vec<String> = (0..n).map(|i| format!("node-{i}")).collect();
            let nodes: Vec<&str> = ids.iter().map(String::as_str).collect();
            for shards in [1u32, 7, 64, 256, 1000] {
                let a = assign_shards(&nodes, shards);
                assert_eq!(a.len(), shards as usize);
                let l = loads(&a, n);
                let (min, max) = (*l.iter().min().unwrap(), *l.iter().max().unwrap());
                assert!(max - min <= 1 || (shards as usize) < n, "n={n} shards={shards} loads={l:?}");
                assert!(max <= (shards as usize).div_ceil(n));
            }
        }
    }

    #[test]
    fn the_order_of_nodes_does_not_matter() {
        let a = assign_shards(&["a", "b", "c"], 256);
        let b = assign_shards(&["c", "a", "b"], 256);
        let names_a: Vec<&str> = a.iter().map(|&i| ["a", "b", "c"][i]).collect();
        let names_b: Vec<&str> = b.iter().map(|&i| ["c", "a", "b"][i]).collect();
        assert_eq!(names_a, names_b);
    }

    #[test]
    fn shards_for_partitions_the_shards() {
        let nodes = ["rota-1", "rota-2", "rota-3"];
        let mut all: Vec<u32> = nodes.iter().flat_map(|n| shards_for(n, &nodes, 256)).collect();
        all.sort_unstable();
        assert_eq!(all, (0..256).collect::<Vec<_>>());
        assert!(shards_for("stranger", &nodes, 256).is_empty());
        assert_eq!(shards_for("solo", &["solo"], 16), (0..16).collect::<Vec<_>>());
    }

    #[test]
    fn a_join_or_leave_moves_a_bounded_share() {
        let three = ["n1", "n2", "n3"];
        let four = ["n1", "n2", "n3", "n4"];
        let owner = |nodes: &[&str], s: usize| nodes[assign_shards(nodes, 256)[s]].to_string();
        let moved_join = (0..256).filter(|&s| owner(&three, s) != owner(&four, s)).count();
        // Ideal is 64 (a quarter moves to the new node); the capacity bound adds some churn, never a reshuffle.
        assert!(moved_join <= 128, "a join moved {moved_join} of 256 shards");
        let two = ["n1", "n3"];
        let moved_leave = (0..256).filter(|&s| owner(&three, s) != owner(&two, s)).count();
        assert!(moved_leave <= 128, "a leave moved {moved_leave} of 256 shards");
        // Shards of the node that left all move, to survivors.
        assert!((0..256).all(|s| owner(&two, s) != "n2"));
    }

    #[test]
    fn unknown_view_counts_everyone_alive() {
        let v = View::default();
        assert!(v.is_alive("anyone"));
        let v = View { alive: Some(HashSet::from(["a".to_string()])) };
        assert!(v.is_alive("a"));
        assert!(!v.is_alive("b"));
    }
}
