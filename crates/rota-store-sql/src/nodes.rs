//! [`NodeStore`]: the registry of scheduler and executor nodes.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rota_store::{
    NodeFilter, NodeRecord, NodeRegistration, NodeState, NodeStore, StoreError, StoreResult, truncate_millis,
};

use crate::db::{Arg, Row, args, corrupt, write_tx};
use crate::{SqlStore, check_len, limits};

const NODE_COLS: &str = "id, kind, service, address, protocol, labels, weight, capacity, state, registered_at, last_heartbeat_at, expires_at";

fn decode_node(r: &dyn Row) -> StoreResult<NodeRecord> {
    let labels: BTreeMap<String, String> = serde_json::from_str(&r.text("labels")?)
        .map_err(|e| corrupt(format!("column labels holds invalid label JSON: {e}")))?;
    Ok(NodeRecord {
        id: r.text("id")?,
        kind: r.text("kind")?.parse().map_err(|e: StoreError| corrupt(e.to_string()))?,
        service: r.text("service")?,
        address: r.text("address")?,
        protocol: r.text("protocol")?,
        labels,
        weight: r.uint("weight")?,
        capacity: r.uint("capacity")?,
        state: r.text("state")?.parse().map_err(|e: StoreError| corrupt(e.to_string()))?,
        registered_at: r.time("registered_at")?,
        last_heartbeat_at: r.time("last_heartbeat_at")?,
        expires_at: r.time("expires_at")?,
    })
}

/// `now + ttl`, saturating.
pub(crate) fn expiry(now: DateTime<Utc>, ttl: Duration) -> StoreResult<DateTime<Utc>> {
    let ttl = chrono::Duration::from_std(ttl)
        .map_err(|_| StoreError::InvalidArgument { field: "ttl", reason: "too large".to_owned() })?;
    now.checked_add_signed(ttl)
        .map(truncate_millis)
        .ok_or_else(|| StoreError::InvalidArgument { field: "ttl", reason: "too large".to_owned() })
}

impl SqlStore {
    async fn node_in(ex: &mut crate::db::Ex<'_>, id: &str) -> StoreResult<NodeRecord> {
        ex.fetch_opt(&format!("SELECT {NODE_COLS} FROM nodes WHERE id = ?"), args![id], decode_node)
            .await?
            .ok_or_else(|| StoreError::not_found("node", id))
    }
}

#[async_trait]
impl NodeStore for SqlStore {
    async fn register_node(&self, reg: NodeRegistration, ttl: Duration, now: DateTime<Utc>) -> StoreResult<NodeRecord> {
        check_len("id", &reg.id, limits::NAME)?;
        check_len("service", &reg.service, limits::NAME)?;
        check_len("address", &reg.address, limits::ADDRESS)?;
        check_len("protocol", &reg.protocol, limits::SHORT)?;
        let now = truncate_millis(now);
        let expires_at = expiry(now, ttl)?;
        let labels = serde_json::to_string(&reg.labels).unwrap_or_else(|_| "{}".to_owned());
        // Re-registering refreshes everything but the original registration time.
        let upsert = self.dialect.upsert_suffix(
            "id",
            &[
                "kind",
                "service",
                "address",
                "protocol",
                "labels",
                "weight",
                "capacity",
                "state",
                "last_heartbeat_at",
                "expires_at",
            ],
        );
        write_tx!(self, |tx| {
            let mut ex = tx.ex();
            ex.execute(
                &format!("INSERT INTO nodes ({NODE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?){upsert}"),
                args![
                    &reg.id,
                    reg.kind.as_str(),
                    &reg.service,
                    &reg.address,
                    &reg.protocol,
                    &labels,
                    reg.weight,
                    reg.capacity,
                    NodeState::Active.as_str(),
                    now,
                    now,
                    expires_at
                ],
            )
            .await?;
            Self::node_in(&mut ex, &reg.id).await
        })
    }

    async fn heartbeat_node(&self, id: &str, ttl: Duration, now: DateTime<Utc>) -> StoreResult<NodeRecord> {
        let now = truncate_millis(now);
        let expires_at = expiry(now, ttl)?;
        write_tx!(self, |tx| {
            let mut ex = tx.ex();
            let done = ex
                .execute(
                    "UPDATE nodes SET last_heartbeat_at = ?, expires_at = ? WHERE id = ?",
                    args![now, expires_at, id],
                )
                .await?;
            if done.rows == 0 {
                return Err(StoreError::not_found("node", id));
            }
            Self::node_in(&mut ex, id).await
        })
    }

    async fn set_node_state(&self, id: &str, state: NodeState) -> StoreResult<NodeRecord> {
        write_tx!(self, |tx| {
            let mut ex = tx.ex();
            let done = ex.execute("UPDATE nodes SET state = ? WHERE id = ?", args![state.as_str(), id]).await?;
            if done.rows == 0 {
                return Err(StoreError::not_found("node", id));
            }
            Self::node_in(&mut ex, id).await
        })
    }

    async fn get_node(&self, id: &str) -> StoreResult<Option<NodeRecord>> {
        let mut c = self.pool.conn().await?;
        c.ex().fetch_opt(&format!("SELECT {NODE_COLS} FROM nodes WHERE id = ?"), args![id], decode_node).await
    }

    async fn deregister_node(&self, id: &str) -> StoreResult<bool> {
        write_tx!(self, |tx| Ok(tx.ex().execute("DELETE FROM nodes WHERE id = ?", args![id]).await?.rows > 0))
    }

    async fn list_nodes(&self, filter: &NodeFilter) -> StoreResult<Vec<NodeRecord>> {
        let mut sql = format!("SELECT {NODE_COLS} FROM nodes WHERE 1 = 1");
        let mut a = Vec::new();
        if let Some(k) = filter.kind {
            sql.push_str(" AND kind = ?");
            a.push(Arg::from(k.as_str()));
        }
        if let Some(s) = &filter.service {
            sql.push_str(" AND service = ?");
            a.push(Arg::from(s));
        }
        if let Some(t) = filter.alive_at {
            sql.push_str(" AND expires_at > ?");
            a.push(Arg::from(t));
        }
        sql.push_str(" ORDER BY id");
        let mut c = self.pool.conn().await?;
        c.ex().fetch_all(&sql, a, decode_node).await
    }

    async fn prune_nodes(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        write_tx!(self, |tx| Ok(tx.ex().execute("DELETE FROM nodes WHERE expires_at < ?", args![before]).await?.rows))
    }
}
