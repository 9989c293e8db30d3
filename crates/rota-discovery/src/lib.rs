//! Rota's built-in executor discovery sources, each implementing [`rota_core::Discovery`] exactly as a user's own
//! source would:
//!
//! * [`RegistryDiscovery`]: the live executor nodes of the store's node registry (short per-service cache);
//! * [`StaticDiscovery`]: fixed lists of nodes from the configuration;
//! * [`DnsDiscovery`]: DNS A/AAAA (`a:HOST:PORT`) and SRV (`srv:_service._proto.name`) records, through a small
//!   built-in client (UDP, TCP when truncated; TTL-bounded cache; the last good answer served when a refresh
//!   fails);
//! * [`Router`]: a source per service name, with a fallback (the registry) for every other service.
//!
//! [`build`] turns the server's `[discovery]` configuration ([`DiscoveryConfig`]) into that router.

mod clock;
mod config;
mod dns;
mod registry;
mod router;
mod static_source;

use std::fmt;

use serde::Deserialize;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{ConfigError, DiscoveryConfig, ServiceConfig, build, parse_nameserver};
pub use dns::{
    DEFAULT_DNS_TIMEOUT, DnsDiscovery, DnsService, DnsTarget, DnsTargetError, MAX_CACHE_TTL, MIN_CACHE_TTL,
    parse_resolv_conf, system_nameserver,
};
pub use registry::{DEFAULT_REGISTRY_CACHE, RegistryDiscovery};
pub use router::Router;
pub use static_source::{StaticDiscovery, StaticNode};

/// What an executor node speaks (`Candidate::protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http,
    Grpc,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Grpc => "grpc",
        }
    }

    /// The protocol a URL scheme implies: `grpc`, `grpcs` → grpc, anything else → http (as
    /// [`rota_core::Candidate::from_address`]).
    pub fn of_scheme(scheme: &str) -> Protocol {
        if scheme.eq_ignore_ascii_case("grpc") || scheme.eq_ignore_ascii_case("grpcs") {
            Protocol::Grpc
        } else {
            Protocol::Http
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A URL scheme per RFC 3986: a letter, then letters, digits, `+`, `-`, `.`.
pub(crate) fn valid_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}
