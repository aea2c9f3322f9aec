//! The one clock every time rule reads: expiry sweeps, quote lifetimes, retry
//! schedules, leases, signed-request windows. Production reads the system clock;
//! tests use a clock they can move forward, so no test sleeps to let business time
//! pass. Reading the clock is the only thing here that looks outside the process.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A shared clock, cheap to clone; every clone reads (and moves) the same time.
#[derive(Clone, Debug)]
pub struct Clock(Arc<Mode>);

#[derive(Debug)]
enum Mode {
    /// The system clock.
    System,
    /// The system clock plus an offset that only grows: time still flows (leases,
    /// ordering by creation time behave as in production), and a test jumps ahead.
    Shifted { offset_ms: AtomicI64 },
    /// Time that stands still until moved.
    Frozen { now_ms: AtomicI64 },
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

fn system_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

impl Clock {
    /// The system clock (what `kassa serve` runs on).
    pub fn system() -> Self {
        Self(Arc::new(Mode::System))
    }

    /// The system clock that tests can move forward with [`Clock::advance`].
    pub fn adjustable() -> Self {
        Self(Arc::new(Mode::Shifted { offset_ms: AtomicI64::new(0) }))
    }

    /// A clock standing at `now_ms` (Unix milliseconds) until advanced.
    pub fn frozen_at(now_ms: i64) -> Self {
        Self(Arc::new(Mode::Frozen { now_ms: AtomicI64::new(now_ms) }))
    }

    /// Unix time in milliseconds.
    pub fn now_ms(&self) -> i64 {
        match &*self.0 {
            Mode::System => system_ms(),
            Mode::Shifted { offset_ms } => system_ms().saturating_add(offset_ms.load(Ordering::SeqCst)),
            Mode::Frozen { now_ms } => now_ms.load(Ordering::SeqCst),
        }
    }

    /// Unix time in whole seconds.
    pub fn now_secs(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }

    /// Whether [`Clock::advance`] may move this clock.
    pub fn is_adjustable(&self) -> bool {
        !matches!(&*self.0, Mode::System)
    }

    /// Moves this clock (and every clone) forward.
    ///
    /// # Panics
    /// On the system clock: production time is never moved.
    pub fn advance(&self, by: Duration) {
        let by_ms = i64::try_from(by.as_millis()).expect("a clock advance fits in i64 milliseconds");
        match &*self.0 {
            Mode::System => panic!("the system clock cannot be moved; build the engine with Clock::adjustable()"),
            Mode::Shifted { offset_ms } => {
                offset_ms.fetch_add(by_ms, Ordering::SeqCst);
            }
            Mode::Frozen { now_ms } => {
                now_ms.fetch_add(by_ms, Ordering::SeqCst);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frozen_time_moves_only_when_advanced_and_clones_share_it() {
        let clock = Clock::frozen_at(1_700_000_000_123);
        let other = clock.clone();
        assert_eq!(clock.now_ms(), 1_700_000_000_123);
        assert_eq!(clock.now_secs(), 1_700_000_000);
        other.advance(Duration::from_secs(90));
        assert_eq!(clock.now_ms(), 1_700_000_090_123);
    }

    #[test]
    fn adjustable_time_flows_and_jumps() {
        let clock = Clock::adjustable();
        let before = clock.now_ms();
        clock.advance(Duration::from_secs(3600));
        let after = clock.now_ms();
        assert!(after >= before + 3_600_000, "{before} → {after}");
        assert!(after < before + 3_700_000, "{before} → {after}");
        assert!(clock.is_adjustable());
    }

    #[test]
    #[should_panic(expected = "cannot be moved")]
    fn the_system_clock_is_never_moved() {
        let clock = Clock::system();
        assert!(!clock.is_adjustable());
        clock.advance(Duration::from_secs(1));
    }

    #[test]
    fn negative_times_floor_to_seconds() {
        assert_eq!(Clock::frozen_at(-1).now_secs(), -1);
    }
}
