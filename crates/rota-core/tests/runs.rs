//! Runs: retries with backoff, final failure, timeouts, asynchronous reports, manual triggers, cancellation, node
//! choice.

mod common;

use std::sync::Arc;

use chrono::TimeDelta;
use common::*;
use rota_core::{CoreError, EventKind, Scheduler};
use rota_proto::{LogAppend, ResultStatus, RunReport};
use rota_store::{AttemptState, Precondition, RunRecord, RunState, Store, TriggerKind};
use rota_store_sql::testing::Backend;
use serde_json::{Map, Value, json};

backend_tests!(
    retry_with_backoff_then_success,
    final_failure_after_max_attempts,
    executor_timeout_is_timed_out_then_retried,
    accepted_run_past_its_deadline_is_timed_out_by_the_sweeper,
    executor_that_never_returns_is_bounded,
    accepted_then_report_succeeds,
    report_errors,
    failed_report_is_retried,
    manual_trigger_merges_params,
    cancel_run_aborts_the_dispatch,
    static_candidates_round_robin_and_unknown_service_fails,
);

async fn setup(
    backend: Backend,
    name: &str,
    spec: Value,
    script: Vec<Step>,
) -> (Arc<dyn Store>, Arc<TestExecutor>, Scheduler, Events) {
    let store = store(backend).await;
    let exec = TestExecutor::succeeding();
    exec.script(&format!("test/{name}"), script);
    let sched = scheduler(&store, &exec, config("node-1"));
    let events = Events::record(&sched);
    sched.start().await.unwrap();
    let mut spec = spec;
    spec["schedule"] = json!({"manual": true});
    sched.apply(task(name, spec), Precondition::Any).await.unwrap();
    (store, exec, sched, events)
}

async fn until_state(store: &Arc<dyn Store>, run_id: i64, state: RunState) -> RunRecord {
    eventually(secs(10), &format!("run {run_id} {state}"), || {
        let store = store.clone();
        async move { Some(run(&store, run_id).await).filter(|r| r.state == state) }
    })
    .await
}

async fn retry_with_backoff_then_success(backend: Backend) {
    let spec = json!({"retry": {"maxAttempts": 3, "backoff": {"kind": "fixed", "initial": "300ms"}}});
    let (store, exec, sched, events) =
        setup(backend, "flaky", spec, vec![Step::Fail, Step::Error("conn refused"), Step::Succeed]).await;
    let r = sched.trigger("test", "flaky", Map::new()).await.unwrap();
    let done = until_state(&store, r.id, RunState::Succeeded).await;
    assert_eq!(done.attempts, 3);
    assert_eq!(done.output, Some(json!({"attempt": 3})));
    let attempts = store.list_attempts(r.id).await.unwrap();
    assert_eq!(
        attempts.iter().map(|a| a.state).collect::<Vec<_>>(),
        vec![AttemptState::Failed, AttemptState::Failed, AttemptState::Succeeded]
    );
    assert_eq!(attempts[0].error.as_deref(), Some("boom on attempt 1"));
    assert_eq!(attempts[1].error.as_deref(), Some("conn refused"));
    for w in attempts.windows(2) {
        let gap = w[1].started_at - w[0].finished_at.unwrap();
        assert!(gap >= TimeDelta::milliseconds(290), "backoff of 300ms respected: {gap}");
    }
    let kinds = events.names_of_run(r.id, "succeeded").await;
    assert_eq!(
        kinds,
        vec!["scheduled", "dispatched", "retried", "dispatched", "retried", "dispatched", "succeeded"],
        "all events: {:#?}",
        events.all()
    );
    assert_eq!(exec.dispatches_of(r.id).iter().map(|d| d.attempt).collect::<Vec<_>>(), vec![1, 2, 3]);
    sched.shutdown().await;
}

async fn final_failure_after_max_attempts(backend: Backend) {
    let spec = json!({"retry": {"maxAttempts": 2, "backoff": {"initial": "200ms"}}});
    let (store, exec, sched, events) = setup(backend, "broken", spec, vec![Step::Fail]).await;
    let r = sched.trigger("test", "broken", Map::new()).await.unwrap();
    let done = until_state(&store, r.id, RunState::Failed).await;
    assert_eq!(done.attempts, 2);
    assert_eq!(done.error.as_deref(), Some("boom on attempt 2"));
    assert!(done.finished_at.is_some() && done.next_attempt_at.is_none());
    let attempts = store.list_attempts(r.id).await.unwrap();
    assert_eq!(attempts.iter().map(|a| a.state).collect::<Vec<_>>(), vec![AttemptState::Failed; 2]);
    assert_eq!(exec.dispatches_of(r.id).len(), 2);
    events.names_of_run(r.id, "failed").await;
    let last = events.of_run(r.id).pop().unwrap();
    assert_eq!(last, EventKind::Failed { attempt: 2, error: "boom on attempt 2".into() });
    sched.shutdown().await;
}

async fn executor_timeout_is_timed_out_then_retried(backend: Backend) {
    let spec = json!({"timeout": "300ms", "retry": {"maxAttempts": 2, "backoff": {"initial": "100ms"}}});
    let (store, exec, sched, _events) = setup(backend, "slow", spec, vec![Step::Hang, Step::Succeed]).await;
    let r = sched.trigger("test", "slow", Map::new()).await.unwrap();
    let done = until_state(&store, r.id, RunState::Succeeded).await;
    assert_eq!(done.attempts, 2);
    let attempts = store.list_attempts(r.id).await.unwrap();
    assert_eq!(attempts[0].state, AttemptState::TimedOut);
    assert_eq!(attempts[1].state, AttemptState::Succeeded);
    let d = exec.dispatches_of(r.id);
    assert_eq!(d[0].timeout, ms(300));
    assert_eq!(d[0].deadline, attempts[0].deadline.unwrap());

    // Without retries left the run ends timed_out.
    let spec = json!({"schedule": {"manual": true}, "timeout": "200ms"});
    sched.apply(task("slower", spec), Precondition::Any).await.unwrap();
    exec.script("test/slower", vec![Step::Hang]);
    let r = sched.trigger("test", "slower", Map::new()).await.unwrap();
    let done = until_state(&store, r.id, RunState::TimedOut).await;
    assert_eq!(done.attempts, 1);
    assert!(done.error.as_deref().is_some_and(|e| e.contains("timed out")), "{:?}", done.error);
    sched.shutdown().await;
}

async fn accepted_run_past_its_deadline_is_timed_out_by_the_sweeper(backend: Backend) {
    let spec = json!({"timeout": "400ms", "retry": {"maxAttempts": 2, "backoff": {"initial": "100ms"}}});
    let (store, _exec, sched, events) = setup(backend, "silent", spec, vec![Step::Accept, Step::Succeed]).await;
    let r = sched.trigger("test", "silent", Map::new()).await.unwrap();
    let running = until_state(&store, r.id, RunState::Running).await;
    let attempts = store.list_attempts(r.id).await.unwrap();
    assert_eq!(running.next_attempt_at, attempts[0].deadline, "a running run's next_attempt_at is its deadline");
    let done = until_state(&store, r.id, RunState::Succeeded).await;
    assert_eq!(done.attempts, 2);
    let attempts = store.list_attempts(r.id).await.unwrap();
    assert_eq!(attempts[0].state, AttemptState::TimedOut, "the node never reported: timed out");
    let kinds = events.names_of_run(r.id, "succeeded").await;
    assert_eq!(kinds, vec!["scheduled", "dispatched", "running", "retried", "dispatched", "succeeded"]);
    sched.shutdown().await;
}

async fn executor_that_never_returns_is_bounded(backend: Backend) {
    let spec = json!({"timeout": "200ms"});
    let (store, _exec, sched, _events) = setup(backend, "stuck", spec, vec![Step::HangForever]).await;
    let r = sched.trigger("test", "stuck", Map::new()).await.unwrap();
    let done = until_state(&store, r.id, RunState::TimedOut).await;
    assert_eq!(store.list_attempts(r.id).await.unwrap()[0].state, AttemptState::TimedOut);
    assert_eq!(done.attempts, 1);
    eventually(secs(5), "no dispatch in flight", || {
        let n = sched.in_flight();
        async move { (n == 0).then_some(()) }
    })
    .await;
    sched.shutdown().await;
}

async fn accepted_then_report_succeeds(backend: Backend) {
    let (store, _exec, sched, events) = setup(backend, "async", json!({}), vec![Step::Accept]).await;
    let r = sched.trigger("test", "async", Map::new()).await.unwrap();
    until_state(&store, r.id, RunState::Running).await;
    sched.append_logs(r.id, LogAppend { stream: None, lines: vec!["starting".into()] }).await.unwrap();
    let report = RunReport {
        attempt: 1,
        status: ResultStatus::Succeeded,
        output: Some(json!({"rows": 42})),
        error: None,
        logs: vec!["done".into()],
        node: None,
    };
    let done = sched.report(r.id, report.clone()).await.unwrap();
    assert_eq!(done.state, RunState::Succeeded);
    assert_eq!(done.output, Some(json!({"rows": 42})));
    let logs = store.read_logs(r.id, 0, 100).await.unwrap();
    assert_eq!(logs.iter().map(|l| l.line.as_str()).collect::<Vec<_>>(), vec!["starting", "done"]);
    assert!(logs.iter().all(|l| l.stream == "executor"));
    let attempts = store.list_attempts(r.id).await.unwrap();
    assert_eq!(attempts[0].state, AttemptState::Succeeded);
    assert_eq!(attempts[0].output, Some(json!({"rows": 42})));
    let kinds = events.names_of_run(r.id, "succeeded").await;
    assert_eq!(kinds, vec!["scheduled", "dispatched", "running", "succeeded"]);

    // The same report again: the run has finished.
    assert!(matches!(sched.report(r.id, report).await, Err(CoreError::Conflict(_))));
    sched.shutdown().await;
}

async fn report_errors(backend: Backend) {
    let (store, _exec, sched, _events) = setup(backend, "rep", json!({}), vec![Step::Accept]).await;
    let ok =
        RunReport { attempt: 1, status: ResultStatus::Succeeded, output: None, error: None, logs: vec![], node: None };
    assert!(matches!(sched.report(987_654, ok.clone()).await, Err(CoreError::NotFound { entity: "run", .. })));
    assert!(matches!(
        sched.append_logs(987_654, LogAppend { stream: None, lines: vec!["x".into()] }).await,
        Err(CoreError::NotFound { .. })
    ));
    let r = sched.trigger("test", "rep", Map::new()).await.unwrap();
    until_state(&store, r.id, RunState::Running).await;
    let wrong = RunReport { attempt: 2, ..ok.clone() };
    match sched.report(r.id, wrong).await {
        Err(CoreError::Conflict(msg)) => assert!(msg.contains("attempt"), "{msg}"),
        other => panic!("wrong attempt: expected Conflict, got {other:?}"),
    }
    assert_eq!(run(&store, r.id).await.state, RunState::Running, "a rejected report changes nothing");
    sched.cancel_run(r.id, "test").await.unwrap();
    assert!(matches!(sched.report(r.id, ok).await, Err(CoreError::Conflict(_))), "finished run");
    sched.shutdown().await;
}

async fn failed_report_is_retried(backend: Backend) {
    let spec = json!({"retry": {"maxAttempts": 2, "backoff": {"initial": "100ms"}}});
    let (store, _exec, sched, _events) = setup(backend, "asyncfail", spec, vec![Step::Accept, Step::Succeed]).await;
    let r = sched.trigger("test", "asyncfail", Map::new()).await.unwrap();
    until_state(&store, r.id, RunState::Running).await;
    let failed = RunReport {
        attempt: 1,
        status: ResultStatus::Failed,
        output: None,
        error: Some("disk full".into()),
        logs: vec![],
        node: None,
    };
    let after = sched.report(r.id, failed).await.unwrap();
    assert_eq!(after.state, RunState::Scheduled, "retried");
    assert!(after.next_attempt_at.is_some());
    let done = until_state(&store, r.id, RunState::Succeeded).await;
    assert_eq!(done.attempts, 2);
    let attempts = store.list_attempts(r.id).await.unwrap();
    assert_eq!(attempts[0].error.as_deref(), Some("disk full"));
    sched.shutdown().await;
}

async fn manual_trigger_merges_params(backend: Backend) {
    let spec = json!({"params": {"a": 1, "b": "x"}});
    let (store, exec, sched, _events) = setup(backend, "man", spec, vec![Step::Succeed]).await;
    let mut over = Map::new();
    over.insert("b".into(), json!("y"));
    over.insert("c".into(), json!(true));
    let r1 = sched.trigger("test", "man", over).await.unwrap();
    let r2 = sched.trigger("test", "man", Map::new()).await.unwrap();
    assert_eq!(r1.trigger, TriggerKind::Manual);
    assert_eq!(r1.params, json!({"a": 1, "b": "y", "c": true}));
    assert_eq!(r2.params, json!({"a": 1, "b": "x"}));
    assert_ne!(r1.scheduled_at, r2.scheduled_at, "two triggers, two instants");
    until_state(&store, r1.id, RunState::Succeeded).await;
    until_state(&store, r2.id, RunState::Succeeded).await;
    let d = exec.dispatches_of(r1.id);
    assert_eq!(Value::Object(d[0].params.clone()), json!({"a": 1, "b": "y", "c": true}));
    assert!(matches!(
        sched.trigger("test", "missing", Map::new()).await,
        Err(CoreError::NotFound { entity: "task", .. })
    ));
    sched.shutdown().await;
    assert!(matches!(sched.trigger("test", "man", Map::new()).await, Err(CoreError::ShuttingDown)));
}

async fn cancel_run_aborts_the_dispatch(backend: Backend) {
    let (store, exec, sched, events) = setup(backend, "long", json!({"timeout": "30s"}), vec![Step::Hang]).await;
    let r = sched.trigger("test", "long", Map::new()).await.unwrap();
    until_state(&store, r.id, RunState::Dispatching).await;
    eventually(secs(5), "the dispatch reached the executor", || {
        let n = exec.dispatches_of(r.id).len();
        async move { (n == 1).then_some(()) }
    })
    .await;
    let cancelled = sched.cancel_run(r.id, "user asked").await.unwrap();
    assert_eq!(cancelled.state, RunState::Cancelled);
    assert_eq!(cancelled.reason.as_deref(), Some("user asked"));
    let attempts = store.list_attempts(r.id).await.unwrap();
    assert_eq!(attempts[0].state, AttemptState::Cancelled);
    assert_eq!(exec.cancels(), vec![(r.id, 1)]);
    eventually(secs(5), "the hung dispatch is aborted", || {
        let n = sched.in_flight();
        async move { (n == 0).then_some(()) }
    })
    .await;
    assert!(matches!(sched.cancel_run(r.id, "again").await, Err(CoreError::Conflict(_))));
    assert!(matches!(sched.cancel_run(424_242, "x").await, Err(CoreError::NotFound { .. })));
    events.names_of_run(r.id, "cancelled").await;
    assert_eq!(run(&store, r.id).await.state, RunState::Cancelled, "stays cancelled");
    sched.shutdown().await;
}

async fn static_candidates_round_robin_and_unknown_service_fails(backend: Backend) {
    let store = store(backend).await;
    let exec = TestExecutor::succeeding();
    let sched = scheduler(&store, &exec, config("node-1"));
    sched.start().await.unwrap();
    let doc = |name: &str, candidates: Value| {
        let v = json!({
            "apiVersion": "rota/v1", "kind": "Task",
            "metadata": {"namespace": "test", "name": name},
            "spec": {"schedule": {"manual": true}, "target": {"http": {"path": "/run"}}, "candidates": candidates}
        });
        rota_spec::parse_json(&v.to_string()).unwrap()
    };
    sched
        .apply(doc("rr", json!({"static": ["http://10.0.0.1:8080", "http://10.0.0.2:8080"]})), Precondition::Any)
        .await
        .unwrap();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let r = sched.trigger("test", "rr", Map::new()).await.unwrap();
        until_state(&store, r.id, RunState::Succeeded).await;
        let d = exec.dispatches_of(r.id);
        nodes.push(d[0].node.clone().unwrap().address);
        assert_eq!(store.list_attempts(r.id).await.unwrap()[0].node, d[0].node.clone().unwrap().id);
    }
    assert_eq!(nodes, vec!["http://10.0.0.1:8080", "http://10.0.0.2:8080", "http://10.0.0.1:8080"]);

    sched.apply(doc("svc", json!({"service": "workers"})), Precondition::Any).await.unwrap();
    let r = sched.trigger("test", "svc", Map::new()).await.unwrap();
    let failed = until_state(&store, r.id, RunState::Failed).await;
    assert!(
        failed.error.as_deref().is_some_and(|e| e.contains("unknown executor service \"workers\"")),
        "{:?}",
        failed.error
    );
    assert!(exec.dispatches_of(r.id).is_empty(), "nothing was sent");
    sched.shutdown().await;
}
