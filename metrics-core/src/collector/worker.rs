//! The collector's background task: takes records from the queue, batches
//! them, writes one batch at a time with retries, and answers flush and
//! shutdown requests.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::FutureExt as _;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::batch::{Batcher, Wait};
use super::error::ShutdownError;
use super::queue::{Drainer, Queue};
use super::retry::{Backoff, RetryPolicy};
use super::shared::Shared;
use super::stats::{CollectorStats, DropReason};
use crate::error::SinkError;
use crate::sink::{Batch, BatchId, MetricsSink, WriteAttempt};

/// Messages from the handles to the worker (a small bounded channel, apart
/// from the record queue so a full queue never delays a shutdown). The
/// channel closing means every handle is gone.
#[derive(Debug)]
pub(crate) enum Control {
    /// Write everything queued so far, then answer.
    Flush(oneshot::Sender<()>),
    /// Close intake, drain until `deadline`, answer with the final stats.
    Shutdown {
        deadline: Instant,
        reply: oneshot::Sender<Result<CollectorStats, ShutdownError>>,
    },
}

/// Settings the worker runs with (validated by the builder).
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) max_batch: usize,
    pub(crate) linger: Duration,
    pub(crate) retry: RetryPolicy,
    /// The effective limit of one attempt: never below the sink's own bound
    /// (see `CollectorBuilder::export_timeout`).
    pub(crate) export_timeout: Duration,
}

/// The collector's background task, returned by
/// [`CollectorBuilder::build`](crate::CollectorBuilder::build).
///
/// It is a plain future: spawn it on the runtime (and with the executor) of
/// your choice, for example `tokio::spawn(worker)`. It completes after
/// [`CollectorHandle::shutdown`](crate::CollectorHandle::shutdown) or once
/// every handle is dropped and the queue is drained. The runtime must have the
/// time driver enabled (linger, retries and timeouts use Tokio timers).
///
/// Dropping the worker before it completes (for example when the runtime shuts
/// down) counts whatever was still queued as `dropped_shutdown`, so the
/// accounting stays exact.
pub struct Worker<S> {
    fut: Pin<Box<dyn Future<Output = ()> + Send + 'static>>,
    _sink: PhantomData<fn() -> S>,
}

impl<S: MetricsSink> Worker<S> {
    pub(crate) fn new(
        sink: S,
        control: mpsc::Receiver<Control>,
        shared: Arc<Shared>,
        config: Config,
    ) -> Self {
        let state = WorkerState {
            sink,
            batch: Batch::with_capacity(config.max_batch),
            batcher: Batcher::new(config.max_batch, config.linger),
            drainer: Drainer::new(&shared.queue),
            ctl: ControlState {
                rx: control,
                closed: false,
                flush_waiters: Vec::new(),
                shutdown: None,
            },
            shared,
            config,
            dropped_at_deadline: 0,
        };
        Self {
            fut: Box::pin(state.run()),
            _sink: PhantomData,
        }
    }
}

impl<S> Future for Worker<S> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.get_mut().fut.as_mut().poll(cx)
    }
}

impl<S> fmt::Debug for Worker<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("sink", &std::any::type_name::<S>())
            .finish_non_exhaustive()
    }
}

// ===== impl WorkerState =====

struct WorkerState<S> {
    sink: S,
    batch: Batch,
    batcher: Batcher,
    drainer: Drainer,
    ctl: ControlState,
    shared: Arc<Shared>,
    config: Config,
    /// Records dropped because the shutdown deadline passed.
    dropped_at_deadline: u64,
}

struct ControlState {
    rx: mpsc::Receiver<Control>,
    /// Every handle is gone: drain and stop.
    closed: bool,
    /// Flush callers, each with the records per shard that had been accepted
    /// when its request arrived: it is answered once the worker has moved at
    /// least those into batches and has no batch in hand.
    flush_waiters: Vec<(Box<[u64]>, oneshot::Sender<()>)>,
    shutdown: Option<(
        Instant,
        oneshot::Sender<Result<CollectorStats, ShutdownError>>,
    )>,
}

impl ControlState {
    fn draining(&self) -> bool {
        self.closed || self.shutdown.is_some()
    }

    fn shutdown_deadline(&self) -> Option<Instant> {
        self.shutdown.as_ref().map(|(d, _)| *d)
    }

    fn on_message(&mut self, msg: Option<Control>, queue: &Queue) {
        match msg {
            None => self.closed = true,
            Some(Control::Flush(reply)) => {
                // Everything accepted by now was recorded before the flush
                // request arrived (and so covers whatever was recorded before
                // `flush()` was called).
                self.flush_waiters.push((queue.accepted(), reply));
            }
            Some(Control::Shutdown { deadline, reply }) => {
                // Close intake before the final drain (tower buffer's
                // ordering): each shard is closed under its lock, so a record
                // is either in a shard before it closes (and gets drained) or
                // fails fast in `record()` as `dropped_closed`.
                queue.close();
                self.shutdown = Some((deadline, reply));
            }
        }
    }
}

impl<S: MetricsSink> WorkerState<S> {
    async fn run(mut self) {
        loop {
            if let Some(deadline) = self.ctl.shutdown_deadline() {
                if Instant::now() >= deadline {
                    self.abandon_all();
                    break;
                }
            }
            let exhausted = self.fill();

            let flushing = self.ctl.draining() || !self.ctl.flush_waiters.is_empty();
            if self.batcher.is_due(Instant::now(), flushing) {
                if !self.write_batch().await {
                    // The shutdown deadline passed during the write.
                    self.abandon_all();
                    break;
                }
                self.answer_flushes();
                continue;
            }
            self.answer_flushes();
            // Draining means no record can arrive any more (intake closed, or
            // no handle left), so an empty queue stays empty.
            if self.ctl.draining() && self.batcher.len() == 0 && exhausted {
                break;
            }

            // Ask to be woken by the first record (idle), or by the records
            // that complete the batch (lingering).
            let need = match self.batcher.wait() {
                Wait::FirstRecord => 1,
                Wait::Until(_) => self.config.max_batch - self.batcher.len(),
            };
            if !self.drainer.arm(&self.shared.queue, need) {
                continue; // already there: drain again
            }
            let linger_end = match self.batcher.wait() {
                Wait::FirstRecord => None,
                Wait::Until(t) => Some(t),
            };
            let deadline = self.ctl.shutdown_deadline();
            tokio::select! {
                biased;
                msg = self.ctl.rx.recv(), if !self.ctl.closed => {
                    self.ctl.on_message(msg, &self.shared.queue);
                }
                () = self.shared.notify.notified() => {}
                () = sleep_opt(linger_end) => {}
                () = sleep_opt(deadline) => {}
            }
        }
        self.finish();
    }

    /// Moves queued records into the batch without waiting, up to a full
    /// batch. Returns whether the queue was found empty.
    fn fill(&mut self) -> bool {
        let room = self.config.max_batch - self.batch.len();
        let counters = &self.shared.counters;
        let filled = self
            .drainer
            .fill(&self.shared.queue, &mut self.batch, room, |n| {
                counters.on_taken(n as u64);
            });
        self.batcher.add(Instant::now(), filled.moved);
        filled.exhausted
    }

    /// Writes the batch in hand (with retries), listening to control messages
    /// meanwhile. Returns `false` if the shutdown deadline cut the write short
    /// (the batch is then still in hand).
    async fn write_batch(&mut self) -> bool {
        let n = self.batch.len() as u64;
        self.shared.counters.on_batch();
        let outcome = {
            let write = write_with_retry(&self.sink, &self.batch, &self.config, &self.shared);
            tokio::pin!(write);
            loop {
                let deadline = self.ctl.shutdown_deadline();
                tokio::select! {
                    biased;
                    out = &mut write => break Some(out),
                    msg = self.ctl.rx.recv(), if !self.ctl.closed => {
                        self.ctl.on_message(msg, &self.shared.queue);
                    }
                    () = sleep_opt(deadline) => break None,
                }
            }
        };
        let counters = &self.shared.counters;
        match outcome {
            None => return false,
            Some(Outcome::Written { rejected }) => {
                let rejected = rejected.min(n);
                counters.on_dropped(DropReason::Rejected, rejected);
                counters.on_written(n - rejected);
            }
            Some(Outcome::Dropped(reason)) => counters.on_dropped(reason, n),
        }
        self.batch.clear();
        self.batcher.reset();
        self.drainer.batch_done(&self.shared.queue);
        true
    }

    /// The shutdown deadline passed: the batch in hand and everything still
    /// queued are dropped and counted, and intake is closed.
    fn abandon_all(&mut self) {
        let n = self.drop_everything();
        self.dropped_at_deadline += n;
    }

    /// Closes intake and counts the batch in hand and everything queued as
    /// `dropped_shutdown`. Returns how many.
    fn drop_everything(&mut self) -> u64 {
        let in_hand = self.batch.len() as u64;
        self.batch.clear();
        self.batcher.reset();
        let counters = &self.shared.counters;
        counters.on_dropped(DropReason::Shutdown, in_hand);
        let queued = self.drainer.take_all(&self.shared.queue);
        counters.on_dropped_queued(DropReason::Shutdown, queued);
        in_hand + queued
    }

    fn answer_flushes(&mut self) {
        // A batch in hand is not resolved yet; flushing makes it due, so this
        // is reached again right after it is written.
        if self.ctl.flush_waiters.is_empty() || !self.batch.is_empty() {
            return;
        }
        let waiters = std::mem::take(&mut self.ctl.flush_waiters);
        for (targets, reply) in waiters {
            if self.drainer.has_moved(&targets) {
                // The caller may have given up waiting; nothing to do then.
                let _ = reply.send(());
            } else {
                self.ctl.flush_waiters.push((targets, reply));
            }
        }
    }

    /// The worker is done: answer everyone still waiting.
    fn finish(&mut self) {
        for (_, reply) in self.ctl.flush_waiters.drain(..) {
            let _ = reply.send(());
        }
        if let Some((_, reply)) = self.ctl.shutdown.take() {
            let stats = self.shared.stats();
            let answer = if self.dropped_at_deadline > 0 {
                Err(ShutdownError::DeadlineExceeded(stats))
            } else {
                Ok(stats)
            };
            let _ = reply.send(answer);
        }
    }
}

impl<S> Drop for WorkerState<S> {
    fn drop(&mut self) {
        // Closes intake for good (records after the worker ended count as
        // `dropped_closed`). Finds records only if the worker future is
        // dropped before completing (runtime shutdown) or a bug panics it:
        // count them so `received = written + dropped + pending` keeps
        // holding.
        let in_hand = self.batch.len() as u64;
        self.batch.clear();
        let counters = &self.shared.counters;
        counters.on_dropped(DropReason::Shutdown, in_hand);
        let queued = self.drainer.take_all(&self.shared.queue);
        counters.on_dropped_queued(DropReason::Shutdown, queued);
        // Every way the worker ends passes here once, so this is the one
        // place for the totals; each drop reason warned once when it first
        // happened, and this line says how many it came to.
        log_dropped_totals(&self.shared.stats());
    }
}

/// The `warn!` line with the final drop totals by reason, when anything was
/// dropped at all.
fn log_dropped_totals(s: &CollectorStats) {
    if s.dropped() == 0 {
        return;
    }
    tracing::warn!(
        dropped = s.dropped(),
        dropped_queue_full = s.dropped_queue_full,
        dropped_memory_budget = s.dropped_memory_budget,
        dropped_retries_exhausted = s.dropped_retries_exhausted,
        dropped_rejected = s.dropped_rejected,
        dropped_shutdown = s.dropped_shutdown,
        dropped_closed = s.dropped_closed,
        received = s.received,
        written = s.written,
        "metrics collector stopped; records were dropped (totals by reason)"
    );
}

// ===== writing =====

/// How a batch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The sink took the batch; `rejected` of its records were refused.
    Written { rejected: u64 },
    /// The batch was given up.
    Dropped(DropReason),
}

/// One batch: attempts bounded by `export_timeout`, panics caught, retryable
/// errors retried per the policy, every attempt under the batch's one id.
async fn write_with_retry<S: MetricsSink>(
    sink: &S,
    batch: &Batch,
    config: &Config,
    shared: &Shared,
) -> Outcome {
    let counters = &shared.counters;
    let mut backoff = Backoff::start(&config.retry, Instant::now());
    // One id for every attempt at this batch: the sink's way to recognise a
    // retry (the `MetricsSink` retry contract).
    let mut attempt = WriteAttempt::first(BatchId::generate());
    loop {
        if attempt.is_retry() {
            counters.on_retry();
        }
        // The call itself sits inside the async block so that a sink that
        // panics before returning its future is caught too.
        let write = AssertUnwindSafe(async { sink.write(batch, attempt).await }).catch_unwind();
        let err = match tokio::time::timeout(config.export_timeout, write).await {
            Ok(Ok(Ok(summary))) => {
                return Outcome::Written {
                    rejected: summary.rejected,
                };
            }
            Ok(Ok(Err(err))) => err,
            Ok(Err(_panic)) => SinkError::Panicked,
            Err(_elapsed) => SinkError::Timeout(config.export_timeout),
        };
        counters.set_last_error(&err);
        if !err.is_retryable() {
            return Outcome::Dropped(match err {
                // A panic says nothing about the records; it is a sink failure
                // that we do not repeat, counted with the other failures.
                SinkError::Panicked => DropReason::RetriesExhausted,
                _ => DropReason::Rejected,
            });
        }
        match backoff.next_delay(Instant::now(), fastrand::f64()) {
            Some(delay) => tokio::time::sleep(delay).await,
            None => return Outcome::Dropped(DropReason::RetriesExhausted),
        }
        attempt = attempt.retry();
    }
}

async fn sleep_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
