//! The bounded background collector; the user-facing guide lives on
//! [`Collector`] (this module is private, its items are re-exported).

mod batch;
mod error;
mod queue;
mod retry;
mod shared;
mod stats;
mod worker;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

pub use error::{BuildError, ShutdownError};
pub use retry::RetryPolicy;
pub use stats::CollectorStats;
pub use worker::Worker;

use queue::Pushed;
use shared::Shared;
use worker::{Config, Control};

use crate::record::Record;
use crate::sink::MetricsSink;

/// Default [`CollectorBuilder::queue_capacity`].
const DEFAULT_QUEUE_CAPACITY: usize = 100_000;
/// Default [`CollectorBuilder::max_batch`].
const DEFAULT_MAX_BATCH: usize = 1_000;
/// Default [`CollectorBuilder::linger`].
const DEFAULT_LINGER: Duration = Duration::from_secs(1);
/// Default [`CollectorBuilder::export_timeout`].
const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`CollectorBuilder::memory_budget`]: 64 MiB. Room for the default
/// queue of 100,000 request records (≈ 250 bytes each with a user and a
/// correlation id, ≈ 25 MB) plus a batch, so for request traffic the record
/// cap binds first as before; large usage events (16 KiB of metadata costs
/// tens of KiB as a JSON tree) are held to a few thousand, a bound that fits
/// a small container beside the app.
const DEFAULT_MEMORY_BUDGET: usize = 64 * 1024 * 1024;
/// Added to the sink's [`MetricsSink::max_write_duration`] for the effective
/// export timeout: the sink's own timers (and its round trips to the backend)
/// fire first, so it reports its failure before the collector gives up.
const SINK_BOUND_MARGIN: Duration = Duration::from_secs(5);
/// Capacity of the control channel (flush and shutdown requests).
const CONTROL_CAPACITY: usize = 8;
/// How long `shutdown` waits for the worker's answer beyond the deadline
/// before concluding it is not running (never spawned, or its runtime is
/// gone). The worker itself stops at the deadline.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// The bounded background collector between the request path and a
/// [`MetricsSink`]; start one with [`Collector::builder`].
///
/// Request handlers call [`CollectorHandle::record`], which puts the record in
/// a bounded queue and returns. One background task, the [`Worker`], takes
/// records off the queue, groups them into batches and hands one batch at a
/// time to the sink. The request path never awaits, never waits on the sink
/// and never sees a sink error: metrics failures exist only as counters in
/// [`CollectorStats`].
///
/// # The queue
///
/// The queue is sharded so that producers on different threads do not fight
/// over the same cache lines: it has a fixed number of shards (the next power
/// of two at or above twice the available parallelism, at most 64), each a
/// small buffer under its own lock on its own cache lines. Each thread has a
/// home shard (assigned round-robin the first time it records); `record()`
/// *tries* to lock its home shard, then the next ones, pushes the record and
/// unlocks. It waits for a lock only if every shard is locked at that instant,
/// and every holder is brief: a producer pushing one record, or the worker
/// swapping a shard's buffer for an empty one (no allocation, no I/O and no
/// `.await` happens under a shard lock in the steady state). In practice
/// `record()` is one uncontended lock, a push and an unlock.
///
/// # Batching
///
/// A batch is written when it holds `max_batch` records (default 1,000) or
/// when `linger` (default 1 s) has passed since its first record was taken
/// from the queue, whichever comes first. Only one write is in flight at a
/// time; records keep queueing meanwhile.
///
/// To keep `record()` cheap, producers do not wake the worker for every
/// record. Before it parks, the worker leaves each shard a threshold: while it
/// is idle, the first record (which starts a batch and arms its linger); while
/// a batch lingers, a share of the records still missing from a full batch,
/// spread over the shards by where recent records came from, such that the
/// queue cannot hold a full batch's worth without some shard reaching its
/// threshold. The push that reaches a threshold wakes the worker, once per
/// shard per wake-up; with one busy thread that is about once per batch.
///
/// **Ordering.** Records from one thread keep their order as long as they go
/// to the same shard (the usual case). Across shards there is no order: the
/// worker drains the shards in turn, and a thread whose home shard is busy or
/// full places its record in another shard. Every record carries its own
/// timestamp; sinks must not rely on arrival order.
///
/// # Failures
///
/// Every write is bounded by the export timeout (default 10 s, raised above
/// the sink's own bound on a write, see
/// [`CollectorBuilder::export_timeout`]; a hung sink gets
/// [`SinkError::Timeout`](crate::SinkError::Timeout)). Retryable errors are
/// retried with capped exponential backoff (1 s doubling to 30 s) and jitter
/// per [`RetryPolicy`], by default for as long as the sink keeps failing:
/// during an outage records wait within the queue's bounds below, and only
/// those bounds and the shutdown deadline drop records. A bounded policy that
/// gives up counts the batch as `dropped_retries_exhausted`.
/// Non-retryable errors count the batch as `dropped_rejected`. A sink that
/// panics does not take the worker down: the panic is caught, the batch is not
/// retried and counts as `dropped_retries_exhausted`. The text of the last
/// sink error is kept for [`CollectorHandle::last_error`]; the first drop of
/// each kind logs a `tracing` warning, later ones are only counted.
///
/// # Memory
///
/// The queue is the only buffer, and two caps bound it while the sink is slow
/// or down:
///
/// - **`queue_capacity`** (default 100,000 records) counts records. It is
///   split exactly between the shards (each holds `queue_capacity / shards`,
///   rounded up for some so the parts add up), and a producer whose shard is
///   full moves on to the next ones, so the cap is the total: `record()` drops
///   and counts (`dropped_queue_full`) only when every shard is full, even
///   with a single producer thread. Records the worker has taken out of a
///   shard but not yet put in a batch still count against that shard; the
///   worker holds at most one extra batch of `max_batch` records.
/// - **`memory_budget`** (default 64 MiB) counts bytes, by
///   [`Record::approx_size`]: everything the collector holds, the queued
///   records *and* the batch being written or retried. A record whose bytes
///   do not fit is refused by `record()` and counted as
///   `dropped_memory_budget`; [`CollectorStats::pending_bytes`] says how much
///   is held now. The budget is split between the shards like the capacity
///   (a record's bytes stay charged to the shard that took it until its batch
///   is written or dropped), which keeps `record()` on one shard lock; the
///   price is that less than one record per shard may go unused, and that a
///   single record larger than `memory_budget / shards` (the shards are at
///   most 64: 1 MiB at worst with the default) is always refused.
///
/// Buffers start small and grow as traffic needs; the worker resizes the ones
/// it hands back to the shards to the recent traffic, so a burst's memory is
/// given back afterwards.
///
/// # Upkeep / background work
///
/// - **Who spawns what.** [`CollectorBuilder::spawn`] spawns the one worker
///   task on the current Tokio runtime. [`CollectorBuilder::build`] returns the
///   [`Worker`] future instead, for you to spawn where you like. Nothing else
///   runs in the background: no thread, no global state.
/// - **[`CollectorHandle::flush`]** returns once every record queued before
///   the call has been written or dropped (retries included: with the
///   default [`RetryPolicy`] a flush during an outage waits until the sink is
///   back, so bound it with `tokio::time::timeout`).
/// - **[`CollectorHandle::shutdown`]`(deadline)`** first closes intake (later
///   records count as `dropped_closed`), then drains and writes everything
///   queued, retrying as usual, until the deadline. Whatever is still unwritten
///   at the deadline counts as `dropped_shutdown` and the call returns
///   [`ShutdownError::DeadlineExceeded`] with the final stats; otherwise it
///   returns the final stats, with `pending == 0`. A second call waits for
///   the first and returns the same outcome.
/// - **Dropping every handle** tells the worker (through its control
///   channel, which the handles own); it drains what is left (no deadline,
///   retrying per the policy: while the sink is down, until it is back or
///   the runtime stops), writes it and ends.
/// - **Dropping the worker future** (for example when the runtime shuts down
///   first) counts what was still queued as `dropped_shutdown`. Call
///   `shutdown` before leaving `main` so nothing is lost.
///
/// # Examples
///
/// Spawn on the current runtime, record, shut down:
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use metrics_core::{Collector, MemorySink, Method, RequestRecord, Route};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let sink = MemorySink::new();
/// let metrics = Collector::builder(sink.clone())
///     .max_batch(500)
///     .linger(Duration::from_millis(200))
///     .spawn()?;
///
/// // On the request path: never waits, never fails the request.
/// let rec = RequestRecord::new(
///     SystemTime::now(),
///     Route::from_static("/users/{id}"),
///     Method::GET,
///     200,
///     Duration::from_millis(3),
/// );
/// assert!(metrics.record(rec));
///
/// // At exit: close intake, write what is queued, get the final counters.
/// let stats = metrics.shutdown(Duration::from_secs(5)).await?;
/// assert_eq!((stats.received, stats.written, stats.pending), (1, 1, 0));
/// assert_eq!(sink.snapshot().requests().len(), 1);
/// # Ok(())
/// # }
/// ```
///
/// Place the worker yourself with `build()`:
///
/// ```
/// use std::time::Duration;
/// use metrics_core::{Collector, MemorySink, RetryPolicy};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), metrics_core::BuildError> {
/// let (handle, worker) = Collector::builder(MemorySink::new())
///     .queue_capacity(10_000)
///     .memory_budget(16 * 1024 * 1024)
///     .retry(RetryPolicy::bounded(3, Duration::from_secs(30)))
///     .export_timeout(Duration::from_secs(5))
///     .build()?;
/// let task = tokio::spawn(worker);
/// handle.shutdown(Duration::from_secs(1)).await.unwrap();
/// task.await.unwrap();
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Collector(());

impl Collector {
    /// A builder for a collector writing to `sink`, with the defaults: queue
    /// capacity 100,000, memory budget 64 MiB, batches of 1,000, linger 1 s,
    /// export timeout 10 s (or more, see
    /// [`export_timeout`](CollectorBuilder::export_timeout)),
    /// [`RetryPolicy::default`] (retry until written).
    pub fn builder<S: MetricsSink>(sink: S) -> CollectorBuilder<S> {
        CollectorBuilder {
            sink,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            memory_budget: DEFAULT_MEMORY_BUDGET,
            max_batch: DEFAULT_MAX_BATCH,
            linger: DEFAULT_LINGER,
            retry: RetryPolicy::default(),
            export_timeout: DEFAULT_EXPORT_TIMEOUT,
        }
    }
}

/// Settings of a collector; see [`Collector::builder`].
pub struct CollectorBuilder<S> {
    sink: S,
    queue_capacity: usize,
    memory_budget: usize,
    max_batch: usize,
    linger: Duration,
    retry: RetryPolicy,
    export_timeout: Duration,
}

impl<S> fmt::Debug for CollectorBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The sink need not be `Debug`; its type name is enough here.
        f.debug_struct("CollectorBuilder")
            .field("sink", &std::any::type_name::<S>())
            .field("queue_capacity", &self.queue_capacity)
            .field("memory_budget", &self.memory_budget)
            .field("max_batch", &self.max_batch)
            .field("linger", &self.linger)
            .field("retry", &self.retry)
            .field("export_timeout", &self.export_timeout)
            .finish()
    }
}

impl<S: MetricsSink> CollectorBuilder<S> {
    /// Most records held while the sink is slow or down (default 100,000);
    /// beyond it `record()` drops and counts (`dropped_queue_full`). Must be
    /// at least 1. See also [`memory_budget`](Self::memory_budget).
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity;
        self
    }

    /// Most bytes held, by [`Record::approx_size`] (default 64 MiB): the
    /// queued records and the batch being written or retried. A record that
    /// does not fit is dropped by `record()` and counted
    /// (`dropped_memory_budget`); `record()` never waits for room. This, with
    /// `queue_capacity`, is the collector's memory cap; which binds first
    /// depends on the records (request records are ≈ 200–300 bytes, a usage
    /// event with large metadata tens of KiB). See [Memory](Collector#memory)
    /// for how it is split. Must be at least 1.
    pub fn memory_budget(mut self, bytes: usize) -> Self {
        self.memory_budget = bytes;
        self
    }

    /// Records per batch (default 1,000); a full batch is written without
    /// waiting for the linger time. Must be at least 1; values above the queue
    /// capacity are lowered to it.
    pub fn max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch;
        self
    }

    /// Longest wait, from a batch's first record, before a partial batch is
    /// written (default 1 s). Zero writes whatever is queued at once.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Retry policy for retryable sink errors (default [`RetryPolicy::default`]).
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Time limit of each write attempt (default 10 s); an attempt that takes
    /// longer is cut short and fails with the retryable
    /// [`SinkError::Timeout`](crate::SinkError::Timeout). Must be non-zero.
    ///
    /// **The effective limit is never below the sink's own.** A sink that
    /// bounds its writes ([`MetricsSink::max_write_duration`], for example
    /// `PgSink`'s statement and commit timeouts) must be the one to give up,
    /// or the collector could count as failed (and retry, or drop) a write
    /// the backend went on to commit. So `build()` uses
    /// `max(export_timeout, sink.max_write_duration() + 5 s)`, the margin
    /// letting the sink's timers fire and report first (logged at debug
    /// level when it raises the limit): an attempt the collector counts as
    /// failed is always one the sink reported as failed, or one it did not
    /// bound.
    pub fn export_timeout(mut self, timeout: Duration) -> Self {
        self.export_timeout = timeout;
        self
    }

    /// Validates the settings and returns the handle and the worker future,
    /// which you must spawn (or otherwise poll) for records to be written.
    /// Needs no runtime itself.
    pub fn build(self) -> Result<(CollectorHandle, Worker<S>), BuildError> {
        if self.queue_capacity == 0 {
            return Err(BuildError::InvalidSetting {
                setting: "queue_capacity",
                reason: "must be at least 1",
            });
        }
        // Keeps the queue's counts far from overflowing; no capacity this
        // large could be held in memory anyway.
        if self.queue_capacity > usize::MAX >> 4 {
            return Err(BuildError::InvalidSetting {
                setting: "queue_capacity",
                reason: "is too large; it caps the records held in memory, pick a number that fits",
            });
        }
        if self.memory_budget == 0 {
            return Err(BuildError::InvalidSetting {
                setting: "memory_budget",
                reason: "must be at least 1 byte",
            });
        }
        if self.max_batch == 0 {
            return Err(BuildError::InvalidSetting {
                setting: "max_batch",
                reason: "must be at least 1",
            });
        }
        if self.export_timeout.is_zero() {
            return Err(BuildError::InvalidSetting {
                setting: "export_timeout",
                reason: "must be greater than zero",
            });
        }
        self.retry.validate()?;
        let max_batch = self.max_batch.min(self.queue_capacity);
        let export_timeout =
            effective_export_timeout(self.export_timeout, self.sink.max_write_duration());

        let (control_tx, control_rx) = mpsc::channel(CONTROL_CAPACITY);
        let shared = Arc::new(Shared::new(
            self.queue_capacity,
            self.memory_budget,
            max_batch as u64,
        ));
        let handle = CollectorHandle {
            inner: Arc::new(HandleInner {
                control: control_tx,
                shared: Arc::clone(&shared),
                shutdown_requested: AtomicBool::new(false),
                shutdown_result: tokio::sync::OnceCell::new(),
            }),
        };
        let config = Config {
            max_batch,
            linger: self.linger,
            retry: self.retry,
            export_timeout,
        };
        let worker = Worker::new(self.sink, control_rx, shared, config);
        Ok((handle, worker))
    }

    /// Like [`build`](Self::build), then spawns the worker on the current
    /// Tokio runtime ([`BuildError::NoRuntime`] outside one).
    pub fn spawn(self) -> Result<CollectorHandle, BuildError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        let (handle, worker) = self.build()?;
        // Detached on purpose: the handle controls the worker's lifetime
        // (shutdown, or dropping every handle), not a JoinHandle.
        drop(runtime.spawn(worker));
        Ok(handle)
    }
}

/// The export timeout a collector runs with: the configured one, raised to
/// the sink's own bound on a write plus [`SINK_BOUND_MARGIN`] (see
/// [`CollectorBuilder::export_timeout`]).
fn effective_export_timeout(configured: Duration, sink_bound: Option<Duration>) -> Duration {
    let Some(bound) = sink_bound else {
        return configured;
    };
    let floor = bound.saturating_add(SINK_BOUND_MARGIN);
    if floor <= configured {
        return configured;
    }
    tracing::debug!(
        configured_ms = configured.as_millis() as u64,
        sink_max_write_ms = bound.as_millis() as u64,
        effective_ms = floor.as_millis() as u64,
        "metrics collector export timeout raised above the sink's own bound on a write"
    );
    floor
}

/// The cheap, cloneable handle producers use to record, and the owner side
/// uses to flush, shut down and read stats.
///
/// Clones share one queue and one worker. When the last clone is dropped, the
/// worker drains the queue and stops.
///
/// # Example
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use metrics_core::{Collector, MemorySink, Method, RequestRecord, Route, UsageEvent, UserId};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let sink = MemorySink::new();
/// let handle = Collector::builder(sink.clone()).spawn()?;
///
/// let producer = handle.clone();
/// producer.record(RequestRecord::new(
///     SystemTime::now(), Route::from_static("/"), Method::GET, 200, Duration::from_millis(1),
/// ));
/// producer.record(UsageEvent::new("page_view", UserId::new("ada"), SystemTime::now()));
///
/// handle.flush().await?; // both are in the sink now
/// let snap = sink.snapshot();
/// assert_eq!((snap.requests().len(), snap.usage_events().len()), (1, 1));
///
/// let stats = handle.stats();
/// assert_eq!(stats.received, stats.written + stats.dropped() + stats.pending);
/// assert_eq!(handle.last_error(), None);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct CollectorHandle {
    inner: Arc<HandleInner>,
}

/// Owned by the handles only: when the last handle goes, `control` closes and
/// the worker learns that no record can arrive any more.
#[derive(Debug)]
struct HandleInner {
    control: mpsc::Sender<Control>,
    shared: Arc<Shared>,
    shutdown_requested: AtomicBool,
    /// The outcome of the first `shutdown`, which later (and concurrent)
    /// calls wait for and return: shutting down is idempotent.
    shutdown_result: tokio::sync::OnceCell<Result<CollectorStats, ShutdownError>>,
}

impl fmt::Debug for CollectorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CollectorHandle")
            .field("stats", &self.stats())
            .field("max_batch", &self.inner.shared.max_batch)
            .field("queue_capacity", &self.inner.shared.queue.capacity())
            .field("memory_budget", &self.inner.shared.queue.memory_budget())
            .field("shards", &self.inner.shared.queue.shards())
            .finish_non_exhaustive()
    }
}

impl CollectorHandle {
    /// Queues a record for the worker. Returns `true` if it was queued,
    /// `false` if it was dropped (queue full, memory budget used up, or the
    /// collector is shut down); either way it is counted.
    ///
    /// Never awaits and never panics. It locks one shard of the queue,
    /// normally uncontended (see [the queue](Collector#the-queue)): it waits
    /// only if every shard is locked at that instant, each only for a push or
    /// a buffer swap. It wakes the worker only when
    /// a shard reaches the threshold the worker left (about once per batch),
    /// never per record.
    #[inline]
    pub fn record(&self, record: impl Into<Record>) -> bool {
        let shared = &*self.inner.shared;
        match shared.queue.push(record.into()) {
            Pushed::Queued { wake } => {
                if wake {
                    shared.notify.notify_one();
                }
                true
            }
            Pushed::QueueFull => {
                shared.counters.on_queue_full();
                false
            }
            Pushed::MemoryBudget => {
                shared.counters.on_memory_budget();
                false
            }
            Pushed::Closed => {
                shared.counters.on_closed();
                false
            }
        }
    }

    /// The counters now (see [`CollectorStats`] for what a snapshot taken
    /// under load guarantees).
    pub fn stats(&self) -> CollectorStats {
        self.inner.shared.stats()
    }

    /// The text of the most recent sink error (failed attempt, timeout or
    /// panic), if any; it is not cleared by later successes.
    pub fn last_error(&self) -> Option<String> {
        self.inner.shared.counters.last_error()
    }

    /// Waits until every record queued before this call has been written or
    /// dropped; a partial batch is written at once rather than lingering.
    ///
    /// This can take as long as the retry policy allows when the sink is
    /// failing (with the default policy: until the sink is back); wrap it in
    /// `tokio::time::timeout` to bound it. Fails with
    /// [`ShutdownError::AlreadyShutdown`] after `shutdown`, and
    /// [`ShutdownError::WorkerGone`] if the worker has ended.
    pub async fn flush(&self) -> Result<(), ShutdownError> {
        if self.inner.shutdown_requested.load(Ordering::Acquire) {
            return Err(ShutdownError::AlreadyShutdown);
        }
        let (reply, answer) = oneshot::channel();
        self.inner
            .control
            .send(Control::Flush(reply))
            .await
            .map_err(|_| ShutdownError::WorkerGone)?;
        answer.await.map_err(|_| ShutdownError::WorkerGone)
    }

    /// Closes intake, writes everything queued within `deadline`, stops the
    /// worker and returns the final stats (`pending == 0`).
    ///
    /// Records still unwritten at the deadline are counted as
    /// `dropped_shutdown` and the call returns
    /// [`ShutdownError::DeadlineExceeded`] carrying the final stats. Records
    /// passed to [`record`](Self::record) afterwards count as
    /// `dropped_closed`. If the worker is not running (never spawned, or its
    /// runtime is gone) it returns [`ShutdownError::WorkerGone`] shortly
    /// after the deadline.
    ///
    /// Idempotent: a second call, from any handle, waits for the first one
    /// to finish and returns the same outcome (its `deadline` is ignored),
    /// so every part of an application may shut the collector down on its
    /// way out and each learns the final stats.
    pub async fn shutdown(&self, deadline: Duration) -> Result<CollectorStats, ShutdownError> {
        self.inner
            .shutdown_result
            .get_or_init(|| self.shutdown_once(deadline))
            .await
            .clone()
    }

    /// The first [`shutdown`](Self::shutdown): closes intake and asks the
    /// worker for its final drain. (Only ever run again if the first call's
    /// future was dropped before the worker answered; the worker has then
    /// been asked already, and the second request finds it gone.)
    async fn shutdown_once(&self, deadline: Duration) -> Result<CollectorStats, ShutdownError> {
        self.inner.shutdown_requested.store(true, Ordering::Release);
        let until = Instant::now() + deadline;
        let give_up = until + SHUTDOWN_GRACE;
        let (reply, answer) = oneshot::channel();
        let request = Control::Shutdown {
            deadline: until,
            reply,
        };
        match tokio::time::timeout_at(give_up, self.inner.control.send(request)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return Err(ShutdownError::WorkerGone),
        }
        match tokio::time::timeout_at(give_up, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) | Err(_) => Err(ShutdownError::WorkerGone),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemorySink;

    #[test]
    fn build_validates_settings() {
        let bad = |b: CollectorBuilder<MemorySink>| match b.build() {
            Err(BuildError::InvalidSetting { setting, .. }) => setting,
            other => panic!("expected InvalidSetting, got {other:?}"),
        };
        let b = || Collector::builder(MemorySink::new());
        assert_eq!(bad(b().queue_capacity(0)), "queue_capacity");
        assert_eq!(bad(b().max_batch(0)), "max_batch");
        assert_eq!(bad(b().export_timeout(Duration::ZERO)), "export_timeout");
        assert_eq!(bad(b().memory_budget(0)), "memory_budget");
        assert_eq!(
            bad(b().retry(RetryPolicy::default().with_max_attempts(0))),
            "retry.max_attempts"
        );
    }

    #[test]
    fn export_timeout_is_raised_above_the_sink_bound() {
        let s = Duration::from_secs;
        assert_eq!(effective_export_timeout(s(10), None), s(10));
        // PgSink's 30 s + 5 s.
        assert_eq!(effective_export_timeout(s(10), Some(s(35))), s(40));
        // Already above: kept.
        assert_eq!(effective_export_timeout(s(60), Some(s(35))), s(60));
        assert_eq!(
            effective_export_timeout(s(10), Some(Duration::MAX)),
            Duration::MAX
        );
    }

    #[test]
    fn max_batch_is_clamped_to_queue_capacity() {
        let (handle, _worker) = Collector::builder(MemorySink::new())
            .queue_capacity(10)
            .max_batch(1_000)
            .build()
            .unwrap();
        assert_eq!(handle.inner.shared.max_batch, 10);
    }

    #[test]
    fn spawn_outside_a_runtime_fails() {
        let err = Collector::builder(MemorySink::new()).spawn().unwrap_err();
        assert!(matches!(err, BuildError::NoRuntime));
    }

    #[test]
    fn handle_is_send_sync_clone_debug() {
        fn assert_traits<T: Send + Sync + Clone + fmt::Debug + 'static>() {}
        assert_traits::<CollectorHandle>();
        fn assert_send<T: Send + 'static>() {}
        assert_send::<Worker<MemorySink>>();
    }
}
