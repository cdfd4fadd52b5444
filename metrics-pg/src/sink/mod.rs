//! [`PgSink`]: the [`MetricsSink`] that writes batches with binary `COPY`,
//! each record exactly once across retries.
//!
//! Files: `progress` (what is known of each unfinished batch), `copy` (the
//! rows of one chunk), `commit` (resolving a `COMMIT` whose answer was
//! lost), `builder` (the settings).

mod builder;
mod commit;
mod copy;
mod progress;

pub use self::builder::PgSinkBuilder;

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use deadpool_postgres::{Object, Pool};
use futures_util::stream::{FuturesUnordered, StreamExt};
use metrics_core::{
    Batch, BatchId, MetricsSink, SinkError, WriteAttempt, WriteSummary, async_trait,
};

use self::commit::{Outcome, Probe};
use self::progress::{Chunk, Progress, Table, Tracker, Txn};
use crate::conn;
use crate::error::Error;
use crate::schema::SchemaName;
use crate::tables::{REQUEST_COLUMNS, USAGE_COLUMNS, request_is_valid, usage_is_valid};

/// Client-side limit of the status query that resolves an in-doubt chunk
/// (a catalogue lookup: it answers at once or the server is in trouble).
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Added to the write deadline in [`MetricsSink::max_write_duration`]: what
/// is left after the deadline fires (dropping the attempt, saving progress)
/// is synchronous, but a busy runtime may poll it late.
const WRITE_DEADLINE_SLACK: Duration = Duration::from_secs(1);

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
///   serialization failure, a deadlock, too many connections, a pool
///   timeout or the write deadline are [`SinkError::Unavailable`]: the
///   collector retries the batch. A constraint violation or a data
///   exception (SQLSTATE class 23 or 22) splits the failing chunk in halves,
///   again and again, until the offending rows are isolated; they are
///   reported as rejected ([`WriteSummary::rejected`]) and everything else
///   is written. Rows that break a CHECK constraint known to this crate
///   (status outside 100-599, negative or non-finite latency, empty event
///   type, non-object metadata) are rejected without a round trip.
/// * **Exactly once.** What each chunk became is remembered under the
///   batch's [`BatchId`] at every step of a write, so a retry of the same
///   batch (the collector passes the same id, see [`MetricsSink`]'s retry
///   contract) writes only what is missing, even after an attempt that was
///   dropped (the collector's timeout) rather than failed. Each transaction
///   takes its `txid_current()` before `COMMIT`; when the answer to a
///   `COMMIT` is lost (the connection broke, the future was dropped), the
///   chunk is *in doubt* and is resolved on another connection with
///   `txid_status` before anything else is written: committed → done,
///   aborted → written again, still in progress →
///   [`Error::CommitInDoubt`] (retryable) and asked again on the retry.
/// * **Bounded.** One write never takes longer than its
///   [`write_deadline`](PgSinkBuilder::write_deadline) (default 60 s), all
///   chunks, bisection rounds and resolutions included; past it the write
///   fails with [`Error::WriteDeadline`] (retryable) and the retry goes on
///   from where it stopped. [`MetricsSink::max_write_duration`] reports the
///   bound, so the collector's export timeout stays above it.
/// * **Recovery.** Broken connections, and those of a dropped write, are
///   closed rather than returned to the pool, and the pool connects afresh
///   on the next write, so the sink resumes on its own once the server is
///   back.
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
    settings: Settings,
    copy_requests: String,
    copy_usage: String,
    probe_requests: String,
    probe_usage: String,
    set_statement_timeout: String,
    /// What is known of every unfinished batch. Updated at each step of a
    /// write, never held across an await.
    tracker: Mutex<Tracker>,
}

/// The sink's settings, as the builder collects them.
#[derive(Debug, Clone, Copy)]
struct Settings {
    acquire_timeout: Duration,
    statement_timeout: Duration,
    write_deadline: Duration,
    max_concurrent_copies: usize,
    min_rows_per_copy: usize,
}

/// How a write attempt ended, before it is reported.
enum RunOutcome {
    Done,
    Retryable(Error),
    Fatal(Error),
}

// ===== impl PgSink =====

impl PgSink {
    /// The default time to wait for a pooled connection.
    pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
    /// The default `statement_timeout` of the write transactions.
    pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
    /// The default bound of one whole write (see
    /// [`PgSinkBuilder::write_deadline`]).
    pub const DEFAULT_WRITE_DEADLINE: Duration = Duration::from_secs(60);
    /// The default number of COPY streams a large batch is split into.
    pub const DEFAULT_MAX_CONCURRENT_COPIES: usize = 2;
    /// The default smallest chunk worth its own COPY stream.
    pub const DEFAULT_MIN_ROWS_PER_COPY: usize = 500;

    /// A sink with every default setting, writing to the `app_metrics` schema.
    pub fn new(pool: Pool) -> Self {
        Self::from_parts(pool, SchemaName::default(), Settings::default())
    }

    /// Starts configuring a sink over `pool`.
    ///
    /// Give the pool at least `max_concurrent_copies` connections (and
    /// preferably a `RecyclingMethod::Verified` manager, as
    /// [`create_pool`](crate::create_pool) sets up), plus one for resolving
    /// a lost commit acknowledgement.
    pub fn builder(pool: Pool) -> PgSinkBuilder {
        PgSinkBuilder {
            pool,
            schema: crate::schema::DEFAULT_SCHEMA.to_owned(),
            settings: Settings::default(),
        }
    }

    fn from_parts(pool: Pool, schema: SchemaName, settings: Settings) -> Self {
        let requests = schema.qualify("performance_metrics");
        let usage = schema.qualify("usage_events");
        let copy_requests =
            format!("COPY {requests} ({REQUEST_COLUMNS}) FROM STDIN (FORMAT binary)");
        let copy_usage = format!("COPY {usage} ({USAGE_COLUMNS}) FROM STDIN (FORMAT binary)");
        // Both served by an index on (key, "timestamp").
        let probe = |table: &str, key: &str| {
            format!(
                "SELECT EXISTS (SELECT 1 FROM {table} \
                 WHERE {key} = $1 AND \"timestamp\" = $2 AND id = $3)"
            )
        };
        Self {
            inner: Arc::new(Inner {
                set_statement_timeout: conn::set_statement_timeout(settings.statement_timeout),
                probe_requests: probe(&requests, "endpoint"),
                probe_usage: probe(&usage, "user_id"),
                copy_requests,
                copy_usage,
                pool,
                schema,
                settings,
                tracker: Mutex::new(Tracker::default()),
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
    /// error (or after dropping the call's future), so that chunks committed
    /// by the earlier attempt are not written twice.
    pub async fn write_batch(&self, batch: &Batch, attempt: WriteAttempt) -> Result<u64, Error> {
        if batch.is_empty() {
            return Ok(0);
        }
        let id = attempt.batch_id();
        self.resume_or_start(batch, id);
        let deadline = self.inner.settings.write_deadline;
        match tokio::time::timeout(deadline, self.run(batch, id)).await {
            Ok(outcome) => self.conclude(batch, id, outcome),
            // Dropping the attempt leaves the progress as it was at its last
            // step: running chunks had no COMMIT sent, committing ones are in
            // doubt; the retry takes it from there.
            Err(_elapsed) => {
                tracing::warn!(batch = %id, ?deadline, "PgSink: write deadline passed; the retry goes on from here");
                Err(Error::WriteDeadline(deadline))
            }
        }
    }

    fn tracker(&self) -> MutexGuard<'_, Tracker> {
        // A poisoned lock only means a panic elsewhere while holding it; every
        // update is a single call that leaves the state consistent.
        self.inner
            .tracker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies `f` to the progress of batch `id` (absent only if a sink
    /// shared by many collectors forgot it, see `Tracker`).
    fn with<T>(&self, id: BatchId, f: impl FnOnce(&mut Progress) -> T) -> Option<T> {
        self.tracker().get_mut(id).map(f)
    }

    /// Resumes the progress of batch `id`, or plans it afresh.
    fn resume_or_start(&self, batch: &Batch, id: BatchId) {
        let (requests, usage) = (batch.requests().len(), batch.usage_events().len());
        let s = self.inner.settings;
        let _ = self.tracker().resume_or_insert(id, requests, usage, || {
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
            Progress::new(
                requests,
                usage,
                s.max_concurrent_copies,
                s.min_rows_per_copy,
                invalid as u64,
            )
        });
    }

    /// Resolves the chunks in doubt, then writes the pending ones, up to
    /// `max_concurrent_copies` at a time, bisecting chunks the database
    /// refuses for their data.
    async fn run(&self, batch: &Batch, id: BatchId) -> RunOutcome {
        // First what an earlier attempt left unanswered: writing an in-doubt
        // chunk again before knowing would risk storing it twice.
        for d in self.with(id, |p| p.in_doubt()).unwrap_or_default() {
            if let Err(e) = self.settle(batch, id, d.chunk, &d.txn).await {
                return RunOutcome::Retryable(e);
            }
        }
        let mut in_flight = FuturesUnordered::new();
        let mut retryable: Option<Error> = None;
        let mut fatal: Option<Error> = None;
        loop {
            // After a failure, start nothing new: the in-flight chunks finish
            // (their outcome must be known for the accounting) and the rest
            // waits for the retry.
            while retryable.is_none()
                && fatal.is_none()
                && in_flight.len() < self.inner.settings.max_concurrent_copies
            {
                let Some(chunk) = self.with(id, Progress::start_next).flatten() else {
                    break;
                };
                if valid_rows(batch, chunk) == 0 {
                    // Nothing to store: no transaction, nothing to resolve.
                    let _ = self.with(id, |p| p.refused(chunk, 0));
                    continue;
                }
                in_flight.push(self.write_chunk(batch, id, chunk));
            }
            let Some(result) = in_flight.next().await else {
                break;
            };
            match result {
                Ok(()) => {}
                Err(e) if e.is_retryable() => {
                    let _ = retryable.get_or_insert(e);
                }
                Err(e) => {
                    let _ = fatal.get_or_insert(e);
                }
            }
        }
        match (fatal, retryable) {
            (Some(e), _) => RunOutcome::Fatal(e),
            (None, Some(e)) => RunOutcome::Retryable(e),
            (None, None) => RunOutcome::Done,
        }
    }

    /// Turns the end of an attempt into the caller's answer, forgetting the
    /// batch unless it will be retried.
    fn conclude(&self, batch: &Batch, id: BatchId, outcome: RunOutcome) -> Result<u64, Error> {
        let mut tracker = self.tracker();
        match outcome {
            RunOutcome::Done => Ok(tracker.finish(id).map_or(0, |p| p.rejected)),
            RunOutcome::Retryable(e) => Err(e),
            RunOutcome::Fatal(e) => {
                if let Some(d) = tracker.get_mut(id).and_then(|p| p.in_doubt().pop()) {
                    // A chunk's fate is unknown: only a retry can tell, and
                    // reporting now would count it wrong either way.
                    tracing::warn!(error = %e, "PgSink: a chunk is in doubt beside a permanent failure; retrying to resolve it");
                    return Err(Error::CommitInDoubt { xid: d.txn.xid });
                }
                match tracker.finish(id) {
                    // Part of the batch is stored: report the rest as
                    // rejected rather than failing the whole batch, which the
                    // collector would count as dropped although rows landed.
                    Some(p) if p.committed_any => {
                        let unwritten = p.unstored().map(|c| valid_rows(batch, c)).sum::<u64>();
                        tracing::error!(error = %e, unwritten, "PgSink: part of a batch could not be written and will not be retried");
                        Ok(p.rejected + unwritten)
                    }
                    _ => Err(e),
                }
            }
        }
    }

    /// Writes one running chunk and records what became of it: committed,
    /// split or refused (then `Ok`), or back to pending or still in doubt
    /// (then the error, to classify the attempt).
    async fn write_chunk(&self, batch: &Batch, id: BatchId, chunk: Chunk) -> Result<(), Error> {
        let error = match self.try_chunk(batch, id, chunk).await {
            Ok(()) => {
                let _ = self.with(id, |p| p.committed(chunk));
                return Ok(());
            }
            Err(e) => e,
        };
        // COMMIT was sent and its answer lost: ask the server, on another
        // connection, whether it took effect.
        if let Some(txn) = self.with(id, |p| p.txn_of(chunk)).flatten() {
            tracing::warn!(error = %error, xid = txn.xid, "PgSink: COMMIT unanswered; resolving it by transaction id");
            match self.outcome_of(batch, id, chunk, &txn).await {
                Outcome::Committed => {
                    let _ = self.with(id, |p| p.committed(chunk));
                    return Ok(());
                }
                Outcome::Unknown => return Err(Error::CommitInDoubt { xid: txn.xid }),
                // Not stored: classified below like a failure before COMMIT.
                Outcome::Aborted => {}
            }
        }
        if error.is_data_error() {
            let rows = valid_rows(batch, chunk);
            if rows <= 1 || chunk.end - chunk.start <= 1 {
                tracing::warn!(error = %error, "PgSink: rejected a row the database refuses");
                let _ = self.with(id, |p| p.refused(chunk, rows));
            } else {
                let _ = self.with(id, |p| p.split_refused(chunk));
            }
            return Ok(());
        }
        let _ = self.with(id, |p| p.not_stored(chunk));
        Err(error)
    }

    /// One chunk in one transaction on one pooled connection, under the
    /// client-side deadline of its statement timeout.
    async fn try_chunk(&self, batch: &Batch, id: BatchId, chunk: Chunk) -> Result<(), Error> {
        let s = self.inner.settings;
        let conn = conn::acquire(&self.inner.pool, s.acquire_timeout).await?;
        // Closed, not pooled, if this future is dropped mid-write: the server
        // then rolls back whatever has no COMMIT yet.
        let mut conn = conn::DiscardOnDrop::new(conn);
        let result = conn::within_deadline(
            s.statement_timeout,
            self.copy_chunk(conn.get(), batch, id, chunk),
        )
        .await;
        match &result {
            // Refused data (the bisection path) keeps the connection.
            Ok(()) => conn.keep(),
            Err(e) if conn::keeps_connection(e) => conn.keep(),
            // Past the client deadline the session may still be running a
            // statement: dropping the guard cancels it too.
            Err(Error::Timeout(_)) => drop(conn),
            Err(_) => conn.discard(),
        }
        result
    }

    async fn copy_chunk(
        &self,
        conn: &mut Object,
        batch: &Batch,
        id: BatchId,
        chunk: Chunk,
    ) -> Result<(), Error> {
        let tx = conn
            .transaction()
            .await
            .map_err(|e| Error::db("starting a write transaction", e))?;
        let txn = commit::begin_tracked(&tx, &self.inner.set_statement_timeout).await?;
        let sql = match chunk.table {
            Table::Requests => &self.inner.copy_requests,
            Table::Usage => &self.inner.copy_usage,
        };
        copy::copy_rows(&tx, sql, batch, id, chunk).await?;
        // Recorded before COMMIT is sent: if its answer is lost, or this
        // future is dropped from here on, the chunk is resolved by its xid
        // rather than written again.
        let _ = self.with(id, |p| p.committing(chunk, txn));
        tx.commit()
            .await
            .map_err(|e| Error::db("committing a write transaction", e))
    }

    /// Resolves in-doubt `chunk` of transaction `txn` and records the
    /// answer; `Err` (retryable) while it cannot be known.
    async fn settle(
        &self,
        batch: &Batch,
        id: BatchId,
        chunk: Chunk,
        txn: &Txn,
    ) -> Result<(), Error> {
        match self.outcome_of(batch, id, chunk, txn).await {
            Outcome::Committed => {
                let _ = self.with(id, |p| p.committed(chunk));
                Ok(())
            }
            Outcome::Aborted => {
                let _ = self.with(id, |p| p.not_stored(chunk));
                Ok(())
            }
            Outcome::Unknown => Err(Error::CommitInDoubt { xid: txn.xid }),
        }
    }

    /// What became of in-doubt `chunk`; [`Outcome::Unknown`] also when the
    /// server cannot be asked right now.
    async fn outcome_of(&self, batch: &Batch, id: BatchId, chunk: Chunk, txn: &Txn) -> Outcome {
        let outcome = match self.resolve(batch, id, chunk, txn).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, xid = txn.xid, "PgSink: could not resolve an in-doubt COMMIT yet");
                Outcome::Unknown
            }
        };
        tracing::info!(
            xid = txn.xid,
            ?outcome,
            "PgSink: resolved an in-doubt COMMIT"
        );
        outcome
    }

    async fn resolve(
        &self,
        batch: &Batch,
        id: BatchId,
        chunk: Chunk,
        txn: &Txn,
    ) -> Result<Outcome, Error> {
        let conn = conn::acquire(&self.inner.pool, self.inner.settings.acquire_timeout).await?;
        let probe = self.probe(batch, id, chunk);
        match tokio::time::timeout(RESOLVE_TIMEOUT, commit::resolve(&conn, txn, probe)).await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(e)) => {
                conn::release_after_error(conn, &e);
                Err(e)
            }
            Err(_elapsed) => {
                conn::discard(conn);
                Err(Error::Timeout(RESOLVE_TIMEOUT))
            }
        }
    }

    /// The chunk's first valid row, to look for by its id.
    fn probe<'a>(&'a self, batch: &'a Batch, id: BatchId, chunk: Chunk) -> Option<Probe<'a>> {
        match chunk.table {
            Table::Requests => (chunk.start..chunk.end)
                .map(|i| (i, &batch.requests()[i]))
                .find(|(_, r)| request_is_valid(r))
                .map(|(i, r)| Probe {
                    sql: &self.inner.probe_requests,
                    key: r.route.as_str(),
                    at: r.timestamp,
                    id: copy::row_id(id, chunk.table, i, r.timestamp),
                }),
            Table::Usage => (chunk.start..chunk.end)
                .map(|i| (i, &batch.usage_events()[i]))
                .find(|(_, e)| usage_is_valid(e))
                .map(|(i, e)| Probe {
                    sql: &self.inner.probe_usage,
                    key: e.user_id.as_str(),
                    at: e.timestamp,
                    id: copy::row_id(id, chunk.table, i, e.timestamp),
                }),
        }
    }
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

    /// The write deadline (plus a second of slack): everything a write does
    /// (waiting for connections, statements, commits, resolving lost commit
    /// answers, every bisection round) runs inside it.
    fn max_write_duration(&self) -> Option<Duration> {
        Some(self.inner.settings.write_deadline + WRITE_DEADLINE_SLACK)
    }
}

impl fmt::Debug for PgSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The pool's Debug would print its whole config; its status is what
        // a reader of the log wants.
        f.debug_struct("PgSink")
            .field("schema", &self.inner.schema)
            .field("pool", &self.inner.pool.status())
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

// ===== impl Settings =====

impl Default for Settings {
    fn default() -> Self {
        Self {
            acquire_timeout: PgSink::DEFAULT_ACQUIRE_TIMEOUT,
            statement_timeout: PgSink::DEFAULT_STATEMENT_TIMEOUT,
            write_deadline: PgSink::DEFAULT_WRITE_DEADLINE,
            max_concurrent_copies: PgSink::DEFAULT_MAX_CONCURRENT_COPIES,
            min_rows_per_copy: PgSink::DEFAULT_MIN_ROWS_PER_COPY,
        }
    }
}

// ===== helpers =====

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
