//! Storage benchmark: loads N tasks into a fresh database of one backend and measures the queries the scheduler and
//! the API run against a large table.
//!
//! ```text
//! cargo run --release -p rota-store-sql --example store-bench -- --backend sqlite --tasks 1000000
//! cargo run --release -p rota-store-sql --example store-bench -- --backend postgres --tasks 1000000
//! cargo run --release -p rota-store-sql --example store-bench -- --backend mysql --tasks 1000000
//! ```
//!
//! Options: `--backend sqlite|postgres|mysql` (required), `--tasks N` (default 1,000,000), `--samples N` (default
//! 200), `--url URL` (default: a fresh database: a temp file for SQLite, a new `rota_t_*` database on
//! `ROTA_TEST_POSTGRES_URL` / `ROTA_TEST_MYSQL_URL` for the servers).
//!
//! Tasks are spread over 256 shards and 20 namespaces, with `next_fire_at` uniformly random within one day and three
//! labels each. Reported: load rate; p50/p99 of `due_tasks(shard, limit 1000)` over random shards; p50/p99 of one
//! `list_tasks` page (limit 100) at random deep cursors, unfiltered, with a namespace filter and with a label filter;
//! and baselines to read them against: a `SELECT 1` round trip (`ping`), a point lookup (`get_task`) and the same
//! `due_tasks` query on a 10,000-task table.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use rota_store::cursor::encode_id;
use rota_store::{PageRequest, Store, TaskFilter, TaskStore, TaskWrite};
use rota_store_sql::SqlStore;
use rota_store_sql::testing::{self, Backend};

const SHARDS: u32 = 256;
const NAMESPACES: u64 = 20;
const BATCH: usize = 5_000;

/// splitmix64: a tiny deterministic PRNG (no dependency needed for a benchmark).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

struct Args {
    backend: Backend,
    tasks: usize,
    samples: usize,
    url: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut backend = None;
    let mut tasks = 1_000_000;
    let mut samples = 200;
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
            "--tasks" => tasks = value("--tasks")?.replace('_', "").parse().map_err(|e| format!("--tasks: {e}"))?,
            "--samples" => samples = value("--samples")?.parse().map_err(|e| format!("--samples: {e}"))?,
            "--url" => url = Some(value("--url")?),
            "-h" | "--help" => {
                return Err("usage: store-bench --backend sqlite|postgres|mysql [--tasks N] [--samples N] [--url URL]"
                    .to_owned());
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    let backend = backend.ok_or("--backend sqlite|postgres|mysql is required")?;
    Ok(Args { backend, tasks, samples: samples.max(1), url })
}

fn base() -> DateTime<Utc> {
    Utc.timestamp_millis_opt(1_790_000_000_000).single().expect("valid")
}

fn make_task(i: usize, shards: u32, rng: &mut Rng) -> TaskWrite {
    let ns = format!("ns-{:02}", rng.below(NAMESPACES));
    let name = format!("task-{i:08}");
    let team = format!("team-{}", rng.below(10));
    let env = ["prod", "staging", "dev"][rng.below(3) as usize].to_owned();
    let labels = BTreeMap::from([
        ("team".to_owned(), team),
        ("env".to_owned(), env),
        ("tier".to_owned(), format!("t{}", rng.below(4))),
    ]);
    let spec = serde_json::json!({
        "apiVersion": "rota/v1",
        "kind": "Task",
        "metadata": {"namespace": ns, "name": name},
        "spec": {"schedule": {"cron": "*/5 * * * *"}, "target": {"http": {"url": "http://billing.internal/run"}}}
    });
    TaskWrite {
        namespace: ns,
        name,
        labels,
        spec,
        shard: (rng.below(u64::from(shards))) as u32,
        next_fire_at: Some(base() + TimeDelta::milliseconds(rng.below(86_400_000) as i64)),
    }
}

/// Loads `n` tasks over `shards` shards; returns the elapsed time.
async fn load(store: &SqlStore, n: usize, shards: u32, seed: u64, parallel: usize) -> Duration {
    let start = Instant::now();
    let mut next = 0usize;
    let mut rng = Rng(seed);
    let mut last_report = Instant::now();
    while next < n {
        let mut handles = Vec::new();
        for _ in 0..parallel {
            if next >= n {
                break;
            }
            let end = (next + BATCH).min(n);
            let batch: Vec<TaskWrite> = (next..end).map(|i| make_task(i, shards, &mut rng)).collect();
            next = end;
            let store = store.clone();
            handles.push(tokio::spawn(async move { store.bulk_insert_tasks(&batch, base()).await }));
        }
        for h in handles {
            h.await.expect("loader task").expect("bulk insert");
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!("  … {next} tasks loaded ({:.0}/s)", next as f64 / start.elapsed().as_secs_f64());
            last_report = Instant::now();
        }
    }
    start.elapsed()
}

struct Stats {
    p50: Duration,
    p99: Duration,
    mean: Duration,
}

fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    let n = v.len();
    let pct = |p: f64| v[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
    let mean = v.iter().sum::<Duration>() / n as u32;
    Stats { p50: pct(0.50), p99: pct(0.99), mean }
}

async fn sample<F, Fut>(samples: usize, mut f: F) -> Stats
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    // Warm-up (statement preparation, caches) is not measured.
    for i in 0..samples.min(10) {
        f(i).await;
    }
    let mut v = Vec::with_capacity(samples);
    for i in 0..samples {
        let t = Instant::now();
        std::hint::black_box(f(i).await);
        v.push(t.elapsed());
    }
    stats(v)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn open(backend: Backend, url: Option<String>) -> (SqlStore, String) {
    let url = match url {
        Some(u) => u,
        None => testing::fresh_url(backend).await.unwrap_or_else(|e| panic!("{e}")),
    };
    let store = SqlStore::connect(&url).await.unwrap_or_else(|e| panic!("connect: {e}"));
    (store, testing::redact(&url))
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
    let b = args.backend;
    let parallel = if b == Backend::Sqlite { 1 } else { 4 };
    let (store, shown) = open(b, args.url.clone()).await;
    eprintln!("store-bench: {} at {shown}: loading {} tasks over {SHARDS} shards …", b.name(), args.tasks);
    let load_time = load(&store, args.tasks, SHARDS, 42, parallel).await;
    let rate = args.tasks as f64 / load_time.as_secs_f64();
    let mut rng = Rng(7);
    let until = base() + TimeDelta::days(1);
    let n = args.tasks as i64;

    // The due scan straight after the load, before statistics and (PostgreSQL) the visibility map are refreshed:
    // closer to a table under constant updates, where PostgreSQL's index-only scan must also visit the heap.
    let shards: Vec<u32> = (0..args.samples).map(|_| rng.below(u64::from(SHARDS)) as u32).collect();
    let due_cold = sample(args.samples, |i| {
        let (store, shards) = (&store, &shards);
        async move { store.due_tasks(shards[i], until, 1000).await.expect("due_tasks").len() }
    })
    .await;
    eprintln!("loaded in {:.1} s; analyzing …", load_time.as_secs_f64());
    store.analyze().await.expect("analyze");

    let ping = sample(args.samples, |_| {
        let store = &store;
        async move {
            store.ping().await.expect("ping");
            1
        }
    })
    .await;
    let names: Vec<String> = (0..args.samples).map(|_| format!("task-{:08}", rng.below(n as u64))).collect();
    // A point lookup needs the namespace too; find it once per name outside the measurement.
    let mut keys = Vec::new();
    for name in &names {
        for ns in 0..NAMESPACES {
            let ns = format!("ns-{ns:02}");
            if store.get_task(&ns, name).await.expect("get_task").is_some() {
                keys.push((ns, name.clone()));
                break;
            }
        }
    }
    let point = sample(keys.len().max(1), |i| {
        let (store, keys) = (&store, &keys);
        async move {
            store.get_task(&keys[i % keys.len()].0, &keys[i % keys.len()].1).await.expect("get").is_some() as usize
        }
    })
    .await;
    let shards: Vec<u32> = (0..args.samples).map(|_| rng.below(u64::from(SHARDS)) as u32).collect();
    let mut due_rows = 0;
    let due = sample(args.samples, |i| {
        let (store, shards) = (&store, &shards);
        async move { store.due_tasks(shards[i], until, 1000).await.expect("due_tasks").len() }
    })
    .await;
    for s in shards.iter().take(5) {
        due_rows += store.due_tasks(*s, until, 1000).await.expect("due").len();
    }
    let cursors: Vec<i64> = (0..args.samples).map(|_| n / 2 + rng.below((n / 2).max(1) as u64) as i64).collect();
    let list = sample(args.samples, |i| {
        let (store, cursors) = (&store, &cursors);
        async move {
            store
                .list_tasks(&TaskFilter::default(), &PageRequest::after(encode_id(cursors[i]), 100))
                .await
                .expect("list_tasks")
                .items
                .len()
        }
    })
    .await;
    let nss: Vec<String> = (0..args.samples).map(|_| format!("ns-{:02}", rng.below(NAMESPACES))).collect();
    let list_ns = sample(args.samples, |i| {
        let (store, cursors, nss) = (&store, &cursors, &nss);
        async move {
            let f = TaskFilter { namespace: Some(nss[i].clone()), ..Default::default() };
            store.list_tasks(&f, &PageRequest::after(encode_id(cursors[i]), 100)).await.expect("list_tasks").items.len()
        }
    })
    .await;
    let teams: Vec<String> = (0..args.samples).map(|_| format!("team-{}", rng.below(10))).collect();
    let list_label = sample(args.samples, |i| {
        let (store, cursors, teams) = (&store, &cursors, &teams);
        async move {
            let f =
                TaskFilter { labels: BTreeMap::from([("team".to_owned(), teams[i].clone())]), ..Default::default() };
            store.list_tasks(&f, &PageRequest::after(encode_id(cursors[i]), 100)).await.expect("list_tasks").items.len()
        }
    })
    .await;

    // Baseline: the same due query on a 10,000-task table (8 shards, so 1,000 rows still come back).
    eprintln!("loading the 10,000-task baseline table …");
    let (small, _) = open(b, None).await;
    load(&small, 10_000, 8, 43, parallel).await;
    small.analyze().await.expect("analyze");
    let small_due = sample(args.samples, |i| {
        let small = &small;
        async move { small.due_tasks((i % 8) as u32, until, 1000).await.expect("due_tasks").len() }
    })
    .await;

    println!();
    println!("## {} — {} tasks, {SHARDS} shards", b.name(), args.tasks);
    println!();
    println!(
        "load: {:.1} s, {:.0} tasks/s (bulk_insert_tasks, batches of {BATCH}, {parallel} in parallel)",
        load_time.as_secs_f64(),
        rate
    );
    println!();
    println!("| query | p50 | p99 | mean |");
    println!("|---|---|---|---|");
    let row = |name: &str, s: &Stats| println!("| {name} | {} | {} | {} |", ms(s.p50), ms(s.p99), ms(s.mean));
    row("baseline: ping (`SELECT 1`)", &ping);
    row("baseline: get_task (point lookup)", &point);
    row("baseline: due_tasks, 1000 rows, 10k-task table", &small_due);
    row(&format!("due_tasks, 1000 rows of one shard (avg {} rows)", due_rows / 5), &due);
    row("due_tasks, 1000 rows, straight after the load (before analyze)", &due_cold);
    row("list_tasks page (100) at a deep cursor", &list);
    row("list_tasks page (100), deep cursor, namespace filter", &list_ns);
    row("list_tasks page (100), deep cursor, label filter", &list_label);
    println!();
    println!(
        "ratios: due_tasks(1M) / due_tasks(10k) = {:.2} (p50); deep list page / ping = {:.1} (p50)",
        due.p50.as_secs_f64() / small_due.p50.as_secs_f64(),
        list.p50.as_secs_f64() / ping.p50.as_secs_f64()
    );
}
