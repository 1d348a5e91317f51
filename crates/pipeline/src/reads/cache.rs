//! Values bounded in bytes, the least recently used dropped first. Decoded partitions are
//! keyed by their table, date and version, so a rewritten partition is a new key and a reader
//! never gets a stale copy; the old one ages out (or is dropped when a snapshot no longer
//! names it). Encoded answers are keyed by the snapshot they were computed from.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use chrono::NaiveDate;
use tokio::sync::OnceCell;

/// A table the read model keeps partitions of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Silver,
    /// Silver `ohlcv_1m`.
    Minutes,
    Gold,
    Gaps,
}

impl Table {
    /// Where the table lies in the lake.
    pub fn prefix(self) -> &'static str {
        use cryptolake_lake::paths;
        match self {
            Table::Silver => paths::SILVER_OHLCV_1H,
            Table::Minutes => paths::SILVER_OHLCV_1M,
            Table::Gold => paths::GOLD_OHLCV_1D,
            Table::Gaps => paths::OPS_GAPS,
        }
    }

    pub const ALL: [Table; 4] = [Table::Silver, Table::Minutes, Table::Gold, Table::Gaps];
}

pub type Key = (Table, NaiveDate, String);

/// Something decoded that knows about how much memory it holds.
pub trait Weigh {
    fn bytes(&self) -> usize;
}

struct Slot<T> {
    cell: Arc<OnceCell<Arc<T>>>,
    /// Bytes counted for it, once loaded.
    size: usize,
    used: u64,
}

struct Inner<K, T> {
    slots: HashMap<K, Slot<T>>,
    bytes: usize,
    tick: u64,
}

pub struct Cache<K, T> {
    inner: Mutex<Inner<K, T>>,
    capacity: usize,
}

/// What the cache holds now, for tests and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub entries: usize,
    pub bytes: usize,
    pub capacity: usize,
}

impl<K: Clone + Eq + Hash, T: Weigh> Cache<K, T> {
    pub fn new(capacity: usize) -> Cache<K, T> {
        Cache {
            inner: Mutex::new(Inner {
                slots: HashMap::new(),
                bytes: 0,
                tick: 0,
            }),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K, T>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value under `key`, loaded by `load` when it is not held. Readers asking for the
    /// same key at once share one load.
    pub async fn get_or_load<E, F, Fut>(&self, key: K, load: F) -> Result<Arc<T>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let cell = {
            let mut inner = self.lock();
            inner.tick += 1;
            let tick = inner.tick;
            let slot = inner.slots.entry(key.clone()).or_insert_with(|| Slot {
                cell: Arc::new(OnceCell::new()),
                size: 0,
                used: tick,
            });
            slot.used = tick;
            slot.cell.clone()
        };
        if let Some(v) = cell.get() {
            return Ok(v.clone());
        }
        let value = cell
            .get_or_try_init(|| async { load().await.map(Arc::new) })
            .await?
            .clone();
        self.account(&key, &cell, value.bytes());
        Ok(value)
    }

    /// Counts a loaded value's bytes (once) and drops the least recently used past capacity.
    fn account(&self, key: &K, cell: &Arc<OnceCell<Arc<T>>>, size: usize) {
        let mut inner = self.lock();
        let Some(slot) = inner.slots.get_mut(key) else {
            return;
        };
        if slot.size != 0 || !Arc::ptr_eq(&slot.cell, cell) {
            return;
        }
        slot.size = size.max(1);
        inner.bytes += size.max(1);
        while inner.bytes > self.capacity {
            let oldest = inner
                .slots
                .iter()
                .filter(|(_, s)| s.size > 0)
                .min_by_key(|(_, s)| s.used)
                .map(|(k, _)| k.clone());
            let Some(k) = oldest else { break };
            if let Some(s) = inner.slots.remove(&k) {
                inner.bytes -= s.size;
            }
        }
    }

    /// Drops every entry whose key `keep` refuses.
    pub fn retain(&self, keep: impl Fn(&K) -> bool) {
        let mut inner = self.lock();
        let stale: Vec<K> = inner.slots.keys().filter(|k| !keep(k)).cloned().collect();
        for k in stale {
            if let Some(s) = inner.slots.remove(&k) {
                inner.bytes -= s.size;
            }
        }
    }

    pub fn stats(&self) -> CacheStats {
        let inner = self.lock();
        CacheStats {
            entries: inner.slots.values().filter(|s| s.size > 0).count(),
            bytes: inner.bytes,
            capacity: self.capacity,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Blob(usize);
    impl Weigh for Blob {
        fn bytes(&self) -> usize {
            self.0
        }
    }

    fn key(day: u32) -> Key {
        (
            Table::Silver,
            NaiveDate::from_ymd_opt(2024, 3, day).unwrap(),
            "v1".into(),
        )
    }

    #[tokio::test]
    async fn holds_at_most_its_capacity_and_drops_the_least_recently_used() {
        let cache = Cache::<Key, Blob>::new(300);
        let loads = std::sync::atomic::AtomicUsize::new(0);
        let get = |day| {
            let loads = &loads;
            let cache = &cache;
            async move {
                cache
                    .get_or_load(key(day), || async {
                        loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        Ok::<_, ()>(Blob(100))
                    })
                    .await
                    .unwrap()
            }
        };
        get(1).await;
        get(2).await;
        get(3).await;
        assert_eq!(cache.stats().bytes, 300);
        get(1).await; // 1 is now the most recent; 2 the least
        get(4).await; // drops 2
        assert_eq!(cache.stats().bytes, 300);
        assert_eq!(loads.load(std::sync::atomic::Ordering::SeqCst), 4);
        get(1).await;
        get(3).await;
        assert_eq!(
            loads.load(std::sync::atomic::Ordering::SeqCst),
            4,
            "1 and 3 were kept"
        );
        get(2).await;
        assert_eq!(
            loads.load(std::sync::atomic::Ordering::SeqCst),
            5,
            "2 was dropped"
        );
    }

    #[tokio::test]
    async fn a_failed_load_is_not_kept_and_stale_versions_are_dropped() {
        let cache = Cache::<Key, Blob>::new(1000);
        let failed = cache
            .get_or_load(key(1), || async { Err::<Blob, _>("no") })
            .await;
        assert!(failed.is_err());
        let ok = cache
            .get_or_load(key(1), || async { Ok::<_, ()>(Blob(10)) })
            .await
            .unwrap();
        assert_eq!(ok.0, 10);
        let mut current = std::collections::BTreeMap::new();
        current.insert(key(1).1, "v2".to_string());
        cache.retain(|(t, d, v)| *t != Table::Silver || current.get(d) == Some(v));
        assert_eq!(cache.stats().entries, 0);
        assert_eq!(cache.stats().bytes, 0);
    }
}
