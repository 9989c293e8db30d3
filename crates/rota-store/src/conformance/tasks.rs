//! Tasks: create, replace with preconditions, versions, JSON and label round trips, delete, pause/resume.

use serde_json::json;

use super::support::*;
use crate::{PageRequest, Precondition, RunFilter, Store, StoreError, TaskFilter};

/// Creating a task yields version 1 and a record equal to what `get_task` and `get_task_by_id` return.
pub async fn task_create_and_get<S: Store>(store: S) {
    let mut w = task_write("billing", "nightly", 7, Some(ts(60)));
    w.labels = labels(&[("team", "payments"), ("tier", "gold")]);
    let created = store.put_task(w.clone(), Precondition::MustNotExist, t0()).await.must("put_task billing/nightly");
    assert_eq!(created.version, 1, "a new task starts at version 1");
    assert_eq!(created.namespace, "billing");
    assert_eq!(created.name, "nightly");
    assert_eq!(created.labels, w.labels, "labels of the created task");
    assert_eq!(created.spec, w.spec, "spec of the created task");
    assert_eq!(created.shard, 7, "shard of the created task");
    assert_eq!(created.next_fire_at, Some(ts(60)), "next_fire_at of the created task");
    assert!(!created.paused, "a new task is not paused");
    assert_eq!(created.created_at, t0(), "created_at is the `now` passed to put_task");
    assert_eq!(created.updated_at, t0(), "updated_at is the `now` passed to put_task");
    assert_eq!(created.key(), "billing/nightly");

    let got = store.get_task("billing", "nightly").await.must("get_task billing/nightly");
    assert_eq!(got.as_ref(), Some(&created), "get_task returns the record put_task returned");
    let by_id = store.get_task_by_id(created.id).await.must("get_task_by_id");
    assert_eq!(by_id.as_ref(), Some(&created), "get_task_by_id returns the record put_task returned");

    assert_eq!(store.get_task("billing", "other").await.must("get_task unknown name"), None);
    assert_eq!(store.get_task("other", "nightly").await.must("get_task unknown namespace"), None);
    assert_eq!(store.get_task_by_id(created.id + 1_000_000).await.must("get_task_by_id unknown"), None);

    // The same name in another namespace is another task.
    let other = create_task(&store, "marketing", "nightly", 7, None).await;
    assert_ne!(other.id, created.id, "tasks in different namespaces have different ids");
    assert_eq!(other.version, 1);
    assert_eq!(other.next_fire_at, None, "next_fire_at None round-trips");
    let again = store.get_task("billing", "nightly").await.must("get_task after creating a namesake");
    assert_eq!(again.as_ref(), Some(&created), "creating marketing/nightly must not touch billing/nightly");
}

/// `MustNotExist` on an existing task is a `Conflict` and changes nothing.
pub async fn task_must_not_exist_conflict<S: Store>(store: S) {
    let created = create_task(&store, "ns", "t", 1, Some(ts(10))).await;
    let mut w = task_write("ns", "t", 2, Some(ts(99)));
    w.spec = json!({"changed": true});
    assert_err!(
        store.put_task(w, Precondition::MustNotExist, ts(1)).await,
        StoreError::Conflict { .. },
        "put_task(MustNotExist) of an existing task"
    );
    let got = store.get_task("ns", "t").await.must("get_task").expect("task still exists");
    assert_eq!(got, created, "a rejected put_task must leave the task unchanged");
}

/// `Version(n)`: succeeds on the current version, `Conflict` on another, `NotFound` for a missing task.
pub async fn task_version_precondition<S: Store>(store: S) {
    let v1 = create_task(&store, "ns", "t", 1, Some(ts(10))).await;
    let mut w = task_write("ns", "t", 1, Some(ts(20)));
    w.spec = json!({"v": 2});
    let v2 = store.put_task(w.clone(), Precondition::Version(1), ts(1)).await.must("put_task(Version(1)) on v1");
    assert_eq!(v2.version, 2, "replacing increments the version");
    assert_eq!(v2.id, v1.id, "replacing keeps the id");
    assert_eq!(v2.spec, json!({"v": 2}));

    let mut stale = w.clone();
    stale.spec = json!({"v": "stale"});
    assert_err!(
        store.put_task(stale.clone(), Precondition::Version(1), ts(2)).await,
        StoreError::Conflict { .. },
        "put_task(Version(1)) when the task is at version 2"
    );
    assert_err!(
        store.put_task(stale, Precondition::Version(5), ts(2)).await,
        StoreError::Conflict { .. },
        "put_task(Version(5)) when the task is at version 2"
    );
    let got = store.get_task("ns", "t").await.must("get_task").expect("exists");
    assert_eq!(got, v2, "rejected Version puts leave the task unchanged");

    assert_err!(
        store.put_task(task_write("ns", "missing", 1, None), Precondition::Version(1), ts(3)).await,
        StoreError::NotFound { .. },
        "put_task(Version(1)) of a task that does not exist"
    );
    assert_eq!(
        store.get_task("ns", "missing").await.must("get_task missing"),
        None,
        "a rejected Version put must not create the task"
    );
}

/// `Any` creates a missing task and replaces an existing one.
pub async fn task_precondition_any<S: Store>(store: S) {
    let v1 = store.put_task(task_write("ns", "t", 3, None), Precondition::Any, t0()).await.must("put_task(Any) create");
    assert_eq!(v1.version, 1, "put_task(Any) of a new task creates version 1");
    let mut w = task_write("ns", "t", 3, Some(ts(5)));
    w.spec = json!({"replaced": 1});
    let v2 = store.put_task(w.clone(), Precondition::Any, ts(1)).await.must("put_task(Any) replace");
    assert_eq!(v2.version, 2);
    assert_eq!(v2.id, v1.id);
    w.spec = json!({"replaced": 2});
    let v3 = store.put_task(w, Precondition::Any, ts(2)).await.must("put_task(Any) replace again");
    assert_eq!(v3.version, 3);
    assert_eq!(store.get_task("ns", "t").await.must("get_task"), Some(v3));
}

/// Replacing takes labels, spec, shard and next_fire_at from the write, keeps id and created_at, sets updated_at.
pub async fn task_replace_updates_fields<S: Store>(store: S) {
    let mut w = task_write("ns", "t", 1, Some(ts(10)));
    w.labels = labels(&[("a", "1"), ("b", "2")]);
    let v1 = store.put_task(w, Precondition::MustNotExist, t0()).await.must("create");

    let mut w2 = task_write("ns", "t", 9, Some(ts(500)));
    w2.labels = labels(&[("b", "20"), ("c", "3")]);
    w2.spec = json!({"second": ["version"]});
    let v2 = store.put_task(w2.clone(), Precondition::Version(1), ts(30)).await.must("replace");
    assert_eq!(v2.id, v1.id, "id is kept");
    assert_eq!(v2.version, 2, "version incremented");
    assert_eq!(v2.labels, w2.labels, "labels are replaced (a removed, b changed, c added)");
    assert_eq!(v2.spec, w2.spec, "spec replaced");
    assert_eq!(v2.shard, 9, "shard taken from the write");
    assert_eq!(v2.next_fire_at, Some(ts(500)), "next_fire_at taken from the write");
    assert_eq!(v2.created_at, t0(), "created_at is kept on replace");
    assert_eq!(v2.updated_at, ts(30), "updated_at is the replace's now");
    assert_eq!(store.get_task("ns", "t").await.must("get_task"), Some(v2.clone()));

    // The label index follows the replacement.
    let by_a = store
        .list_tasks(&TaskFilter { labels: labels(&[("a", "1")]), ..Default::default() }, &PageRequest::first(10))
        .await
        .must("list_tasks a=1");
    assert!(by_a.items.is_empty(), "a removed label must no longer match: {:?}", by_a.items);
    let by_b = store
        .list_tasks(&TaskFilter { labels: labels(&[("b", "20")]), ..Default::default() }, &PageRequest::first(10))
        .await
        .must("list_tasks b=20");
    assert_eq!(by_b.items, vec![v2], "a changed label matches its new value");

    // next_fire_at can be cleared by a replacement.
    let mut w3 = w2;
    w3.next_fire_at = None;
    let v3 = store.put_task(w3, Precondition::Version(2), ts(31)).await.must("replace clearing next_fire_at");
    assert_eq!(v3.next_fire_at, None, "next_fire_at None after a replacement clearing it");
}

/// Replacing a paused task keeps it paused.
pub async fn task_replace_keeps_paused<S: Store>(store: S) {
    create_task(&store, "ns", "t", 4, Some(ts(10))).await;
    let paused = store.set_paused("ns", "t", true, None, ts(1)).await.must("set_paused(true)");
    assert!(paused.paused);
    let mut w = task_write("ns", "t", 4, Some(ts(20)));
    w.spec = json!({"v": 2});
    let v2 = store.put_task(w.clone(), Precondition::Any, ts(2)).await.must("replace paused task (Any)");
    assert!(v2.paused, "replacing keeps `paused`");
    assert_eq!(v2.version, 2);
    w.spec = json!({"v": 3});
    let v3 = store.put_task(w, Precondition::Version(2), ts(3)).await.must("replace paused task (Version)");
    assert!(v3.paused, "replacing keeps `paused`");
    let due = store.due_tasks(4, ts(1000), 100).await.must("due_tasks");
    assert!(due.is_empty(), "a paused task (even after replacement) is not due: {due:?}");
}

/// `task_versions` lists every version, oldest first, with its spec and creation instant.
pub async fn task_versions_history<S: Store>(store: S) {
    let specs = [json!({"v": 1}), json!({"v": 2, "extra": [1, 2]}), json!({"v": 3, "nested": {"k": "v"}})];
    for (i, spec) in specs.iter().enumerate() {
        let mut w = task_write("ns", "t", 1, None);
        w.spec = spec.clone();
        let pre = if i == 0 { Precondition::MustNotExist } else { Precondition::Version(i as i64) };
        store.put_task(w, pre, ts(i as i64 * 10)).await.must(format_args!("put_task version {}", i + 1));
    }
    let task = store.get_task("ns", "t").await.must("get_task").expect("exists");
    let versions = store.task_versions("ns", "t").await.must("task_versions");
    assert_eq!(
        versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        vec![1, 2, 3],
        "task_versions lists every version (including the first), oldest first"
    );
    for (i, v) in versions.iter().enumerate() {
        assert_eq!(v.task_id, task.id, "task_versions[{i}].task_id");
        assert_eq!(v.spec, specs[i], "task_versions[{i}].spec");
        assert_eq!(v.created_at, ts(i as i64 * 10), "task_versions[{i}].created_at is the put's now");
    }
    // Another task's history is separate.
    create_task(&store, "ns", "other", 1, None).await;
    let other = store.task_versions("ns", "other").await.must("task_versions other");
    assert_eq!(other.len(), 1, "a new task has exactly one version: {other:?}");
    match store.task_versions("ns", "missing").await {
        Ok(v) => assert!(v.is_empty(), "task_versions of a missing task: {v:?}"),
        Err(StoreError::NotFound { .. }) => {}
        Err(e) => panic!("task_versions of a missing task: expected empty or NotFound, got {e:?}"),
    }
}

/// The spec document round-trips exactly (nested objects, arrays, unicode, escapes, large integers, floats).
pub async fn task_spec_json_round_trip<S: Store>(store: S) {
    let spec = json!({
        "metadata": {"name": "t", "annotations": {"a/b": "c", "empty": ""}},
        "unicode": "Grüße, 世界! 🚀 \u{00e9}\u{0301}",
        "escapes": "quote \" backslash \\ newline \n tab \t nul-free",
        "sql": "'; DROP TABLE tasks; --",
        "numbers": {
            "zero": 0,
            "negative": -42,
            "above_2_53": 9_007_199_254_740_993_i64,
            "i64_max": i64::MAX,
            "i64_min": i64::MIN,
            "float": 1.5,
            "neg_float": -2.25,
            "small": 0.001
        },
        "bools": [true, false],
        "null": null,
        "empty_array": [],
        "empty_object": {},
        "deep": {"a": {"b": {"c": {"d": {"e": [1, [2, [3, {"f": "g"}]]]}}}}},
        "array_of_objects": [{"x": 1}, {"y": [null, "z"]}]
    });
    let mut w = task_write("ns", "json", 1, None);
    w.spec = spec.clone();
    let created = store.put_task(w.clone(), Precondition::MustNotExist, t0()).await.must("put_task json");
    assert_eq!(created.spec, spec, "spec returned by put_task");
    let got = store.get_task("ns", "json").await.must("get_task").expect("exists");
    assert_eq!(got.spec, spec, "spec returned by get_task must equal the one written");
    let by_id = store.get_task_by_id(created.id).await.must("get_task_by_id").expect("exists");
    assert_eq!(by_id.spec, spec, "spec returned by get_task_by_id");
    let versions = store.task_versions("ns", "json").await.must("task_versions");
    assert_eq!(versions.last().map(|v| &v.spec), Some(&spec), "spec in the version history");
    let listed = store.list_tasks(&TaskFilter::default(), &PageRequest::first(10)).await.must("list_tasks");
    assert_eq!(listed.items.first().map(|t| &t.spec), Some(&spec), "spec in list_tasks");

    // Scalars and arrays as the whole document.
    for (i, doc) in [json!("just a string"), json!([1, "two", {"three": 3}]), json!(12345)].into_iter().enumerate() {
        let mut w = task_write("ns", &format!("scalar-{i}"), 1, None);
        w.spec = doc.clone();
        store.put_task(w, Precondition::MustNotExist, t0()).await.must("put_task non-object spec");
        let got = store.get_task("ns", &format!("scalar-{i}")).await.must("get_task").expect("exists");
        assert_eq!(got.spec, doc, "non-object spec round trip");
    }
}

/// Labels round-trip exactly, including empty maps, unicode and separator characters.
pub async fn task_labels_round_trip<S: Store>(store: S) {
    let tricky = labels(&[
        ("app.kubernetes.io/name", "rota"),
        ("comma,key", "a,b"),
        ("eq=key", "x=y"),
        ("quote\"key", "it's"),
        ("ünï", "çødé 🚀"),
        ("empty", ""),
        ("spaces in key", " leading and trailing "),
    ]);
    let mut w = task_write("ns", "labelled", 1, None);
    w.labels = tricky.clone();
    let created = store.put_task(w, Precondition::MustNotExist, t0()).await.must("put_task with labels");
    assert_eq!(created.labels, tricky, "labels returned by put_task");
    let got = store.get_task("ns", "labelled").await.must("get_task").expect("exists");
    assert_eq!(got.labels, tricky, "labels returned by get_task");

    let plain = create_task(&store, "ns", "unlabelled", 1, None).await;
    assert!(plain.labels.is_empty(), "no labels round-trips as an empty map");

    for (k, v) in &tricky {
        let page = store
            .list_tasks(&TaskFilter { labels: labels(&[(k, v)]), ..Default::default() }, &PageRequest::first(10))
            .await
            .must(format_args!("list_tasks by label {k:?}={v:?}"));
        assert_eq!(
            page.items.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            vec!["labelled"],
            "filter by label {k:?}={v:?}"
        );
    }
}

/// Deleting returns true then false, and removes the task from get, listing and the due index.
pub async fn task_delete<S: Store>(store: S) {
    let task = create_task(&store, "ns", "doomed", 2, Some(ts(-5))).await;
    let keep = create_task(&store, "ns", "kept", 2, Some(ts(-5))).await;
    assert_eq!(store.due_tasks(2, t0(), 100).await.must("due_tasks before delete").len(), 2);

    assert!(store.delete_task("ns", "doomed").await.must("delete_task"), "deleting an existing task returns true");
    assert!(!store.delete_task("ns", "doomed").await.must("delete_task again"), "deleting again returns false");
    assert!(!store.delete_task("ns", "never").await.must("delete_task unknown"), "deleting unknown returns false");

    assert_eq!(store.get_task("ns", "doomed").await.must("get_task deleted"), None);
    assert_eq!(store.get_task_by_id(task.id).await.must("get_task_by_id deleted"), None);
    let listed = store.list_tasks(&TaskFilter::default(), &PageRequest::first(100)).await.must("list_tasks");
    assert_eq!(listed.items, vec![keep.clone()], "a deleted task is no longer listed");
    let due = store.due_tasks(2, t0(), 100).await.must("due_tasks after delete");
    assert_eq!(due.iter().map(|d| d.task_id).collect::<Vec<_>>(), vec![keep.id], "a deleted task is no longer due");
    match store.task_versions("ns", "doomed").await {
        Ok(v) => assert!(v.is_empty(), "versions of a deleted task are deleted: {v:?}"),
        Err(StoreError::NotFound { .. }) => {}
        Err(e) => panic!("task_versions of a deleted task: expected empty or NotFound, got {e:?}"),
    }

    // The name can be reused; the new task starts again at version 1 with its own history.
    let again = create_task(&store, "ns", "doomed", 2, None).await;
    assert_eq!(again.version, 1, "a re-created task starts at version 1");
    let versions = store.task_versions("ns", "doomed").await.must("task_versions re-created");
    assert_eq!(versions.len(), 1, "a re-created task has only its own version: {versions:?}");
}

/// Runs survive the deletion of their task (they are history).
pub async fn task_delete_keeps_runs<S: Store>(store: S) {
    let task = create_task(&store, "ns", "t", 1, Some(ts(0))).await;
    let r1 = run_at(&store, &task, ts(0)).await;
    let r2 = run_at(&store, &task, ts(60)).await;
    assert!(store.delete_task("ns", "t").await.must("delete_task"));
    assert_eq!(store.get_run(r1.id).await.must("get_run after task delete"), Some(r1.clone()), "runs stay");
    let listed = store
        .list_runs(&RunFilter { task_id: Some(task.id), ..Default::default() }, &PageRequest::first(10))
        .await
        .must("list_runs by task after delete");
    assert_eq!(listed.items, vec![r2, r1], "runs of a deleted task are still listed, newest first");
}

/// Pausing removes a task from the due index; resuming sets next_fire_at and brings it back. Version unchanged.
pub async fn task_set_paused_and_resume<S: Store>(store: S) {
    let task = create_task(&store, "ns", "t", 5, Some(ts(-10))).await;
    let paused = store.set_paused("ns", "t", true, None, ts(1)).await.must("set_paused(true)");
    assert!(paused.paused, "set_paused(true) returns a paused task");
    assert_eq!(paused.version, task.version, "pausing does not change the version");
    assert_eq!(paused.spec, task.spec, "pausing does not change the spec");
    assert_eq!(paused.updated_at, ts(1), "pausing sets updated_at to now");
    assert_eq!(store.get_task("ns", "t").await.must("get_task").map(|t| t.paused), Some(true));
    assert!(store.due_tasks(5, ts(100), 100).await.must("due_tasks while paused").is_empty(), "paused: not due");

    let page = store
        .list_tasks(&TaskFilter { paused: Some(true), ..Default::default() }, &PageRequest::first(10))
        .await
        .must("list_tasks paused");
    assert_eq!(page.items, vec![paused.clone()], "listing paused tasks");

    let resumed = store.set_paused("ns", "t", false, Some(ts(50)), ts(2)).await.must("set_paused(false)");
    assert!(!resumed.paused, "set_paused(false) resumes");
    assert_eq!(resumed.next_fire_at, Some(ts(50)), "resuming sets next_fire_at to the given value");
    assert_eq!(resumed.version, task.version, "resuming does not change the version");
    assert_eq!(resumed.updated_at, ts(2));
    assert_eq!(store.get_task("ns", "t").await.must("get_task"), Some(resumed.clone()));
    assert!(store.due_tasks(5, ts(49), 100).await.must("due_tasks before").is_empty(), "not due before next_fire_at");
    let due = store.due_tasks(5, ts(50), 100).await.must("due_tasks after resume");
    assert_eq!(due.iter().map(|d| d.task_id).collect::<Vec<_>>(), vec![task.id], "resumed task is due again");
    assert_eq!(due[0].next_fire_at, ts(50));

    // Resuming with no next_fire_at (a manual task): not due at all.
    store.set_paused("ns", "t", true, None, ts(3)).await.must("pause again");
    let manual = store.set_paused("ns", "t", false, None, ts(4)).await.must("resume with None");
    assert_eq!(manual.next_fire_at, None, "resuming with None clears next_fire_at");
    assert!(store.due_tasks(5, ts(100_000), 100).await.must("due_tasks").is_empty());

    assert_err!(
        store.set_paused("ns", "missing", true, None, ts(5)).await,
        StoreError::NotFound { .. },
        "set_paused of a missing task"
    );
}

/// Namespaces, names and label values are exact strings: case and accents matter, and so do trailing spaces.
pub async fn task_keys_are_exact_strings<S: Store>(store: S) {
    let pairs =
        [("ns", "nightly"), ("ns", "Nightly"), ("ns", "NIGHTLY"), ("NS", "nightly"), ("ns", "café"), ("ns", "cafe")];
    let mut ids = std::collections::BTreeSet::new();
    for (ns, name) in pairs {
        let t = create_task(&store, ns, name, 0, None).await;
        assert!(ids.insert(t.id), "{ns}/{name} must be a task of its own");
    }
    for (ns, name) in pairs {
        let t = store.get_task(ns, name).await.must("get_task").expect("exists");
        assert_eq!((t.namespace.as_str(), t.name.as_str()), (ns, name), "get_task({ns:?}, {name:?}) is exact");
    }
    let page = store
        .list_tasks(&TaskFilter { namespace: Some("ns".into()), ..Default::default() }, &PageRequest::first(100))
        .await
        .must("list_tasks ns");
    assert_eq!(page.items.len(), 5, "namespace filter is exact (NS is another namespace)");
    for (value, want) in [("Prod", "upper"), ("prod", "lower"), ("prod ", "trailing")] {
        let mut w = task_write("labels", want, 0, None);
        w.labels = labels(&[("env", value)]);
        store.put_task(w, Precondition::MustNotExist, t0()).await.must("put_task labelled");
    }
    for (value, want) in [("Prod", "upper"), ("prod", "lower"), ("prod ", "trailing")] {
        let page = store
            .list_tasks(
                &TaskFilter { labels: labels(&[("env", value)]), ..Default::default() },
                &PageRequest::first(10),
            )
            .await
            .must("list_tasks by label");
        assert_eq!(
            page.items.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            vec![want],
            "label filter env={value:?} matches exactly"
        );
    }
    assert!(store.delete_task("ns", "Nightly").await.must("delete_task"));
    assert!(store.get_task("ns", "nightly").await.must("get_task").is_some(), "deleting Nightly keeps nightly");
}
