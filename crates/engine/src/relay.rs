//! The event relay: numbers the events state changes wrote to the outbox and creates
//! their deliveries, a batch per transaction, right after the commits that wrote them
//! (this process's writes wake it; other processes' are found by polling). Every
//! instance runs one; the store keeps them one at a time, so each merchant's sequence
//! stays gap-free and in the order events became visible.

use std::time::{Duration, Instant};

use kassa_core::events::STANDARD_FORMAT;
use kassa_store::{EventRow, Relayed, RELAY_BATCH};
use tokio::sync::watch;

use crate::worker::{self, Pace, Worker};
use crate::{Engine, EngineError};

/// How often the relay looks for events other processes wrote.
pub const RELAY_POLL: Duration = Duration::from_millis(100);

/// Most batches one cycle moves before it lets the loop look at shutdown.
const BATCHES_PER_CYCLE: usize = 20;

impl Engine {
    /// Relays every event committed so far (bounded: at most 1,000 batches); returns
    /// how many. The relay worker does this continuously; one-off runs and tests call it.
    pub async fn relay_events(&self) -> Result<usize, EngineError> {
        let mut total = 0;
        for _ in 0..1000 {
            let n = self.relay_batch().await?.events;
            total += n;
            if n < RELAY_BATCH as usize {
                break;
            }
        }
        Ok(total)
    }

    /// One relay transaction, each event's standard body rendered once as it is numbered.
    async fn relay_batch(&self) -> Result<Relayed, EngineError> {
        let render = |e: &EventRow| self.render(STANDARD_FORMAT, e).ok().map(|r| r.body);
        Ok(self.store.relay_events(RELAY_BATCH, &render).await?)
    }
}

struct Relay {
    engine: Engine,
    last_metrics: Option<Instant>,
}

impl Relay {
    /// Publishes the outbox backlog every couple of seconds (a relay that cannot keep
    /// up, or cannot write, shows here before merchants notice late callbacks).
    async fn update_metrics(&mut self) {
        if self.last_metrics.is_some_and(|t| t.elapsed() < Duration::from_secs(2)) {
            return;
        }
        self.last_metrics = Some(Instant::now());
        if let Ok((waiting, oldest)) = self.engine.store.outbox_backlog().await {
            metrics::gauge!("kassa_event_outbox_backlog").set(waiting as f64);
            let age = oldest.map(|t| (self.engine.now_ms() - t).max(0) as f64 / 1000.0).unwrap_or(0.0);
            metrics::gauge!("kassa_event_outbox_oldest_seconds").set(age);
        }
    }
}

impl Worker for Relay {
    async fn cycle(&mut self) {
        let mut more = false;
        for i in 0..BATCHES_PER_CYCLE {
            match self.engine.relay_batch().await {
                Ok(r) if r.events < RELAY_BATCH as usize => break,
                Ok(_) => more = i + 1 == BATCHES_PER_CYCLE,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot relay events from the outbox; retrying");
                    break;
                }
            }
        }
        self.update_metrics().await;
        if more {
            // More are waiting: go on at once.
            self.engine.store.wakes().outbox.notify_one();
        }
    }

    async fn stop(&mut self) {
        // What was committed before shutdown is numbered now rather than at the next start.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.cycle()).await;
    }
}

/// Starts the relay; it stops when `shutdown` turns true.
pub fn spawn_relay(engine: &Engine, shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    let pace = Pace { name: "event relay".into(), interval: RELAY_POLL, lease: None, wake: Some(engine.store.wakes().outbox.clone()) };
    tokio::spawn(worker::run(engine.clone(), pace, Relay { engine: engine.clone(), last_metrics: None }, shutdown))
}
