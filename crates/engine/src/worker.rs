//! The one loop every background worker runs: take (or renew) its lease when it is
//! one-per-deployment, run one bounded cycle if it holds it, then sleep until its
//! interval passes, something wakes it, or shutdown. A worker only says what one
//! cycle does.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::Engine;

/// How a worker is paced.
#[derive(Clone, Debug)]
pub struct Pace {
    /// Its name in logs.
    pub name: String,
    /// Time between cycles.
    pub interval: Duration,
    /// The lease that keeps it to one instance (several instances may share one
    /// PostgreSQL), with its lifetime; None: every instance runs it.
    pub lease: Option<(String, Duration)>,
    /// Wakes it before its interval (e.g. a node hook).
    pub wake: Option<Arc<Notify>>,
}

/// One cycle of a worker (bounded: it must return).
pub trait Worker: Send {
    fn cycle(&mut self) -> impl Future<Output = ()> + Send;

    /// Runs once at shutdown, after the last cycle (e.g. to let work in flight
    /// finish, bounded by the worker's own timeout).
    fn stop(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Runs `worker` on `pace` until `shutdown` turns true.
pub async fn run<W: Worker>(engine: Engine, pace: Pace, mut worker: W, mut shutdown: watch::Receiver<bool>) {
    tracing::info!(worker = %pace.name, "worker started");
    loop {
        let holds = match &pace.lease {
            None => true,
            Some((lease, ttl)) => match engine.lease(lease, *ttl).await {
                Ok(held) => held,
                Err(e) => {
                    tracing::warn!(worker = %pace.name, error = %e, "cannot take the worker's lease");
                    false
                }
            },
        };
        if holds {
            worker.cycle().await;
        }
        let woken = async {
            match &pace.wake {
                Some(w) => w.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pace.interval) => {}
            _ = woken => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            worker.stop().await;
            tracing::info!(worker = %pace.name, "worker stopped");
            return;
        }
    }
}

/// A worker whose cycle is a closure (the small periodic sweeps).
pub struct Sweep<F>(pub F);

impl<F, Fut> Worker for Sweep<F>
where
    F: FnMut() -> Fut + Send,
    Fut: Future<Output = ()> + Send,
{
    fn cycle(&mut self) -> impl Future<Output = ()> + Send {
        (self.0)()
    }
}
