//! The `[discovery]` section of the server's configuration and [`build`], which turns it into a [`Router`].

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rota_core::Discovery;
use serde::{Deserialize, Deserializer};

use crate::dns::{self, DnsDiscovery, DnsService, DnsTarget};
use crate::{Protocol, RegistryDiscovery, Router, StaticDiscovery, StaticNode};

/// The `[discovery]` table. Keys are kebab-case (`registry-cache`; `registry_cache` is accepted too), unknown keys
/// are errors.
///
/// ```toml
/// [discovery]
/// registry_cache = "500ms"          # optional
/// nameserver = "127.0.0.1:5353"     # optional, default: the first nameserver of /etc/resolv.conf
/// dns_timeout = "2s"                # optional, per query
/// [discovery.services.billing-worker]
/// static = ["http://10.0.0.5:8080", { address = "http://10.0.0.6:8080", labels = { zone = "b" }, weight = 3 }]
/// [discovery.services.reports]
/// dns = "srv:_rota._tcp.reports.example.com"
/// scheme = "http"                   # of the a:/srv: results; default http
/// protocol = "http"                 # http | grpc; default from the scheme (grpc, grpcs → grpc; else http)
/// ```
///
/// Services not listed are looked up in the node registry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DiscoveryConfig {
    /// How long the registry's answer for a service is reused [default: 500ms].
    #[serde(default, alias = "registry_cache")]
    pub registry_cache: Option<rota_spec::Duration>,
    /// `IP` or `IP:PORT` (port 53 by default) of the nameserver DNS services ask [default: the first `nameserver`
    /// of /etc/resolv.conf].
    #[serde(default, deserialize_with = "nameserver")]
    pub nameserver: Option<SocketAddr>,
    /// Timeout of one DNS query [default: 2s].
    #[serde(default, alias = "dns_timeout")]
    pub dns_timeout: Option<rota_spec::Duration>,
    /// Services with a source of their own, by name.
    #[serde(default)]
    pub services: BTreeMap<String, ServiceConfig>,
}

/// Where one service's nodes come from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawService")]
pub enum ServiceConfig {
    /// `static = [...]`: these nodes, in this order.
    Static(Vec<StaticNode>),
    /// `dns = "a:HOST:PORT" | "srv:NAME"` (with optional `scheme`, `protocol`).
    Dns(DnsService),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    #[serde(rename = "static")]
    static_nodes: Option<Vec<StaticNode>>,
    dns: Option<String>,
    scheme: Option<String>,
    protocol: Option<Protocol>,
}

impl TryFrom<RawService> for ServiceConfig {
    type Error = String;

    fn try_from(raw: RawService) -> Result<Self, Self::Error> {
        match (raw.static_nodes, raw.dns) {
            (Some(_), Some(_)) => Err("`static` and `dns` exclude each other: give one of them".into()),
            (None, None) => Err("a service needs `static` (a list of nodes) or `dns` (\"a:HOST:PORT\" or \
                                 \"srv:_service._proto.name\")"
                .into()),
            (Some(nodes), None) => {
                if raw.scheme.is_some() {
                    return Err("`scheme` applies to `dns` services only (static addresses carry their own)".into());
                }
                if raw.protocol.is_some() {
                    return Err("`protocol` of a static service is set per node ({ address = …, protocol = … })".into());
                }
                Ok(ServiceConfig::Static(nodes))
            }
            (None, Some(dns)) => {
                let target: DnsTarget = dns.parse().map_err(|e| format!("`dns`: {e}"))?;
                let scheme = raw.scheme.unwrap_or_else(|| "http".into());
                dns::check_scheme(&scheme).map_err(|e| format!("`scheme`: {e}"))?;
                let protocol = raw.protocol.unwrap_or_else(|| Protocol::of_scheme(&scheme));
                Ok(ServiceConfig::Dns(DnsService { target, scheme, protocol }))
            }
        }
    }
}

fn nameserver<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    parse_nameserver(&s).map(Some).map_err(serde::de::Error::custom)
}

/// `IP`, `IP:PORT` or `[IPv6]:PORT`; port 53 when not given.
pub fn parse_nameserver(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = s.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    Err(format!("invalid nameserver {s:?}: expected IP or IP:PORT, e.g. \"127.0.0.1:5353\""))
}

/// Why a [`DiscoveryConfig`] cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A DNS service is configured but no nameserver is known.
    #[error(
        "discovery.services.{service} uses DNS but no nameserver is known: set discovery.nameserver \
         (/etc/resolv.conf has no usable nameserver line)"
    )]
    NoNameserver { service: String },
    /// A service name that no task could use.
    #[error("invalid service name {0:?} under discovery.services: must be non-empty, without spaces")]
    InvalidServiceName(String),
}

/// Builds Rota's discovery from the `[discovery]` configuration: a [`Router`] sending each configured service to
/// its static list or DNS lookup, and every other service to the store's node registry.
pub fn build(store: Arc<dyn rota_store::Store>, config: &DiscoveryConfig) -> Result<Arc<dyn Discovery>, ConfigError> {
    build_with_nameserver(store, config, dns::system_nameserver)
}

pub(crate) fn build_with_nameserver(
    store: Arc<dyn rota_store::Store>,
    config: &DiscoveryConfig,
    system_nameserver: impl FnOnce() -> Option<SocketAddr>,
) -> Result<Arc<dyn Discovery>, ConfigError> {
    let registry_cache = config.registry_cache.map_or(crate::DEFAULT_REGISTRY_CACHE, |d| d.as_std());
    let registry = RegistryDiscovery::new(store).with_cache_ttl(registry_cache);

    let mut statics = StaticDiscovery::new();
    let mut dns_services = Vec::new();
    let mut static_names = Vec::new();
    for (name, service) in &config.services {
        if name.trim().is_empty() || name.contains(char::is_whitespace) {
            return Err(ConfigError::InvalidServiceName(name.clone()));
        }
        match service {
            ServiceConfig::Static(nodes) => {
                statics = statics.with_nodes(name.clone(), nodes);
                static_names.push(name.clone());
            }
            ServiceConfig::Dns(d) => dns_services.push((name.clone(), d.clone())),
        }
    }

    let mut router = Router::new(Arc::new(registry));
    let statics: Arc<dyn Discovery> = Arc::new(statics);
    for name in static_names {
        router = router.with_route(name, statics.clone());
    }
    if let Some((first, _)) = dns_services.first() {
        let nameserver = match config.nameserver {
            Some(ns) => ns,
            None => system_nameserver().ok_or_else(|| ConfigError::NoNameserver { service: first.clone() })?,
        };
        let timeout: Duration = config.dns_timeout.map_or(dns::DEFAULT_DNS_TIMEOUT, |d| d.as_std());
        let mut source = DnsDiscovery::new(nameserver).with_timeout(timeout);
        for (name, service) in &dns_services {
            source = source.with_service(name.clone(), service.clone());
        }
        let source: Arc<dyn Discovery> = Arc::new(source);
        for (name, _) in dns_services {
            router = router.with_route(name, source.clone());
        }
    }
    Ok(Arc::new(router))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> Arc<dyn rota_store::Store> {
        Arc::new(rota_store_sql::testing::fresh_sqlite().await)
    }

    fn dns_config(nameserver: Option<SocketAddr>) -> DiscoveryConfig {
        let service = DnsService::new("a:x.example:80".parse().unwrap());
        DiscoveryConfig {
            nameserver,
            services: BTreeMap::from([("reports".to_string(), ServiceConfig::Dns(service))]),
            ..DiscoveryConfig::default()
        }
    }

    #[tokio::test]
    async fn a_dns_service_needs_a_nameserver() {
        let err = build_with_nameserver(store().await, &dns_config(None), || None).err().expect("refused");
        assert_eq!(err, ConfigError::NoNameserver { service: "reports".into() });
        assert!(err.to_string().contains("discovery.nameserver"), "{err}");
        let system: SocketAddr = "10.0.0.53:53".parse().unwrap();
        assert!(build_with_nameserver(store().await, &dns_config(None), || Some(system)).is_ok());
        let configured = Some("127.0.0.1:5353".parse().unwrap());
        assert!(build_with_nameserver(store().await, &dns_config(configured), || unreachable!()).is_ok());
    }

    #[tokio::test]
    async fn service_names_must_be_usable() {
        let mut c = DiscoveryConfig::default();
        c.services.insert("has space".into(), ServiceConfig::Static(vec![]));
        let err = build(store().await, &c).err().expect("refused");
        assert_eq!(err, ConfigError::InvalidServiceName("has space".into()));
    }

    #[test]
    fn nameservers() {
        assert_eq!(parse_nameserver("127.0.0.1:5353"), Ok("127.0.0.1:5353".parse().unwrap()));
        assert_eq!(parse_nameserver("[::1]"), Ok("[::1]:53".parse().unwrap()));
        assert_eq!(parse_nameserver("[::1]:5300"), Ok("[::1]:5300".parse().unwrap()));
        assert!(parse_nameserver("localhost:53").is_err());
    }
}
