//! The [`MetricsSink`] trait: where batches of records go.

use std::sync::Arc;

use async_trait::async_trait;

use crate::error::SinkError;
use crate::record::{Record, RequestRecord, UsageEvent};

/// A batch of records handed to a sink in one call: request records and usage
/// events kept apart, since sinks usually store them in different tables.
///
/// The collector reuses one `Batch` (its vectors keep their capacity), so a
/// sink sees it borrowed and must not keep references past `write`.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    requests: Vec<RequestRecord>,
    usage: Vec<UsageEvent>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// A batch from already separated parts (for sinks that split a batch).
    pub fn from_parts(requests: Vec<RequestRecord>, usage: Vec<UsageEvent>) -> Self {
        Self { requests, usage }
    }

    /// An empty batch with room for `capacity` request records.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            requests: Vec::with_capacity(capacity),
            usage: Vec::new(),
        }
    }

    /// Adds a record to the matching half.
    pub fn push(&mut self, record: Record) {
        match record {
            Record::Request(r) => self.requests.push(r),
            Record::Usage(e) => self.usage.push(*e),
        }
    }

    /// The request records.
    pub fn requests(&self) -> &[RequestRecord] {
        &self.requests
    }

    /// The usage events.
    pub fn usage_events(&self) -> &[UsageEvent] {
        &self.usage
    }

    /// Number of records of both kinds.
    pub fn len(&self) -> usize {
        self.requests.len() + self.usage.len()
    }

    /// Whether the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty() && self.usage.is_empty()
    }

    /// Empties the batch, keeping its capacity.
    pub fn clear(&mut self) {
        self.requests.clear();
        self.usage.clear();
    }
}

/// What a successful [`MetricsSink::write`] reports: how many records of the
/// batch the sink refused for good (for example rows violating a constraint,
/// isolated by splitting the batch). The collector counts them as
/// `dropped_rejected`; every other record of the batch counts as written.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriteSummary {
    /// Records refused and never to be retried.
    pub rejected: u64,
}

impl WriteSummary {
    /// Every record was written.
    pub fn all_written() -> Self {
        Self { rejected: 0 }
    }

    /// All but `rejected` records were written.
    pub fn with_rejected(rejected: u64) -> Self {
        Self { rejected }
    }
}

/// Where the collector writes batches: PostgreSQL (`metrics-pg`), memory
/// ([`MemorySink`](crate::MemorySink)) or anything else.
///
/// Implementations are held as trait objects (`Arc<dyn MetricsSink>`), hence
/// `async_trait`. Return [`SinkError::unavailable`] for failures worth retrying
/// (connection lost, timeouts) and [`SinkError::rejected`] for batches that
/// would fail again.
///
/// ```
/// use metrics_core::{async_trait, Batch, MetricsSink, SinkError, WriteSummary};
///
/// #[derive(Debug)]
/// struct StdoutSink;
///
/// #[async_trait]
/// impl MetricsSink for StdoutSink {
///     async fn write(&self, batch: &Batch) -> Result<WriteSummary, SinkError> {
///         for r in batch.requests() {
///             println!("{} {} {} {:.2}ms", r.method, r.route, r.status, r.response_time_ms);
///         }
///         Ok(WriteSummary::all_written())
///     }
/// }
/// ```
#[async_trait]
pub trait MetricsSink: Send + Sync + 'static {
    /// Writes one batch. Called by a single worker, one call at a time.
    async fn write(&self, batch: &Batch) -> Result<WriteSummary, SinkError>;
}

#[async_trait]
impl<S: MetricsSink + ?Sized> MetricsSink for Arc<S> {
    async fn write(&self, batch: &Batch) -> Result<WriteSummary, SinkError> {
        (**self).write(batch).await
    }
}

#[async_trait]
impl<S: MetricsSink + ?Sized> MetricsSink for Box<S> {
    async fn write(&self, batch: &Batch) -> Result<WriteSummary, SinkError> {
        (**self).write(batch).await
    }
}
