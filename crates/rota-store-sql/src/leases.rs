//! [`LeaseStore`]: shard leases with fencing epochs.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rota_store::{Lease, LeaseStore, StoreError, StoreResult, truncate_millis};

use crate::db::{Arg, Ex, Row, args, marks, write_tx};
use crate::nodes::expiry;
use crate::{SqlStore, check_len, limits};

fn decode_lease(r: &dyn Row) -> StoreResult<Lease> {
    Ok(Lease {
        shard: r.uint("shard")?,
        owner: r.text("owner")?,
        epoch: r.int("epoch")?,
        expires_at: r.time("expires_at")?,
    })
}

/// Sets the fencing epoch of `shard` (creating its row).
async fn set_fence(ex: &mut Ex<'_>, shard: u32, epoch: i64) -> StoreResult<()> {
    let sql = format!(
        "INSERT INTO shard_fences (shard, epoch) VALUES (?, ?){}",
        ex.dialect().upsert_suffix("shard", &["epoch"])
    );
    ex.execute(&sql, args![shard, epoch]).await?;
    Ok(())
}

/// Leases renewed per statement (two parameters each).
const RENEW_CHUNK: usize = 500;

/// Owner of a free (released) lease row.
const FREE: &str = "";

#[async_trait]
impl LeaseStore for SqlStore {
    async fn acquire_lease(
        &self,
        shard: u32,
        owner: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Lease>> {
        check_len("owner", owner, limits::NAME)?;
        if owner.is_empty() {
            return Err(StoreError::InvalidArgument { field: "owner", reason: "must not be empty".to_owned() });
        }
        let now = truncate_millis(now);
        let expires_at = expiry(now, ttl)?;
        write_tx!(self, |tx| {
            let mut ex = tx.ex();
            // First acquisition of the shard: create the row at epoch 1.
            let created = ex
                .insert_or_skip(
                    "INSERT INTO shard_leases (shard, owner, epoch, expires_at) VALUES (?, ?, 1, ?)",
                    "shard",
                    false,
                    args![shard, owner, expires_at],
                )
                .await?;
            if created.is_some() {
                set_fence(&mut ex, shard, 1).await?;
                return Ok(Some(Lease { shard, owner: owner.to_owned(), epoch: 1, expires_at }));
            }
            // Take it if it is ours, free or expired. The WHERE clause is re-evaluated on the latest row version
            // after the row lock is granted, so of N racing acquirers exactly one matches. The epoch assignment
            // comes first: MySQL evaluates single-table SET assignments left to right.
            let done = ex
                .execute(
                    "UPDATE shard_leases SET epoch = CASE WHEN owner = ? THEN epoch ELSE epoch + 1 END, owner = ?, \
                     expires_at = ? WHERE shard = ? AND (owner = ? OR owner = ? OR expires_at <= ?)",
                    args![owner, owner, expires_at, shard, owner, FREE, now],
                )
                .await?;
            if done.rows == 0 {
                return Ok(None);
            }
            let lease = ex
                .fetch_opt(
                    "SELECT shard, owner, epoch, expires_at FROM shard_leases WHERE shard = ?",
                    args![shard],
                    decode_lease,
                )
                .await?;
            // A change of holder moves the fence: this write waits for fenced writes in flight (they hold the fence
            // row shared), and fenced writes that start later see the new epoch. We hold the lease row, so no other
            // acquisition is between its two writes and the plain read is current.
            if let Some(l) = &lease {
                let fence = ex
                    .fetch_opt("SELECT epoch FROM shard_fences WHERE shard = ?", args![shard], |r| r.int("epoch"))
                    .await?;
                if fence != Some(l.epoch) {
                    set_fence(&mut ex, shard, l.epoch).await?;
                }
            }
            Ok(lease)
        })
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration, now: DateTime<Utc>) -> StoreResult<Lease> {
        let expires_at = expiry(truncate_millis(now), ttl)?;
        write_tx!(self, |tx| {
            let done = tx
                .ex()
                .execute(
                    "UPDATE shard_leases SET expires_at = ? WHERE shard = ? AND owner = ? AND epoch = ?",
                    args![expires_at, lease.shard, &lease.owner, lease.epoch],
                )
                .await?;
            if done.rows == 0 {
                return Err(StoreError::Fenced { shard: lease.shard, epoch: lease.epoch });
            }
            Ok(Lease { expires_at, ..lease.clone() })
        })
    }

    async fn renew_leases(
        &self,
        leases: &[Lease],
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StoreResult<Lease>>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let expires_at = expiry(truncate_millis(now), ttl)?;
        // One transaction, one UPDATE and one SELECT per chunk: a node renews every lease it holds each
        // `lease_ttl / 3`. The SELECT (not the affected-row count, which MySQL reports only for changed rows)
        // tells which leases are still the caller's at their epoch, i.e. which the UPDATE renewed.
        write_tx!(self, |tx| {
            let mut ex = tx.ex();
            let mut current: HashMap<u32, (String, i64)> = HashMap::with_capacity(leases.len());
            for chunk in leases.chunks(RENEW_CHUNK) {
                let pairs = vec!["(?, ?)"; chunk.len()].join(", ");
                let mut a = args![expires_at];
                for l in chunk {
                    a.extend(args![l.shard, l.epoch]);
                }
                let owners: BTreeSet<&str> = chunk.iter().map(|l| l.owner.as_str()).collect();
                for owner in owners {
                    let mut a = a.clone();
                    a.extend(args![owner]);
                    ex.execute(
                        &format!(
                            "UPDATE shard_leases SET expires_at = ? WHERE (shard, epoch) IN ({pairs}) AND owner = ?"
                        ),
                        a,
                    )
                    .await?;
                }
                let rows = ex
                    .fetch_all(
                        &format!(
                            "SELECT shard, owner, epoch, expires_at FROM shard_leases WHERE shard IN ({})",
                            marks(chunk.len())
                        ),
                        chunk.iter().map(|l| Arg::from(l.shard)).collect(),
                        decode_lease,
                    )
                    .await?;
                current.extend(
                    rows.into_iter().filter(|r| r.expires_at == expires_at).map(|r| (r.shard, (r.owner, r.epoch))),
                );
            }
            Ok(leases
                .iter()
                .map(|l| match current.get(&l.shard) {
                    Some((owner, epoch)) if *owner == l.owner && *epoch == l.epoch => {
                        Ok(Lease { expires_at, ..l.clone() })
                    }
                    _ => Err(StoreError::Fenced { shard: l.shard, epoch: l.epoch }),
                })
                .collect())
        })
    }

    async fn release_lease(&self, lease: &Lease) -> StoreResult<()> {
        if lease.owner.is_empty() {
            return Err(StoreError::Fenced { shard: lease.shard, epoch: lease.epoch });
        }
        write_tx!(self, |tx| {
            let done = tx
                .ex()
                .execute(
                    "UPDATE shard_leases SET owner = ?, expires_at = ? WHERE shard = ? AND owner = ? AND epoch = ?",
                    args![FREE, 0i64, lease.shard, &lease.owner, lease.epoch],
                )
                .await?;
            if done.rows == 0 {
                return Err(StoreError::Fenced { shard: lease.shard, epoch: lease.epoch });
            }
            Ok(())
        })
    }

    async fn list_leases(&self) -> StoreResult<Vec<Lease>> {
        let mut c = self.pool.conn().await?;
        c.ex()
            .fetch_all("SELECT shard, owner, epoch, expires_at FROM shard_leases ORDER BY shard", vec![], decode_lease)
            .await
    }
}
