//! [`RegistryDiscovery`]: the executor nodes registered (and heartbeating) in the store's node registry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rota_core::{Candidate, Discovery, DiscoveryError};
use rota_store::{NodeFilter, NodeKind, NodeRecord, NodeState, NodeStore, StoreResult};

use crate::clock::{self, Clock, SystemClock};

/// Default time a service's answer is reused.
pub const DEFAULT_REGISTRY_CACHE: Duration = Duration::from_millis(500);

/// The one store call the registry source makes, so it can hold any `NodeStore` (including `dyn Store`).
#[async_trait]
trait ListNodes: Send + Sync {
    async fn list(&self, filter: &NodeFilter) -> StoreResult<Vec<NodeRecord>>;
}

struct Holder<S: ?Sized>(Arc<S>);

#[async_trait]
impl<S: NodeStore + ?Sized + 'static> ListNodes for Holder<S> {
    async fn list(&self, filter: &NodeFilter) -> StoreResult<Vec<NodeRecord>> {
        self.0.list_nodes(filter).await
    }
}

struct CacheEntry {
    candidates: Vec<Candidate>,
    fetched_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

/// Every live executor node of a service in the store's node registry (`kind = executor`, not expired at the
/// clock's now), draining ones flagged, in id order.
///
/// Each service's answer is cached for a short TTL ([`DEFAULT_REGISTRY_CACHE`]), so a dispatch storm makes one
/// query per service per TTL (concurrent callers of one service wait for the same query). Failed queries are
/// not cached. Any service name is answered (an unknown one has no nodes: an empty list), so this source fits
/// as a fallback.
pub struct RegistryDiscovery {
    store: Box<dyn ListNodes>,
    ttl: Duration,
    clock: Arc<dyn Clock>,
    cache: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<CacheEntry>>>>>,
}

impl RegistryDiscovery {
    /// A registry source on `store` (any `NodeStore`, e.g. an `Arc<dyn rota_store::Store>`), cache TTL
    /// [`DEFAULT_REGISTRY_CACHE`].
    pub fn new<S: NodeStore + ?Sized + 'static>(store: Arc<S>) -> RegistryDiscovery {
        RegistryDiscovery {
            store: Box::new(Holder(store)),
            ttl: DEFAULT_REGISTRY_CACHE,
            clock: Arc::new(SystemClock),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// How long a service's answer is reused (`Duration::ZERO`: ask the store every time).
    pub fn with_cache_ttl(mut self, ttl: Duration) -> RegistryDiscovery {
        self.ttl = ttl;
        self
    }

    /// The clock giving "now" for liveness (`alive_at`) and for the cache.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> RegistryDiscovery {
        self.clock = clock;
        self
    }

    pub fn cache_ttl(&self) -> Duration {
        self.ttl
    }

    fn slot(&self, service: &str) -> Arc<tokio::sync::Mutex<Option<CacheEntry>>> {
        let mut map = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(service.to_string()).or_default().clone()
    }
}

fn candidate(n: NodeRecord) -> Candidate {
    Candidate {
        id: n.id,
        address: n.address,
        protocol: n.protocol,
        labels: n.labels,
        weight: n.weight.max(1),
        capacity: n.capacity,
        draining: n.state == NodeState::Draining,
    }
}

/// `text` with every URL-like word (`scheme://…`) replaced, so a backend message that quotes a connection string
/// cannot leak it.
pub(crate) fn redact_urls(text: &str) -> String {
    text.split(' ').map(|w| if w.contains("://") { "<redacted>" } else { w }).collect::<Vec<_>>().join(" ")
}

#[async_trait]
impl Discovery for RegistryDiscovery {
    async fn candidates(&self, service: &str) -> Result<Vec<Candidate>, DiscoveryError> {
        let slot = self.slot(service);
        let mut cache = slot.lock().await;
        let now = self.clock.now();
        if let Some(entry) = cache.as_ref()
            && clock::fresh(now, entry.fetched_at, entry.expires_at)
        {
            return Ok(entry.candidates.clone());
        }
        let filter =
            NodeFilter { kind: Some(NodeKind::Executor), service: Some(service.to_string()), alive_at: Some(now) };
        let nodes = self.store.list(&filter).await.map_err(|e| {
            tracing::warn!(service, error = %e, "node registry query failed");
            DiscoveryError::Unavailable {
                service: service.to_string(),
                reason: format!("node registry query failed: {}", redact_urls(&e.to_string())),
            }
        })?;
        let mut candidates: Vec<Candidate> = nodes.into_iter().map(candidate).collect();
        // The store orders by id already; sorting again keeps the contract whatever the backend does.
        candidates.sort_by(|a, b| a.id.cmp(&b.id));
        if !self.ttl.is_zero() {
            *cache = Some(CacheEntry {
                candidates: candidates.clone(),
                fetched_at: now,
                expires_at: clock::add(now, self.ttl),
            });
        }
        Ok(candidates)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_urls("error connecting to postgres://u:secret@db:5432/rota: refused"),
            "error connecting to <redacted> refused"
        );
        assert_eq!(redact_urls("pool timed out"), "pool timed out");
    }
}
