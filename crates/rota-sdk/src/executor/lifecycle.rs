//! The node towards the scheduler: registration, declared tasks, heartbeats, drain and deregistration.
//! Transport-independent (the HTTP and gRPC servers share it); only the registration's address and protocol and
//! the default target of declared tasks differ.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rota_proto::{ExecutorLease, ExecutorProtocol, ExecutorRegistration};

use super::{ExecutorError, ExecutorNode};
use crate::{Client, ClientError, TaskDocument};

/// The caller's shutdown signal, polled while the node starts.
pub(crate) type Shutdown<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

const FIRST_RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(5);
const MIN_HEARTBEAT: Duration = Duration::from_millis(50);
const MAX_HEARTBEAT: Duration = Duration::from_secs(300);

/// Whether a failed call to the scheduler is worth retrying: it was not reached, or failed on its side.
fn retryable(e: &ClientError) -> bool {
    match e {
        ClientError::Transport { .. } => true,
        other => other.status().is_some_and(|s| s >= 500),
    }
}

/// Calls `f` until it succeeds or fails for good; retryable failures are logged and retried with backoff.
/// `Ok(None)`: `shutdown` resolved first (it is then spent).
async fn retrying<T, F, Fut>(what: &str, shutdown: &mut Shutdown<'_>, mut f: F) -> Result<Option<T>, ClientError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    let mut backoff = FIRST_RETRY;
    loop {
        let attempt = tokio::select! {
            r = f() => r,
            () = &mut *shutdown => return Ok(None),
        };
        match attempt {
            Ok(v) => return Ok(Some(v)),
            Err(e) if retryable(&e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "{what} failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = &mut *shutdown => return Ok(None),
                }
                backoff = (backoff * 2).min(MAX_RETRY);
            }
            Err(e) => return Err(e),
        }
    }
}

fn heartbeat_interval(lease: &ExecutorLease) -> Duration {
    Duration::from_millis(lease.heartbeat_interval_ms).clamp(MIN_HEARTBEAT, MAX_HEARTBEAT)
}

/// The running heartbeat loop; stopped by [`Heartbeat::stop`].
pub(crate) struct Heartbeat {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Heartbeat {
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

impl ExecutorNode {
    pub(crate) fn registration(&self, address: &str, protocol: ExecutorProtocol) -> ExecutorRegistration {
        ExecutorRegistration {
            id: self.id().to_string(),
            service: self.inner.service.clone(),
            address: address.to_string(),
            protocol,
            labels: self.inner.labels.clone(),
            weight: self.inner.weight,
            capacity: self.inner.capacity,
        }
    }

    /// Registers and applies the declared tasks. `Ok(None)` when the shutdown came first or there is no
    /// scheduler configured. A refused registration or task is an error (after deregistering again).
    pub(crate) async fn start(
        &self,
        registration: &ExecutorRegistration,
        shutdown: &mut Shutdown<'_>,
    ) -> Result<Option<(Client, Heartbeat)>, ExecutorError> {
        let Some(client) = self.inner.scheduler.clone() else {
            return Ok(None);
        };
        let register_error = |source| ExecutorError::Register { id: registration.id.clone(), source };
        let lease = retrying("registering with the scheduler", shutdown, || client.register_executor(registration))
            .await
            .map_err(register_error)?;
        let Some(lease) = lease else { return Ok(None) };
        tracing::info!(id = %registration.id, service = %registration.service, address = %registration.address,
            state = %lease.state, heartbeat_ms = lease.heartbeat_interval_ms, "executor node registered");
        let heartbeat = self.spawn_heartbeat(client.clone(), registration.clone(), heartbeat_interval(&lease));
        match self.apply_tasks(&client, registration.protocol, shutdown).await {
            Ok(true) => Ok(Some((client, heartbeat))),
            Ok(false) => {
                heartbeat.stop().await;
                self.deregister(&client).await;
                Ok(None)
            }
            Err(e) => {
                heartbeat.stop().await;
                self.deregister(&client).await;
                Err(e)
            }
        }
    }

    /// Applies each declared task unless the stored one is identical. `Ok(false)`: interrupted by shutdown.
    async fn apply_tasks(
        &self,
        client: &Client,
        protocol: ExecutorProtocol,
        shutdown: &mut Shutdown<'_>,
    ) -> Result<bool, ExecutorError> {
        for task in &self.inner.tasks {
            let document = task.document_for(protocol);
            let fail = |source| ExecutorError::ApplyTask { task: task.key.clone(), source };
            let (namespace, name) = task.key.split_once('/').expect("keys are namespace/name");
            let current = retrying("reading a declared task", shutdown, || async {
                match client.get_task(namespace, name).await {
                    Ok(view) => Ok(Some(view)),
                    Err(e) if e.is_not_found() => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .await
            .map_err(fail)?;
            let Some(current) = current else { return Ok(false) };
            let desired = serde_json::from_value::<rota_spec::Task>(document.clone()).ok();
            let stored = current.and_then(|view| serde_json::from_value::<rota_spec::Task>(view.spec).ok());
            if desired.is_some() && desired == stored {
                tracing::debug!(task = %task.key, "declared task unchanged");
                continue;
            }
            let applied =
                retrying("applying a declared task", shutdown, || client.apply(TaskDocument::Json(document.clone())))
                    .await
                    .map_err(fail)?;
            let Some(applied) = applied else { return Ok(false) };
            tracing::info!(task = %task.key, version = applied.task.version, "declared task {}", applied.action());
        }
        Ok(true)
    }

    fn spawn_heartbeat(&self, client: Client, registration: ExecutorRegistration, interval: Duration) -> Heartbeat {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let node = self.clone();
        let task = tokio::spawn(async move {
            let mut interval = interval;
            loop {
                tokio::select! {
                    _ = stopped.wait_for(|s| *s) => return,
                    () = tokio::time::sleep(interval) => {}
                }
                let id = &registration.id;
                match client.executor_heartbeat(id).await {
                    Ok(lease) => interval = heartbeat_interval(&lease),
                    Err(e) if e.status() == Some(404) && node.inner.draining.load(Ordering::SeqCst) => {
                        tracing::debug!(%id, "the scheduler forgot the draining node; not re-registering");
                    }
                    Err(e) if e.status() == Some(404) => {
                        tracing::warn!(%id, "the scheduler forgot this node (heartbeat answered 404); re-registering");
                        match client.register_executor(&registration).await {
                            Ok(lease) => {
                                interval = heartbeat_interval(&lease);
                                tracing::info!(%id, "executor node registered again");
                            }
                            Err(e) => tracing::warn!(%id, error = %e, "re-registration failed; retrying"),
                        }
                    }
                    Err(e) => tracing::warn!(%id, error = %e, "heartbeat failed; retrying"),
                }
            }
        });
        Heartbeat { stop, task }
    }

    /// Drains: refuses new dispatches, tells the scheduler, waits (bounded) for what runs, then deregisters.
    pub(crate) async fn drain(&self, registered: Option<(Client, Heartbeat)>) {
        self.inner.draining.store(true, Ordering::SeqCst);
        let id = self.id().to_string();
        if let Some((client, _)) = &registered {
            match client.drain_executor(&id).await {
                Ok(()) => tracing::info!(%id, "executor node draining"),
                Err(e) => tracing::warn!(%id, error = %e, "could not tell the scheduler the node is draining"),
            }
        }
        let mut in_flight = self.inner.in_flight.subscribe();
        let timeout = self.inner.drain_timeout;
        if tokio::time::timeout(timeout, in_flight.wait_for(|n| *n == 0)).await.is_err() {
            tracing::warn!(%id, in_flight = self.in_flight(), timeout_ms = timeout.as_millis() as u64,
                "drain timeout: leaving runs unfinished");
        }
        if let Some((client, heartbeat)) = registered {
            heartbeat.stop().await;
            self.deregister(&client).await;
        }
    }

    async fn deregister(&self, client: &Client) {
        let id = self.id();
        match client.deregister_executor(id).await {
            Ok(()) => tracing::info!(%id, "executor node deregistered"),
            Err(e) if e.status() == Some(404) => tracing::debug!(%id, "executor node was not registered anymore"),
            Err(e) => tracing::warn!(%id, error = %e, "could not deregister the executor node"),
        }
    }
}
