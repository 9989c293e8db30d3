//! Task listing: keyset pagination, filters, cursors and limits.

use std::collections::BTreeSet;

use futures::StreamExt;

use super::support::*;
use crate::{MAX_PAGE_SIZE, PageRequest, Precondition, Store, StoreError, TaskFilter, TaskRecord};

async fn all_tasks<S: Store>(store: &S, filter: &TaskFilter, limit: u32, what: &str) -> Vec<Vec<TaskRecord>> {
    collect_pages(what, limit, |page| async move { store.list_tasks(filter, &page).await }).await
}

/// 250 tasks, pages of 100: every task exactly once, in a stable order, pages 100/100/50, last cursor `None`.
pub async fn list_tasks_pagination<S: Store>(store: S) {
    let mut ids = BTreeSet::new();
    for i in 0..250 {
        ids.insert(create_task(&store, "ns", &format!("task-{i:03}"), i % 4, None).await.id);
    }
    let pages = all_tasks(&store, &TaskFilter::default(), 100, "list_tasks(limit 100)").await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), vec![100, 100, 50], "page sizes for 250 tasks");
    let seq: Vec<i64> = pages.iter().flatten().map(|t| t.id).collect();
    let seen: BTreeSet<i64> = seq.iter().copied().collect();
    assert_eq!(seen.len(), seq.len(), "no task may appear twice across pages");
    assert_eq!(seen, ids, "every task appears exactly once");

    // Stable order: a second traversal and a single big page give the same sequence.
    let again: Vec<i64> = all_tasks(&store, &TaskFilter::default(), 100, "list_tasks second traversal")
        .await
        .into_iter()
        .flatten()
        .map(|t| t.id)
        .collect();
    assert_eq!(again, seq, "listing order must be stable between traversals");
    let single = store.list_tasks(&TaskFilter::default(), &PageRequest::first(1000)).await.must("list_tasks 1000");
    assert_eq!(single.items.iter().map(|t| t.id).collect::<Vec<_>>(), seq, "one big page has the same order");
    assert_eq!(single.next_cursor, None, "a page holding everything has no next_cursor");
    let odd: Vec<i64> = all_tasks(&store, &TaskFilter::default(), 7, "list_tasks(limit 7)")
        .await
        .into_iter()
        .flatten()
        .map(|t| t.id)
        .collect();
    assert_eq!(odd, seq, "paging with limit 7 visits the same sequence");

    // Listed records are complete.
    let by_name = store.get_task("ns", "task-123").await.must("get_task").expect("exists");
    let listed = single.items.iter().find(|t| t.id == by_name.id).expect("listed");
    assert_eq!(listed, &by_name, "listed record equals get_task's");

    // Inserting while paginating: tasks created after the cursor are seen, nothing is repeated.
    let first = store.list_tasks(&TaskFilter::default(), &PageRequest::first(100)).await.must("first page");
    create_task(&store, "ns", "late-arrival", 0, None).await;
    let cursor = first.next_cursor.expect("more pages");
    let mut rest = first.items.iter().map(|t| t.id).collect::<Vec<_>>();
    let tail = collect_pages("list_tasks after insert", 100, |mut p| {
        let store = &store;
        if p.cursor.is_none() {
            p.cursor = Some(cursor.clone());
        }
        async move { store.list_tasks(&TaskFilter::default(), &p).await }
    })
    .await;
    rest.extend(tail.into_iter().flatten().map(|t| t.id));
    let unique: BTreeSet<i64> = rest.iter().copied().collect();
    assert_eq!(unique.len(), rest.len(), "no duplicates when a task is created during pagination");
    assert!(unique.is_superset(&ids), "every pre-existing task is still visited");
}

/// Filtering by namespace.
pub async fn list_tasks_filter_namespace<S: Store>(store: S) {
    let mut a = Vec::new();
    for i in 0..5 {
        a.push(create_task(&store, "alpha", &format!("t{i}"), 0, None).await);
        create_task(&store, "beta", &format!("t{i}"), 0, None).await;
    }
    create_task(&store, "alpha-2", "t0", 0, None).await;
    let page = store
        .list_tasks(&TaskFilter { namespace: Some("alpha".into()), ..Default::default() }, &PageRequest::first(100))
        .await
        .must("list_tasks namespace=alpha");
    let mut got: Vec<i64> = page.items.iter().map(|t| t.id).collect();
    got.sort();
    let mut want: Vec<i64> = a.iter().map(|t| t.id).collect();
    want.sort();
    assert_eq!(got, want, "namespace filter matches exactly (not by prefix)");
    assert!(page.items.iter().all(|t| t.namespace == "alpha"));
    let none = store
        .list_tasks(&TaskFilter { namespace: Some("gamma".into()), ..Default::default() }, &PageRequest::first(100))
        .await
        .must("list_tasks namespace=gamma");
    assert!(none.items.is_empty() && none.next_cursor.is_none(), "unknown namespace: empty last page");
}

/// Filtering by one label and by two labels (all must match).
pub async fn list_tasks_filter_labels<S: Store>(store: S) {
    let defs: &[(&str, &[(&str, &str)])] = &[
        ("a", &[("team", "x"), ("env", "prod")]),
        ("b", &[("team", "x"), ("env", "dev")]),
        ("c", &[("team", "y"), ("env", "prod")]),
        ("d", &[("team", "x")]),
        ("e", &[]),
        ("f", &[("team", "x"), ("env", "prod"), ("extra", "1")]),
    ];
    for (name, ls) in defs {
        let mut w = task_write("ns", name, 0, None);
        w.labels = labels(ls);
        store.put_task(w, Precondition::MustNotExist, t0()).await.must(format_args!("put_task {name}"));
    }
    let names = |items: &[TaskRecord]| {
        let mut v: Vec<String> = items.iter().map(|t| t.name.clone()).collect();
        v.sort();
        v
    };
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: &[Case] = &[
        (&[("team", "x")], &["a", "b", "d", "f"]),
        (&[("env", "prod")], &["a", "c", "f"]),
        (&[("team", "x"), ("env", "prod")], &["a", "f"]),
        (&[("team", "y"), ("env", "dev")], &[]),
        (&[("team", "z")], &[]),
        (&[("missing", "x")], &[]),
        (&[("team", "x"), ("env", "prod"), ("extra", "1")], &["f"]),
    ];
    for (filter, want) in cases {
        let page = store
            .list_tasks(&TaskFilter { labels: labels(filter), ..Default::default() }, &PageRequest::first(100))
            .await
            .must(format_args!("list_tasks labels {filter:?}"));
        assert_eq!(names(&page.items), *want, "list_tasks with labels {filter:?} (every label must match)");
    }
    let page = store
        .list_tasks(
            &TaskFilter { namespace: Some("other".into()), labels: labels(&[("team", "x")]), ..Default::default() },
            &PageRequest::first(100),
        )
        .await
        .must("list_tasks namespace+labels");
    assert!(page.items.is_empty(), "namespace and labels filters combine with AND");
}

/// Filtering by paused, alone and combined with namespace.
pub async fn list_tasks_filter_paused<S: Store>(store: S) {
    for ns in ["a", "b"] {
        for i in 0..4 {
            create_task(&store, ns, &format!("t{i}"), 0, Some(ts(10))).await;
        }
        store.set_paused(ns, "t1", true, None, ts(1)).await.must("pause t1");
        store.set_paused(ns, "t3", true, None, ts(1)).await.must("pause t3");
    }
    let list = |paused: Option<bool>, ns: Option<&str>| {
        let store = &store;
        let filter = TaskFilter { namespace: ns.map(str::to_string), paused, ..Default::default() };
        async move {
            let page = store.list_tasks(&filter, &PageRequest::first(100)).await.must(format_args!("{filter:?}"));
            let mut v: Vec<String> = page.items.iter().map(|t| t.key()).collect();
            v.sort();
            v
        }
    };
    assert_eq!(list(Some(true), None).await, vec!["a/t1", "a/t3", "b/t1", "b/t3"], "paused=true");
    assert_eq!(list(Some(false), None).await, vec!["a/t0", "a/t2", "b/t0", "b/t2"], "paused=false");
    assert_eq!(list(None, None).await.len(), 8, "paused=None lists all");
    assert_eq!(list(Some(true), Some("b")).await, vec!["b/t1", "b/t3"], "paused=true in namespace b");
}

/// Keyset pagination honours filters on every page.
pub async fn list_tasks_filtered_pagination<S: Store>(store: S) {
    let mut want = BTreeSet::new();
    for i in 0..60 {
        let mut w = task_write(if i % 2 == 0 { "even" } else { "odd" }, &format!("t{i:02}"), 0, None);
        if i % 3 == 0 {
            w.labels = labels(&[("fizz", "yes")]);
        }
        let t = store.put_task(w, Precondition::MustNotExist, t0()).await.must("put_task");
        if i % 2 == 0 && i % 3 == 0 {
            want.insert(t.id);
        }
    }
    let filter = TaskFilter { namespace: Some("even".into()), labels: labels(&[("fizz", "yes")]), paused: None };
    let pages = all_tasks(&store, &filter, 3, "list_tasks even+fizz limit 3").await;
    let seq: Vec<i64> = pages.iter().flatten().map(|t| t.id).collect();
    assert_eq!(seq.len(), want.len(), "filtered pagination yields each match once: {seq:?}");
    assert_eq!(seq.iter().copied().collect::<BTreeSet<_>>(), want, "filtered pagination yields exactly the matches");
    assert_eq!(pages.len(), 4, "10 matches in pages of 3: 3+3+3+1");
}

/// A malformed cursor is `InvalidArgument`.
pub async fn list_tasks_malformed_cursor<S: Store>(store: S) {
    create_task(&store, "ns", "t", 0, None).await;
    for bad in ["definitely not a cursor", "%%%", "i-not-a-number", "🚀"] {
        assert_err!(
            store.list_tasks(&TaskFilter::default(), &PageRequest::after(bad, 10)).await,
            StoreError::InvalidArgument { .. },
            "list_tasks with malformed cursor {bad:?}"
        );
    }
}

/// `limit` 0 means 100; limits above `MAX_PAGE_SIZE` are clamped to it.
pub async fn list_tasks_page_limits<S: Store>(store: S) {
    let total = MAX_PAGE_SIZE as usize + 5;
    let store_ref = &store;
    let created: Vec<i64> = futures::stream::iter(0..total)
        .map(|i| async move { create_task(store_ref, "ns", &format!("t{i:04}"), 0, None).await.id })
        .buffer_unordered(8)
        .collect()
        .await;
    assert_eq!(created.len(), total);

    let default = store.list_tasks(&TaskFilter::default(), &PageRequest::first(0)).await.must("list_tasks limit 0");
    assert_eq!(default.items.len(), 100, "limit 0 means the default of 100");
    assert!(default.next_cursor.is_some(), "more remain after the default page");

    let big = store.list_tasks(&TaskFilter::default(), &PageRequest::first(50_000)).await.must("list_tasks 50000");
    assert_eq!(big.items.len(), MAX_PAGE_SIZE as usize, "a limit above MAX_PAGE_SIZE is clamped to it");
    let cursor = big.next_cursor.expect("more remain after a clamped page");
    let rest = store.list_tasks(&TaskFilter::default(), &PageRequest::after(cursor, u32::MAX)).await.must("rest");
    assert_eq!(rest.items.len(), 5, "the remaining tasks");
    assert_eq!(rest.next_cursor, None, "the last page has no cursor");
    let all: BTreeSet<i64> = big.items.iter().chain(&rest.items).map(|t| t.id).collect();
    assert_eq!(all, created.into_iter().collect::<BTreeSet<_>>(), "clamped pages cover every task once");

    let one = store.list_tasks(&TaskFilter::default(), &PageRequest::first(1)).await.must("list_tasks limit 1");
    assert_eq!(one.items.len(), 1, "limit 1");
}

/// A cursor stays valid when the task it points at is deleted (keyset pagination, not a lookup of that row).
pub async fn list_tasks_cursor_survives_deletion<S: Store>(store: S) {
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(create_task(&store, "ns", &format!("t{i:02}"), 0, None).await.id);
    }
    let first = store.list_tasks(&TaskFilter::default(), &PageRequest::first(10)).await.must("first page");
    let cursor = first.next_cursor.clone().expect("more pages");
    let last = first.items.last().expect("non-empty").clone();
    assert!(store.delete_task(&last.namespace, &last.name).await.must("delete the cursor's task"));
    let victim = store.list_tasks(&TaskFilter::default(), &PageRequest::after(cursor.clone(), 1)).await.must("peek");
    let victim = victim.items[0].clone();
    assert!(store.delete_task(&victim.namespace, &victim.name).await.must("delete the next task"));
    let mut seen: Vec<i64> = first.items.iter().map(|t| t.id).collect();
    let rest = collect_pages("list_tasks after deleting the cursor's task", 10, |mut p| {
        let store = &store;
        if p.cursor.is_none() {
            p.cursor = Some(cursor.clone());
        }
        async move { store.list_tasks(&TaskFilter::default(), &p).await }
    })
    .await;
    seen.extend(rest.concat().iter().map(|t| t.id));
    let unique: BTreeSet<i64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "no task visited twice");
    assert_eq!(seen.len(), 29, "every task but the one deleted ahead of the cursor is visited");
    assert!(!seen.contains(&victim.id), "a task deleted ahead of the cursor is not listed");
}
