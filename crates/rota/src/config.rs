//! `rota server` settings: command-line flags, `ROTA_*` environment variables and the TOML file, merged.
//!
//! Precedence, highest first: flag, environment variable, `--config` file, built-in default.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use rota_proto::signing::SigningKey;
use serde::Deserialize;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";
pub const DEFAULT_DATA_DIR: &str = "./rota-data";
/// The SQLite file inside the data directory.
pub const SQLITE_FILE: &str = "rota.db";
/// The bootstrap cluster-admin token inside the data directory (mode 0600).
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

#[derive(Debug, Clone, Default, Args)]
pub struct ServerArgs {
    /// TOML file with any of the settings below (keys as the flags: `listen`, `data-dir`, `database-url`, …).
    /// Flags and ROTA_* environment variables override it.
    #[arg(long, env = "ROTA_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address of the management API [default: 127.0.0.1:7070]. Port 0 picks a free port; the address actually
    /// bound is printed (`rota listening on http://…`).
    #[arg(long, env = "ROTA_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// Directory of the embedded SQLite database (`rota.db` inside) and of the bootstrap admin token
    /// (`admin.token`, written on first start, also with --database-url) [default: ./rota-data].
    #[arg(long, env = "ROTA_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Store URL: postgres://…, mysql://… (or mariadb://…), sqlite://…. Overrides --data-dir.
    #[arg(long, env = "ROTA_DATABASE_URL", value_name = "URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// This node's id, unique in the cluster and stable across restarts [default: the host name].
    #[arg(long, env = "ROTA_NODE_ID", value_name = "ID")]
    pub node_id: Option<String>,
    /// Number of shards tasks hash into; must be the same on every node and for the lifetime of a store
    /// [default: 256].
    #[arg(long, env = "ROTA_SHARDS", value_name = "N")]
    pub shards: Option<u32>,
    /// URL under which executor nodes reach this server's API (for asynchronous reports and log appends)
    /// [default: http://<listen address>, unless it is a wildcard address].
    #[arg(long, env = "ROTA_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// Also start a built-in example executor and the task `demo/hello` (every 5 s) that calls it.
    #[arg(long)]
    pub demo: bool,
    /// Docker Engine API endpoint for container targets (unix:///run/podman/podman.sock, tcp://host:2375)
    /// [default: $DOCKER_HOST, else /var/run/docker.sock].
    #[arg(long, env = "ROTA_CONTAINER_RUNTIME", value_name = "ENDPOINT")]
    pub container_runtime: Option<String>,
    /// How long shutdown waits for in-flight dispatches before aborting them [default: 30s].
    #[arg(long, env = "ROTA_SHUTDOWN_GRACE", value_name = "DURATION", help_heading = "Tuning")]
    pub shutdown_grace: Option<String>,
    /// How often the due index and the pending-run queue are scanned [default: 1s].
    #[arg(long, env = "ROTA_SCAN_INTERVAL", value_name = "DURATION", help_heading = "Tuning")]
    pub scan_interval: Option<String>,
    /// Shard lease time-to-live; also the registration TTL of the node. Bounds failover: a dead node's shards are
    /// taken over about `lease-ttl + lease-ttl/3 + one scan` after its last renewal [default: 3s].
    #[arg(long, env = "ROTA_LEASE_TTL", value_name = "DURATION", help_heading = "Tuning")]
    pub lease_ttl: Option<String>,
    /// Attempt timeout of tasks whose spec sets none [default: 1h].
    #[arg(long, env = "ROTA_DEFAULT_TIMEOUT", value_name = "DURATION", help_heading = "Tuning")]
    pub default_timeout: Option<String>,
    /// Maximum dispatches in flight on this node [default: 10000].
    #[arg(long, env = "ROTA_MAX_IN_FLIGHT", value_name = "N", help_heading = "Tuning")]
    pub max_in_flight: Option<usize>,
    /// Registration time-to-live of executor nodes: they heartbeat every third of it and leave the candidate set
    /// when it passes without one [default: 10s].
    #[arg(long, env = "ROTA_EXECUTOR_TTL", value_name = "DURATION", help_heading = "Tuning")]
    pub executor_ttl: Option<String>,
    #[command(flatten)]
    pub security: SecurityArgs,
}

/// TLS, dispatch signing and secrets (see docs/security.md).
#[derive(Debug, Clone, Default, Args)]
pub struct SecurityArgs {
    /// PEM certificate chain of the management API: serve https:// (needs --tls-key).
    #[arg(long, env = "ROTA_TLS_CERT", value_name = "FILE", help_heading = "Security")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "ROTA_TLS_KEY", value_name = "FILE", help_heading = "Security")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle that signs client certificates; a verified client certificate's identity reaches the API
    /// as a request extension (rota_tls::PeerCertificate).
    #[arg(long, env = "ROTA_TLS_CLIENT_CA", value_name = "FILE", help_heading = "Security")]
    pub tls_client_ca: Option<PathBuf>,
    /// With --tls-client-ca: `required` (every client needs a certificate: mTLS) or `optional` (clients without
    /// one authenticate otherwise) [default: required].
    #[arg(long, env = "ROTA_TLS_CLIENT_AUTH", value_name = "MODE", help_heading = "Security")]
    pub tls_client_auth: Option<String>,
    /// Serve plain HTTP on a non-loopback --listen address (e.g. behind a TLS-terminating proxy). Without TLS
    /// and without this flag, only a loopback address is accepted.
    #[arg(long, env = "ROTA_ALLOW_PLAINTEXT", help_heading = "Security")]
    pub allow_plaintext: bool,
    /// PEM CA bundle trusted for https:// and grpcs:// executor nodes (HTTP: in addition to the system roots;
    /// gRPC: instead of them).
    #[arg(long, env = "ROTA_EXECUTOR_CA", value_name = "FILE", help_heading = "Security")]
    pub executor_ca: Option<PathBuf>,
    /// PEM client certificate presented to executor nodes that require one (mTLS; needs --executor-client-key).
    #[arg(long, env = "ROTA_EXECUTOR_CLIENT_CERT", value_name = "FILE", help_heading = "Security")]
    pub executor_client_cert: Option<PathBuf>,
    /// PEM private key of --executor-client-cert.
    #[arg(long, env = "ROTA_EXECUTOR_CLIENT_KEY", value_name = "FILE", help_heading = "Security")]
    pub executor_client_key: Option<PathBuf>,
    /// Id of the dispatch signing key, sent as x-rota-key-id [default: default].
    #[arg(long, env = "ROTA_SIGNING_KEY_ID", value_name = "ID", help_heading = "Security")]
    pub signing_key_id: Option<String>,
    /// File holding the shared secret that signs every dispatch (HMAC-SHA256; at least 32 bytes; one trailing
    /// newline is ignored).
    #[arg(long, env = "ROTA_SIGNING_SECRET_FILE", value_name = "FILE", help_heading = "Security")]
    pub signing_secret_file: Option<PathBuf>,
    /// Name of the environment variable holding the signing secret (instead of --signing-secret-file).
    #[arg(long, env = "ROTA_SIGNING_SECRET_ENV", value_name = "VAR", help_heading = "Security")]
    pub signing_secret_env: Option<String>,
    /// Directory with one file per secret, for `target.http.auth` references (checked before the
    /// ROTA_SECRET_<NAME> environment variables).
    #[arg(long, env = "ROTA_SECRETS_DIR", value_name = "DIR", help_heading = "Security")]
    pub secrets_dir: Option<PathBuf>,
}

/// The `--config` file. Keys are the flag names (`data-dir`; `data_dir` is accepted too); unknown keys are
/// errors.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    pub listen: Option<String>,
    #[serde(alias = "data_dir")]
    pub data_dir: Option<PathBuf>,
    #[serde(alias = "database_url")]
    pub database_url: Option<String>,
    #[serde(alias = "node_id")]
    pub node_id: Option<String>,
    pub shards: Option<u32>,
    #[serde(alias = "public_url")]
    pub public_url: Option<String>,
    pub demo: Option<bool>,
    #[serde(alias = "container_runtime")]
    pub container_runtime: Option<String>,
    #[serde(alias = "shutdown_grace")]
    pub shutdown_grace: Option<String>,
    #[serde(alias = "scan_interval")]
    pub scan_interval: Option<String>,
    #[serde(alias = "lease_ttl")]
    pub lease_ttl: Option<String>,
    #[serde(alias = "default_timeout")]
    pub default_timeout: Option<String>,
    #[serde(alias = "max_in_flight")]
    pub max_in_flight: Option<usize>,
    #[serde(alias = "executor_ttl")]
    pub executor_ttl: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_client_ca: Option<PathBuf>,
    pub tls_client_auth: Option<String>,
    pub allow_plaintext: Option<bool>,
    pub executor_ca: Option<PathBuf>,
    pub executor_client_cert: Option<PathBuf>,
    pub executor_client_key: Option<PathBuf>,
    pub signing_key_id: Option<String>,
    pub signing_secret_file: Option<PathBuf>,
    pub signing_secret_env: Option<String>,
    pub secrets_dir: Option<PathBuf>,
    /// Where `candidates.service` finds executor nodes (file only): per-service static lists or DNS names; other
    /// services come from the node registry. See `rota_discovery::DiscoveryConfig`.
    #[serde(default)]
    pub discovery: rota_discovery::DiscoveryConfig,
    /// Authentication of the management API (file only): `[auth.oidc]` accepts the bearer JWTs of an OIDC
    /// issuer besides Rota's own API tokens.
    #[serde(default)]
    pub auth: AuthFileConfig,
}

/// `[auth]` of the configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AuthFileConfig {
    /// `issuer`, `audience`, optional `jwks-url`, `roles-claim`, `groups-claim`, `refetch-interval`.
    pub oidc: Option<rota_api::auth::OidcConfig>,
}

impl FileConfig {
    pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the configuration file {}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim_end()))
    }
}

/// Where tasks and runs are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// The embedded SQLite file `<data dir>/rota.db`.
    DataDir(PathBuf),
    /// A database URL.
    Url(String),
}

/// The merged settings of `rota server`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: String,
    pub store: StoreLocation,
    pub node_id: String,
    pub shards: u32,
    pub public_url: Option<String>,
    pub demo: bool,
    pub container_runtime: Option<String>,
    pub shutdown_grace: Duration,
    pub scan_interval: Duration,
    pub lease_ttl: Duration,
    pub default_timeout: Duration,
    pub max_in_flight: usize,
    pub executor_ttl: Duration,
    pub discovery: rota_discovery::DiscoveryConfig,
    /// Where the bootstrap admin token is written (and, without a database URL, the SQLite store lives).
    pub data_dir: PathBuf,
    pub oidc: Option<rota_api::auth::OidcConfig>,
    pub security: Security,
}

/// The resolved security settings (files already loaded and checked).
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// TLS of the management API; `None` serves plain HTTP.
    pub tls: Option<Arc<rota_tls::rustls::ServerConfig>>,
    /// TLS of the executor clients.
    pub executor_tls: rota_tls::ClientTls,
    /// The key that signs every dispatch.
    pub signing: Option<SigningKey>,
    /// Where `target.http.auth` secrets are read from, before the environment.
    pub secrets_dir: Option<PathBuf>,
}

impl Security {
    fn resolve(args: SecurityArgs, file: &FileConfig, listen: &str) -> anyhow::Result<Security> {
        let f = file.clone();
        let tls_cert = args.tls_cert.or(f.tls_cert);
        let tls_key = args.tls_key.or(f.tls_key);
        let client_ca = args.tls_client_ca.or(f.tls_client_ca);
        let client_auth = args.tls_client_auth.or(f.tls_client_auth);
        let tls = match (tls_cert, tls_key) {
            (None, None) => {
                if client_ca.is_some() {
                    bail!("--tls-client-ca needs --tls-cert and --tls-key");
                }
                None
            }
            (Some(cert), Some(key)) => {
                let mut tls = rota_tls::ServerTls::new(cert, key);
                if let Some(ca) = client_ca {
                    let mode = match client_auth.as_deref() {
                        None => rota_tls::ClientCertMode::Required,
                        Some(m) => m.parse().map_err(|e: String| anyhow::anyhow!("invalid tls-client-auth: {e}"))?,
                    };
                    tls = tls.with_client_ca(ca, mode);
                } else if client_auth.is_some() {
                    bail!("--tls-client-auth needs --tls-client-ca");
                }
                Some(tls.server_config().context("invalid TLS settings of the management API")?)
            }
            (Some(_), None) => bail!("--tls-cert needs --tls-key"),
            (None, Some(_)) => bail!("--tls-key needs --tls-cert"),
        };
        let allow_plaintext = args.allow_plaintext || f.allow_plaintext.unwrap_or(false);
        if tls.is_none() && !allow_plaintext && !is_loopback(listen) {
            bail!(
                "refusing to serve the management API over plain HTTP on {listen}, which is not a loopback address: \
                 give --tls-cert and --tls-key, or --allow-plaintext (e.g. behind a TLS-terminating proxy)"
            );
        }
        let executor_tls = rota_tls::ClientTls::from_files(
            args.executor_ca.or(f.executor_ca).as_deref(),
            args.executor_client_cert.or(f.executor_client_cert).as_deref(),
            args.executor_client_key.or(f.executor_client_key).as_deref(),
        )
        .context("invalid executor TLS settings")?;
        let key_id = args.signing_key_id.or(f.signing_key_id);
        let secret = match (
            args.signing_secret_file.or(f.signing_secret_file),
            args.signing_secret_env.or(f.signing_secret_env),
        ) {
            (Some(_), Some(_)) => bail!("give one of --signing-secret-file and --signing-secret-env"),
            (Some(path), None) => {
                let mut bytes = std::fs::read(&path)
                    .with_context(|| format!("cannot read the signing secret file {}", path.display()))?;
                if bytes.ends_with(b"\n") {
                    bytes.pop();
                    if bytes.ends_with(b"\r") {
                        bytes.pop();
                    }
                }
                Some((bytes, format!("the file {}", path.display())))
            }
            (None, Some(var)) => {
                let value =
                    std::env::var(&var).map_err(|_| anyhow::anyhow!("the signing secret variable {var} is not set"))?;
                Some((value.into_bytes(), format!("the variable {var}")))
            }
            (None, None) => {
                if key_id.is_some() {
                    bail!("--signing-key-id needs --signing-secret-file or --signing-secret-env");
                }
                None
            }
        };
        let signing = match secret {
            None => None,
            Some((bytes, from)) => {
                let id = key_id.unwrap_or_else(|| "default".to_string());
                if id.is_empty() || !id.bytes().all(|b| b.is_ascii_graphic()) {
                    bail!("invalid signing key id {id:?}: use visible ASCII characters");
                }
                Some(SigningKey::new(id, bytes).map_err(|e| anyhow::anyhow!("invalid signing secret in {from}: {e}"))?)
            }
        };
        Ok(Security { tls, executor_tls, signing, secrets_dir: args.secrets_dir.or(f.secrets_dir) })
    }
}

/// Whether `listen` (`ip:port`, `localhost:port` or `host:port`) is a loopback address only.
fn is_loopback(listen: &str) -> bool {
    if let Ok(addr) = listen.parse::<std::net::SocketAddr>() {
        return addr.ip().is_loopback();
    }
    let host = listen.rsplit_once(':').map_or(listen, |(h, _)| h);
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    use std::net::ToSocketAddrs as _;
    match listen.to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<_> = addrs.collect();
            !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())
        }
        Err(_) => false,
    }
}

fn duration(name: &str, value: Option<String>, default: Duration) -> anyhow::Result<Duration> {
    match value {
        None => Ok(default),
        Some(s) => {
            let d: rota_spec::Duration = s.parse().map_err(|e| anyhow::anyhow!("invalid {name}: {e}"))?;
            Ok(d.as_std())
        }
    }
}

impl Settings {
    /// Merges flags/env (`args`) over the file named by `args.config` over the defaults.
    pub fn resolve(args: ServerArgs) -> anyhow::Result<Settings> {
        let file = match &args.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let listen = args.listen.or(file.listen.clone()).unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let security = Security::resolve(args.security, &file, &listen)?;
        let database_url = args.database_url.or(file.database_url).filter(|u| !u.trim().is_empty());
        let data_dir = args.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let store = match database_url {
            Some(url) => StoreLocation::Url(url.trim().to_string()),
            None => StoreLocation::DataDir(data_dir.clone()),
        };
        if let Some(o) = &file.auth.oidc
            && (o.issuer.trim().is_empty() || o.audience.trim().is_empty())
        {
            bail!("invalid [auth.oidc]: issuer and audience must not be empty");
        }
        let node_id = args.node_id.or(file.node_id).unwrap_or_else(default_node_id);
        if node_id.trim().is_empty() || node_id.len() > 64 {
            bail!("invalid node id {node_id:?}: must be 1 to 64 characters");
        }
        let shards = args.shards.or(file.shards).unwrap_or(256);
        if shards == 0 {
            bail!("invalid shards: must be at least 1");
        }
        let public_url = args.public_url.or(file.public_url).map(|u| u.trim().trim_end_matches('/').to_string());
        if let Some(u) = &public_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            bail!("invalid public URL {u:?}: must start with http:// or https://");
        }
        let defaults = rota_core::SchedulerConfig::default();
        let max_in_flight = args.max_in_flight.or(file.max_in_flight).unwrap_or(defaults.max_in_flight);
        if max_in_flight == 0 {
            bail!("invalid max-in-flight: must be at least 1");
        }
        Ok(Settings {
            listen,
            store,
            node_id,
            shards,
            public_url,
            demo: args.demo || file.demo.unwrap_or(false),
            container_runtime: args.container_runtime.or(file.container_runtime).filter(|s| !s.trim().is_empty()),
            shutdown_grace: duration(
                "shutdown-grace",
                args.shutdown_grace.or(file.shutdown_grace),
                defaults.shutdown_grace,
            )?,
            scan_interval: duration(
                "scan-interval",
                args.scan_interval.or(file.scan_interval),
                defaults.scan_interval,
            )?,
            lease_ttl: duration("lease-ttl", args.lease_ttl.or(file.lease_ttl), defaults.lease_ttl)?,
            default_timeout: duration(
                "default-timeout",
                args.default_timeout.or(file.default_timeout),
                defaults.default_timeout,
            )?,
            max_in_flight,
            executor_ttl: duration("executor-ttl", args.executor_ttl.or(file.executor_ttl), defaults.executor_ttl)?,
            discovery: file.discovery,
            data_dir,
            oidc: file.auth.oidc,
            security,
        })
    }
}

/// The host name (letters, digits, `.`, `-`, `_` only), else `rota-1`: stable across restarts, so a restarted
/// node recognises the dispatches it left unfinished.
fn default_node_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .unwrap_or_default();
    let id: String =
        host.trim().chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')).take(64).collect();
    if id.is_empty() { "rota-1".to_string() } else { id }
}

/// A database URL fit for printing: password replaced by `***`, query dropped when it mentions a password.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            if u.query().is_some_and(|q| q.to_ascii_lowercase().contains("pass")) {
                u.set_query(None);
            }
            u.to_string()
        }
        Err(_) => url.split(['?', '@']).next().unwrap_or("").to_string() + "…",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("rota.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "listen = \"0.0.0.0:9000\"\nallow-plaintext = true\ndata-dir = \"/var/lib/rota\"\nshards = 16\nnode_id = \"n1\"\nshutdown-grace = \"5s\"\n",
        );
        let s = Settings::resolve(ServerArgs { config: Some(path.clone()), ..ServerArgs::default() }).unwrap();
        assert_eq!(s.listen, "0.0.0.0:9000");
        assert_eq!(s.executor_ttl, Duration::from_secs(10));
        assert!(s.discovery.services.is_empty());
        assert_eq!(s.store, StoreLocation::DataDir("/var/lib/rota".into()));
        assert_eq!((s.shards, s.node_id.as_str()), (16, "n1"));
        assert_eq!(s.shutdown_grace, Duration::from_secs(5));
        let s = Settings::resolve(ServerArgs {
            config: Some(path),
            listen: Some("127.0.0.1:0".into()),
            database_url: Some("postgres://u:p@h/db".into()),
            ..ServerArgs::default()
        })
        .unwrap();
        assert_eq!(s.listen, "127.0.0.1:0");
        assert_eq!(s.store, StoreLocation::Url("postgres://u:p@h/db".into()));
        assert_eq!(s.shards, 16);
    }

    #[test]
    fn defaults_and_errors() {
        let s = Settings::resolve(ServerArgs::default()).unwrap();
        assert_eq!(s.listen, DEFAULT_LISTEN);
        assert_eq!(s.store, StoreLocation::DataDir(DEFAULT_DATA_DIR.into()));
        assert_eq!(s.shards, 256);
        assert!(!s.node_id.is_empty());
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "listne = \"x\"\n");
        let err = Settings::resolve(ServerArgs { config: Some(path), ..ServerArgs::default() }).unwrap_err();
        assert!(err.to_string().contains("listne"), "{err}");
        let err = Settings::resolve(ServerArgs { shards: Some(0), ..ServerArgs::default() }).unwrap_err();
        assert!(err.to_string().contains("shards"), "{err}");
        let err =
            Settings::resolve(ServerArgs { scan_interval: Some("fast".into()), ..ServerArgs::default() }).unwrap_err();
        assert!(err.to_string().contains("scan-interval"), "{err}");
    }

    #[test]
    fn discovery_and_executor_ttl_come_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "executor-ttl = \"30s\"\n[discovery.services.billing]\nstatic = [\"http://10.0.0.5:8080\"]\n",
        );
        let s = Settings::resolve(ServerArgs { config: Some(path), ..ServerArgs::default() }).unwrap();
        assert_eq!(s.executor_ttl, Duration::from_secs(30));
        assert!(s.discovery.services.contains_key("billing"));
        let path = write(dir.path(), "[discovery.services.billing]\nstatik = []\n");
        let err = Settings::resolve(ServerArgs { config: Some(path), ..ServerArgs::default() }).unwrap_err();
        assert!(err.to_string().contains("statik"), "{err}");
    }

    #[test]
    fn oidc_comes_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "[auth.oidc]\nissuer = \"https://id.example\"\naudience = \"rota\"\nroles-claim = \"roles\"\n",
        );
        let s = Settings::resolve(ServerArgs { config: Some(path), ..ServerArgs::default() }).unwrap();
        let oidc = s.oidc.unwrap();
        assert_eq!((oidc.issuer.as_str(), oidc.roles_claim.as_deref()), ("https://id.example", Some("roles")));
        assert_eq!(s.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        let path = write(dir.path(), "[auth.oidc]\nissuer = \"x\"\naudience = \"y\"\nroles = \"r\"\n");
        let err = Settings::resolve(ServerArgs { config: Some(path), ..ServerArgs::default() }).unwrap_err();
        assert!(err.to_string().contains("roles"), "{err}");
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(redact_url("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact_url("mysql://h/db?password=x"), "mysql://h/db");
        assert_eq!(redact_url("postgres://postgres@127.0.0.1/x"), "postgres://postgres@127.0.0.1/x");
    }
}
