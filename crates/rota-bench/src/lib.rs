//! Shared parts of Rota's end-to-end benchmarks (`fire-bench`, `cluster-bench`, `dispatch-bench`): the no-op
//! envelope, closed load loops with a warm-up and a measured window, and the bare baselines (a reqwest loop over
//! HTTP, a tonic client loop over gRPC) that the scheduler's figures are divided by.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use chrono::Utc;
use rota_proto::RunEnvelope;
use rota_proto::grpc::{RunAnswer, v1};

/// The envelope the bare loops send: task `task`, no params, shard 0 of 1.
pub fn noop_envelope(task: &str) -> RunEnvelope {
    RunEnvelope {
        run_id: "1".into(),
        task: task.into(),
        attempt: 1,
        scheduled_at: Utc::now(),
        params: Default::default(),
        shard: Default::default(),
        deadline: Utc::now() + chrono::Duration::minutes(5),
        report_url: None,
    }
}

/// Durations of operations, each stamped with its end, so that only those that ended inside a window count.
#[derive(Debug, Default)]
pub struct Samples {
    samples: Mutex<Vec<(Instant, u32)>>,
}

impl Samples {
    /// Records an operation that ran from `start` to now.
    pub fn record(&self, start: Instant) {
        let end = Instant::now();
        let us = end.duration_since(start).as_micros().min(u32::MAX as u128) as u32;
        self.samples.lock().unwrap_or_else(|e| e.into_inner()).push((end, us));
    }

    /// The durations (µs) of the operations that ended in `[from, to)`, sorted.
    pub fn in_window(&self, from: Instant, to: Instant) -> Vec<u32> {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<u32> = samples.iter().filter(|(end, _)| *end >= from && *end < to).map(|(_, us)| *us).collect();
        v.sort_unstable();
        v
    }
}

/// The `p` quantile (0..=1) of sorted values, in milliseconds (values in µs); 0 when empty.
pub fn quantile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let idx = ((sorted_us.len() as f64 - 1.0) * p).round() as usize;
    sorted_us[idx] as f64 / 1000.0
}

/// What a closed load loop measured.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Operations that succeeded and ended inside the window.
    pub ok: u64,
    /// Operations that succeeded over the whole loop (warm-up included).
    pub ok_total: u64,
    /// Operations that failed (whole loop).
    pub errors: u64,
    /// The first failure, if any.
    pub first_error: Option<String>,
    /// Length of the measured window.
    pub window: Duration,
    /// Durations (µs) of the successful operations that ended in the window, sorted.
    pub latencies_us: Vec<u32>,
    /// Start and end of the window.
    pub window_start: Instant,
    pub window_end: Instant,
}

impl LoadReport {
    /// Successful operations per second in the window.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.window.as_secs_f64()
    }

    /// The `p` quantile of the window's latencies, in ms.
    pub fn quantile_ms(&self, p: f64) -> f64 {
        quantile_ms(&self.latencies_us, p)
    }
}

/// Runs `op(worker)` in a loop on `concurrency` workers (each waits for its operation before starting the
/// next) for `warmup + window`, and counts the operations that ended inside the window.
pub async fn closed_loop<F, Fut>(concurrency: usize, warmup: Duration, window: Duration, op: F) -> LoadReport
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let (w0, w1) = (start + warmup, start + warmup + window);
    let samples = Arc::new(Samples::default());
    let mut handles = Vec::new();
    for worker in 0..concurrency.max(1) {
        let (op, samples) = (op.clone(), samples.clone());
        handles.push(tokio::spawn(async move {
            let (mut ok, mut errors, mut first_error) = (0u64, 0u64, None);
            loop {
                let t = Instant::now();
                if t >= w1 {
                    break;
                }
                match op(worker).await {
                    Ok(()) => {
                        ok += 1;
                        samples.record(t);
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            (ok, errors, first_error)
        }));
    }
    let (mut ok_total, mut errors, mut first_error) = (0, 0, None);
    for h in handles {
        match h.await {
            Ok((o, e, f)) => {
                ok_total += o;
                errors += e;
                first_error = first_error.or(f);
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| format!("worker panicked: {e}"));
            }
        }
    }
    let latencies_us = samples.in_window(w0, w1);
    LoadReport {
        ok: latencies_us.len() as u64,
        ok_total,
        errors,
        first_error,
        window,
        latencies_us,
        window_start: w0,
        window_end: w1,
    }
}

/// The HTTP baseline: `concurrency` workers POSTing `envelope` (JSON) to `http://{addr}{path}`, worker *i* to
/// `addrs[i % addrs.len()]`, over one reqwest keep-alive pool (`TCP_NODELAY`, as the scheduler's client).
/// Anything but `200` counts as an error.
pub async fn bare_http_load(
    addrs: &[SocketAddr],
    path: &str,
    envelope: &RunEnvelope,
    concurrency: usize,
    warmup: Duration,
    window: Duration,
) -> Result<LoadReport> {
    if addrs.is_empty() {
        bail!("no executor address");
    }
    rota_tls::install_crypto_provider();
    let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).tcp_nodelay(true).build()?;
    let urls: Arc<Vec<String>> = Arc::new(addrs.iter().map(|a| format!("http://{a}{path}")).collect());
    let body = serde_json::to_vec(envelope)?;
    Ok(closed_loop(concurrency, warmup, window, move |worker| {
        let (client, body) = (client.clone(), body.clone());
        let url = urls[worker % urls.len()].clone();
        async move {
            let resp = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .map_err(|e| anyhow!("bare request: {e}"))?;
            let status = resp.status();
            let _ = resp.bytes().await;
            if status != reqwest::StatusCode::OK {
                bail!("bare request: {status}");
            }
            Ok(())
        }
    })
    .await)
}

/// The gRPC baseline: `concurrency` workers calling `rota.executor.v1.Executor/Run` with `envelope`, worker *i*
/// on node `addrs[i % addrs.len()]`, over one HTTP/2 channel per node (as the scheduler's `GrpcProtocol`).
/// A status other than `OK`, or an answer other than a result, counts as an error.
pub async fn bare_grpc_load(
    addrs: &[SocketAddr],
    envelope: &RunEnvelope,
    concurrency: usize,
    warmup: Duration,
    window: Duration,
) -> Result<LoadReport> {
    if addrs.is_empty() {
        bail!("no executor address");
    }
    let mut clients = Vec::new();
    for a in addrs {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{a}"))?.tcp_nodelay(true).connect().await?;
        clients.push(v1::executor_client::ExecutorClient::new(channel));
    }
    let clients = Arc::new(clients);
    let request = v1::RunRequest::from(envelope);
    Ok(closed_loop(concurrency, warmup, window, move |worker| {
        let mut client = clients[worker % clients.len()].clone();
        let request = request.clone();
        async move {
            let response = client.run(request).await.map_err(|s| anyhow!("bare call: {s}"))?;
            match RunAnswer::try_from(response.into_inner()) {
                Ok(RunAnswer::Completed(_)) => Ok(()),
                Ok(RunAnswer::Accepted) => bail!("bare call: accepted instead of a result"),
                Err(e) => bail!("bare call: {e}"),
            }
        }
    })
    .await)
}

/// The baseline of `fire-bench` and `cluster-bench`: [`bare_http_load`] against one no-op executor at `/run`,
/// without warm-up; requests per second.
pub async fn bare_http_rate(addr: SocketAddr, concurrency: usize, duration: Duration) -> Result<f64> {
    let report =
        bare_http_load(&[addr], "/run", &noop_envelope("bench/bare"), concurrency, Duration::ZERO, duration).await?;
    if let Some(e) = report.first_error {
        bail!("{e}");
    }
    Ok(report.rate())
}
