//! [`RunStore`]: runs, attempts and run logs.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rota_store::cursor::{decode_id, encode_id};
use rota_store::{
    AttemptRecord, AttemptState, CompleteAttempt, Fence, InsertRun, LogLine, NewAttempt, NewRun, Page, PageRequest,
    RunFilter, RunRecord, RunState, RunStore, StoreError, StoreResult, Transition, truncate_millis,
};

use crate::db::{Arg, Ex, Row, args, corrupt, marks, to_json, write_tx};
use crate::tasks::check_fence;
use crate::{Dialect, SqlStore, check_len, limits};

pub(crate) const RUN_COLS: &str = "id, task_id, namespace, name, task_version, shard, scheduled_at, trigger_kind, \
     state, attempts, next_attempt_at, params, output, error, reason, owner, created_at, started_at, finished_at, \
     updated_at";

pub(crate) const ATTEMPT_COLS: &str =
    "id, run_id, attempt, node, state, started_at, deadline, finished_at, output, error";

const NON_TERMINAL: [RunState; 3] = [RunState::Scheduled, RunState::Dispatching, RunState::Running];
const TERMINAL: [RunState; 5] =
    [RunState::Succeeded, RunState::Failed, RunState::TimedOut, RunState::Skipped, RunState::Cancelled];

pub(crate) fn decode_run(r: &dyn Row) -> StoreResult<RunRecord> {
    Ok(RunRecord {
        id: r.int("id")?,
        task_id: r.int("task_id")?,
        namespace: r.text("namespace")?,
        name: r.text("name")?,
        task_version: r.int("task_version")?,
        shard: r.uint("shard")?,
        scheduled_at: r.time("scheduled_at")?,
        trigger: r.text("trigger_kind")?.parse().map_err(|e: StoreError| corrupt(e.to_string()))?,
        state: r.text("state")?.parse().map_err(|e: StoreError| corrupt(e.to_string()))?,
        attempts: r.uint("attempts")?,
        next_attempt_at: r.opt_time("next_attempt_at")?,
        params: r.json("params")?,
        output: r.opt_json("output")?,
        error: r.opt_text("error")?,
        reason: r.opt_text("reason")?,
        owner: r.opt_text("owner")?,
        created_at: r.time("created_at")?,
        started_at: r.opt_time("started_at")?,
        finished_at: r.opt_time("finished_at")?,
        updated_at: r.time("updated_at")?,
    })
}

pub(crate) fn decode_attempt(r: &dyn Row) -> StoreResult<AttemptRecord> {
    Ok(AttemptRecord {
        id: r.int("id")?,
        run_id: r.int("run_id")?,
        attempt: r.uint("attempt")?,
        node: r.text("node")?,
        state: r.text("state")?.parse().map_err(|e: StoreError| corrupt(e.to_string()))?,
        started_at: r.time("started_at")?,
        deadline: r.opt_time("deadline")?,
        finished_at: r.opt_time("finished_at")?,
        output: r.opt_json("output")?,
        error: r.opt_text("error")?,
    })
}

pub(crate) fn validate_new_run(run: &NewRun) -> StoreResult<()> {
    check_len("namespace", &run.namespace, limits::NAME)?;
    check_len("name", &run.name, limits::NAME)?;
    if !matches!(run.state, RunState::Scheduled | RunState::Skipped) {
        return Err(StoreError::InvalidArgument {
            field: "state",
            reason: format!("a new run starts as scheduled or skipped, not {}", run.state),
        });
    }
    Ok(())
}

fn state_list(states: &[RunState]) -> (String, Vec<Arg>) {
    (marks(states.len()), states.iter().map(|s| Arg::from(s.as_str())).collect())
}

/// Inserts one run inside the caller's transaction unless (task_id, scheduled_at) exists; returns the stored run.
pub(crate) async fn insert_run_in(ex: &mut Ex<'_>, run: &NewRun, now: DateTime<Utc>) -> StoreResult<InsertRun> {
    let scheduled_at = truncate_millis(run.scheduled_at);
    let params = to_json(&run.params);
    // A run born terminal (skipped) is finished at birth, so pruning can find it.
    let finished_at = run.state.is_terminal().then_some(now);
    let inserted = ex
        .insert_or_skip(
            "INSERT INTO runs (task_id, namespace, name, task_version, shard, scheduled_at, trigger_kind, state, \
             attempts, next_attempt_at, params, reason, created_at, finished_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?)",
            "task_id, scheduled_at",
            true,
            args![
                run.task_id,
                &run.namespace,
                &run.name,
                run.task_version,
                run.shard,
                scheduled_at,
                run.trigger.as_str(),
                run.state.as_str(),
                run.next_attempt_at,
                &params,
                run.reason.clone(),
                now,
                finished_at,
                now
            ],
        )
        .await?;
    match inserted {
        Some(id) => Ok(InsertRun::Inserted(RunRecord {
            id,
            task_id: run.task_id,
            namespace: run.namespace.clone(),
            name: run.name.clone(),
            task_version: run.task_version,
            shard: run.shard,
            scheduled_at,
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
            finished_at,
            updated_at: now,
        })),
        None => {
            let existing = ex
                .fetch_opt(
                    &format!("SELECT {RUN_COLS} FROM runs WHERE task_id = ? AND scheduled_at = ?"),
                    args![run.task_id, scheduled_at],
                    decode_run,
                )
                .await?
                .ok_or_else(|| corrupt("duplicate run vanished".to_owned()))?;
            Ok(InsertRun::Duplicate(existing))
        }
    }
}

/// Locks a run row (`lock` is the dialect's share/update suffix); `NotFound` if it does not exist.
async fn lock_run(ex: &mut Ex<'_>, lock: &str, run_id: i64) -> StoreResult<()> {
    let sql = format!("SELECT id FROM runs WHERE id = ?{lock}");
    match ex.fetch_opt(&sql, args![run_id], |r| r.int("id")).await? {
        Some(_) => Ok(()),
        None => Err(StoreError::not_found("run", run_id)),
    }
}

fn attempt_conflict(a: &NewAttempt) -> StoreError {
    StoreError::conflict(
        "attempt",
        format!("run {} attempt {} node {:?}", a.run_id, a.attempt, a.node),
        "attempt already exists",
    )
}

/// Inserts an attempt row; `None` if (run_id, attempt, node) exists.
async fn insert_attempt_row(ex: &mut Ex<'_>, at: &NewAttempt) -> StoreResult<Option<AttemptRecord>> {
    let started_at = truncate_millis(at.started_at);
    let id = ex
        .insert_or_skip(
            "INSERT INTO attempts (run_id, attempt, node, state, started_at, deadline) VALUES (?, ?, ?, ?, ?, ?)",
            "run_id, attempt, node",
            true,
            args![at.run_id, at.attempt, &at.node, AttemptState::Running.as_str(), started_at, at.deadline],
        )
        .await?;
    Ok(id.map(|id| AttemptRecord {
        id,
        run_id: at.run_id,
        attempt: at.attempt,
        node: at.node.clone(),
        state: AttemptState::Running,
        started_at,
        deadline: at.deadline.map(truncate_millis),
        finished_at: None,
        output: None,
        error: None,
    }))
}

fn validate_complete(c: &CompleteAttempt) -> StoreResult<()> {
    if !c.state.is_terminal() {
        return Err(StoreError::InvalidArgument {
            field: "state",
            reason: "an attempt finishes in a terminal state".to_owned(),
        });
    }
    Ok(())
}

/// Locks an attempt and checks that it is still running (`NotFound`, `Conflict`). Writes nothing.
async fn finish_check(ex: &mut Ex<'_>, dialect: Dialect, c: &CompleteAttempt) -> StoreResult<AttemptRecord> {
    let sql = format!("SELECT {ATTEMPT_COLS} FROM attempts WHERE id = ?{}", dialect.for_update());
    let rec = ex
        .fetch_opt(&sql, args![c.attempt_id], decode_attempt)
        .await?
        .ok_or_else(|| StoreError::not_found("attempt", c.attempt_id))?;
    if rec.state != AttemptState::Running {
        return Err(StoreError::conflict(
            "attempt",
            c.attempt_id,
            format!("attempt already finished as {}", rec.state.as_str()),
        ));
    }
    Ok(rec)
}

/// Records a checked attempt's outcome. Reports no documented error.
async fn finish_apply(ex: &mut Ex<'_>, current: AttemptRecord, c: &CompleteAttempt) -> StoreResult<AttemptRecord> {
    let now = truncate_millis(c.now);
    ex.execute(
        "UPDATE attempts SET state = ?, output = ?, error = ?, finished_at = ? WHERE id = ?",
        args![c.state.as_str(), c.output.as_ref().map(to_json), c.error.clone(), now, c.attempt_id],
    )
    .await?;
    Ok(AttemptRecord {
        state: c.state,
        output: c.output.clone(),
        error: c.error.clone(),
        finished_at: Some(now),
        ..current
    })
}

impl SqlStore {
    async fn runs_where(&self, where_: &str, a: Vec<Arg>) -> StoreResult<Vec<RunRecord>> {
        let mut c = self.pool.conn().await?;
        c.ex().fetch_all(&format!("SELECT {RUN_COLS} FROM runs WHERE {where_}"), a, decode_run).await
    }
}

#[async_trait]
impl RunStore for SqlStore {
    async fn insert_run(&self, run: NewRun, fence: Option<Fence>, now: DateTime<Utc>) -> StoreResult<InsertRun> {
        validate_new_run(&run)?;
        let now = truncate_millis(now);
        let share = self.dialect.for_share();
        write_tx!(self, |tx| {
            let mut ex = tx.ex();
            check_fence(&mut ex, share, fence).await?;
            insert_run_in(&mut ex, &run, now).await
        })
    }

    async fn get_run(&self, id: i64) -> StoreResult<Option<RunRecord>> {
        Ok(self.runs_where("id = ?", args![id]).await?.pop())
    }

    async fn transition_run(&self, t: Transition) -> StoreResult<RunRecord> {
        crate::batch::single(self.transition_many(vec![t]).await?)
    }

    async fn list_runs(&self, filter: &RunFilter, page: &PageRequest) -> StoreResult<Page<RunRecord>> {
        let limit = page.effective_limit() as usize;
        let mut where_ = Vec::new();
        let mut a = Vec::new();
        if let Some(c) = &page.cursor {
            where_.push("id < ?".to_owned());
            a.push(Arg::from(decode_id(c)?));
        }
        if let Some(id) = filter.task_id {
            where_.push("task_id = ?".to_owned());
            a.push(Arg::from(id));
        }
        if let Some(ns) = &filter.namespace {
            where_.push("namespace = ?".to_owned());
            a.push(Arg::from(ns));
        }
        if let Some(n) = &filter.name {
            where_.push("name = ?".to_owned());
            a.push(Arg::from(n));
        }
        if !filter.states.is_empty() {
            let (m, sa) = state_list(&filter.states);
            where_.push(format!("state IN ({m})"));
            a.extend(sa);
        }
        if let Some(from) = filter.from {
            where_.push("scheduled_at >= ?".to_owned());
            a.push(Arg::from(from));
        }
        if let Some(to) = filter.to {
            where_.push("scheduled_at < ?".to_owned());
            a.push(Arg::from(to));
        }
        let cond = if where_.is_empty() { "1 = 1".to_owned() } else { where_.join(" AND ") };
        a.push(Arg::from(limit as i64 + 1));
        let mut items = self.runs_where(&format!("{cond} ORDER BY id DESC LIMIT ?"), a).await?;
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|r| encode_id(r.id))
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    async fn pending_runs(&self, shard: u32, until: DateTime<Utc>, limit: u32) -> StoreResult<Vec<RunRecord>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.runs_where(
            "shard = ? AND state = ? AND (next_attempt_at IS NULL OR next_attempt_at <= ?) ORDER BY id LIMIT ?",
            args![shard, RunState::Scheduled.as_str(), until, i64::from(limit)],
        )
        .await
    }

    async fn active_runs(&self, shard: u32, states: &[RunState], limit: u32) -> StoreResult<Vec<RunRecord>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let states = if states.is_empty() { &NON_TERMINAL[..] } else { states };
        let (m, sa) = state_list(states);
        let mut a = args![shard];
        a.extend(sa);
        a.push(Arg::from(i64::from(limit)));
        self.runs_where(&format!("shard = ? AND state IN ({m}) ORDER BY id LIMIT ?"), a).await
    }

    async fn active_runs_of_task(&self, task_id: i64) -> StoreResult<Vec<RunRecord>> {
        let (m, sa) = state_list(&NON_TERMINAL);
        let mut a = sa;
        a.push(Arg::from(task_id));
        self.runs_where(&format!("state IN ({m}) AND task_id = ? ORDER BY id"), a).await
    }

    async fn insert_attempt(&self, at: NewAttempt) -> StoreResult<AttemptRecord> {
        check_len("node", &at.node, limits::NAME)?;
        let dialect = self.dialect;
        write_tx!(self, |tx| {
            let mut ex = tx.ex();
            lock_run(&mut ex, dialect.for_share(), at.run_id).await?;
            match insert_attempt_row(&mut ex, &at).await? {
                Some(a) => Ok(a),
                None => Err(attempt_conflict(&at)),
            }
        })
    }

    async fn finish_attempt(
        &self,
        attempt_id: i64,
        state: AttemptState,
        output: Option<serde_json::Value>,
        error: Option<String>,
        now: DateTime<Utc>,
    ) -> StoreResult<AttemptRecord> {
        let c = CompleteAttempt { attempt_id, state, output, error, now };
        validate_complete(&c)?;
        let dialect = self.dialect;
        write_tx!(self, |tx| {
            let mut ex = tx.ex();
            let current = finish_check(&mut ex, dialect, &c).await?;
            finish_apply(&mut ex, current, &c).await
        })
    }

    async fn list_attempts(&self, run_id: i64) -> StoreResult<Vec<AttemptRecord>> {
        let mut c = self.pool.conn().await?;
        c.ex()
            .fetch_all(
                &format!("SELECT {ATTEMPT_COLS} FROM attempts WHERE run_id = ? ORDER BY attempt, id"),
                args![run_id],
                decode_attempt,
            )
            .await
    }

    async fn append_logs(&self, run_id: i64, stream: &str, lines: &[String], now: DateTime<Utc>) -> StoreResult<i64> {
        check_len("stream", stream, limits::SHORT)?;
        let now = truncate_millis(now);
        let dialect = self.dialect;
        // Appends to one run are serialised by an exclusive lock on the run row, so within a run the sequence
        // numbers are assigned in commit order: a reader following the log with `after_seq` never skips a line
        // that commits later with a smaller seq.
        let for_update = dialect.for_update();
        write_tx!(self, |tx| {
            let mut ex = tx.ex();
            let sql = format!("SELECT id FROM runs WHERE id = ?{for_update}");
            if ex.fetch_opt(&sql, args![run_id], |r| r.int("id")).await?.is_none() {
                return Err(StoreError::not_found("run", run_id));
            }
            if lines.is_empty() {
                return ex
                    .fetch_opt("SELECT MAX(seq) AS s FROM run_logs WHERE run_id = ?", args![run_id], |r| r.opt_int("s"))
                    .await
                    .map(|s| s.flatten().unwrap_or(0));
            }
            let mut last = 0;
            for chunk in lines.chunks(500) {
                let values = vec!["(?, ?, ?, ?)"; chunk.len()].join(", ");
                let mut a = Vec::with_capacity(chunk.len() * 4);
                for l in chunk {
                    a.extend(args![run_id, now, stream, l]);
                }
                let sql = format!("INSERT INTO run_logs (run_id, logged_at, stream, line) VALUES {values}");
                last = match dialect {
                    crate::Dialect::Postgres => ex
                        .fetch_all(&format!("{sql} RETURNING seq"), a, |r| r.int("seq"))
                        .await?
                        .into_iter()
                        .max()
                        .unwrap_or(0),
                    // SQLite: rowid of the last row inserted.
                    crate::Dialect::Sqlite => ex.execute(&sql, a).await?.last_id,
                    // MySQL: LAST_INSERT_ID() is the first id of a multi-row INSERT, whose ids are consecutive.
                    crate::Dialect::MySql => ex.execute(&sql, a).await?.last_id + chunk.len() as i64 - 1,
                };
            }
            Ok(last)
        })
    }

    async fn read_logs(&self, run_id: i64, after_seq: i64, limit: u32) -> StoreResult<Vec<LogLine>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut c = self.pool.conn().await?;
        c.ex()
            .fetch_all(
                "SELECT seq, run_id, logged_at, stream, line FROM run_logs WHERE run_id = ? AND seq > ? \
                 ORDER BY seq LIMIT ?",
                args![run_id, after_seq, i64::from(limit)],
                |r| {
                    Ok(LogLine {
                        seq: r.int("seq")?,
                        run_id: r.int("run_id")?,
                        at: r.time("logged_at")?,
                        stream: r.text("stream")?,
                        line: r.text("line")?,
                    })
                },
            )
            .await
    }

    async fn prune_runs(&self, before: DateTime<Utc>, limit: u32) -> StoreResult<u64> {
        if limit == 0 {
            return Ok(0);
        }
        let (m, sa) = state_list(&TERMINAL);
        write_tx!(self, |tx| {
            let mut ex = tx.ex();
            let mut a = args![before];
            a.extend(sa.clone());
            a.push(Arg::from(i64::from(limit)));
            let ids = ex
                .fetch_all(&format!("SELECT id FROM runs WHERE finished_at < ? AND state IN ({m}) LIMIT ?"), a, |r| {
                    r.int("id")
                })
                .await?;
            if ids.is_empty() {
                return Ok(0);
            }
            let mut deleted = 0;
            for chunk in ids.chunks(1000) {
                let id_marks = marks(chunk.len());
                let id_args: Vec<Arg> = chunk.iter().map(|i| Arg::from(*i)).collect();
                ex.execute(&format!("DELETE FROM run_logs WHERE run_id IN ({id_marks})"), id_args.clone()).await?;
                ex.execute(&format!("DELETE FROM attempts WHERE run_id IN ({id_marks})"), id_args.clone()).await?;
                deleted += ex.execute(&format!("DELETE FROM runs WHERE id IN ({id_marks})"), id_args).await?.rows;
            }
            Ok(deleted)
        })
    }

    async fn start_attempt(
        &self,
        transition: Transition,
        attempt: NewAttempt,
    ) -> StoreResult<(RunRecord, AttemptRecord)> {
        crate::batch::single(self.start_many(vec![(transition, attempt)]).await?)
    }

    async fn complete_attempt(
        &self,
        complete: CompleteAttempt,
        transition: Option<Transition>,
    ) -> StoreResult<(Option<RunRecord>, AttemptRecord)> {
        crate::batch::single(self.complete_many(vec![(complete, transition)]).await?)
    }

    async fn start_attempts(
        &self,
        items: Vec<(Transition, NewAttempt)>,
    ) -> StoreResult<Vec<StoreResult<(RunRecord, AttemptRecord)>>> {
        self.start_many(items).await
    }

    async fn complete_attempts(
        &self,
        items: Vec<(CompleteAttempt, Option<Transition>)>,
    ) -> StoreResult<Vec<StoreResult<(Option<RunRecord>, AttemptRecord)>>> {
        self.complete_many(items).await
    }
}
