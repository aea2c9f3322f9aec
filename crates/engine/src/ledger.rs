//! The ledger service: every ledger write goes through a bounded queue to a writer
//! task that takes whatever requests are waiting (up to `max_batch`) and commits them
//! in one database transaction. One durable commit then carries many transfers, which
//! is where the throughput comes from; each caller still gets its own outcome.
//!
//! Several instances on one PostgreSQL each run their own writer; the store's row
//! locks keep them correct. With SQLite, `BEGIN IMMEDIATE` serialises writers.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kassa_core::ledger::{AccountId, AccountKey, LedgerError, TxRequest};
use kassa_store::{Store, StoreError, TxOutcome};
use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot};

use crate::EngineError;

#[derive(Clone, Copy, Debug)]
pub struct LedgerOptions {
    /// Most requests committed together.
    pub max_batch: usize,
    /// Requests that may wait in the queue before callers are slowed down.
    pub queue_capacity: usize,
    /// Concurrent writer tasks (1 is right for SQLite; PostgreSQL may use more).
    pub writers: usize,
}

impl Default for LedgerOptions {
    fn default() -> Self {
        Self { max_batch: 1024, queue_capacity: 16_384, writers: 1 }
    }
}

type Reply = oneshot::Sender<Result<TxOutcome, WriteError>>;

#[derive(Debug, Clone)]
enum WriteError {
    Ledger(LedgerError),
    Store(Arc<StoreError>),
}

/// Handle to the ledger writer. Cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    queue: mpsc::Sender<(TxRequest, Reply)>,
    store: Store,
    accounts: Arc<Mutex<HashMap<AccountKey, AccountId>>>,
    /// Counts the batches this process's writers have finished (read caches compare it).
    generation: Arc<std::sync::atomic::AtomicU64>,
}

/// Largest number of account ids remembered; past it the cache starts over.
const ACCOUNT_CACHE_LIMIT: usize = 100_000;

impl Ledger {
    pub fn start(store: Store, options: LedgerOptions) -> Self {
        let (tx, rx) = mpsc::channel(options.queue_capacity.max(1));
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let generation = Arc::new(std::sync::atomic::AtomicU64::new(0));
        for _ in 0..options.writers.max(1) {
            tokio::spawn(writer(store.clone(), rx.clone(), options.max_batch.max(1), generation.clone()));
        }
        Self { queue: tx, store, accounts: Arc::new(Mutex::new(HashMap::new())), generation }
    }

    /// Changes whenever a batch of this process's ledger writes has been committed (or
    /// failed); read before a balance is read, it tells whether that read is still current.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Writes one transaction (or replays it, if its key was used with the same content).
    pub async fn submit(&self, request: TxRequest) -> Result<TxOutcome, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.queue.send((request, reply)).await.map_err(|_| EngineError::LedgerStopped)?;
        match answer.await.map_err(|_| EngineError::LedgerStopped)? {
            Ok(outcome) => Ok(outcome),
            Err(WriteError::Ledger(e)) => Err(EngineError::Ledger(e)),
            Err(WriteError::Store(e)) => Err(EngineError::Store(StoreError::Corrupt(format!("ledger write failed: {e}")))),
        }
    }

    /// The account for `key`, created on first use. Ids never change, so they are cached.
    pub async fn account(&self, key: &AccountKey) -> Result<AccountId, EngineError> {
        if let Some(id) = self.accounts.lock().expect("cache lock").get(key) {
            return Ok(*id);
        }
        let id = self.store.ensure_account(key).await?;
        let mut cache = self.accounts.lock().expect("cache lock");
        if cache.len() >= ACCOUNT_CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(key.clone(), id);
        Ok(id)
    }
}

async fn writer(
    store: Store,
    queue: Arc<tokio::sync::Mutex<mpsc::Receiver<(TxRequest, Reply)>>>,
    max_batch: usize,
    generation: Arc<std::sync::atomic::AtomicU64>,
) {
    let mut batch: Vec<(TxRequest, Reply)> = Vec::with_capacity(max_batch);
    loop {
        {
            let mut rx = queue.lock().await;
            if rx.recv_many(&mut batch, max_batch).await == 0 {
                return; // every sender is gone
            }
        }
        let (requests, replies): (Vec<TxRequest>, Vec<Reply>) = batch.drain(..).unzip();
        let started = Instant::now();
        // A panic while writing (a bug) fails this batch, not the writer: later
        // requests are still served.
        let written = AssertUnwindSafe(store.write_batch(&requests)).catch_unwind().await.unwrap_or_else(|_| {
            Err(StoreError::Corrupt("the ledger writer panicked; the batch was rolled back".into()))
        });
        // Before anyone hears of the outcome: a balance read from now on is read again.
        generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        match written {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(outcome.map_err(WriteError::Ledger));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, requests = requests.len(), "ledger batch failed; nothing of it was written");
                let e = Arc::new(e);
                for reply in replies {
                    let _ = reply.send(Err(WriteError::Store(e.clone())));
                }
            }
        }
        metrics::histogram!("kassa_ledger_batch_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("kassa_ledger_batch_size").record(requests.len() as f64);
    }
}
