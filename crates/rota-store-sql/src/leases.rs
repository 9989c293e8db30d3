//! [`LeaseStore`]: shard leases with fencing epochs.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rota_store::{Lease, LeaseStore, StoreError, StoreResult, truncate_millis};

use crate::db::{Row, args, write_tx};
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
            ex.fetch_opt(
                "SELECT shard, owner, epoch, expires_at FROM shard_leases WHERE shard = ?",
                args![shard],
                decode_lease,
            )
            .await
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
        // One transaction for all of them: a node renews every lease it holds each `lease_ttl / 3`.
        write_tx!(self, |tx| {
            let mut ex = tx.ex();
            let mut out = Vec::with_capacity(leases.len());
            for lease in leases {
                let done = ex
                    .execute(
                        "UPDATE shard_leases SET expires_at = ? WHERE shard = ? AND owner = ? AND epoch = ?",
                        args![expires_at, lease.shard, &lease.owner, lease.epoch],
                    )
                    .await?;
                out.push(if done.rows == 0 {
                    Err(StoreError::Fenced { shard: lease.shard, epoch: lease.epoch })
                } else {
                    Ok(Lease { expires_at, ..lease.clone() })
                });
            }
            Ok(out)
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
