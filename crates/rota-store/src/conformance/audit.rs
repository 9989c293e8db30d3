//! The audit log: append, newest-first listing, filters, pagination.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::support::*;
use crate::{AuditEntry, AuditFilter, NewAuditEntry, PageRequest, Store, StoreError};

fn entry(at: DateTime<Utc>, actor: &str, action: &str, resource: &str) -> NewAuditEntry {
    NewAuditEntry {
        at,
        actor: actor.into(),
        action: action.into(),
        resource: resource.into(),
        source: Some("10.0.0.1:5555".into()),
        detail: json!({"resource": resource}),
    }
}

async fn list_all<S: Store>(store: &S, filter: &AuditFilter, limit: u32) -> Vec<AuditEntry> {
    collect_pages("list_audit", limit, |p| async move { store.list_audit(filter, &p).await }).await.concat()
}

/// Appending returns the stored entry; listing is newest first.
pub async fn audit_append_and_list<S: Store>(store: S) {
    let mut e1 = entry(ts(0), "token:abc", "task.put", "task/billing/nightly");
    e1.detail = json!({"version": 3, "diff": {"schedule": ["*/5 * * * *", "0 * * * *"]}, "note": "ünï 🚀"});
    let a1 = store.append_audit(e1.clone()).await.must("append_audit");
    assert_eq!(
        (a1.at, &a1.actor, &a1.action, &a1.resource, &a1.source, &a1.detail),
        (e1.at, &e1.actor, &e1.action, &e1.resource, &e1.source, &e1.detail),
        "append_audit returns the entry as written"
    );
    let mut e2 = entry(ts(1), "system", "run.cancel", "run/42");
    e2.source = None;
    e2.detail = json!(null);
    let a2 = store.append_audit(e2.clone()).await.must("append_audit without source");
    assert_eq!(a2.source, None, "source None round-trips");
    assert_eq!(a2.detail, json!(null), "null detail round-trips");
    assert_ne!(a1.id, a2.id);
    let listed = store.list_audit(&AuditFilter::default(), &PageRequest::first(10)).await.must("list_audit");
    assert_eq!(listed.items, vec![a2, a1], "newest first, full entries");
    assert_eq!(listed.next_cursor, None);
}

/// Filters: actor, action, resource prefix (literal, not a pattern) and time range, combined with AND.
pub async fn audit_filters<S: Store>(store: S) {
    let specs = [
        (0, "alice", "task.put", "task/billing/nightly"),
        (10, "bob", "task.put", "task/billing/weekly"),
        (20, "alice", "task.delete", "task/marketing/daily"),
        (30, "system", "run.cancel", "run/42"),
        (40, "alice", "run.cancel", "run/420"),
        (50, "bob", "task.put", "task/a_b/x"),
        (60, "bob", "task.put", "task/aXb/x"),
        (70, "carol", "task.put", "task/100%/x"),
        (80, "carol", "task.put", "task/100x/x"),
        (90, "alice", "task.put", "TASK/billing/upper"),
    ];
    let mut all = Vec::new();
    for (at, actor, action, resource) in specs {
        all.push(store.append_audit(entry(ts(at), actor, action, resource)).await.must("append_audit"));
    }
    let check = |filter: AuditFilter, pred: &dyn Fn(&AuditEntry) -> bool, what: &'static str| {
        let mut want: Vec<AuditEntry> = all.iter().filter(|e| pred(e)).cloned().collect();
        want.reverse();
        let store = &store;
        async move {
            let got = list_all(store, &filter, 100).await;
            assert_eq!(
                got.iter().map(|e| e.resource.as_str()).collect::<Vec<_>>(),
                want.iter().map(|e| e.resource.as_str()).collect::<Vec<_>>(),
                "list_audit {what} ({filter:?}), newest first"
            );
            assert_eq!(got, want, "list_audit {what}: entries");
        }
    };
    check(AuditFilter { actor: Some("alice".into()), ..Default::default() }, &|e| e.actor == "alice", "actor").await;
    check(
        AuditFilter { action: Some("run.cancel".into()), ..Default::default() },
        &|e| e.action == "run.cancel",
        "action",
    )
    .await;
    check(
        AuditFilter { resource_prefix: Some("task/billing/".into()), ..Default::default() },
        &|e| e.resource.starts_with("task/billing/"),
        "resource_prefix",
    )
    .await;
    check(
        AuditFilter { resource_prefix: Some("run/42".into()), ..Default::default() },
        &|e| e.resource.starts_with("run/42"),
        "resource_prefix is a prefix (run/42 matches run/420)",
    )
    .await;
    check(
        AuditFilter { resource_prefix: Some("task/a_b".into()), ..Default::default() },
        &|e| e.resource == "task/a_b/x",
        "resource_prefix is literal: `_` is not a wildcard",
    )
    .await;
    check(
        AuditFilter { resource_prefix: Some("task/100%".into()), ..Default::default() },
        &|e| e.resource == "task/100%/x",
        "resource_prefix is literal: `%` is not a wildcard",
    )
    .await;
    check(
        AuditFilter { resource_prefix: Some("task/billing".into()), ..Default::default() },
        &|e| e.resource.starts_with("task/billing"),
        "resource_prefix is case-sensitive",
    )
    .await;
    check(
        AuditFilter { from: Some(ts(15)), to: Some(ts(45)), ..Default::default() },
        &|e| e.at >= ts(15) && e.at < ts(45),
        "time range",
    )
    .await;
    check(AuditFilter { from: Some(ts(75)), ..Default::default() }, &|e| e.at >= ts(75), "from only").await;
    check(AuditFilter { to: Some(ts(5)), ..Default::default() }, &|e| e.at < ts(5), "to only").await;
    check(
        AuditFilter {
            actor: Some("bob".into()),
            action: Some("task.put".into()),
            resource_prefix: Some("task/".into()),
            from: Some(ts(5)),
            to: Some(ts(55)),
        },
        &|e| e.actor == "bob" && e.action == "task.put" && e.at >= ts(5) && e.at < ts(55),
        "combined",
    )
    .await;
    check(AuditFilter { actor: Some("nobody".into()), ..Default::default() }, &|_| false, "no match").await;
}

/// Pagination: newest first, every entry once, malformed cursor rejected.
pub async fn audit_pagination<S: Store>(store: S) {
    let mut want = BTreeSet::new();
    for i in 0..130 {
        let actor = if i % 2 == 0 { "even" } else { "odd" };
        want.insert(
            store.append_audit(entry(ts(i), actor, "task.put", &format!("task/ns/t{i}"))).await.must("append").id,
        );
    }
    let pages = collect_pages("list_audit(limit 50)", 50, |p| {
        let store = &store;
        async move { store.list_audit(&AuditFilter::default(), &p).await }
    })
    .await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), vec![50, 50, 30], "page sizes");
    let all = pages.concat();
    assert!(all.windows(2).all(|w| w[0].at > w[1].at && w[0].id != w[1].id), "newest first across pages");
    assert_eq!(all.iter().map(|e| e.id).collect::<BTreeSet<_>>(), want, "every entry exactly once");
    let evens = list_all(&store, &AuditFilter { actor: Some("even".into()), ..Default::default() }, 7).await;
    assert_eq!(evens.len(), 65, "filtered pagination covers every match");
    assert!(evens.iter().all(|e| e.actor == "even"));
    let default = store.list_audit(&AuditFilter::default(), &PageRequest::first(0)).await.must("limit 0");
    assert_eq!(default.items.len(), 100, "limit 0 means 100");
    assert_err!(
        store.list_audit(&AuditFilter::default(), &PageRequest::after("garbage!", 10)).await,
        StoreError::InvalidArgument { .. },
        "list_audit with a malformed cursor"
    );
}
