//! Shared parts of Rota's end-to-end benchmarks (`fire-bench`, `cluster-bench`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use chrono::Utc;
use rota_proto::RunEnvelope;

/// The baseline: a bare HTTP loop against a no-op executor, same client library as the servers, no scheduler.
pub async fn bare_http_rate(addr: SocketAddr, concurrency: usize, duration: Duration) -> Result<f64> {
    rota_tls::install_crypto_provider();
    let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).tcp_nodelay(true).build()?;
    let url = format!("http://{addr}/run");
    let body = serde_json::to_vec(&RunEnvelope {
        run_id: "1".into(),
        task: "bench/bare".into(),
        attempt: 1,
        scheduled_at: Utc::now(),
        params: Default::default(),
        shard: Default::default(),
        deadline: Utc::now(),
        report_url: None,
    })?;
    let deadline = Instant::now() + duration;
    let mut handles = Vec::new();
    for _ in 0..concurrency {
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        handles.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let resp = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .map_err(|e| anyhow!("bare request: {e}"))?;
                let _ = resp.bytes().await;
                n += 1;
            }
            anyhow::Ok(n)
        }));
    }
    let mut total = 0;
    for h in handles {
        total += h.await??;
    }
    Ok(total as f64 / duration.as_secs_f64())
}
