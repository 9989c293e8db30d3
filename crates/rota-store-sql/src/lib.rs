//! Rota's storage backends on SQL databases: **SQLite** (the embedded default), **PostgreSQL** and
//! **MySQL / MariaDB**, implementing every trait of [`rota_store::Store`] with one code base: the store logic is
//! written once against a small driver-neutral layer, and only a handful of SQL fragments differ per dialect
//! (placeholders, null-safe equality, upserts, `RETURNING`, row-lock clauses).
//!
//! # Connecting
//!
//! [`SqlStore::connect`] takes a URL and runs the embedded migrations before returning:
//!
//! | URL | Backend |
//! |-----|---------|
//! | `sqlite://path/to/rota.db?mode=rwc`, `sqlite:///abs/rota.db`, `sqlite:rota.db` | SQLite file |
//! | `sqlite::memory:` | SQLite in memory (one connection; the data lives as long as the store) |
//! | `postgres://user:pass@host:5432/db` (also `postgresql://`) | PostgreSQL 12+ |
//! | `mysql://user:pass@host:3306/db` (also `mariadb://`) | MySQL 8 / MariaDB 10.6+ (tested on MariaDB 10.11) |
//!
//! An SQLite file is created, with its parent directories, when missing (unless the URL says `mode=rw` or
//! `mode=ro`). SQLite connections use WAL journaling, `synchronous=NORMAL`, a 5 s busy timeout, a 32 MiB page cache
//! and foreign keys on. Writes are serialised: in-process by a mutex, across processes by `BEGIN IMMEDIATE`.
//! SQLite is for a single scheduler node ([`rota_store::Store::supports_cluster`] is `false`); PostgreSQL and
//! MySQL support clusters. MySQL sessions run at `READ COMMITTED`, like PostgreSQL's default, so both backends
//! have the same visibility rules (with binary logging on, MySQL then needs `binlog_format=ROW` or `MIXED`, the
//! defaults).
//!
//! # Migrations
//!
//! The schema lives in `migrations/{sqlite,postgres,mysql}/NNNN_*.sql` and is compiled in. Applied versions are
//! recorded in `rota_migrations(version, applied_at)`. Concurrent starts are serialised (PostgreSQL advisory
//! lock, MySQL `GET_LOCK`, SQLite `BEGIN IMMEDIATE`), so any number of processes may start at once. A database
//! whose schema is newer than the build is refused.
//!
//! # Schema and the indexes behind the scale claims
//!
//! Instants are stored as BIGINT milliseconds since the Unix epoch (the contract's precision), JSON documents
//! (task specs, params, outputs, labels, audit details) as text; the store never queries inside JSON. Text keys
//! compare exactly on every backend (MySQL tables use a binary no-pad collation).
//!
//! * `tasks(id, namespace, name, version, labels, spec, shard, next_fire_at, paused, …)`, unique
//!   `(namespace, name)`.
//!   * `tasks_due (shard, paused, next_fire_at, id)` + `(namespace, name, version)` (PostgreSQL: `INCLUDE`)
//!     answers [`due_tasks`](rota_store::TaskStore::due_tasks) (`shard = ? AND paused = false AND
//!     next_fire_at <= ? ORDER BY next_fire_at, id LIMIT ?`) as one *covering* index range scan that returns
//!     rows already in order and stops after `limit` entries: its cost depends on the page size, not on the
//!     number of tasks (PostgreSQL's index-only scan still visits the heap for pages changed since the last
//!     vacuum).
//!   * The primary key and `tasks_namespace (namespace, id)` serve keyset listing (`id > cursor ORDER BY id
//!     LIMIT n`), so a page deep in the table costs the same as the first.
//!   * `task_labels(task_id, label_key, label_value)` with index `(label_key, label_value, task_id)` serves label
//!     filters (`EXISTS` per label, repeating the keyset bound so the label index is entered at the cursor); the
//!     labels are also denormalised into `tasks.labels` so reads need no join.
//!   * `task_versions(task_id, version, spec, created_at)`: the version history.
//! * `runs(…)`, unique `(task_id, scheduled_at)` (which makes firing idempotent), with indexes `(task_id, id)`,
//!   `(namespace, name, id)`, `(state, id)` (history listing, newest first), `(shard, state, id)` (pending and
//!   in-flight work per shard), `(state, task_id, id)` (concurrency checks), `scheduled_at` (time ranges) and
//!   `finished_at` (pruning). `attempts` is unique on `(run_id, attempt, node)`; `run_logs(seq, run_id, …)` is
//!   indexed `(run_id, seq)`.
//! * `nodes(id, …, expires_at)`, `shard_leases(shard, owner, epoch, expires_at)`, `shard_fences(shard, epoch)`,
//!   `audit_log(id, occurred_at, actor, action, resource, source, detail)` with indexes per filter.
//! * `api_tokens(id, name, secret_hash, scope, created_at, created_by, expires_at, revoked_at)` (schema version
//!   3; only the SHA-256 of a token's secret, never the secret) and `role_bindings(subject_kind, subject,
//!   namespace, role, …)`, keys compared byte-wise.
//!
//! `crates/rota-store-sql/examples/store-bench.rs` measures these queries on a million tasks (see
//! `docs/benchmarks.md`).
//!
//! # Concurrency
//!
//! Every multi-statement operation runs in one transaction, rolled back on any error. Fence checks read the
//! shard's `shard_fences` row with a shared lock (`FOR SHARE` / `LOCK IN SHARE MODE`) in the same transaction as
//! the write, and a change of lease holder updates that row in the acquiring transaction, so a takeover waits for
//! in-flight fenced writes and vice versa. The epoch lives in its own table (schema version 2) so that lease
//! renewals, which update only `shard_leases.expires_at` for all of a node's shards in one transaction, never
//! queue behind fenced writes (with the epoch on the lease row, a renewal holding some rows while waiting for
//! others convoyed and deadlocked with fire batches under load). Sessions set `lock_timeout` 2 s and
//! `idle_in_transaction_session_timeout` 10 s (MySQL: `innodb_lock_wait_timeout` 2, `wait_timeout` 10), so a node
//! that stalls mid-transaction delays others by seconds, not until it wakes. `fire` compare-and-sets `next_fire_at`
//! with a null-safe comparison; run insertion relies on the unique key (`ON CONFLICT DO NOTHING`; MySQL: a
//! duplicate-key error, which does not abort the transaction); lease acquisition is a conditional `UPDATE` whose
//! `WHERE` clause is re-evaluated on the latest row version, so of N racing acquirers exactly one matches;
//! transitions read the run with `FOR UPDATE`. Appends to one run's log are serialised by a lock on the run row,
//! so sequence numbers within a run are assigned in commit order. Deadlocks, serialisation failures, lock
//! timeouts and SQLite busy errors re-run the whole transaction (up to 12 times, with jittered backoff), so callers
//! only see the outcomes the traits document.
//!
//! Listing pages are keyset pages over ids. On PostgreSQL and MySQL, ids are allocated before commit, so a row
//! created concurrently with a traversal may commit behind the cursor and be missed by that traversal (never
//! duplicated); the next traversal sees it.
//!
//! Beyond the contract: a run inserted as `skipped`, or moved into a terminal state without a `finished_at` in
//! the patch, gets `finished_at = now`, so [`prune_runs`](rota_store::RunStore::prune_runs) can find every
//! terminal run.
//!
//! Errors from the database become [`rota_store::StoreError::Backend`] wrapping a [`BackendError`] whose message
//! never contains the connection URL or credentials.

mod audit;
mod auth;
mod batch;
mod db;
mod leases;
mod migrate;
mod nodes;
mod runs;
mod tasks;

#[doc(hidden)]
pub mod testing;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rota_store::{Store, StoreError, StoreResult};
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Executor, Row as _};
use tokio::sync::Mutex;

pub use db::{BackendError, BackendErrorKind, Dialect};
pub use migrate::SCHEMA_VERSION;

use db::{Pools, backend, db_err};

/// Session settings of every PostgreSQL connection. A scheduler node that stalls (paused, swapped out, cut off)
/// in the middle of a transaction keeps its row locks until the server ends its session: `lock_timeout` makes the
/// other nodes' statements give up waiting after 2 s (and retry) instead of queueing behind it, and
/// `idle_in_transaction_session_timeout` ends such a session after 10 s, releasing its locks. Rota never keeps a
/// transaction open across anything slower than a statement, so neither fires in normal operation.
const SESSION_TIMEOUTS_PG: [(&str, &str); 2] = [("lock_timeout", "2s"), ("idle_in_transaction_session_timeout", "10s")];

/// The same for MySQL/MariaDB: `innodb_lock_wait_timeout` (seconds), and `wait_timeout`, after which the server
/// closes a connection idle for that long, rolling back its transaction (the pool checks connections before
/// reuse and closes idle ones sooner).
const SESSION_TIMEOUTS_MYSQL: &str = "SET SESSION innodb_lock_wait_timeout = 2, wait_timeout = 10";

/// Tuning knobs of [`SqlStore::connect_with`].
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Maximum pooled connections (default: 10 for PostgreSQL and MySQL, 8 for an SQLite file, 1 in memory).
    pub max_connections: Option<u32>,
    /// How long to wait for a pooled connection (default 30 s).
    pub acquire_timeout: Duration,
    /// Whether to run the embedded migrations (default true).
    pub migrate: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions { max_connections: None, acquire_timeout: Duration::from_secs(30), migrate: true }
    }
}

/// A Rota store on SQLite, PostgreSQL or MySQL/MariaDB. Cheap to clone (clones share the pool).
#[derive(Clone)]
pub struct SqlStore {
    pub(crate) pool: Pools,
    pub(crate) dialect: Dialect,
    /// Serialises SQLite write transactions inside the process (unused for the server databases).
    pub(crate) sqlite_writer: Arc<Mutex<()>>,
}

impl std::fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore").field("dialect", &self.dialect).finish_non_exhaustive()
    }
}

fn invalid_url(reason: impl Into<String>) -> StoreError {
    StoreError::InvalidArgument { field: "database url", reason: reason.into() }
}

/// The backend a URL designates, from its scheme.
pub fn dialect_of_url(url: &str) -> StoreResult<Dialect> {
    let scheme = url.split(':').next().unwrap_or("").to_ascii_lowercase();
    match scheme.as_str() {
        "sqlite" => Ok(Dialect::Sqlite),
        "postgres" | "postgresql" => Ok(Dialect::Postgres),
        "mysql" | "mariadb" => Ok(Dialect::MySql),
        _ => Err(invalid_url("unsupported scheme (expected sqlite:, postgres:, postgresql:, mysql: or mariadb:)")),
    }
}

/// Opens a SQLite pool, retrying while the database is busy. Switching a fresh file to WAL takes a lock that
/// SQLite does not wait for with the busy handler, so processes opening a new database at the same moment can
/// get `SQLITE_BUSY` at once; they retry for up to the busy timeout instead of failing.
async fn connect_sqlite(pool: SqlitePoolOptions, opts: SqliteConnectOptions) -> Result<sqlx::SqlitePool, sqlx::Error> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match pool.clone().connect_with(opts.clone()).await {
            Err(sqlx::Error::Database(e))
                if e.code().and_then(|c| c.parse::<i32>().ok()).is_some_and(|c| c & 0xff == 5)
                    && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

impl SqlStore {
    /// Connects to the database at `url` (see the crate docs for the accepted forms) and applies the embedded
    /// migrations.
    pub async fn connect(url: &str) -> StoreResult<SqlStore> {
        Self::connect_with(url, ConnectOptions::default()).await
    }

    /// [`SqlStore::connect`] with explicit options.
    pub async fn connect_with(url: &str, options: ConnectOptions) -> StoreResult<SqlStore> {
        let dialect = dialect_of_url(url)?;
        let pool = match dialect {
            Dialect::Sqlite => {
                let mut opts = SqliteConnectOptions::from_str(url)
                    .map_err(|_| invalid_url("malformed SQLite URL"))?
                    .busy_timeout(Duration::from_secs(5))
                    .foreign_keys(true);
                // Without an explicit `mode=`, create the database like `mode=rwc` would.
                if !url.split_once('?').is_some_and(|(_, q)| q.split('&').any(|p| p.starts_with("mode="))) {
                    opts = opts.create_if_missing(true);
                }
                let in_memory = url.contains(":memory:")
                    || url.contains("mode=memory")
                    || opts.get_filename().as_os_str().is_empty();
                let opts = if in_memory {
                    opts
                } else {
                    if let Some(parent) = opts.get_filename().parent().filter(|p| !p.as_os_str().is_empty())
                        && !parent.exists()
                    {
                        std::fs::create_dir_all(parent).map_err(|e| {
                            backend(
                                BackendErrorKind::Other,
                                format!("cannot create the directory of the SQLite database: {e}"),
                            )
                        })?;
                    }
                    // A 32 MiB page cache per connection (allocated as used) keeps the hot index pages of a
                    // million-task database in memory instead of re-reading them from the OS cache.
                    opts.journal_mode(SqliteJournalMode::Wal)
                        .synchronous(SqliteSynchronous::Normal)
                        .pragma("cache_size", "-32768")
                };
                let pool_opts = SqlitePoolOptions::new().acquire_timeout(options.acquire_timeout);
                let pool_opts = if in_memory {
                    // Every connection to `:memory:` would be its own database unless shared; keep exactly one
                    // connection alive for the lifetime of the store.
                    pool_opts.max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None)
                } else {
                    pool_opts.max_connections(options.max_connections.unwrap_or(8))
                };
                Pools::Sqlite(connect_sqlite(pool_opts, opts).await.map_err(connect_err("SQLite"))?)
            }
            Dialect::Postgres => {
                let opts = PgConnectOptions::from_str(url)
                    .map_err(|_| invalid_url("malformed PostgreSQL URL"))?
                    .options(SESSION_TIMEOUTS_PG);
                let pool = PgPoolOptions::new()
                    .max_connections(options.max_connections.unwrap_or(10))
                    .acquire_timeout(options.acquire_timeout)
                    .connect_with(opts)
                    .await
                    .map_err(connect_err("PostgreSQL"))?;
                Pools::Postgres(pool)
            }
            Dialect::MySql => {
                let url = match url.strip_prefix("mariadb:") {
                    Some(rest) => format!("mysql:{rest}"),
                    None => url.to_owned(),
                };
                let opts = MySqlConnectOptions::from_str(&url).map_err(|_| invalid_url("malformed MySQL URL"))?;
                let pool = MySqlPoolOptions::new()
                    .max_connections(options.max_connections.unwrap_or(10))
                    .acquire_timeout(options.acquire_timeout)
                    .idle_timeout(Duration::from_secs(5))
                    .test_before_acquire(true)
                    .after_connect(|conn, _meta| {
                        Box::pin(async move {
                            conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED").await?;
                            conn.execute(SESSION_TIMEOUTS_MYSQL).await?;
                            Ok(())
                        })
                    })
                    .connect_with(opts)
                    .await
                    .map_err(connect_err("MySQL"))?;
                Pools::MySql(pool)
            }
        };
        let store = SqlStore { pool, dialect, sqlite_writer: Arc::new(Mutex::new(())) };
        if options.migrate {
            migrate::run(&store.pool).await?;
        }
        Ok(store)
    }

    /// Opens (creating if needed) an SQLite database file.
    pub async fn open_sqlite(path: impl AsRef<Path>) -> StoreResult<SqlStore> {
        let path = path.as_ref().to_str().ok_or_else(|| invalid_url("the SQLite path is not valid UTF-8"))?;
        let mut url = String::from("sqlite://");
        for c in path.chars() {
            match c {
                '?' => url.push_str("%3F"),
                '#' => url.push_str("%23"),
                '%' => url.push_str("%25"),
                c => url.push(c),
            }
        }
        url.push_str("?mode=rwc");
        Self::connect(&url).await
    }

    /// The dialect of this store.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Applies pending migrations (done by `connect` unless disabled in [`ConnectOptions`]).
    pub async fn migrate(&self) -> StoreResult<()> {
        migrate::run(&self.pool).await
    }

    /// The schema version recorded in the database (0 when no migration was applied).
    pub async fn schema_version(&self) -> StoreResult<i64> {
        let mut c = self.pool.conn().await?;
        c.ex()
            .fetch_opt("SELECT MAX(version) AS v FROM rota_migrations", vec![], |r| r.opt_int("v"))
            .await
            .map(|v| v.flatten().unwrap_or(0))
    }

    /// Refreshes the query planner's statistics (`ANALYZE`; PostgreSQL: `VACUUM (ANALYZE)`); worth running after a
    /// bulk load. The databases also do this on their own over time (PostgreSQL autovacuum, InnoDB persistent
    /// statistics).
    pub async fn analyze(&self) -> StoreResult<()> {
        match &self.pool {
            Pools::Sqlite(p) => sqlx::raw_sql("ANALYZE").execute(p).await.map(|_| ()),
            // VACUUM also sets the visibility map, which index-only scans (the covering due index) rely on.
            Pools::Postgres(p) => {
                sqlx::raw_sql("VACUUM (ANALYZE) tasks, task_labels, task_versions, runs").execute(p).await.map(|_| ())
            }
            Pools::MySql(p) => {
                sqlx::raw_sql("ANALYZE TABLE tasks, task_labels, task_versions, runs").execute(p).await.map(|_| ())
            }
        }
        .map_err(db_err)
    }

    /// Closes the pool (waits for checked-out connections to come back).
    pub async fn close(&self) {
        self.pool.close().await
    }
}

fn connect_err(what: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| {
        // Keep the driver's reason (it never contains the URL) and name the backend, not the address.
        let reason = match db_err(e) {
            StoreError::Backend(b) => b.to_string(),
            other => other.to_string(),
        };
        backend(BackendErrorKind::Other, format!("cannot connect to {what}: {reason}"))
    }
}

#[async_trait]
impl Store for SqlStore {
    async fn ping(&self) -> StoreResult<()> {
        match &self.pool {
            Pools::Sqlite(p) => sqlx::query("SELECT 1").fetch_one(p).await.map(|r| r.len()),
            Pools::Postgres(p) => sqlx::query("SELECT 1").fetch_one(p).await.map(|r| r.len()),
            Pools::MySql(p) => sqlx::query("SELECT 1").fetch_one(p).await.map(|r| r.len()),
        }
        .map(|_| ())
        .map_err(db_err)
    }

    fn backend_name(&self) -> &'static str {
        self.dialect.name()
    }

    fn supports_cluster(&self) -> bool {
        self.dialect != Dialect::Sqlite
    }
}

/// Length limits (in characters) of the indexed text columns, enforced identically on every backend (MySQL
/// needs bounded `VARCHAR`s for its indexes).
pub mod limits {
    /// Namespaces, names, node ids, services, actors, actions, owners, attempt node names, audit sources.
    pub const NAME: usize = 255;
    pub const LABEL_KEY: usize = 320;
    pub const LABEL_VALUE: usize = 255;
    pub const RESOURCE: usize = 512;
    pub const ADDRESS: usize = 1024;
    pub const SHORT: usize = 64;
}

pub(crate) fn check_len(field: &'static str, value: &str, max: usize) -> StoreResult<()> {
    if value.chars().count() > max {
        return Err(StoreError::InvalidArgument { field, reason: format!("must be at most {max} characters") });
    }
    Ok(())
}
