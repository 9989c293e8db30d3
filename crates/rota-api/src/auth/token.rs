//! Rota's API tokens: `rota_<id>_<secret>`.
//!
//! The id (16 lower-case hex digits, random) is public and used to look the token up; the secret is 256 random
//! bits, base64url without padding. Only the SHA-256 of the secret is stored; a presented token is verified by
//! looking its id up and comparing the hashes in constant time. Tokens are shown once, when created.

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use rand::RngCore;
use rota_store::{ApiTokenRecord, NewApiToken, Store, StoreResult, TokenScope};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{AuthError, Authenticator, Credentials, Principal};

/// Prefix of every Rota API token.
pub const TOKEN_PREFIX: &str = "rota_";

/// A token just created: its record and the full token text, which is never stored and shown only once.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub record: ApiTokenRecord,
    /// `rota_<id>_<secret>`.
    pub token: String,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken").field("record", &self.record).field("token", &"(not shown)").finish()
    }
}

/// Lower-case hex SHA-256 of a secret.
pub fn hash_secret(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Splits `rota_<id>_<secret>` into (id, secret); `None` when the text is not of that form.
pub fn parse_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let id_ok = (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let secret_ok = (32..=128).contains(&secret.len())
        && secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (id_ok && secret_ok).then_some((id, secret))
}

/// Creates and stores a new token; returns it with its text (shown once).
pub async fn issue_token(
    store: &dyn Store,
    name: &str,
    scope: TokenScope,
    created_by: &str,
    expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> StoreResult<IssuedToken> {
    let (mut id_bytes, mut secret_bytes) = ([0u8; 8], [0u8; 32]);
    {
        // ThreadRng: a CSPRNG seeded from the operating system (not `Send`, so not held across an await).
        let mut rng = rand::rng();
        rng.fill_bytes(&mut id_bytes);
        rng.fill_bytes(&mut secret_bytes);
    }
    let id: String = id_bytes.iter().map(|b| format!("{b:02x}")).collect();
    let secret = URL_SAFE_NO_PAD.encode(secret_bytes);
    let record = store
        .create_token(NewApiToken {
            id: id.clone(),
            name: name.to_string(),
            secret_hash: hash_secret(&secret),
            scope,
            created_at: now,
            created_by: created_by.to_string(),
            expires_at,
        })
        .await?;
    Ok(IssuedToken { record, token: format!("{TOKEN_PREFIX}{id}_{secret}") })
}

/// Authenticates Rota's API tokens against the store. Claims every bearer token starting with `rota_`.
#[derive(Clone)]
pub struct TokenAuthenticator {
    store: Arc<dyn Store>,
}

impl TokenAuthenticator {
    pub fn new(store: Arc<dyn Store>) -> Self {
        TokenAuthenticator { store }
    }
}

/// The answer for every token that does not verify (unknown id or wrong secret alike, so the two cannot be told
/// apart).
const INVALID: &str = "the API token is not valid";

#[async_trait]
impl Authenticator for TokenAuthenticator {
    async fn authenticate(&self, credentials: &Credentials<'_>) -> Result<Option<Principal>, AuthError> {
        let Some(bearer) = credentials.bearer else { return Ok(None) };
        if !bearer.starts_with(TOKEN_PREFIX) {
            return Ok(None);
        }
        let Some((id, secret)) = parse_token(bearer) else {
            return Err(AuthError::unauthenticated("malformed API token (expected rota_<id>_<secret>)"));
        };
        let record = match self.store.get_token(id).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot look up an API token");
                return Err(AuthError::Unavailable("the store is unavailable; retry later".into()));
            }
        };
        let presented = hash_secret(secret);
        // Compare against a dummy hash when the id is unknown, so both cases take the same time.
        let stored = record.as_ref().map(|r| r.secret_hash.as_str()).unwrap_or("");
        let matches: bool = if stored.len() == presented.len() {
            stored.as_bytes().ct_eq(presented.as_bytes()).into()
        } else {
            let _ = presented.as_bytes().ct_eq(presented.as_bytes());
            false
        };
        let Some(record) = record.filter(|_| matches) else {
            return Err(AuthError::unauthenticated(INVALID));
        };
        if record.revoked_at.is_some() {
            return Err(AuthError::unauthenticated(format!("API token {} has been revoked", record.id)));
        }
        if let Some(exp) = record.expires_at
            && exp <= Utc::now()
        {
            return Err(AuthError::unauthenticated(format!(
                "API token {} expired at {}",
                record.id,
                exp.format("%Y-%m-%dT%H:%M:%SZ")
            )));
        }
        Ok(Some(Principal { id: format!("token:{}", record.id), name: record.name, scope: record.scope }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_and_hash() {
        let secret = URL_SAFE_NO_PAD.encode([7u8; 32]);
        let token = format!("rota_0123abcd_{secret}");
        assert_eq!(parse_token(&token), Some(("0123abcd", secret.as_str())));
        let with_underscore = format!("rota_ab_{}", "_".repeat(43));
        assert_eq!(parse_token(&with_underscore).map(|(id, _)| id), Some("ab"));
        assert_eq!(parse_token("rota_ab"), None);
        assert_eq!(parse_token("rota_AB_cdefghijklmnopqrstuvwxyzabcdefghijklmnop"), None);
        assert_eq!(parse_token("rota_ab_short"), None);
        assert_eq!(parse_token("other"), None);
        assert_eq!(hash_secret("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
