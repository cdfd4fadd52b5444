//! Test doubles for code that uses the collector (feature `test-util`).
//!
//! [`GatedSink`] is a sink whose behaviour you switch at runtime: succeed,
//! fail (retryably or not), be slow, hang, or panic. It counts its calls,
//! remembers when each happened (on the Tokio clock, so paused-time tests can
//! check a backoff schedule) and stores what it accepted in a [`MemorySink`].

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::error::SinkError;
use crate::memory::MemorySink;
use crate::sink::{Batch, MetricsSink, WriteAttempt, WriteSummary};

/// What a [`GatedSink`] does on a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GateMode {
    /// Store the batch and succeed.
    Ok,
    /// Store the batch but report its last `n` records as rejected.
    PartialReject(u64),
    /// Fail with [`SinkError::Unavailable`] (retryable).
    Unavailable,
    /// Fail with [`SinkError::Rejected`] (not retryable).
    Reject,
    /// Wait this long (on the Tokio clock), then store and succeed.
    Slow(Duration),
    /// Never complete (the collector's export timeout must cut it).
    Never,
    /// Panic inside the write.
    Panic,
}

/// A [`MetricsSink`] for tests with switchable behaviour; see the
/// [module docs](self).
///
/// Clones share state: keep one to steer and inspect, give one to the
/// collector.
///
/// ```
/// use std::time::Duration;
/// use metrics_core::test_util::{GateMode, GatedSink};
/// use metrics_core::{Batch, BatchId, MetricsSink, SinkError, WriteAttempt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let sink = GatedSink::new();
/// // Fail twice, then fall back to the default mode (Ok).
/// sink.script([GateMode::Unavailable, GateMode::Unavailable]);
/// let batch = Batch::new();
/// let first = WriteAttempt::first(BatchId::generate());
/// assert!(matches!(sink.write(&batch, first).await, Err(SinkError::Unavailable(_))));
/// assert!(matches!(sink.write(&batch, first.retry()).await, Err(SinkError::Unavailable(_))));
/// assert!(sink.write(&batch, first.retry().retry()).await.is_ok());
/// assert_eq!(sink.calls(), 3);
/// assert_eq!(sink.call_log()[2].attempt.number(), 3);
/// # }
/// ```
#[derive(Clone)]
pub struct GatedSink {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    calls: AtomicU64,
    memory: MemorySink,
}

#[derive(Debug)]
struct State {
    mode: GateMode,
    script: VecDeque<GateMode>,
    calls: Vec<Call>,
}

/// One call a [`GatedSink`] received.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Call {
    /// When the call started (Tokio clock).
    pub at: Instant,
    /// Records in the batch.
    pub len: usize,
    /// The batch's id and the attempt's number, as the collector passed them.
    pub attempt: WriteAttempt,
    /// The mode it was served with.
    pub mode: GateMode,
}

impl GatedSink {
    /// A sink in mode [`GateMode::Ok`] storing into an unbounded-enough
    /// [`MemorySink`] (its default capacity).
    pub fn new() -> Self {
        Self::with_mode(GateMode::Ok)
    }

    /// A sink starting in `mode`.
    pub fn with_mode(mode: GateMode) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    mode,
                    script: VecDeque::new(),
                    calls: Vec::new(),
                }),
                calls: AtomicU64::new(0),
                memory: MemorySink::new(),
            }),
        }
    }

    /// Switches the mode for later calls (a call in progress keeps its mode).
    pub fn set_mode(&self, mode: GateMode) {
        self.lock().mode = mode;
    }

    /// The current default mode.
    pub fn mode(&self) -> GateMode {
        self.lock().mode
    }

    /// Modes for the next calls, one per call, before the default mode
    /// applies again.
    pub fn script(&self, modes: impl IntoIterator<Item = GateMode>) {
        self.lock().script.extend(modes);
    }

    /// Number of `write` calls so far.
    pub fn calls(&self) -> u64 {
        self.inner.calls.load(Ordering::SeqCst)
    }

    /// Every call so far, oldest first.
    pub fn call_log(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The store of successfully written records.
    pub fn memory(&self) -> &MemorySink {
        &self.inner.memory
    }

    /// Records stored so far (successful writes, rejected ones excluded).
    pub fn written(&self) -> u64 {
        self.inner.memory.snapshot().accepted()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn store(&self, batch: &Batch, skip_last: u64) {
        let keep = batch.len().saturating_sub(skip_last as usize);
        let mut kept = 0;
        for r in batch.requests() {
            if kept < keep {
                self.inner.memory.insert(r.clone());
                kept += 1;
            }
        }
        for e in batch.usage_events() {
            if kept < keep {
                self.inner.memory.insert(e.clone());
                kept += 1;
            }
        }
    }
}

impl Default for GatedSink {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for GatedSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatedSink")
            .field("mode", &self.mode())
            .field("calls", &self.calls())
            .field("memory", &self.inner.memory)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("GatedSink failure (mode {0:?})")]
struct GateError(GateMode);

#[async_trait]
impl MetricsSink for GatedSink {
    async fn write(&self, batch: &Batch, attempt: WriteAttempt) -> Result<WriteSummary, SinkError> {
        let mode = {
            let mut state = self.lock();
            let mode = state.script.pop_front().unwrap_or(state.mode);
            state.calls.push(Call {
                at: Instant::now(),
                len: batch.len(),
                attempt,
                mode,
            });
            mode
        };
        let _ = self.inner.calls.fetch_add(1, Ordering::SeqCst);
        match mode {
            GateMode::Ok => {
                self.store(batch, 0);
                Ok(WriteSummary::all_written())
            }
            GateMode::PartialReject(n) => {
                self.store(batch, n);
                Ok(WriteSummary::with_rejected(n.min(batch.len() as u64)))
            }
            GateMode::Unavailable => Err(SinkError::unavailable(GateError(mode))),
            GateMode::Reject => Err(SinkError::rejected(GateError(mode))),
            GateMode::Slow(d) => {
                tokio::time::sleep(d).await;
                self.store(batch, 0);
                Ok(WriteSummary::all_written())
            }
            GateMode::Never => std::future::pending().await,
            GateMode::Panic => panic!("GatedSink panics on purpose (GateMode::Panic)"),
        }
    }
}
