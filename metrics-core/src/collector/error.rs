//! The collector's errors: building it, flushing it and shutting it down.

use super::stats::CollectorStats;

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
