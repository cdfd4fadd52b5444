//! The state the handles and the worker share: the queue, the worker's
//! counters and the wake-up between them. Its own module so that both sides
//! (the handle in `collector`, the worker in `worker`) depend on it and not
//! on each other.

use tokio::sync::Notify;

use super::queue::{self, Queue};
use super::stats::{CollectorStats, Counters};

/// State shared by the handles and the worker.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(super) queue: Queue,
    pub(super) counters: Counters,
    /// Producers wake the worker through this (see the queue's thresholds).
    pub(super) notify: Notify,
    pub(super) max_batch: u64,
}

impl Shared {
    pub(super) fn new(queue_capacity: usize, memory_budget: usize, max_batch: u64) -> Self {
        Self {
            queue: Queue::new(queue_capacity, memory_budget, queue::shard_count()),
            counters: Counters::default(),
            notify: Notify::new(),
            max_batch,
        }
    }

    pub(super) fn stats(&self) -> CollectorStats {
        // The worker's counters first, then the queue (upstream of them): a
        // record moving meanwhile can be missed, never counted twice.
        let mut s = self.counters.snapshot_worker();
        let q = self.queue.tally();
        s.received = q.received;
        s.dropped_queue_full = q.dropped_queue_full;
        s.dropped_memory_budget = q.dropped_memory_budget;
        s.dropped_closed = q.dropped_closed;
        s.pending += q.queued;
        s.pending_bytes = q.bytes;
        s
    }
}
