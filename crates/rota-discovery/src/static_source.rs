//! [`StaticDiscovery`]: fixed lists of nodes per service, from the server's configuration.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use async_trait::async_trait;
use rota_core::{Candidate, Discovery, DiscoveryError};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use crate::Protocol;

/// One node of a static list: in the configuration either a plain address (`"http://10.0.0.5:8080"`) or a
/// table `{ address, labels, weight, capacity, protocol }` (all but `address` optional).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticNode {
    pub address: String,
    pub labels: BTreeMap<String, String>,
    /// Relative weight (>= 1; default 1).
    pub weight: u32,
    /// Concurrent runs the node accepts (default 0 = unbounded).
    pub capacity: u32,
    /// What the node speaks; default from the address scheme (`grpc://`, `grpcs://` → grpc, else http).
    pub protocol: Option<Protocol>,
}

impl StaticNode {
    /// A node known only by its address.
    pub fn new(address: impl Into<String>) -> StaticNode {
        StaticNode { address: address.into(), labels: BTreeMap::new(), weight: 1, capacity: 0, protocol: None }
    }

    /// The candidate this node stands for (id = address).
    pub fn candidate(&self) -> Candidate {
        let mut c = Candidate::from_address(&self.address);
        c.labels = self.labels.clone();
        c.weight = self.weight.max(1);
        c.capacity = self.capacity;
        if let Some(p) = self.protocol {
            c.protocol = p.as_str().to_string();
        }
        c
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeTable {
    address: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default = "one")]
    weight: u32,
    #[serde(default)]
    capacity: u32,
    #[serde(default)]
    protocol: Option<Protocol>,
}

fn one() -> u32 {
    1
}

fn check_address<E: de::Error>(address: &str) -> Result<(), E> {
    if address.trim().is_empty() || address.contains(char::is_whitespace) {
        return Err(E::custom(format!("invalid node address {address:?}: expected e.g. \"http://10.0.0.5:8080\"")));
    }
    Ok(())
}

impl<'de> Deserialize<'de> for StaticNode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NodeVisitor;

        impl<'de> Visitor<'de> for NodeVisitor {
            type Value = StaticNode;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a node address string or a table with `address` (and optional `labels`, `weight`, `capacity`, `protocol`)")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<StaticNode, E> {
                check_address(v)?;
                Ok(StaticNode::new(v))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<StaticNode, A::Error> {
                let t = NodeTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                check_address(&t.address)?;
                if t.weight == 0 {
                    return Err(de::Error::custom("invalid `weight` 0: a node's weight is at least 1"));
                }
                Ok(StaticNode {
                    address: t.address,
                    labels: t.labels,
                    weight: t.weight,
                    capacity: t.capacity,
                    protocol: t.protocol,
                })
            }
        }

        deserializer.deserialize_any(NodeVisitor)
    }
}

/// A fixed map service → nodes. The nodes are returned in the order given; an unknown service is
/// [`DiscoveryError::UnknownService`].
#[derive(Debug, Clone, Default)]
pub struct StaticDiscovery {
    services: HashMap<String, Vec<Candidate>>,
}

impl StaticDiscovery {
    pub fn new() -> StaticDiscovery {
        StaticDiscovery::default()
    }

    /// Adds (or replaces) a service with these nodes.
    pub fn with_service(mut self, service: impl Into<String>, nodes: Vec<Candidate>) -> StaticDiscovery {
        self.services.insert(service.into(), nodes);
        self
    }

    /// Adds (or replaces) a service from configured nodes.
    pub fn with_nodes(self, service: impl Into<String>, nodes: &[StaticNode]) -> StaticDiscovery {
        self.with_service(service, nodes.iter().map(StaticNode::candidate).collect())
    }
}

#[async_trait]
impl Discovery for StaticDiscovery {
    async fn candidates(&self, service: &str) -> Result<Vec<Candidate>, DiscoveryError> {
        self.services.get(service).cloned().ok_or_else(|| DiscoveryError::UnknownService(service.to_string()))
    }
}
