//! Error types of `metrics-core`.

use std::time::Duration;

use crate::collector::CollectorStats;

/// A boxed error from a sink's backend.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a sink could not write a batch.
///
/// The collector retries errors for which [`SinkError::is_retryable`] is true
/// (with backoff, up to its retry policy) and counts the batch as dropped
/// otherwise.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The backend is unreachable or overloaded; the same batch may succeed later.
    #[error("metrics sink unavailable (will retry): {0}")]
    Unavailable(#[source] BoxError),
    /// The backend refused the batch; writing it again would fail again.
    #[error("metrics sink rejected the batch: {0}")]
    Rejected(#[source] BoxError),
    /// The write did not finish within the collector's export timeout.
    #[error("metrics sink write timed out after {0:?}")]
    Timeout(Duration),
    /// The sink panicked while writing; the batch is not retried.
    #[error("metrics sink panicked while writing a batch")]
    Panicked,
}

impl SinkError {
    /// A retryable failure (connection lost, server restarting, too busy).
    pub fn unavailable(err: impl Into<BoxError>) -> Self {
        Self::Unavailable(err.into())
    }

    /// A permanent failure for this batch.
    pub fn rejected(err: impl Into<BoxError>) -> Self {
        Self::Rejected(err.into())
    }

    /// Whether writing the same batch again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Timeout(_))
    }
}

/// A collector configuration that cannot work, reported by `build()`/`spawn()`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// `spawn()` was called outside a Tokio runtime.
    #[error(
        "Collector::spawn needs a Tokio runtime: call it from within a runtime, or use build() and spawn the Worker yourself"
    )]
    NoRuntime,
    /// A setting is out of range.
    #[error("invalid collector setting `{setting}`: {reason}")]
    InvalidSetting {
        /// The builder method concerned.
        setting: &'static str,
        /// What is wrong and what to do.
        reason: &'static str,
    },
}

/// Why [`CollectorHandle::shutdown`](crate::CollectorHandle::shutdown) did not
/// return clean final stats.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ShutdownError {
    /// Shutdown was already requested: returned by
    /// [`flush`](crate::CollectorHandle::flush) after `shutdown`.
    #[error("the collector was already shut down")]
    AlreadyShutdown,
    /// The deadline passed before every record was written; what was still
    /// queued is counted as `dropped_shutdown` in the stats.
    #[error("collector shutdown deadline passed; {} record(s) dropped", .0.dropped_shutdown)]
    DeadlineExceeded(CollectorStats),
    /// The worker is gone (it panicked or was never spawned).
    #[error("the collector worker is not running")]
    WorkerGone,
}
