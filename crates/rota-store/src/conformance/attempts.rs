//! Attempts: insert, uniqueness per (run, attempt, node), broadcast, finish once, ordering.

use serde_json::json;

use super::support::*;
use crate::{AttemptRecord, AttemptState, NewAttempt, Store, StoreError};

fn attempt(run_id: i64, n: u32, node: &str, started: i64) -> NewAttempt {
    NewAttempt { run_id, attempt: n, node: node.into(), started_at: ts(started), deadline: Some(ts(started + 300)) }
}

/// Insert returns a running attempt; duplicates conflict; broadcast attempts share a number; list order.
pub async fn attempt_insert_and_list<S: Store>(store: S) {
    let task = create_task(&store, "ns", "t", 0, None).await;
    let run = run_at(&store, &task, ts(0)).await;
    let other_run = run_at(&store, &task, ts(60)).await;

    let a1 = store.insert_attempt(attempt(run.id, 1, "node-a", 1)).await.must("insert_attempt (1, node-a)");
    assert_eq!(a1.run_id, run.id);
    assert_eq!(a1.attempt, 1);
    assert_eq!(a1.node, "node-a");
    assert_eq!(a1.state, AttemptState::Running, "a new attempt is running");
    assert_eq!(a1.started_at, ts(1));
    assert_eq!(a1.deadline, Some(ts(301)));
    assert_eq!((a1.finished_at, &a1.output, &a1.error), (None, &None, &None));

    assert_err!(
        store.insert_attempt(attempt(run.id, 1, "node-a", 2)).await,
        StoreError::Conflict { .. },
        "insert_attempt duplicate (run, attempt 1, node-a)"
    );
    let a2 = store.insert_attempt(attempt(run.id, 2, "node-a", 10)).await.must("insert_attempt (2, node-a)");
    // Broadcast: other nodes, same attempt number.
    let b1 = store.insert_attempt(attempt(run.id, 1, "node-b", 1)).await.must("broadcast (1, node-b)");
    let c1 = store.insert_attempt(attempt(run.id, 1, "node-c", 1)).await.must("broadcast (1, node-c)");
    // No node (a container), no deadline.
    let mut e3 = attempt(run.id, 3, "", 20);
    e3.deadline = None;
    let e3 = store.insert_attempt(e3).await.must("insert_attempt (3, \"\")");
    assert_eq!(e3.node, "", "empty node round-trips");
    assert_eq!(e3.deadline, None, "no deadline round-trips");
    assert_err!(
        store.insert_attempt(attempt(run.id, 3, "", 21)).await,
        StoreError::Conflict { .. },
        "insert_attempt duplicate (run, attempt 3, \"\")"
    );
    let ids: Vec<i64> = [&a1, &a2, &b1, &c1, &e3].iter().map(|a| a.id).collect();
    assert_eq!(ids.iter().collect::<std::collections::BTreeSet<_>>().len(), 5, "distinct attempt ids");

    // Same (attempt, node) on another run is fine.
    let o1 = store.insert_attempt(attempt(other_run.id, 1, "node-a", 61)).await.must("other run (1, node-a)");

    let listed = store.list_attempts(run.id).await.must("list_attempts");
    let mut want = vec![a1, b1, c1, a2, e3];
    want.sort_by_key(|a| (a.attempt, a.id));
    assert_eq!(listed, want, "list_attempts: by attempt number then id, full records");
    assert_eq!(store.list_attempts(other_run.id).await.must("list_attempts other"), vec![o1], "attempts per run");
    match store.list_attempts(run.id + 1_000_000).await {
        Ok(v) => assert!(v.is_empty(), "list_attempts of an unknown run: {v:?}"),
        Err(StoreError::NotFound { .. }) => {}
        Err(e) => panic!("list_attempts of an unknown run: expected empty or NotFound, got {e:?}"),
    }
}

/// `finish_attempt` records the outcome once; a second finish is `Conflict` and the first outcome stays.
pub async fn attempt_finish<S: Store>(store: S) {
    let task = create_task(&store, "ns", "t", 0, None).await;
    let run = run_at(&store, &task, ts(0)).await;
    let a = store.insert_attempt(attempt(run.id, 1, "node-a", 1)).await.must("insert_attempt");
    let b = store.insert_attempt(attempt(run.id, 1, "node-b", 1)).await.must("insert_attempt");
    let output = json!({"result": [1, 2, {"deep": "ünïcode"}], "big": 9_007_199_254_740_993_i64});
    let done = store
        .finish_attempt(a.id, AttemptState::Succeeded, Some(output.clone()), None, ts(5))
        .await
        .must("finish_attempt succeeded");
    let want = AttemptRecord {
        state: AttemptState::Succeeded,
        finished_at: Some(ts(5)),
        output: Some(output.clone()),
        error: None,
        ..a.clone()
    };
    assert_eq!(done, want, "finish_attempt sets state, output and finished_at and keeps the rest");

    assert_err!(
        store.finish_attempt(a.id, AttemptState::Failed, None, Some("late lie".into()), ts(6)).await,
        StoreError::Conflict { .. },
        "finishing an already finished attempt"
    );
    assert_err!(
        store.finish_attempt(a.id, AttemptState::Succeeded, Some(json!("again")), None, ts(7)).await,
        StoreError::Conflict { .. },
        "finishing an already finished attempt with the same state"
    );
    let failed = store
        .finish_attempt(b.id, AttemptState::Failed, None, Some("exit 2: boom".into()), ts(8))
        .await
        .must("finish_attempt failed");
    assert_eq!(failed.state, AttemptState::Failed);
    assert_eq!(failed.error.as_deref(), Some("exit 2: boom"), "error recorded");
    assert_eq!(failed.output, None);
    assert_eq!(failed.finished_at, Some(ts(8)));

    let listed = store.list_attempts(run.id).await.must("list_attempts");
    assert_eq!(listed, vec![want, failed], "the first outcome stays");

    for st in [AttemptState::TimedOut, AttemptState::Cancelled] {
        let x = store.insert_attempt(attempt(run.id, 2, st.as_str(), 10)).await.must("insert_attempt");
        let f = store.finish_attempt(x.id, st, None, None, ts(11)).await.must("finish_attempt");
        assert_eq!(f.state, st, "finish_attempt with {st:?}");
    }
    assert_err!(
        store.finish_attempt(a.id + 1_000_000, AttemptState::Succeeded, None, None, ts(9)).await,
        StoreError::NotFound { .. },
        "finish_attempt of an unknown attempt"
    );
}
