//! [`MemorySink`]: a bounded in-memory store of records, for development,
//! demos and tests.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use crate::error::SinkError;
use crate::record::{Record, RequestRecord, UsageEvent};
use crate::sink::{Batch, MetricsSink, WriteAttempt, WriteSummary};

/// A real, bounded [`MetricsSink`] that keeps records in memory.
///
/// Use it as the sink of a development setup or a demo, and in your own tests
/// to see exactly what the collector wrote ([`MemorySink::snapshot`]).
///
/// - **Bounded.** It holds at most `capacity` records (both kinds together;
///   default [`MemorySink::DEFAULT_CAPACITY`]). When full, each new record
///   evicts the *oldest* stored one, so it always shows the most recent
///   traffic, like a ring buffer. Evictions are counted
///   ([`MemorySnapshot::evicted`]): `accepted == stored + evicted` always
///   holds. Writes never fail, so from the collector's side every record
///   handed to it is `written`.
/// - **Cheap to clone.** Clones share one store (an `Arc` inside): keep one
///   clone for reading and give another to the collector.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use metrics_core::{
///     Batch, BatchId, MemorySink, MetricsSink, Method, RequestRecord, Route, WriteAttempt,
/// };
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let sink = MemorySink::with_capacity(2);
/// let mut batch = Batch::new();
/// for status in [200, 404, 500] {
///     batch.push(RequestRecord::new(
///         SystemTime::now(), Route::from_static("/"), Method::GET, status, Duration::ZERO,
///     ).into());
/// }
/// sink.write(&batch, WriteAttempt::first(BatchId::generate())).await.unwrap();
///
/// let snap = sink.snapshot();
/// let statuses: Vec<u16> = snap.requests().iter().map(|r| r.status).collect();
/// assert_eq!(statuses, [404, 500]); // the oldest was evicted
/// assert_eq!((snap.accepted(), snap.evicted()), (3, 1));
/// # }
/// ```
#[derive(Clone)]
pub struct MemorySink {
    inner: Arc<Mutex<Store>>,
}

#[derive(Debug)]
struct Store {
    capacity: usize,
    /// Both kinds in arrival order, so "oldest" is well defined across kinds.
    records: VecDeque<Record>,
    accepted: u64,
    evicted: u64,
}

impl MemorySink {
    /// Capacity of [`MemorySink::new`]: 100,000 records.
    pub const DEFAULT_CAPACITY: usize = 100_000;

    /// An empty store holding up to [`Self::DEFAULT_CAPACITY`] records.
    pub fn new() -> Self {
        Self::with_capacity(Self::DEFAULT_CAPACITY)
    }

    /// An empty store holding up to `capacity` records (0 keeps nothing and
    /// counts every record as evicted).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Store {
                capacity,
                // Grown as records arrive, not reserved up front.
                records: VecDeque::new(),
                accepted: 0,
                evicted: 0,
            })),
        }
    }

    /// The most records kept at once.
    pub fn capacity(&self) -> usize {
        self.lock().capacity
    }

    /// Number of records stored now.
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    /// Whether no record is stored.
    pub fn is_empty(&self) -> bool {
        self.lock().records.is_empty()
    }

    /// A copy of the stored records and the counters, taken atomically.
    ///
    /// This clones every stored record (labels are shared `Arc`s, so a request
    /// record clone is cheap); for large stores, snapshot sparingly.
    pub fn snapshot(&self) -> MemorySnapshot {
        let store = self.lock();
        let mut requests = Vec::new();
        let mut usage = Vec::new();
        for rec in &store.records {
            match rec {
                Record::Request(r) => requests.push(r.clone()),
                Record::Usage(e) => usage.push((**e).clone()),
            }
        }
        MemorySnapshot {
            requests,
            usage,
            accepted: store.accepted,
            evicted: store.evicted,
        }
    }

    /// Removes every stored record (the counters keep counting: cleared
    /// records count as evicted, so `accepted == stored + evicted` holds).
    pub fn clear(&self) {
        let mut store = self.lock();
        store.evicted += store.records.len() as u64;
        store.records.clear();
    }

    /// Stores one record, evicting the oldest when full.
    pub fn insert(&self, record: impl Into<Record>) {
        self.lock().insert(record.into());
    }

    /// Runs `f` over the stored records (oldest first) under the store's
    /// lock; the query implementation reads them in place instead of
    /// cloning a snapshot.
    pub(crate) fn with_records<R>(&self, f: impl FnOnce(&VecDeque<Record>) -> R) -> R {
        f(&self.lock().records)
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        // The lock is never held across an await or user code, so poisoning
        // can only come from a panic in our own short critical sections;
        // the data is still consistent then.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store {
    fn insert(&mut self, record: Record) {
        self.accepted += 1;
        if self.capacity == 0 {
            self.evicted += 1;
            return;
        }
        if self.records.len() >= self.capacity {
            let _oldest = self.records.pop_front();
            self.evicted += 1;
        }
        self.records.push_back(record);
    }
}

impl Default for MemorySink {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemorySink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let store = self.lock();
        f.debug_struct("MemorySink")
            .field("capacity", &store.capacity)
            .field("len", &store.records.len())
            .field("accepted", &store.accepted)
            .field("evicted", &store.evicted)
            .finish()
    }
}

#[async_trait]
impl MetricsSink for MemorySink {
    async fn write(
        &self,
        batch: &Batch,
        _attempt: WriteAttempt,
    ) -> Result<WriteSummary, SinkError> {
        // The whole batch goes in under one lock and nothing can fail, so
        // there is never a retry: `attempt` is always a first one.
        let mut store = self.lock();
        // Cloned out of the borrowed batch (the collector reuses it).
        for r in batch.requests() {
            store.insert(Record::Request(r.clone()));
        }
        for e in batch.usage_events() {
            store.insert(Record::Usage(Box::new(e.clone())));
        }
        Ok(WriteSummary::all_written())
    }
}

/// What a [`MemorySink`] held at one moment: its records (oldest first) and
/// counters.
#[derive(Debug, Clone, Default)]
pub struct MemorySnapshot {
    requests: Vec<RequestRecord>,
    usage: Vec<UsageEvent>,
    accepted: u64,
    evicted: u64,
}

impl MemorySnapshot {
    /// The stored request records, oldest first.
    pub fn requests(&self) -> &[RequestRecord] {
        &self.requests
    }

    /// The stored usage events, oldest first.
    pub fn usage_events(&self) -> &[UsageEvent] {
        &self.usage
    }

    /// Number of stored records of both kinds.
    pub fn len(&self) -> usize {
        self.requests.len() + self.usage.len()
    }

    /// Whether no record was stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records ever handed to the sink (stored now or evicted since).
    pub fn accepted(&self) -> u64 {
        self.accepted
    }

    /// Records evicted to make room (or cleared).
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// The stored request records, taking ownership.
    pub fn into_requests(self) -> Vec<RequestRecord> {
        self.requests
    }

    /// The stored usage events, taking ownership.
    pub fn into_usage_events(self) -> Vec<UsageEvent> {
        self.usage
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::record::{Method, Route, UserId};
    use crate::sink::BatchId;

    fn req(status: u16) -> Record {
        RequestRecord::new(
            SystemTime::UNIX_EPOCH,
            Route::from_static("/x"),
            Method::GET,
            status,
            Duration::ZERO,
        )
        .into()
    }

    fn ev(kind: &str) -> Record {
        UsageEvent::new(kind, UserId::new("u"), SystemTime::UNIX_EPOCH).into()
    }

    #[test]
    fn evicts_oldest_across_kinds_and_counts() {
        let sink = MemorySink::with_capacity(3);
        sink.insert(req(200));
        sink.insert(ev("a"));
        sink.insert(req(201));
        sink.insert(ev("b"));
        sink.insert(req(202));
        let s = sink.snapshot();
        let statuses: Vec<_> = s.requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [201, 202]);
        let kinds: Vec<_> = s
            .usage_events()
            .iter()
            .map(|e| e.event_type.as_str())
            .collect();
        assert_eq!(kinds, ["b"]);
        assert_eq!((s.accepted(), s.evicted(), s.len()), (5, 2, 3));
        assert_eq!(s.accepted(), s.len() as u64 + s.evicted());
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let sink = MemorySink::with_capacity(0);
        sink.insert(req(200));
        let s = sink.snapshot();
        assert!(s.is_empty());
        assert_eq!((s.accepted(), s.evicted()), (1, 1));
    }

    #[test]
    fn clear_counts_as_evicted() {
        let sink = MemorySink::with_capacity(10);
        sink.insert(req(200));
        sink.insert(req(200));
        sink.clear();
        assert!(sink.is_empty());
        let s = sink.snapshot();
        assert_eq!((s.accepted(), s.evicted()), (2, 2));
    }

    #[tokio::test]
    async fn write_stores_both_halves_and_clones_share() {
        let sink = MemorySink::new();
        let reader = sink.clone();
        let mut batch = Batch::new();
        batch.push(req(200));
        batch.push(ev("page_view"));
        batch.push(req(500));
        let summary = sink
            .write(&batch, WriteAttempt::first(BatchId::generate()))
            .await
            .unwrap();
        assert_eq!(summary, WriteSummary::all_written());
        let s = reader.snapshot();
        assert_eq!((s.requests().len(), s.usage_events().len()), (2, 1));
        assert_eq!(reader.len(), 3);
    }
}
