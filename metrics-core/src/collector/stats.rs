//! The collector's counters. The producers' counters (`received` and the
//! drops decided by `record()`) live in the queue's shards, under each shard's
//! lock; the worker's are atomics here, written by the worker only and read
//! by [`CollectorStats`] snapshots.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A snapshot of the collector's counters.
///
/// Every record handed to [`CollectorHandle::record`](crate::CollectorHandle::record)
/// is counted once in `received` and then sits in exactly one of `written`,
/// one `dropped_*` counter, or `pending`:
///
/// ```text
/// received = written + dropped() + pending
/// ```
///
/// A snapshot taken while producers or the worker are active reads the
/// counters one after another (the worker's first, then each queue shard's
/// under its lock, briefly: reading stats is cheap but not meant for the
/// request path); they are read in an order that can only miss a record that
/// is moving between counters, never count one twice, so a busy snapshot
/// satisfies `received >= written + dropped() + pending`. Once the collector
/// is quiet (after [`flush`] or [`shutdown`]) the equation holds exactly, and
/// after `shutdown` `pending` is 0.
///
/// [`flush`]: crate::CollectorHandle::flush
/// [`shutdown`]: crate::CollectorHandle::shutdown
///
/// The struct is `#[non_exhaustive]`, so a new counter is not a breaking
/// change: read its fields, and build one (in tests) from
/// [`Default`] and field assignments.
///
/// ```
/// use metrics_core::CollectorStats;
/// let mut s = CollectorStats::default();
/// (s.received, s.written, s.dropped_queue_full, s.pending) = (10, 7, 2, 1);
/// assert_eq!(s.dropped(), 2);
/// assert!(s.is_consistent());
/// ```
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CollectorStats {
    /// Records handed to `record()` (accepted or not).
    pub received: u64,
    /// Records the sink stored.
    pub written: u64,
    /// Records refused by `record()` because the queue was full (the sink is
    /// down or slower than the traffic).
    pub dropped_queue_full: u64,
    /// Records refused by `record()` because the collector's memory budget
    /// ([`CollectorBuilder::memory_budget`](crate::CollectorBuilder::memory_budget))
    /// had no room for them: the records it holds (queued, or in the batch
    /// being written or retried) already used it up, typically large usage
    /// events while the sink is down or slow.
    pub dropped_memory_budget: u64,
    /// Records whose batch failed with a retryable error until the retry
    /// policy gave up (never, with the default [`RetryPolicy`](crate::RetryPolicy),
    /// which retries until the shutdown deadline), or whose sink panicked
    /// while writing (a panicking write is not retried).
    pub dropped_retries_exhausted: u64,
    /// Records still queued or being written (or retried) when the shutdown
    /// deadline passed (or when the worker future was dropped before it could
    /// drain).
    pub dropped_shutdown: u64,
    /// Records the sink refused for good: [`WriteSummary::rejected`](crate::WriteSummary)
    /// of a successful write, or a whole batch failing with a non-retryable
    /// error such as [`SinkError::Rejected`](crate::SinkError::Rejected).
    pub dropped_rejected: u64,
    /// Records handed to `record()` after shutdown (or after the worker ended).
    pub dropped_closed: u64,
    /// Write attempts beyond the first one of each batch.
    pub retries: u64,
    /// Batches handed to the sink (each counted once however often it was
    /// retried, so `batches + retries` is the number of sink calls).
    pub batches: u64,
    /// Records queued, or taken by the worker and not yet written or dropped
    /// (the batch being assembled or written).
    pub pending: u64,
    /// Bytes the collector holds now by [`Record::approx_size`](crate::Record::approx_size):
    /// the pending records (queued, and the batch being assembled, written
    /// or retried), measured against the memory budget. Not part of the
    /// record equation; 0 once the collector is quiet and drained.
    pub pending_bytes: u64,
}

impl CollectorStats {
    /// All dropped records, whatever the reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_queue_full
            + self.dropped_memory_budget
            + self.dropped_retries_exhausted
            + self.dropped_shutdown
            + self.dropped_rejected
            + self.dropped_closed
    }

    /// Whether `received == written + dropped() + pending` (exact when the
    /// snapshot was taken while the collector was quiet).
    pub fn is_consistent(&self) -> bool {
        self.received == self.written + self.dropped() + self.pending
    }
}

/// Why the worker gave up on records (the `dropped_*` counters it owns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropReason {
    RetriesExhausted,
    Shutdown,
    Rejected,
}

/// Keeps a value on its own cache line(s), so producers bumping one counter do
/// not invalidate the line the worker writes to (false sharing). 128 bytes
/// because x86 prefetches lines in pairs (crossbeam's `CachePadded` does the
/// same).
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

/// Counters written by the worker only (read by `stats()`).
#[derive(Debug, Default)]
pub(crate) struct WorkerCounters {
    pub(crate) written: AtomicU64,
    pub(crate) dropped_retries_exhausted: AtomicU64,
    pub(crate) dropped_shutdown: AtomicU64,
    pub(crate) dropped_rejected: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) batches: AtomicU64,
    /// Records the worker has moved out of the queue and not yet written or
    /// dropped (its share of `pending`).
    pub(crate) in_batch: AtomicU64,
}

/// One flag per drop reason, so the first drop of each kind logs a warning
/// and later ones stay silent (they are counted).
#[derive(Debug, Default)]
struct Warned {
    queue_full: AtomicBool,
    memory_budget: AtomicBool,
    closed: AtomicBool,
    retries_exhausted: AtomicBool,
    shutdown: AtomicBool,
    rejected: AtomicBool,
}

/// The worker's counters, warn-once flags and last error, shared with the
/// handles.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) worker: Padded<WorkerCounters>,
    warned: Warned,
    last_error: Mutex<Option<String>>,
}

impl Counters {
    /// The worker's counters, with `pending` set to the worker's share
    /// (records taken from the queue and not yet resolved); the caller adds
    /// the queue's counts, read *after* this (see `Shared::stats`).
    pub(crate) fn snapshot_worker(&self) -> CollectorStats {
        let w = &self.worker.0;
        // Read order matters: destinations first, then `in_batch`. A record
        // always leaves its source (`in_batch`, or a shard's `held`) before it
        // is added to its destination (with Release), so seeing it in a
        // destination means its removal from the source is visible too: no
        // record is counted twice. The queue, read last, is upstream of all.
        let ld = |a: &AtomicU64| a.load(Ordering::Acquire);
        CollectorStats {
            written: ld(&w.written),
            dropped_retries_exhausted: ld(&w.dropped_retries_exhausted),
            dropped_shutdown: ld(&w.dropped_shutdown),
            dropped_rejected: ld(&w.dropped_rejected),
            retries: ld(&w.retries),
            batches: ld(&w.batches),
            pending: ld(&w.in_batch),
            ..CollectorStats::default()
        }
    }

    /// A record refused by `record()` because the queue was full (counted
    /// in its shard).
    pub(crate) fn on_queue_full(&self) {
        warn_once(
            &self.warned.queue_full,
            "metrics collector queue is full; dropping records (the sink is down or slower than the traffic; see CollectorStats::dropped_queue_full)",
        );
    }

    /// A record refused by `record()` because the memory budget is used up
    /// (counted in its shard).
    pub(crate) fn on_memory_budget(&self) {
        warn_once(
            &self.warned.memory_budget,
            "metrics collector memory budget is used up; dropping records (the sink is down or slower than the traffic, and the records held are large; see CollectorStats::dropped_memory_budget)",
        );
    }

    /// A record refused by `record()` because the collector is shut down
    /// (counted in its shard).
    pub(crate) fn on_closed(&self) {
        warn_once(
            &self.warned.closed,
            "metrics collector is shut down; dropping records recorded after shutdown (see CollectorStats::dropped_closed)",
        );
    }

    /// The worker moved `n` records out of the queue (after the shards'
    /// `held` counts dropped by `n`).
    pub(crate) fn on_taken(&self, n: u64) {
        let _ = self.worker.0.in_batch.fetch_add(n, Ordering::Release);
    }

    /// `n` records the worker had taken from the queue were written.
    pub(crate) fn on_written(&self, n: u64) {
        self.resolve(n);
        let _ = self.worker.0.written.fetch_add(n, Ordering::Release);
    }

    /// `n` records the worker had taken from the queue were dropped.
    pub(crate) fn on_dropped(&self, reason: DropReason, n: u64) {
        self.resolve(n);
        self.add_dropped(reason, n);
    }

    /// `n` records that were still in the queue (already removed from its
    /// counts) were dropped.
    pub(crate) fn on_dropped_queued(&self, reason: DropReason, n: u64) {
        self.add_dropped(reason, n);
    }

    fn add_dropped(&self, reason: DropReason, n: u64) {
        if n == 0 {
            return;
        }
        let w = &self.worker.0;
        let (counter, flag, msg) = match reason {
            DropReason::RetriesExhausted => (
                &w.dropped_retries_exhausted,
                &self.warned.retries_exhausted,
                "metrics sink kept failing; dropping a batch (see CollectorStats::dropped_retries_exhausted and last_error)",
            ),
            DropReason::Shutdown => (
                &w.dropped_shutdown,
                &self.warned.shutdown,
                "metrics collector shutdown deadline passed; dropping records not yet written (see CollectorStats::dropped_shutdown)",
            ),
            DropReason::Rejected => (
                &w.dropped_rejected,
                &self.warned.rejected,
                "metrics sink rejected records; dropping them (see CollectorStats::dropped_rejected and last_error)",
            ),
        };
        let _ = counter.fetch_add(n, Ordering::Release);
        warn_once(flag, msg);
    }

    pub(crate) fn on_batch(&self) {
        let _ = self.worker.0.batches.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn on_retry(&self) {
        let _ = self.worker.0.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn set_last_error(&self, err: &dyn std::fmt::Display) {
        let text = err.to_string();
        tracing::debug!(error = %text, "metrics sink write failed");
        // A poisoned lock only means a reader panicked; the text is still fine.
        let mut slot = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        *slot = Some(text);
    }

    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Takes `n` records out of the worker's `in_batch`; the caller then adds
    /// them to their destination counter with Release ordering (see
    /// `snapshot_worker`).
    fn resolve(&self, n: u64) {
        let _ = self.worker.0.in_batch.fetch_sub(n, Ordering::Relaxed);
    }
}

fn warn_once(flag: &AtomicBool, msg: &'static str) {
    // A load first: after the first drop this is a read of a shared line, not
    // a write, so a storm of drops does not contend on it.
    if !flag.load(Ordering::Relaxed) && !flag.swap(true, Ordering::Relaxed) {
        tracing::warn!("{msg}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_sums_every_reason() {
        let s = CollectorStats {
            dropped_queue_full: 1,
            dropped_retries_exhausted: 2,
            dropped_shutdown: 4,
            dropped_rejected: 8,
            dropped_closed: 16,
            dropped_memory_budget: 32,
            retries: 100,
            batches: 100,
            pending_bytes: 1_000,
            ..CollectorStats::default()
        };
        assert_eq!(s.dropped(), 63);
    }

    #[test]
    fn worker_counters_move_records_from_in_batch_to_destinations() {
        let c = Counters::default();
        c.on_taken(10);
        c.on_written(4);
        c.on_dropped(DropReason::Rejected, 3);
        c.on_dropped(DropReason::Shutdown, 0);
        c.on_dropped_queued(DropReason::Shutdown, 5);
        let s = c.snapshot_worker();
        assert_eq!(
            (s.written, s.dropped_rejected, s.dropped_shutdown, s.pending),
            (4, 3, 5, 3)
        );
    }

    #[test]
    fn last_error_keeps_latest_text() {
        let c = Counters::default();
        assert_eq!(c.last_error(), None);
        c.set_last_error(&"first");
        c.set_last_error(&"second");
        assert_eq!(c.last_error().as_deref(), Some("second"));
    }
}
