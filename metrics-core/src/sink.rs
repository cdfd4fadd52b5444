//! The [`MetricsSink`] trait: where batches of records go.

use std::fmt;
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

/// Identifies one batch across the collector's attempts to write it: every
/// retry of a batch carries the id of its first attempt (see
/// [`MetricsSink`]'s retry contract).
///
/// A UUIDv7 made when the batch is first handed to the sink, so ids are
/// unique across collectors, processes and restarts, and sort by when their
/// batch was first written: a sink may store it (as a `uuid`, from
/// [`to_bytes`](Self::to_bytes)) to recognise a batch it has seen.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchId([u8; 16]);

impl BatchId {
    /// A fresh id (what the collector does for each new batch; also for
    /// tests and for callers driving a sink by hand).
    pub fn generate() -> Self {
        Self(crate::id::uuid_v7_at(std::time::SystemTime::now()))
    }

    /// The id's 16 bytes (a UUIDv7, as `uuid::Uuid::from_bytes` takes them).
    pub fn to_bytes(self) -> [u8; 16] {
        self.0
    }
}

impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = crate::id::hyphenated(&self.0);
        // Hex digits and hyphens only.
        f.write_str(std::str::from_utf8(&text).unwrap_or_default())
    }
}

impl fmt::Debug for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BatchId({self})")
    }
}

/// Which call of [`MetricsSink::write`] this is: the batch's [`BatchId`] and
/// the attempt's number (1 for the first write of a batch, 2 for its first
/// retry, ...).
///
/// ```
/// use metrics_core::{BatchId, WriteAttempt};
///
/// let first = WriteAttempt::first(BatchId::generate());
/// let retry = first.retry();
/// assert_eq!((first.number(), retry.number()), (1, 2));
/// assert_eq!(first.batch_id(), retry.batch_id());
/// assert!(!first.is_retry() && retry.is_retry());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WriteAttempt {
    batch_id: BatchId,
    number: u32,
}

impl WriteAttempt {
    /// The first attempt at writing the batch `batch_id`.
    pub fn first(batch_id: BatchId) -> Self {
        Self {
            batch_id,
            number: 1,
        }
    }

    /// The next attempt at the same batch.
    #[must_use]
    pub fn retry(self) -> Self {
        Self {
            number: self.number.saturating_add(1),
            ..self
        }
    }

    /// The batch this attempt writes, the same for all its attempts.
    pub fn batch_id(&self) -> BatchId {
        self.batch_id
    }

    /// 1 for the first attempt at a batch, one more for each retry.
    pub fn number(&self) -> u32 {
        self.number
    }

    /// Whether an earlier attempt at the same batch failed (and may have
    /// stored part or all of it).
    pub fn is_retry(&self) -> bool {
        self.number > 1
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
/// # Retries: what the collector promises
///
/// Each call gets a [`WriteAttempt`]: the batch's [`BatchId`] and the
/// attempt's number.
///
/// - **One call at a time.** A collector's worker makes one call, and it ends
///   (returns, or is cancelled) before the next one starts. A sink shared by
///   several collectors sees their calls concurrently, told apart by id.
/// - **A new batch, a new id.** The first call for a batch has number 1 and
///   a [`BatchId`] never used before.
/// - **A retry is the same batch.** After a retryable error
///   ([`SinkError::is_retryable`]: [`Unavailable`](SinkError::Unavailable),
///   or [`Timeout`](SinkError::Timeout) when the collector's `export_timeout`
///   cut the attempt short and dropped its future), the collector calls again
///   after a backoff with the same records in the same order, the same
///   `BatchId` and a number one higher. No other batch is written in between.
/// - **An id ends for good.** Once the collector is done with a batch (the
///   sink succeeded, failed with a non-retryable error or panicked, the retry
///   policy gave up, or the shutdown deadline passed during the write), its id
///   is never passed again. A sink keeping state about an unfinished batch
///   may discard it as soon as a call carries another id.
///
/// # What a sink must do
///
/// - Return `Ok` only when every record of the batch is stored or counted in
///   [`WriteSummary::rejected`]: the collector counts the rest as written.
/// - Expect a retry after an attempt that stored part or all of the batch:
///   a timeout drops the attempt wherever it was, and a connection can break
///   after the backend committed but before it answered. The collector cannot
///   know, so it does not try to: by default delivery is *at least once*.
/// - For exactly-once delivery, make an attempt idempotent under its batch
///   id: remember which parts of batch `id` are stored (in the backend, in the
///   same transaction as the records, when a cancelled or unanswered attempt
///   must be covered too) and on a retry of `id` store only the rest.
///
/// ```
/// use metrics_core::{async_trait, Batch, MetricsSink, SinkError, WriteAttempt, WriteSummary};
///
/// #[derive(Debug)]
/// struct StdoutSink;
///
/// #[async_trait]
/// impl MetricsSink for StdoutSink {
///     async fn write(&self, batch: &Batch, attempt: WriteAttempt) -> Result<WriteSummary, SinkError> {
///         // Lines printed by a failed attempt stay printed: this sink is
///         // at-least-once and has no use for `attempt`.
///         let _ = attempt;
///         for r in batch.requests() {
///             println!("{} {} {} {:.2}ms", r.method, r.route, r.status, r.response_time_ms);
///         }
///         Ok(WriteSummary::all_written())
///     }
/// }
/// ```
#[async_trait]
pub trait MetricsSink: Send + Sync + 'static {
    /// Writes one batch; `attempt` tells a retry of a batch from a new one
    /// (see [the retry contract](MetricsSink#retries-what-the-collector-promises)).
    async fn write(&self, batch: &Batch, attempt: WriteAttempt) -> Result<WriteSummary, SinkError>;

    /// The longest one [`write`](Self::write) call can take before the sink
    /// gives up on its own (its connection, statement and commit timeouts),
    /// if it bounds its writes; `None` (the default) if it does not.
    ///
    /// The collector never cuts short a write the sink may still complete:
    /// it raises its `export_timeout` above this bound, so an attempt it
    /// counts as failed is one the sink itself reported as failed.
    fn max_write_duration(&self) -> Option<std::time::Duration> {
        None
    }
}

#[async_trait]
impl<S: MetricsSink + ?Sized> MetricsSink for Arc<S> {
    async fn write(&self, batch: &Batch, attempt: WriteAttempt) -> Result<WriteSummary, SinkError> {
        (**self).write(batch, attempt).await
    }

    fn max_write_duration(&self) -> Option<std::time::Duration> {
        (**self).max_write_duration()
    }
}

#[async_trait]
impl<S: MetricsSink + ?Sized> MetricsSink for Box<S> {
    async fn write(&self, batch: &Batch, attempt: WriteAttempt) -> Result<WriteSummary, SinkError> {
        (**self).write(batch, attempt).await
    }

    fn max_write_duration(&self) -> Option<std::time::Duration> {
        (**self).max_write_duration()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_ids_are_unique_uuid_v7_text() {
        let a = BatchId::generate();
        let b = BatchId::generate();
        assert_ne!(a, b);
        let uuid = uuid::Uuid::parse_str(&a.to_string()).unwrap();
        assert_eq!(uuid.get_version_num(), 7);
        assert_eq!(uuid.into_bytes(), a.to_bytes());
        assert_eq!(format!("{a:?}"), format!("BatchId({a})"));
    }

    #[test]
    fn retries_keep_the_batch_and_count_up() {
        let first = WriteAttempt::first(BatchId::generate());
        let third = first.retry().retry();
        assert_eq!(third.batch_id(), first.batch_id());
        assert_eq!(third.number(), 3);
        assert!(third.is_retry());
    }
}
