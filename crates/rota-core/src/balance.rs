//! Choosing the executor node(s) of an attempt: filters, dispatch modes and load-balancing strategies.
//!
//! Pure (no I/O): the caller gathers the candidates (from discovery or a static list) and this node's view of
//! them (dispatches in flight per node, open circuit breakers, nodes a previous attempt used), and [`select`]
//! decides. The order of candidates is the source's order; `first`, `last`, `failover` and `busy_over` use it.
//!
//! Filters, in order:
//! 1. draining nodes and nodes speaking another protocol than the task's target are never chosen;
//! 2. `dispatch.selector`: only nodes whose labels contain all of its pairs;
//! 3. nodes in cool-down (circuit open) are avoided — except by `first`/`last`, which name a fixed node, and by
//!    `broadcast`/`sharded`, which go to every node — unless that would leave none;
//! 4. with `retry.switchNode`, nodes that ran an earlier attempt of the run are avoided unless that would leave
//!    none.
//!
//! Then the mode: `unicast` picks one node by the strategy, `multicast` picks `count` (default all that passed the
//! filters) distinct nodes by the strategy, `broadcast` takes every node, `sharded` takes every node (or exactly
//! `count`, failing when fewer exist) and numbers them `0..total` in order.

use std::collections::{HashMap, HashSet};

use rota_spec::{DispatchMode, LoadBalance};
use serde_json::{Map, Value};

use crate::discovery::Candidate;

/// This scheduler node's view of the candidates when it chooses.
#[derive(Debug, Default)]
pub(crate) struct SelectState {
    /// A per-task counter (round robin advances it).
    pub round_robin: usize,
    /// Dispatches in flight from this scheduler node, by executor node id (`least_active`, `busy_over`).
    pub active: HashMap<String, u32>,
    /// Executor nodes in cool-down (circuit open).
    pub cooling: HashSet<String>,
    /// Executor nodes that ran an earlier attempt of this run (avoided with `switchNode`).
    pub used: HashSet<String>,
}

/// One chosen node with its shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chosen {
    pub node: Candidate,
    pub shard_index: u32,
    pub shard_total: u32,
}

/// The protocol nodes must speak for a target kind.
pub(crate) fn protocol_for(target: &rota_spec::Target) -> &'static str {
    if target.grpc.is_some() { "grpc" } else { "http" }
}

/// The value `consistent_hash` hashes: the `hashKey` param (strings as they are, other JSON as its text), or
/// the task's key when the param is absent.
pub(crate) fn hash_value(hash_key: Option<&str>, params: &Map<String, Value>, task_key: &str) -> String {
    match hash_key.and_then(|k| params.get(k)) {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => task_key.to_string(),
    }
}

/// Chooses the nodes of one attempt. `Err` carries a message for the attempt's error (no node fits).
pub(crate) fn select(
    spec: &rota_spec::Dispatch,
    protocol: &str,
    candidates: Vec<Candidate>,
    hash: &str,
    state: &SelectState,
    switch_node: bool,
) -> Result<Vec<Chosen>, String> {
    let total = candidates.len();
    let mut nodes: Vec<Candidate> = candidates.into_iter().filter(|c| !c.draining && c.protocol == protocol).collect();
    if nodes.is_empty() {
        return Err(if total == 0 {
            "no live executor node".to_string()
        } else {
            format!("none of the {total} executor node(s) is active and speaks {protocol}")
        });
    }
    if !spec.selector.is_empty() {
        nodes.retain(|c| spec.selector.iter().all(|(k, v)| c.labels.get(k) == Some(v)));
        if nodes.is_empty() {
            return Err(format!("no executor node matches the selector {}", selector_text(spec)));
        }
    }
    let fans_out = matches!(spec.mode, DispatchMode::Broadcast | DispatchMode::Sharded);
    let fixed = matches!(spec.load_balance, LoadBalance::First | LoadBalance::Last);
    if !fans_out && !fixed {
        prefer(&mut nodes, |c| !state.cooling.contains(&c.id));
    }
    if switch_node && !fans_out {
        prefer(&mut nodes, |c| !state.used.contains(&c.id));
    }

    let picked = match spec.mode {
        DispatchMode::Broadcast => nodes,
        DispatchMode::Sharded => match spec.count {
            Some(n) if (n as usize) > nodes.len() => {
                return Err(format!("sharded dispatch needs {n} nodes; only {} are available", nodes.len()));
            }
            Some(n) => nodes.into_iter().take(n as usize).collect(),
            None => nodes,
        },
        DispatchMode::Unicast => pick(spec.load_balance, nodes, 1, hash, state)?,
        DispatchMode::Multicast => {
            let n = spec.count.map_or(nodes.len(), |n| n as usize);
            pick(spec.load_balance, nodes, n, hash, state)?
        }
    };
    let total = u32::try_from(picked.len()).unwrap_or(u32::MAX);
    Ok(picked
        .into_iter()
        .enumerate()
        .map(|(i, node)| Chosen { node, shard_index: i as u32, shard_total: total })
        .collect())
}

/// Keeps only the nodes passing `keep`, unless none does.
fn prefer(nodes: &mut Vec<Candidate>, keep: impl Fn(&Candidate) -> bool) {
    if nodes.iter().any(&keep) {
        nodes.retain(keep);
    }
}

fn selector_text(spec: &rota_spec::Dispatch) -> String {
    let pairs: Vec<String> = spec.selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{{{}}}", pairs.join(", "))
}

/// `n` distinct nodes (at most all of them) by the strategy.
fn pick(
    lb: LoadBalance,
    mut nodes: Vec<Candidate>,
    n: usize,
    hash: &str,
    state: &SelectState,
) -> Result<Vec<Candidate>, String> {
    let n = n.min(nodes.len());
    let len = nodes.len();
    let active = |c: &Candidate| state.active.get(&c.id).copied().unwrap_or(0);
    Ok(match lb {
        LoadBalance::RoundRobin => {
            let start = state.round_robin % len;
            nodes.rotate_left(start);
            nodes.truncate(n);
            nodes
        }
        LoadBalance::Random => {
            use rand::seq::SliceRandom;
            nodes.shuffle(&mut rand::rng());
            nodes.truncate(n);
            nodes
        }
        LoadBalance::Weighted => {
            // Weighted sampling without replacement (Efraimidis–Spirakis): key = u^(1/w), largest keys win.
            let mut keyed: Vec<(f64, Candidate)> = nodes
                .into_iter()
                .map(|c| {
                    let u: f64 = rand::random::<f64>().max(f64::MIN_POSITIVE);
                    (u.powf(1.0 / f64::from(c.weight.max(1))), c)
                })
                .collect();
            keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
            keyed.into_iter().take(n).map(|(_, c)| c).collect()
        }
        LoadBalance::LeastActive => {
            // Fewest in flight first; ties take turns (round robin) so equal nodes share the load.
            let least = nodes.iter().map(active).min().unwrap_or(0);
            let ties = nodes.iter().filter(|c| active(c) == least).count();
            if n == 1 {
                let i = state.round_robin % ties;
                return Ok(nodes.into_iter().filter(|c| active(c) == least).skip(i).take(1).collect());
            }
            nodes.rotate_left(state.round_robin % len);
            nodes.sort_by_key(|c| active(c)); // stable: keeps the rotation among ties
            nodes.truncate(n);
            nodes
        }
        LoadBalance::ConsistentHash => {
            // Rendezvous hashing: the highest score of (key, node) wins; a node joining or leaving moves only the
            // keys it wins or held.
            let mut scored: Vec<(u64, Candidate)> = nodes.into_iter().map(|c| (score(hash, &c.id), c)).collect();
            scored.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id)));
            scored.into_iter().take(n).map(|(_, c)| c).collect()
        }
        LoadBalance::First | LoadBalance::Failover => {
            nodes.truncate(n);
            nodes
        }
        LoadBalance::Last => {
            nodes.reverse();
            nodes.truncate(n);
            nodes
        }
        LoadBalance::BusyOver => {
            let free: Vec<Candidate> =
                nodes.into_iter().filter(|c| c.capacity == 0 || active(c) < c.capacity).take(n).collect();
            if free.is_empty() {
                return Err(format!("all {len} executor node(s) are busy (at capacity)"));
            }
            free
        }
        LoadBalance::Plugin => return Err("node-selection plugins are not available yet".to_string()),
    })
}

/// FNV-1a 64 of `key`, a separator and `node`, then a final mix (so nearby ids spread).
fn score(key: &str, node: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes().chain(std::iter::once(0xff)).chain(node.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // splitmix64 finaliser
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn node(id: &str) -> Candidate {
        Candidate {
            id: id.into(),
            address: format!("http://{id}:1"),
            protocol: "http".into(),
            labels: BTreeMap::new(),
            weight: 1,
            capacity: 0,
            draining: false,
        }
    }

    fn nodes(ids: &[&str]) -> Vec<Candidate> {
        ids.iter().map(|i| node(i)).collect()
    }

    fn spec(mode: DispatchMode, lb: LoadBalance) -> rota_spec::Dispatch {
        rota_spec::Dispatch { mode, load_balance: lb, ..rota_spec::Dispatch::default() }
    }

    fn one(lb: LoadBalance, cands: Vec<Candidate>, state: &SelectState) -> String {
        let chosen = select(&spec(DispatchMode::Unicast, lb), "http", cands, "k", state, false).unwrap();
        assert_eq!(chosen.len(), 1);
        chosen[0].node.id.clone()
    }

    fn counts(mut f: impl FnMut(usize) -> String, n: usize) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for i in 0..n {
            *m.entry(f(i)).or_insert(0) += 1;
        }
        m
    }

    #[test]
    fn round_robin_cycles_in_order() {
        let picks: Vec<String> = (0..6)
            .map(|i| {
                one(
                    LoadBalance::RoundRobin,
                    nodes(&["a", "b", "c"]),
                    &SelectState { round_robin: i, ..Default::default() },
                )
            })
            .collect();
        assert_eq!(picks, ["a", "b", "c", "a", "b", "c"]);
    }

    #[test]
    fn random_is_roughly_uniform() {
        let c = counts(|_| one(LoadBalance::Random, nodes(&["a", "b", "c"]), &SelectState::default()), 9000);
        assert_eq!(c.len(), 3);
        for (id, n) in &c {
            assert!((2500..3500).contains(n), "{id}: {n} of 9000 ({c:?})");
        }
    }

    #[test]
    fn weighted_follows_weights() {
        let mut cands = nodes(&["a", "b", "c"]);
        cands[0].weight = 1;
        cands[1].weight = 2;
        cands[2].weight = 7;
        let c = counts(|_| one(LoadBalance::Weighted, cands.clone(), &SelectState::default()), 10_000);
        // Expected 1000 / 2000 / 7000; the bounds are more than 6 standard deviations wide.
        assert!((750..1250).contains(&c["a"]), "{c:?}");
        assert!((1650..2350).contains(&c["b"]), "{c:?}");
        assert!((6600..7400).contains(&c["c"]), "{c:?}");
    }

    #[test]
    fn least_active_picks_the_idlest_and_rotates_ties() {
        let mut state = SelectState::default();
        state.active.insert("a".into(), 3);
        state.active.insert("b".into(), 1);
        state.active.insert("c".into(), 2);
        assert_eq!(one(LoadBalance::LeastActive, nodes(&["a", "b", "c"]), &state), "b");
        state.active.insert("c".into(), 1);
        let tied: BTreeMap<String, usize> = counts(
            |i| {
                let s = SelectState { round_robin: i, active: state.active.clone(), ..Default::default() };
                one(LoadBalance::LeastActive, nodes(&["a", "b", "c"]), &s)
            },
            10,
        );
        assert_eq!(tied, BTreeMap::from([("b".to_string(), 5), ("c".to_string(), 5)]));
    }

    #[test]
    fn consistent_hash_is_sticky_and_moves_little() {
        let all = nodes(&["n1", "n2", "n3", "n4"]);
        let pick = |key: &str, cands: Vec<Candidate>| {
            select(
                &spec(DispatchMode::Unicast, LoadBalance::ConsistentHash),
                "http",
                cands,
                key,
                &SelectState::default(),
                false,
            )
            .unwrap()[0]
                .node
                .id
                .clone()
        };
        let keys: Vec<String> = (0..1000).map(|i| format!("customer-{i}")).collect();
        let before: Vec<String> = keys.iter().map(|k| pick(k, all.clone())).collect();
        let again: Vec<String> = keys.iter().map(|k| pick(k, all.clone())).collect();
        assert_eq!(before, again, "the same key always lands on the same node");
        let spread = counts(|i| before[i].clone(), keys.len());
        for (id, n) in &spread {
            assert!((150..350).contains(n), "{id}: {n} of 1000 ({spread:?})");
        }
        // Remove n4: only the keys n4 held move.
        let without: Vec<String> = keys.iter().map(|k| pick(k, nodes(&["n1", "n2", "n3"]))).collect();
        for (b, w) in before.iter().zip(&without) {
            if b != "n4" {
                assert_eq!(b, w);
            }
        }
    }

    #[test]
    fn first_last_failover_and_cool_down() {
        let mut state = SelectState::default();
        assert_eq!(one(LoadBalance::First, nodes(&["a", "b", "c"]), &state), "a");
        assert_eq!(one(LoadBalance::Last, nodes(&["a", "b", "c"]), &state), "c");
        assert_eq!(one(LoadBalance::Failover, nodes(&["a", "b", "c"]), &state), "a");
        state.cooling.insert("a".into());
        assert_eq!(one(LoadBalance::Failover, nodes(&["a", "b", "c"]), &state), "b", "first healthy");
        assert_eq!(one(LoadBalance::First, nodes(&["a", "b", "c"]), &state), "a", "first is fixed");
        assert_eq!(
            one(LoadBalance::RoundRobin, nodes(&["a", "b", "c"]), &SelectState { round_robin: 0, ..state }),
            "b",
            "other strategies avoid a node in cool-down too"
        );
        let all_cooling = SelectState { cooling: ["a", "b"].map(String::from).into(), ..Default::default() };
        assert_eq!(one(LoadBalance::Failover, nodes(&["a", "b"]), &all_cooling), "a", "all cooling: still try");
    }

    #[test]
    fn busy_over_skips_nodes_at_capacity() {
        let mut cands = nodes(&["a", "b", "c"]);
        for c in &mut cands {
            c.capacity = 2;
        }
        let mut state = SelectState::default();
        state.active.insert("a".into(), 2);
        assert_eq!(one(LoadBalance::BusyOver, cands.clone(), &state), "b");
        state.active.insert("b".into(), 5);
        assert_eq!(one(LoadBalance::BusyOver, cands.clone(), &state), "c");
        state.active.insert("c".into(), 2);
        let err = select(&spec(DispatchMode::Unicast, LoadBalance::BusyOver), "http", cands, "k", &state, false);
        assert!(err.unwrap_err().contains("busy"));
    }

    #[test]
    fn filters_draining_protocol_selector_and_switch_node() {
        let mut cands = nodes(&["a", "b", "c", "d"]);
        cands[0].draining = true;
        cands[1].protocol = "grpc".into();
        cands[2].labels.insert("zone".into(), "x".into());
        cands[3].labels.insert("zone".into(), "y".into());
        let mut s = spec(DispatchMode::Broadcast, LoadBalance::RoundRobin);
        let ids = |r: Result<Vec<Chosen>, String>| r.unwrap().into_iter().map(|c| c.node.id).collect::<Vec<_>>();
        assert_eq!(ids(select(&s, "http", cands.clone(), "k", &SelectState::default(), false)), ["c", "d"]);
        assert_eq!(ids(select(&s, "grpc", cands.clone(), "k", &SelectState::default(), false)), ["b"]);
        s.selector.insert("zone".into(), "y".into());
        assert_eq!(ids(select(&s, "http", cands.clone(), "k", &SelectState::default(), false)), ["d"]);
        s.selector.insert("zone".into(), "z".into());
        let err = select(&s, "http", cands.clone(), "k", &SelectState::default(), false).unwrap_err();
        assert!(err.contains("zone=z"), "{err}");
        assert!(select(&s, "http", vec![], "k", &SelectState::default(), false).unwrap_err().contains("no live"));

        // switchNode: avoid nodes used before, unless none is left.
        let u = spec(DispatchMode::Unicast, LoadBalance::First);
        let used = SelectState { used: ["a".to_string()].into(), ..Default::default() };
        assert_eq!(ids(select(&u, "http", nodes(&["a", "b"]), "k", &used, true)), ["b"]);
        assert_eq!(ids(select(&u, "http", nodes(&["a", "b"]), "k", &used, false)), ["a"]);
        assert_eq!(ids(select(&u, "http", nodes(&["a"]), "k", &used, true)), ["a"]);
    }

    #[test]
    fn multicast_broadcast_and_sharded() {
        let mut m = spec(DispatchMode::Multicast, LoadBalance::RoundRobin);
        m.count = Some(2);
        let st = SelectState { round_robin: 2, ..Default::default() };
        let got = select(&m, "http", nodes(&["a", "b", "c"]), "k", &st, false).unwrap();
        assert_eq!(got.iter().map(|c| c.node.id.as_str()).collect::<Vec<_>>(), ["c", "a"]);
        m.count = Some(9);
        assert_eq!(select(&m, "http", nodes(&["a", "b"]), "k", &st, false).unwrap().len(), 2, "at most all");

        let sh = spec(DispatchMode::Sharded, LoadBalance::RoundRobin);
        let got = select(&sh, "http", nodes(&["a", "b", "c"]), "k", &SelectState::default(), false).unwrap();
        assert_eq!(
            got.iter().map(|c| (c.node.id.as_str(), c.shard_index, c.shard_total)).collect::<Vec<_>>(),
            [("a", 0, 3), ("b", 1, 3), ("c", 2, 3)]
        );
        let mut sh4 = sh.clone();
        sh4.count = Some(4);
        assert!(select(&sh4, "http", nodes(&["a", "b", "c"]), "k", &SelectState::default(), false).is_err());
        // Broadcast ignores cool-down: every node must run it.
        let b = spec(DispatchMode::Broadcast, LoadBalance::RoundRobin);
        let cooling = SelectState { cooling: ["a".to_string()].into(), ..Default::default() };
        assert_eq!(select(&b, "http", nodes(&["a", "b"]), "k", &cooling, false).unwrap().len(), 2);
    }

    #[test]
    fn hash_values() {
        let params: Map<String, Value> = serde_json::from_str(r#"{"customer":"c-7","n":42}"#).unwrap();
        assert_eq!(hash_value(Some("customer"), &params, "ns/t"), "c-7");
        assert_eq!(hash_value(Some("n"), &params, "ns/t"), "42");
        assert_eq!(hash_value(Some("missing"), &params, "ns/t"), "ns/t");
        assert_eq!(hash_value(None, &params, "ns/t"), "ns/t");
    }
}
