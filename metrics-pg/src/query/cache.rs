//! A bounded cache of decoded performance rollup buckets (one hourly or daily
//! bucket: every key's count, error count and latency sketch, and the
//! all-endpoints users sketch), and of raw 5-minute slots in the same form
//! (`raw.rs` says why that is exact too).
//!
//! Why: an hour of a busy service has one sketch per endpoint, and below
//! 1,000 samples a sketch holds its samples verbatim (exact percentiles), so
//! 24 hours of 50 endpoints are ~8 MB of TOASTed `bytea` that PostgreSQL
//! must read for every dashboard refresh, plus ~1 M samples to re-bin while
//! merging. Rolled buckets do not change unless the hour is rolled again,
//! which rewrites `rollup_hours.rolled_at` (or `rollup_days.built_at`) in the
//! same transaction as the rows; keyed by that version, a cached bucket is
//! exactly the rows the query's snapshot holds, so the cache never changes
//! an answer. It is bounded in bytes and evicts the least recently used.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use metrics_core::aggregate::{DistinctUsers, LatencySketch};
use metrics_core::query::{PerformancePoint, UsagePoint};

/// Which rollup table a bucket comes from (or raw rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Table {
    Hourly,
    Daily,
    /// A whole 5-minute slot of raw requests; its version is its row
    /// count (raw tables are append-only, see `raw.rs`).
    RawSlot,
    /// A whole 5-minute slot of raw requests in a rolled hour; its version
    /// is the hour's rollup version.
    RawSlotOfRolledHour,
}

/// A bucket's identity: table, start (Unix seconds) and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct BucketKey {
    pub(super) table: Table,
    pub(super) start: i64,
    pub(super) version: i64,
}

/// The all-endpoints (performance) or all-types (usage) users sketch of
/// one rolled bucket, at its version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct UsersKey {
    pub(super) usage: bool,
    pub(super) bucket: BucketKey,
}

/// The stored time-series point of one rolled hour (its `*` row), at its
/// version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct PointKey {
    pub(super) usage: bool,
    pub(super) hour: i64,
    pub(super) version: i64,
}

/// A cached time-series point.
#[derive(Debug, Clone)]
pub(super) enum SeriesPoint {
    Performance(PerformancePoint),
    Usage(UsagePoint),
}

impl SeriesPoint {
    pub(super) fn performance(self) -> Option<PerformancePoint> {
        match self {
            Self::Performance(p) => Some(p),
            Self::Usage(_) => None,
        }
    }

    pub(super) fn usage(self) -> Option<UsagePoint> {
        match self {
            Self::Usage(p) => Some(p),
            Self::Performance(_) => None,
        }
    }
}

impl Weigh for SeriesPoint {
    fn bytes(&self) -> usize {
        std::mem::size_of::<Self>() + 48
    }
}

/// One key of a bucket.
#[derive(Debug)]
pub(super) struct Part {
    pub(super) endpoint: String,
    pub(super) method: String,
    pub(super) count: u64,
    pub(super) errors: u64,
    /// The stored sketch when it is exact (kept for windows of at most
    /// 1,000 samples, whose percentiles must stay exact).
    pub(super) exact: Option<LatencySketch>,
    /// The same samples as a histogram (exact limit 0), merged cheaply into
    /// windows that are binned anyway.
    pub(super) binned: LatencySketch,
}

impl Part {
    pub(super) fn new(
        endpoint: String,
        method: String,
        count: u64,
        errors: u64,
        stored: LatencySketch,
    ) -> Self {
        let (exact, binned) = if stored.is_exact() {
            let mut binned = LatencySketch::with_exact_limit(0);
            binned.merge(&stored);
            (Some(stored), binned)
        } else {
            (None, stored)
        };
        Self {
            endpoint,
            method,
            count,
            errors,
            exact,
            binned,
        }
    }

    /// The sketch to merge into a window of `window_count` samples.
    pub(super) fn sketch_for(&self, window_count: u64, exact_limit: u32) -> &LatencySketch {
        match &self.exact {
            Some(exact) if window_count <= u64::from(exact_limit) => exact,
            _ => &self.binned,
        }
    }

    fn bytes(&self) -> usize {
        let sketch = |s: &LatencySketch| s.to_bytes().len();
        64 + self.endpoint.len()
            + self.method.len()
            + self.exact.as_ref().map_or(0, sketch)
            + sketch(&self.binned)
    }
}

/// A decoded performance bucket.
#[derive(Debug, Default)]
pub(super) struct PerfBucket {
    /// Per (endpoint, method) keys, without the `*` row.
    pub(super) parts: Vec<Part>,
    /// The all-endpoints row, if the bucket has requests.
    pub(super) all: Option<Part>,
    /// Its distinct users.
    pub(super) users: Option<DistinctUsers>,
}

/// What a cached value costs, roughly, in bytes.
pub(super) trait Weigh {
    fn bytes(&self) -> usize;
}

impl Weigh for PerfBucket {
    fn bytes(&self) -> usize {
        64 + self.parts.iter().map(Part::bytes).sum::<usize>()
            + self.all.as_ref().map_or(0, Part::bytes)
            + self.users.as_ref().map_or(0, |u| u.to_bytes().len())
    }
}

impl Weigh for DistinctUsers {
    fn bytes(&self) -> usize {
        64 + self.to_bytes().len()
    }
}

/// The cache: at most `budget` bytes of values (as estimated from their
/// encoded size), least recently used evicted first.
#[derive(Debug)]
pub(super) struct BucketCache<K = BucketKey, V = PerfBucket> {
    budget: usize,
    inner: Mutex<Inner<K, V>>,
}

#[derive(Debug)]
struct Inner<K, V> {
    map: HashMap<K, Entry<V>>,
    bytes: usize,
    clock: u64,
}

#[derive(Debug)]
struct Entry<V> {
    bucket: Arc<V>,
    bytes: usize,
    used: u64,
}

impl<K: Copy + Eq + std::hash::Hash, V: Weigh> BucketCache<K, V> {
    pub(super) fn new(budget: usize) -> Self {
        Self {
            budget,
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                bytes: 0,
                clock: 0,
            }),
        }
    }

    pub(super) fn is_enabled(&self) -> bool {
        self.budget > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K, V>> {
        // The map stays consistent even if a holder panicked (no await and
        // no user code runs under the lock).
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn get(&self, key: &K) -> Option<Arc<V>> {
        let mut inner = self.lock();
        inner.clock += 1;
        let now = inner.clock;
        inner.map.get_mut(key).map(|e| {
            e.used = now;
            Arc::clone(&e.bucket)
        })
    }

    pub(super) fn insert(&self, key: K, bucket: Arc<V>) {
        let bytes = bucket.bytes();
        if bytes > self.budget {
            return;
        }
        let mut inner = self.lock();
        inner.clock += 1;
        let used = inner.clock;
        if let Some(old) = inner.map.insert(
            key,
            Entry {
                bucket,
                bytes,
                used,
            },
        ) {
            inner.bytes -= old.bytes;
        }
        inner.bytes += bytes;
        while inner.bytes > self.budget {
            // A few hundred entries at most: a scan is cheaper than keeping
            // an ordered index up to date on every hit.
            let Some(oldest) = inner
                .map
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| *k)
            else {
                break;
            };
            if let Some(e) = inner.map.remove(&oldest) {
                inner.bytes -= e.bytes;
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(samples: usize) -> Arc<PerfBucket> {
        let mut s = LatencySketch::new();
        for i in 0..samples {
            s.add(i as f64);
        }
        Arc::new(PerfBucket {
            parts: vec![Part::new("/a".into(), "GET".into(), samples as u64, 0, s)],
            all: None,
            users: None,
        })
    }

    fn key(start: i64) -> BucketKey {
        BucketKey {
            table: Table::Hourly,
            start,
            version: 1,
        }
    }

    #[test]
    fn exact_parts_keep_both_forms_and_pick_by_window_size() {
        let b = bucket(10);
        let p = &b.parts[0];
        assert!(p.exact.is_some());
        assert!(p.sketch_for(10, 1_000).is_exact());
        assert!(!p.sketch_for(1_001, 1_000).is_exact());
        assert_eq!(p.binned.count(), 10);
        let big = bucket(1_500);
        assert!(big.parts[0].exact.is_none());
    }

    #[test]
    fn evicts_least_recently_used_within_the_budget() {
        let one = bucket(100).bytes();
        let cache = BucketCache::new(one * 2 + one / 2);
        cache.insert(key(0), bucket(100));
        cache.insert(key(1), bucket(100));
        assert!(cache.get(&key(0)).is_some()); // 0 is now the most recent
        cache.insert(key(2), bucket(100));
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&key(1)).is_none());
        assert!(cache.get(&key(0)).is_some() && cache.get(&key(2)).is_some());
        // Another version of a bucket is another entry.
        let v2 = BucketKey {
            version: 2,
            ..key(0)
        };
        assert!(cache.get(&v2).is_none());
        // Too big for the budget: not cached.
        let tiny = BucketCache::new(10);
        tiny.insert(key(0), bucket(100));
        assert!(tiny.get(&key(0)).is_none());
        assert!(!BucketCache::<BucketKey, PerfBucket>::new(0).is_enabled());
    }
}
