//! Hot-path micro-benchmark: the store calls the scheduler makes for every run, one call at a time versus the
//! batched / fused calls, on one backend.
//!
//! ```text
//! cargo run --release -p rota-store-sql --example hotpath-bench -- --backend sqlite --n 20000 --batch 256
//! cargo run --release -p rota-store-sql --example hotpath-bench -- --backend postgres --n 20000 --batch 256
//! cargo run --release -p rota-store-sql --example hotpath-bench -- --backend mysql --n 20000 --batch 256
//! ```
//!
//! Options: `--backend sqlite|postgres|mysql` (required), `--n N` runs per mode (default 20,000), `--batch B`
//! items per batched call (default 256), `--shards S` (default 16), `--rounds R` (default 4: the two modes alternate
//! in R slices of N/R runs, so a change of machine load affects both alike), `--url URL` (default: a fresh
//! database: a temp file for SQLite, a new `rota_t_*` database on `ROTA_TEST_POSTGRES_URL` /
//! `ROTA_TEST_MYSQL_URL`).
//!
//! Each mode gets its own `N` tasks (spread over the shards, all due) and drives each task through one run, with
//! the fences of shard leases held by the benchmark, as the scheduler does:
//!
//! | phase    | one at a time                                   | batched / fused                   |
//! |----------|-------------------------------------------------|-----------------------------------|
//! | fire     | `fire` per task                                 | `fire_batch` of B tasks           |
//! | start    | `transition_run` (→ dispatching) + `insert_attempt` | `start_attempts` of B runs   |
//! | complete | `finish_attempt` + `transition_run` (→ succeeded)   | `complete_attempts` of B runs |
//!
//! Calls are issued by a single caller, one after the other (the latency of each call is on the critical path,
//! which is what batching removes). Reported: runs/s per phase and for the whole path, and the ratio.

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use rota_store::{
    AttemptState, CompleteAttempt, Fence, FireRequest, LeaseStore, NewAttempt, NewRun, PageRequest, RunPatch,
    RunRecord, RunState, RunStore, TaskFilter, TaskStore, TaskWrite, Transition, TriggerKind,
};
use rota_store_sql::SqlStore;
use rota_store_sql::testing::{self, Backend};

struct Args {
    backend: Backend,
    n: usize,
    batch: usize,
    shards: u32,
    rounds: usize,
    url: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut backend = None;
    let mut n = 20_000;
    let mut batch = 256;
    let mut shards = 16;
    let mut rounds = 4;
    let mut url = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--backend" => {
                backend = Some(match value("--backend")?.as_str() {
                    "sqlite" => Backend::Sqlite,
                    "postgres" | "postgresql" => Backend::Postgres,
                    "mysql" | "mariadb" => Backend::MySql,
                    other => return Err(format!("unknown backend {other:?} (sqlite, postgres, mysql)")),
                })
            }
            "--n" => n = value("--n")?.replace('_', "").parse().map_err(|e| format!("--n: {e}"))?,
            "--batch" => batch = value("--batch")?.parse().map_err(|e| format!("--batch: {e}"))?,
            "--shards" => shards = value("--shards")?.parse().map_err(|e| format!("--shards: {e}"))?,
            "--rounds" => rounds = value("--rounds")?.parse().map_err(|e| format!("--rounds: {e}"))?,
            "--url" => url = Some(value("--url")?),
            "-h" | "--help" => {
                return Err("usage: hotpath-bench --backend sqlite|postgres|mysql [--n N] [--batch B] [--shards S] \
                            [--rounds R] [--url URL]"
                    .to_owned());
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    let backend = backend.ok_or("--backend sqlite|postgres|mysql is required")?;
    Ok(Args { backend, n: n.max(1), batch: batch.max(1), shards: shards.max(1), rounds: rounds.max(1), url })
}

fn base() -> DateTime<Utc> {
    Utc.timestamp_millis_opt(1_790_000_000_000).single().expect("valid")
}

fn at(secs: i64) -> DateTime<Utc> {
    base() + TimeDelta::seconds(secs)
}

/// A due task of the benchmark.
#[derive(Clone)]
struct Task {
    id: i64,
    namespace: String,
    name: String,
    shard: u32,
}

/// Loads `n` due tasks into namespace `ns` and returns them.
async fn load(store: &SqlStore, ns: &str, n: usize, shards: u32) -> Vec<Task> {
    let writes: Vec<TaskWrite> = (0..n)
        .map(|i| TaskWrite {
            namespace: ns.to_owned(),
            name: format!("task-{i:07}"),
            labels: Default::default(),
            spec: serde_json::json!({"kind": "Task", "metadata": {"namespace": ns, "name": format!("task-{i:07}")}}),
            shard: (i as u32) % shards,
            next_fire_at: Some(at(0)),
        })
        .collect();
    for chunk in writes.chunks(5_000) {
        store.bulk_insert_tasks(chunk, base()).await.expect("bulk_insert_tasks");
    }
    let mut tasks = Vec::with_capacity(n);
    let mut page = PageRequest::first(1000);
    loop {
        let filter = TaskFilter { namespace: Some(ns.to_owned()), ..Default::default() };
        let p = store.list_tasks(&filter, &page).await.expect("list_tasks");
        tasks.extend(p.items.into_iter().map(|t| Task {
            id: t.id,
            namespace: t.namespace,
            name: t.name,
            shard: t.shard,
        }));
        match p.next_cursor {
            Some(c) => page = PageRequest::after(c, 1000),
            None => break,
        }
    }
    assert_eq!(tasks.len(), n, "loaded tasks");
    tasks
}

fn fire_req(t: &Task, fence: Fence) -> FireRequest {
    FireRequest {
        task_id: t.id,
        expected_next_fire_at: Some(at(0)),
        new_next_fire_at: Some(at(60)),
        runs: vec![NewRun {
            task_id: t.id,
            namespace: t.namespace.clone(),
            name: t.name.clone(),
            task_version: 1,
            shard: t.shard,
            scheduled_at: at(0),
            trigger: TriggerKind::Schedule,
            state: RunState::Scheduled,
            next_attempt_at: None,
            params: serde_json::json!({}),
            reason: None,
        }],
        fence: Some(fence),
        now: at(1),
    }
}

fn start_items(r: &RunRecord, fence: Fence) -> (Transition, NewAttempt) {
    (
        Transition {
            run_id: r.id,
            from: vec![RunState::Scheduled],
            to: RunState::Dispatching,
            patch: RunPatch {
                attempts: Some(1),
                owner: Some(Some("bench-scheduler".into())),
                started_at: Some(at(2)),
                next_attempt_at: Some(Some(at(302))),
                ..Default::default()
            },
            fence: Some(fence),
            now: at(2),
        },
        NewAttempt { run_id: r.id, attempt: 1, node: "executor-1".into(), started_at: at(2), deadline: Some(at(302)) },
    )
}

fn complete_items(r: &RunRecord, attempt_id: i64, fence: Fence) -> (CompleteAttempt, Transition) {
    let output = serde_json::json!({"status": 200, "body": "ok"});
    (
        CompleteAttempt {
            attempt_id,
            state: AttemptState::Succeeded,
            output: Some(output.clone()),
            error: None,
            now: at(3),
        },
        Transition {
            run_id: r.id,
            from: vec![RunState::Dispatching, RunState::Running],
            to: RunState::Succeeded,
            patch: RunPatch { output: Some(output), next_attempt_at: Some(None), ..Default::default() },
            fence: Some(fence),
            now: at(3),
        },
    )
}

#[derive(Default, Clone, Copy)]
struct Phases {
    fire: Duration,
    start: Duration,
    complete: Duration,
}

impl Phases {
    fn add(&mut self, o: Phases) {
        self.fire += o.fire;
        self.start += o.start;
        self.complete += o.complete;
    }

    fn total(&self) -> Duration {
        self.fire + self.start + self.complete
    }
}

async fn one_at_a_time(store: &SqlStore, tasks: &[Task], fences: &[Fence]) -> Phases {
    let mut p = Phases::default();
    let t = Instant::now();
    let mut runs = Vec::with_capacity(tasks.len());
    for task in tasks {
        let out = store.fire(fire_req(task, fences[task.shard as usize])).await.expect("fire");
        runs.push(out.inserted.into_iter().next().expect("one run inserted"));
    }
    p.fire = t.elapsed();

    let t = Instant::now();
    let mut attempts = Vec::with_capacity(runs.len());
    for r in &mut *runs {
        let (tr, a) = start_items(r, fences[r.shard as usize]);
        *r = store.transition_run(tr).await.expect("transition_run");
        attempts.push(store.insert_attempt(a).await.expect("insert_attempt").id);
    }
    p.start = t.elapsed();

    let t = Instant::now();
    for (r, a) in runs.iter().zip(attempts) {
        let (c, tr) = complete_items(r, a, fences[r.shard as usize]);
        store.finish_attempt(c.attempt_id, c.state, c.output, c.error, c.now).await.expect("finish_attempt");
        let done = store.transition_run(tr).await.expect("transition_run");
        assert_eq!(done.state, RunState::Succeeded);
    }
    p.complete = t.elapsed();
    p
}

async fn batched(store: &SqlStore, tasks: &[Task], fences: &[Fence], batch: usize) -> Phases {
    let mut p = Phases::default();
    let t = Instant::now();
    let mut runs = Vec::with_capacity(tasks.len());
    for chunk in tasks.chunks(batch) {
        let reqs = chunk.iter().map(|task| fire_req(task, fences[task.shard as usize])).collect();
        for out in store.fire_batch(reqs).await.expect("fire_batch") {
            runs.push(out.expect("fire item").inserted.into_iter().next().expect("one run inserted"));
        }
    }
    p.fire = t.elapsed();

    let t = Instant::now();
    let mut started = Vec::with_capacity(runs.len());
    for chunk in runs.chunks(batch) {
        let items = chunk.iter().map(|r| start_items(r, fences[r.shard as usize])).collect();
        for out in store.start_attempts(items).await.expect("start_attempts") {
            started.push(out.expect("start item"));
        }
    }
    p.start = t.elapsed();

    let t = Instant::now();
    for chunk in started.chunks(batch) {
        let items = chunk
            .iter()
            .map(|(r, a)| {
                let (c, tr) = complete_items(r, a.id, fences[r.shard as usize]);
                (c, Some(tr))
            })
            .collect();
        for out in store.complete_attempts(items).await.expect("complete_attempts") {
            let (run, _) = out.expect("complete item");
            assert_eq!(run.map(|r| r.state), Some(RunState::Succeeded));
        }
    }
    p.complete = t.elapsed();
    p
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let url = match args.url.clone() {
        Some(u) => u,
        None => testing::fresh_url(args.backend).await.unwrap_or_else(|e| panic!("{e}")),
    };
    let store = SqlStore::connect(&url).await.unwrap_or_else(|e| panic!("connect: {e}"));
    eprintln!("backend {} at {}: loading 2 × {} tasks…", args.backend.name(), testing::redact(&url), args.n);
    let seq_tasks = load(&store, "one-at-a-time", args.n, args.shards).await;
    let batch_tasks = load(&store, "batched", args.n, args.shards).await;
    store.analyze().await.expect("analyze");
    let mut fences = Vec::new();
    for shard in 0..args.shards {
        let lease = store
            .acquire_lease(shard, "bench-scheduler", Duration::from_secs(3600), base())
            .await
            .expect("acquire_lease")
            .expect("free shard");
        fences.push(lease.fence());
    }

    // The modes alternate in `rounds` slices, so a change of machine load affects both alike.
    let (mut seq, mut bat) = (Phases::default(), Phases::default());
    let slice = args.n.div_ceil(args.rounds);
    for (k, (s, b)) in seq_tasks.chunks(slice).zip(batch_tasks.chunks(slice)).enumerate() {
        eprintln!("slice {}/{}: one call at a time, then batched…", k + 1, args.rounds);
        seq.add(one_at_a_time(&store, s, &fences).await);
        bat.add(batched(&store, b, &fences, args.batch).await);
    }

    let n = args.n;
    println!(
        "hot path on {} ({} runs per mode in {} alternating slices, batch {}, {} shards, fenced, one caller)",
        args.backend.name(),
        n,
        args.rounds,
        args.batch,
        args.shards
    );
    println!("{:<10} {:>18} {:>18} {:>8}", "phase", "one-at-a-time r/s", "batched r/s", "ratio");
    for (name, s, b) in [
        ("fire", seq.fire, bat.fire),
        ("start", seq.start, bat.start),
        ("complete", seq.complete, bat.complete),
        ("total", seq.total(), bat.total()),
    ] {
        println!("{:<10} {:>18.0} {:>18.0} {:>7.1}x", name, rate(n, s), rate(n, b), s.as_secs_f64() / b.as_secs_f64());
    }
    store.close().await;
}
