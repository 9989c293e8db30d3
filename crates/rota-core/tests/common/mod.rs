//! Shared support of the scheduler tests: a scriptable in-process executor, fresh real stores, polling helpers.
#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rota_core::{Dispatch, DispatchOutcome, Event, EventKind, Executor, Scheduler, SchedulerConfig};
use rota_proto::RunResult;
use rota_spec::Task;
use rota_store::{PageRequest, RunFilter, RunRecord, Store};
use rota_store_sql::testing::Backend;
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// Runs each listed `async fn name(backend: Backend)` as one test per backend: SQLite and PostgreSQL (required),
/// and MySQL/MariaDB (the third supported backend; drop the `mysql` module to narrow the matrix).
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    $crate::common::init_tracing();
                    super::$name(rota_store_sql::testing::Backend::Sqlite).await
                }
            )*
        }
        mod mysql {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    $crate::common::init_tracing();
                    super::$name(rota_store_sql::testing::Backend::MySql).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    $crate::common::init_tracing();
                    super::$name(rota_store_sql::testing::Backend::Postgres).await
                }
            )*
        }
    };
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,rota::events=info")),
        )
        .with_test_writer()
        .try_init();
}

/// One step of an executor script, by attempt number.
#[derive(Debug, Clone)]
pub enum Step {
    /// Answer succeeded (output `{"attempt": n}`).
    Succeed,
    /// Answer failed.
    Fail,
    /// A well-behaved executor whose node never answers: waits for the timeout, then `TimedOut`.
    Hang,
    /// An executor that never returns (the core must bound it).
    HangForever,
    /// Answer `202 Accepted` (the node reports later).
    Accept,
    /// Work this long, then succeed.
    Sleep(Duration),
    /// Answer with a transport failure.
    Error(&'static str),
}

/// A scriptable executor: per task key, attempt `n` runs step `n-1` of the script (the last step repeats).
pub struct TestExecutor {
    scripts: Mutex<HashMap<String, Vec<Step>>>,
    default: Vec<Step>,
    dispatches: Mutex<Vec<Dispatch>>,
    cancels: Mutex<Vec<(i64, u32)>>,
}

impl TestExecutor {
    pub fn new(default: Vec<Step>) -> Arc<Self> {
        Arc::new(TestExecutor {
            scripts: Mutex::new(HashMap::new()),
            default,
            dispatches: Mutex::new(Vec::new()),
            cancels: Mutex::new(Vec::new()),
        })
    }

    pub fn succeeding() -> Arc<Self> {
        Self::new(vec![Step::Succeed])
    }

    pub fn script(&self, task_key: &str, steps: Vec<Step>) {
        self.scripts.lock().unwrap().insert(task_key.to_string(), steps);
    }

    pub fn dispatches(&self) -> Vec<Dispatch> {
        self.dispatches.lock().unwrap().clone()
    }

    pub fn dispatches_of(&self, run_id: i64) -> Vec<Dispatch> {
        self.dispatches().into_iter().filter(|d| d.run_id == run_id).collect()
    }

    pub fn cancels(&self) -> Vec<(i64, u32)> {
        self.cancels.lock().unwrap().clone()
    }
}

#[async_trait]
impl Executor for TestExecutor {
    async fn dispatch(&self, d: Dispatch) -> DispatchOutcome {
        self.dispatches.lock().unwrap().push(d.clone());
        let step = {
            let scripts = self.scripts.lock().unwrap();
            let script = scripts.get(&d.task_key()).unwrap_or(&self.default);
            let i = (d.attempt as usize).saturating_sub(1).min(script.len() - 1);
            script[i].clone()
        };
        match step {
            Step::Succeed => DispatchOutcome::Completed(RunResult::succeeded(Some(json!({"attempt": d.attempt})))),
            Step::Fail => DispatchOutcome::Completed(RunResult::failed(format!("boom on attempt {}", d.attempt))),
            Step::Hang => {
                tokio::time::sleep(d.timeout).await;
                DispatchOutcome::TimedOut
            }
            Step::HangForever => std::future::pending().await,
            Step::Accept => DispatchOutcome::Accepted,
            Step::Sleep(t) => {
                tokio::time::sleep(t).await;
                DispatchOutcome::Completed(RunResult::succeeded(None))
            }
            Step::Error(e) => DispatchOutcome::Failed { error: e.to_string() },
        }
    }

    async fn cancel(&self, run_id: i64, attempt: u32, _target: &rota_spec::Target) {
        self.cancels.lock().unwrap().push((run_id, attempt));
    }
}

/// A fresh, empty store of the backend.
pub async fn store(backend: Backend) -> Arc<dyn Store> {
    Arc::new(rota_store_sql::testing::fresh(backend).await)
}

/// Short intervals for tests.
pub fn config(node: &str) -> SchedulerConfig {
    SchedulerConfig {
        node_id: node.to_string(),
        shard_count: 4,
        lookahead: Duration::from_secs(1),
        scan_interval: Duration::from_millis(100),
        lease_ttl: Duration::from_secs(3),
        default_timeout: Duration::from_secs(30),
        shutdown_grace: Duration::from_secs(5),
        ..SchedulerConfig::default()
    }
}

pub fn scheduler(store: &Arc<dyn Store>, exec: &Arc<TestExecutor>, cfg: SchedulerConfig) -> Scheduler {
    Scheduler::new(store.clone(), exec.clone(), cfg)
}

/// A task document `ns/name` calling a fixed URL, with `spec` fields merged over the defaults.
pub fn task(name: &str, spec: Value) -> Task {
    let mut s = json!({"target": {"http": {"url": "http://127.0.0.1:9/run"}}});
    if let (Value::Object(base), Value::Object(extra)) = (&mut s, spec) {
        base.extend(extra);
    }
    let doc = json!({
        "apiVersion": "rota/v1",
        "kind": "Task",
        "metadata": {"namespace": "test", "name": name},
        "spec": s,
    });
    rota_spec::parse_json(&doc.to_string()).unwrap_or_else(|e| panic!("test task {name} is invalid: {e}"))
}

/// Polls `f` every 20 ms until it returns `Some`, failing the test after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {within:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every run of a task, oldest first (by scheduled_at, then id).
pub async fn runs_of(store: &Arc<dyn Store>, task_id: i64) -> Vec<RunRecord> {
    let filter = RunFilter { task_id: Some(task_id), ..Default::default() };
    let mut out = Vec::new();
    let mut page = PageRequest::first(1000);
    loop {
        let p = store.list_runs(&filter, &page).await.expect("list_runs");
        out.extend(p.items);
        match p.next_cursor {
            Some(c) => page = PageRequest::after(c, 1000),
            None => break,
        }
    }
    out.sort_by_key(|r| (r.scheduled_at, r.id));
    out
}

pub async fn run(store: &Arc<dyn Store>, id: i64) -> RunRecord {
    store.get_run(id).await.expect("get_run").expect("run exists")
}

/// Collects events in the background.
pub struct Events {
    seen: Arc<Mutex<Vec<Event>>>,
}

impl Events {
    pub fn record(sched: &Scheduler) -> Events {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut rx = sched.events().subscribe();
        let s = seen.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(e) => s.lock().unwrap().push(e),
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Events { seen }
    }

    pub fn all(&self) -> Vec<Event> {
        self.seen.lock().unwrap().clone()
    }

    pub fn named(&self, name: &str) -> Vec<Event> {
        self.all().into_iter().filter(|e| e.kind.name() == name).collect()
    }

    pub fn of_run(&self, run_id: i64) -> Vec<EventKind> {
        self.all().into_iter().filter(|e| e.run_id == Some(run_id)).map(|e| e.kind).collect()
    }

    /// The event names of a run, once its latest event is `last` (events reach subscribers asynchronously).
    pub async fn names_of_run(&self, run_id: i64, last: &str) -> Vec<&'static str> {
        eventually(secs(5), &format!("event {last} of run {run_id}"), || {
            let names: Vec<&'static str> = self.of_run(run_id).iter().map(|k| k.name()).collect();
            async move { (names.last() == Some(&last)).then_some(names) }
        })
        .await
    }
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn whole_second(t: DateTime<Utc>) -> bool {
    t.timestamp_subsec_nanos() == 0
}
