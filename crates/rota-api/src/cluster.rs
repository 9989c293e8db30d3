//! The cluster view: scheduler nodes from the node registry, the shard leases they hold, and their lag.

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use rota_store::{NodeFilter, NodeKind, NodeRecord, Store, StoreResult, truncate_millis};

use crate::ApiState;
use crate::error::{ApiResult, ErrorBody};
use crate::views::{ClusterNodeView, ClusterView};

/// Show the scheduler cluster: nodes, the shards each holds, lease expiry, lag, and the shards nobody holds.
#[utoipa::path(
    get,
    path = "/api/v1/cluster",
    tag = "cluster",
    operation_id = "get_cluster",
    responses(
        (status = 200, description = "The cluster as seen in the store now", body = ClusterView),
        (status = 503, description = "The store does not answer", body = ErrorBody),
    )
)]
pub async fn get_cluster(State(state): State<ApiState>) -> ApiResult<Json<ClusterView>> {
    let now = truncate_millis(Utc::now());
    let shard_count = state.scheduler.config().shard_count;
    Ok(Json(cluster_view(state.store.as_ref(), shard_count, now).await?))
}

/// Assembles the cluster view from the store as of `now`.
///
/// Nodes are the registered scheduler nodes plus every owner of a live lease (`expires_at > now`) that has no
/// registry row (`registered: false`), ordered by id. A node's lag is the largest lag of the shards it holds,
/// where a shard's lag is `now` minus the `next_fire_at` of its oldest task due at or before `now`. Shards
/// `0..shard_count` without a live lease are `unowned_shards`.
pub async fn cluster_view(store: &dyn Store, shard_count: u32, now: DateTime<Utc>) -> StoreResult<ClusterView> {
    let registered = store.list_nodes(&NodeFilter { kind: Some(NodeKind::Scheduler), ..NodeFilter::default() }).await?;
    let mut held: BTreeMap<String, Vec<(u32, DateTime<Utc>)>> = BTreeMap::new();
    let mut owned = BTreeSet::new();
    for lease in store.list_leases().await? {
        if lease.expires_at > now {
            owned.insert(lease.shard);
            held.entry(lease.owner).or_default().push((lease.shard, lease.expires_at));
        }
    }

    let mut nodes: BTreeMap<String, ClusterNodeView> = BTreeMap::new();
    for record in registered {
        nodes.insert(record.id.clone(), registered_node(record, now));
    }
    for (owner, leases) in held {
        let node = nodes.entry(owner.clone()).or_insert_with(|| unregistered_node(owner));
        let mut shards: Vec<u32> = leases.iter().map(|(s, _)| *s).collect();
        shards.sort_unstable();
        shards.dedup();
        let mut lag_ms = 0;
        for &shard in &shards {
            lag_ms = lag_ms.max(shard_lag_ms(store, shard, now).await?);
        }
        node.shards_held = u32::try_from(shards.len()).unwrap_or(u32::MAX);
        node.shards = shards;
        node.lease_expires_at = leases.iter().map(|(_, at)| *at).min();
        node.lag_ms = lag_ms;
    }

    Ok(ClusterView {
        backend: store.backend_name().to_string(),
        supports_cluster: store.supports_cluster(),
        shard_count,
        now,
        nodes: nodes.into_values().collect(),
        unowned_shards: (0..shard_count).filter(|s| !owned.contains(s)).collect(),
    })
}

/// `now` minus the `next_fire_at` of the oldest task of `shard` due at or before `now`, in milliseconds (0: none).
async fn shard_lag_ms(store: &dyn Store, shard: u32, now: DateTime<Utc>) -> StoreResult<u64> {
    let oldest = store.due_tasks(shard, now, 1).await?;
    Ok(oldest.first().map_or(0, |t| u64::try_from((now - t.next_fire_at).num_milliseconds()).unwrap_or(0)))
}

fn registered_node(r: NodeRecord, now: DateTime<Utc>) -> ClusterNodeView {
    ClusterNodeView {
        alive: r.expires_at > now,
        id: r.id,
        address: r.address,
        registered: true,
        state: Some(r.state.into()),
        registered_at: Some(r.registered_at),
        last_heartbeat_at: Some(r.last_heartbeat_at),
        expires_at: Some(r.expires_at),
        shards: Vec::new(),
        shards_held: 0,
        lease_expires_at: None,
        lag_ms: 0,
    }
}

/// A holder of live leases without a registry row: it renews its leases, so it is alive.
fn unregistered_node(id: String) -> ClusterNodeView {
    ClusterNodeView {
        id,
        address: String::new(),
        registered: false,
        state: None,
        alive: true,
        registered_at: None,
        last_heartbeat_at: None,
        expires_at: None,
        shards: Vec::new(),
        shards_held: 0,
        lease_expires_at: None,
        lag_ms: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use chrono::TimeDelta;
    use rota_store::{LeaseStore, NodeRegistration, NodeState, NodeStore, Precondition, TaskStore, TaskWrite};

    use crate::views::NodeStateView;

    fn registration(id: &str) -> NodeRegistration {
        NodeRegistration {
            id: id.into(),
            kind: NodeKind::Scheduler,
            service: "rota".into(),
            address: format!("http://{id}:7070"),
            protocol: "http".into(),
            labels: Default::default(),
            weight: 1,
            capacity: 64,
        }
    }

    fn task(name: &str, shard: u32, next_fire_at: DateTime<Utc>) -> TaskWrite {
        TaskWrite {
            namespace: "ns".into(),
            name: name.into(),
            labels: Default::default(),
            spec: serde_json::json!({}),
            shard,
            next_fire_at: Some(next_fire_at),
        }
    }

    #[tokio::test]
    async fn nodes_leases_lag_and_unowned_shards() {
        let store = rota_store_sql::testing::fresh_sqlite().await;
        let now = truncate_millis(Utc::now());
        let secs = |s: i64| TimeDelta::seconds(s);
        let ttl = Duration::from_secs(10);

        store.register_node(registration("a"), ttl, now).await.unwrap();
        store.register_node(registration("gone"), ttl, now - secs(60)).await.unwrap();
        store.set_node_state("gone", NodeState::Draining).await.unwrap();
        // An executor node is not part of the scheduler cluster.
        let exec = NodeRegistration { kind: NodeKind::Executor, ..registration("exec") };
        store.register_node(exec, ttl, now).await.unwrap();

        store.acquire_lease(0, "a", ttl, now - secs(2)).await.unwrap().unwrap();
        store.acquire_lease(2, "a", ttl, now).await.unwrap().unwrap();
        store.acquire_lease(3, "ghost", ttl, now).await.unwrap().unwrap();
        // An expired lease holds nothing.
        store.acquire_lease(4, "gone", ttl, now - secs(60)).await.unwrap().unwrap();

        // Shard 2: one task 5 s overdue and one 1 s overdue (the oldest counts); shard 0: one due later.
        store.put_task(task("late", 2, now - secs(5)), Precondition::Any, now).await.unwrap();
        store.put_task(task("later", 2, now - secs(1)), Precondition::Any, now).await.unwrap();
        store.put_task(task("future", 0, now + secs(30)), Precondition::Any, now).await.unwrap();
        // Overdue in an unowned shard: no node's lag.
        store.put_task(task("orphan", 1, now - secs(100)), Precondition::Any, now).await.unwrap();

        let view = cluster_view(&store, 6, now).await.unwrap();
        assert_eq!((view.backend.as_str(), view.supports_cluster, view.shard_count), ("sqlite", false, 6));
        assert_eq!(view.now, now);
        assert_eq!(view.unowned_shards, [1, 4, 5]);
        let ids: Vec<&str> = view.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["a", "ghost", "gone"]);

        let a = &view.nodes[0];
        assert!(a.registered && a.alive);
        assert_eq!(a.state, Some(NodeStateView::Active));
        assert_eq!(a.address, "http://a:7070");
        assert_eq!((a.shards.as_slice(), a.shards_held), ([0, 2].as_slice(), 2));
        assert_eq!(a.lease_expires_at, Some(now + secs(8)));
        assert_eq!(a.expires_at, Some(now + secs(10)));
        assert_eq!(a.lag_ms, 5_000);

        let ghost = &view.nodes[1];
        assert!(!ghost.registered && ghost.alive);
        assert_eq!((ghost.state, ghost.registered_at, ghost.address.as_str()), (None, None, ""));
        assert_eq!((ghost.shards.as_slice(), ghost.lag_ms), ([3].as_slice(), 0));
        assert_eq!(ghost.lease_expires_at, Some(now + secs(10)));

        let gone = &view.nodes[2];
        assert!(gone.registered && !gone.alive);
        assert_eq!(gone.state, Some(NodeStateView::Draining));
        assert_eq!((gone.shards_held, gone.lease_expires_at, gone.lag_ms), (0, None, 0));
    }
}
