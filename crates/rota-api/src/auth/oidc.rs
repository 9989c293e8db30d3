//! Bearer JWTs of an OpenID Connect issuer, validated against its JWKS.
//!
//! A token is accepted when its header names an allowed algorithm (RS256, ES256; never `none` or an HMAC),
//! its `kid` is one of the issuer's keys and its signature verifies, and its claims have the configured `iss`
//! and `aud`, an `exp` in the future and no `nbf` in the future (60 s leeway for clock skew), and a `sub`.
//! The keys are fetched from `jwks-url`, or from the `jwks_uri` of `{issuer}/.well-known/openid-configuration`,
//! cached, refreshed hourly, and refetched when a token names an unknown `kid` (at most once per
//! `refetch-interval`, so unknown kids cannot make Rota hammer the issuer).
//!
//! The principal's grants are the entries of the `roles-claim` (`billing:editor`, `*:admin`; invalid entries
//! are ignored) plus the [role bindings](rota_store::RoleBinding) of its subject and of each of its groups (the
//! `groups-claim`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jsonwebtoken::jwk::{JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rota_store::{Grant, RoleBindingFilter, Store, SubjectKind, TokenScope};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{Mutex, RwLock};

use super::{AuthError, Authenticator, Credentials, Principal};

/// `[auth.oidc]`: the issuer whose tokens the API accepts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OidcConfig {
    /// The issuer (`iss` claim), e.g. `https://login.example.com/realms/ops`.
    pub issuer: String,
    /// The audience tokens must be issued for (`aud` claim), e.g. the client id of Rota.
    pub audience: String,
    /// Where the signing keys are; default: the `jwks_uri` of the issuer's discovery document.
    #[serde(default, alias = "jwks_url")]
    pub jwks_url: Option<String>,
    /// Claim holding `namespace:role` entries (a list of strings), e.g. `rota_roles`.
    #[serde(default, alias = "roles_claim")]
    pub roles_claim: Option<String>,
    /// Claim holding the user's groups (a list of strings), mapped to roles through role bindings.
    #[serde(default, alias = "groups_claim")]
    pub groups_claim: Option<String>,
    /// Least time between two refetches of the keys (default 30 s).
    #[serde(default, alias = "refetch_interval", with = "opt_duration")]
    pub refetch_interval: Option<Duration>,
}

mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| {
            s.parse::<rota_spec::Duration>().map(|d| d.as_std()).map_err(|e| serde::de::Error::custom(e.to_string()))
        })
        .transpose()
    }
}

impl OidcConfig {
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        OidcConfig {
            issuer: issuer.into(),
            audience: audience.into(),
            jwks_url: None,
            roles_claim: None,
            groups_claim: None,
            refetch_interval: None,
        }
    }
}

/// Algorithms accepted in a token header.
pub const ALLOWED_ALGORITHMS: [Algorithm; 2] = [Algorithm::RS256, Algorithm::ES256];

/// How long fetched keys are used before they are refreshed.
const KEYS_MAX_AGE: Duration = Duration::from_secs(3600);

struct Keys {
    by_kid: HashMap<String, (DecodingKey, Option<Algorithm>)>,
    fetched_at: Instant,
}

/// Validates bearer JWTs of one OIDC issuer. Claims every bearer token that looks like a JWT (three
/// dot-separated parts).
pub struct OidcAuthenticator {
    config: OidcConfig,
    store: Arc<dyn Store>,
    http: reqwest::Client,
    keys: RwLock<Option<Keys>>,
    /// Serialises fetches and remembers the last attempt (for the refetch interval).
    fetch: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for OidcAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcAuthenticator").field("config", &self.config).finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
struct Discovery {
    jwks_uri: String,
}

impl OidcAuthenticator {
    pub fn new(config: OidcConfig, store: Arc<dyn Store>) -> Result<Self, AuthError> {
        // https issuers: rustls on the ring provider (reqwest is built without a provider of its own).
        rota_tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| AuthError::Unavailable(format!("cannot build the HTTP client of the OIDC issuer: {e}")))?;
        Ok(OidcAuthenticator { config, store, http, keys: RwLock::new(None), fetch: Mutex::new(None) })
    }

    fn refetch_interval(&self) -> Duration {
        self.config.refetch_interval.unwrap_or(Duration::from_secs(30))
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, String> {
        let res = self.http.get(url).send().await.map_err(|e| format!("GET {url}: {e}"))?;
        if !res.status().is_success() {
            return Err(format!("GET {url}: HTTP {}", res.status()));
        }
        res.json::<T>().await.map_err(|e| format!("GET {url}: {e}"))
    }

    async fn fetch_keys(&self) -> Result<Keys, String> {
        let url = match &self.config.jwks_url {
            Some(u) => u.clone(),
            None => {
                let issuer = self.config.issuer.trim_end_matches('/');
                let d: Discovery = self.get_json(&format!("{issuer}/.well-known/openid-configuration")).await?;
                d.jwks_uri
            }
        };
        let set: JwkSet = self.get_json(&url).await?;
        let mut by_kid = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else { continue };
            let alg = jwk.common.key_algorithm.map(|a| match a {
                KeyAlgorithm::RS256 => Some(Algorithm::RS256),
                KeyAlgorithm::ES256 => Some(Algorithm::ES256),
                _ => None,
            });
            let Some(alg) = alg.unwrap_or(None).map(Some).or(jwk.common.key_algorithm.is_none().then_some(None)) else {
                continue;
            };
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => {
                    by_kid.insert(kid, (key, alg));
                }
                Err(e) => tracing::debug!(kid, error = %e, "skipping a JWKS key Rota cannot use"),
            }
        }
        Ok(Keys { by_kid, fetched_at: Instant::now() })
    }

    /// Refetches the keys unless another fetch happened within the refetch interval (or `force_stale` says the
    /// cache is too old anyway).
    async fn refresh(&self) -> Result<(), AuthError> {
        let mut last = self.fetch.lock().await;
        if let Some(at) = *last
            && at.elapsed() < self.refetch_interval()
        {
            let have = self.keys.read().await.is_some();
            return if have {
                Ok(())
            } else {
                Err(AuthError::Unavailable("the OIDC issuer's signing keys are not available; retry later".into()))
            };
        }
        *last = Some(Instant::now());
        match self.fetch_keys().await {
            Ok(keys) => {
                tracing::debug!(keys = keys.by_kid.len(), issuer = %self.config.issuer, "fetched the OIDC signing keys");
                *self.keys.write().await = Some(keys);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, issuer = %self.config.issuer, "cannot fetch the OIDC signing keys");
                if self.keys.read().await.is_some() {
                    Ok(())
                } else {
                    Err(AuthError::Unavailable("the OIDC issuer's signing keys are not available; retry later".into()))
                }
            }
        }
    }

    async fn key(&self, kid: &str) -> Result<Option<(DecodingKey, Option<Algorithm>)>, AuthError> {
        {
            let keys = self.keys.read().await;
            if let Some(k) = keys.as_ref()
                && k.fetched_at.elapsed() < KEYS_MAX_AGE
                && let Some(found) = k.by_kid.get(kid)
            {
                return Ok(Some(found.clone()));
            }
        }
        self.refresh().await?;
        Ok(self.keys.read().await.as_ref().and_then(|k| k.by_kid.get(kid).cloned()))
    }

    fn string_list(claims: &Value, name: &str) -> Vec<String> {
        match claims.get(name) {
            Some(Value::Array(items)) => items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
            Some(Value::String(s)) => s.split([' ', ',']).filter(|s| !s.is_empty()).map(str::to_string).collect(),
            _ => Vec::new(),
        }
    }
}

fn looks_like_jwt(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3
        && parts[..2].iter().all(|p| {
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'=')
        })
}

#[async_trait]
impl Authenticator for OidcAuthenticator {
    async fn authenticate(&self, credentials: &Credentials<'_>) -> Result<Option<Principal>, AuthError> {
        let Some(token) = credentials.bearer else { return Ok(None) };
        if !looks_like_jwt(token) {
            return Ok(None);
        }
        let invalid = |why: &str| AuthError::unauthenticated(format!("the bearer token is not valid: {why}"));
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| invalid("malformed JWT header, or an algorithm other than RS256 and ES256"))?;
        if !ALLOWED_ALGORITHMS.contains(&header.alg) {
            return Err(invalid(&format!("algorithm {:?} is not allowed (RS256, ES256)", header.alg)));
        }
        let kid = header.kid.ok_or_else(|| invalid("the JWT header has no kid"))?;
        let Some((key, key_alg)) = self.key(&kid).await? else {
            return Err(invalid("it is signed with a key the issuer does not publish (unknown kid)"));
        };
        if key_alg.is_some_and(|a| a != header.alg) {
            return Err(invalid("the algorithm does not match the key's"));
        }
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.leeway = 60;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[self.config.issuer.as_str()]);
        validation.set_audience(&[self.config.audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            invalid(match e.kind() {
                ErrorKind::ExpiredSignature => "it has expired",
                ErrorKind::ImmatureSignature => "it is not valid yet (nbf)",
                ErrorKind::InvalidIssuer => "wrong issuer",
                ErrorKind::InvalidAudience => "wrong audience",
                ErrorKind::InvalidSignature => "bad signature",
                ErrorKind::MissingRequiredClaim(_) => "a required claim (exp, iss, aud, sub) is missing",
                _ => "it cannot be verified",
            })
        })?;
        let claims = data.claims;
        let sub = claims.get("sub").and_then(Value::as_str).filter(|s| !s.is_empty());
        let sub = sub.ok_or_else(|| invalid("the sub claim is empty"))?.to_string();
        let mut grants: Vec<Grant> = Vec::new();
        if let Some(claim) = &self.config.roles_claim {
            for entry in Self::string_list(&claims, claim) {
                match entry.parse::<Grant>() {
                    Ok(g) => grants.push(g),
                    Err(_) => tracing::debug!(claim, "ignoring a roles-claim entry that is not namespace:role"),
                }
            }
        }
        let mut subjects = vec![(SubjectKind::Subject, sub.clone())];
        if let Some(claim) = &self.config.groups_claim {
            subjects.extend(Self::string_list(&claims, claim).into_iter().map(|g| (SubjectKind::Group, g)));
        }
        for (kind, subject) in subjects {
            let filter = RoleBindingFilter { kind: Some(kind), subject: Some(subject), namespace: None };
            match self.store.list_role_bindings(&filter).await {
                Ok(bindings) => grants.extend(bindings.into_iter().map(|b| Grant::new(b.namespace, b.role))),
                Err(e) => {
                    tracing::error!(error = %e, "cannot read role bindings");
                    return Err(AuthError::Unavailable("the store is unavailable; retry later".into()));
                }
            }
        }
        grants.sort();
        grants.dedup();
        let name = ["email", "preferred_username", "name"]
            .iter()
            .find_map(|c| claims.get(*c).and_then(Value::as_str))
            .unwrap_or(&sub)
            .to_string();
        Ok(Some(Principal { id: format!("oidc:{sub}"), name, scope: TokenScope::User { grants } }))
    }
}
