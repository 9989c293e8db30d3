//! [`TaskStore`] and the fence check shared by fenced writes.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rota_store::cursor::{decode_id, encode_id};
use rota_store::{
    DueTask, Fence, FireOutcome, FireRequest, Page, PageRequest, Precondition, StoreError, StoreResult, TaskFilter,
    TaskRecord, TaskStore, TaskVersion, TaskWrite, truncate_millis,
};

use crate::db::{Arg, BackendErrorKind, Ex, Row, args, backend, corrupt, is_unique_violation, to_json, write_tx};
use crate::{Dialect, SqlStore, check_len, limits};

pub(crate) const TASK_COLS: &str =
    "id, namespace, name, version, labels, spec, shard, next_fire_at, paused, created_at, updated_at";

pub(crate) fn decode_task(r: &dyn Row) -> StoreResult<TaskRecord> {
    let labels_json = r.text("labels")?;
    let labels: BTreeMap<String, String> = serde_json::from_str(&labels_json)
        .map_err(|e| corrupt(format!("column labels holds invalid label JSON: {e}")))?;
    Ok(TaskRecord {
        id: r.int("id")?,
        namespace: r.text("namespace")?,
        name: r.text("name")?,
        version: r.int("version")?,
        labels,
        spec: r.json("spec")?,
        shard: r.uint("shard")?,
        next_fire_at: r.opt_time("next_fire_at")?,
        paused: r.boolean("paused")?,
        created_at: r.time("created_at")?,
        updated_at: r.time("updated_at")?,
    })
}

fn labels_json(labels: &BTreeMap<String, String>) -> String {
    serde_json::to_string(labels).unwrap_or_else(|_| "{}".to_owned())
}

fn validate_task(t: &TaskWrite) -> StoreResult<()> {
    check_len("namespace", &t.namespace, limits::NAME)?;
    check_len("name", &t.name, limits::NAME)?;
    for (k, v) in &t.labels {
        check_len("labels", k, limits::LABEL_KEY)?;
        check_len("labels", v, limits::LABEL_VALUE)?;
    }
    Ok(())
}

/// Checks, inside the caller's transaction, that `fence` is still the current epoch of its shard, holding a shared
/// lock on the shard's `shard_fences` row until the transaction ends (a takeover waits for us, and we for it).
pub(crate) async fn check_fence(ex: &mut Ex<'_>, dialect_share: &str, fence: Option<Fence>) -> StoreResult<()> {
    let Some(fence) = fence else { return Ok(()) };
    let sql = format!("SELECT epoch FROM shard_fences WHERE shard = ?{dialect_share}");
    let epoch = ex.fetch_opt(&sql, args![fence.shard], |r| r.int("epoch")).await?;
    if epoch == Some(fence.epoch) { Ok(()) } else { Err(StoreError::Fenced { shard: fence.shard, epoch: fence.epoch }) }
}

/// Inserts label rows for one task (multi-row `INSERT`).
async fn insert_labels(ex: &mut Ex<'_>, task_id: i64, labels: &BTreeMap<String, String>) -> StoreResult<()> {
    if labels.is_empty() {
        return Ok(());
    }
    let values = vec!["(?, ?, ?)"; labels.len()].join(", ");
    let mut a = Vec::with_capacity(labels.len() * 3);
    for (k, v) in labels {
        a.extend(args![task_id, k, v]);
    }
    ex.execute(&format!("INSERT INTO task_labels (task_id, label_key, label_value) VALUES {values}"), a).await?;
    Ok(())
}

impl SqlStore {
    async fn put_task_once(
        &self,
        task: &TaskWrite,
        precondition: Precondition,
        now: DateTime<Utc>,
    ) -> StoreResult<TaskRecord> {
        let now = truncate_millis(now);
        let key = format!("{}/{}", task.namespace, task.name);
        let spec = to_json(&task.spec);
        let labels = labels_json(&task.labels);
        let for_update = self.dialect.for_update();
        write_tx!(self, |tx| {
            let mut ex = tx.ex();
            let sql = format!(
                "SELECT id, version, paused, created_at FROM tasks WHERE namespace = ? AND name = ?{for_update}"
            );
            let existing = ex
                .fetch_opt(&sql, args![&task.namespace, &task.name], |r| {
                    Ok((r.int("id")?, r.int("version")?, r.boolean("paused")?, r.time("created_at")?))
                })
                .await?;
            match existing {
                Some((id, version, paused, created_at)) => {
                    match precondition {
                        Precondition::MustNotExist => {
                            return Err(StoreError::conflict("task", &key, "task already exists"));
                        }
                        Precondition::Version(v) if v != version => {
                            return Err(StoreError::conflict(
                                "task",
                                &key,
                                format!("expected version {v}, found {version}"),
                            ));
                        }
                        _ => {}
                    }
                    let new_version = version + 1;
                    ex.execute(
                        "UPDATE tasks SET version = ?, labels = ?, spec = ?, shard = ?, next_fire_at = ?, \
                         updated_at = ? WHERE id = ?",
                        args![new_version, &labels, &spec, task.shard, task.next_fire_at, now, id],
                    )
                    .await?;
                    ex.execute("DELETE FROM task_labels WHERE task_id = ?", args![id]).await?;
                    insert_labels(&mut ex, id, &task.labels).await?;
                    ex.execute(
                        "INSERT INTO task_versions (task_id, version, spec, created_at) VALUES (?, ?, ?, ?)",
                        args![id, new_version, &spec, now],
                    )
                    .await?;
                    Ok(TaskRecord {
                        id,
                        namespace: task.namespace.clone(),
                        name: task.name.clone(),
                        version: new_version,
                        labels: task.labels.clone(),
                        spec: task.spec.clone(),
                        shard: task.shard,
                        next_fire_at: task.next_fire_at.map(truncate_millis),
                        paused,
                        created_at,
                        updated_at: now,
                    })
                }
                None => {
                    if let Precondition::Version(v) = precondition {
                        return Err(StoreError::not_found("task", format!("{key} (expected version {v})")));
                    }
                    let inserted = ex
                        .insert_id(
                            "INSERT INTO tasks (namespace, name, version, labels, spec, shard, next_fire_at, paused, \
                             created_at, updated_at) VALUES (?, ?, 1, ?, ?, ?, ?, ?, ?, ?)",
                            args![
                                &task.namespace,
                                &task.name,
                                &labels,
                                &spec,
                                task.shard,
                                task.next_fire_at,
                                false,
                                now,
                                now
                            ],
                        )
                        .await;
                    let id = match inserted {
                        Ok(id) => id,
                        // Someone created it concurrently (after our SELECT).
                        Err(e) if is_unique_violation(&e) => {
                            return Err(match precondition {
                                Precondition::MustNotExist => StoreError::conflict("task", &key, "task already exists"),
                                // `Any`: re-run the transaction, which will now replace the new task.
                                _ => backend(BackendErrorKind::Retryable, "concurrent creation of the same task"),
                            });
                        }
                        Err(e) => return Err(e),
                    };
                    insert_labels(&mut ex, id, &task.labels).await?;
                    ex.execute(
                        "INSERT INTO task_versions (task_id, version, spec, created_at) VALUES (?, 1, ?, ?)",
                        args![id, &spec, now],
                    )
                    .await?;
                    Ok(TaskRecord {
                        id,
                        namespace: task.namespace.clone(),
                        name: task.name.clone(),
                        version: 1,
                        labels: task.labels.clone(),
                        spec: task.spec.clone(),
                        shard: task.shard,
                        next_fire_at: task.next_fire_at.map(truncate_millis),
                        paused: false,
                        created_at: now,
                        updated_at: now,
                    })
                }
            }
        })
    }

    /// Bulk-loads new tasks (for benchmarks and imports): multi-row `INSERT`s of up to 500 tasks inside one
    /// transaction per call, with their labels and first version. Fails with `Conflict` (and writes nothing) if
    /// any task already exists. Returns the number of tasks inserted.
    pub async fn bulk_insert_tasks(&self, tasks: &[TaskWrite], now: DateTime<Utc>) -> StoreResult<u64> {
        for t in tasks {
            validate_task(t)?;
        }
        let now = truncate_millis(now);
        let dialect = self.dialect;
        write_tx!(self, |tx| {
            let mut ex = tx.ex();
            let mut total = 0u64;
            for chunk in tasks.chunks(500) {
                let mut a = Vec::with_capacity(chunk.len() * 9);
                for t in chunk {
                    a.extend(args![
                        &t.namespace,
                        &t.name,
                        labels_json(&t.labels),
                        to_json(&t.spec),
                        t.shard,
                        t.next_fire_at,
                        false,
                        now,
                        now
                    ]);
                }
                let values = vec!["(?, ?, 1, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
                let sql = format!(
                    "INSERT INTO tasks (namespace, name, version, labels, spec, shard, next_fire_at, paused, \
                     created_at, updated_at) VALUES {values}"
                );
                // The generated ids, by key. PostgreSQL and SQLite return them from the INSERT itself; MySQL has no
                // INSERT … RETURNING, so look them up (a row-constructor IN list is a range scan of the unique key).
                let inserted = match dialect {
                    Dialect::Postgres | Dialect::Sqlite => {
                        ex.fetch_all(&format!("{sql} RETURNING id, namespace, name"), a, |r| {
                            Ok(((r.text("namespace")?, r.text("name")?), r.int("id")?))
                        })
                        .await
                    }
                    Dialect::MySql => match ex.execute(&sql, a).await {
                        Ok(_) => {
                            let mut a = Vec::with_capacity(chunk.len() * 2);
                            for t in chunk {
                                a.extend(args![&t.namespace, &t.name]);
                            }
                            let pairs = vec!["(?, ?)"; chunk.len()].join(", ");
                            ex.fetch_all(
                                &format!("SELECT id, namespace, name FROM tasks WHERE (namespace, name) IN ({pairs})"),
                                a,
                                |r| Ok(((r.text("namespace")?, r.text("name")?), r.int("id")?)),
                            )
                            .await
                        }
                        Err(e) => Err(e),
                    },
                };
                let ids: BTreeMap<(String, String), i64> = match inserted {
                    Ok(rows) => rows.into_iter().collect(),
                    Err(e) if is_unique_violation(&e) => {
                        return Err(StoreError::conflict("task", "bulk insert", "a task already exists"));
                    }
                    Err(e) => return Err(e),
                };
                total += ids.len() as u64;
                let mut label_args = Vec::new();
                let mut version_args = Vec::with_capacity(chunk.len() * 3);
                for t in chunk {
                    let id = *ids
                        .get(&(t.namespace.clone(), t.name.clone()))
                        .ok_or_else(|| corrupt("bulk-inserted task not found".to_owned()))?;
                    for (k, v) in &t.labels {
                        label_args.extend(args![id, k, v]);
                    }
                    version_args.extend(args![id, to_json(&t.spec), now]);
                }
                for part in label_args.chunks(3 * 1000) {
                    let values = vec!["(?, ?, ?)"; part.len() / 3].join(", ");
                    ex.execute(
                        &format!("INSERT INTO task_labels (task_id, label_key, label_value) VALUES {values}"),
                        part.to_vec(),
                    )
                    .await?;
                }
                let values = vec!["(?, 1, ?, ?)"; chunk.len()].join(", ");
                ex.execute(
                    &format!("INSERT INTO task_versions (task_id, version, spec, created_at) VALUES {values}"),
                    version_args,
                )
                .await?;
            }
            Ok(total)
        })
    }

    async fn task_by(&self, where_: &str, a: Vec<Arg>) -> StoreResult<Option<TaskRecord>> {
        let mut c = self.pool.conn().await?;
        c.ex().fetch_opt(&format!("SELECT {TASK_COLS} FROM tasks WHERE {where_}"), a, decode_task).await
    }
}

#[async_trait]
impl TaskStore for SqlStore {
    async fn put_task(
        &self,
        task: TaskWrite,
        precondition: Precondition,
        now: DateTime<Utc>,
    ) -> StoreResult<TaskRecord> {
        validate_task(&task)?;
        self.put_task_once(&task, precondition, now).await
    }

    async fn get_task(&self, namespace: &str, name: &str) -> StoreResult<Option<TaskRecord>> {
        self.task_by("namespace = ? AND name = ?", args![namespace, name]).await
    }

    async fn get_task_by_id(&self, id: i64) -> StoreResult<Option<TaskRecord>> {
        self.task_by("id = ?", args![id]).await
    }

    async fn delete_task(&self, namespace: &str, name: &str) -> StoreResult<bool> {
        let for_update = self.dialect.for_update();
        write_tx!(self, |tx| {
            let mut ex = tx.ex();
            let sql = format!("SELECT id FROM tasks WHERE namespace = ? AND name = ?{for_update}");
            let Some(id) = ex.fetch_opt(&sql, args![namespace, name], |r| r.int("id")).await? else {
                return Ok(false);
            };
            ex.execute("DELETE FROM task_labels WHERE task_id = ?", args![id]).await?;
            ex.execute("DELETE FROM task_versions WHERE task_id = ?", args![id]).await?;
            ex.execute("DELETE FROM tasks WHERE id = ?", args![id]).await?;
            Ok(true)
        })
    }

    async fn list_tasks(&self, filter: &TaskFilter, page: &PageRequest) -> StoreResult<Page<TaskRecord>> {
        let limit = page.effective_limit() as usize;
        let after = match &page.cursor {
            Some(c) => decode_id(c)?,
            None => 0,
        };
        let mut sql = format!("SELECT {TASK_COLS} FROM tasks t WHERE t.id > ?");
        let mut a = args![after];
        if let Some(ns) = &filter.namespace {
            sql.push_str(" AND t.namespace = ?");
            a.push(Arg::from(ns));
        }
        if let Some(p) = filter.paused {
            sql.push_str(" AND t.paused = ?");
            a.push(Arg::from(p));
        }
        for (k, v) in &filter.labels {
            // `l.task_id > cursor` repeats the keyset bound inside the subquery: planners do not infer it from
            // `l.task_id = t.id AND t.id > cursor`, and without it a merge join over the label index would scan
            // every matching label row below the cursor.
            sql.push_str(
                " AND EXISTS (SELECT 1 FROM task_labels l WHERE l.task_id = t.id AND l.label_key = ? \
                 AND l.label_value = ? AND l.task_id > ?)",
            );
            a.extend(args![k, v, after]);
        }
        sql.push_str(" ORDER BY t.id LIMIT ?");
        a.push(Arg::from(limit as i64 + 1));
        let mut c = self.pool.conn().await?;
        let mut items = c.ex().fetch_all(&sql, a, decode_task).await?;
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|t| encode_id(t.id))
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    async fn task_versions(&self, namespace: &str, name: &str) -> StoreResult<Vec<TaskVersion>> {
        let mut c = self.pool.conn().await?;
        let mut ex = c.ex();
        let Some(id) = ex
            .fetch_opt("SELECT id FROM tasks WHERE namespace = ? AND name = ?", args![namespace, name], |r| r.int("id"))
            .await?
        else {
            return Err(StoreError::not_found("task", format!("{namespace}/{name}")));
        };
        ex.fetch_all(
            "SELECT task_id, version, spec, created_at FROM task_versions WHERE task_id = ? ORDER BY version",
            args![id],
            |r| {
                Ok(TaskVersion {
                    task_id: r.int("task_id")?,
                    version: r.int("version")?,
                    spec: r.json("spec")?,
                    created_at: r.time("created_at")?,
                })
            },
        )
        .await
    }

    async fn set_paused(
        &self,
        namespace: &str,
        name: &str,
        paused: bool,
        next_fire_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> StoreResult<TaskRecord> {
        let now = truncate_millis(now);
        write_tx!(self, |tx| {
            let mut ex = tx.ex();
            let done = if paused {
                ex.execute(
                    "UPDATE tasks SET paused = ?, updated_at = ? WHERE namespace = ? AND name = ?",
                    args![true, now, namespace, name],
                )
                .await?
            } else {
                ex.execute(
                    "UPDATE tasks SET paused = ?, next_fire_at = ?, updated_at = ? WHERE namespace = ? AND name = ?",
                    args![false, next_fire_at, now, namespace, name],
                )
                .await?
            };
            if done.rows == 0 {
                return Err(StoreError::not_found("task", format!("{namespace}/{name}")));
            }
            ex.fetch_opt(
                &format!("SELECT {TASK_COLS} FROM tasks WHERE namespace = ? AND name = ?"),
                args![namespace, name],
                decode_task,
            )
            .await?
            .ok_or_else(|| StoreError::not_found("task", format!("{namespace}/{name}")))
        })
    }

    async fn due_tasks(&self, shard: u32, until: DateTime<Utc>, limit: u32) -> StoreResult<Vec<DueTask>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut c = self.pool.conn().await?;
        c.ex()
            .fetch_all(
                "SELECT id, namespace, name, version, next_fire_at FROM tasks \
                 WHERE shard = ? AND paused = ? AND next_fire_at <= ? ORDER BY next_fire_at, id LIMIT ?",
                args![shard, false, until, i64::from(limit)],
                |r| {
                    Ok(DueTask {
                        task_id: r.int("id")?,
                        namespace: r.text("namespace")?,
                        name: r.text("name")?,
                        version: r.int("version")?,
                        next_fire_at: r.time("next_fire_at")?,
                    })
                },
            )
            .await
    }

    async fn fire(&self, req: FireRequest) -> StoreResult<FireOutcome> {
        crate::batch::single(self.fire_many(vec![req]).await?)
    }

    async fn fire_batch(&self, reqs: Vec<FireRequest>) -> StoreResult<Vec<StoreResult<FireOutcome>>> {
        self.fire_many(reqs).await
    }
}
