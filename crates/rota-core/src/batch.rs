//! Group commit: independent store writes queued by many tasks are sent to the store in batches.
//!
//! A [`Batcher`] owns one loop that waits for a first item, drains whatever else is queued (up to
//! [`MAX_BATCH`]), calls the store's batch method once (one transaction on the SQL backends) and hands each item
//! its own outcome through a oneshot. Under load the batch grows by itself (everything queued while the previous
//! batch was being written); when idle a single item is written at once, so nothing waits for a timer.
//!
//! Each item keeps its own all-or-nothing semantics (the batch methods' contract); a failure of the whole batch
//! (e.g. the connection dropped, nothing written) is reported to every item of it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use rota_store::{
    AttemptRecord, CompleteAttempt, FireOutcome, FireRequest, NewAttempt, RunRecord, Store, StoreError, StoreResult,
    Transition,
};
use tokio::sync::{mpsc, oneshot};

/// Largest batch sent to the store in one call.
pub(crate) const MAX_BATCH: usize = 512;

/// Batches of one kind written concurrently on a store that is not single-writer.
const WRITE_DEPTH: usize = 4;

type Reply<Resp> = oneshot::Sender<StoreResult<Resp>>;
type BatchFuture<Resp> = Pin<Box<dyn Future<Output = StoreResult<Vec<StoreResult<Resp>>>> + Send>>;

/// A queue of `Req`s written in batches by one background loop.
pub(crate) struct Batcher<Req, Resp> {
    tx: mpsc::UnboundedSender<(Req, Reply<Resp>)>,
}

impl<Req: Send + 'static, Resp: Send + 'static> Batcher<Req, Resp> {
    /// Spawns the loop on the current Tokio runtime. The loop ends when the batcher is dropped. `write` must return
    /// one outcome per request, in order.
    ///
    /// Batchers sharing a `writer` lock write one batch at a time between them (a single-writer store, where
    /// concurrent write transactions only wait for each other in the busy handler's sleeps).
    /// Up to `depth` batches are written concurrently (items are independent; each caller awaits its own).
    fn spawn(
        depth: usize,
        writer: Option<Arc<tokio::sync::Mutex<()>>>,
        write: impl Fn(Vec<Req>) -> BatchFuture<Resp> + Send + 'static,
    ) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<(Req, Reply<Resp>)>();
        let slots = Arc::new(tokio::sync::Semaphore::new(depth.max(1)));
        tokio::spawn(async move {
            // Wait for a free write slot before taking items, so that while every slot is busy the queue grows into
            // the next batch.
            while let Ok(permit) = slots.clone().acquire_owned().await {
                let Some(first) = rx.recv().await else { return };
                let mut reqs = Vec::with_capacity(16);
                let mut replies = Vec::with_capacity(16);
                reqs.push(first.0);
                replies.push(first.1);
                while reqs.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok((req, reply)) => {
                            reqs.push(req);
                            replies.push(reply);
                        }
                        Err(_) => break,
                    }
                }
                let n = reqs.len();
                let fut = write(reqs);
                let writer = writer.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let written = match &writer {
                        Some(lock) => {
                            let _turn = lock.lock().await;
                            fut.await
                        }
                        None => fut.await,
                    };
                    reply_all(replies, written, n);
                });
            }
        });
        Batcher { tx }
    }

    /// Queues `req` and waits for its own outcome.
    async fn call(&self, req: Req) -> StoreResult<Resp> {
        let (reply, rx) = oneshot::channel();
        self.tx.send((req, reply)).map_err(|_| batch_error("the batch writer has stopped"))?;
        rx.await.map_err(|_| batch_error("the batch writer has stopped"))?
    }
}

fn reply_all<Resp>(replies: Vec<Reply<Resp>>, written: StoreResult<Vec<StoreResult<Resp>>>, n: usize) {
    match written {
        Ok(outcomes) if outcomes.len() == n => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(outcome);
            }
        }
        Ok(outcomes) => {
            let msg = format!("the store returned {} outcomes for a batch of {n}", outcomes.len());
            for reply in replies {
                let _ = reply.send(Err(batch_error(&msg)));
            }
        }
        Err(e) => {
            let msg = e.to_string();
            for reply in replies {
                let _ = reply.send(Err(batch_error(&msg)));
            }
        }
    }
}

fn batch_error(msg: &str) -> StoreError {
    StoreError::backend(std::io::Error::other(format!("batched write failed: {msg}")))
}

type StartOut = (RunRecord, AttemptRecord);
type CompleteOut = (Option<RunRecord>, AttemptRecord);

/// The store writes of the hot path (fire, attempt start, attempt completion), group-committed when a Tokio
/// runtime is available at construction, else written one by one.
pub(crate) struct Writes {
    store: Arc<dyn Store>,
    batchers: Option<Batchers>,
}

struct Batchers {
    fire: Batcher<FireRequest, FireOutcome>,
    start: Batcher<(Transition, NewAttempt), StartOut>,
    complete: Batcher<(CompleteAttempt, Option<Transition>), CompleteOut>,
}

impl Writes {
    pub fn new(store: Arc<dyn Store>) -> Self {
        // SQLite has one writer: concurrent batch transactions would only collide (SQLITE_BUSY, then the busy
        // handler's sleeps), so its batches take turns.
        let writer = (store.backend_name() == "sqlite").then(|| Arc::new(tokio::sync::Mutex::new(())));
        // Other backends write several batches of a kind at once (a batch is mostly waiting for round trips).
        let depth = if writer.is_some() { 1 } else { WRITE_DEPTH };
        let batchers = tokio::runtime::Handle::try_current().ok().map(|_| {
            let s = store.clone();
            let fire = Batcher::spawn(depth, writer.clone(), move |reqs| {
                let s = s.clone();
                Box::pin(async move { s.fire_batch(reqs).await })
            });
            let s = store.clone();
            let start = Batcher::spawn(depth, writer.clone(), move |items| {
                let s = s.clone();
                Box::pin(async move { s.start_attempts(items).await })
            });
            let s = store.clone();
            let complete = Batcher::spawn(depth, writer, move |items| {
                let s = s.clone();
                Box::pin(async move { s.complete_attempts(items).await })
            });
            Batchers { fire, start, complete }
        });
        Writes { store, batchers }
    }

    /// [`TaskStore::fire`](rota_store::TaskStore::fire), batched.
    pub async fn fire(&self, req: FireRequest) -> StoreResult<FireOutcome> {
        match &self.batchers {
            Some(b) => b.fire.call(req).await,
            None => self.store.fire(req).await,
        }
    }

    /// [`RunStore::start_attempt`](rota_store::RunStore::start_attempt), batched.
    pub async fn start_attempt(&self, t: Transition, a: NewAttempt) -> StoreResult<StartOut> {
        match &self.batchers {
            Some(b) => b.start.call((t, a)).await,
            None => self.store.start_attempt(t, a).await,
        }
    }

    /// [`RunStore::complete_attempt`](rota_store::RunStore::complete_attempt), batched.
    pub async fn complete_attempt(&self, c: CompleteAttempt, t: Option<Transition>) -> StoreResult<CompleteOut> {
        match &self.batchers {
            Some(b) => b.complete.call((c, t)).await,
            None => self.store.complete_attempt(c, t).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn every_item_gets_its_own_outcome_and_batches_form_under_load() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let b: Arc<Batcher<u32, u32>> = Arc::new(Batcher::spawn(1, None, move |reqs: Vec<u32>| {
            c.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                Ok(reqs
                    .into_iter()
                    .map(|r| if r % 2 == 0 { Ok(r * 10) } else { Err(StoreError::not_found("x", r)) })
                    .collect())
            })
        }));
        let handles: Vec<_> = (0..100u32)
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move { (i, b.call(i).await) })
            })
            .collect();
        for h in handles {
            let (i, r) = h.await.unwrap();
            match r {
                Ok(v) => assert_eq!(v, i * 10),
                Err(StoreError::NotFound { .. }) => assert!(i % 2 == 1),
                Err(e) => panic!("{e}"),
            }
        }
        assert!(calls.load(Ordering::SeqCst) < 100, "items were grouped");
    }

    #[tokio::test]
    async fn a_failed_batch_fails_each_item() {
        let b: Batcher<u32, u32> =
            Batcher::spawn(2, None, |_| Box::pin(async { Err(StoreError::backend(std::io::Error::other("down"))) }));
        assert!(matches!(b.call(1).await, Err(StoreError::Backend(_))));
    }
}
