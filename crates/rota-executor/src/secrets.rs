//! Rota's own [`SecretResolver`]s: environment variables and a secrets directory.
//!
//! Both implement the core's public trait exactly as a user's vault client would; `rota server` chains them
//! (the directory first, when `--secrets-dir` is set, then the environment).

use std::path::PathBuf;

use async_trait::async_trait;
use rota_core::{SecretError, SecretResolver, SecretValue};

/// `ROTA_SECRET_<NAME>`: the name upper-cased with `-` and `.` turned into `_` (`billing-token` →
/// `ROTA_SECRET_BILLING_TOKEN`).
#[derive(Debug, Clone, Default)]
pub struct EnvSecrets {
    _private: (),
}

impl EnvSecrets {
    pub fn new() -> Self {
        EnvSecrets::default()
    }

    /// The environment variable that holds `name`.
    pub fn variable(name: &str) -> String {
        let upper: String =
            name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
        format!("ROTA_SECRET_{upper}")
    }
}

#[async_trait]
impl SecretResolver for EnvSecrets {
    async fn resolve(&self, name: &str) -> Result<SecretValue, SecretError> {
        if rota_spec::check_secret_name(name).is_err() {
            return Err(SecretError::NotAvailable(name.to_string()));
        }
        match std::env::var(Self::variable(name)) {
            Ok(v) if !v.is_empty() => Ok(SecretValue::new(v)),
            _ => Err(SecretError::NotAvailable(name.to_string())),
        }
    }
}

/// A directory with one file per secret, named exactly as the secret (`/run/secrets/billing-token`); one
/// trailing newline is dropped. Names are checked first, so a reference can never leave the directory.
#[derive(Debug, Clone)]
pub struct DirSecrets {
    dir: PathBuf,
}

impl DirSecrets {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DirSecrets { dir: dir.into() }
    }
}

#[async_trait]
impl SecretResolver for DirSecrets {
    async fn resolve(&self, name: &str) -> Result<SecretValue, SecretError> {
        if rota_spec::check_secret_name(name).is_err() {
            return Err(SecretError::NotAvailable(name.to_string()));
        }
        match tokio::fs::read_to_string(self.dir.join(name)).await {
            Ok(mut v) => {
                if v.ends_with('\n') {
                    v.pop();
                    if v.ends_with('\r') {
                        v.pop();
                    }
                }
                if v.is_empty() {
                    return Err(SecretError::Backend { name: name.to_string(), reason: "its file is empty".into() });
                }
                Ok(SecretValue::new(v))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(SecretError::NotAvailable(name.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                Err(SecretError::Backend { name: name.to_string(), reason: "its file is not UTF-8".into() })
            }
            Err(e) => {
                Err(SecretError::Backend { name: name.to_string(), reason: format!("cannot read its file: {e}") })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn directory_secrets() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("api-key"), "k3y\n").unwrap();
        std::fs::write(dir.path().join("empty"), "").unwrap();
        let s = DirSecrets::new(dir.path());
        assert_eq!(s.resolve("api-key").await.unwrap().expose(), "k3y");
        assert_eq!(s.resolve("nope").await.unwrap_err(), SecretError::NotAvailable("nope".into()));
        assert_eq!(s.resolve("../api-key").await.unwrap_err(), SecretError::NotAvailable("../api-key".into()));
        assert!(s.resolve("empty").await.unwrap_err().to_string().contains("empty"));
    }

    #[test]
    fn environment_names() {
        assert_eq!(EnvSecrets::variable("billing-token.v2"), "ROTA_SECRET_BILLING_TOKEN_V2");
    }
}
