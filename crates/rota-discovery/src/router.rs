//! [`Router`]: one discovery source per service name, with a fallback.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use rota_core::{Candidate, Discovery, DiscoveryError};

/// Sends each service to the source configured for it, and every other service to the fallback (Rota's
/// default: the node registry). Without a fallback an unrouted service is [`DiscoveryError::UnknownService`].
/// A routed service is answered by its source only (its `UnknownService` is not retried on the fallback).
#[derive(Clone, Default)]
pub struct Router {
    routes: HashMap<String, Arc<dyn Discovery>>,
    fallback: Option<Arc<dyn Discovery>>,
}

impl Router {
    /// A router sending every service to `fallback` until routes are added.
    pub fn new(fallback: Arc<dyn Discovery>) -> Router {
        Router { routes: HashMap::new(), fallback: Some(fallback) }
    }

    /// A router knowing only the services routed explicitly.
    pub fn without_fallback() -> Router {
        Router::default()
    }

    /// Routes `service` to `source` (replacing an earlier route).
    pub fn with_route(mut self, service: impl Into<String>, source: Arc<dyn Discovery>) -> Router {
        self.routes.insert(service.into(), source);
        self
    }

    /// Whether `service` has a route of its own.
    pub fn is_routed(&self, service: &str) -> bool {
        self.routes.contains_key(service)
    }
}

#[async_trait]
impl Discovery for Router {
    async fn candidates(&self, service: &str) -> Result<Vec<Candidate>, DiscoveryError> {
        match self.routes.get(service).or(self.fallback.as_ref()) {
            Some(source) => source.candidates(service).await,
            None => Err(DiscoveryError::UnknownService(service.to_string())),
        }
    }
}
