//! [`AuthStore`]: API tokens (hashes only) and role bindings.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rota_store::{
    ApiTokenRecord, AuthStore, NewApiToken, Page, PageRequest, RoleBinding, RoleBindingFilter, StoreError, StoreResult,
    SubjectKind, TokenScope, truncate_millis,
};

use crate::db::{Arg, Row, args, corrupt, is_unique_violation, write_tx};
use crate::{SqlStore, check_len, limits};

const TOKEN_COLS: &str = "id, name, secret_hash, scope, created_at, created_by, expires_at, revoked_at";
const BINDING_COLS: &str = "subject_kind, subject, namespace, role, created_at, created_by";

fn decode_token(r: &dyn Row) -> StoreResult<ApiTokenRecord> {
    let scope: TokenScope = serde_json::from_str(&r.text("scope")?)
        .map_err(|e| corrupt(format!("column scope holds an invalid token scope: {e}")))?;
    Ok(ApiTokenRecord {
        id: r.text("id")?,
        name: r.text("name")?,
        secret_hash: r.text("secret_hash")?,
        scope,
        created_at: r.time("created_at")?,
        created_by: r.text("created_by")?,
        expires_at: r.opt_time("expires_at")?,
        revoked_at: r.opt_time("revoked_at")?,
    })
}

fn decode_binding(r: &dyn Row) -> StoreResult<RoleBinding> {
    Ok(RoleBinding {
        kind: r.text("subject_kind")?.parse().map_err(|e: StoreError| corrupt(e.to_string()))?,
        subject: r.text("subject")?,
        namespace: r.text("namespace")?,
        role: r.text("role")?.parse().map_err(|e: StoreError| corrupt(e.to_string()))?,
        created_at: r.time("created_at")?,
        created_by: r.text("created_by")?,
    })
}

fn decode_cursor(c: &str) -> StoreResult<String> {
    c.strip_prefix('k')
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| StoreError::InvalidArgument { field: "cursor", reason: "malformed cursor".into() })
}

impl SqlStore {
    async fn token_in(ex: &mut crate::db::Ex<'_>, id: &str) -> StoreResult<Option<ApiTokenRecord>> {
        ex.fetch_opt(&format!("SELECT {TOKEN_COLS} FROM api_tokens WHERE id = ?"), args![id], decode_token).await
    }
}

#[async_trait]
impl AuthStore for SqlStore {
    async fn create_token(&self, t: NewApiToken) -> StoreResult<ApiTokenRecord> {
        check_len("id", &t.id, limits::SHORT)?;
        check_len("name", &t.name, limits::NAME)?;
        check_len("secret_hash", &t.secret_hash, 128)?;
        check_len("created_by", &t.created_by, limits::NAME)?;
        let scope = serde_json::to_string(&t.scope).map_err(|e| corrupt(format!("cannot encode the scope: {e}")))?;
        let rec = ApiTokenRecord {
            id: t.id,
            name: t.name,
            secret_hash: t.secret_hash,
            scope: t.scope,
            created_at: truncate_millis(t.created_at),
            created_by: t.created_by,
            expires_at: t.expires_at.map(truncate_millis),
            revoked_at: None,
        };
        let res = write_tx!(self, |tx| {
            tx.ex()
                .execute(
                    &format!("INSERT INTO api_tokens ({TOKEN_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"),
                    args![
                        &rec.id,
                        &rec.name,
                        &rec.secret_hash,
                        scope.clone(),
                        rec.created_at,
                        &rec.created_by,
                        rec.expires_at,
                        Option::<i64>::None
                    ],
                )
                .await
        });
        match res {
            Ok(_) => Ok(rec),
            Err(e) if is_unique_violation(&e) => Err(StoreError::conflict("token", &rec.id, "already exists")),
            Err(e) => Err(e),
        }
    }

    async fn get_token(&self, id: &str) -> StoreResult<Option<ApiTokenRecord>> {
        let mut c = self.pool.conn().await?;
        Self::token_in(&mut c.ex(), id).await
    }

    async fn list_tokens(&self, page: &PageRequest) -> StoreResult<Page<ApiTokenRecord>> {
        let limit = page.effective_limit() as usize;
        let mut sql = format!("SELECT {TOKEN_COLS} FROM api_tokens");
        let mut a = Vec::new();
        if let Some(c) = &page.cursor {
            sql.push_str(" WHERE id > ?");
            a.push(Arg::from(decode_cursor(c)?));
        }
        sql.push_str(" ORDER BY id LIMIT ?");
        a.push(Arg::from(limit as i64 + 1));
        let mut c = self.pool.conn().await?;
        let mut items = c.ex().fetch_all(&sql, a, decode_token).await?;
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|t| format!("k{}", t.id))
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    async fn revoke_token(&self, id: &str, now: DateTime<Utc>) -> StoreResult<ApiTokenRecord> {
        let now = truncate_millis(now);
        write_tx!(self, |tx| {
            let mut ex = tx.ex();
            ex.execute("UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", args![now, id])
                .await?;
            Self::token_in(&mut ex, id).await?.ok_or_else(|| StoreError::not_found("token", id))
        })
    }

    async fn put_role_binding(&self, b: RoleBinding) -> StoreResult<RoleBinding> {
        check_len("subject", &b.subject, limits::NAME)?;
        check_len("namespace", &b.namespace, limits::NAME)?;
        check_len("created_by", &b.created_by, limits::NAME)?;
        let b = RoleBinding { created_at: truncate_millis(b.created_at), ..b };
        let upsert =
            self.dialect.upsert_suffix("subject_kind, subject, namespace", &["role", "created_at", "created_by"]);
        write_tx!(self, |tx| {
            tx.ex()
                .execute(
                    &format!("INSERT INTO role_bindings ({BINDING_COLS}) VALUES (?, ?, ?, ?, ?, ?){upsert}"),
                    args![b.kind.as_str(), &b.subject, &b.namespace, b.role.as_str(), b.created_at, &b.created_by],
                )
                .await?;
            Ok(b.clone())
        })
    }

    async fn list_role_bindings(&self, filter: &RoleBindingFilter) -> StoreResult<Vec<RoleBinding>> {
        let mut sql = format!("SELECT {BINDING_COLS} FROM role_bindings WHERE 1 = 1");
        let mut a = Vec::new();
        if let Some(k) = filter.kind {
            sql.push_str(" AND subject_kind = ?");
            a.push(Arg::from(k.as_str()));
        }
        if let Some(s) = &filter.subject {
            sql.push_str(" AND subject = ?");
            a.push(Arg::from(s));
        }
        if let Some(n) = &filter.namespace {
            sql.push_str(" AND namespace = ?");
            a.push(Arg::from(n));
        }
        sql.push_str(" ORDER BY subject_kind, subject, namespace");
        let mut c = self.pool.conn().await?;
        c.ex().fetch_all(&sql, a, decode_binding).await
    }

    async fn delete_role_binding(&self, kind: SubjectKind, subject: &str, namespace: &str) -> StoreResult<bool> {
        write_tx!(self, |tx| {
            let done = tx
                .ex()
                .execute(
                    "DELETE FROM role_bindings WHERE subject_kind = ? AND subject = ? AND namespace = ?",
                    args![kind.as_str(), subject, namespace],
                )
                .await?;
            Ok(done.rows > 0)
        })
    }
}
