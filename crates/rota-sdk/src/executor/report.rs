//! Delivery of asynchronous results: `POST {report_url}/report`, retried until the attempt's deadline.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;
use rota_proto::RunReport;

/// Bound on one report call.
const REPORT_CALL_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Sends `report` to `url`. Transport errors and `5xx` answers are retried with exponential backoff (100 ms,
/// doubling, at most 5 s apart) while the next try is before `deadline` (at least one try is made); a `4xx`
/// (the run finished, the attempt is not current, the report is invalid) is logged and not retried.
/// Returns whether the scheduler accepted it.
pub(crate) async fn deliver(
    http: &reqwest::Client,
    auth: &HeaderMap,
    url: &str,
    report: &RunReport,
    run_id: &str,
    deadline: DateTime<Utc>,
) -> bool {
    let mut backoff = FIRST_BACKOFF;
    let mut tries = 0u32;
    loop {
        tries += 1;
        let sent = http.post(url).headers(auth.clone()).json(report).timeout(REPORT_CALL_TIMEOUT).send().await;
        let problem = match sent {
            Ok(res) if res.status().is_success() => {
                tracing::debug!(run_id, attempt = report.attempt, tries, "report delivered");
                return true;
            }
            Ok(res) if res.status().is_client_error() => {
                let status = res.status().as_u16();
                let body = res.text().await.unwrap_or_default();
                tracing::warn!(run_id, attempt = report.attempt, status, body = %excerpt(&body),
                    "the scheduler refused the report; not retrying");
                return false;
            }
            Ok(res) => format!("HTTP {}", res.status().as_u16()),
            Err(e) => root_cause(&e),
        };
        let next = Utc::now() + chrono::Duration::from_std(backoff).unwrap_or_default();
        if next >= deadline {
            tracing::error!(run_id, attempt = report.attempt, tries, error = %problem,
                "could not deliver the report before the attempt's deadline; giving up");
            return false;
        }
        tracing::warn!(run_id, attempt = report.attempt, tries, error = %problem,
            retry_in_ms = backoff.as_millis() as u64, "could not deliver the report; retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

pub(crate) fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut current = e;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

pub(crate) fn excerpt(text: &str) -> String {
    let cut: String = text.chars().take(300).map(|c| if c.is_control() { ' ' } else { c }).collect();
    cut.trim().to_string()
}
