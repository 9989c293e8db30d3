//! Backend-specific behaviour beyond the conformance suite: migrations (idempotent, concurrent first start, newer
//! schema refused), URL handling, SQLite file placement and pragmas, error hygiene, the bulk loader.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use rota_store::{
    AttemptState, CompleteAttempt, FireRequest, LeaseStore, NewAttempt, NewRun, PageRequest, Precondition, RunFilter,
    RunPatch, RunRecord, RunState, RunStore, Store, StoreError, TaskFilter, TaskRecord, TaskStore, TaskWrite,
    Transition, TriggerKind,
};
use rota_store_sql::testing::{self, Backend};
use rota_store_sql::{ConnectOptions, SCHEMA_VERSION, SqlStore};
use sqlx::{Connection, Executor};

fn t0() -> DateTime<Utc> {
    Utc.timestamp_millis_opt(1_790_000_000_123).single().expect("valid")
}

fn task(ns: &str, name: &str, shard: u32, next: Option<DateTime<Utc>>) -> TaskWrite {
    TaskWrite {
        namespace: ns.into(),
        name: name.into(),
        labels: BTreeMap::from([("team".to_string(), format!("t{}", shard % 3))]),
        spec: serde_json::json!({"name": name}),
        shard,
        next_fire_at: next,
    }
}

/// Runs one raw statement on the database at `url` (outside the store).
async fn raw(url: &str, sql: &str) {
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    match rota_store_sql::dialect_of_url(url).expect("known scheme") {
        rota_store_sql::Dialect::Sqlite => {
            sqlx::SqliteConnection::connect(url).await.expect("connect").execute(sql).await.expect("raw sql");
        }
        rota_store_sql::Dialect::Postgres => {
            sqlx::PgConnection::connect(url).await.expect("connect").execute(sql).await.expect("raw sql");
        }
        rota_store_sql::Dialect::MySql => {
            sqlx::MySqlConnection::connect(url).await.expect("connect").execute(sql).await.expect("raw sql");
        }
    }
}

async fn url_of(b: Backend) -> String {
    testing::fresh_url(b).await.unwrap_or_else(|e| panic!("{e}"))
}

/// Four processes' worth of stores starting at once on an empty database, then more connects: the schema is
/// applied exactly once and data written through one store is visible through the others.
async fn migrations_are_idempotent_and_concurrent(b: Backend) {
    let url = url_of(b).await;
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { SqlStore::connect(&url).await })
        })
        .collect();
    let mut stores = Vec::new();
    for s in starts {
        stores.push(s.await.expect("join").unwrap_or_else(|e| panic!("{}: concurrent first connect: {e}", b.name())));
    }
    for s in &stores {
        assert_eq!(s.schema_version().await.expect("schema_version"), SCHEMA_VERSION);
        assert_eq!(s.backend_name(), b.name());
        assert_eq!(s.supports_cluster(), b != Backend::Sqlite);
    }
    stores[0].put_task(task("ns", "t", 1, Some(t0())), Precondition::MustNotExist, t0()).await.expect("put_task");
    let again = SqlStore::connect(&url).await.expect("connect again");
    assert_eq!(again.schema_version().await.expect("schema_version"), SCHEMA_VERSION);
    assert!(again.get_task("ns", "t").await.expect("get_task").is_some(), "data survives a second migration run");
    again.migrate().await.expect("explicit migrate is a no-op");
    assert!(stores[3].get_task("ns", "t").await.expect("get_task").is_some());
}

/// A database migrated by a newer build is refused instead of being used with the wrong schema.
async fn newer_schema_is_refused(b: Backend) {
    let url = url_of(b).await;
    SqlStore::connect(&url).await.expect("first connect");
    raw(&url, "INSERT INTO rota_migrations (version, applied_at) VALUES (999, 0)").await;
    let err = SqlStore::connect(&url).await.expect_err("a newer schema must be refused");
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    assert!(err.to_string().contains("newer"), "{err}");
}

/// The bulk loader inserts tasks with labels and first versions, visible to every query; a conflicting batch
/// writes nothing.
async fn bulk_insert(b: Backend) {
    let store = testing::fresh(b).await;
    let tasks: Vec<TaskWrite> = (0..1203)
        .map(|i| task(if i % 2 == 0 { "even" } else { "odd" }, &format!("t{i:04}"), i % 4, Some(t0())))
        .collect();
    assert_eq!(store.bulk_insert_tasks(&tasks, t0()).await.expect("bulk insert"), 1203);
    let page = store
        .list_tasks(&TaskFilter { namespace: Some("even".into()), ..Default::default() }, &PageRequest::first(1000))
        .await
        .expect("list");
    assert_eq!(page.items.len(), 602);
    let labelled = store
        .list_tasks(
            &TaskFilter { labels: BTreeMap::from([("team".to_string(), "t1".to_string())]), ..Default::default() },
            &PageRequest::first(1000),
        )
        .await
        .expect("list by label");
    assert!(labelled.items.iter().all(|t| t.shard % 3 == 1 && t.labels["team"] == "t1"));
    assert_eq!(labelled.items.len(), tasks.iter().filter(|t| t.shard % 3 == 1).count());
    assert_eq!(store.due_tasks(2, t0(), 10_000).await.expect("due").len(), 301);
    let v = store.task_versions("odd", "t0001").await.expect("versions");
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].spec, serde_json::json!({"name": "t0001"}));

    let clash = vec![task("new", "a", 0, None), task("even", "t0000", 0, None)];
    assert!(matches!(store.bulk_insert_tasks(&clash, t0()).await, Err(StoreError::Conflict { .. })));
    assert!(store.get_task("new", "a").await.expect("get").is_none(), "a failed batch writes nothing");
}

fn at(secs: i64) -> DateTime<Utc> {
    t0() + chrono::TimeDelta::seconds(secs)
}

fn new_run(task: &TaskRecord, scheduled: i64) -> NewRun {
    NewRun {
        task_id: task.id,
        namespace: task.namespace.clone(),
        name: task.name.clone(),
        task_version: task.version,
        shard: task.shard,
        scheduled_at: at(scheduled),
        trigger: TriggerKind::Schedule,
        state: RunState::Scheduled,
        next_attempt_at: None,
        params: serde_json::json!({}),
        reason: None,
    }
}

fn fire_req(task: &TaskRecord, expected: i64, new: i64) -> FireRequest {
    FireRequest {
        task_id: task.id,
        expected_next_fire_at: Some(at(expected)),
        new_next_fire_at: Some(at(new)),
        runs: vec![new_run(task, expected)],
        fence: None,
        now: at(expected),
    }
}

async fn runs_of(store: &SqlStore, task_id: i64) -> Vec<RunRecord> {
    store
        .list_runs(&RunFilter { task_id: Some(task_id), ..Default::default() }, &PageRequest::first(100))
        .await
        .expect("list_runs")
        .items
}

async fn put(store: &SqlStore, name: &str, shard: u32, next: Option<DateTime<Utc>>) -> TaskRecord {
    store.put_task(task("ns", name, shard, next), Precondition::MustNotExist, t0()).await.expect("put_task")
}

/// `fire` of a paused task is a `Conflict` that writes nothing.
async fn fire_paused_task_conflicts(b: Backend) {
    let store = testing::fresh(b).await;
    let t = put(&store, "t", 1, Some(at(0))).await;
    store.set_paused("ns", "t", true, None, at(1)).await.expect("pause");
    assert!(matches!(store.fire(fire_req(&t, 0, 60)).await, Err(StoreError::Conflict { .. })));
    assert!(runs_of(&store, t.id).await.is_empty(), "nothing written");
    let resumed = store.set_paused("ns", "t", false, Some(at(0)), at(2)).await.expect("resume");
    assert_eq!(resumed.next_fire_at, Some(at(0)));
    store.fire(fire_req(&t, 0, 60)).await.expect("fire after resume");
}

/// `fire_batch`: one outcome per request, in order; failed requests write nothing, the others commit.
async fn fire_batch_mixed_outcomes(b: Backend) {
    let store = testing::fresh(b).await;
    let a = put(&store, "a", 1, Some(at(0))).await;
    let stale = put(&store, "stale", 1, Some(at(30))).await;
    let c = put(&store, "c", 2, Some(at(0))).await;
    let fenced_task = put(&store, "f", 3, Some(at(0))).await;
    let mut ghost = a.clone();
    ghost.id += 1_000_000;
    let mut fenced = fire_req(&fenced_task, 0, 60);
    fenced.fence = Some(rota_store::Fence { shard: 3, epoch: 7 });
    let mut bad = fire_req(&c, 0, 60);
    bad.runs[0].state = RunState::Running;
    let out = store
        .fire_batch(vec![
            fire_req(&a, 0, 60),
            fire_req(&stale, 0, 60),
            fire_req(&ghost, 0, 60),
            fenced,
            bad,
            fire_req(&c, 0, 60),
        ])
        .await
        .expect("fire_batch");
    assert_eq!(out.len(), 6);
    assert_eq!(out[0].as_ref().expect("a fires").inserted.len(), 1);
    assert!(matches!(out[1], Err(StoreError::Conflict { .. })), "{:?}", out[1]);
    assert!(matches!(out[2], Err(StoreError::NotFound { .. })), "{:?}", out[2]);
    assert!(matches!(out[3], Err(StoreError::Fenced { shard: 3, epoch: 7 })), "{:?}", out[3]);
    assert!(matches!(out[4], Err(StoreError::InvalidArgument { .. })), "{:?}", out[4]);
    assert_eq!(out[5].as_ref().expect("c fires").inserted.len(), 1);
    for (t, runs, next) in [(&a, 1, at(60)), (&stale, 0, at(30)), (&c, 1, at(60)), (&fenced_task, 0, at(0))] {
        assert_eq!(runs_of(&store, t.id).await.len(), runs, "runs of {}", t.name);
        let now = store.get_task_by_id(t.id).await.expect("get").expect("exists");
        assert_eq!(now.next_fire_at, Some(next), "next_fire_at of {}", t.name);
    }
    assert!(store.fire_batch(vec![]).await.expect("empty batch").is_empty());
}

fn start_req(run: &RunRecord, n: u32, node: &str) -> (Transition, NewAttempt) {
    (
        Transition {
            run_id: run.id,
            from: vec![RunState::Scheduled],
            to: RunState::Dispatching,
            patch: RunPatch { attempts: Some(n), owner: Some(Some("sched-1".into())), ..Default::default() },
            fence: None,
            now: at(5),
        },
        NewAttempt { run_id: run.id, attempt: n, node: node.into(), started_at: at(5), deadline: Some(at(65)) },
    )
}

/// `start_attempt` / `complete_attempt`: atomic pairs; a failing half writes nothing.
async fn attempt_pairs_are_atomic(b: Backend) {
    let store = testing::fresh(b).await;
    let t = put(&store, "t", 0, None).await;
    let run = store.insert_run(new_run(&t, 0), None, t0()).await.expect("insert_run").record().clone();

    // The attempt already exists: Conflict, and the run is not moved.
    store
        .insert_attempt(NewAttempt { run_id: run.id, attempt: 1, node: "n".into(), started_at: at(1), deadline: None })
        .await
        .expect("insert_attempt");
    let (tr, att) = start_req(&run, 1, "n");
    assert!(matches!(store.start_attempt(tr, att).await, Err(StoreError::Conflict { .. })));
    assert_eq!(store.get_run(run.id).await.expect("get_run"), Some(run.clone()), "run untouched");

    let (tr, att) = start_req(&run, 2, "n");
    let (r, a) = store.start_attempt(tr.clone(), att.clone()).await.expect("start_attempt");
    assert_eq!((r.state, r.attempts, r.owner.as_deref()), (RunState::Dispatching, 2, Some("sched-1")));
    assert_eq!((a.attempt, a.state), (2, AttemptState::Running));
    // The transition no longer applies (run is dispatching): Conflict, and no attempt 3 appears.
    let (tr3, att3) = start_req(&run, 3, "n");
    assert!(matches!(store.start_attempt(tr3, att3).await, Err(StoreError::Conflict { .. })));
    assert_eq!(store.list_attempts(run.id).await.expect("list").len(), 2, "no attempt inserted by a failed start");

    let succeed = |from: RunState| Transition {
        run_id: run.id,
        from: vec![from],
        to: RunState::Succeeded,
        patch: RunPatch { finished_at: Some(at(9)), ..Default::default() },
        fence: None,
        now: at(9),
    };
    let done = CompleteAttempt {
        attempt_id: a.id,
        state: AttemptState::Succeeded,
        output: Some(serde_json::json!({"ok": true})),
        error: None,
        now: at(9),
    };
    // The run transition conflicts (wrong `from`): the attempt stays running.
    assert!(matches!(
        store.complete_attempt(done.clone(), Some(succeed(RunState::Running))).await,
        Err(StoreError::Conflict { .. })
    ));
    let listed = store.list_attempts(run.id).await.expect("list");
    assert_eq!(listed.iter().find(|x| x.id == a.id).map(|x| x.state), Some(AttemptState::Running));
    let (r, fin) = store.complete_attempt(done.clone(), Some(succeed(RunState::Dispatching))).await.expect("complete");
    assert_eq!(r.map(|r| r.state), Some(RunState::Succeeded));
    assert_eq!((fin.state, fin.finished_at), (AttemptState::Succeeded, Some(at(9))));
    assert!(matches!(store.complete_attempt(done, None).await, Err(StoreError::Conflict { .. })), "finished once");
}

/// The batch variants: per-item outcomes in order, failures write nothing.
async fn attempt_batches(b: Backend) {
    let store = testing::fresh(b).await;
    let t = put(&store, "t", 0, None).await;
    let mut runs = Vec::new();
    for i in 0..3 {
        runs.push(store.insert_run(new_run(&t, i), None, t0()).await.expect("insert_run").record().clone());
    }
    let mut ghost = runs[0].clone();
    ghost.id += 1_000_000;
    let out = store
        .start_attempts(vec![
            start_req(&runs[0], 1, "n"),
            start_req(&ghost, 1, "n"),
            start_req(&runs[0], 1, "n"),
            start_req(&runs[2], 1, "n"),
        ])
        .await
        .expect("start_attempts");
    assert!(out[0].is_ok(), "{:?}", out[0]);
    assert!(matches!(out[1], Err(StoreError::NotFound { .. })), "{:?}", out[1]);
    assert!(matches!(out[2], Err(StoreError::Conflict { .. })), "the batch sees its own first item: {:?}", out[2]);
    assert!(out[3].is_ok());
    assert_eq!(store.get_run(runs[1].id).await.expect("get").map(|r| r.state), Some(RunState::Scheduled));

    let a0 = out[0].as_ref().expect("ok").1.clone();
    let a2 = out[3].as_ref().expect("ok").1.clone();
    let complete =
        |id: i64, state: AttemptState| CompleteAttempt { attempt_id: id, state, output: None, error: None, now: at(7) };
    let fail_run = |run: &RunRecord| Transition {
        run_id: run.id,
        from: vec![RunState::Dispatching],
        to: RunState::Failed,
        patch: RunPatch::default(),
        fence: None,
        now: at(7),
    };
    let out = store
        .complete_attempts(vec![
            (complete(a0.id, AttemptState::Failed), Some(fail_run(&runs[0]))),
            (complete(a0.id, AttemptState::Succeeded), None),
            (complete(a2.id, AttemptState::Running), None),
            (complete(a2.id, AttemptState::TimedOut), Some(fail_run(&runs[1]))),
        ])
        .await
        .expect("complete_attempts");
    assert_eq!(out[0].as_ref().expect("ok").0.as_ref().map(|r| r.state), Some(RunState::Failed));
    assert!(matches!(out[1], Err(StoreError::Conflict { .. })), "{:?}", out[1]);
    assert!(matches!(out[2], Err(StoreError::InvalidArgument { .. })), "{:?}", out[2]);
    assert!(matches!(out[3], Err(StoreError::Conflict { .. })), "run 1 is scheduled: {:?}", out[3]);
    let still = store.list_attempts(runs[2].id).await.expect("list");
    assert_eq!(still[0].state, AttemptState::Running, "a failed item writes nothing");
}

/// Racing `start_attempt` on one run: exactly one wins, the others `Conflict`.
async fn race_start_attempt(b: Backend) {
    let store = std::sync::Arc::new(testing::fresh(b).await);
    let t = put(&store, "t", 0, None).await;
    let lease = store.acquire_lease(0, "me", Duration::from_secs(60), t0()).await.expect("lease").expect("free");
    for round in 0..3 {
        let run = store.insert_run(new_run(&t, round), None, t0()).await.expect("insert_run").record().clone();
        let mut handles = Vec::new();
        for i in 0..8 {
            let store = store.clone();
            let (mut tr, att) = start_req(&run, 1, &format!("node-{i}"));
            tr.fence = Some(lease.fence());
            handles.push(tokio::spawn(async move { store.start_attempt(tr, att).await }));
        }
        let mut wins = 0;
        for h in handles {
            match h.await.expect("join") {
                Ok(_) => wins += 1,
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => panic!("start_attempt: expected Ok or Conflict, got {e:?}"),
            }
        }
        assert_eq!(wins, 1, "round {round}");
        assert_eq!(store.list_attempts(run.id).await.expect("list").len(), 1, "round {round}: one attempt");
    }
}

macro_rules! per_backend {
    ($($case:ident),*) => {
        mod sqlite { use super::*; $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $case() { super::$case(Backend::Sqlite).await })* }
        mod postgres { use super::*; $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $case() { super::$case(Backend::Postgres).await })* }
        mod mysql { use super::*; $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $case() { super::$case(Backend::MySql).await })* }
    };
}

per_backend!(
    migrations_are_idempotent_and_concurrent,
    newer_schema_is_refused,
    bulk_insert,
    fire_paused_task_conflicts,
    fire_batch_mixed_outcomes,
    attempt_pairs_are_atomic,
    attempt_batches,
    race_start_attempt
);

#[tokio::test]
async fn sqlite_creates_missing_parent_directories_and_uses_wal() {
    let dir = std::env::temp_dir().join(format!("rota-test-{}", testing::unique_suffix()));
    let path = dir.join("deeply").join("nested").join("rota.db");
    assert!(!dir.exists());
    let store = SqlStore::open_sqlite(&path).await.expect("open_sqlite in a missing directory");
    assert!(path.exists(), "the database file is created");
    store.put_task(task("ns", "t", 0, None), Precondition::MustNotExist, t0()).await.expect("put_task");
    store.close().await;

    let url = format!("sqlite://{}", path.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("connect");
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&mut conn).await.expect("journal_mode");
    assert_eq!(mode.to_lowercase(), "wal", "the database is in WAL mode");
    let reopened = SqlStore::connect(&format!("{url}?mode=rwc")).await.expect("reopen");
    assert!(reopened.get_task("ns", "t").await.expect("get_task").is_some(), "data persisted to the file");

    // Without `mode=`, a missing file is created too; `mode=rw` refuses to create one.
    let plain = dir.join("other").join("plain.db");
    SqlStore::connect(&format!("sqlite://{}", plain.display())).await.expect("sqlite URL without mode");
    assert!(plain.exists());
    let absent = dir.join("absent.db");
    assert!(SqlStore::connect(&format!("sqlite://{}?mode=rw", absent.display())).await.is_err());
    assert!(!absent.exists(), "mode=rw does not create the database");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn sqlite_in_memory() {
    let store = SqlStore::connect("sqlite::memory:").await.expect("in-memory store");
    store.put_task(task("ns", "t", 0, Some(t0())), Precondition::MustNotExist, t0()).await.expect("put_task");
    // Several calls (pooled connections) see the same in-memory database.
    for _ in 0..3 {
        assert!(store.get_task("ns", "t").await.expect("get_task").is_some());
    }
    assert_eq!(store.due_tasks(0, t0(), 10).await.expect("due").len(), 1);
    let other = SqlStore::connect("sqlite::memory:").await.expect("second in-memory store");
    assert!(other.get_task("ns", "t").await.expect("get_task").is_none(), "each in-memory store is separate");
}

#[tokio::test]
async fn bad_urls_are_invalid_arguments() {
    for url in ["redis://localhost", "nonsense", "", "sqlite://?mode=nope"] {
        match SqlStore::connect(url).await {
            Err(StoreError::InvalidArgument { .. }) => {}
            other => panic!("{url:?}: expected InvalidArgument, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn connection_errors_never_leak_credentials() {
    let opts = ConnectOptions { acquire_timeout: Duration::from_secs(2), ..Default::default() };
    for url in ["postgres://rota:s3cr3t-pw@127.0.0.1:1/rota", "mysql://rota:s3cr3t-pw@127.0.0.1:1/rota"] {
        let err = SqlStore::connect_with(url, opts.clone()).await.expect_err("nothing listens on port 1");
        let msg = format!("{err} {err:?}");
        assert!(matches!(err, StoreError::Backend(_)), "{msg}");
        assert!(!msg.contains("s3cr3t"), "the password leaked: {msg}");
        assert!(!msg.contains("127.0.0.1:1"), "the address leaked: {msg}");
    }
    assert_eq!(
        testing::redact("postgres://u:pw@h:5/db"),
        "postgres://u:***@h:5/db",
        "test messages redact passwords too"
    );
}
