//! Concurrency: racing writers through one shared store must see exactly the documented outcomes.
//!
//! Every case starts its racers behind a barrier on the multi-threaded runtime. `StoreError::Backend` is never an
//! accepted outcome: a backend that sees serialization failures or deadlocks must retry internally.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::json;

use super::support::*;
use crate::{
    AttemptState, FireRequest, InsertRun, NewAttempt, PageRequest, Precondition, RunFilter, RunPatch, RunState, Store,
    StoreError, Transition,
};

const RACERS: usize = 16;

/// 16 racing `insert_run` of the same (task, scheduled_at): one `Inserted`, the rest `Duplicate` of it.
pub async fn race_insert_run<S: Store>(store: S) {
    let store = Arc::new(store);
    for round in 0..5 {
        let task = create_task(&*store, "ns", &format!("t{round}"), 0, None).await;
        let results = race(RACERS, |i| {
            let store = store.clone();
            let mut run = new_run(&task, ts(round));
            run.params = json!({"racer": i});
            async move { store.insert_run(run, None, ts(round)).await }
        })
        .await;
        let mut inserted = Vec::new();
        let mut dups = Vec::new();
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Ok(InsertRun::Inserted(r)) => inserted.push(r),
                Ok(InsertRun::Duplicate(r)) => dups.push(r),
                Err(e) => panic!("round {round}: racer {i}: insert_run failed: {e} ({e:?})"),
            }
        }
        assert_eq!(inserted.len(), 1, "round {round}: exactly one racer inserts (got {})", inserted.len());
        let winner = &inserted[0];
        for d in &dups {
            assert_eq!(d, winner, "round {round}: every Duplicate carries the winner's record");
        }
        let runs = store
            .list_runs(&RunFilter { task_id: Some(task.id), ..Default::default() }, &PageRequest::first(100))
            .await
            .must("list_runs");
        assert_eq!(runs.items, vec![winner.clone()], "round {round}: exactly one run stored");
    }
}

/// 16 racers inserting distinct runs of one task concurrently: all inserted (no spurious conflicts or deadlocks).
pub async fn race_insert_distinct_runs<S: Store>(store: S) {
    let store = Arc::new(store);
    let task = create_task(&*store, "ns", "t", 0, None).await;
    let results = race(RACERS, |i| {
        let store = store.clone();
        let task = task.clone();
        async move {
            let mut out = Vec::new();
            for j in 0..5 {
                out.push(store.insert_run(new_run(&task, ts((i * 10 + j) as i64)), None, t0()).await);
            }
            out
        }
    })
    .await;
    let mut ids = BTreeSet::new();
    for (i, rs) in results.into_iter().enumerate() {
        for r in rs {
            match r {
                Ok(InsertRun::Inserted(r)) => {
                    ids.insert(r.id);
                }
                other => panic!("racer {i}: distinct insert_run: expected Inserted, got {other:?}"),
            }
        }
    }
    assert_eq!(ids.len(), RACERS * 5, "every distinct run inserted with a distinct id");
}

/// 16 racing `fire()` with the same expectation: one succeeds, the others `Conflict`; exactly one run exists.
pub async fn race_fire<S: Store>(store: S) {
    let store = Arc::new(store);
    for round in 0..5i64 {
        let task = create_task(&*store, "ns", &format!("t{round}"), 0, Some(ts(0))).await;
        let results = race(RACERS, |i| {
            let store = store.clone();
            let req = FireRequest {
                task_id: task.id,
                expected_next_fire_at: Some(ts(0)),
                new_next_fire_at: Some(ts(60 + i as i64)),
                runs: vec![new_run(&task, ts(0)), new_run(&task, ts(30 + i as i64))],
                fence: None,
                now: ts(1),
            };
            async move { store.fire(req).await }
        })
        .await;
        let mut winners = Vec::new();
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Ok(out) => winners.push((i, out)),
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => panic!("round {round}: racer {i}: fire: expected Ok or Conflict, got {e} ({e:?})"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one fire succeeds, got {}", winners.len());
        let (w, out) = &winners[0];
        assert_eq!(out.inserted.len(), 2, "round {round}: the winner inserted both runs");
        assert!(out.duplicates.is_empty(), "round {round}: the winner saw no duplicates");
        let runs = store
            .list_runs(&RunFilter { task_id: Some(task.id), ..Default::default() }, &PageRequest::first(100))
            .await
            .must("list_runs");
        let mut got: Vec<_> = runs.items.iter().map(|r| r.scheduled_at).collect();
        got.sort();
        assert_eq!(got, vec![ts(0), ts(30 + *w as i64)], "round {round}: only the winner's runs exist");
        let t = store.get_task_by_id(task.id).await.must("get_task").expect("exists");
        assert_eq!(t.next_fire_at, Some(ts(60 + *w as i64)), "round {round}: next_fire_at is the winner's");
    }
}

/// 16 racers each firing their own task repeatedly: no spurious conflicts, deadlocks or backend errors.
pub async fn race_fire_distinct_tasks<S: Store>(store: S) {
    let store = Arc::new(store);
    let mut tasks = Vec::new();
    for i in 0..RACERS {
        tasks.push(create_task(&*store, "ns", &format!("t{i}"), (i % 3) as u32, Some(ts(0))).await);
    }
    let results = race(RACERS, |i| {
        let store = store.clone();
        let task = tasks[i].clone();
        async move {
            for k in 0..8i64 {
                let req = FireRequest {
                    task_id: task.id,
                    expected_next_fire_at: Some(ts(k * 60)),
                    new_next_fire_at: Some(ts((k + 1) * 60)),
                    runs: vec![new_run(&task, ts(k * 60))],
                    fence: None,
                    now: ts(k * 60),
                };
                store.fire(req).await.map_err(|e| format!("task {i} fire #{k}: {e} ({e:?})"))?;
            }
            Ok::<_, String>(())
        }
    })
    .await;
    for r in results {
        r.unwrap_or_else(|e| panic!("{e}"));
    }
    for t in &tasks {
        let runs = store
            .list_runs(&RunFilter { task_id: Some(t.id), ..Default::default() }, &PageRequest::first(100))
            .await
            .must("list_runs");
        assert_eq!(runs.items.len(), 8, "task {} has its 8 runs", t.name);
        let now = store.get_task_by_id(t.id).await.must("get_task").expect("exists");
        assert_eq!(now.next_fire_at, Some(ts(480)));
    }
}

/// 8 owners racing for a free shard: exactly one lease.
pub async fn race_acquire_free_lease<S: Store>(store: S) {
    let store = Arc::new(store);
    for shard in 0..5u32 {
        let results = race(8, |i| {
            let store = store.clone();
            async move { store.acquire_lease(shard, &format!("owner-{i}"), secs(30), t0()).await }
        })
        .await;
        let mut won = Vec::new();
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Ok(Some(l)) => won.push(l),
                Ok(None) => {}
                Err(e) => panic!("shard {shard}: owner-{i}: acquire_lease failed: {e} ({e:?})"),
            }
        }
        assert_eq!(won.len(), 1, "shard {shard}: exactly one owner acquires a free shard, got {won:?}");
        let leases = store.list_leases().await.must("list_leases");
        assert_eq!(leases.iter().find(|l| l.shard == shard), Some(&won[0]), "shard {shard}: the stored lease");
    }
}

/// 8 owners racing for an expired shard: exactly one takes it over, with a higher epoch.
pub async fn race_acquire_expired_lease<S: Store>(store: S) {
    let store = Arc::new(store);
    let mut prev = acquire(&*store, 1, "first", secs(10), t0()).await;
    for round in 1..=4i64 {
        let now = ts(round * 100);
        let results = race(8, |i| {
            let store = store.clone();
            async move { store.acquire_lease(1, &format!("r{round}-owner-{i}"), secs(10), now).await }
        })
        .await;
        let won: Vec<_> = results
            .into_iter()
            .enumerate()
            .filter_map(|(i, r)| r.unwrap_or_else(|e| panic!("round {round}: owner {i}: acquire_lease: {e} ({e:?})")))
            .collect();
        assert_eq!(won.len(), 1, "round {round}: exactly one owner takes over an expired shard, got {won:?}");
        assert!(won[0].epoch > prev.epoch, "round {round}: the takeover bumps the epoch");
        assert_err!(
            store.renew_lease(&prev, secs(10), now).await,
            StoreError::Fenced { .. },
            "round {round}: the previous holder is fenced"
        );
        prev = won[0].clone();
    }
}

/// 16 racing `transition_run` CAS from the same state: exactly one wins, the others `Conflict`.
pub async fn race_transition_run<S: Store>(store: S) {
    let store = Arc::new(store);
    let task = create_task(&*store, "ns", "t", 0, None).await;
    for round in 0..5i64 {
        let run = run_at(&*store, &task, ts(round)).await;
        let results = race(RACERS, |i| {
            let store = store.clone();
            let t = Transition {
                run_id: run.id,
                from: vec![RunState::Scheduled],
                to: RunState::Dispatching,
                patch: RunPatch { owner: Some(Some(format!("racer-{i}"))), attempts: Some(1), ..Default::default() },
                fence: None,
                now: ts(100),
            };
            async move { store.transition_run(t).await }
        })
        .await;
        let mut winners = Vec::new();
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Ok(rec) => winners.push((i, rec)),
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => panic!("round {round}: racer {i}: transition_run: expected Ok or Conflict, got {e:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one CAS transition wins, got {}", winners.len());
        let (w, rec) = &winners[0];
        assert_eq!(rec.owner, Some(format!("racer-{w}")));
        let stored = store.get_run(run.id).await.must("get_run").expect("exists");
        assert_eq!(&stored, rec, "round {round}: the stored run is the winner's");
    }
    // Racing different targets from the same state: cancel vs dispatch.
    let run = run_at(&*store, &task, ts(99)).await;
    let run_id = run.id;
    let results = race(RACERS, |i| {
        let store = store.clone();
        let to = if i % 2 == 0 { RunState::Dispatching } else { RunState::Cancelled };
        async move { store.transition_run(transition(run_id, &[RunState::Scheduled], to, ts(100))).await }
    })
    .await;
    let ok: Vec<_> = results
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| match r {
            Ok(rec) => Some(rec),
            Err(StoreError::Conflict { .. }) => None,
            Err(e) => panic!("racer {i}: mixed transition_run: expected Ok or Conflict, got {e:?}"),
        })
        .collect();
    assert_eq!(ok.len(), 1, "exactly one of dispatch/cancel wins");
    assert_eq!(store.get_run(run.id).await.must("get_run").map(|r| r.state), Some(ok[0].state));
}

/// 16 racing `finish_attempt` on one attempt: exactly one wins, the others `Conflict`; the winner's outcome stays.
pub async fn race_finish_attempt<S: Store>(store: S) {
    let store = Arc::new(store);
    let task = create_task(&*store, "ns", "t", 0, None).await;
    let run = run_at(&*store, &task, ts(0)).await;
    for round in 1..=5u32 {
        let a = store
            .insert_attempt(NewAttempt {
                run_id: run.id,
                attempt: round,
                node: "n".into(),
                started_at: ts(1),
                deadline: None,
            })
            .await
            .must("insert_attempt");
        let attempt_id = a.id;
        let results = race(RACERS, |i| {
            let store = store.clone();
            let state = if i % 2 == 0 { AttemptState::Succeeded } else { AttemptState::Failed };
            async move {
                store
                    .finish_attempt(attempt_id, state, Some(json!({"racer": i})), Some(format!("racer {i}")), ts(2))
                    .await
            }
        })
        .await;
        let mut winners = Vec::new();
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Ok(rec) => winners.push((i, rec)),
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => panic!("round {round}: racer {i}: finish_attempt: expected Ok or Conflict, got {e:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one finish_attempt wins, got {}", winners.len());
        let (w, rec) = &winners[0];
        assert_eq!(rec.output, Some(json!({"racer": w})));
        let stored = store.list_attempts(run.id).await.must("list_attempts");
        let stored = stored.into_iter().find(|x| x.id == a.id).expect("attempt exists");
        assert_eq!(&stored, rec, "round {round}: the stored attempt is the winner's");
    }
}

/// 16 racing `put_task(MustNotExist)` of one name: one creates, the others `Conflict`.
pub async fn race_put_task_create<S: Store>(store: S) {
    let store = Arc::new(store);
    for round in 0..5 {
        let name = format!("t{round}");
        let results = race(RACERS, |i| {
            let store = store.clone();
            let mut w = task_write("ns", &name, 0, Some(ts(i as i64)));
            w.spec = json!({"racer": i});
            w.labels = labels(&[("racer", &i.to_string())]);
            async move { store.put_task(w, Precondition::MustNotExist, t0()).await }
        })
        .await;
        let mut winners = Vec::new();
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Ok(rec) => winners.push(rec),
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => {
                    panic!("round {round}: racer {i}: put_task(MustNotExist): expected Ok or Conflict, got {e:?}")
                }
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one create wins, got {}", winners.len());
        let stored = store.get_task("ns", &name).await.must("get_task").expect("exists");
        assert_eq!(stored, winners[0], "round {round}: the stored task is the winner's (spec and labels together)");
        let versions = store.task_versions("ns", &name).await.must("task_versions");
        assert_eq!(versions.len(), 1, "round {round}: one version");
        assert_eq!(versions[0].spec, stored.spec);
    }
}

/// 16 racing `put_task(Version(1))`: one replaces (version 2), the others `Conflict`.
pub async fn race_put_task_version<S: Store>(store: S) {
    let store = Arc::new(store);
    for round in 0..5 {
        let name = format!("t{round}");
        create_task(&*store, "ns", &name, 0, Some(ts(0))).await;
        let results = race(RACERS, |i| {
            let store = store.clone();
            let mut w = task_write("ns", &name, 0, Some(ts(i as i64)));
            w.spec = json!({"racer": i});
            w.labels = labels(&[("racer", &i.to_string())]);
            async move { store.put_task(w, Precondition::Version(1), ts(1)).await }
        })
        .await;
        let mut winners = Vec::new();
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Ok(rec) => winners.push(rec),
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => panic!("round {round}: racer {i}: put_task(Version(1)): expected Ok or Conflict, got {e:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one Version(1) replace wins, got {}", winners.len());
        assert_eq!(winners[0].version, 2);
        let stored = store.get_task("ns", &name).await.must("get_task").expect("exists");
        assert_eq!(stored, winners[0], "round {round}: the stored task is the winner's");
        let versions = store.task_versions("ns", &name).await.must("task_versions");
        assert_eq!(versions.iter().map(|v| v.version).collect::<Vec<_>>(), vec![1, 2], "round {round}: history");
        assert_eq!(versions[1].spec, stored.spec);
    }
}

/// 8 writers appending to one run's log concurrently: every line stored once, unique increasing seqs, each
/// writer's lines in its own order.
pub async fn race_append_logs<S: Store>(store: S) {
    let store = Arc::new(store);
    let task = create_task(&*store, "ns", "t", 0, None).await;
    let run = run_at(&*store, &task, ts(0)).await;
    let results = race(8, |w| {
        let store = store.clone();
        async move {
            let mut seqs = Vec::new();
            for b in 0..5 {
                let lines = vec![format!("w{w}-b{b}-0"), format!("w{w}-b{b}-1")];
                seqs.push(
                    store
                        .append_logs(run.id, "stdout", &lines, ts(1))
                        .await
                        .map_err(|e| format!("writer {w} batch {b}: {e} ({e:?})"))?,
                );
            }
            Ok::<_, String>(seqs)
        }
    })
    .await;
    let mut returned = BTreeSet::new();
    for r in results {
        let seqs = r.unwrap_or_else(|e| panic!("append_logs: {e}"));
        assert!(seqs.windows(2).all(|s| s[0] < s[1]), "one writer's returned seqs increase: {seqs:?}");
        returned.extend(seqs);
    }
    let lines = store.read_logs(run.id, 0, 1000).await.must("read_logs");
    assert_eq!(lines.len(), 80, "every appended line stored once");
    assert!(lines.windows(2).all(|w| w[0].seq < w[1].seq), "unique increasing seqs");
    let seqs: BTreeSet<i64> = lines.iter().map(|l| l.seq).collect();
    assert!(returned.is_subset(&seqs), "returned seqs are seqs of stored lines");
    for w in 0..8 {
        let mine: Vec<&str> =
            lines.iter().map(|l| l.line.as_str()).filter(|l| l.starts_with(&format!("w{w}-"))).collect();
        let want: Vec<String> = (0..5).flat_map(|b| [format!("w{w}-b{b}-0"), format!("w{w}-b{b}-1")]).collect();
        assert_eq!(mine, want, "writer {w}'s lines in order");
    }
}

/// 16 racing `put_task(Any)` of one missing name: all succeed (creates or replaces), versions 1..=16, no gaps.
pub async fn race_put_task_any<S: Store>(store: S) {
    let store = Arc::new(store);
    let results = race(RACERS, |i| {
        let store = store.clone();
        let mut w = task_write("ns", "t", 0, Some(ts(i as i64)));
        w.spec = json!({"racer": i});
        async move { store.put_task(w, Precondition::Any, t0()).await }
    })
    .await;
    let mut versions = BTreeSet::new();
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(rec) => assert!(versions.insert(rec.version), "racer {i}: version {} returned twice", rec.version),
            Err(e) => panic!("racer {i}: put_task(Any) must always succeed, got {e} ({e:?})"),
        }
    }
    assert_eq!(versions, (1..=RACERS as i64).collect(), "versions 1..=16, each once");
    let stored = store.get_task("ns", "t").await.must("get_task").expect("exists");
    assert_eq!(stored.version, RACERS as i64);
    let history = store.task_versions("ns", "t").await.must("task_versions");
    assert_eq!(history.iter().map(|v| v.version).collect::<Vec<_>>(), (1..=RACERS as i64).collect::<Vec<_>>());
    assert_eq!(history.last().map(|v| &v.spec), Some(&stored.spec), "the last version is the stored spec");
}

/// 16 racing `register_node` of one id: all succeed (upsert), one node remains.
pub async fn race_register_node<S: Store>(store: S) {
    let store = Arc::new(store);
    let results = race(RACERS, |i| {
        let store = store.clone();
        let reg = crate::NodeRegistration {
            id: "node-1".into(),
            kind: crate::NodeKind::Executor,
            service: "svc".into(),
            address: format!("http://10.0.0.{i}:80"),
            protocol: "http".into(),
            labels: labels(&[("racer", &i.to_string())]),
            weight: i as u32,
            capacity: 1,
        };
        async move { store.register_node(reg, secs(30), t0()).await }
    })
    .await;
    for (i, r) in results.into_iter().enumerate() {
        r.unwrap_or_else(|e| panic!("racer {i}: register_node (upsert) must succeed, got {e} ({e:?})"));
    }
    let nodes = store.list_nodes(&crate::NodeFilter::default()).await.must("list_nodes");
    assert_eq!(nodes.len(), 1, "one node after racing upserts");
    let n = &nodes[0];
    assert_eq!(n.address, format!("http://10.0.0.{}:80", n.weight), "address and weight come from the same racer");
    assert_eq!(n.labels, labels(&[("racer", &n.weight.to_string())]), "labels come from the same racer");
}

/// The old holder renewing its expired lease races 4 owners acquiring it: exactly one of them succeeds.
pub async fn race_renew_and_takeover<S: Store>(store: S) {
    let store = Arc::new(store);
    for shard in 0..8u32 {
        let old = acquire(&*store, shard, "old", secs(10), t0()).await;
        let results = race(5, |i| {
            let store = store.clone();
            let old = old.clone();
            async move {
                if i == 0 {
                    match store.renew_lease(&old, secs(10), ts(60)).await {
                        Ok(_) => Ok(true),
                        Err(StoreError::Fenced { .. }) => Ok(false),
                        Err(e) => Err(format!("renew: {e} ({e:?})")),
                    }
                } else {
                    store
                        .acquire_lease(shard, &format!("new-{i}"), secs(10), ts(60))
                        .await
                        .map(|l| l.is_some())
                        .map_err(|e| format!("acquire new-{i}: {e} ({e:?})"))
                }
            }
        })
        .await;
        let wins: Vec<bool> = results.into_iter().map(|r| r.unwrap_or_else(|e| panic!("shard {shard}: {e}"))).collect();
        assert_eq!(
            wins.iter().filter(|w| **w).count(),
            1,
            "shard {shard}: exactly one of renew (old holder) / acquire (4 others) succeeds: {wins:?}"
        );
        let leases = store.list_leases().await.must("list_leases");
        let l = leases.iter().find(|l| l.shard == shard).expect("lease row");
        if wins[0] {
            assert_eq!((l.owner.as_str(), l.epoch), ("old", old.epoch), "shard {shard}: renewed by the old holder");
        } else {
            assert!(l.epoch > old.epoch && l.owner != "old", "shard {shard}: taken over with a higher epoch");
        }
    }
}

/// Deleting a task while others fire it: no backend errors; fires end `Ok`, `Conflict` or `NotFound`.
pub async fn race_delete_and_fire<S: Store>(store: S) {
    let store = Arc::new(store);
    for round in 0..8i64 {
        let name = format!("t{round}");
        let task = create_task(&*store, "ns", &name, 0, Some(ts(0))).await;
        let results = race(5, |i| {
            let store = store.clone();
            let task = task.clone();
            let name = name.clone();
            async move {
                if i == 0 {
                    store.delete_task("ns", &name).await.map(|d| if d { "deleted" } else { "missing" })
                } else {
                    let req = FireRequest {
                        task_id: task.id,
                        expected_next_fire_at: Some(ts(0)),
                        new_next_fire_at: Some(ts(60)),
                        runs: vec![new_run(&task, ts(0))],
                        fence: None,
                        now: ts(1),
                    };
                    match store.fire(req).await {
                        Ok(_) => Ok("fired"),
                        Err(StoreError::Conflict { .. }) => Ok("conflict"),
                        Err(StoreError::NotFound { .. }) => Ok("not found"),
                        Err(e) => Err(e),
                    }
                }
            }
        })
        .await;
        let outcomes: Vec<&str> = results
            .into_iter()
            .enumerate()
            .map(|(i, r)| r.unwrap_or_else(|e| panic!("round {round}: racer {i}: {e} ({e:?})")))
            .collect();
        assert_eq!(outcomes[0], "deleted", "round {round}: the delete finds the task");
        assert!(
            outcomes[1..].iter().filter(|o| **o == "fired").count() <= 1,
            "round {round}: at most one fire: {outcomes:?}"
        );
        assert_eq!(store.get_task("ns", &name).await.must("get_task"), None, "round {round}: the task is gone");
        let runs = store
            .list_runs(&RunFilter { task_id: Some(task.id), ..Default::default() }, &PageRequest::first(10))
            .await
            .must("list_runs");
        assert!(runs.items.len() <= 1, "round {round}: at most one run: {:?}", runs.items);
    }
}

/// Fenced writers (insert_run, transition_run, fire) hammer a shard while another node takes it over. Once the
/// takeover has returned, the new holder's view is final: no write carrying the old fence may appear afterwards
/// (the fence check must be atomic with the write, not a separate read).
pub async fn race_fenced_writes_during_takeover<S: Store>(store: S) {
    let store = Arc::new(store);
    let shard = 21;
    let old = acquire(&*store, shard, "old", secs(10), t0()).await;
    let task = create_task(&*store, "ns", "t", shard, None).await;
    let mut queued = Vec::new();
    for i in 0..400 {
        queued.push(run_at(&*store, &task, ts(-10_000 - i)).await.id);
    }
    let mut fire_tasks = Vec::new();
    for i in 0..2 {
        fire_tasks.push(create_task(&*store, "ns", &format!("fire-{i}"), shard, Some(ts(0))).await);
    }
    let fence = Some(old.fence());
    let queued = Arc::new(queued);
    let writers = race(8, |w| {
        let store = store.clone();
        let task = task.clone();
        let queued = queued.clone();
        let fire_task = fire_tasks[w % 2].clone();
        async move {
            let mut ok = 0usize;
            for k in 0..5_000i64 {
                // Let the taker run even on a store that never suspends.
                tokio::task::yield_now().await;
                let res: Result<(), StoreError> = match w {
                    0..=3 => store.insert_run(new_run(&task, ts(k * 8 + w as i64)), fence, ts(1)).await.map(|_| ()),
                    4 | 5 => {
                        let Some(&id) = queued.get(k as usize * 2 + (w - 4)) else { return Ok(ok) };
                        store
                            .transition_run(Transition {
                                run_id: id,
                                from: vec![RunState::Scheduled],
                                to: RunState::Dispatching,
                                patch: RunPatch::default(),
                                fence,
                                now: ts(1),
                            })
                            .await
                            .map(|_| ())
                    }
                    _ => store
                        .fire(FireRequest {
                            task_id: fire_task.id,
                            expected_next_fire_at: Some(ts(k * 60)),
                            new_next_fire_at: Some(ts((k + 1) * 60)),
                            runs: vec![new_run(&fire_task, ts(k * 60))],
                            fence,
                            now: ts(1),
                        })
                        .await
                        .map(|_| ()),
                };
                match res {
                    Ok(()) => ok += 1,
                    Err(StoreError::Fenced { .. }) => return Ok(ok),
                    // The two fire writers share a task per pair; losing the CAS to the other one is fine.
                    Err(StoreError::Conflict { .. }) if w >= 6 => return Ok(ok),
                    Err(e) => return Err(format!("writer {w} op {k}: {e} ({e:?})")),
                }
            }
            Err(format!("writer {w} was never fenced"))
        }
    });
    let taker = {
        let store = store.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
            let new = acquire(&*store, shard, "new", secs(10), ts(100)).await;
            let snapshot = all_runs(&*store).await;
            let tasks = store.list_tasks(&crate::TaskFilter::default(), &PageRequest::first(10)).await.must("tasks");
            (new, snapshot, tasks.items)
        })
    };
    let results = writers.await;
    let (new, snapshot, tasks_after_takeover) = match taker.await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    for r in results {
        r.unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(new.epoch > old.epoch);
    let final_runs = all_runs(&*store).await;
    assert_eq!(
        final_runs.len(),
        snapshot.len(),
        "runs written with the old fence appeared after the takeover returned ({} then {})",
        snapshot.len(),
        final_runs.len()
    );
    assert!(final_runs == snapshot, "runs changed by old-fence writes after the takeover returned");
    let tasks_final = store.list_tasks(&crate::TaskFilter::default(), &PageRequest::first(10)).await.must("tasks");
    assert_eq!(tasks_final.items, tasks_after_takeover, "fire with the old fence moved a task after the takeover");
}

async fn all_runs<S: Store>(store: &S) -> Vec<crate::RunRecord> {
    collect_pages("list_runs", 1000, |p| async move { store.list_runs(&RunFilter::default(), &p).await }).await.concat()
}
