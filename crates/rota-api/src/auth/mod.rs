//! Authentication and authorization of the management API.
//!
//! Every route passes one middleware (`routes::authorize`), which knows the route's [`Permission`]. For every
//! non-[`Public`](Permission::Public) route it
//!
//! 1. refuses clients that failed to authenticate too often ([`FailureLimiter`], `429 rate_limited`);
//! 2. asks the [`Authenticator`] who the caller is (a [`Principal`]); no, malformed, unknown, expired or revoked
//!    credentials are `401 unauthenticated`;
//! 3. works out what the request touches (an [`AccessRequest`]: the namespace from the path, the run or the
//!    `namespace` query parameter; the executor service from the registration, the node or the run's current
//!    attempt) and asks the [`Authorizer`]; a role too weak is `403 forbidden`;
//! 4. appends successful mutations and denied requests to the audit log.
//!
//! Both traits are public and Rota's defaults implement them as a user's implementation would:
//! [`TokenAuthenticator`] (Rota's own API tokens, `rota_<id>_<secret>`) and [`OidcAuthenticator`] (bearer JWTs of
//! an OIDC issuer) are combined in an [`AuthChain`]; [`RolePolicy`] (roles per namespace) is the default
//! authorizer, and a user can plug in their own policy service. Both are set on [`Auth`] in
//! [`ApiState`](crate::ApiState).

mod limit;
pub mod oidc;
pub mod token;

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
pub use limit::{FailureLimit, FailureLimiter};
pub use oidc::{OidcAuthenticator, OidcConfig};
use rota_store::{ALL_NAMESPACES, Grant, Role, Store, TokenScope};
pub use token::{IssuedToken, TokenAuthenticator, hash_secret, issue_token, parse_token};

use crate::routes::Permission;

/// Who is calling: the identity an [`Authenticator`] established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Stable identifier recorded in the audit log: `token:<id>` for API tokens, `oidc:<subject>` for OIDC.
    pub id: String,
    /// A human-readable name (the token's name, the user's name or e-mail).
    pub name: String,
    /// What the principal may do: user grants, or an executor credential of one service.
    pub scope: TokenScope,
}

impl Principal {
    /// The grants of a user principal (none for an executor credential).
    pub fn grants(&self) -> &[Grant] {
        match &self.scope {
            TokenScope::User { grants } => grants,
            TokenScope::Executor { .. } => &[],
        }
    }

    /// Whether the principal holds `role` (or more) in `namespace`, directly or through a `*` grant.
    pub fn has_role(&self, namespace: &str, role: Role) -> bool {
        self.grants().iter().any(|g| (g.is_cluster_wide() || g.namespace == namespace) && g.role >= role)
    }

    /// Whether the principal holds `role` (or more) cluster-wide (a `*` grant).
    pub fn has_cluster_role(&self, role: Role) -> bool {
        self.grants().iter().any(|g| g.is_cluster_wide() && g.role >= role)
    }

    /// `*:admin`.
    pub fn is_cluster_admin(&self) -> bool {
        self.has_cluster_role(Role::Admin)
    }
}

/// The credentials of a request, as the authenticators see them.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    /// The value after `Authorization: Bearer `, when there is one.
    pub bearer: Option<&'a str>,
    /// Every request header (for schemes other than bearer tokens).
    pub headers: &'a HeaderMap,
}

impl<'a> Credentials<'a> {
    /// Reads the bearer token of `headers`. A malformed `Authorization` header is an error.
    pub fn from_headers(headers: &'a HeaderMap) -> Result<Credentials<'a>, AuthError> {
        let bearer = match headers.get(AUTHORIZATION) {
            None => None,
            Some(v) => {
                let v = v.to_str().map_err(|_| AuthError::unauthenticated("the Authorization header is not ASCII"))?;
                let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
                if !scheme.eq_ignore_ascii_case("bearer") || rest.trim().is_empty() {
                    return Err(AuthError::unauthenticated(
                        "the Authorization header must be `Bearer <token>` (an API token or an OIDC ID/access token)",
                    ));
                }
                Some(rest.trim())
            }
        };
        Ok(Credentials { bearer, headers })
    }
}

/// Why authentication failed. Messages never contain the credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Missing, malformed, unknown, expired or revoked credentials (`401 unauthenticated`).
    #[error("{0}")]
    Unauthenticated(String),
    /// The authenticator could not decide (store or issuer unreachable; `503 unavailable`).
    #[error("{0}")]
    Unavailable(String),
}

impl AuthError {
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        AuthError::Unauthenticated(message.into())
    }
}

/// Establishes who a request comes from.
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// `Ok(Some(principal))` for valid credentials of this authenticator; `Ok(None)` when the credentials are not
    /// of its kind (an [`AuthChain`] then asks the next one); `Err` when they are of its kind but invalid.
    async fn authenticate(&self, credentials: &Credentials<'_>) -> Result<Option<Principal>, AuthError>;
}

/// Asks authenticators in order; the first that recognises the credentials decides.
#[derive(Clone, Default)]
pub struct AuthChain {
    links: Vec<Arc<dyn Authenticator>>,
}

impl AuthChain {
    pub fn new() -> Self {
        AuthChain::default()
    }

    /// Appends an authenticator.
    pub fn with(mut self, authenticator: Arc<dyn Authenticator>) -> Self {
        self.links.push(authenticator);
        self
    }
}

impl fmt::Debug for AuthChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthChain").field("links", &self.links.len()).finish()
    }
}

#[async_trait]
impl Authenticator for AuthChain {
    async fn authenticate(&self, credentials: &Credentials<'_>) -> Result<Option<Principal>, AuthError> {
        for link in &self.links {
            if let Some(p) = link.authenticate(credentials).await? {
                return Ok(Some(p));
            }
        }
        Ok(None)
    }
}

/// What a request touches, as far as authorization is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One namespace (a task route, a run of a task in it, a list filtered by `namespace=`).
    Namespace(String),
    /// The whole cluster (lists across namespaces, the cluster view, executor list, audit log): only `*` grants
    /// count.
    Cluster,
    /// Some namespace, decided by the handler (tokens and role bindings: a namespace admin manages those of its
    /// namespaces).
    AnyNamespace,
    /// The executor endpoints.
    Executor(ExecutorTarget),
}

/// The services an executor request concerns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecutorTarget {
    /// Namespace of the run (report and log routes).
    pub namespace: Option<String>,
    /// An executor credential of one of these services may make the request: the registration's service; the
    /// service the node is registered under; for a report naming a node, that node's service; otherwise the
    /// services of the nodes of the run's current attempt.
    pub services: BTreeSet<String>,
    /// Nothing to check the credential's service against: the addressed node is not registered (the handler
    /// answers `404`, which tells a node to register again) or the registration names no service (the handler
    /// rejects it).
    pub unresolved: bool,
}

/// One authorization question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRequest {
    pub permission: Permission,
    /// The route's OpenAPI `operationId`.
    pub operation_id: &'static str,
    pub method: String,
    pub path: String,
    pub target: Target,
}

/// The answer of an [`Authorizer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// `403 forbidden` with this message.
    Deny(String),
}

/// Decides whether a principal may make a request. The default is [`RolePolicy`]; a user's policy service
/// implements this trait.
#[async_trait]
pub trait Authorizer: Send + Sync + 'static {
    async fn authorize(&self, principal: &Principal, request: &AccessRequest) -> Decision;
}

impl Permission {
    /// The role a user principal needs for this permission (in the target namespace, or cluster-wide).
    pub fn required_role(self) -> Role {
        match self {
            Permission::Public
            | Permission::TasksRead
            | Permission::RunsRead
            | Permission::ClusterRead
            | Permission::ExecutorReport
            | Permission::ExecutorRegister => Role::Viewer,
            Permission::TasksTrigger | Permission::TasksPause | Permission::RunsCancel => Role::Operator,
            Permission::TasksWrite => Role::Editor,
            Permission::TokensManage | Permission::RolesManage | Permission::AuditRead => Role::Admin,
        }
    }
}

/// The default policy: roles per namespace.
///
/// * User principals need [`Permission::required_role`] in the target namespace (a `*` grant counts
///   everywhere); [`Target::Cluster`] needs it cluster-wide; [`Target::AnyNamespace`] in some namespace.
/// * The executor endpoints take an executor credential of a service in the target's services (or an unknown
///   node or an unresolved target), or the cluster admin (`*:admin`).
/// * Executor credentials may call nothing else.
#[derive(Debug, Clone, Copy, Default)]
pub struct RolePolicy;

#[async_trait]
impl Authorizer for RolePolicy {
    async fn authorize(&self, principal: &Principal, request: &AccessRequest) -> Decision {
        let role = request.permission.required_role();
        match (&principal.scope, &request.target) {
            (TokenScope::Executor { service }, Target::Executor(t)) => {
                if t.unresolved || t.services.contains(service) {
                    Decision::Allow
                } else {
                    Decision::Deny(format!(
                        "this executor credential is scoped to service {service:?}; {} concerns {}",
                        request.operation_id,
                        describe_services(&t.services)
                    ))
                }
            }
            (TokenScope::Executor { .. }, _) => Decision::Deny(format!(
                "executor credentials may only call the executor endpoints, not {}",
                request.operation_id
            )),
            (TokenScope::User { .. }, Target::Executor(_)) => {
                if principal.is_cluster_admin() {
                    Decision::Allow
                } else {
                    Decision::Deny(format!(
                        "{} takes an executor credential of the node's service or the cluster admin (*:admin)",
                        request.operation_id
                    ))
                }
            }
            (TokenScope::User { .. }, Target::Namespace(ns)) => {
                if principal.has_role(ns, role) {
                    Decision::Allow
                } else {
                    Decision::Deny(format!("{} needs role {role} in namespace {ns:?}", request.operation_id))
                }
            }
            (TokenScope::User { .. }, Target::Cluster) => {
                if principal.has_cluster_role(role) {
                    Decision::Allow
                } else {
                    Decision::Deny(format!(
                        "{} needs a cluster-wide grant ({ALL_NAMESPACES}:{role})",
                        request.operation_id
                    ))
                }
            }
            (TokenScope::User { grants }, Target::AnyNamespace) => {
                if grants.iter().any(|g| g.role >= role) {
                    Decision::Allow
                } else {
                    Decision::Deny(format!("{} needs role {role} in some namespace", request.operation_id))
                }
            }
        }
    }
}

fn describe_services(services: &BTreeSet<String>) -> String {
    if services.is_empty() {
        "no node of a registered service".to_string()
    } else {
        let list: Vec<String> = services.iter().map(|s| format!("{s:?}")).collect();
        format!("service {}", list.join(", "))
    }
}

/// The authentication and authorization of an API: who the callers are, what they may do, and how often a
/// client may fail to authenticate.
#[derive(Clone)]
pub struct Auth {
    pub authenticator: Arc<dyn Authenticator>,
    pub authorizer: Arc<dyn Authorizer>,
    pub limiter: Arc<FailureLimiter>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth").finish_non_exhaustive()
    }
}

impl Auth {
    /// Rota's API tokens from `store`, the role policy, and the default failure limit.
    pub fn tokens(store: Arc<dyn Store>) -> Auth {
        Auth::new(Arc::new(AuthChain::new().with(Arc::new(TokenAuthenticator::new(store)))), Arc::new(RolePolicy))
    }

    pub fn new(authenticator: Arc<dyn Authenticator>, authorizer: Arc<dyn Authorizer>) -> Auth {
        Auth { authenticator, authorizer, limiter: Arc::new(FailureLimiter::new(FailureLimit::default())) }
    }

    pub fn with_limit(mut self, limit: FailureLimit) -> Auth {
        self.limiter = Arc::new(FailureLimiter::new(limit));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(grants: &[&str]) -> Principal {
        Principal {
            id: "token:t".into(),
            name: "t".into(),
            scope: TokenScope::User { grants: grants.iter().map(|g| g.parse().unwrap()).collect() },
        }
    }

    fn req(permission: Permission, target: Target) -> AccessRequest {
        AccessRequest { permission, operation_id: "op", method: "GET".into(), path: "/x".into(), target }
    }

    #[tokio::test]
    async fn roles_include_the_weaker_ones_and_star_is_everywhere() {
        let p = RolePolicy;
        let ns = |n: &str| Target::Namespace(n.into());
        let editor = user(&["billing:editor"]);
        assert_eq!(p.authorize(&editor, &req(Permission::TasksWrite, ns("billing"))).await, Decision::Allow);
        assert_eq!(p.authorize(&editor, &req(Permission::TasksRead, ns("billing"))).await, Decision::Allow);
        assert!(matches!(p.authorize(&editor, &req(Permission::TasksRead, ns("other"))).await, Decision::Deny(_)));
        assert!(matches!(p.authorize(&editor, &req(Permission::TokensManage, ns("billing"))).await, Decision::Deny(_)));
        assert!(matches!(p.authorize(&editor, &req(Permission::TasksRead, Target::Cluster)).await, Decision::Deny(_)));
        let viewer = user(&["*:viewer"]);
        assert_eq!(p.authorize(&viewer, &req(Permission::ClusterRead, Target::Cluster)).await, Decision::Allow);
        assert_eq!(p.authorize(&viewer, &req(Permission::RunsRead, ns("any"))).await, Decision::Allow);
        assert!(matches!(p.authorize(&viewer, &req(Permission::RunsCancel, ns("any"))).await, Decision::Deny(_)));
        let exec = Target::Executor(ExecutorTarget { services: ["svc".to_string()].into(), ..Default::default() });
        assert!(matches!(
            p.authorize(&viewer, &req(Permission::ExecutorReport, exec.clone())).await,
            Decision::Deny(_)
        ));
        let admin = user(&["*:admin"]);
        assert_eq!(p.authorize(&admin, &req(Permission::ExecutorReport, exec.clone())).await, Decision::Allow);
        let node = |s: &str| Principal {
            id: "token:e".into(),
            name: "e".into(),
            scope: TokenScope::Executor { service: s.into() },
        };
        assert_eq!(p.authorize(&node("svc"), &req(Permission::ExecutorReport, exec.clone())).await, Decision::Allow);
        assert!(matches!(p.authorize(&node("other"), &req(Permission::ExecutorReport, exec)).await, Decision::Deny(_)));
        assert!(matches!(p.authorize(&node("svc"), &req(Permission::TasksRead, ns("a"))).await, Decision::Deny(_)));
    }
}
