//! # rota-tls: TLS on every Rota hop
//!
//! One small crate shared by everything that serves or connects with TLS — the `rota server` API, the
//! scheduler's executor clients (HTTP and gRPC), the SDK's management client and its executor server — so that
//! the PEM handling, the crypto provider and the meaning of a client certificate are the same everywhere. It is a
//! crate rather than a module because none of its users is a natural home for it (`rota-proto` must stay free of
//! I/O, and `rota-sdk` and `rota-executor` do not depend on each other).
//!
//! * **Crypto provider:** rustls with *ring* only (aws-lc-rs needs cmake). [`install_crypto_provider`] installs
//!   ring as the process default once; every builder here calls it, and so must anything that builds a
//!   `reqwest::Client` (the workspace enables reqwest's `rustls-no-provider`, whose clients panic without a
//!   process default).
//! * **PEM files:** [`load_certs`], [`load_key`], [`load_roots`]; errors name the file ([`TlsError`]).
//! * **Servers:** [`ServerTls`] (certificate chain, key, optional client CA with [`ClientCertMode`]) builds a
//!   rustls [`ServerConfig`](rustls::ServerConfig) (ALPN `h2`, `http/1.1`); [`serve`] runs an axum `Router` over
//!   it with graceful shutdown.
//! * **Client certificates:** a verified client certificate's identity is put into every request's extensions
//!   as a [`PeerCertificate`] (subject, common name, DNS/URI/e-mail/IP SANs, DER), next to axum's
//!   `ConnectInfo<SocketAddr>`. An authentication layer reads it with `Extension<PeerCertificate>` or
//!   `request.extensions().get::<PeerCertificate>()`: its presence means the chain was verified against the
//!   configured client CA (rustls refuses the handshake otherwise).
//! * **Clients:** [`ClientTls`] holds the PEM material of a client (extra trusted CAs, optional identity for
//!   mTLS), validated when loaded, for reqwest and tonic, which build their own rustls configs;
//!   [`ClientTls::rustls_config`] builds one directly.

mod identity;
mod serve;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub use identity::{PeerCertificate, parse_certificate};
pub use serve::{HANDSHAKE_TIMEOUT, serve};

pub use rustls;
pub use tokio_rustls;

/// Why TLS material or a TLS configuration could not be loaded. Messages name the file, never its content.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path} contains no PEM certificate (expected -----BEGIN CERTIFICATE-----)")]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error("{what} {path} contains no PEM private key (expected PKCS#8, PKCS#1 or SEC1)")]
    NoKey { what: &'static str, path: PathBuf },
    #[error("{what} {path} is not valid PEM: {reason}")]
    BadPem { what: &'static str, path: PathBuf, reason: String },
    #[error("CA bundle {path}: {reason}")]
    BadCa { path: PathBuf, reason: String },
    #[error("{0}")]
    Config(String),
}

/// The ring crypto provider (a fresh handle; cheap).
///
/// rustls 0.23.48 deprecates its ring provider because ring has no post-quantum key exchange; Rota still uses
/// ring on purpose (aws-lc-rs, which has it, needs cmake and a C toolchain to build).
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs ring as the process-wide default rustls provider, once; later calls (and a provider someone else
/// installed first) are fine. Call it before building a `reqwest::Client`.
pub fn install_crypto_provider() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        // Err means a default is already installed (by the application); keep it.
        let _ = Arc::unwrap_or_clone(provider()).install_default();
    });
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { what, path: path.to_path_buf(), source })
}

fn certs_of(what: &'static str, path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(|e| TlsError::BadPem {
        what,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { what, path: path.to_path_buf() });
    }
    Ok(certs)
}

fn key_of(what: &'static str, path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    match PrivateKeyDer::from_pem_slice(pem) {
        Ok(key) => Ok(key),
        Err(rustls_pki_types::pem::Error::NoItemsFound) => Err(TlsError::NoKey { what, path: path.to_path_buf() }),
        // The error of a malformed key never contains key material (only positions and kinds).
        Err(e) => Err(TlsError::BadPem { what, path: path.to_path_buf(), reason: e.to_string() }),
    }
}

/// The certificates of a PEM file (a chain: leaf first), at least one.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let what = "certificate file";
    certs_of(what, path, &read(what, path)?)
}

/// The first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let what = "private key file";
    key_of(what, path, &read(what, path)?)
}

/// A CA bundle (one or more PEM certificates) as a root store.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let what = "CA bundle";
    roots_of(path, &read(what, path)?)
}

fn roots_of(path: &Path, pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs_of("CA bundle", path, pem)? {
        roots.add(cert).map_err(|e| TlsError::BadCa {
            path: path.to_path_buf(),
            reason: format!("invalid CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

/// Whether a server with a client CA requires a client certificate or only accepts one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClientCertMode {
    /// The handshake fails without a certificate signed by the client CA (mTLS). The default.
    #[default]
    Required,
    /// A client may connect without a certificate (and authenticate otherwise, e.g. with a token); a
    /// certificate it does present must be signed by the client CA.
    Optional,
}

impl std::str::FromStr for ClientCertMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "required" => Ok(ClientCertMode::Required),
            "optional" => Ok(ClientCertMode::Optional),
            other => Err(format!("invalid client certificate mode {other:?} (expected required or optional)")),
        }
    }
}

/// A TLS server's files: its certificate chain and key, and optionally the CA that signs client certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
    pub client_cert: ClientCertMode,
}

impl ServerTls {
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        ServerTls { cert: cert.into(), key: key.into(), client_ca: None, client_cert: ClientCertMode::default() }
    }

    /// Verifies client certificates against `ca` (required or optional per `mode`).
    pub fn with_client_ca(mut self, ca: impl Into<PathBuf>, mode: ClientCertMode) -> Self {
        self.client_ca = Some(ca.into());
        self.client_cert = mode;
        self
    }

    /// Loads the files and builds the rustls configuration.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let chain = load_certs(&self.cert)?;
        let key = load_key(&self.key)?;
        let client = match &self.client_ca {
            Some(ca) => Some((load_roots(ca)?, self.client_cert)),
            None => None,
        };
        server_config(chain, key, client)
    }
}

/// A rustls server configuration (ring, TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`), verifying client
/// certificates against `client` when given.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client: Option<(RootCertStore, ClientCertMode)>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    install_crypto_provider();
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(format!("TLS versions: {e}")))?;
    let builder = match client {
        None => builder.with_no_client_auth(),
        Some((roots, mode)) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match mode {
                ClientCertMode::Required => verifier,
                ClientCertMode::Optional => verifier.allow_unauthenticated(),
            };
            let verifier =
                verifier.build().map_err(|e| TlsError::Config(format!("client certificate verifier: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(format!("the certificate and key do not make a server identity: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The TLS material of a client: extra CAs to trust (in addition to the system's roots, where the client has
/// them) and an optional identity (certificate chain and key) for mTLS. Loaded and checked by
/// [`ClientTls::from_files`]; the key never appears in `Debug`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    ca_pem: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
    ca_path: Option<PathBuf>,
    cert_path: Option<PathBuf>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca", &self.ca_path)
            .field("identity", &self.cert_path.as_ref().map(|p| format!("{} (key redacted)", p.display())))
            .finish()
    }
}

impl ClientTls {
    /// Reads and checks the files: a CA bundle, and a certificate with its key (both or neither).
    pub fn from_files(ca: Option<&Path>, cert: Option<&Path>, key: Option<&Path>) -> Result<ClientTls, TlsError> {
        let mut tls = ClientTls::default();
        if let Some(ca) = ca {
            let pem = read("CA bundle", ca)?;
            roots_of(ca, &pem)?;
            tls.ca_pem = Some(pem);
            tls.ca_path = Some(ca.to_path_buf());
        }
        match (cert, key) {
            (None, None) => {}
            (Some(cert), Some(key)) => {
                let cert_pem = read("certificate file", cert)?;
                certs_of("certificate file", cert, &cert_pem)?;
                let key_pem = read("private key file", key)?;
                key_of("private key file", key, &key_pem)?;
                tls.identity = Some((cert_pem, key_pem));
                tls.cert_path = Some(cert.to_path_buf());
            }
            (Some(_), None) => return Err(TlsError::Config("a client certificate needs its key file too".into())),
            (None, Some(_)) => return Err(TlsError::Config("a client key needs its certificate file too".into())),
        }
        Ok(tls)
    }

    /// Only a CA bundle.
    pub fn with_ca(ca: &Path) -> Result<ClientTls, TlsError> {
        ClientTls::from_files(Some(ca), None, None)
    }

    /// Whether nothing is configured (system roots only, no identity).
    pub fn is_empty(&self) -> bool {
        self.ca_pem.is_none() && self.identity.is_none()
    }

    /// The PEM text of the extra CAs.
    pub fn ca_pem(&self) -> Option<&[u8]> {
        self.ca_pem.as_deref()
    }

    /// The PEM texts of the client certificate chain and of its key.
    pub fn identity_pem(&self) -> Option<(&[u8], &[u8])> {
        self.identity.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice()))
    }

    /// A rustls client configuration trusting only the configured CAs (an error without one), presenting the
    /// identity when there is one.
    pub fn rustls_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        install_crypto_provider();
        let path = self.ca_path.clone().unwrap_or_default();
        let Some(ca) = &self.ca_pem else {
            return Err(TlsError::Config("a rustls client configuration needs a CA bundle".into()));
        };
        let roots = roots_of(&path, ca)?;
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(format!("TLS versions: {e}")))?
            .with_root_certificates(roots);
        match &self.identity {
            None => Ok(builder.with_no_client_auth()),
            Some((cert, key)) => {
                let cert_path = self.cert_path.clone().unwrap_or_default();
                let chain = certs_of("certificate file", &cert_path, cert)?;
                let key = key_of("private key file", &cert_path, key)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| TlsError::Config(format!("the client certificate and key do not match: {e}")))
            }
        }
    }
}

#[cfg(feature = "testing")]
pub mod testing;
