//! A tiny embedded migration runner.
//!
//! Migrations are per-dialect SQL files compiled into the binary. Applied versions are recorded in
//! `rota_migrations(version, applied_at)`. Concurrent starts are serialised: PostgreSQL with a session advisory
//! lock, MySQL with `GET_LOCK`, SQLite with `BEGIN IMMEDIATE` (the database write lock).

use chrono::Utc;
use rota_store::StoreResult;
use sqlx::{AssertSqlSafe, Connection, Row};

use crate::db::{BackendErrorKind, Dialect, Pools, backend, db_err};

/// One migration: its version and the SQL of each dialect.
struct Migration {
    version: i64,
    sqlite: &'static str,
    postgres: &'static str,
    mysql: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sqlite: include_str!("../migrations/sqlite/0001_init.sql"),
        postgres: include_str!("../migrations/postgres/0001_init.sql"),
        mysql: include_str!("../migrations/mysql/0001_init.sql"),
    },
    Migration {
        version: 2,
        sqlite: include_str!("../migrations/sqlite/0002_shard_fences.sql"),
        postgres: include_str!("../migrations/postgres/0002_shard_fences.sql"),
        mysql: include_str!("../migrations/mysql/0002_shard_fences.sql"),
    },
    Migration {
        version: 3,
        sqlite: include_str!("../migrations/sqlite/0003_auth.sql"),
        postgres: include_str!("../migrations/postgres/0003_auth.sql"),
        mysql: include_str!("../migrations/mysql/0003_auth.sql"),
    },
];

/// The schema version this build expects.
pub const SCHEMA_VERSION: i64 = 3;

/// Arbitrary constant key of the PostgreSQL advisory lock guarding migrations.
const PG_LOCK_KEY: i64 = 0x526f_7461_4d69_6772; // "RotaMigr"

impl Migration {
    fn sql(&self, dialect: Dialect) -> &'static str {
        match dialect {
            Dialect::Sqlite => self.sqlite,
            Dialect::Postgres => self.postgres,
            Dialect::MySql => self.mysql,
        }
    }
}

/// Splits a migration file into statements: `;` at the end of a line ends a statement; `--` lines are comments.
fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in sql.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("--") || trimmed.is_empty() {
            continue;
        }
        cur.push_str(line);
        cur.push('\n');
        if trimmed.ends_with(';') {
            let stmt = cur.trim().trim_end_matches(';').trim().to_owned();
            if !stmt.is_empty() {
                out.push(stmt);
            }
            cur.clear();
        }
    }
    let rest = cur.trim();
    if !rest.is_empty() {
        out.push(rest.to_owned());
    }
    out
}

const CREATE_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS rota_migrations (version BIGINT NOT NULL PRIMARY KEY, applied_at BIGINT NOT NULL)";

fn too_new(found: i64) -> rota_store::StoreError {
    backend(
        BackendErrorKind::Other,
        format!(
            "the database schema is at version {found}, newer than this build of Rota understands ({SCHEMA_VERSION}); \
             upgrade Rota"
        ),
    )
}

/// Applies every pending migration. Idempotent; safe when several processes start at once.
pub(crate) async fn run(pools: &Pools) -> StoreResult<()> {
    match pools {
        Pools::Sqlite(p) => {
            let mut conn = p.acquire().await.map_err(db_err)?;
            let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
            sqlx::query(CREATE_TABLE).execute(&mut *tx).await.map_err(db_err)?;
            let applied: Vec<i64> = sqlx::query("SELECT version FROM rota_migrations")
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?
                .iter()
                .map(|r| r.try_get::<i64, _>(0))
                .collect::<Result<_, _>>()
                .map_err(db_err)?;
            if let Some(max) = applied.iter().max().filter(|m| **m > SCHEMA_VERSION) {
                return Err(too_new(*max));
            }
            for m in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
                for stmt in statements(m.sql(Dialect::Sqlite)) {
                    sqlx::raw_sql(AssertSqlSafe(stmt)).execute(&mut *tx).await.map_err(db_err)?;
                }
                sqlx::query("INSERT INTO rota_migrations (version, applied_at) VALUES (?, ?)")
                    .bind(m.version)
                    .bind(Utc::now().timestamp_millis())
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                tracing::info!(version = m.version, "applied SQLite migration");
            }
            tx.commit().await.map_err(db_err)
        }
        Pools::Postgres(p) => {
            let mut conn = p.acquire().await.map_err(db_err)?;
            sqlx::query("SELECT pg_advisory_lock($1)").bind(PG_LOCK_KEY).execute(&mut *conn).await.map_err(db_err)?;
            let result = async {
                let mut tx = conn.begin().await.map_err(db_err)?;
                sqlx::query(CREATE_TABLE).execute(&mut *tx).await.map_err(db_err)?;
                let applied: Vec<i64> = sqlx::query("SELECT version FROM rota_migrations")
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db_err)?
                    .iter()
                    .map(|r| r.try_get::<i64, _>(0))
                    .collect::<Result<_, _>>()
                    .map_err(db_err)?;
                if let Some(max) = applied.iter().max().filter(|m| **m > SCHEMA_VERSION) {
                    return Err(too_new(*max));
                }
                for m in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
                    // PostgreSQL DDL is transactional: a migration applies completely or not at all.
                    for stmt in statements(m.sql(Dialect::Postgres)) {
                        sqlx::raw_sql(AssertSqlSafe(stmt)).execute(&mut *tx).await.map_err(db_err)?;
                    }
                    sqlx::query("INSERT INTO rota_migrations (version, applied_at) VALUES ($1, $2)")
                        .bind(m.version)
                        .bind(Utc::now().timestamp_millis())
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    tracing::info!(version = m.version, "applied PostgreSQL migration");
                }
                tx.commit().await.map_err(db_err)
            }
            .await;
            let unlock = sqlx::query("SELECT pg_advisory_unlock($1)").bind(PG_LOCK_KEY).execute(&mut *conn).await;
            if unlock.is_err() {
                // Do not return a connection that may still hold the lock to the pool.
                conn.close_on_drop();
            }
            result
        }
        Pools::MySql(p) => {
            let mut conn = p.acquire().await.map_err(db_err)?;
            let got: Option<i64> = sqlx::query("SELECT GET_LOCK('rota_migrations', 120)")
                .fetch_one(&mut *conn)
                .await
                .map_err(db_err)?
                .try_get(0)
                .map_err(db_err)?;
            if got != Some(1) {
                return Err(backend(
                    BackendErrorKind::Other,
                    "timed out waiting for another process to finish the database migrations",
                ));
            }
            let result = async {
                sqlx::query(CREATE_TABLE).execute(&mut *conn).await.map_err(db_err)?;
                let applied: Vec<i64> = sqlx::query("SELECT version FROM rota_migrations")
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(db_err)?
                    .iter()
                    .map(|r| r.try_get::<i64, _>(0))
                    .collect::<Result<_, _>>()
                    .map_err(db_err)?;
                if let Some(max) = applied.iter().max().filter(|m| **m > SCHEMA_VERSION) {
                    return Err(too_new(*max));
                }
                let version: String = sqlx::query("SELECT VERSION()")
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(db_err)?
                    .try_get(0)
                    .map_err(db_err)?;
                let mariadb = version.to_ascii_lowercase().contains("mariadb");
                for m in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
                    // MySQL DDL commits implicitly; the statements are idempotent so a crash mid-way is repaired by
                    // re-running the migration.
                    for stmt in statements(m.sql(Dialect::MySql)) {
                        // The exact (binary, no-pad) collation is `utf8mb4_nopad_bin` on MariaDB and
                        // `utf8mb4_0900_bin` on MySQL 8.
                        let stmt = if mariadb { stmt } else { stmt.replace("utf8mb4_nopad_bin", "utf8mb4_0900_bin") };
                        sqlx::raw_sql(AssertSqlSafe(stmt)).execute(&mut *conn).await.map_err(db_err)?;
                    }
                    sqlx::query("INSERT INTO rota_migrations (version, applied_at) VALUES (?, ?)")
                        .bind(m.version)
                        .bind(Utc::now().timestamp_millis())
                        .execute(&mut *conn)
                        .await
                        .map_err(db_err)?;
                    tracing::info!(version = m.version, "applied MySQL migration");
                }
                Ok(())
            }
            .await;
            let unlock = sqlx::query("SELECT RELEASE_LOCK('rota_migrations')").execute(&mut *conn).await;
            if unlock.is_err() {
                conn.close_on_drop();
            }
            result
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_splits_into_statements() {
        for m in MIGRATIONS {
            for d in [Dialect::Sqlite, Dialect::Postgres, Dialect::MySql] {
                let stmts = statements(m.sql(d));
                assert!(stmts.len() >= if m.version == 1 { 9 } else { 1 }, "{d:?}: {}", stmts.len());
                assert!(stmts.iter().all(|s| !s.contains(";\n") && !s.starts_with("--")), "{d:?}");
            }
        }
        assert_eq!(
            statements("-- c\nCREATE TABLE a (x INT);\n\nCREATE INDEX b ON a (x);"),
            ["CREATE TABLE a (x INT)", "CREATE INDEX b ON a (x)"]
        );
    }

    #[test]
    fn versions_are_increasing_and_end_at_schema_version() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
        assert_eq!(MIGRATIONS.last().map(|m| m.version), Some(SCHEMA_VERSION));
    }
}
