//! API tokens and role bindings: create, look up, revoke, list; bindings upserted, filtered and deleted.

use std::collections::BTreeSet;

use super::support::*;
use crate::{
    ALL_NAMESPACES, ApiTokenRecord, Grant, NewApiToken, PageRequest, Role, RoleBinding, RoleBindingFilter, Store,
    StoreError, SubjectKind, TokenScope,
};

fn token(id: &str, scope: TokenScope) -> NewApiToken {
    NewApiToken {
        id: id.into(),
        name: format!("token {id} ünï"),
        secret_hash: format!("{:0>64}", id),
        scope,
        created_at: ts(0),
        created_by: "system".into(),
        expires_at: None,
    }
}

fn user(grants: &[(&str, Role)]) -> TokenScope {
    TokenScope::User { grants: grants.iter().map(|(ns, r)| Grant::new(*ns, *r)).collect() }
}

/// A token round-trips (every field, both scope kinds); a duplicate id is a conflict.
pub async fn auth_token_create_and_get<S: Store>(store: S) {
    let mut t = token("a1b2c3", user(&[(ALL_NAMESPACES, Role::Admin), ("billing", Role::Viewer)]));
    t.expires_at = Some(ts(3600));
    let created = store.create_token(t.clone()).await.must("create_token");
    let want = ApiTokenRecord {
        id: t.id.clone(),
        name: t.name.clone(),
        secret_hash: t.secret_hash.clone(),
        scope: t.scope.clone(),
        created_at: t.created_at,
        created_by: t.created_by.clone(),
        expires_at: t.expires_at,
        revoked_at: None,
    };
    assert_eq!(created, want, "create_token returns the token as stored");
    assert_eq!(store.get_token("a1b2c3").await.must("get_token"), Some(want), "get_token");
    assert_eq!(store.get_token("zzz").await.must("get_token unknown"), None, "get_token of an unknown id");
    let exec = store
        .create_token(token("e1", TokenScope::Executor { service: "billing-worker".into() }))
        .await
        .must("create executor token");
    assert_eq!(exec.scope, TokenScope::Executor { service: "billing-worker".into() });
    assert_eq!(exec.expires_at, None);
    assert_err!(
        store.create_token(token("a1b2c3", user(&[]))).await,
        StoreError::Conflict { .. },
        "create_token with an existing id"
    );
    assert_eq!(store.get_token("a1b2c3").await.must("get").map(|t| t.name), Some(created.name), "unchanged");
}

/// Revoking sets `revoked_at` once; unknown ids are `NotFound`.
pub async fn auth_token_revoke<S: Store>(store: S) {
    store.create_token(token("r1", user(&[("a", Role::Editor)]))).await.must("create_token");
    let revoked = store.revoke_token("r1", ts(10)).await.must("revoke_token");
    assert_eq!(revoked.revoked_at, Some(ts(10)), "revoked_at is the given instant");
    assert!(!revoked.is_usable(ts(11)));
    let again = store.revoke_token("r1", ts(20)).await.must("revoke_token again");
    assert_eq!(again.revoked_at, Some(ts(10)), "revoking again keeps the first revoked_at");
    assert_eq!(store.get_token("r1").await.must("get").and_then(|t| t.revoked_at), Some(ts(10)));
    assert_err!(store.revoke_token("nope", ts(30)).await, StoreError::NotFound { .. }, "revoke_token unknown");
}

/// Listing: by id, every token once across pages, malformed cursor rejected.
pub async fn auth_token_list<S: Store>(store: S) {
    let mut want = BTreeSet::new();
    for i in 0..25 {
        let id = format!("t{:03x}{}", (i * 7919) % 4096, i);
        store.create_token(token(&id, user(&[("ns", Role::Viewer)]))).await.must("create_token");
        want.insert(id);
    }
    let pages = collect_pages("list_tokens(limit 10)", 10, |p| {
        let store = &store;
        async move { store.list_tokens(&p).await }
    })
    .await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), vec![10, 10, 5], "page sizes");
    let ids: Vec<String> = pages.concat().into_iter().map(|t| t.id).collect();
    assert_eq!(ids, want.iter().cloned().collect::<Vec<_>>(), "every token once, ordered by id");
    assert_err!(
        store.list_tokens(&PageRequest::after("garbage!", 10)).await,
        StoreError::InvalidArgument { .. },
        "list_tokens with a malformed cursor"
    );
}

fn binding(kind: SubjectKind, subject: &str, namespace: &str, role: Role) -> RoleBinding {
    RoleBinding {
        kind,
        subject: subject.into(),
        namespace: namespace.into(),
        role,
        created_at: ts(0),
        created_by: "token:admin".into(),
    }
}

/// Role bindings: upsert by (kind, subject, namespace), filters, ordering, delete.
pub async fn auth_role_bindings<S: Store>(store: S) {
    use SubjectKind::*;
    let all = [
        binding(Group, "finance", "billing", Role::Editor),
        binding(Subject, "alice@example.com", "billing", Role::Viewer),
        binding(Subject, "alice@example.com", ALL_NAMESPACES, Role::Viewer),
        binding(Group, "sre", ALL_NAMESPACES, Role::Admin),
        binding(Subject, "bob", "marketing", Role::Operator),
    ];
    for b in &all {
        assert_eq!(&store.put_role_binding(b.clone()).await.must("put_role_binding"), b, "put returns the binding");
    }
    let listed = store.list_role_bindings(&RoleBindingFilter::default()).await.must("list_role_bindings");
    let mut want = all.to_vec();
    want.sort_by(|a, b| (a.kind, &a.subject, &a.namespace).cmp(&(b.kind, &b.subject, &b.namespace)));
    assert_eq!(listed, want, "every binding, ordered by (kind, subject, namespace)");

    let mut replaced = binding(Subject, "alice@example.com", "billing", Role::Admin);
    replaced.created_at = ts(5);
    store.put_role_binding(replaced.clone()).await.must("put_role_binding (replace)");
    let alice = store
        .list_role_bindings(&RoleBindingFilter {
            kind: Some(Subject),
            subject: Some("alice@example.com".into()),
            namespace: None,
        })
        .await
        .must("list by subject");
    assert_eq!(alice, vec![binding(Subject, "alice@example.com", ALL_NAMESPACES, Role::Viewer), replaced.clone()]);
    let billing = store
        .list_role_bindings(&RoleBindingFilter { namespace: Some("billing".into()), ..Default::default() })
        .await
        .must("list by namespace");
    assert_eq!(billing.len(), 2, "bindings of namespace billing: {billing:?}");
    let groups = store
        .list_role_bindings(&RoleBindingFilter { kind: Some(Group), ..Default::default() })
        .await
        .must("list groups");
    assert!(groups.iter().all(|b| b.kind == Group) && groups.len() == 2, "{groups:?}");

    assert!(store.delete_role_binding(Group, "sre", ALL_NAMESPACES).await.must("delete"), "deleted");
    assert!(!store.delete_role_binding(Group, "sre", ALL_NAMESPACES).await.must("delete again"), "already gone");
    assert!(!store.delete_role_binding(Subject, "sre", ALL_NAMESPACES).await.must("delete other kind"));
    let left = store.list_role_bindings(&RoleBindingFilter::default()).await.must("list");
    assert_eq!(left.len(), 4);
    assert!(!left.iter().any(|b| b.subject == "sre"));
}
