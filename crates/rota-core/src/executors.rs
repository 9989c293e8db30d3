//! Executor nodes joining the execution cluster: registration, heartbeats, draining, leaving.
//!
//! An executor node registers in the store's node registry (kind `executor`) with its service, address,
//! protocol, labels, weight and capacity, then heartbeats every `executor_ttl / 3`. A node whose registration
//! has expired is no longer a candidate (the registry discovery asks for live nodes only); a draining node keeps
//! its registration (its runs may still report) but is never chosen for new work. Registrations are validated
//! here so that nothing the registry hands to a dispatch can be malformed.

use std::time::Duration;

use rota_proto::{ExecutorLease, ExecutorProtocol, ExecutorRegistration};
use rota_store::{NodeFilter, NodeKind, NodeRecord, NodeRegistration, NodeState, StoreError};

use crate::scheduler::{Inner, now};
use crate::{CoreError, CoreResult};

/// Longest node id and service name.
pub const MAX_ID_LEN: usize = 128;
/// Most labels a node may carry.
pub const MAX_LABELS: usize = 64;
/// Largest accepted weight.
pub const MAX_WEIGHT: u32 = 10_000;
/// Largest accepted capacity.
pub const MAX_CAPACITY: u32 = 1_000_000;

fn invalid(field: &str, reason: impl Into<String>) -> CoreError {
    CoreError::InvalidArgument { field: field.to_string(), reason: reason.into() }
}

fn check_name(field: &str, value: &str) -> CoreResult<()> {
    if value.is_empty() || value.len() > MAX_ID_LEN {
        return Err(invalid(field, format!("must be 1 to {MAX_ID_LEN} characters")));
    }
    if let Some(c) = value.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'))) {
        return Err(invalid(field, format!("may contain only letters, digits and . _ : - (found {c:?})")));
    }
    Ok(())
}

/// Checks an executor address: an `http(s)://host[:port]` URL for HTTP nodes; for gRPC nodes also `host:port` or
/// `grpc(s)://host:port`. No credentials, path, query or fragment (so nothing secret is stored or shown).
pub fn check_address(address: &str, protocol: ExecutorProtocol) -> CoreResult<()> {
    const FIELD: &str = "address";
    if address.is_empty() || address.len() > 2048 {
        return Err(invalid(FIELD, "must be 1 to 2048 characters"));
    }
    let (scheme, rest) = match address.split_once("://") {
        Some((s, r)) => (s, r),
        None if protocol == ExecutorProtocol::Grpc => ("grpc", address),
        None => return Err(invalid(FIELD, format!("expected an http:// or https:// URL, got {address:?}"))),
    };
    let allowed: &[&str] = match protocol {
        ExecutorProtocol::Http => &["http", "https"],
        ExecutorProtocol::Grpc => &["http", "https", "grpc", "grpcs"],
    };
    if !allowed.contains(&scheme) {
        return Err(invalid(
            FIELD,
            format!("scheme {scheme:?} is not allowed for a {} node (use {})", protocol.as_str(), allowed.join(", ")),
        ));
    }
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#']) {
        return Err(invalid(FIELD, "must not have a path, query or fragment (give the node's base address)"));
    }
    if authority.contains('@') {
        return Err(invalid(FIELD, "must not carry credentials"));
    }
    let (host, port) = split_host_port(authority).ok_or_else(|| invalid(FIELD, format!("bad host in {address:?}")))?;
    if host.is_empty() || !host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_')) {
        return Err(invalid(FIELD, format!("bad host {host:?}")));
    }
    match port {
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err(invalid(FIELD, format!("bad port {p:?} (1 to 65535)"))),
            Ok(_) => {}
        },
        None if scheme == "grpc" || scheme == "grpcs" => {
            return Err(invalid(FIELD, "a gRPC address needs a port (host:port)"));
        }
        None => {}
    }
    Ok(())
}

/// `host[:port]`, with `[v6]` brackets.
fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            a => Some((host, Some(a.strip_prefix(':')?))),
        };
    }
    match authority.rsplit_once(':') {
        Some((h, _)) if h.contains(':') => None, // an unbracketed IPv6 address
        Some((h, p)) => Some((h, Some(p))),
        None => Some((authority, None)),
    }
}

/// Checks a registration; every problem names its field.
pub fn validate_registration(reg: &ExecutorRegistration) -> CoreResult<()> {
    check_name("id", &reg.id)?;
    check_name("service", &reg.service)?;
    check_address(&reg.address, reg.protocol)?;
    if reg.labels.len() > MAX_LABELS {
        return Err(invalid("labels", format!("at most {MAX_LABELS} labels")));
    }
    for (k, v) in &reg.labels {
        check_name(&format!("labels.{k}"), k)?;
        if v.len() > 256 || v.chars().any(char::is_control) {
            return Err(invalid(
                &format!("labels.{k}"),
                "values are at most 256 characters, without control characters",
            ));
        }
    }
    if reg.weight == 0 || reg.weight > MAX_WEIGHT {
        return Err(invalid("weight", format!("must be 1 to {MAX_WEIGHT}")));
    }
    if reg.capacity > MAX_CAPACITY {
        return Err(invalid("capacity", format!("must be at most {MAX_CAPACITY} (0 = unbounded)")));
    }
    Ok(())
}

/// The registry row of an executor node, as the API shows it.
pub fn lease_of(record: &NodeRecord, ttl: Duration) -> ExecutorLease {
    ExecutorLease {
        id: record.id.clone(),
        state: record.state.as_str().to_string(),
        heartbeat_interval_ms: heartbeat_interval(ttl).as_millis() as u64,
        expires_at: record.expires_at,
    }
}

/// How often executors heartbeat: a third of the registration TTL.
pub fn heartbeat_interval(ttl: Duration) -> Duration {
    (ttl / 3).max(Duration::from_millis(100))
}

impl Inner {
    /// An executor node by id; `NotFound` when unknown or when the id belongs to a scheduler node.
    async fn executor_node(&self, id: &str) -> CoreResult<NodeRecord> {
        match self.store.get_node(id).await? {
            Some(n) if n.kind == NodeKind::Executor => Ok(n),
            _ => Err(CoreError::NotFound { entity: "executor node", key: id.to_string() }),
        }
    }

    pub(crate) async fn register_executor(&self, reg: ExecutorRegistration) -> CoreResult<ExecutorLease> {
        validate_registration(&reg)?;
        let now = now();
        if let Some(existing) = self.store.get_node(&reg.id).await? {
            if existing.kind != NodeKind::Executor {
                return Err(CoreError::Conflict(format!(
                    "node id {:?} belongs to a scheduler node; choose another id",
                    reg.id
                )));
            }
            let same = existing.service == reg.service && existing.address == reg.address;
            if !same && existing.expires_at > now {
                return Err(CoreError::Conflict(format!(
                    "node id {:?} is registered by a live node of service {:?} at {}; choose another id or wait \
                     until that registration expires ({})",
                    reg.id, existing.service, existing.address, existing.expires_at
                )));
            }
        }
        let ttl = self.config.executor_ttl;
        let record = self
            .store
            .register_node(
                NodeRegistration {
                    id: reg.id.clone(),
                    kind: NodeKind::Executor,
                    service: reg.service,
                    address: reg.address.trim_end_matches('/').to_string(),
                    protocol: reg.protocol.as_str().to_string(),
                    labels: reg.labels,
                    weight: reg.weight,
                    capacity: reg.capacity,
                },
                ttl,
                now,
            )
            .await?;
        tracing::info!(
            node = record.id.as_str(),
            service = record.service.as_str(),
            address = record.address.as_str(),
            "executor node registered"
        );
        Ok(lease_of(&record, ttl))
    }

    pub(crate) async fn heartbeat_executor(&self, id: &str) -> CoreResult<ExecutorLease> {
        self.executor_node(id).await?;
        let ttl = self.config.executor_ttl;
        match self.store.heartbeat_node(id, ttl, now()).await {
            Ok(record) => Ok(lease_of(&record, ttl)),
            Err(StoreError::NotFound { .. }) => Err(CoreError::NotFound { entity: "executor node", key: id.into() }),
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) async fn drain_executor(&self, id: &str) -> CoreResult<ExecutorLease> {
        self.executor_node(id).await?;
        let record = self.store.set_node_state(id, NodeState::Draining).await?;
        tracing::info!(node = id, "executor node draining");
        Ok(lease_of(&record, self.config.executor_ttl))
    }

    pub(crate) async fn deregister_executor(&self, id: &str) -> CoreResult<()> {
        self.executor_node(id).await?;
        self.store.deregister_node(id).await?;
        tracing::info!(node = id, "executor node left");
        Ok(())
    }

    pub(crate) async fn list_executors(&self, service: Option<&str>) -> CoreResult<Vec<NodeRecord>> {
        let filter =
            NodeFilter { kind: Some(NodeKind::Executor), service: service.map(str::to_string), alive_at: None };
        Ok(self.store.list_nodes(&filter).await?)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn reg(address: &str, protocol: ExecutorProtocol) -> ExecutorRegistration {
        ExecutorRegistration {
            id: "w-1".into(),
            service: "billing".into(),
            address: address.into(),
            protocol,
            labels: BTreeMap::new(),
            weight: 1,
            capacity: 0,
        }
    }

    fn field_of(r: CoreResult<()>) -> String {
        match r {
            Err(CoreError::InvalidArgument { field, .. }) => field,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn addresses_are_checked() {
        use ExecutorProtocol::*;
        for ok in ["http://127.0.0.1:8080", "https://worker.example.com", "http://[::1]:9000/", "http://a-b.c:1"] {
            assert!(validate_registration(&reg(ok, Http)).is_ok(), "{ok}");
        }
        for ok in ["127.0.0.1:50051", "grpc://w1:50051", "http://w1:50051", "[::1]:7"] {
            assert!(validate_registration(&reg(ok, Grpc)).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "127.0.0.1:8080",
            "ftp://x:1",
            "http://x:0",
            "http://x:70000",
            "http://x/path",
            "http://user:pw@x:1",
            "http://x?a=1",
            "http://",
            "http://ex ample:1",
            "http://::1:80",
        ] {
            assert_eq!(field_of(validate_registration(&reg(bad, Http))), "address", "{bad:?}");
        }
        assert_eq!(field_of(validate_registration(&reg("grpc://w1", Grpc))), "address");
    }

    #[test]
    fn ids_labels_weight_and_capacity_are_checked() {
        let mut r = reg("http://x:1", ExecutorProtocol::Http);
        r.id = "has space".into();
        assert_eq!(field_of(validate_registration(&r)), "id");
        r.id = "x".repeat(129);
        assert_eq!(field_of(validate_registration(&r)), "id");
        r.id = "ok".into();
        r.service = String::new();
        assert_eq!(field_of(validate_registration(&r)), "service");
        r.service = "s".into();
        r.weight = 0;
        assert_eq!(field_of(validate_registration(&r)), "weight");
        r.weight = 1;
        r.capacity = MAX_CAPACITY + 1;
        assert_eq!(field_of(validate_registration(&r)), "capacity");
        r.capacity = 0;
        r.labels.insert("zone".into(), "a\nb".into());
        assert_eq!(field_of(validate_registration(&r)), "labels.zone");
        r.labels.clear();
        r.labels.insert("bad key".into(), "v".into());
        assert_eq!(field_of(validate_registration(&r)), "labels.bad key");
    }
}
