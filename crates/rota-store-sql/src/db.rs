//! The thin layer that lets the store logic be written once for three databases: a dialect (SQL differences),
//! an owned bind-argument type, a row accessor trait, pooled connections and transactions as enums over the
//! three sqlx drivers, and the mapping of sqlx errors to [`StoreError`] (with retry classification).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rota_store::{StoreError, StoreResult};
use sqlx::mysql::{MySql, MySqlConnection, MySqlPool, MySqlRow};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, PgPool, PgRow, Postgres};
use sqlx::sqlite::{Sqlite, SqliteConnection, SqlitePool, SqliteRow};
use sqlx::{AssertSqlSafe, Row as _, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};

/// The SQL dialect of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    Sqlite,
    Postgres,
    MySql,
}

impl Dialect {
    /// The name reported by `Store::backend_name`.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
            Dialect::MySql => "mysql",
        }
    }

    /// Null-safe equality operator (`a <op> b` is true when both are NULL).
    pub(crate) fn null_safe_eq(self) -> &'static str {
        match self {
            Dialect::Sqlite => "IS",
            Dialect::Postgres => "IS NOT DISTINCT FROM",
            Dialect::MySql => "<=>",
        }
    }

    /// Suffix taking an exclusive row lock on the rows a SELECT reads (SQLite serialises writers instead).
    pub(crate) fn for_update(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres | Dialect::MySql => " FOR UPDATE",
        }
    }

    /// Suffix taking a shared row lock on the rows a SELECT reads.
    pub(crate) fn for_share(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR SHARE",
            Dialect::MySql => " LOCK IN SHARE MODE",
        }
    }

    /// `INSERT … ON CONFLICT (target) DO UPDATE SET c = new value` (or MySQL's `ON DUPLICATE KEY UPDATE`).
    pub(crate) fn upsert_suffix(self, conflict: &str, update: &[&str]) -> String {
        match self {
            Dialect::Sqlite | Dialect::Postgres => {
                let sets: Vec<String> = update.iter().map(|c| format!("{c} = excluded.{c}")).collect();
                format!(" ON CONFLICT ({conflict}) DO UPDATE SET {}", sets.join(", "))
            }
            Dialect::MySql => {
                let sets: Vec<String> = update.iter().map(|c| format!("{c} = VALUES({c})")).collect();
                format!(" ON DUPLICATE KEY UPDATE {}", sets.join(", "))
            }
        }
    }

    /// A predicate "`col` starts with the bound prefix", with the arguments to bind (case-sensitive everywhere).
    pub(crate) fn starts_with(self, col: &str, prefix: &str) -> (String, Vec<Arg>) {
        match self {
            // SQLite's LIKE is ASCII-case-insensitive; compare the leading characters instead.
            Dialect::Sqlite => (format!("substr({col}, 1, length(?)) = ?"), vec![Arg::from(prefix), Arg::from(prefix)]),
            // PostgreSQL LIKE and MySQL LIKE on a binary collation are case-sensitive; `!` escapes wildcards.
            Dialect::Postgres | Dialect::MySql => {
                let mut pat = String::with_capacity(prefix.len() + 1);
                for c in prefix.chars() {
                    if matches!(c, '!' | '%' | '_') {
                        pat.push('!');
                    }
                    pat.push(c);
                }
                pat.push('%');
                (format!("{col} LIKE ? ESCAPE '!'"), vec![Arg::from(pat)])
            }
        }
    }

    /// Rewrites `?` placeholders into `$1, $2, …` for PostgreSQL. The SQL of this crate never contains a literal
    /// `?` inside a string, so a plain scan is enough.
    pub(crate) fn placeholders(self, sql: &str) -> String {
        if self != Dialect::Postgres {
            return sql.to_owned();
        }
        let mut out = String::with_capacity(sql.len() + 16);
        let mut n = 0;
        for c in sql.chars() {
            if c == '?' {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            } else {
                out.push(c);
            }
        }
        out
    }
}

/// `?, ?, …` with `n` placeholders.
pub(crate) fn marks(n: usize) -> String {
    let mut s = String::with_capacity(n * 3);
    for i in 0..n {
        if i > 0 {
            s.push_str(", ");
        }
        s.push('?');
    }
    s
}

// ---------------------------------------------------------------------------------------------------------------
// Arguments and rows
// ---------------------------------------------------------------------------------------------------------------

/// An owned bind argument. Every column of the schema is a BIGINT, a text or a boolean.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Arg {
    Int(Option<i64>),
    Text(Option<String>),
    Bool(bool),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}
impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        Arg::Int(v)
    }
}
impl From<u32> for Arg {
    fn from(v: u32) -> Self {
        Arg::Int(Some(i64::from(v)))
    }
}
impl From<bool> for Arg {
    fn from(v: bool) -> Self {
        Arg::Bool(v)
    }
}
impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(Some(v.to_owned()))
    }
}
impl From<&String> for Arg {
    fn from(v: &String) -> Self {
        Arg::Text(Some(v.clone()))
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(Some(v))
    }
}
impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        Arg::Text(v)
    }
}
impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Self {
        Arg::Text(v.map(str::to_owned))
    }
}
impl From<DateTime<Utc>> for Arg {
    fn from(v: DateTime<Utc>) -> Self {
        Arg::Int(Some(v.timestamp_millis()))
    }
}
impl From<Option<DateTime<Utc>>> for Arg {
    fn from(v: Option<DateTime<Utc>>) -> Self {
        Arg::Int(v.map(|t| t.timestamp_millis()))
    }
}

/// Builds a `Vec<Arg>` from heterogeneous values.
macro_rules! args {
    ($($v:expr),* $(,)?) => { vec![$($crate::db::Arg::from($v)),*] };
}
pub(crate) use args;

macro_rules! bind_args {
    ($q:expr, $args:expr) => {{
        let mut q = $q;
        for a in $args {
            q = match a {
                Arg::Int(v) => q.bind(v),
                Arg::Text(v) => q.bind(v),
                Arg::Bool(v) => q.bind(v),
            };
        }
        q
    }};
}

/// Typed column access by name, the same for every driver.
pub(crate) trait Row {
    fn int(&self, col: &str) -> StoreResult<i64>;
    fn opt_int(&self, col: &str) -> StoreResult<Option<i64>>;
    fn text(&self, col: &str) -> StoreResult<String>;
    fn opt_text(&self, col: &str) -> StoreResult<Option<String>>;
    fn boolean(&self, col: &str) -> StoreResult<bool>;

    fn time(&self, col: &str) -> StoreResult<DateTime<Utc>> {
        millis_to_time(self.int(col)?)
    }
    fn opt_time(&self, col: &str) -> StoreResult<Option<DateTime<Utc>>> {
        self.opt_int(col)?.map(millis_to_time).transpose()
    }
    fn uint(&self, col: &str) -> StoreResult<u32> {
        let v = self.int(col)?;
        u32::try_from(v).map_err(|_| corrupt(format!("column {col} holds {v}, expected a u32")))
    }
    fn json(&self, col: &str) -> StoreResult<serde_json::Value> {
        parse_json(col, &self.text(col)?)
    }
    fn opt_json(&self, col: &str) -> StoreResult<Option<serde_json::Value>> {
        self.opt_text(col)?.map(|s| parse_json(col, &s)).transpose()
    }
}

macro_rules! impl_row {
    ($t:ty) => {
        impl Row for $t {
            fn int(&self, col: &str) -> StoreResult<i64> {
                self.try_get::<i64, _>(col).map_err(db_err)
            }
            fn opt_int(&self, col: &str) -> StoreResult<Option<i64>> {
                self.try_get::<Option<i64>, _>(col).map_err(db_err)
            }
            fn text(&self, col: &str) -> StoreResult<String> {
                self.try_get::<String, _>(col).map_err(db_err)
            }
            fn opt_text(&self, col: &str) -> StoreResult<Option<String>> {
                self.try_get::<Option<String>, _>(col).map_err(db_err)
            }
            fn boolean(&self, col: &str) -> StoreResult<bool> {
                self.try_get::<bool, _>(col).map_err(db_err)
            }
        }
    };
}
impl_row!(SqliteRow);
impl_row!(PgRow);
impl_row!(MySqlRow);

pub(crate) fn millis_to_time(ms: i64) -> StoreResult<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| corrupt(format!("instant {ms} ms out of range")))
}

fn parse_json(col: &str, s: &str) -> StoreResult<serde_json::Value> {
    serde_json::from_str(s).map_err(|e| corrupt(format!("column {col} holds invalid JSON: {e}")))
}

pub(crate) fn to_json(v: &serde_json::Value) -> String {
    // Serialising a `Value` cannot fail.
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_owned())
}

// ---------------------------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------------------------

/// Classification of a backend error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendErrorKind {
    /// Deadlock, serialisation failure, lock timeout, SQLite busy: the whole transaction may be retried.
    Retryable,
    /// A unique constraint was violated.
    UniqueViolation,
    /// Anything else.
    Other,
}

/// The error inside [`StoreError::Backend`] for this crate: a sanitised message (never a connection string) and
/// a classification.
#[derive(Debug)]
pub struct BackendError {
    pub kind: BackendErrorKind,
    pub message: String,
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BackendError {}

pub(crate) fn backend(kind: BackendErrorKind, message: impl Into<String>) -> StoreError {
    StoreError::Backend(Box::new(BackendError { kind, message: message.into() }))
}

/// Stored data the store cannot decode.
pub(crate) fn corrupt(message: String) -> StoreError {
    backend(BackendErrorKind::Other, format!("unexpected data in the database: {message}"))
}

/// Maps a sqlx error, classifying deadlocks / serialisation failures / busy as retryable.
pub(crate) fn db_err(e: sqlx::Error) -> StoreError {
    let (kind, message) = match &e {
        sqlx::Error::Database(d) => {
            let code = d.code().map(|c| c.into_owned()).unwrap_or_default();
            let mut kind = match d.kind() {
                sqlx::error::ErrorKind::UniqueViolation => BackendErrorKind::UniqueViolation,
                _ => BackendErrorKind::Other,
            };
            if let Some(my) = d.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
                // 1213 deadlock, 1205 lock wait timeout, 1020 record changed (MariaDB snapshot isolation).
                if matches!(my.number(), 1213 | 1205 | 1020) {
                    kind = BackendErrorKind::Retryable;
                }
                (kind, format!("database error {} ({}): {}", my.number(), code, d.message()))
            } else {
                if d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().is_some() {
                    if matches!(code.as_str(), "40001" | "40P01" | "55P03") {
                        kind = BackendErrorKind::Retryable;
                    }
                } else if d.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                    // SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their extended codes.
                    if let Ok(n) = code.parse::<i64>()
                        && matches!(n & 0xff, 5 | 6)
                    {
                        kind = BackendErrorKind::Retryable;
                    }
                }
                (kind, format!("database error {code}: {}", d.message()))
            }
        }
        sqlx::Error::PoolTimedOut => {
            (BackendErrorKind::Other, "timed out waiting for a database connection from the pool".to_owned())
        }
        sqlx::Error::Configuration(_) => (BackendErrorKind::Other, "invalid database configuration".to_owned()),
        other => (BackendErrorKind::Other, other.to_string()),
    };
    backend(kind, message)
}

fn backend_kind(e: &StoreError) -> Option<BackendErrorKind> {
    match e {
        StoreError::Backend(b) => b.downcast_ref::<BackendError>().map(|b| b.kind),
        _ => None,
    }
}

pub(crate) fn is_retryable(e: &StoreError) -> bool {
    backend_kind(e) == Some(BackendErrorKind::Retryable)
}

pub(crate) fn is_unique_violation(e: &StoreError) -> bool {
    backend_kind(e) == Some(BackendErrorKind::UniqueViolation)
}

/// How many times a transaction that hit a deadlock / serialisation failure / busy database is re-run.
pub(crate) const MAX_RETRIES: u32 = 12;

/// Sleeps a short, jittered, growing time before retry number `attempt` (1-based).
pub(crate) async fn backoff(attempt: u32) {
    let base = 2u64.saturating_pow(attempt.min(7)); // 2 .. 128 ms
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let jitter = u64::from(nanos) % base.max(1);
    tokio::time::sleep(Duration::from_millis(base / 2 + jitter)).await;
}

// ---------------------------------------------------------------------------------------------------------------
// Pools, connections, transactions
// ---------------------------------------------------------------------------------------------------------------

/// The connection pool of one of the three drivers.
#[derive(Clone, Debug)]
pub(crate) enum Pools {
    Sqlite(SqlitePool),
    Postgres(PgPool),
    MySql(MySqlPool),
}

/// A borrowed connection of one of the three drivers: where the queries run.
pub(crate) enum Ex<'a> {
    Sqlite(&'a mut SqliteConnection),
    Postgres(&'a mut PgConnection),
    MySql(&'a mut MySqlConnection),
}

/// Outcome of a statement.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Done {
    pub rows: u64,
    /// SQLite: last inserted rowid; MySQL: the first AUTO_INCREMENT id of the last INSERT; PostgreSQL: 0.
    pub last_id: i64,
}

impl Ex<'_> {
    pub(crate) fn dialect(&self) -> Dialect {
        match self {
            Ex::Sqlite(_) => Dialect::Sqlite,
            Ex::Postgres(_) => Dialect::Postgres,
            Ex::MySql(_) => Dialect::MySql,
        }
    }

    pub(crate) async fn execute(&mut self, sql: &str, args: Vec<Arg>) -> StoreResult<Done> {
        let sql = AssertSqlSafe(self.dialect().placeholders(sql));
        match self {
            Ex::Sqlite(c) => {
                let r = bind_args!(sqlx::query(sql), args).execute(&mut **c).await.map_err(db_err)?;
                Ok(Done { rows: r.rows_affected(), last_id: r.last_insert_rowid() })
            }
            Ex::Postgres(c) => {
                let r = bind_args!(sqlx::query(sql), args).execute(&mut **c).await.map_err(db_err)?;
                Ok(Done { rows: r.rows_affected(), last_id: 0 })
            }
            Ex::MySql(c) => {
                let r = bind_args!(sqlx::query(sql), args).execute(&mut **c).await.map_err(db_err)?;
                Ok(Done { rows: r.rows_affected(), last_id: r.last_insert_id() as i64 })
            }
        }
    }

    pub(crate) async fn fetch_all<T>(
        &mut self,
        sql: &str,
        args: Vec<Arg>,
        f: impl Fn(&dyn Row) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>> {
        let sql = AssertSqlSafe(self.dialect().placeholders(sql));
        match self {
            Ex::Sqlite(c) => {
                let rows = bind_args!(sqlx::query(sql), args).fetch_all(&mut **c).await.map_err(db_err)?;
                rows.iter().map(|r| f(r)).collect()
            }
            Ex::Postgres(c) => {
                let rows = bind_args!(sqlx::query(sql), args).fetch_all(&mut **c).await.map_err(db_err)?;
                rows.iter().map(|r| f(r)).collect()
            }
            Ex::MySql(c) => {
                let rows = bind_args!(sqlx::query(sql), args).fetch_all(&mut **c).await.map_err(db_err)?;
                rows.iter().map(|r| f(r)).collect()
            }
        }
    }

    pub(crate) async fn fetch_opt<T>(
        &mut self,
        sql: &str,
        args: Vec<Arg>,
        f: impl Fn(&dyn Row) -> StoreResult<T>,
    ) -> StoreResult<Option<T>> {
        let sql = AssertSqlSafe(self.dialect().placeholders(sql));
        match self {
            Ex::Sqlite(c) => {
                let row = bind_args!(sqlx::query(sql), args).fetch_optional(&mut **c).await.map_err(db_err)?;
                row.as_ref().map(|r| f(r)).transpose()
            }
            Ex::Postgres(c) => {
                let row = bind_args!(sqlx::query(sql), args).fetch_optional(&mut **c).await.map_err(db_err)?;
                row.as_ref().map(|r| f(r)).transpose()
            }
            Ex::MySql(c) => {
                let row = bind_args!(sqlx::query(sql), args).fetch_optional(&mut **c).await.map_err(db_err)?;
                row.as_ref().map(|r| f(r)).transpose()
            }
        }
    }

    /// Runs an `INSERT` and returns the generated `id` (PostgreSQL: via `RETURNING id`).
    pub(crate) async fn insert_id(&mut self, sql: &str, args: Vec<Arg>) -> StoreResult<i64> {
        if self.dialect() == Dialect::Postgres {
            let sql = format!("{sql} RETURNING id");
            self.fetch_opt(&sql, args, |r| r.int("id"))
                .await?
                .ok_or_else(|| corrupt("INSERT … RETURNING returned no row".to_owned()))
        } else {
            Ok(self.execute(sql, args).await?.last_id)
        }
    }

    /// Runs a single-row `INSERT` that does nothing when it would violate the unique key `conflict`; returns the
    /// generated id (when `returning_id`; else 1) if a row was inserted, `None` if it already existed.
    ///
    /// PostgreSQL and SQLite use `ON CONFLICT (…) DO NOTHING`. MySQL runs a plain `INSERT` and treats a duplicate
    /// key error as "exists" (a failed statement does not abort a MySQL transaction, and unlike `INSERT IGNORE` it
    /// does not turn other errors into warnings).
    pub(crate) async fn insert_or_skip(
        &mut self,
        sql: &str,
        conflict: &str,
        returning_id: bool,
        args: Vec<Arg>,
    ) -> StoreResult<Option<i64>> {
        match self.dialect() {
            Dialect::Postgres => {
                let ret = if returning_id { "id" } else { "1 AS one" };
                let sql = format!("{sql} ON CONFLICT ({conflict}) DO NOTHING RETURNING {ret}");
                self.fetch_opt(&sql, args, |r| if returning_id { r.int("id") } else { Ok(1) }).await
            }
            Dialect::Sqlite => {
                let sql = format!("{sql} ON CONFLICT ({conflict}) DO NOTHING");
                let done = self.execute(&sql, args).await?;
                Ok((done.rows > 0).then_some(if returning_id { done.last_id } else { 1 }))
            }
            Dialect::MySql => match self.execute(sql, args).await {
                Ok(done) => Ok(Some(if returning_id { done.last_id } else { 1 })),
                Err(e) if is_unique_violation(&e) => Ok(None),
                Err(e) => Err(e),
            },
        }
    }
}

/// A connection checked out of the pool (for reads outside a transaction).
pub(crate) enum Conn {
    Sqlite(PoolConnection<Sqlite>),
    Postgres(PoolConnection<Postgres>),
    MySql(PoolConnection<MySql>),
}

impl Conn {
    pub(crate) fn ex(&mut self) -> Ex<'_> {
        match self {
            Conn::Sqlite(c) => Ex::Sqlite(c),
            Conn::Postgres(c) => Ex::Postgres(c),
            Conn::MySql(c) => Ex::MySql(c),
        }
    }
}

/// A write transaction. SQLite transactions start with `BEGIN IMMEDIATE` (taking the database's write lock up
/// front, so they never fail on a lock upgrade) and also hold the store's in-process writer mutex.
pub(crate) enum Tx {
    Sqlite(Transaction<'static, Sqlite>, Option<OwnedMutexGuard<()>>),
    Postgres(Transaction<'static, Postgres>),
    MySql(Transaction<'static, MySql>),
}

impl Tx {
    pub(crate) fn ex(&mut self) -> Ex<'_> {
        match self {
            Tx::Sqlite(t, _) => Ex::Sqlite(t),
            Tx::Postgres(t) => Ex::Postgres(t),
            Tx::MySql(t) => Ex::MySql(t),
        }
    }

    pub(crate) async fn commit(self) -> StoreResult<()> {
        match self {
            Tx::Sqlite(t, _guard) => t.commit().await.map_err(db_err),
            Tx::Postgres(t) => t.commit().await.map_err(db_err),
            Tx::MySql(t) => t.commit().await.map_err(db_err),
        }
    }

    pub(crate) async fn rollback(self) -> StoreResult<()> {
        match self {
            Tx::Sqlite(t, _guard) => t.rollback().await.map_err(db_err),
            Tx::Postgres(t) => t.rollback().await.map_err(db_err),
            Tx::MySql(t) => t.rollback().await.map_err(db_err),
        }
    }

    /// Commits on `Ok`, rolls back on `Err` (returning the original error).
    pub(crate) async fn finish<T>(self, r: StoreResult<T>) -> StoreResult<T> {
        match r {
            Ok(v) => {
                self.commit().await?;
                Ok(v)
            }
            Err(e) => {
                if let Err(rb) = self.rollback().await {
                    tracing::debug!(error = %rb, "rollback failed");
                }
                Err(e)
            }
        }
    }
}

impl Pools {
    pub(crate) async fn conn(&self) -> StoreResult<Conn> {
        Ok(match self {
            Pools::Sqlite(p) => Conn::Sqlite(p.acquire().await.map_err(db_err)?),
            Pools::Postgres(p) => Conn::Postgres(p.acquire().await.map_err(db_err)?),
            Pools::MySql(p) => Conn::MySql(p.acquire().await.map_err(db_err)?),
        })
    }

    pub(crate) async fn begin(&self, sqlite_writer: &Arc<Mutex<()>>) -> StoreResult<Tx> {
        Ok(match self {
            Pools::Sqlite(p) => {
                let guard = sqlite_writer.clone().lock_owned().await;
                let tx = p.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
                Tx::Sqlite(tx, Some(guard))
            }
            Pools::Postgres(p) => Tx::Postgres(p.begin().await.map_err(db_err)?),
            Pools::MySql(p) => Tx::MySql(p.begin().await.map_err(db_err)?),
        })
    }

    pub(crate) async fn close(&self) {
        match self {
            Pools::Sqlite(p) => p.close().await,
            Pools::Postgres(p) => p.close().await,
            Pools::MySql(p) => p.close().await,
        }
    }
}

/// Runs `$body` (an expression using `$tx: &mut Tx` that evaluates to `StoreResult<T>`, `?` allowed) in a write
/// transaction, committing on success and rolling back on error; re-runs the whole transaction on a retryable
/// backend error (deadlock, serialisation failure, busy), up to [`MAX_RETRIES`] times.
macro_rules! write_tx {
    ($store:expr, |$tx:ident| $body:expr) => {{
        let store = $store;
        let mut attempt: u32 = 0;
        loop {
            let res = async {
                let mut tx = store.pool.begin(&store.sqlite_writer).await?;
                let r = async {
                    let $tx = &mut tx;
                    $body
                }
                .await;
                tx.finish(r).await
            }
            .await;
            match res {
                Err(e) if attempt < $crate::db::MAX_RETRIES && $crate::db::is_retryable(&e) => {
                    attempt += 1;
                    tracing::debug!(attempt, error = %e, "retrying transaction");
                    $crate::db::backoff(attempt).await;
                }
                other => break other,
            }
        }
    }};
}
pub(crate) use write_tx;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_for_postgres() {
        assert_eq!(Dialect::Postgres.placeholders("a = ? AND b IN (?, ?)"), "a = $1 AND b IN ($2, $3)");
        assert_eq!(Dialect::MySql.placeholders("a = ?"), "a = ?");
        assert_eq!(marks(3), "?, ?, ?");
    }

    #[test]
    fn like_prefix_is_escaped() {
        let (sql, args) = Dialect::Postgres.starts_with("resource", "a_b%c!");
        assert_eq!(sql, "resource LIKE ? ESCAPE '!'");
        assert_eq!(args, vec![Arg::from("a!_b!%c!!%")]);
    }
}
