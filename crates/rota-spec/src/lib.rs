//! # rota-spec: the Rota task specification (v1)
//!
//! Types, parsing, validation, next-fire computation and dependency (DAG) checks for
//! Rota task documents. The crate is pure: no I/O, no clock, no randomness (callers
//! pass instants and random numbers in).
//!
//! ## The document
//!
//! A task is a YAML or JSON document; both formats map to the same [`Task`] value.
//! Field names are camelCase, enum values snake_case, and unknown fields are errors.
//!
//! ```yaml
//! apiVersion: rota/v1
//! kind: Task
//! metadata: {namespace: billing, name: nightly-report, labels: {team: finance}}
//! spec:
//!   schedule:
//!     cron: "0 30 2 * * *"     # or every: 30s | once: 2026-12-01T00:00:00Z | manual: true
//!     timezone: Asia/Shanghai  # IANA name, default UTC
//!     misfire: run_once        # skip | run_once | run_all (at most catchUpLimit runs, default 100)
//!     concurrency: forbid      # allow | forbid | replace
//!   target:                    # exactly one of http | grpc | container
//!     http: {path: /jobs/nightly-report, method: POST, protocol: rota}
//!   candidates: {service: billing-worker}   # or static: ["https://10.0.0.5:8443"]
//!   dispatch: {mode: unicast, loadBalance: round_robin}
//!   retry: {maxAttempts: 3, backoff: {kind: exponential, initial: 1s, max: 1m, jitter: true}}
//!   timeout: 10m
//!   after: [{task: billing/ingest}, {task: billing/fx, required: false}]
//!   params: {report: daily}
//! ```
//!
//! * [`parse_yaml`], [`parse_json`], [`parse_str`] (auto-detect) and
//!   [`parse_yaml_documents`] (multi-document YAML) deserialize **and validate**.
//!   Errors name the field: `spec.retry.maxAttempts: invalid type: string "x", expected u32`.
//! * [`Task::validate`] reports every problem at once as [`ValidationErrors`].
//! * [`json_schema`] returns the JSON Schema (committed as `schema/task-v1.json`).
//! * [`dag::check_acyclic`] / [`dag::check_tasks_acyclic`] find cycles in `spec.after`.
//! * Durations ([`Duration`]) are strings like `500ms`, `10s`, `5m`, `1h`, `1d`, `1h30m`.
//!
//! ## Schedules and fire times
//!
//! [`Schedule::compile`] yields a [`CompiledSchedule`] with
//! [`next_after`](CompiledSchedule::next_after) (first fire strictly after an instant) and
//! [`fires_between`](CompiledSchedule::fires_between). Every scheduler node computes the
//! same instants from the same spec.
//!
//! * `cron`: 6 fields `sec min hour day-of-month month day-of-week`; 5 fields mean
//!   seconds = 0; a 7th field is the year. Evaluated on the wall clock of `timezone`.
//! * `every: D`: fires at `anchor + k*D`, where the anchor is `startAt` or the Unix
//!   epoch, so `every: 1h` fires on UTC hour boundaries on every node.
//! * `once: T`: fires once at `T`.
//! * `manual: true`: never fires by time.
//!
//! ### Daylight saving time
//!
//! Cron evaluation follows croner's (OCPS) rules, which distinguish *fixed-time* jobs
//! (seconds, minutes and hours each a single value, e.g. `0 30 2 * * *`) from
//! *interval* jobs (any of those three is a wildcard, list, range or step):
//!
//! * **Gap** (spring forward, wall-clock times that do not exist): a fixed-time job
//!   whose time falls in the gap fires once at the first valid instant after the gap
//!   (02:30 in Europe/Berlin on the spring-forward day fires at 03:00 CEST = 01:00 UTC).
//!   Interval jobs simply have no fire times inside the gap.
//! * **Overlap** (fall back, wall-clock times that occur twice): a fixed-time job fires
//!   once, at the first (earlier, summer-time) occurrence. Interval jobs fire at both
//!   occurrences, since both are real, distinct instants (e.g. `0 */15 * * * *` keeps
//!   firing every 15 real minutes through the repeated hour).
//!
//! ```
//! use rota_spec::{parse_yaml, MisfirePolicy};
//!
//! let task = parse_yaml(r#"
//! apiVersion: rota/v1
//! kind: Task
//! metadata: {name: hello}
//! spec:
//!   schedule: {every: 5s}
//!   target: {http: {path: /jobs/hello}}
//!   candidates: {static: ["http://127.0.0.1:7071"]}
//! "#).unwrap();
//! assert_eq!(task.key(), "default/hello");
//!
//! let schedule = task.compiled_schedule().unwrap().expect("has a schedule");
//! let t = "2025-01-01T00:00:03Z".parse().unwrap();
//! assert_eq!(schedule.next_after(t), Some("2025-01-01T00:00:05Z".parse().unwrap()));
//! assert_eq!(schedule.missed_fires(t, "2025-01-01T00:00:20Z".parse().unwrap(), MisfirePolicy::RunOnce, 100).len(), 1);
//!
//! let err = parse_yaml("apiVersion: rota/v1\nkind: Task\nmetadata: {name: x}\nspec: {tagret: {}}").unwrap_err();
//! assert_eq!(err.to_string().split(':').next(), Some("spec.tagret"));
//! ```
//!
//! Fire instants are always whole seconds, and `next_after` is strictly increasing
//! and monotonic in its argument.

pub mod dag;
mod duration;
mod error;
mod quantity;
mod schedule;
mod types;
mod validate;

pub use dag::{CycleError, check_acyclic, check_tasks_acyclic};
pub use duration::{DURATION_PATTERN, Duration, DurationParseError};
pub use error::{FieldError, ROOT_PATH, SpecError, ValidationErrors};
pub use quantity::{CpuQuantity, parse_memory};
pub use schedule::{CompiledSchedule, Trigger, parse_cron, parse_timezone};
pub use types::*;
pub use validate::{
    check_candidate_address, check_dns_label, check_http_url, check_label_key, check_label_value, check_secret_name,
    check_task_key,
};

/// Re-exported so callers can name time zones without depending on chrono-tz directly.
pub use chrono_tz::Tz;

use serde::de::DeserializeOwned;

fn path_string(path: &serde_path_to_error::Path) -> String {
    if path.iter().next().is_none() { ROOT_PATH.to_string() } else { path.to_string() }
}

fn from_path_err<E: std::fmt::Display>(e: serde_path_to_error::Error<E>) -> SpecError {
    SpecError::Parse { path: path_string(e.path()), message: e.inner().to_string() }
}

fn validated(task: Task) -> Result<Task, SpecError> {
    task.validate().map_err(SpecError::Invalid)?;
    Ok(task)
}

/// Deserializes any type from YAML with path-carrying errors (no validation).
pub fn from_yaml<T: DeserializeOwned>(s: &str) -> Result<T, SpecError> {
    serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(s)).map_err(from_path_err)
}

/// Deserializes any type from JSON with path-carrying errors (no validation).
pub fn from_json<T: DeserializeOwned>(s: &str) -> Result<T, SpecError> {
    let mut de = serde_json::Deserializer::from_str(s);
    let v = serde_path_to_error::deserialize(&mut de).map_err(from_path_err)?;
    de.end().map_err(|e| SpecError::Parse { path: ROOT_PATH.to_string(), message: e.to_string() })?;
    Ok(v)
}

/// Parses and validates one YAML task document.
pub fn parse_yaml(s: &str) -> Result<Task, SpecError> {
    validated(from_yaml(s)?)
}

/// Parses and validates one JSON task document.
pub fn parse_json(s: &str) -> Result<Task, SpecError> {
    validated(from_json(s)?)
}

/// Parses and validates one task document, JSON when it starts with `{`
/// (after whitespace), YAML otherwise.
pub fn parse_str(s: &str) -> Result<Task, SpecError> {
    if s.trim_start().starts_with('{') { parse_json(s) } else { parse_yaml(s) }
}

/// Parses and validates a YAML stream of task documents separated by `---`.
/// Empty documents are skipped. Errors are prefixed with `documents[i].`
/// (0-based index among all documents in the stream).
pub fn parse_yaml_documents(s: &str) -> Result<Vec<Task>, SpecError> {
    let mut tasks = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(s).enumerate() {
        let prefix = format!("documents[{i}].");
        let value = serde_yaml::Value::deserialize(doc)
            .map_err(|e| SpecError::Parse { path: ROOT_PATH.to_string(), message: e.to_string() }.prefixed(&prefix))?;
        if value.is_null() {
            continue;
        }
        let task: Task = serde_path_to_error::deserialize(value).map_err(|e| from_path_err(e).prefixed(&prefix))?;
        tasks.push(validated(task).map_err(|e| e.prefixed(&prefix))?);
    }
    Ok(tasks)
}

use serde::Deserialize as _;

/// The JSON Schema of a task document.
pub fn json_schema() -> serde_json::Value {
    schemars::schema_for!(Task).to_value()
}

impl Task {
    /// Compiles `spec.schedule`; `Ok(None)` for a dependency-triggered task without one.
    pub fn compiled_schedule(&self) -> Result<Option<CompiledSchedule>, ValidationErrors> {
        self.spec.schedule.as_ref().map(Schedule::compile).transpose()
    }

    /// Serializes to YAML (infallible for valid tasks).
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("task serializes to YAML")
    }

    /// Serializes to pretty JSON.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).expect("task serializes to JSON")
    }
}
