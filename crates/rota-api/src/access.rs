//! Who may do what: API tokens, role bindings and the audit log.
//!
//! The `authorize` middleware lets any namespace admin reach the token and role-binding routes; the handlers
//! narrow it: a principal may only create, see and revoke tokens whose grants lie in namespaces it administers
//! (`*` grants and executor credentials: the cluster admin only), and bind roles in such namespaces.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use rota_store::{
    ApiTokenRecord, AuditEntry, AuditFilter, Grant, Role, RoleBinding, RoleBindingFilter, SubjectKind, TokenScope,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::auth::{Principal, issue_token};
use crate::error::{ApiError, ApiResult, ErrorBody, ErrorCode};
use crate::extract::{JsonBody, QueryParams};
use crate::{ApiState, page_request};

/// What a new token may do: exactly one of `grants` and `executor_service`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// A name to recognise the token by (1 to 255 characters).
    pub name: String,
    /// `namespace:role` entries (`billing:editor`, `*:viewer`); roles: viewer, operator, editor, admin.
    #[serde(default)]
    pub grants: Vec<String>,
    /// An executor node credential for this service instead of user grants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor_service: Option<String>,
    /// Lifetime, e.g. `720h`; default: no expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<String>,
}

/// A token (never its secret or hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    /// `user` or `executor`.
    pub kind: String,
    /// `namespace:role` entries of a user token.
    pub grants: Vec<String>,
    /// The service of an executor credential.
    pub executor_service: Option<String>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<ApiTokenRecord> for TokenView {
    fn from(t: ApiTokenRecord) -> Self {
        let (kind, grants, executor_service) = match t.scope {
            TokenScope::User { grants } => ("user", grants.iter().map(Grant::to_string).collect(), None),
            TokenScope::Executor { service } => ("executor", Vec::new(), Some(service)),
        };
        TokenView {
            id: t.id,
            name: t.name,
            kind: kind.into(),
            grants,
            executor_service,
            created_at: t.created_at,
            created_by: t.created_by,
            expires_at: t.expires_at,
            revoked_at: t.revoked_at,
        }
    }
}

/// The answer to a token creation: the only time the token text is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    /// `rota_<id>_<secret>`: send it as `Authorization: Bearer <token>`. Not retrievable later.
    pub token: String,
    pub info: TokenView,
}

/// One page of tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenList {
    /// The tokens the caller may manage (a page may hold fewer than `limit` for a namespace admin).
    pub items: Vec<TokenView>,
    pub next_cursor: Option<String>,
}

/// Body of `PUT /api/v1/role-bindings/{namespace}/{kind}/{subject}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleBindingRequest {
    /// viewer, operator, editor or admin.
    pub role: String,
}

/// A role bound to an OIDC subject or group in a namespace (`*`: cluster-wide).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RoleBindingView {
    /// `subject` (the `sub` claim) or `group` (from the configured groups claim).
    pub kind: String,
    pub subject: String,
    pub namespace: String,
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
}

impl From<RoleBinding> for RoleBindingView {
    fn from(b: RoleBinding) -> Self {
        RoleBindingView {
            kind: b.kind.as_str().into(),
            subject: b.subject,
            namespace: b.namespace,
            role: b.role.as_str().into(),
            created_at: b.created_at,
            created_by: b.created_by,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RoleBindingList {
    pub items: Vec<RoleBindingView>,
}

/// One audit log entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntryView {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// Who: `token:<id>`, `oidc:<subject>`, `anonymous` (a request without valid credentials), `system`.
    pub actor: String,
    /// What: the operation id of the route (`put_task`, `cancel_run`, …).
    pub action: String,
    /// On what: the request path.
    pub resource: String,
    /// From where: the client's address, when known.
    pub source: Option<String>,
    /// `outcome` (`ok` or `denied`), `status`, `method`, and for denials `reason`.
    #[schema(value_type = Object)]
    pub detail: Value,
}

impl From<AuditEntry> for AuditEntryView {
    fn from(e: AuditEntry) -> Self {
        AuditEntryView {
            id: e.id,
            at: e.at,
            actor: e.actor,
            action: e.action,
            resource: e.resource,
            source: e.source,
            detail: e.detail,
        }
    }
}

/// One page of the audit log, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditList {
    pub items: Vec<AuditEntryView>,
    pub next_cursor: Option<String>,
}

fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::Forbidden, message)
}

/// Whether `principal` may manage a token of this scope: admin of every namespace it grants; `*` grants and
/// executor credentials need the cluster admin.
fn may_manage(principal: &Principal, scope: &TokenScope) -> bool {
    match scope {
        TokenScope::Executor { .. } => principal.is_cluster_admin(),
        TokenScope::User { grants } if grants.is_empty() => principal.is_cluster_admin(),
        TokenScope::User { grants } => grants.iter().all(|g| principal.has_role(&g.namespace, Role::Admin)),
    }
}

fn check_name(field: &str, value: &str) -> ApiResult<()> {
    if value.trim().is_empty() || value.chars().count() > 255 || value.chars().any(char::is_control) {
        return Err(ApiError::invalid_argument(field, "must be 1 to 255 characters, without control characters"));
    }
    Ok(())
}

/// Create an API token; the answer holds the token text, shown only this once.
#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    tag = "access",
    operation_id = "create_token",
    request_body(content = CreateTokenRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Created; `token` is shown only in this answer", body = CreatedToken),
        (status = 400, description = "Invalid request (the details name the field)", body = ErrorBody),
        (status = 403, description = "A grant outside the namespaces the caller administers", body = ErrorBody),
    )
)]
pub async fn create_token(
    State(state): State<ApiState>,
    Extension(principal): Extension<Principal>,
    JsonBody(req): JsonBody<CreateTokenRequest>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    check_name("name", &req.name)?;
    let scope = match (&req.executor_service, req.grants.is_empty()) {
        (Some(_), false) => {
            return Err(ApiError::invalid_argument("executor_service", "give either grants or executor_service"));
        }
        (None, true) => return Err(ApiError::invalid_argument("grants", "give at least one namespace:role grant")),
        (Some(service), true) => {
            check_name("executor_service", service)?;
            TokenScope::Executor { service: service.clone() }
        }
        (None, false) => {
            let mut grants = Vec::new();
            for (i, g) in req.grants.iter().enumerate() {
                let grant: Grant = g.parse().map_err(|e: rota_store::StoreError| {
                    ApiError::invalid_argument(
                        format!("grants[{i}]"),
                        e.to_string().trim_start_matches("invalid grant: "),
                    )
                })?;
                check_name(&format!("grants[{i}]"), &grant.namespace)?;
                grants.push(grant);
            }
            grants.sort();
            grants.dedup();
            TokenScope::User { grants }
        }
    };
    if !may_manage(&principal, &scope) {
        return Err(forbidden(match &scope {
            TokenScope::Executor { .. } => "executor credentials can only be created by the cluster admin (*:admin)",
            TokenScope::User { .. } => {
                "a token may only grant roles in namespaces the caller administers (*: the cluster admin)"
            }
        }));
    }
    let now = Utc::now();
    let expires_at = match &req.expires_in {
        None => None,
        Some(s) => {
            let d: rota_spec::Duration =
                s.parse().map_err(|e| ApiError::invalid_argument("expires_in", format!("{e}")))?;
            let d = chrono::Duration::from_std(d.as_std())
                .map_err(|_| ApiError::invalid_argument("expires_in", "too long"))?;
            Some(now.checked_add_signed(d).ok_or_else(|| ApiError::invalid_argument("expires_in", "too long"))?)
        }
    };
    let issued = issue_token(&*state.store, req.name.trim(), scope, &principal.id, expires_at, now).await?;
    Ok((StatusCode::CREATED, Json(CreatedToken { token: issued.token, info: issued.record.into() })))
}

/// List the API tokens the caller may manage (never their secrets).
#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    tag = "access",
    operation_id = "list_tokens",
    params(
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
        ("limit" = Option<u32>, Query, description = "Page size, 1..=1000 (default 100)"),
    ),
    responses((status = 200, description = "Tokens by id", body = TokenList))
)]
pub async fn list_tokens(
    State(state): State<ApiState>,
    Extension(principal): Extension<Principal>,
    mut q: QueryParams,
) -> ApiResult<Json<TokenList>> {
    let page = page_request(&mut q)?;
    q.finish()?;
    let page = state.store.list_tokens(&page).await?;
    Ok(Json(TokenList {
        items: page.items.into_iter().filter(|t| may_manage(&principal, &t.scope)).map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Revoke an API token (at once, on every node).
#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{id}",
    tag = "access",
    operation_id = "revoke_token",
    params(("id" = String, Path, description = "Token id (the part after `rota_`, before the next `_`)")),
    responses(
        (status = 200, description = "Revoked", body = TokenView),
        (status = 404, description = "No such token the caller may manage", body = ErrorBody),
    )
)]
pub async fn revoke_token(
    State(state): State<ApiState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<TokenView>> {
    match state.store.get_token(&id).await? {
        Some(t) if may_manage(&principal, &t.scope) => {}
        _ => return Err(ApiError::not_found(format!("token {id}"))),
    }
    Ok(Json(state.store.revoke_token(&id, Utc::now()).await?.into()))
}

fn parse_kind(kind: &str) -> ApiResult<SubjectKind> {
    kind.parse().map_err(|_| ApiError::invalid_argument("kind", format!("expected subject or group, got {kind:?}")))
}

/// List role bindings (of one namespace, or all with a cluster-wide admin grant).
#[utoipa::path(
    get,
    path = "/api/v1/role-bindings",
    tag = "access",
    operation_id = "list_role_bindings",
    params(
        ("namespace" = Option<String>, Query, description = "Only bindings of this namespace (`*`: cluster-wide ones); required unless the caller is the cluster admin"),
        ("kind" = Option<String>, Query, description = "`subject` or `group`"),
        ("subject" = Option<String>, Query, description = "Only bindings of this subject or group"),
    ),
    responses((status = 200, description = "Bindings by kind, subject, namespace", body = RoleBindingList))
)]
pub async fn list_role_bindings(State(state): State<ApiState>, mut q: QueryParams) -> ApiResult<Json<RoleBindingList>> {
    let namespace = q.take("namespace")?;
    let kind = q.take("kind")?.map(|k| parse_kind(&k)).transpose()?;
    let subject = q.take("subject")?;
    q.finish()?;
    let items = state.store.list_role_bindings(&RoleBindingFilter { kind, subject, namespace }).await?;
    Ok(Json(RoleBindingList { items: items.into_iter().map(Into::into).collect() }))
}

/// Bind a role to an OIDC subject or group in a namespace (`*`: cluster-wide); replaces an existing binding.
#[utoipa::path(
    put,
    path = "/api/v1/role-bindings/{namespace}/{kind}/{subject}",
    tag = "access",
    operation_id = "put_role_binding",
    params(
        ("namespace" = String, Path, description = "Namespace, or `*` for a cluster-wide binding"),
        ("kind" = String, Path, description = "`subject` or `group`"),
        ("subject" = String, Path, description = "The subject (`sub` claim) or group name"),
    ),
    request_body(content = RoleBindingRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The binding", body = RoleBindingView),
        (status = 400, description = "Invalid kind or role", body = ErrorBody),
    )
)]
pub async fn put_role_binding(
    State(state): State<ApiState>,
    Extension(principal): Extension<Principal>,
    Path((namespace, kind, subject)): Path<(String, String, String)>,
    JsonBody(req): JsonBody<RoleBindingRequest>,
) -> ApiResult<Json<RoleBindingView>> {
    let kind = parse_kind(&kind)?;
    check_name("subject", &subject)?;
    check_name("namespace", &namespace)?;
    let role: Role = req.role.parse().map_err(|_| {
        ApiError::invalid_argument("role", format!("expected viewer, operator, editor or admin, got {:?}", req.role))
    })?;
    let binding = RoleBinding { kind, subject, namespace, role, created_at: Utc::now(), created_by: principal.id };
    Ok(Json(state.store.put_role_binding(binding).await?.into()))
}

/// Remove a role binding.
#[utoipa::path(
    delete,
    path = "/api/v1/role-bindings/{namespace}/{kind}/{subject}",
    tag = "access",
    operation_id = "delete_role_binding",
    params(
        ("namespace" = String, Path, description = "Namespace, or `*`"),
        ("kind" = String, Path, description = "`subject` or `group`"),
        ("subject" = String, Path, description = "The subject or group"),
    ),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such binding", body = ErrorBody),
    )
)]
pub async fn delete_role_binding(
    State(state): State<ApiState>,
    Path((namespace, kind, subject)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    let kind = parse_kind(&kind)?;
    if state.store.delete_role_binding(kind, &subject, &namespace).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("role binding of {} {subject:?} in {namespace:?}", kind.as_str())))
    }
}

fn parse_instant(q: &mut QueryParams, name: &str) -> ApiResult<Option<DateTime<Utc>>> {
    match q.take(name)? {
        None => Ok(None),
        Some(s) => DateTime::parse_from_rfc3339(&s)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|e| ApiError::invalid_argument(name, format!("expected an RFC 3339 instant, got {s:?} ({e})"))),
    }
}

/// Read the audit log, newest first: every successful mutation and every denied request (cluster admin only).
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "access",
    operation_id = "list_audit",
    params(
        ("actor" = Option<String>, Query, description = "Only entries of this actor (`token:<id>`, `oidc:<sub>`, `anonymous`)"),
        ("action" = Option<String>, Query, description = "Only entries of this operation id (`put_task`, …)"),
        ("resource" = Option<String>, Query, description = "Only entries whose path starts with this prefix"),
        ("from" = Option<String>, Query, description = "Only entries at or after this RFC 3339 instant"),
        ("to" = Option<String>, Query, description = "Only entries before this RFC 3339 instant"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
        ("limit" = Option<u32>, Query, description = "Page size, 1..=1000 (default 100)"),
    ),
    responses(
        (status = 200, description = "One page of entries", body = AuditList),
        (status = 400, description = "Invalid query parameter", body = ErrorBody),
    )
)]
pub async fn list_audit(State(state): State<ApiState>, mut q: QueryParams) -> ApiResult<Json<AuditList>> {
    let filter = AuditFilter {
        actor: q.take("actor")?,
        action: q.take("action")?,
        resource_prefix: q.take("resource")?,
        from: parse_instant(&mut q, "from")?,
        to: parse_instant(&mut q, "to")?,
    };
    let page = page_request(&mut q)?;
    q.finish()?;
    let page = state.store.list_audit(&filter, &page).await?;
    Ok(Json(AuditList { items: page.items.into_iter().map(Into::into).collect(), next_cursor: page.next_cursor }))
}
