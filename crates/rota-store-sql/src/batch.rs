//! The scheduler's hot path, set-based: [`fire_batch`](rota_store::TaskStore::fire_batch),
//! [`start_attempt(s)`](rota_store::RunStore::start_attempts), [`complete_attempt(s)`](rota_store::RunStore::complete_attempts)
//! and `transition_run`, each call (each batch) in **one** transaction with a constant number of statements.
//!
//! Every engine below works on many items at once and the single-item methods are the same engine with one item,
//! so a batch of one and a single call behave identically. The shape of each engine:
//!
//! 1. Per-item validation (lengths, states) before the transaction: a bad item fails alone.
//! 2. One fence read for every distinct shard of the batch (`FOR SHARE`, held to the end of the transaction).
//! 3. Items are split into *rounds*: two items touching the same task / run / attempt go to successive rounds, in
//!    request order, so a batch means exactly "these calls, one after the other" (the default implementations'
//!    semantics) while independent items share statements.
//! 4. Per round: read (and lock, `FOR UPDATE`) the rows the items depend on with one `SELECT … IN (…)`, decide
//!    every item's outcome in Rust, then write only the items that succeed with multi-row statements. A failing
//!    item is always decided before anything is written for it, so it writes nothing and needs no savepoint.
//!
//! Lock order is the same everywhere (lease rows, then tasks, then runs, then attempts; ids ascending within a
//! table), which keeps deadlocks between concurrent batches rare; when they happen (or on serialization failures /
//! SQLite busy) the whole batch is re-run by `write_tx!`.
//!
//! Round trips per round (`n` items): PostgreSQL and SQLite use `UPDATE … FROM (VALUES …) RETURNING` and
//! `INSERT … ON CONFLICT DO NOTHING RETURNING`, so a fire round is 2 statements, a start round 3 and a complete
//! round 4. MySQL has neither `RETURNING` nor `UPDATE … FROM VALUES`: it locks with `SELECT … FOR UPDATE`, updates
//! through a join with a derived table, and reads generated ids back with one `SELECT` by unique key.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;

use chrono::{DateTime, Utc};
use rota_store::{
    AttemptRecord, AttemptState, CompleteAttempt, Fence, FireOutcome, FireRequest, NewAttempt, NewRun, RunRecord,
    StoreError, StoreResult, Transition, truncate_millis,
};

use crate::db::{
    Arg, BackendErrorKind, Ex, Row, args, backend, corrupt, is_unique_violation, marks, to_json, write_tx,
};
use crate::runs::{ATTEMPT_COLS, RUN_COLS, decode_attempt, decode_run, validate_new_run};
use crate::{Dialect, SqlStore, check_len, limits};

/// Most rows (items) per multi-row statement: keeps every statement far below the bind-parameter limits
/// (SQLite 32766, PostgreSQL and MySQL 65535) with the widest rows used here (14 parameters).
const CHUNK: usize = 500;

/// MySQL: up to this many rows, insert one statement per row (a duplicate-key error per row, the id from
/// `LAST_INSERT_ID()`, one round trip each) instead of the three round trips of the multi-row path.
const MYSQL_ROW_BY_ROW: usize = 2;

type Outcomes<T> = Vec<Option<StoreResult<T>>>;

// ---------------------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------------------

/// Splits `items` (index, keys) into rounds: an item goes one round after the last earlier item sharing a key.
fn rounds<K: Hash + Eq>(items: impl IntoIterator<Item = (usize, Vec<K>)>) -> Vec<Vec<usize>> {
    let mut last: HashMap<K, usize> = HashMap::new();
    let mut out: Vec<Vec<usize>> = Vec::new();
    for (i, keys) in items {
        let r = keys.iter().filter_map(|k| last.get(k)).map(|r| r + 1).max().unwrap_or(0);
        for k in keys {
            last.insert(k, r);
        }
        if out.len() <= r {
            out.resize_with(r + 1, Vec::new);
        }
        out[r].push(i);
    }
    out
}

fn id_args(ids: &[i64]) -> Vec<Arg> {
    ids.iter().map(|i| Arg::from(*i)).collect()
}

/// Outcomes of items that failed validation plus those decided in the transaction, in request order.
fn merge<T>(pre: Outcomes<T>, done: Outcomes<T>) -> Vec<StoreResult<T>> {
    pre.into_iter()
        .zip(done)
        .map(|(p, d)| p.or(d).unwrap_or_else(|| Err(corrupt("batch item left without an outcome".to_owned()))))
        .collect()
}

fn empty<T>(n: usize) -> Outcomes<T> {
    (0..n).map(|_| None).collect()
}

/// Reads the current epoch of every shard fenced by the batch, with a shared lock on their `shard_fences` rows.
async fn load_fences(
    ex: &mut Ex<'_>,
    dialect: Dialect,
    fences: impl IntoIterator<Item = Option<Fence>>,
) -> StoreResult<HashMap<u32, i64>> {
    let shards: BTreeSet<u32> = fences.into_iter().flatten().map(|f| f.shard).collect();
    let shards: Vec<u32> = shards.into_iter().collect();
    let mut map = HashMap::with_capacity(shards.len());
    for chunk in shards.chunks(CHUNK) {
        let sql = format!(
            "SELECT shard, epoch FROM shard_fences WHERE shard IN ({}){}",
            marks(chunk.len()),
            dialect.for_share()
        );
        let rows = ex
            .fetch_all(&sql, chunk.iter().map(|s| Arg::from(*s)).collect(), |r| Ok((r.uint("shard")?, r.int("epoch")?)))
            .await?;
        map.extend(rows);
    }
    Ok(map)
}

fn fence_ok(epochs: &HashMap<u32, i64>, fence: Option<Fence>) -> StoreResult<()> {
    match fence {
        Some(f) if epochs.get(&f.shard) != Some(&f.epoch) => Err(StoreError::Fenced { shard: f.shard, epoch: f.epoch }),
        _ => Ok(()),
    }
}

/// Reads (and locks) the runs among `ids` that are not cached yet; unknown ids are cached as `None`.
async fn load_runs(
    ex: &mut Ex<'_>,
    dialect: Dialect,
    ids: impl IntoIterator<Item = i64>,
    cache: &mut HashMap<i64, Option<RunRecord>>,
) -> StoreResult<()> {
    let want: BTreeSet<i64> = ids.into_iter().filter(|id| !cache.contains_key(id)).collect();
    let want: Vec<i64> = want.into_iter().collect();
    for chunk in want.chunks(CHUNK) {
        let sql = format!("SELECT {RUN_COLS} FROM runs WHERE id IN ({}){}", marks(chunk.len()), dialect.for_update());
        for r in ex.fetch_all(&sql, id_args(chunk), decode_run).await? {
            cache.insert(r.id, Some(r));
        }
        for id in chunk {
            cache.entry(*id).or_insert(None);
        }
    }
    Ok(())
}

/// Reads (and locks) the attempts among `ids` that are not cached yet; unknown ids are cached as `None`.
async fn load_attempts(
    ex: &mut Ex<'_>,
    dialect: Dialect,
    ids: impl IntoIterator<Item = i64>,
    cache: &mut HashMap<i64, Option<AttemptRecord>>,
) -> StoreResult<()> {
    let want: BTreeSet<i64> = ids.into_iter().filter(|id| !cache.contains_key(id)).collect();
    let want: Vec<i64> = want.into_iter().collect();
    for chunk in want.chunks(CHUNK) {
        let sql =
            format!("SELECT {ATTEMPT_COLS} FROM attempts WHERE id IN ({}){}", marks(chunk.len()), dialect.for_update());
        for a in ex.fetch_all(&sql, id_args(chunk), decode_attempt).await? {
            cache.insert(a.id, Some(a));
        }
        for id in chunk {
            cache.entry(*id).or_insert(None);
        }
    }
    Ok(())
}

fn cached<T>(cache: &HashMap<i64, Option<T>>, id: i64) -> Option<&T> {
    cache.get(&id).and_then(Option::as_ref)
}

/// Checks a transition against the (locked) current run, in the documented order — `NotFound`, `Fenced`,
/// `Conflict`, `InvalidTransition` — and returns the run as it is after the transition.
fn apply_transition(t: &Transition, current: Option<&RunRecord>, epochs: &HashMap<u32, i64>) -> StoreResult<RunRecord> {
    let Some(cur) = current else { return Err(StoreError::not_found("run", t.run_id)) };
    fence_ok(epochs, t.fence)?;
    if !t.from.contains(&cur.state) {
        let expected: Vec<&str> = t.from.iter().map(|s| s.as_str()).collect();
        return Err(StoreError::conflict(
            "run",
            t.run_id,
            format!("run is {}, expected one of [{}]", cur.state, expected.join(", ")),
        ));
    }
    if !cur.state.can_transition_to(t.to) {
        return Err(StoreError::InvalidTransition { run_id: t.run_id, from: cur.state, to: t.to });
    }
    let now = truncate_millis(t.now);
    let p = &t.patch;
    let mut r = cur.clone();
    r.state = t.to;
    r.updated_at = now;
    if let Some(v) = p.next_attempt_at {
        r.next_attempt_at = v.map(truncate_millis);
    }
    if let Some(v) = p.attempts {
        r.attempts = v;
    }
    if let Some(v) = &p.output {
        r.output = Some(v.clone());
    }
    if let Some(v) = &p.error {
        r.error = Some(v.clone());
    }
    if let Some(v) = &p.reason {
        r.reason = Some(v.clone());
    }
    if let Some(v) = &p.owner {
        r.owner = v.clone();
    }
    if let Some(v) = p.started_at {
        r.started_at = Some(truncate_millis(v));
    }
    if let Some(v) = p.finished_at {
        r.finished_at = Some(truncate_millis(v));
    } else if t.to.is_terminal() && r.finished_at.is_none() {
        // Terminal runs always carry a finish time (pruning relies on it).
        r.finished_at = Some(now);
    }
    Ok(r)
}

fn validate_transition(t: &Transition) -> StoreResult<()> {
    if let Some(Some(owner)) = &t.patch.owner {
        check_len("owner", owner, limits::NAME)?;
    }
    Ok(())
}

/// `UPDATE table SET cols… WHERE id = …` for many rows at once; each row is `[id, value per column]`.
///
/// PostgreSQL and SQLite: `WITH v(…) AS (VALUES …) UPDATE … FROM v`. MySQL: a join with a `UNION ALL` derived
/// table (integers cast so the join stays an index lookup). One row: a plain `UPDATE`.
async fn bulk_update(
    ex: &mut Ex<'_>,
    dialect: Dialect,
    table: &str,
    cols: &[&str],
    rows: Vec<Vec<Arg>>,
) -> StoreResult<()> {
    for chunk in rows.chunks(CHUNK) {
        let mut a: Vec<Arg> = Vec::with_capacity(chunk.len() * (cols.len() + 1));
        let sql = if chunk.len() == 1 {
            let sets: Vec<String> = cols.iter().map(|c| format!("{c} = ?")).collect();
            a.extend(chunk[0][1..].iter().cloned());
            a.push(chunk[0][0].clone());
            format!("UPDATE {table} SET {} WHERE id = ?", sets.join(", "))
        } else {
            for row in chunk {
                a.extend(row.iter().cloned());
            }
            match dialect {
                Dialect::Postgres | Dialect::Sqlite => {
                    let tuple = format!("({})", marks(cols.len() + 1));
                    let values = vec![tuple.as_str(); chunk.len()].join(", ");
                    let names: Vec<String> = cols.iter().map(|c| format!("v_{c}")).collect();
                    let sets: Vec<String> = cols.iter().map(|c| format!("{c} = v.v_{c}")).collect();
                    format!(
                        "WITH v(v_id, {}) AS (VALUES {values}) UPDATE {table} SET {} FROM v WHERE {table}.id = v.v_id",
                        names.join(", "),
                        sets.join(", ")
                    )
                }
                Dialect::MySql => {
                    let selects: Vec<String> = chunk
                        .iter()
                        .enumerate()
                        .map(|(i, row)| {
                            let parts: Vec<String> = row
                                .iter()
                                .enumerate()
                                .map(|(j, arg)| {
                                    let ph = if matches!(arg, Arg::Int(_)) { "CAST(? AS SIGNED)" } else { "?" };
                                    match (i, j) {
                                        (0, 0) => format!("{ph} AS v_id"),
                                        (0, j) => format!("{ph} AS v_{}", cols[j - 1]),
                                        _ => ph.to_owned(),
                                    }
                                })
                                .collect();
                            format!("SELECT {}", parts.join(", "))
                        })
                        .collect();
                    let sets: Vec<String> = cols.iter().map(|c| format!("t.{c} = v.v_{c}")).collect();
                    format!(
                        "UPDATE {table} t JOIN ({}) v ON t.id = v.v_id SET {}",
                        selects.join(" UNION ALL "),
                        sets.join(", ")
                    )
                }
            }
        };
        ex.execute(&sql, a).await?;
    }
    Ok(())
}

/// The mutable columns of a run, with their values.
const RUN_MUT_COLS: [&str; 10] = [
    "state",
    "updated_at",
    "attempts",
    "next_attempt_at",
    "output",
    "error",
    "reason",
    "owner",
    "started_at",
    "finished_at",
];

fn run_mut_values(r: &RunRecord) -> [Arg; 10] {
    [
        Arg::from(r.state.as_str()),
        Arg::from(r.updated_at),
        Arg::from(r.attempts),
        Arg::from(r.next_attempt_at),
        Arg::from(r.output.as_ref().map(to_json)),
        Arg::from(r.error.clone()),
        Arg::from(r.reason.clone()),
        Arg::from(r.owner.clone()),
        Arg::from(r.started_at),
        Arg::from(r.finished_at),
    ]
}

/// Writes the changed columns of runs (`(before, after)` pairs). Runs are grouped by the set of columns they
/// change (one statement per group, normally a single one), so unchanged large values are not sent again.
async fn write_runs(ex: &mut Ex<'_>, dialect: Dialect, runs: &[(&RunRecord, &RunRecord)]) -> StoreResult<()> {
    let mut groups: Vec<(u16, Vec<Vec<Arg>>)> = Vec::new();
    for (before, after) in runs {
        let old = run_mut_values(before);
        let new = run_mut_values(after);
        // state and updated_at always; the others when they changed.
        let mut mask = 0b11u16;
        for i in 2..RUN_MUT_COLS.len() {
            if old[i] != new[i] {
                mask |= 1 << i;
            }
        }
        let mut row = vec![Arg::from(after.id)];
        row.extend(new.into_iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, a)| a));
        match groups.iter_mut().find(|(m, _)| *m == mask) {
            Some((_, rows)) => rows.push(row),
            None => groups.push((mask, vec![row])),
        }
    }
    for (mask, rows) in groups {
        let cols: Vec<&str> =
            RUN_MUT_COLS.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, c)| *c).collect();
        bulk_update(ex, dialect, "runs", &cols, rows).await?;
    }
    Ok(())
}

/// Inserts rows into `table` unless their unique key (the first `key_len` columns of each row, which must be
/// distinct within the call) exists; returns the generated id of each row, `None` for an existing key.
///
/// PostgreSQL / SQLite: multi-row `INSERT … ON CONFLICT (key) DO NOTHING RETURNING id, key`. MySQL: one row at a
/// time for tiny inputs; otherwise `SELECT` the existing keys, a multi-row `INSERT` of the others (a duplicate
/// inserted concurrently since is a retryable error: the batch re-runs) and one `SELECT` for their ids.
/// `key_of` reads a key from a returned row, `key_of_args` from an input row. The first key column is an integer;
/// with `range_second` the second is an integer too, and MySQL's lookups are bounded by its range in the batch.
#[allow(clippy::too_many_arguments)]
async fn insert_unless_exists<K: Hash + Eq + Clone>(
    ex: &mut Ex<'_>,
    dialect: Dialect,
    table: &str,
    cols: &str,
    key_cols: &[&str],
    range_second: bool,
    rows: Vec<Vec<Arg>>,
    key_of: impl Fn(&dyn Row) -> StoreResult<K>,
    key_of_args: impl Fn(&[Arg]) -> K,
) -> StoreResult<Vec<Option<i64>>> {
    let ncols = rows.first().map_or(0, Vec::len);
    let key_list = key_cols.join(", ");
    let mut ids: Vec<Option<i64>> = vec![None; rows.len()];
    for (chunk_no, chunk) in rows.chunks(CHUNK).enumerate() {
        let base = chunk_no * CHUNK;
        let tuple = format!("({})", marks(ncols));
        let insert_sql =
            |n: usize| format!("INSERT INTO {table} ({cols}) VALUES {}", vec![tuple.as_str(); n].join(", "));
        match dialect {
            Dialect::Postgres | Dialect::Sqlite => {
                let sql =
                    format!("{} ON CONFLICT ({key_list}) DO NOTHING RETURNING id, {key_list}", insert_sql(chunk.len()));
                let a: Vec<Arg> = chunk.iter().flatten().cloned().collect();
                let got: HashMap<K, i64> =
                    ex.fetch_all(&sql, a, |r| Ok((key_of(r)?, r.int("id")?))).await?.into_iter().collect();
                for (i, row) in chunk.iter().enumerate() {
                    ids[base + i] = got.get(&key_of_args(row)).copied();
                }
            }
            Dialect::MySql if chunk.len() <= MYSQL_ROW_BY_ROW => {
                for (i, row) in chunk.iter().enumerate() {
                    ids[base + i] = ex.insert_or_skip(&insert_sql(1), &key_list, true, row.clone()).await?;
                }
            }
            Dialect::MySql => {
                // Row-constructor `IN` lists are slow to plan in MariaDB (tens of ms for 256 keys); look up a
                // superset instead — every row of the first key columns' values (few attempts per run), or for runs
                // those within the batch's instants — and match keys here.
                let lookup = |rows: &[&Vec<Arg>]| -> (String, Vec<Arg>) {
                    let firsts: BTreeSet<i64> = rows.iter().map(|r| arg_int(&r[0])).collect();
                    let mut a: Vec<Arg> = firsts.iter().map(|v| Arg::from(*v)).collect();
                    let mut sql =
                        format!("SELECT id, {key_list} FROM {table} WHERE {} IN ({})", key_cols[0], marks(a.len()));
                    if range_second {
                        let seconds = rows.iter().map(|r| arg_int(&r[1]));
                        let lo = seconds.clone().min().unwrap_or(0);
                        let hi = seconds.max().unwrap_or(0);
                        sql.push_str(&format!(" AND {} BETWEEN ? AND ?", key_cols[1]));
                        a.extend(args![lo, hi]);
                    }
                    (sql, a)
                };
                let all: Vec<&Vec<Arg>> = chunk.iter().collect();
                let (sql, a) = lookup(&all);
                let existing: std::collections::HashSet<K> =
                    ex.fetch_all(&sql, a, |r| key_of(r)).await?.into_iter().collect();
                let new: Vec<&Vec<Arg>> = all.into_iter().filter(|r| !existing.contains(&key_of_args(r))).collect();
                if new.is_empty() {
                    continue;
                }
                let a: Vec<Arg> = new.iter().flat_map(|r| r.iter().cloned()).collect();
                match ex.execute(&insert_sql(new.len()), a).await {
                    Ok(_) => {}
                    Err(e) if is_unique_violation(&e) => {
                        return Err(backend(
                            BackendErrorKind::Retryable,
                            format!("a {table} row was inserted concurrently"),
                        ));
                    }
                    Err(e) => return Err(e),
                }
                let (sql, a) = lookup(&new);
                let got: HashMap<K, i64> =
                    ex.fetch_all(&sql, a, |r| Ok((key_of(r)?, r.int("id")?))).await?.into_iter().collect();
                for (i, row) in chunk.iter().enumerate() {
                    if !existing.contains(&key_of_args(row)) {
                        let id = got
                            .get(&key_of_args(row))
                            .copied()
                            .ok_or_else(|| corrupt(format!("inserted {table} row not found")))?;
                        ids[base + i] = Some(id);
                    }
                }
            }
        }
    }
    Ok(ids)
}

fn arg_int(a: &Arg) -> i64 {
    match a {
        Arg::Int(Some(v)) => *v,
        _ => i64::MIN,
    }
}

fn arg_text(a: &Arg) -> String {
    match a {
        Arg::Text(Some(v)) => v.clone(),
        _ => String::new(),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Runs and attempts rows
// ---------------------------------------------------------------------------------------------------------------

const RUN_INSERT_COLS: &str = "task_id, scheduled_at, namespace, name, task_version, shard, trigger_kind, state, \
     attempts, next_attempt_at, params, reason, created_at, finished_at, updated_at";

fn run_insert_row(run: &NewRun, now: DateTime<Utc>) -> Vec<Arg> {
    let finished_at = run.state.is_terminal().then_some(now);
    args![
        run.task_id,
        truncate_millis(run.scheduled_at),
        &run.namespace,
        &run.name,
        run.task_version,
        run.shard,
        run.trigger.as_str(),
        run.state.as_str(),
        0i64,
        run.next_attempt_at,
        to_json(&run.params),
        run.reason.clone(),
        now,
        finished_at,
        now
    ]
}

/// The record of a run just inserted (what the database now holds; no need to read it back).
fn inserted_run(id: i64, run: &NewRun, now: DateTime<Utc>) -> RunRecord {
    RunRecord {
        id,
        task_id: run.task_id,
        namespace: run.namespace.clone(),
        name: run.name.clone(),
        task_version: run.task_version,
        shard: run.shard,
        scheduled_at: truncate_millis(run.scheduled_at),
        trigger: run.trigger,
        state: run.state,
        attempts: 0,
        next_attempt_at: run.next_attempt_at.map(truncate_millis),
        params: run.params.clone(),
        output: None,
        error: None,
        reason: run.reason.clone(),
        owner: None,
        created_at: now,
        started_at: None,
        finished_at: run.state.is_terminal().then_some(now),
        updated_at: now,
    }
}

/// Inserts runs unless (task_id, scheduled_at) exists; `None` for an existing one (or a repeat within the call).
async fn insert_runs(
    ex: &mut Ex<'_>,
    dialect: Dialect,
    runs: &[(&NewRun, DateTime<Utc>)],
) -> StoreResult<Vec<Option<i64>>> {
    // Repeats of a key within the call are duplicates of its first occurrence.
    let mut seen = std::collections::HashSet::new();
    let mut first = Vec::new();
    let mut rows = Vec::new();
    for (i, (run, now)) in runs.iter().enumerate() {
        if seen.insert((run.task_id, truncate_millis(run.scheduled_at))) {
            first.push(i);
            rows.push(run_insert_row(run, *now));
        }
    }
    if rows.is_empty() {
        return Ok(vec![None; runs.len()]);
    }
    let ids = insert_unless_exists(
        ex,
        dialect,
        "runs",
        RUN_INSERT_COLS,
        &["task_id", "scheduled_at"],
        true,
        rows,
        |r| Ok((r.int("task_id")?, r.int("scheduled_at")?)),
        |a| (arg_int(&a[0]), arg_int(&a[1])),
    )
    .await?;
    let mut out = vec![None; runs.len()];
    for (i, id) in first.into_iter().zip(ids) {
        out[i] = id;
    }
    Ok(out)
}

/// Inserts running attempts (keys distinct within the call); `None` for an existing (run_id, attempt, node).
async fn insert_attempts(ex: &mut Ex<'_>, dialect: Dialect, atts: &[&NewAttempt]) -> StoreResult<Vec<Option<i64>>> {
    if atts.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<Vec<Arg>> = atts
        .iter()
        .map(|a| {
            args![
                a.run_id,
                a.attempt,
                &a.node,
                AttemptState::Running.as_str(),
                truncate_millis(a.started_at),
                a.deadline
            ]
        })
        .collect();
    insert_unless_exists(
        ex,
        dialect,
        "attempts",
        "run_id, attempt, node, state, started_at, deadline",
        &["run_id", "attempt", "node"],
        false,
        rows,
        |r| Ok((r.int("run_id")?, r.int("attempt")?, r.text("node")?)),
        |a| (arg_int(&a[0]), arg_int(&a[1]), arg_text(&a[2])),
    )
    .await
}

fn new_attempt_record(id: i64, a: &NewAttempt) -> AttemptRecord {
    AttemptRecord {
        id,
        run_id: a.run_id,
        attempt: a.attempt,
        node: a.node.clone(),
        state: AttemptState::Running,
        started_at: truncate_millis(a.started_at),
        deadline: a.deadline.map(truncate_millis),
        finished_at: None,
        output: None,
        error: None,
    }
}

fn duplicate_attempt(a: &NewAttempt) -> StoreError {
    StoreError::conflict(
        "attempt",
        format!("run {} attempt {} node {:?}", a.run_id, a.attempt, a.node),
        "attempt already exists",
    )
}

// ---------------------------------------------------------------------------------------------------------------
// Engines (inside the caller's transaction)
// ---------------------------------------------------------------------------------------------------------------

/// Compare-and-sets `next_fire_at` of the tasks of one round (distinct task ids); returns the items that won and
/// records the outcome of the others.
async fn cas_tasks(
    ex: &mut Ex<'_>,
    dialect: Dialect,
    reqs: &[FireRequest],
    round: &[usize],
    out: &mut Outcomes<FireOutcome>,
) -> StoreResult<Vec<usize>> {
    let mut round = round.to_vec();
    round.sort_by_key(|&i| reqs[i].task_id); // lock order
    let mut won: BTreeSet<i64> = BTreeSet::new();
    // Tasks that lost, with what we know about them: None = missing, Some(paused).
    let mut lost: HashMap<i64, Option<bool>> = HashMap::new();
    let nseq = dialect.null_safe_eq();
    match dialect {
        Dialect::Postgres | Dialect::Sqlite => {
            for chunk in round.chunks(CHUNK) {
                let values = vec!["(?, ?, ?)"; chunk.len()].join(", ");
                let sql = format!(
                    "WITH v(v_id, v_expected, v_next) AS (VALUES {values}) UPDATE tasks SET next_fire_at = v.v_next \
                     FROM v WHERE tasks.id = v.v_id AND tasks.next_fire_at {nseq} v.v_expected AND tasks.paused = ? \
                     RETURNING id"
                );
                let mut a = Vec::with_capacity(chunk.len() * 3 + 1);
                for &i in chunk {
                    a.extend(args![reqs[i].task_id, reqs[i].expected_next_fire_at, reqs[i].new_next_fire_at]);
                }
                a.push(Arg::from(false));
                won.extend(ex.fetch_all(&sql, a, |r| r.int("id")).await?);
            }
            let failed: Vec<i64> = round.iter().map(|&i| reqs[i].task_id).filter(|id| !won.contains(id)).collect();
            for chunk in failed.chunks(CHUNK) {
                let sql = format!("SELECT id, paused FROM tasks WHERE id IN ({})", marks(chunk.len()));
                let found = ex.fetch_all(&sql, id_args(chunk), |r| Ok((r.int("id")?, r.boolean("paused")?))).await?;
                lost.extend(chunk.iter().map(|id| (*id, None)));
                lost.extend(found.into_iter().map(|(id, p)| (id, Some(p))));
            }
        }
        Dialect::MySql if round.len() == 1 => {
            // One task: the conditional UPDATE is the whole compare-and-set (sqlx asks MySQL for matched rows).
            let r = &reqs[round[0]];
            let sql =
                format!("UPDATE tasks SET next_fire_at = ? WHERE id = ? AND next_fire_at {nseq} ? AND paused = ?");
            let done = ex.execute(&sql, args![r.new_next_fire_at, r.task_id, r.expected_next_fire_at, false]).await?;
            if done.rows > 0 {
                won.insert(r.task_id);
            } else {
                let paused = ex
                    .fetch_opt("SELECT paused FROM tasks WHERE id = ?", args![r.task_id], |r| r.boolean("paused"))
                    .await?;
                lost.insert(r.task_id, paused);
            }
        }
        Dialect::MySql => {
            let ids: Vec<i64> = round.iter().map(|&i| reqs[i].task_id).collect();
            let mut current: HashMap<i64, (Option<i64>, bool)> = HashMap::with_capacity(ids.len());
            for chunk in ids.chunks(CHUNK) {
                let sql = format!(
                    "SELECT id, next_fire_at, paused FROM tasks WHERE id IN ({}) FOR UPDATE",
                    marks(chunk.len())
                );
                let rows = ex
                    .fetch_all(&sql, id_args(chunk), |r| {
                        Ok((r.int("id")?, (r.opt_int("next_fire_at")?, r.boolean("paused")?)))
                    })
                    .await?;
                current.extend(rows);
            }
            let mut updates = Vec::new();
            for &i in &round {
                let r = &reqs[i];
                match current.get(&r.task_id) {
                    Some((next, false)) if *next == r.expected_next_fire_at.map(|t| t.timestamp_millis()) => {
                        won.insert(r.task_id);
                        updates.push(args![r.task_id, r.new_next_fire_at]);
                    }
                    Some((_, paused)) => {
                        lost.insert(r.task_id, Some(*paused));
                    }
                    None => {
                        lost.insert(r.task_id, None);
                    }
                }
            }
            bulk_update(ex, dialect, "tasks", &["next_fire_at"], updates).await?;
        }
    }
    let mut winners = Vec::with_capacity(won.len());
    for i in round {
        let id = reqs[i].task_id;
        if won.contains(&id) {
            winners.push(i);
        } else {
            out[i] = Some(Err(match lost.get(&id).copied().flatten() {
                None => StoreError::not_found("task", id),
                Some(true) => StoreError::conflict("task", id, "the task is paused"),
                Some(false) => {
                    StoreError::conflict("task", id, "next_fire_at changed meanwhile (another firer advanced it)")
                }
            }));
        }
    }
    winners.sort_unstable();
    Ok(winners)
}

async fn fire_in(
    ex: &mut Ex<'_>,
    dialect: Dialect,
    reqs: &[FireRequest],
    live: &[usize],
    out: &mut Outcomes<FireOutcome>,
) -> StoreResult<()> {
    let epochs = load_fences(ex, dialect, live.iter().map(|&i| reqs[i].fence)).await?;
    let mut todo = Vec::with_capacity(live.len());
    for &i in live {
        match fence_ok(&epochs, reqs[i].fence) {
            Ok(()) => todo.push(i),
            Err(e) => out[i] = Some(Err(e)),
        }
    }
    for round in rounds(todo.iter().map(|&i| (i, vec![reqs[i].task_id]))) {
        let winners = cas_tasks(ex, dialect, reqs, &round, out).await?;
        let mut runs: Vec<(&NewRun, DateTime<Utc>)> = Vec::new();
        for &i in &winners {
            let now = truncate_millis(reqs[i].now);
            runs.extend(reqs[i].runs.iter().map(|r| (r, now)));
        }
        let mut ids = insert_runs(ex, dialect, &runs).await?.into_iter();
        for &i in &winners {
            let now = truncate_millis(reqs[i].now);
            let mut outcome = FireOutcome { inserted: Vec::new(), duplicates: Vec::new() };
            for run in &reqs[i].runs {
                match ids.next().flatten() {
                    Some(id) => outcome.inserted.push(inserted_run(id, run, now)),
                    None => outcome.duplicates.push(truncate_millis(run.scheduled_at)),
                }
            }
            out[i] = Some(Ok(outcome));
        }
    }
    Ok(())
}

async fn transition_in(
    ex: &mut Ex<'_>,
    dialect: Dialect,
    items: &[Transition],
    live: &[usize],
    out: &mut Outcomes<RunRecord>,
) -> StoreResult<()> {
    let epochs = load_fences(ex, dialect, live.iter().map(|&i| items[i].fence)).await?;
    let mut runs: HashMap<i64, Option<RunRecord>> = HashMap::new();
    for round in rounds(live.iter().map(|&i| (i, vec![items[i].run_id]))) {
        load_runs(ex, dialect, round.iter().map(|&i| items[i].run_id), &mut runs).await?;
        let mut changed = Vec::new();
        for &i in &round {
            let t = &items[i];
            match apply_transition(t, cached(&runs, t.run_id), &epochs) {
                Ok(new) => changed.push((i, new)),
                Err(e) => out[i] = Some(Err(e)),
            }
        }
        let pairs: Vec<(&RunRecord, &RunRecord)> =
            changed.iter().map(|(i, new)| (cached(&runs, items[*i].run_id).expect("loaded"), new)).collect();
        write_runs(ex, dialect, &pairs).await?;
        for (i, new) in changed {
            runs.insert(new.id, Some(new.clone()));
            out[i] = Some(Ok(new));
        }
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Run(i64),
    Attempt(i64),
    NewAttempt(i64, u32, String),
}

async fn start_in(
    ex: &mut Ex<'_>,
    dialect: Dialect,
    items: &[(Transition, NewAttempt)],
    live: &[usize],
    out: &mut Outcomes<(RunRecord, AttemptRecord)>,
) -> StoreResult<()> {
    let epochs = load_fences(ex, dialect, live.iter().map(|&i| items[i].0.fence)).await?;
    let mut runs: HashMap<i64, Option<RunRecord>> = HashMap::new();
    let keyed = live.iter().map(|&i| {
        let (t, a) = &items[i];
        (i, vec![Key::Run(t.run_id), Key::Run(a.run_id), Key::NewAttempt(a.run_id, a.attempt, a.node.clone())])
    });
    for round in rounds(keyed) {
        // Locking the runs (FOR UPDATE) also keeps concurrent `insert_attempt`s of them (FOR SHARE) out.
        load_runs(ex, dialect, round.iter().flat_map(|&i| [items[i].0.run_id, items[i].1.run_id]), &mut runs).await?;
        let mut cands: Vec<(usize, RunRecord)> = Vec::new();
        for &i in &round {
            let (t, a) = &items[i];
            let res = apply_transition(t, cached(&runs, t.run_id), &epochs).and_then(|new| {
                if cached(&runs, a.run_id).is_some() { Ok(new) } else { Err(StoreError::not_found("run", a.run_id)) }
            });
            match res {
                Ok(new) => cands.push((i, new)),
                Err(e) => out[i] = Some(Err(e)),
            }
        }
        // Attempts first: a duplicate fails its item before its run is touched.
        let atts: Vec<&NewAttempt> = cands.iter().map(|(i, _)| &items[*i].1).collect();
        let ids = insert_attempts(ex, dialect, &atts).await?;
        let mut changed = Vec::with_capacity(cands.len());
        for ((i, new), id) in cands.into_iter().zip(ids) {
            match id {
                Some(id) => changed.push((i, new, id)),
                None => out[i] = Some(Err(duplicate_attempt(&items[i].1))),
            }
        }
        let pairs: Vec<(&RunRecord, &RunRecord)> =
            changed.iter().map(|(i, new, _)| (cached(&runs, items[*i].0.run_id).expect("loaded"), new)).collect();
        write_runs(ex, dialect, &pairs).await?;
        for (i, new, id) in changed {
            runs.insert(new.id, Some(new.clone()));
            out[i] = Some(Ok((new, new_attempt_record(id, &items[i].1))));
        }
    }
    Ok(())
}

async fn complete_in(
    ex: &mut Ex<'_>,
    dialect: Dialect,
    items: &[(CompleteAttempt, Option<Transition>)],
    live: &[usize],
    out: &mut Outcomes<(Option<RunRecord>, AttemptRecord)>,
) -> StoreResult<()> {
    let epochs = load_fences(ex, dialect, live.iter().map(|&i| items[i].1.as_ref().and_then(|t| t.fence))).await?;
    let mut runs: HashMap<i64, Option<RunRecord>> = HashMap::new();
    let mut attempts: HashMap<i64, Option<AttemptRecord>> = HashMap::new();
    let keyed = live.iter().map(|&i| {
        let (c, t) = &items[i];
        let mut keys = vec![Key::Attempt(c.attempt_id)];
        keys.extend(t.as_ref().map(|t| Key::Run(t.run_id)));
        (i, keys)
    });
    for round in rounds(keyed) {
        // Runs before attempts: the lock order of every other path.
        load_runs(ex, dialect, round.iter().filter_map(|&i| items[i].1.as_ref().map(|t| t.run_id)), &mut runs).await?;
        load_attempts(ex, dialect, round.iter().map(|&i| items[i].0.attempt_id), &mut attempts).await?;
        let mut changed: Vec<(usize, AttemptRecord, Option<RunRecord>)> = Vec::new();
        for &i in &round {
            let (c, t) = &items[i];
            let res = match cached(&attempts, c.attempt_id) {
                None => Err(StoreError::not_found("attempt", c.attempt_id)),
                Some(a) if a.state != AttemptState::Running => Err(StoreError::conflict(
                    "attempt",
                    c.attempt_id,
                    format!("attempt already finished as {}", a.state.as_str()),
                )),
                Some(a) => {
                    let done = AttemptRecord {
                        state: c.state,
                        output: c.output.clone(),
                        error: c.error.clone(),
                        finished_at: Some(truncate_millis(c.now)),
                        ..a.clone()
                    };
                    match t {
                        None => Ok((done, None)),
                        Some(t) => apply_transition(t, cached(&runs, t.run_id), &epochs).map(|r| (done, Some(r))),
                    }
                }
            };
            match res {
                Ok((a, r)) => changed.push((i, a, r)),
                Err(e) => out[i] = Some(Err(e)),
            }
        }
        let att_rows: Vec<Vec<Arg>> = changed
            .iter()
            .map(|(_, a, _)| {
                args![a.id, a.state.as_str(), a.output.as_ref().map(to_json), a.error.clone(), a.finished_at]
            })
            .collect();
        bulk_update(ex, dialect, "attempts", &["state", "output", "error", "finished_at"], att_rows).await?;
        let pairs: Vec<(&RunRecord, &RunRecord)> = changed
            .iter()
            .filter_map(|(_, _, r)| r.as_ref())
            .map(|new| (cached(&runs, new.id).expect("loaded"), new))
            .collect();
        write_runs(ex, dialect, &pairs).await?;
        for (i, a, r) in changed {
            if let Some(r) = &r {
                runs.insert(r.id, Some(r.clone()));
            }
            attempts.insert(a.id, Some(a.clone()));
            out[i] = Some(Ok((r, a)));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------------------------------------------

/// Runs `$engine` over the items that passed validation in one write transaction (re-run as a whole on a retryable
/// error) and merges the outcomes.
macro_rules! run_batch {
    ($store:expr, $items:expr, $pre:expr, $engine:ident) => {{
        let store = $store;
        let items = $items;
        let pre = $pre;
        let live: Vec<usize> = (0..items.len()).filter(|&i| pre[i].is_none()).collect();
        if live.is_empty() {
            return Ok(merge(pre, empty(items.len())));
        }
        let dialect = store.dialect;
        let done = write_tx!(store, |tx| {
            let mut out = empty(items.len());
            $engine(&mut tx.ex(), dialect, &items, &live, &mut out).await?;
            Ok(out)
        })?;
        Ok(merge(pre, done))
    }};
}

impl SqlStore {
    pub(crate) async fn fire_many(&self, reqs: Vec<FireRequest>) -> StoreResult<Vec<StoreResult<FireOutcome>>> {
        let pre: Outcomes<FireOutcome> =
            reqs.iter().map(|r| r.runs.iter().try_for_each(validate_new_run).err().map(Err)).collect();
        run_batch!(self, reqs, pre, fire_in)
    }

    pub(crate) async fn transition_many(&self, ts: Vec<Transition>) -> StoreResult<Vec<StoreResult<RunRecord>>> {
        let pre: Outcomes<RunRecord> = ts.iter().map(|t| validate_transition(t).err().map(Err)).collect();
        run_batch!(self, ts, pre, transition_in)
    }

    pub(crate) async fn start_many(
        &self,
        items: Vec<(Transition, NewAttempt)>,
    ) -> StoreResult<Vec<StoreResult<(RunRecord, AttemptRecord)>>> {
        let pre: Outcomes<(RunRecord, AttemptRecord)> = items
            .iter()
            .map(|(t, a)| validate_transition(t).and_then(|()| check_len("node", &a.node, limits::NAME)).err().map(Err))
            .collect();
        run_batch!(self, items, pre, start_in)
    }

    pub(crate) async fn complete_many(
        &self,
        items: Vec<(CompleteAttempt, Option<Transition>)>,
    ) -> StoreResult<Vec<StoreResult<(Option<RunRecord>, AttemptRecord)>>> {
        let pre: Outcomes<(Option<RunRecord>, AttemptRecord)> = items
            .iter()
            .map(|(c, t)| {
                let r = if c.state.is_terminal() {
                    t.as_ref().map_or(Ok(()), validate_transition)
                } else {
                    Err(StoreError::InvalidArgument {
                        field: "state",
                        reason: "an attempt finishes in a terminal state".to_owned(),
                    })
                };
                r.err().map(Err)
            })
            .collect();
        run_batch!(self, items, pre, complete_in)
    }
}

/// The single outcome of a one-item batch.
pub(crate) fn single<T>(v: Vec<StoreResult<T>>) -> StoreResult<T> {
    v.into_iter().next().unwrap_or_else(|| Err(corrupt("empty batch outcome".to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_follow_shared_keys_in_order() {
        let r = rounds([(0, vec![1]), (1, vec![2]), (2, vec![1]), (3, vec![3, 2]), (4, vec![1]), (5, vec![4])]);
        assert_eq!(r, vec![vec![0, 1, 5], vec![2, 3], vec![4]]);
        let none: Vec<Vec<usize>> = rounds(Vec::<(usize, Vec<i64>)>::new());
        assert!(none.is_empty());
    }
}
