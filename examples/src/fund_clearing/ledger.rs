//! The exactly-once ledger hook: behaviors post `(idempotency key/entry → amount)` so a test
//! or demo can see that a re-run step did not double-post, and that a rollback reversed
//! exactly what the shard generation had posted.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

/// Where behaviors post money and share movements, keyed for exactly-once effect.
///
/// Keys are `{idempotency key}/{entry}`, e.g. `2026-11-24/confirm_trades/510002/g0/purchases`;
/// amounts are in fen (分, 0.01 yuan) or, for share entries, in 0.01 units.
pub trait Ledger: Send + Sync + 'static {
    /// Posts `amount` under `key`. Returns `false`, leaving the ledger unchanged, when `key`
    /// was already posted (a step re-run after a lost checkpoint).
    fn post(&self, key: &str, amount: i64) -> bool;

    /// Removes every posting whose key starts with `prefix` and returns them, sorted by key.
    fn reverse(&self, prefix: &str) -> Vec<(String, i64)>;
}

/// A [`Ledger`] in memory, for tests and demos.
#[derive(Debug, Default)]
pub struct MemoryLedger {
    entries: Mutex<BTreeMap<String, i64>>,
    duplicates: AtomicU64,
}

impl MemoryLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        MemoryLedger::default()
    }

    /// A copy of every posting, sorted by key.
    pub fn entries(&self) -> BTreeMap<String, i64> {
        self.lock().clone()
    }

    /// How many posts were refused as duplicates.
    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, i64>> {
        // A panic while holding the lock cannot leave the map half-updated: every update is a
        // single insert or a retain.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Ledger for MemoryLedger {
    fn post(&self, key: &str, amount: i64) -> bool {
        let mut entries = self.lock();
        if entries.contains_key(key) {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        entries.insert(key.to_owned(), amount);
        true
    }

    fn reverse(&self, prefix: &str) -> Vec<(String, i64)> {
        let mut entries = self.lock();
        let removed: Vec<(String, i64)> = entries
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        for (key, _) in &removed {
            entries.remove(key);
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posts_are_exactly_once_and_reversal_is_by_prefix() {
        let ledger = MemoryLedger::new();
        assert!(ledger.post("d/t/P1/g0/a", 5));
        assert!(!ledger.post("d/t/P1/g0/a", 7));
        assert!(ledger.post("d/t/P1/g0/b", 6));
        assert!(ledger.post("d/t/P10/g0/a", 1));
        assert_eq!(ledger.duplicates(), 1);
        let removed = ledger.reverse("d/t/P1/g0/");
        assert_eq!(removed, vec![("d/t/P1/g0/a".to_owned(), 5), ("d/t/P1/g0/b".to_owned(), 6)]);
        assert_eq!(ledger.entries().len(), 1);
    }
}
