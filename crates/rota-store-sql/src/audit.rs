//! [`AuditStore`]: the append-only audit log.

use async_trait::async_trait;
use rota_store::cursor::{decode_id, encode_id};
use rota_store::{AuditEntry, AuditFilter, AuditStore, NewAuditEntry, Page, PageRequest, StoreResult, truncate_millis};

use crate::db::{Arg, Row, args, to_json, write_tx};
use crate::{SqlStore, check_len, limits};

fn decode_audit(r: &dyn Row) -> StoreResult<AuditEntry> {
    Ok(AuditEntry {
        id: r.int("id")?,
        at: r.time("occurred_at")?,
        actor: r.text("actor")?,
        action: r.text("action")?,
        resource: r.text("resource")?,
        source: r.opt_text("source")?,
        detail: r.json("detail")?,
    })
}

#[async_trait]
impl AuditStore for SqlStore {
    async fn append_audit(&self, entry: NewAuditEntry) -> StoreResult<AuditEntry> {
        check_len("actor", &entry.actor, limits::NAME)?;
        check_len("action", &entry.action, limits::NAME)?;
        check_len("resource", &entry.resource, limits::RESOURCE)?;
        if let Some(s) = &entry.source {
            check_len("source", s, limits::NAME)?;
        }
        let at = truncate_millis(entry.at);
        let detail = to_json(&entry.detail);
        write_tx!(self, |tx| {
            let id = tx
                .ex()
                .insert_id(
                    "INSERT INTO audit_log (occurred_at, actor, action, resource, source, detail) VALUES (?, ?, ?, ?, ?, ?)",
                    args![at, &entry.actor, &entry.action, &entry.resource, entry.source.clone(), &detail],
                )
                .await?;
            Ok(AuditEntry {
                id,
                at,
                actor: entry.actor.clone(),
                action: entry.action.clone(),
                resource: entry.resource.clone(),
                source: entry.source.clone(),
                detail: entry.detail.clone(),
            })
        })
    }

    async fn list_audit(&self, filter: &AuditFilter, page: &PageRequest) -> StoreResult<Page<AuditEntry>> {
        let limit = page.effective_limit() as usize;
        let mut sql =
            "SELECT id, occurred_at, actor, action, resource, source, detail FROM audit_log WHERE 1 = 1".to_owned();
        let mut a = Vec::new();
        if let Some(c) = &page.cursor {
            sql.push_str(" AND id < ?");
            a.push(Arg::from(decode_id(c)?));
        }
        if let Some(v) = &filter.actor {
            sql.push_str(" AND actor = ?");
            a.push(Arg::from(v));
        }
        if let Some(v) = &filter.action {
            sql.push_str(" AND action = ?");
            a.push(Arg::from(v));
        }
        if let Some(p) = &filter.resource_prefix {
            let (cond, pa) = self.dialect.starts_with("resource", p);
            sql.push_str(" AND ");
            sql.push_str(&cond);
            a.extend(pa);
        }
        if let Some(t) = filter.from {
            sql.push_str(" AND occurred_at >= ?");
            a.push(Arg::from(t));
        }
        if let Some(t) = filter.to {
            sql.push_str(" AND occurred_at < ?");
            a.push(Arg::from(t));
        }
        sql.push_str(" ORDER BY id DESC LIMIT ?");
        a.push(Arg::from(limit as i64 + 1));
        let mut c = self.pool.conn().await?;
        let mut items = c.ex().fetch_all(&sql, a, decode_audit).await?;
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|e| encode_id(e.id))
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }
}
