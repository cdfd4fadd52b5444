//! The errors of the sink contract: what a [`MetricsSink`](crate::MetricsSink)
//! reports, and the boxed backend error it wraps. The collector's own errors
//! live beside it (`collector/error.rs`), so this module depends on nothing
//! else in the crate.

use std::time::Duration;

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
