//! The storage conformance suite: one generic async function per case, run unchanged against every backend.
//!
//! Every case takes a *fresh, empty* store, exercises one part of the contract documented in the crate root
//! (traits, types and doc comments), and panics with a message naming the case, the operation and the expected
//! outcome when the backend deviates. Cases never rely on wall-clock time: every instant is passed in (with
//! non-zero milliseconds, the precision the contract guarantees).
//!
//! # Running the suite against your backend
//!
//! In the backend crate's `Cargo.toml`:
//!
//! ```toml
//! [dev-dependencies]
//! rota-store = { version = "…", features = ["conformance"] }
//! ```
//!
//! Then one test file (for example `tests/conformance.rs`) gives the macro an async expression that evaluates to
//! a fresh, empty store (it is evaluated once per case, inside the case's Tokio runtime):
//!
//! ```ignore
//! async fn fresh_store() -> MyStore {
//!     MyStore::connect_to_new_empty_database().await.unwrap()
//! }
//!
//! rota_store::conformance_tests!(fresh_store().await);
//! ```
//!
//! The macro expands to one `#[test]` function per case, named after the case (see [`CASES`]), each running on
//! its own multi-threaded Tokio runtime with 4 worker threads. The backend crate does not need Tokio as a
//! dependency of its own for this (the macro reaches it through this crate). To run the suite against several
//! configurations in one file, invoke the macro once per module:
//!
//! ```ignore
//! mod sqlite {
//!     use super::*;
//!     rota_store::conformance_tests!(fresh_sqlite().await);
//! }
//! mod postgres {
//!     use super::*;
//!     rota_store::conformance_tests!(fresh_postgres().await);
//! }
//! ```
//!
//! The cases are also plain public functions (`rota_store::conformance::task_create_and_get(store).await`), and
//! [`run_case`] runs one by name, so a backend can drive the suite from its own harness.
//!
//! # What the suite expects under contention
//!
//! The concurrency cases (`race_*`) start many Tokio tasks against one store behind a barrier and check the
//! documented outcome (exactly one winner, the others `Conflict`/`Duplicate`/`None`). A backend whose database
//! reports serialization failures or deadlocks must retry internally: `StoreError::Backend` is never an accepted
//! outcome.

mod attempts;
mod audit;
mod auth;
mod batch;
mod concurrency;
mod fencing;
mod fire;
mod leases;
mod listing;
mod logs;
mod nodes;
mod runs;
mod support;
mod tasks;

pub use attempts::*;
pub use audit::*;
pub use auth::*;
pub use batch::*;
pub use concurrency::*;
pub use fencing::*;
pub use fire::*;
pub use leases::*;
pub use listing::*;
pub use logs::*;
pub use nodes::*;
pub use runs::*;
pub use tasks::*;

/// `ping` succeeds on a fresh store and `backend_name` is a non-empty short name.
pub async fn store_ping_and_name<S: crate::Store>(store: S) {
    use support::Must;
    store.ping().await.must("ping");
    let name = store.backend_name();
    assert!(!name.is_empty(), "backend_name must not be empty");
    assert!(!name.contains(char::is_whitespace), "backend_name is a short name without whitespace: {name:?}");
    let _ = store.supports_cluster();
    store.ping().await.must("ping again");
}

/// Implementation details of [`conformance_tests!`](crate::conformance_tests); not a public API.
#[doc(hidden)]
pub mod __private {
    pub use tokio;

    /// Runs one case on a fresh multi-threaded runtime (4 workers), propagating its panic.
    pub fn run<F: std::future::Future<Output = ()>>(case: F) {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .expect("building the conformance test runtime")
            .block_on(case)
    }
}

/// The single list of cases: calls back into `__rota_conformance_expand!` with a mode and every case name.
#[doc(hidden)]
#[macro_export]
macro_rules! __rota_conformance_cases {
    ($($mode:tt)*) => {
        $crate::__rota_conformance_expand! {
            [$($mode)*]
            // tasks
            task_create_and_get
            task_must_not_exist_conflict
            task_version_precondition
            task_precondition_any
            task_replace_updates_fields
            task_replace_keeps_paused
            task_versions_history
            task_spec_json_round_trip
            task_labels_round_trip
            task_keys_are_exact_strings
            task_delete
            task_delete_keeps_runs
            task_set_paused_and_resume
            // listing
            list_tasks_pagination
            list_tasks_filter_namespace
            list_tasks_filter_labels
            list_tasks_filter_paused
            list_tasks_filtered_pagination
            list_tasks_malformed_cursor
            list_tasks_page_limits
            list_tasks_cursor_survives_deletion
            // due index
            due_tasks_filters
            due_tasks_ordering_and_limit
            due_tasks_follow_updates
            // fire
            fire_inserts_runs_and_advances
            fire_without_runs_advances
            fire_cas_conflict_writes_nothing
            fire_cas_with_unset_next_fire_at
            fire_reports_duplicates
            fire_not_found
            fire_catch_up_and_skipped_runs
            fire_with_current_fence
            fire_stale_fence_writes_nothing
            // runs
            run_insert_and_duplicate
            run_timestamps_millisecond_precision
            run_transition_lifecycle
            run_transition_retry
            run_transition_state_machine
            run_transition_conflict
            run_transition_not_found
            run_transition_fenced
            run_patch_leaves_other_fields
            list_runs_filters
            list_runs_pagination
            pending_runs_queue
            active_runs_by_state
            active_runs_of_task_only_non_terminal
            prune_runs_terminal_before_cutoff
            large_values_round_trip
            // attempts
            attempt_insert_and_list
            attempt_finish
            // logs
            logs_append_and_read
            logs_separate_runs
            // nodes
            node_register_and_get
            node_reregister_refreshes
            node_heartbeat
            node_set_state
            node_list_filters
            node_deregister
            node_prune
            // leases
            lease_first_acquire
            lease_held_blocks_others_until_expiry
            lease_reacquire_keeps_epoch
            lease_renew
            lease_renew_many
            lease_release
            lease_list
            // fencing
            fence_without_lease_is_rejected
            fence_current_epoch_accepted
            fence_stale_after_takeover
            // audit
            audit_append_and_list
            audit_filters
            audit_pagination
            // tokens and role bindings
            auth_token_create_and_get
            auth_token_revoke
            auth_token_list
            auth_role_bindings
            // store
            store_ping_and_name
            // concurrency
            race_insert_run
            race_insert_distinct_runs
            race_fire
            race_fire_distinct_tasks
            race_acquire_free_lease
            race_acquire_expired_lease
            race_transition_run
            race_finish_attempt
            race_put_task_create
            race_put_task_version
            race_append_logs
            race_put_task_any
            race_register_node
            race_renew_and_takeover
            race_delete_and_fire
            race_fenced_writes_during_takeover
            // hot path: fused and batched calls
            fire_paused_conflict
            fire_batch_mixed_outcomes
            fire_batch_same_task_in_order
            race_fire_batch
            run_transition_error_order
            start_attempt_atomic
            start_attempts_mixed_outcomes
            complete_attempt_atomic
            complete_attempts_mixed_outcomes
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __rota_conformance_expand {
    ([tests $make:expr] $($case:ident)*) => {
        $(
            #[test]
            fn $case() {
                $crate::conformance::__private::run(async {
                    let store = $make;
                    $crate::conformance::$case(store).await;
                });
            }
        )*
    };
    ([names] $($case:ident)*) => {
        &[$(stringify!($case)),*]
    };
    ([dispatch $name:ident $store:ident] $($case:ident)*) => {
        match $name {
            $(stringify!($case) => {
                $crate::conformance::$case($store).await;
                true
            })*
            _ => false,
        }
    };
}

/// Expands to one `#[test]` per conformance case (see the [`conformance`](crate::conformance) module docs).
///
/// `$make` is an async expression evaluating to a fresh, empty store (anything implementing
/// [`Store`](crate::Store)); it is evaluated once per case inside that case's multi-threaded Tokio runtime.
///
/// ```ignore
/// rota_store::conformance_tests!(MyStore::new_empty().await.unwrap());
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::__rota_conformance_cases!(tests $make);
    };
    ($make:expr ,) => {
        $crate::__rota_conformance_cases!(tests $make);
    };
}

/// The names of every conformance case, in suite order (each is a public function of this module and a test
/// generated by [`conformance_tests!`](crate::conformance_tests)).
pub const CASES: &[&str] = __rota_conformance_cases!(names);

/// Runs the case called `name` against `store`. Returns `false` (without running anything) for an unknown name.
pub async fn run_case<S: crate::Store>(name: &str, store: S) -> bool {
    __rota_conformance_cases!(dispatch name store)
}
