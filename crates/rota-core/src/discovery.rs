//! Finding the executor nodes of a service: the [`Discovery`] trait.
//!
//! A task with `candidates.service: NAME` is dispatched to the nodes a [`Discovery`] returns for `NAME`. Rota's
//! built-in sources (the node registry executors register in, static lists from the server's configuration, DNS
//! A/AAAA and SRV records) live in the `rota-discovery` crate and implement this trait exactly as a user's own
//! source would (Consul, Nacos, Eureka, a CMDB, …). The core asks on every dispatch, so implementations cache.

use std::collections::BTreeMap;

use async_trait::async_trait;

/// One executor node that may run a task of the service it was discovered for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Stable node id (registry id; for static and DNS sources the address).
    pub id: String,
    /// Base URL (`http://host:port`, `https://…`) for HTTP nodes; `host:port` or a URL for gRPC nodes.
    pub address: String,
    /// `http` or `grpc`: what the node speaks. A task's target kind picks the nodes that speak it.
    pub protocol: String,
    /// Labels a `dispatch.selector` matches against.
    pub labels: BTreeMap<String, String>,
    /// Relative weight for `weighted` load balancing (>= 1).
    pub weight: u32,
    /// Concurrent runs the node accepts (`0` = unbounded); `busy_over` skips nodes at capacity.
    pub capacity: u32,
    /// A draining node finishes what it runs and takes no new work: never chosen.
    pub draining: bool,
}

impl Candidate {
    /// A node known only by its address (static lists, DNS): protocol from the scheme (`grpc://` → grpc,
    /// otherwise http), weight 1, unbounded capacity, no labels.
    pub fn from_address(address: &str) -> Candidate {
        let protocol = if address.starts_with("grpc://") || address.starts_with("grpcs://") { "grpc" } else { "http" };
        Candidate {
            id: address.to_string(),
            address: address.to_string(),
            protocol: protocol.to_string(),
            labels: BTreeMap::new(),
            weight: 1,
            capacity: 0,
            draining: false,
        }
    }
}

/// Why the candidates of a service could not be listed. Messages are safe to store on a run and show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    /// No source knows the service.
    #[error("unknown executor service {0:?}")]
    UnknownService(String),
    /// The source failed (DNS timeout, store down, …); the dispatch fails and is retried by policy.
    #[error("discovery of service {service:?} failed: {reason}")]
    Unavailable { service: String, reason: String },
}

/// A source of executor nodes per service name.
///
/// `candidates` returns every node of the service the source knows to be alive (draining ones included, flagged;
/// order is the source's stable order, which `first`, `last` and `failover` use). An empty list means "the
/// service exists but has no live node"; [`DiscoveryError::UnknownService`] means "not mine".
#[async_trait]
pub trait Discovery: Send + Sync + 'static {
    async fn candidates(&self, service: &str) -> Result<Vec<Candidate>, DiscoveryError>;
}

/// A discovery that knows no service (the default of a scheduler built without one).
pub struct NoDiscovery;

#[async_trait]
impl Discovery for NoDiscovery {
    async fn candidates(&self, service: &str) -> Result<Vec<Candidate>, DiscoveryError> {
        Err(DiscoveryError::UnknownService(service.to_string()))
    }
}
