//! [`PgSink`]: the [`MetricsSink`] that writes batches with binary `COPY`.

use std::collections::VecDeque;
use std::fmt;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Object, Pool};
use futures_util::stream::{FuturesUnordered, StreamExt};
use metrics_core::{
    Batch, BatchId, MetricsSink, SinkError, WriteAttempt, WriteSummary, async_trait,
};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use uuid::Uuid;

use crate::conn;
use crate::error::Error;
use crate::schema::SchemaName;
use crate::tables::{
    REQUEST_COLUMNS, REQUEST_TYPES, USAGE_COLUMNS, USAGE_TYPES, request_is_valid, usage_is_valid,
};

/// Writes batches of [`RequestRecord`](metrics_core::RequestRecord)s and
/// [`UsageEvent`](metrics_core::UsageEvent)s to PostgreSQL:
/// one binary `COPY ... FROM STDIN` per table and chunk, each chunk in its own
/// transaction on a pooled connection.
///
/// * **Concurrency.** A batch of at least `2 × min_rows_per_copy` request
///   records is split into up to `max_concurrent_copies` chunks written at the
///   same time on as many connections (the collector keeps one write in
///   flight; this is how a backlog drains faster). Usage events get a COPY of
///   their own.
/// * **Errors.** A lost connection, a server shutting down or starting, a
///   serialization failure, a deadlock, too many connections or a pool
///   timeout are [`SinkError::Unavailable`]: the collector retries the batch.
///   Chunks already committed are remembered under the batch's
///   [`BatchId`], so a retry of the same batch (the collector passes the same
///   id, see [`MetricsSink`]'s retry contract) writes only what is missing. A constraint violation or a data exception
///   (SQLSTATE class 23 or 22) splits the failing chunk in halves, again and
///   again, until the offending rows are isolated; they are reported as
///   rejected ([`WriteSummary::rejected`]) and everything else is written.
///   Rows that break a CHECK constraint known to this crate (status outside
///   100-599, negative or non-finite latency, empty event type, non-object
///   metadata) are rejected without a round trip.
/// * **Recovery.** Broken connections are dropped rather than returned to
///   the pool, and the pool connects afresh on the next write, so the sink
///   resumes on its own once the server is back.
///
/// # Example
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use metrics_core::Collector;
/// use metrics_pg::{PgSink, create_pool, migrate};
///
/// let pool = create_pool("postgres://app@localhost/app", 4)?;
/// let mut client = pool.get().await?;
/// migrate(&mut client, "app_metrics").await?;
/// drop(client);
/// let sink = PgSink::builder(pool)
///     .schema("app_metrics")
///     .acquire_timeout(Duration::from_secs(10))
///     .max_concurrent_copies(2)
///     .build()?;
/// let collector = Collector::builder(sink).spawn()?;
/// # let _ = collector;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PgSink {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    schema: SchemaName,
    copy_requests: String,
    copy_usage: String,
    set_statement_timeout: String,
    acquire_timeout: Duration,
    statement_timeout: Duration,
    max_concurrent_copies: usize,
    min_rows_per_copy: usize,
    /// What is left of a batch whose last write failed with a retryable
    /// error after some chunks were committed. Never held across an await.
    progress: Mutex<Option<Progress>>,
}

/// Builder of a [`PgSink`]; see [`PgSink::builder`].
pub struct PgSinkBuilder {
    pool: Pool,
    schema: String,
    acquire_timeout: Duration,
    statement_timeout: Duration,
    max_concurrent_copies: usize,
    min_rows_per_copy: usize,
}

/// Which table a chunk goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    Requests,
    Usage,
}

/// A chunk of a batch: `start..end` of one table's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Chunk {
    table: Table,
    start: usize,
    end: usize,
}

/// The state of a partly written batch.
#[derive(Debug)]
struct Progress {
    /// The batch this is the progress of; a call with another id starts
    /// afresh (the collector never passes an id again once it moved on).
    batch_id: BatchId,
    requests_len: usize,
    usage_len: usize,
    /// Chunks not written yet.
    pending: Vec<Chunk>,
    /// Records refused so far.
    rejected: u64,
    /// Whether any chunk of the batch has been committed.
    committed_any: bool,
}

// ===== impl PgSink =====

impl PgSink {
    /// The default time to wait for a pooled connection.
    pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
    /// The default `statement_timeout` of the write transactions.
    pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
    /// The default number of COPY streams a large batch is split into.
    pub const DEFAULT_MAX_CONCURRENT_COPIES: usize = 2;
    /// The default smallest chunk worth its own COPY stream.
    pub const DEFAULT_MIN_ROWS_PER_COPY: usize = 500;

    /// A sink with every default setting, writing to the `app_metrics` schema.
    pub fn new(pool: Pool) -> Self {
        Self::from_parts(
            pool,
            SchemaName::default(),
            Self::DEFAULT_ACQUIRE_TIMEOUT,
            Self::DEFAULT_STATEMENT_TIMEOUT,
            Self::DEFAULT_MAX_CONCURRENT_COPIES,
            Self::DEFAULT_MIN_ROWS_PER_COPY,
        )
    }

    /// Starts configuring a sink over `pool`.
    ///
    /// Give the pool at least `max_concurrent_copies` connections (and
    /// preferably a `RecyclingMethod::Verified` manager, as
    /// [`create_pool`](crate::create_pool) sets up).
    pub fn builder(pool: Pool) -> PgSinkBuilder {
        PgSinkBuilder {
            pool,
            schema: crate::schema::DEFAULT_SCHEMA.to_owned(),
            acquire_timeout: Self::DEFAULT_ACQUIRE_TIMEOUT,
            statement_timeout: Self::DEFAULT_STATEMENT_TIMEOUT,
            max_concurrent_copies: Self::DEFAULT_MAX_CONCURRENT_COPIES,
            min_rows_per_copy: Self::DEFAULT_MIN_ROWS_PER_COPY,
        }
    }

    fn from_parts(
        pool: Pool,
        schema: SchemaName,
        acquire_timeout: Duration,
        statement_timeout: Duration,
        max_concurrent_copies: usize,
        min_rows_per_copy: usize,
    ) -> Self {
        let copy_requests = format!(
            "COPY {} ({REQUEST_COLUMNS}) FROM STDIN (FORMAT binary)",
            schema.qualify("performance_metrics")
        );
        let copy_usage = format!(
            "COPY {} ({USAGE_COLUMNS}) FROM STDIN (FORMAT binary)",
            schema.qualify("usage_events")
        );
        let set_statement_timeout = conn::set_statement_timeout(statement_timeout);
        Self {
            inner: Arc::new(Inner {
                pool,
                schema,
                copy_requests,
                copy_usage,
                set_statement_timeout,
                acquire_timeout,
                statement_timeout,
                max_concurrent_copies,
                min_rows_per_copy,
                progress: Mutex::new(None),
            }),
        }
    }

    /// The schema written to.
    pub fn schema(&self) -> &SchemaName {
        &self.inner.schema
    }

    /// The pool the sink writes through.
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// Writes `batch`, isolating rows the database refuses.
    ///
    /// This is what [`MetricsSink::write`] calls; it is public so callers can
    /// see the typed [`Error`] (the trait method maps it to a [`SinkError`]).
    /// `Ok(n)` is the number of records refused for good. Pass the same
    /// `attempt.batch_id()` when retrying the same batch after a retryable
    /// error, so that chunks committed by the failed attempt are not written
    /// twice.
    pub async fn write_batch(&self, batch: &Batch, attempt: WriteAttempt) -> Result<u64, Error> {
        if batch.is_empty() {
            return Ok(0);
        }
        let mut progress = self.resume_or_start(batch, attempt.batch_id());
        let outcome = self.run(batch, &mut progress).await;
        match outcome {
            RunOutcome::Done => Ok(progress.rejected),
            RunOutcome::Retryable(e) => {
                // Keep what is left so the collector's retry of this same
                // batch writes only the missing chunks (no duplicates).
                if progress.committed_any {
                    *self.lock_progress() = Some(progress);
                }
                Err(e)
            }
            RunOutcome::Fatal(e) => {
                if progress.committed_any {
                    // Part of the batch is stored: report the rest as
                    // rejected rather than failing the whole batch, which the
                    // collector would count as dropped although rows landed.
                    let unwritten = progress
                        .pending
                        .iter()
                        .map(|c| valid_rows(batch, *c))
                        .sum::<u64>();
                    tracing::error!(error = %e, unwritten, "PgSink: part of a batch could not be written and will not be retried");
                    Ok(progress.rejected + unwritten)
                } else {
                    Err(e)
                }
            }
        }
    }

    fn lock_progress(&self) -> std::sync::MutexGuard<'_, Option<Progress>> {
        // A poisoned lock only means a panic elsewhere while holding it; the
        // Option inside is still a consistent value.
        self.inner
            .progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The saved progress if it belongs to batch `batch_id`, or a fresh plan.
    fn resume_or_start(&self, batch: &Batch, batch_id: BatchId) -> Progress {
        let saved = self.lock_progress().take();
        if let Some(p) = saved {
            // The lengths can only differ if a caller of `write_batch` broke
            // the contract (another batch under the same id): then the chunk
            // ranges would not fit, so start afresh rather than index past
            // the batch.
            if p.batch_id == batch_id
                && p.requests_len == batch.requests().len()
                && p.usage_len == batch.usage_events().len()
            {
                return p;
            }
            // The collector gave up on that batch (or moved on): its written
            // chunks stay written, the rest was counted dropped by it.
        }
        let requests = batch.requests().len();
        let usage = batch.usage_events().len();
        let mut pending = split(
            Table::Requests,
            requests,
            self.inner.max_concurrent_copies,
            self.inner.min_rows_per_copy,
        );
        if usage > 0 {
            pending.push(Chunk {
                table: Table::Usage,
                start: 0,
                end: usage,
            });
        }
        let invalid = batch
            .requests()
            .iter()
            .filter(|r| !request_is_valid(r))
            .count()
            + batch
                .usage_events()
                .iter()
                .filter(|e| !usage_is_valid(e))
                .count();
        Progress {
            batch_id,
            requests_len: requests,
            usage_len: usage,
            pending,
            rejected: invalid as u64,
            committed_any: false,
        }
    }

    /// Writes the pending chunks, up to `max_concurrent_copies` at a time,
    /// bisecting chunks the database refuses for their data.
    async fn run(&self, batch: &Batch, progress: &mut Progress) -> RunOutcome {
        let mut queue: VecDeque<Chunk> = progress.pending.drain(..).collect();
        let mut in_flight = FuturesUnordered::new();
        let mut retryable: Option<Error> = None;
        let mut fatal: Option<Error> = None;
        loop {
            // After a failure, start nothing new: the in-flight chunks finish
            // (their outcome must be known for the accounting) and the rest
            // waits for the retry.
            while retryable.is_none()
                && fatal.is_none()
                && in_flight.len() < self.inner.max_concurrent_copies
            {
                let Some(chunk) = queue.pop_front() else {
                    break;
                };
                in_flight.push(async move { (chunk, self.write_chunk(batch, chunk).await) });
            }
            let Some((chunk, result)) = in_flight.next().await else {
                break;
            };
            match result {
                Ok(()) => progress.committed_any = true,
                Err(e) if e.is_data_error() => {
                    let rows = valid_rows(batch, chunk);
                    if rows <= 1 || chunk.end - chunk.start <= 1 {
                        tracing::warn!(error = %e, "PgSink: rejected a row the database refuses");
                        progress.rejected += rows;
                    } else {
                        let mid = chunk.start + (chunk.end - chunk.start) / 2;
                        queue.push_front(Chunk { end: mid, ..chunk });
                        queue.push_front(Chunk {
                            start: mid,
                            ..chunk
                        });
                    }
                }
                Err(e) if e.is_retryable() => {
                    progress.pending.push(chunk);
                    retryable.get_or_insert(e);
                }
                Err(e) => {
                    progress.pending.push(chunk);
                    fatal.get_or_insert(e);
                }
            }
        }
        progress.pending.extend(queue);
        match (fatal, retryable) {
            (Some(e), _) => RunOutcome::Fatal(e),
            (None, Some(e)) => RunOutcome::Retryable(e),
            (None, None) => RunOutcome::Done,
        }
    }

    /// One chunk in one transaction on one pooled connection.
    async fn write_chunk(&self, batch: &Batch, chunk: Chunk) -> Result<(), Error> {
        let mut conn = conn::acquire(&self.inner.pool, self.inner.acquire_timeout).await?;
        let result = conn::within_deadline(
            self.inner.statement_timeout,
            self.copy_chunk(&mut conn, batch, chunk),
        )
        .await;
        if let Err(e) = &result {
            // Refused data (the bisection path) keeps the connection.
            conn::release_after_error(conn, e);
        }
        result
    }

    async fn copy_chunk(
        &self,
        conn: &mut Object,
        batch: &Batch,
        chunk: Chunk,
    ) -> Result<(), Error> {
        let tx = conn::write_transaction(conn, &self.inner.set_statement_timeout).await?;
        let (sql, types) = match chunk.table {
            Table::Requests => (&self.inner.copy_requests, &REQUEST_TYPES[..]),
            Table::Usage => (&self.inner.copy_usage, &USAGE_TYPES[..]),
        };
        let statement = tx
            .prepare_cached(sql)
            .await
            .map_err(|e| Error::db("preparing COPY", e))?;
        let sink = tx
            .copy_in(&statement)
            .await
            .map_err(|e| Error::db("starting COPY", e))?;
        let mut writer = pin!(BinaryCopyInWriter::new(sink, types));
        match chunk.table {
            Table::Requests => {
                for r in &batch.requests()[chunk.start..chunk.end] {
                    if !request_is_valid(r) {
                        continue;
                    }
                    let id = Uuid::from_bytes(metrics_core::uuid_v7_at(r.timestamp));
                    let status = i32::from(r.status);
                    let error_type = r.error_type.as_ref().map(|e| e.as_str());
                    writer
                        .as_mut()
                        .write(&[
                            &id,
                            &r.timestamp,
                            &r.route.as_str(),
                            &r.method.as_str(),
                            &status,
                            &r.response_time_ms,
                            &r.user_id.as_ref().map(|u| u.as_str()),
                            &error_type.as_deref(),
                            &r.correlation_id.as_ref().map(|c| c.as_str()),
                        ])
                        .await
                        .map_err(|e| Error::db("writing COPY rows", e))?;
                }
            }
            Table::Usage => {
                for e in &batch.usage_events()[chunk.start..chunk.end] {
                    if !usage_is_valid(e) {
                        continue;
                    }
                    let id = Uuid::from_bytes(metrics_core::uuid_v7_at(e.timestamp));
                    writer
                        .as_mut()
                        .write(&[
                            &id,
                            &e.timestamp,
                            &e.received_at,
                            &e.event_type.as_str(),
                            &e.user_id.as_str(),
                            &e.page_name.as_deref(),
                            &e.element_id.as_deref(),
                            &e.success,
                            &e.metadata,
                        ])
                        .await
                        .map_err(|err| Error::db("writing COPY rows", err))?;
                }
            }
        }
        writer
            .as_mut()
            .finish()
            .await
            .map_err(|e| Error::db("finishing COPY", e))?;
        tx.commit()
            .await
            .map_err(|e| Error::db("committing a write transaction", e))
    }
}

enum RunOutcome {
    Done,
    Retryable(Error),
    Fatal(Error),
}

#[async_trait]
impl MetricsSink for PgSink {
    async fn write(&self, batch: &Batch, attempt: WriteAttempt) -> Result<WriteSummary, SinkError> {
        match self.write_batch(batch, attempt).await {
            Ok(rejected) => Ok(WriteSummary::with_rejected(rejected)),
            Err(e) if e.is_retryable() => Err(SinkError::unavailable(e)),
            Err(e) => Err(SinkError::rejected(e)),
        }
    }
}

impl fmt::Debug for PgSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The pool's Debug would print its whole config; its status is what
        // a reader of the log wants.
        f.debug_struct("PgSink")
            .field("schema", &self.inner.schema)
            .field("pool", &self.inner.pool.status())
            .field("acquire_timeout", &self.inner.acquire_timeout)
            .field("statement_timeout", &self.inner.statement_timeout)
            .field("max_concurrent_copies", &self.inner.max_concurrent_copies)
            .field("min_rows_per_copy", &self.inner.min_rows_per_copy)
            .finish_non_exhaustive()
    }
}

// ===== impl PgSinkBuilder =====

impl PgSinkBuilder {
    /// The schema holding the tables (default `app_metrics`).
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// How long a write waits for a pooled connection before failing with a
    /// retryable error (default 30 s).
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// `statement_timeout` of the write transactions (default 30 s). The
    /// client also gives up 5 s after it, in case the server vanished.
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// How many COPY streams (connections) one large batch may use at once
    /// (default 2).
    pub fn max_concurrent_copies(mut self, n: usize) -> Self {
        self.max_concurrent_copies = n;
        self
    }

    /// The smallest chunk worth a COPY stream of its own (default 500): a
    /// batch is split only into chunks at least this large.
    pub fn min_rows_per_copy(mut self, n: usize) -> Self {
        self.min_rows_per_copy = n;
        self
    }

    /// Validates the settings and builds the sink.
    pub fn build(self) -> Result<PgSink, Error> {
        let schema = SchemaName::new(&self.schema)?;
        if self.max_concurrent_copies == 0 {
            return Err(Error::InvalidSetting {
                setting: "max_concurrent_copies",
                reason: "must be at least 1",
            });
        }
        if self.min_rows_per_copy == 0 {
            return Err(Error::InvalidSetting {
                setting: "min_rows_per_copy",
                reason: "must be at least 1",
            });
        }
        if self.acquire_timeout.is_zero() {
            return Err(Error::InvalidSetting {
                setting: "acquire_timeout",
                reason: "must be greater than zero",
            });
        }
        if self.statement_timeout < Duration::from_millis(1) {
            return Err(Error::InvalidSetting {
                setting: "statement_timeout",
                reason: "must be at least 1 ms (0 would disable it)",
            });
        }
        Ok(PgSink::from_parts(
            self.pool,
            schema,
            self.acquire_timeout,
            self.statement_timeout,
            self.max_concurrent_copies,
            self.min_rows_per_copy,
        ))
    }
}

impl fmt::Debug for PgSinkBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgSinkBuilder")
            .field("schema", &self.schema)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("max_concurrent_copies", &self.max_concurrent_copies)
            .field("min_rows_per_copy", &self.min_rows_per_copy)
            .finish_non_exhaustive()
    }
}

// ===== helpers =====

/// Splits `len` records into at most `streams` contiguous chunks of at least
/// `min_rows` each (one chunk when the batch is small).
fn split(table: Table, len: usize, streams: usize, min_rows: usize) -> Vec<Chunk> {
    if len == 0 {
        return Vec::new();
    }
    let n = (len / min_rows.max(1)).clamp(1, streams.max(1));
    let base = len / n;
    let extra = len % n;
    let mut chunks = Vec::with_capacity(n);
    let mut start = 0;
    for i in 0..n {
        let size = base + usize::from(i < extra);
        chunks.push(Chunk {
            table,
            start,
            end: start + size,
        });
        start += size;
    }
    chunks
}

/// The rows of `chunk` that would be sent (valid ones).
fn valid_rows(batch: &Batch, chunk: Chunk) -> u64 {
    let n = match chunk.table {
        Table::Requests => batch.requests()[chunk.start..chunk.end]
            .iter()
            .filter(|r| request_is_valid(r))
            .count(),
        Table::Usage => batch.usage_events()[chunk.start..chunk.end]
            .iter()
            .filter(|e| usage_is_valid(e))
            .count(),
    };
    n as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_respects_streams_and_minimum() {
        let c = split(Table::Requests, 1_000, 2, 500);
        assert_eq!(c.len(), 2);
        assert_eq!(
            (c[0].start, c[0].end, c[1].start, c[1].end),
            (0, 500, 500, 1_000)
        );
        assert_eq!(split(Table::Requests, 999, 2, 500).len(), 1);
        assert_eq!(split(Table::Requests, 10, 4, 500).len(), 1);
        let c = split(Table::Requests, 10_001, 3, 500);
        assert_eq!(c.len(), 3);
        assert_eq!(c.iter().map(|c| c.end - c.start).sum::<usize>(), 10_001);
        assert_eq!(c.last().unwrap().end, 10_001);
        for w in c.windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
        assert!(split(Table::Usage, 0, 2, 500).is_empty());
    }
}
