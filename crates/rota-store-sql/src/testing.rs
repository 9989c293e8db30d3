//! Test support (not a stable API): fresh, empty stores of each backend for this crate's conformance tests and for
//! other crates' tests (scheduler, API).
//!
//! * SQLite: a new database file in a new directory under the system temp dir.
//! * PostgreSQL: `CREATE DATABASE rota_t_<unique>` on the server of `ROTA_TEST_POSTGRES_URL`
//!   (default `postgres://postgres@127.0.0.1:5432/postgres`).
//! * MySQL / MariaDB: `CREATE DATABASE rota_t_<unique>` on the server of `ROTA_TEST_MYSQL_URL`
//!   (default `mysql://root@127.0.0.1:3306/test`).
//!
//! An unreachable server is a test failure, never a skip; the panic message names the missing service and the
//! variable to set. SQLite directories older than an hour are removed by the next test process. Server test
//! databases are not dropped by the tests (a store may outlive its test function);
//! `scripts/test.sh` drops every `rota_t_%` database on both servers with `psql`/`mysql` before each run. The
//! equivalent SQL:
//!
//! ```sql
//! -- PostgreSQL (13+), for each row of: SELECT datname FROM pg_database WHERE datname LIKE 'rota\_t\_%';
//! DROP DATABASE IF EXISTS "rota_t_…" WITH (FORCE);
//! -- MySQL, for each row of: SHOW DATABASES LIKE 'rota\_t\_%';
//! DROP DATABASE IF EXISTS `rota_t_…`;
//! ```

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::{Connection, Executor};

use crate::SqlStore;

/// Environment variable naming the PostgreSQL server used by tests.
pub const POSTGRES_URL_ENV: &str = "ROTA_TEST_POSTGRES_URL";
/// Environment variable naming the MySQL / MariaDB server used by tests.
pub const MYSQL_URL_ENV: &str = "ROTA_TEST_MYSQL_URL";
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const DEFAULT_MYSQL_URL: &str = "mysql://root@127.0.0.1:3306/test";
/// Prefix of every database the tests create.
pub const TEST_DB_PREFIX: &str = "rota_t_";

/// The three backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    Sqlite,
    Postgres,
    MySql,
}

impl Backend {
    pub const ALL: [Backend; 3] = [Backend::Sqlite, Backend::Postgres, Backend::MySql];

    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
            Backend::MySql => "mysql",
        }
    }
}

/// The admin URL of the PostgreSQL test server.
pub fn postgres_url() -> String {
    std::env::var(POSTGRES_URL_ENV).ok().filter(|s| !s.is_empty()).unwrap_or_else(|| DEFAULT_POSTGRES_URL.to_owned())
}

/// The admin URL of the MySQL test server.
pub fn mysql_url() -> String {
    std::env::var(MYSQL_URL_ENV).ok().filter(|s| !s.is_empty()).unwrap_or_else(|| DEFAULT_MYSQL_URL.to_owned())
}

/// A URL with its password replaced by `***`, for messages.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "<unparseable url>".to_owned(),
    }
}

/// A suffix unique across processes and calls: `<pid>_<nanos>_<counter>`.
pub fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{}_{}_{}", std::process::id(), nanos % 1_000_000_000_000, COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Prefix of the temp-dir directories holding the tests' SQLite databases.
pub const SQLITE_DIR_PREFIX: &str = "rota-test-";

/// A path for a new SQLite database file, in a new (not yet created) directory under the temp dir. The first call
/// in a process also removes such directories left behind more than an hour ago, so they do not pile up.
pub fn fresh_sqlite_path() -> PathBuf {
    static CLEANUP: std::sync::Once = std::sync::Once::new();
    CLEANUP.call_once(|| {
        remove_stale_sqlite_dirs(std::time::Duration::from_secs(3600));
    });
    std::env::temp_dir().join(format!("{SQLITE_DIR_PREFIX}{}", unique_suffix())).join("rota.db")
}

/// Removes the tests' SQLite directories (see [`fresh_sqlite_path`]) last modified more than `older_than` ago.
/// Returns how many were removed; errors (e.g. a directory removed concurrently) are ignored.
pub fn remove_stale_sqlite_dirs(older_than: std::time::Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return 0 };
    let mut removed = 0;
    for e in entries.flatten() {
        let stale = e.file_name().to_str().is_some_and(|n| n.starts_with(SQLITE_DIR_PREFIX))
            && e.metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > older_than);
        if stale && std::fs::remove_dir_all(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// `url` with its database (path) replaced by `db`.
fn with_database(url: &str, db: &str) -> Result<String, String> {
    let mut u = url::Url::parse(url).map_err(|_| format!("malformed test database URL {}", redact(url)))?;
    u.set_path(&format!("/{db}"));
    Ok(u.to_string())
}

fn ci() -> bool {
    std::env::var("CI").map(|v| v == "true" || v == "1").unwrap_or(false)
}

fn missing(service: &str, env: &str, url: &str, err: impl std::fmt::Display) -> String {
    format!(
        "{service} is required by the tests but is not reachable at {} (set {env} to point elsewhere): {err}. \
         Tests never skip for a missing service{}; start it (scripts/test.sh starts both servers).",
        redact(url),
        if ci() { " (CI=true)" } else { "" },
    )
}

/// The URL of a new SQLite database file (not created yet: connecting creates it and its directory).
pub fn fresh_sqlite_url() -> String {
    format!("sqlite://{}?mode=rwc", fresh_sqlite_path().display())
}

/// Creates a new, empty PostgreSQL database on the test server and returns its URL.
pub async fn fresh_postgres_url() -> Result<String, String> {
    let admin = postgres_url();
    let db = format!("{TEST_DB_PREFIX}{}", unique_suffix());
    let mut conn =
        sqlx::PgConnection::connect(&admin).await.map_err(|e| missing("PostgreSQL", POSTGRES_URL_ENV, &admin, e))?;
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{db}\"")))
        .await
        .map_err(|e| format!("cannot create PostgreSQL test database {db}: {e}"))?;
    let _ = conn.close().await;
    with_database(&admin, &db)
}

/// Creates a new, empty MySQL / MariaDB database on the test server and returns its URL.
pub async fn fresh_mysql_url() -> Result<String, String> {
    let admin = mysql_url();
    let db = format!("{TEST_DB_PREFIX}{}", unique_suffix());
    let mut conn =
        sqlx::MySqlConnection::connect(&admin).await.map_err(|e| missing("MySQL/MariaDB", MYSQL_URL_ENV, &admin, e))?;
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE `{db}` CHARACTER SET utf8mb4")))
        .await
        .map_err(|e| format!("cannot create MySQL test database {db}: {e}"))?;
    let _ = conn.close().await;
    with_database(&admin, &db)
}

/// The URL of a new, empty database of the given backend (created on the server for PostgreSQL and MySQL).
pub async fn fresh_url(backend: Backend) -> Result<String, String> {
    match backend {
        Backend::Sqlite => Ok(fresh_sqlite_url()),
        Backend::Postgres => fresh_postgres_url().await,
        Backend::MySql => fresh_mysql_url().await,
    }
}

/// A fresh store of the given backend, or an error message naming what is missing.
pub async fn try_fresh(backend: Backend) -> Result<SqlStore, String> {
    let url = fresh_url(backend).await?;
    SqlStore::connect(&url)
        .await
        .map_err(|e| format!("cannot open the {} test database {}: {e}", backend.name(), redact(&url)))
}

/// A fresh store of the given backend; panics (failing the test) if it cannot be created.
pub async fn fresh(backend: Backend) -> SqlStore {
    match try_fresh(backend).await {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

/// A fresh SQLite store; panics on failure.
pub async fn fresh_sqlite() -> SqlStore {
    fresh(Backend::Sqlite).await
}

/// A fresh PostgreSQL store; panics (naming the service) if the server is unreachable.
pub async fn fresh_postgres() -> SqlStore {
    fresh(Backend::Postgres).await
}

/// A fresh MySQL store; panics (naming the service) if the server is unreachable.
pub async fn fresh_mysql() -> SqlStore {
    fresh(Backend::MySql).await
}
