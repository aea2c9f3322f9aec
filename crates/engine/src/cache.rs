//! Short-lived read caches for the hot request paths (API keys, balances). An entry
//! is served while it is younger than the cache's lifetime and, for caches tied to
//! the ledger, while no ledger batch has been committed by this process since it was
//! read. Writes made elsewhere (another instance, a CLI command) are therefore seen
//! within one lifetime; a lifetime of zero turns the cache off. Age is measured on
//! the engine's clock.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use kassa_core::Clock;

/// Entries kept at most; past this the cache starts over.
const CAPACITY: usize = 10_000;

pub struct ReadCache<K, V> {
    lifetime_ms: i64,
    clock: Clock,
    /// Per key: when it was read (clock milliseconds), the ledger generation, the value.
    entries: Mutex<HashMap<K, (i64, u64, V)>>,
}

impl<K: Eq + Hash, V: Clone> ReadCache<K, V> {
    pub fn new(lifetime: Duration, clock: Clock) -> Self {
        let lifetime_ms = i64::try_from(lifetime.as_millis()).unwrap_or(i64::MAX);
        Self { lifetime_ms, clock, entries: Mutex::new(HashMap::new()) }
    }

    pub fn enabled(&self) -> bool {
        self.lifetime_ms > 0
    }

    /// The entry for `key`, if it is younger than the lifetime and was read at
    /// `generation`.
    pub fn get(&self, key: &K, generation: u64) -> Option<V> {
        if !self.enabled() {
            return None;
        }
        let now = self.clock.now_ms();
        let entries = self.entries.lock().expect("cache lock");
        match entries.get(key) {
            Some((at, g, v)) if *g == generation && now.saturating_sub(*at) < self.lifetime_ms => Some(v.clone()),
            _ => None,
        }
    }

    /// Remembers `value`, read at `generation` (taken before the read began).
    pub fn put(&self, key: K, value: V, generation: u64) {
        if !self.enabled() {
            return;
        }
        let mut entries = self.entries.lock().expect("cache lock");
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(key, (self.clock.now_ms(), generation, value));
    }

    pub fn forget(&self, key: &K) {
        self.entries.lock().expect("cache lock").remove(key);
    }

    pub fn clear(&self) {
        self.entries.lock().expect("cache lock").clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_follow_the_generation() {
        let clock = Clock::adjustable();
        let c = ReadCache::new(Duration::from_millis(50), clock.clone());
        c.put("a", 1, 7);
        assert_eq!(c.get(&"a", 7), Some(1));
        assert_eq!(c.get(&"a", 8), None, "a ledger commit since the read");
        clock.advance(Duration::from_millis(49));
        assert_eq!(c.get(&"a", 7), Some(1), "younger than the lifetime");
        clock.advance(Duration::from_millis(1));
        assert_eq!(c.get(&"a", 7), None, "older than the lifetime");
        c.put("b", 2, 1);
        c.forget(&"b");
        assert_eq!(c.get(&"b", 1), None);
        let off = ReadCache::new(Duration::ZERO, clock);
        off.put("a", 1, 0);
        assert_eq!(off.get(&"a", 0), None);
    }
}
