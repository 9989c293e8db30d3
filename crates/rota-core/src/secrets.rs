//! The [`SecretResolver`] trait: where credentials named by a task come from.
//!
//! A task specification never contains a credential, only the *name* of a secret (e.g.
//! `target.http.auth.bearer.secretRef: billing-token`). The executor that makes the call resolves the name at
//! dispatch time through a [`SecretResolver`], so the value is never stored, never returned by the API and
//! never logged. Rota's own resolvers (environment variables `ROTA_SECRET_<NAME>`, a directory with one file
//! per secret; `rota_executor::secrets`) implement this trait exactly as a user's vault client would.
//!
//! The trait lives in the core, beside [`crate::Executor`] and [`crate::Discovery`], because it is a plug point
//! the server wires and any executor (Rota's or a user's) may use; the core itself never resolves a secret.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

/// A secret's value. `Debug` never shows it and there is no `Display`: read it with [`SecretValue::expose`]
/// only where it is put on the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    pub fn new(value: impl Into<String>) -> Self {
        SecretValue(value.into())
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

/// Why a secret could not be resolved. Messages name the reference only, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// No resolver knows the name (the attempt fails with this message).
    #[error("secret {0} is not available")]
    NotAvailable(String),
    /// The backend failed (unreadable file, vault down); `reason` must not contain the value.
    #[error("secret {name} is not available: {reason}")]
    Backend { name: String, reason: String },
}

/// Resolves secret references by name at dispatch time.
#[async_trait]
pub trait SecretResolver: Send + Sync + 'static {
    /// The value of the secret `name`, or [`SecretError::NotAvailable`] when this resolver does not know it.
    async fn resolve(&self, name: &str) -> Result<SecretValue, SecretError>;
}

/// Tries resolvers in order; the first that knows the name wins. Empty: every name is unavailable.
#[derive(Clone, Default)]
pub struct SecretChain {
    resolvers: Vec<Arc<dyn SecretResolver>>,
}

impl SecretChain {
    pub fn new() -> Self {
        SecretChain::default()
    }

    /// Appends a resolver (builder style).
    pub fn with(mut self, resolver: Arc<dyn SecretResolver>) -> Self {
        self.resolvers.push(resolver);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.resolvers.is_empty()
    }
}

impl fmt::Debug for SecretChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretChain").field("resolvers", &self.resolvers.len()).finish()
    }
}

#[async_trait]
impl SecretResolver for SecretChain {
    async fn resolve(&self, name: &str) -> Result<SecretValue, SecretError> {
        for r in &self.resolvers {
            match r.resolve(name).await {
                Err(SecretError::NotAvailable(_)) => continue,
                other => return other,
            }
        }
        Err(SecretError::NotAvailable(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct One(&'static str, &'static str);

    #[async_trait]
    impl SecretResolver for One {
        async fn resolve(&self, name: &str) -> Result<SecretValue, SecretError> {
            if name == self.0 { Ok(SecretValue::new(self.1)) } else { Err(SecretError::NotAvailable(name.into())) }
        }
    }

    #[tokio::test]
    async fn the_chain_takes_the_first_that_knows() {
        let chain = SecretChain::new().with(Arc::new(One("a", "1"))).with(Arc::new(One("b", "2")));
        assert_eq!(chain.resolve("b").await.unwrap().expose(), "2");
        assert_eq!(chain.resolve("c").await.unwrap_err().to_string(), "secret c is not available");
        assert_eq!(format!("{:?}", SecretValue::new("hunter2")), "SecretValue(<redacted>)");
    }
}
