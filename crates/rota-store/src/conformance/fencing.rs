//! Fencing: writes carrying a fence are accepted only at the shard's current epoch.

use super::support::*;
use crate::{Fence, FireRequest, PageRequest, RunFilter, RunState, Store, StoreError, StoreResult};

#[track_caller]
fn assert_fenced<T: std::fmt::Debug>(res: StoreResult<T>, fence: Fence, what: &str) {
    match res {
        Err(StoreError::Fenced { shard, epoch }) => {
            assert_eq!((shard, epoch), (fence.shard, fence.epoch), "{what}: Fenced names the rejected fence");
        }
        other => {
            panic!("{what}: expected Err(Fenced {{ shard: {}, epoch: {} }}), got {other:?}", fence.shard, fence.epoch)
        }
    }
}

/// A fence on a shard that was never leased is rejected everywhere.
pub async fn fence_without_lease_is_rejected<S: Store>(store: S) {
    let task = create_task(&store, "ns", "t", 11, Some(ts(0))).await;
    let run = run_at(&store, &task, ts(-60)).await;
    let fence = Fence { shard: 11, epoch: 1 };
    assert_fenced(store.insert_run(new_run(&task, ts(0)), Some(fence), ts(1)).await, fence, "insert_run");
    let mut t = transition(run.id, &[RunState::Scheduled], RunState::Dispatching, ts(1));
    t.fence = Some(fence);
    assert_fenced(store.transition_run(t).await, fence, "transition_run");
    let req = FireRequest {
        task_id: task.id,
        expected_next_fire_at: Some(ts(0)),
        new_next_fire_at: Some(ts(60)),
        runs: vec![new_run(&task, ts(0))],
        fence: Some(fence),
        now: ts(1),
    };
    assert_fenced(store.fire(req).await, fence, "fire");
    let runs = store
        .list_runs(&RunFilter { task_id: Some(task.id), ..Default::default() }, &PageRequest::first(10))
        .await
        .must("list_runs");
    assert_eq!(runs.items, vec![run], "nothing written by fenced calls");
}

/// A fence at the current epoch is accepted, after renewals and even after expiry while nobody took over; a fence
/// naming another shard's epoch is not.
pub async fn fence_current_epoch_accepted<S: Store>(store: S) {
    let task = create_task(&store, "ns", "t", 12, Some(ts(0))).await;
    let lease = acquire(&store, 12, "me", secs(10), t0()).await;
    let f = lease.fence();
    let r = store.insert_run(new_run(&task, ts(-60)), Some(f), ts(1)).await.must("insert_run with current fence");
    assert!(r.is_inserted());
    let renewed = store.renew_lease(&lease, secs(10), ts(5)).await.must("renew");
    assert_eq!(renewed.fence(), f, "renewal keeps the fence");
    let r2 = store.insert_run(new_run(&task, ts(-50)), Some(f), ts(6)).await.must("insert_run after renewal");
    assert!(r2.is_inserted());
    let r3 = store.insert_run(new_run(&task, ts(-40)), Some(f), ts(500)).await.must("insert_run after expiry");
    assert!(r3.is_inserted(), "expiry alone does not fence");
    let mut t = transition(r3.record().id, &[RunState::Scheduled], RunState::Dispatching, ts(501));
    t.fence = Some(f);
    store.transition_run(t).await.must("transition_run with current fence of an expired lease");

    // Another shard with a different epoch history: a fence carries its shard.
    let other = acquire(&store, 13, "x", secs(10), t0()).await;
    let other2 = acquire(&store, 13, "y", secs(10), ts(100)).await;
    let other3 = acquire(&store, 13, "z", secs(10), ts(200)).await;
    assert!(other3.epoch > other2.epoch && other2.epoch > other.epoch);
    let wrong = Fence { shard: 13, epoch: f.epoch };
    if wrong.epoch != other3.epoch {
        assert_fenced(store.insert_run(new_run(&task, ts(-30)), Some(wrong), ts(501)).await, wrong, "foreign epoch");
    }
    let mismatch = Fence { shard: 12, epoch: other3.epoch };
    if mismatch.epoch != f.epoch {
        assert_fenced(
            store.insert_run(new_run(&task, ts(-20)), Some(mismatch), ts(501)).await,
            mismatch,
            "epoch of 13",
        );
    }
}

/// After a takeover, the old holder's fence is rejected by insert_run, transition_run and fire; nothing is written.
pub async fn fence_stale_after_takeover<S: Store>(store: S) {
    let task = create_task(&store, "ns", "t", 14, Some(ts(0))).await;
    let run = run_at(&store, &task, ts(-60)).await;
    let (old, new) = takeover(&store, 14).await;
    let stale = old.fence();
    assert_fenced(store.insert_run(new_run(&task, ts(-30)), Some(stale), ts(21)).await, stale, "insert_run");
    let mut t = transition(run.id, &[RunState::Scheduled], RunState::Dispatching, ts(21));
    t.fence = Some(stale);
    assert_fenced(store.transition_run(t.clone()).await, stale, "transition_run");
    let mut req = FireRequest {
        task_id: task.id,
        expected_next_fire_at: Some(ts(0)),
        new_next_fire_at: Some(ts(60)),
        runs: vec![new_run(&task, ts(0))],
        fence: Some(stale),
        now: ts(21),
    };
    assert_fenced(store.fire(req.clone()).await, stale, "fire");
    let runs = store
        .list_runs(&RunFilter { task_id: Some(task.id), ..Default::default() }, &PageRequest::first(10))
        .await
        .must("list_runs");
    assert_eq!(runs.items, vec![run.clone()], "nothing written by the stale holder");
    assert_eq!(store.get_task_by_id(task.id).await.must("get_task").and_then(|t| t.next_fire_at), Some(ts(0)));

    // A duplicate insert by the stale holder is still fenced, not reported as a duplicate.
    assert_fenced(store.insert_run(new_run(&task, ts(-60)), Some(stale), ts(22)).await, stale, "duplicate insert_run");

    // The new holder's fence works for all three.
    let fresh = new.fence();
    assert!(store.insert_run(new_run(&task, ts(-30)), Some(fresh), ts(23)).await.must("insert_run").is_inserted());
    t.fence = Some(fresh);
    store.transition_run(t).await.must("transition_run with the new fence");
    req.fence = Some(fresh);
    store.fire(req).await.must("fire with the new fence");

    // And the old holder cannot come back by renewing.
    assert_err!(store.renew_lease(&old, secs(10), ts(24)).await, StoreError::Fenced { .. }, "renew by the old holder");
}
