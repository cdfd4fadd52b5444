//! The rollup job: every closed hour of raw rows becomes a few
//! `aggregated_metrics` rows holding the summary values and mergeable sketches.
//!
//! # How a run works
//!
//! 1. Take the rollup advisory lock without waiting (another instance running
//!    the job makes this run a no-op reported as `skipped`).
//! 2. Per raw table, pick the hours to roll: every closed hour after the
//!    last one rolled (an empty hour is recorded with count 0 so it is
//!    visited once), and, within `recheck_window` before the last closed
//!    hour, the hours whose raw row count (one set-based `GROUP BY`) differs
//!    from the count `rollup_hours` recorded when they were rolled: late
//!    rows arrived, so the hour is rolled again.
//! 3. Each such hour is rolled in **one transaction** (up to
//!    `concurrency` hours at once, each on its own pooled connection and
//!    its own task): its raw rows stream out with binary `COPY (SELECT ..)
//!    TO STDOUT` into per-key summaries (the client holds sketches, never
//!    the hour's rows; request rows are decoded in place, see
//!    `copy_out.rs`), and one statement upserts the rollup rows on the
//!    bucket key (`INSERT .. ON CONFLICT DO UPDATE`), inserts the 5-minute
//!    rows and records the number of rows streamed in `rollup_hours`. A run
//!    cut short leaves every hour either fully rolled or untouched; the next
//!    run picks up the rest.
//! 4. Complete days without daily rows are built (see below).
//!
//! Counting from the streamed rows (not a separate `count(*)`) matters: the
//! recorded count is exactly what went into the rollup, so a row committed
//! while the `COPY` ran shows up as a changed count in the next run.
//!
//! Rows per hour: performance per `(endpoint, method)` plus an
//! all-endpoints row whose `endpoint_path` and `method` are
//! [`ALL`] (`*`); usage per `event_type` plus an all-types row with
//! `event_type = '*'`. The all-rows states are merges (of the hour's
//! 5-minute slots for requests, of the per-type states for usage), which
//! give the same state as adding every sample (see [`LatencySketch`]).
//!
//! # 5-minute and daily rollups (what the query side may rely on)
//!
//! * `aggregated_metrics_5min` holds the all-endpoints / all-types key of
//!   every 5-minute slot. An hour's 5-minute rows are written in the **same
//!   transaction** as its hourly rows, so an hour present in `rollup_hours`
//!   has its 5-minute rows (an empty slot has no row). Re-rolling an hour
//!   deletes and rewrites its 12 slots.
//! * `aggregated_metrics_daily` holds, per UTC day and key (the same keys and
//!   `*` rows as `aggregated_metrics`), the merge of that day's hourly rows;
//!   `rollup_days` lists the days whose daily rows are complete. A day is
//!   built (one transaction: merge the hourly sketches in Rust, replace the
//!   daily rows, upsert the `rollup_days` row) only once all 24 of its hours
//!   are in `rollup_hours`. Rolling any hour of a day again deletes the day's
//!   `rollup_days` row in the hour's transaction, and the run rebuilds the
//!   day before it ends (a run that fails in between leaves the day without
//!   a `rollup_days` row; the next run builds it). So a query that sees a
//!   `rollup_days` row can trust that the daily rows equal the merge of the
//!   day's hourly rows; without one it must merge the hourly rows itself.
//! * Retention deletes 5-minute rows with their hour, and daily rows and
//!   the `rollup_days` row of a day as soon as its first hour expires (a
//!   `rollup_days` row never outlives one of its hourly rows).

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant, SystemTime};

use deadpool_postgres::Pool;
use futures_util::{StreamExt, pin_mut};
use metrics_core::aggregate::{
    DEFAULT_EXACT_LIMIT, DistinctUsers, LatencySketch, PerformanceSummary, UsageSummary,
};
use tokio_postgres::binary_copy::BinaryCopyOutStream;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Transaction};

use crate::conn;
use crate::copy_out::{CopyTuples, bytes, fixed};
use crate::daily::{Acc, DayAccs, Key};
use crate::error::Error;
use crate::governance::Governance;
use crate::job::{AbortOnDrop, Clock, JOB_ACQUIRE_TIMEOUT, JobLock, JobReport, ROLLUP_LOCK_CLASS};
use crate::schema::SchemaName;
use crate::tables::{ALL, Kind, default_partition_name};
use crate::units::{
    HOUR, PG_EPOCH_UNIX_MICROS, SLOT, SLOTS_PER_HOUR, floor_day, floor_hour, from_unix_secs,
    slot_of, ts_literal, unix_secs,
};

/// `statement_timeout` of each rollup transaction: generous (an hour of a
/// busy service streams in seconds), but a stuck statement must not hold the
/// job's lock for ever.
const ROLL_STATEMENT_TIMEOUT: &str = "SET LOCAL statement_timeout = '600s'";

/// Rolls closed hours of raw rows up into `aggregated_metrics`: one
/// transaction per hour, raw rows streamed by binary `COPY` into sketches,
/// an upsert on the bucket key, and a record of the raw row count so hours
/// that receive late rows are rolled again. Scheduling, retention and the
/// accuracy guarantee are described in `docs/operations.md`.
///
/// # Example
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use metrics_pg::RollupJob;
///
/// let pool = metrics_pg::create_pool("postgres://app@localhost/app", 2)?;
/// let job = RollupJob::new(pool, "app_metrics")?.grace(Duration::from_secs(120));
/// let report = job.run_once().await?;
/// println!("{report}"); // rollup: 1 hours rolled (41666 raw rows -> 52 rollup rows) ...
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RollupJob {
    pool: Pool,
    schema: SchemaName,
    options: RollupOptions,
    governance: Governance,
    clock: Clock,
}

/// The settings of a rollup pass (shared with the retention job, which rolls
/// hours before dropping their partition).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RollupOptions {
    pub(crate) concurrency: usize,
    pub(crate) grace: Duration,
    pub(crate) recheck_window: Duration,
    pub(crate) exact_limit: u32,
}

impl Default for RollupOptions {
    fn default() -> Self {
        Self {
            concurrency: 2,
            grace: RollupJob::DEFAULT_GRACE,
            recheck_window: RollupJob::DEFAULT_RECHECK_WINDOW,
            exact_limit: DEFAULT_EXACT_LIMIT,
        }
    }
}

// ===== impl RollupJob =====

impl RollupJob {
    /// The pool the job runs on.
    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The schema the job rolls up.
    pub(crate) fn schema_name(&self) -> &SchemaName {
        &self.schema
    }

    /// How long after an hour ends it counts as closed (rows still in the
    /// collector's queue or batches being retried get this long to land).
    pub const DEFAULT_GRACE: Duration = Duration::from_secs(120);
    /// How far back each run re-counts rolled hours to catch late rows.
    /// Older late rows are caught by the retention job before their day's
    /// partition is dropped.
    pub const DEFAULT_RECHECK_WINDOW: Duration = Duration::from_secs(24 * 3600);

    /// A job for the tables in `schema`, with the default settings.
    pub fn new(pool: Pool, schema: &str) -> Result<Self, Error> {
        Ok(Self {
            pool,
            schema: SchemaName::new(schema)?,
            options: RollupOptions::default(),
            governance: Governance::default(),
            clock: Clock::system(),
        })
    }

    /// Grace period after the end of an hour before it is rolled (default
    /// [`DEFAULT_GRACE`](Self::DEFAULT_GRACE), 2 minutes).
    pub fn grace(mut self, grace: Duration) -> Self {
        self.options.grace = grace;
        self
    }

    /// How far back (before the last closed hour) each run looks for hours
    /// whose raw row count changed (default 24 h). Raise it after importing
    /// back-dated rows to roll them at once.
    pub fn recheck_window(mut self, window: Duration) -> Self {
        self.options.recheck_window = window;
        self
    }

    /// Samples per bucket kept verbatim (exact percentiles) before the latency
    /// sketch switches to its 1 % relative-error bins (default 1,000).
    pub fn exact_limit(mut self, limit: u32) -> Self {
        self.options.exact_limit = limit;
        self
    }

    /// Record-count thresholds checked after each run.
    pub fn governance(mut self, governance: Governance) -> Self {
        self.governance = governance;
        self
    }

    /// Hours rolled at once, each in its own transaction on its own pooled
    /// connection (default 2; the pool needs this many connections besides
    /// the one holding the job's lock).
    pub fn concurrency(mut self, hours: usize) -> Self {
        self.options.concurrency = hours.max(1);
        self
    }

    /// The clock `run_once` reads (tests use [`Clock::fixed`]).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The schema rolled up.
    pub fn schema(&self) -> &SchemaName {
        &self.schema
    }

    /// Rolls every hour closed at the clock's current time.
    pub async fn run_once(&self) -> Result<JobReport, Error> {
        self.run_at(self.clock.now()).await
    }

    /// Rolls every hour closed at `now` (an hour `[h, h + 1 h)` is closed
    /// once `h + 1 h + grace <= now`).
    pub async fn run_at(&self, now: SystemTime) -> Result<JobReport, Error> {
        let started = Instant::now();
        let mut report = JobReport {
            job: "rollup",
            ..JobReport::default()
        };
        let Some(mut lock) =
            JobLock::try_acquire(&self.pool, ROLLUP_LOCK_CLASS, &self.schema).await?
        else {
            report.skipped = true;
            report.elapsed = started.elapsed();
            tracing::debug!(schema = %self.schema, "rollup skipped: another instance holds the lock");
            return Ok(report);
        };
        let client: &mut Client = lock.client();
        roll_closed_hours(
            client,
            &self.pool,
            &self.schema,
            &self.options,
            now,
            &mut report,
        )
        .await?;
        report.raw_rows_estimate = Some(self.governance.check(&*client, &self.schema).await?);
        lock.release().await?;
        report.elapsed = started.elapsed();
        tracing::info!(schema = %self.schema, %report, "rollup done");
        Ok(report)
    }
}

/// Rolls every closed hour that needs it, both raw tables, one transaction
/// per hour, up to `options.concurrency` hours at once on connections of
/// `pool` (the caller's locked session only reads the bookkeeping).
pub(crate) async fn roll_closed_hours(
    client: &mut Client,
    pool: &Pool,
    schema: &SchemaName,
    options: &RollupOptions,
    now: SystemTime,
    report: &mut JobReport,
) -> Result<(), Error> {
    // Clamped to a century so every instant stays within timestamptz's range.
    const CENTURY: u64 = 100 * 366 * 86_400;
    let grace = options.grace.as_secs().min(CENTURY) as i64;
    let closed_end = floor_hour(unix_secs(now).saturating_sub(grace));
    let recheck = options.recheck_window.as_secs().min(CENTURY) as i64;
    let mut accs = DayAccs::new();
    for kind in Kind::ALL {
        let (hours, gap_fills) =
            closed_hours_to_roll(client, schema, kind, closed_end, recheck).await?;
        let results = futures_util::stream::iter(hours)
            .map(|hour| {
                // A task per hour, so the hours rolled at once also decode
                // and sketch on different cores (a `buffered` stream alone
                // polls them all from this one task).
                let (pool, schema) = (pool.clone(), schema.clone());
                let exact_limit = options.exact_limit;
                AbortOnDrop::spawn(async move {
                    roll_hour_on(&pool, &schema, kind, hour, exact_limit).await
                })
            })
            .buffered(options.concurrency.max(1));
        pin_mut!(results);
        while let Some(done) = results.next().await {
            let (hour, raw, written, states) = done?;
            accs.entry((kind, floor_day(hour)))
                .or_default()
                .add_hour(hour, states);
            // Empty hours are only recorded (so they are not visited again).
            report.hours_rolled += u64::from(raw > 0);
            report.raw_rows_rolled += raw;
            report.rollup_rows_written += written;
        }
        record_empty_hours(client, schema, kind, &gap_fills).await?;
    }
    let td = Instant::now();
    let days =
        crate::daily::build_complete_days(client, pool, schema, options.concurrency, accs).await?;
    if days.days > 0 {
        tracing::debug!(schema = %schema, days = days.days, rows = days.rows, elapsed = ?td.elapsed(), "built daily rollups");
    }
    Ok(())
}

/// Records hours of a long gap that had no raw rows (count 0) once the gap's
/// other hours are rolled, so their days can become complete.
async fn record_empty_hours(
    client: &Client,
    schema: &SchemaName,
    kind: Kind,
    fills: &[(i64, i64, Vec<i64>)],
) -> Result<(), Error> {
    for (lo, hi, with_rows) in fills {
        if lo >= hi {
            continue;
        }
        let with_rows: Vec<SystemTime> = with_rows.iter().map(|&h| from_unix_secs(h)).collect();
        let _ = client
            .execute(
                &format!(
                    "INSERT INTO {} (metric_type, hour, raw_count)                      SELECT $1, h, 0 FROM generate_series($2::timestamptz, $3::timestamptz, '1 hour') h                      WHERE h <> ALL($4::timestamptz[])                      ON CONFLICT (metric_type, hour) DO NOTHING",
                    schema.qualify("rollup_hours")
                ),
                &[
                    &kind.metric_type(),
                    &from_unix_secs(*lo),
                    &from_unix_secs(hi - HOUR),
                    &with_rows,
                ],
            )
            .await
            .map_err(|e| Error::db("recording empty hours", e))?;
    }
    Ok(())
}

/// Rolls one hour in its own transaction on a pooled connection.
async fn roll_hour_on(
    pool: &Pool,
    schema: &SchemaName,
    kind: Kind,
    hour: i64,
    exact_limit: u32,
) -> Result<(i64, u64, u64, Vec<(Key, Acc)>), Error> {
    let mut conn = conn::acquire(pool, JOB_ACQUIRE_TIMEOUT).await?;
    // Parsed once per pooled connection, not once per hour.
    let write = conn
        .prepare_cached(&write_sql(schema))
        .await
        .map_err(|e| Error::db("writing an hour's rollups", e))?;
    let client: &mut Client = &mut conn;
    let tx = client
        .transaction()
        .await
        .map_err(|e| Error::db("starting a rollup transaction", e))?;
    let (raw, written, states) =
        roll_hour_with(&tx, schema, kind, hour, exact_limit, &write).await?;
    tx.commit()
        .await
        .map_err(|e| Error::db("committing a rollup", e))?;
    tracing::debug!(schema = %schema, table = kind.table(), hour = %ts_literal(hour), raw, written, "rolled hour");
    Ok((hour, raw, written, states))
}

/// Above this many hours since the last rolled one, new hours are found by
/// counting rows per hour rather than visited one by one (a long gap is
/// usually empty).
const MAX_ENUMERATED_HOURS: i64 = 48;

/// The closed hours of `kind` to roll this run, ascending:
///
/// * hours after the last one rolled: all of them (an empty hour is
///   recorded with count 0, so it is visited once), or, after a long gap or
///   on the first run, those that have rows (the gap's empty hours are
///   returned as `(from, to, hours with rows)`, to be recorded once the rest
///   is rolled). A first run starts at the UTC midnight before the first raw
///   row, so that day can become complete (see the module docs);
/// * hours already rolled within `recheck` seconds before `closed_end`:
///   only those whose raw row count changed since.
async fn closed_hours_to_roll(
    client: &Client,
    schema: &SchemaName,
    kind: Kind,
    closed_end: i64,
    recheck: i64,
) -> Result<(Vec<i64>, Vec<(i64, i64, Vec<i64>)>), Error> {
    let last: Option<i64> = client
        .query_one(
            &format!(
                "SELECT extract(epoch FROM max(hour))::bigint FROM {} WHERE metric_type = $1",
                schema.qualify("rollup_hours")
            ),
            &[&kind.metric_type()],
        )
        .await
        .map_err(|e| Error::db("reading the last rolled hour", e))?
        .get(0);
    let new_from = match last {
        Some(last) => last + HOUR,
        None => match first_raw_hour(client, schema, kind).await? {
            Some(first) => floor_day(first),
            None => return Ok((Vec::new(), Vec::new())),
        },
    };
    let mut fills = Vec::new();
    let mut hours = Vec::new();
    let recheck_from = closed_end.saturating_sub(recheck);
    let rolled_end = new_from.min(closed_end);
    if recheck_from < rolled_end {
        hours = hours_to_roll(client, schema, kind, recheck_from, rolled_end).await?;
    }
    if closed_end - new_from > MAX_ENUMERATED_HOURS * HOUR {
        let with_rows = hours_to_roll(client, schema, kind, new_from, closed_end).await?;
        hours.extend(with_rows.iter().copied());
        fills.push((new_from, closed_end, with_rows));
    } else {
        hours.extend((new_from..closed_end).step_by(HOUR as usize));
    }
    hours.sort_unstable();
    hours.dedup();
    Ok((hours, fills))
}

/// The first hour that may hold raw rows, for a table never rolled: the
/// oldest stray row in the default partition or the start of the oldest
/// non-empty day partition. Cheap: no scan of a day partition.
async fn first_raw_hour(
    client: &Client,
    schema: &SchemaName,
    kind: Kind,
) -> Result<Option<i64>, Error> {
    let stray: Option<f64> = client
        .query_one(
            &format!(
                "SELECT extract(epoch FROM min(\"timestamp\"))::float8 FROM {}",
                schema.qualify(&default_partition_name(kind.table()))
            ),
            &[],
        )
        .await
        .map_err(|e| Error::db("finding the oldest stray raw row", e))?
        .get(0);
    let mut first = stray.map(|s| floor_hour(s.floor() as i64));
    for (name, day) in crate::partition::day_partitions(client, schema, kind.table()).await? {
        if first.is_some_and(|f| f <= day) {
            break;
        }
        let any = client
            .query_opt(
                &format!("SELECT 1 FROM {} LIMIT 1", schema.qualify(&name)),
                &[],
            )
            .await
            .map_err(|e| Error::db("looking for raw rows", e))?
            .is_some();
        if any {
            first = Some(first.map_or(day, |f| f.min(day)));
            break;
        }
    }
    Ok(first)
}

/// Hours in `[lo, hi)` whose raw rows were never rolled or changed in
/// number since, ascending (seconds since the epoch).
pub(crate) async fn hours_to_roll(
    client: &impl tokio_postgres::GenericClient,
    schema: &SchemaName,
    kind: Kind,
    lo: i64,
    hi: i64,
) -> Result<Vec<i64>, Error> {
    let rows = client
        .query(
            &format!(
                "SELECT extract(epoch FROM h.hour)::bigint FROM ( \
                   SELECT date_bin('1 hour', \"timestamp\", TIMESTAMPTZ '2000-01-01 00:00:00+00') AS hour, \
                          count(*) AS n \
                   FROM {raw} WHERE \"timestamp\" >= $1 AND \"timestamp\" < $2 GROUP BY 1) h \
                 LEFT JOIN {done} r ON r.metric_type = $3 AND r.hour = h.hour \
                 WHERE r.hour IS NULL OR (r.raw_count <> h.n AND NOT r.raw_dropped) \
                 ORDER BY 1",
                raw = schema.qualify(kind.table()),
                done = schema.qualify("rollup_hours"),
            ),
            &[&from_unix_secs(lo), &from_unix_secs(hi), &kind.metric_type()],
        )
        .await
        .map_err(|e| Error::db("counting raw rows per hour", e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// One rollup row, ready to upsert.
struct OutRow {
    endpoint: Option<String>,
    method: Option<String>,
    event_type: Option<String>,
    values: serde_json::Value,
    count: i64,
    latency: Option<Vec<u8>>,
    users: Vec<u8>,
}

/// One `aggregated_metrics_5min` row (the all-rows key of one slot).
struct SlotRow {
    start: i64,
    values: serde_json::Value,
    count: i64,
    latency: Option<Vec<u8>>,
    users: Vec<u8>,
}

/// What streaming one hour produced.
struct Rolled {
    raw: u64,
    rows: Vec<OutRow>,
    slots: Vec<SlotRow>,
    /// The state behind each row of `rows`, for the day's daily rollup.
    states: Vec<(Key, Acc)>,
}

#[derive(Debug)]
struct PerfBucket {
    summary: PerformanceSummary,
    users: DistinctUsers,
}

impl PerfBucket {
    fn new(exact_limit: u32) -> Self {
        Self {
            summary: PerformanceSummary::with_sketch(LatencySketch::with_exact_limit(exact_limit)),
            users: DistinctUsers::new(),
        }
    }
}

/// Rolls one hour of one raw table inside `tx`: streams its rows, upserts the
/// rollup rows, records the count. Returns (raw rows read, rollup rows
/// written).
pub(crate) async fn roll_hour(
    tx: &Transaction<'_>,
    schema: &SchemaName,
    kind: Kind,
    hour: i64,
    exact_limit: u32,
) -> Result<(u64, u64, Vec<(Key, Acc)>), Error> {
    let write = write_sql(schema);
    roll_hour_with(tx, schema, kind, hour, exact_limit, write.as_str()).await
}

/// [`roll_hour`] with the write statement given (prepared, or its text).
async fn roll_hour_with(
    tx: &Transaction<'_>,
    schema: &SchemaName,
    kind: Kind,
    hour: i64,
    exact_limit: u32,
    write: &(impl tokio_postgres::ToStatement + Sync + Send + ?Sized),
) -> Result<(u64, u64, Vec<(Key, Acc)>), Error> {
    // One round trip: the timeout, and withdrawing what the hour replaces:
    // its 5-minute rows, and its day's `rollup_days` row (the daily rows no
    // longer equal the merge of the day's hours until the day is rebuilt).
    // Literals, not parameters: a simple query runs several statements.
    let metric_type = kind.metric_type(); // 'performance' | 'usage'
    tx.batch_execute(&format!(
        "{ROLL_STATEMENT_TIMEOUT}; \
         DELETE FROM {five} WHERE metric_type = '{metric_type}' \
           AND time_bucket >= {from} AND time_bucket < {to}; \
         DELETE FROM {days} WHERE metric_type = '{metric_type}' AND day = {day}",
        five = schema.qualify("aggregated_metrics_5min"),
        days = schema.qualify("rollup_days"),
        from = ts_literal(hour),
        to = ts_literal(hour + HOUR),
        day = ts_literal(floor_day(hour)),
    ))
    .await
    .map_err(|e| Error::db("preparing to roll an hour", e))?;
    let t0 = Instant::now();
    let mut rolled = match kind {
        Kind::Performance => stream_performance(tx, schema, hour, exact_limit).await?,
        Kind::Usage => stream_usage(tx, schema, hour).await?,
    };
    let t1 = Instant::now();
    let written = write_hour(tx, write, kind, hour, &rolled).await?;
    // Where an hour's time goes (the rollup benchmark's profile).
    tracing::trace!(stream = ?(t1 - t0), write = ?t1.elapsed(), raw = rolled.raw, "rolled hour phases");
    let states = std::mem::take(&mut rolled.states);
    let raw = rolled.raw;
    Ok((raw, written, states))
}

fn copy_sql(schema: &SchemaName, kind: Kind, columns: &str, hour: i64) -> String {
    format!(
        "COPY (SELECT {columns} FROM {} WHERE \"timestamp\" >= {} AND \"timestamp\" < {}) \
         TO STDOUT (FORMAT binary)",
        schema.qualify(kind.table()),
        ts_literal(hour),
        ts_literal(hour + HOUR)
    )
}

/// Hashes pending per counter before they are folded into its
/// [`DistinctUsers`] (bounds the memory of a busy bucket; 64 KiB).
const PENDING_USERS: usize = 8_192;

/// One bucket's state while an hour streams: the latency sketch, the status
/// counts (a short list: a bucket sees a handful of codes) and the users,
/// buffered as hashes and folded in batches (one sort instead of a sorted
/// insert per row).
#[derive(Debug)]
struct PerfAcc {
    latency: LatencySketch,
    status: Vec<(u16, u64)>,
    users: DistinctUsers,
    pending: Vec<u64>,
}

impl PerfAcc {
    fn new(exact_limit: u32) -> Self {
        Self {
            latency: LatencySketch::with_exact_limit(exact_limit),
            status: Vec::new(),
            users: DistinctUsers::new(),
            pending: Vec::new(),
        }
    }

    #[inline]
    fn add(&mut self, status: u16, ms: f64, user: Option<u64>) {
        self.latency.add(ms);
        match self.status.iter_mut().find(|(code, _)| *code == status) {
            Some((_, n)) => *n += 1,
            None => self.status.push((status, 1)),
        }
        if let Some(h) = user {
            self.pending.push(h);
            if self.pending.len() >= PENDING_USERS {
                self.users.add_hashes(&mut self.pending);
            }
        }
    }

    fn finish(mut self) -> PerfBucket {
        self.users.add_hashes(&mut self.pending);
        // quantile() and to_bytes() would each sort a copy otherwise.
        self.latency.sort_samples();
        PerfBucket {
            summary: PerformanceSummary::from_parts(
                self.latency,
                self.status.into_iter().collect(),
            ),
            users: self.users,
        }
    }
}

/// The `(endpoint, method)` keys of an hour, interned: rows are matched by
/// their raw bytes through a 64-bit hash, so a row costs no allocation and
/// no UTF-8 check (done once per new key).
#[derive(Debug, Default)]
struct Keys {
    keys: Vec<(String, String)>,
    /// `method ␟ endpoint` of each key, when rows carry the joined form.
    joined: Vec<Box<[u8]>>,
    by_hash: HashMap<u64, usize, BuildHasherDefault<PreHashed>>,
}

/// The hasher of a map whose keys already are 64-bit hashes (SipHash over
/// them again, per row, showed in profiles).
#[derive(Debug, Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed; fold anything else in for completeness.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, h: u64) {
        self.0 = h;
    }
}

impl Keys {
    /// The index of the key given as `method ␟ endpoint` (see
    /// [`KEY_SEPARATOR`]), added when new; `None` when the text holds the
    /// separator more than once, which makes the split ambiguous.
    #[inline]
    fn intern_joined(&mut self, joined: &[u8]) -> Result<Option<usize>, Error> {
        let h = key_hash(joined, &[]);
        if let Some(&i) = self.by_hash.get(&h) {
            if *self.joined[i] == *joined {
                return Ok(Some(i));
            }
        }
        if let Some(i) = self.joined.iter().position(|k| **k == *joined) {
            return Ok(Some(i));
        }
        let mut parts = joined.split(|&b| b == KEY_SEPARATOR);
        let (Some(method), Some(endpoint), None) = (parts.next(), parts.next(), parts.next())
        else {
            return Ok(None);
        };
        let key = (utf8(endpoint)?, utf8(method)?);
        self.keys.push(key);
        self.joined.push(joined.into());
        let i = self.keys.len() - 1;
        let _ = self.by_hash.entry(h).or_insert(i);
        Ok(Some(i))
    }

    /// The index of the key, added when new.
    #[inline]
    fn intern(&mut self, endpoint: &[u8], method: &[u8]) -> Result<usize, Error> {
        let h = key_hash(endpoint, method);
        if let Some(&i) = self.by_hash.get(&h) {
            let (e, m) = &self.keys[i];
            if e.as_bytes() == endpoint && m.as_bytes() == method {
                return Ok(i);
            }
        }
        // New key, or a 64-bit hash collision: resolve by comparing bytes.
        if let Some(i) = self
            .keys
            .iter()
            .position(|(e, m)| e.as_bytes() == endpoint && m.as_bytes() == method)
        {
            return Ok(i);
        }
        self.keys.push((utf8(endpoint)?, utf8(method)?));
        let i = self.keys.len() - 1;
        let _ = self.by_hash.entry(h).or_insert(i);
        Ok(i)
    }
}

fn utf8(b: &[u8]) -> Result<String, Error> {
    std::str::from_utf8(b)
        .map(str::to_owned)
        .map_err(|_| Error::CopyFormat {
            context: "streaming raw requests",
            reason: "endpoint or method is not UTF-8",
        })
}

/// The byte between method and endpoint when the server sends them as one
/// column (ASCII unit separator). HTTP methods are tokens, which cannot
/// hold control characters, so the first separator ends the method; a
/// method column holding one anyway makes the split ambiguous, detected,
/// and the hour is streamed again with two columns.
const KEY_SEPARATOR: u8 = 0x1f;

/// A hash of `endpoint`, a separator and `method`: a handful of keys per
/// hour, so quality matters less than speed (collisions are resolved). Eight
/// bytes per multiply (FNV-1a's byte-at-a-time multiply chain showed in the
/// rollup's profile).
#[inline]
fn key_hash(endpoint: &[u8], method: &[u8]) -> u64 {
    let h = words_hash(0x243f_6a88_85a3_08d3, endpoint);
    words_hash(h.rotate_left(17) ^ 0xff, method)
}

#[inline]
fn words_hash(mut h: u64, bytes: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = (h.rotate_left(5) ^ w).wrapping_mul(K);
    }
    let rest = chunks.remainder();
    let mut last = [0u8; 8];
    last[..rest.len()].copy_from_slice(rest);
    // The length too, so trailing zero bytes still count.
    h = (h.rotate_left(5) ^ u64::from_le_bytes(last)).wrapping_mul(K);
    (h.rotate_left(5) ^ bytes.len() as u64).wrapping_mul(K)
}

/// An hour of raw requests being folded into per-key buckets and slots.
struct PerfHour {
    keys: Keys,
    buckets: Vec<PerfAcc>,
    slots: [Option<PerfAcc>; SLOTS_PER_HOUR],
    hour_micros: i64,
    exact_limit: u32,
    raw: u64,
}

impl PerfHour {
    fn new(hour: i64, exact_limit: u32) -> Self {
        Self {
            keys: Keys::default(),
            buckets: Vec::new(),
            slots: Default::default(),
            hour_micros: hour * 1_000_000 - PG_EPOCH_UNIX_MICROS,
            exact_limit,
            raw: 0,
        }
    }

    /// Folds in one row: its key index, and the binary `status_code`,
    /// `response_time_ms`, `user_id` and `timestamp` columns.
    #[inline]
    fn add(&mut self, key: usize, f: [Option<&[u8]>; 4]) -> Result<(), Error> {
        const CTX: &str = "streaming raw requests";
        // Sent as NULL when 200 (see `PERF_COLUMNS`); the table's CHECK
        // keeps status_code in 100..=599.
        let status = match f[0] {
            None => 200,
            some => u16::try_from(i32::from_be_bytes(fixed(some, CTX)?)).unwrap_or(0),
        };
        let ms = f64::from_be_bytes(fixed(f[1], CTX)?);
        // Hashed once for the hour's bucket and the 5-minute slot's.
        let user = f[2].map(DistinctUsers::hash_id);
        let at = i64::from_be_bytes(fixed(f[3], CTX)?);
        self.raw += 1;
        if key == self.buckets.len() {
            self.buckets.push(PerfAcc::new(self.exact_limit));
        }
        self.buckets[key].add(status, ms, user);
        let slot = usize::try_from((at - self.hour_micros).div_euclid(SLOT * 1_000_000))
            .unwrap_or(0)
            .min(SLOTS_PER_HOUR - 1);
        let exact_limit = self.exact_limit;
        self.slots[slot]
            .get_or_insert_with(|| PerfAcc::new(exact_limit))
            .add(status, ms, user);
        Ok(())
    }
}

/// The `COPY` columns of raw requests: method and endpoint joined (see
/// [`KEY_SEPARATOR`]), then the columns [`PerfHour::add`] reads. The status
/// travels as NULL when it is 200, the usual case: a NULL costs the server
/// no send function call, and `NULLIF` costs less than one.
const PERF_COLUMNS: &str = "method || E'\\x1f' || endpoint, NULLIF(status_code, 200), \
     response_time_ms, user_id, \"timestamp\"";

/// Streams the hour's raw requests into a [`PerfHour`]. The server joins
/// method and endpoint into one column (one send call less per row: a tenth
/// of the server's time in the rollup benchmark); if that join is ambiguous
/// for some row, the hour is streamed again with separate columns.
async fn stream_performance_rows(
    tx: &Transaction<'_>,
    schema: &SchemaName,
    hour: i64,
    exact_limit: u32,
) -> Result<PerfHour, Error> {
    const CTX: &str = "streaming raw requests";
    let sql = copy_sql(schema, Kind::Performance, PERF_COLUMNS, hour);
    let stream = tx
        .copy_out(sql.as_str())
        .await
        .map_err(|e| Error::db(CTX, e))?;
    pin_mut!(stream);
    let mut parser = CopyTuples::<5>::new(CTX);
    let mut acc = PerfHour::new(hour, exact_limit);
    let mut ambiguous = false;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Error::db(CTX, e))?;
        if ambiguous {
            continue; // drain the stream; the hour is read again below
        }
        parser.feed(&chunk, |f| {
            if ambiguous {
                return Ok(());
            }
            match acc.keys.intern_joined(bytes(f[0], CTX)?)? {
                Some(key) => acc.add(key, [f[1], f[2], f[3], f[4]]),
                None => {
                    ambiguous = true;
                    Ok(())
                }
            }
        })?;
    }
    if !ambiguous {
        parser.finish()?;
        return Ok(acc);
    }
    tracing::debug!(schema = %schema, hour = %ts_literal(hour), "a method holds the key separator; streaming the hour again");
    let sql = copy_sql(
        schema,
        Kind::Performance,
        "endpoint, method, NULLIF(status_code, 200), response_time_ms, user_id, \"timestamp\"",
        hour,
    );
    let stream = tx
        .copy_out(sql.as_str())
        .await
        .map_err(|e| Error::db(CTX, e))?;
    pin_mut!(stream);
    let mut parser = CopyTuples::<6>::new(CTX);
    let mut acc = PerfHour::new(hour, exact_limit);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Error::db(CTX, e))?;
        parser.feed(&chunk, |f| {
            let key = acc.keys.intern(bytes(f[0], CTX)?, bytes(f[1], CTX)?)?;
            acc.add(key, [f[2], f[3], f[4], f[5]])
        })?;
    }
    parser.finish()?;
    Ok(acc)
}

async fn stream_performance(
    tx: &Transaction<'_>,
    schema: &SchemaName,
    hour: i64,
    exact_limit: u32,
) -> Result<Rolled, Error> {
    let PerfHour {
        keys,
        buckets,
        slots,
        raw,
        ..
    } = stream_performance_rows(tx, schema, hour, exact_limit).await?;
    // Sorted, so rows are written in key order: equal inputs give equal
    // statements, and concurrent upserts of one hour lock rows in one order.
    let mut sorted: Vec<((String, String), PerfAcc)> = keys.keys.into_iter().zip(buckets).collect();
    sorted.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::with_capacity(sorted.len() + 1);
    let mut states = Vec::with_capacity(sorted.len() + 1);
    for ((endpoint, method), acc) in sorted {
        let b = acc.finish();
        let key = (Some(endpoint), Some(method), None);
        out.push(perf_row(key.0.clone(), key.1.clone(), &b));
        states.push((key, Acc::Performance(b.summary, b.users)));
    }
    // The hour's all-endpoints state is the merge of its slots' (the same
    // state as adding every sample; binned slots merge cheaply).
    let slots = slots.map(|s| s.map(PerfAcc::finish));
    if raw > 0 {
        let mut all = PerfBucket::new(exact_limit);
        for b in slots.iter().flatten() {
            all.summary.merge(&b.summary);
            all.users.merge(&b.users);
        }
        out.push(perf_row(Some(ALL.to_owned()), Some(ALL.to_owned()), &all));
        states.push((
            (Some(ALL.to_owned()), Some(ALL.to_owned()), None),
            Acc::Performance(all.summary, all.users),
        ));
    }
    let slots = slot_rows(hour, slots, |b| {
        let r = perf_row(None, None, &b);
        (r.values, r.count, r.latency, r.users)
    });
    Ok(Rolled {
        raw,
        rows: out,
        slots,
        states,
    })
}

/// The non-empty slots of an hour as `aggregated_metrics_5min` rows.
fn slot_rows<B>(
    hour: i64,
    slots: [Option<B>; SLOTS_PER_HOUR],
    render: impl Fn(B) -> (serde_json::Value, i64, Option<Vec<u8>>, Vec<u8>),
) -> Vec<SlotRow> {
    slots
        .into_iter()
        .enumerate()
        .filter_map(|(i, b)| {
            let (values, count, latency, users) = render(b?);
            Some(SlotRow {
                start: hour + i as i64 * SLOT,
                values,
                count,
                latency,
                users,
            })
        })
        .collect()
}

fn perf_row(endpoint: Option<String>, method: Option<String>, b: &PerfBucket) -> OutRow {
    OutRow {
        endpoint,
        method,
        event_type: None,
        values: serde_json::to_value(b.summary.values()).unwrap_or_default(),
        count: i64::try_from(b.summary.count()).unwrap_or(i64::MAX),
        latency: Some(b.summary.latency().to_bytes()),
        users: b.users.to_bytes(),
    }
}

async fn stream_usage(
    tx: &Transaction<'_>,
    schema: &SchemaName,
    hour: i64,
) -> Result<Rolled, Error> {
    let sql = copy_sql(
        schema,
        Kind::Usage,
        "event_type, user_id, page_name, success, \"timestamp\"",
        hour,
    );
    let stream = tx
        .copy_out(sql.as_str())
        .await
        .map_err(|e| Error::db("streaming raw usage events", e))?;
    let rows = BinaryCopyOutStream::new(
        stream,
        &[
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::BOOL,
            Type::TIMESTAMPTZ,
        ],
    );
    pin_mut!(rows);
    let mut by_type: HashMap<String, UsageSummary> = HashMap::new();
    let mut slots: [Option<UsageSummary>; SLOTS_PER_HOUR] = Default::default();
    let mut raw = 0u64;
    while let Some(row) = rows.next().await {
        let row = row.map_err(|e| Error::db("streaming raw usage events", e))?;
        let event_type: &str = row
            .try_get(0)
            .map_err(|e| Error::db("decoding a raw usage event", e))?;
        let user: &str = row
            .try_get(1)
            .map_err(|e| Error::db("decoding a raw usage event", e))?;
        let page: Option<&str> = row
            .try_get(2)
            .map_err(|e| Error::db("decoding a raw usage event", e))?;
        let success: Option<bool> = row
            .try_get(3)
            .map_err(|e| Error::db("decoding a raw usage event", e))?;
        let at: SystemTime = row
            .try_get(4)
            .map_err(|e| Error::db("decoding a raw usage event", e))?;
        raw += 1;
        slots[slot_of(hour, unix_secs(at))]
            .get_or_insert_with(UsageSummary::new)
            .add_event(event_type, user, page, success);
        if !by_type.contains_key(event_type) {
            let _ = by_type.insert(event_type.to_owned(), UsageSummary::new());
        }
        if let Some(s) = by_type.get_mut(event_type) {
            s.add_event(event_type, user, page, success);
        }
    }
    let sorted: BTreeMap<String, UsageSummary> = by_type.into_iter().collect();
    let mut all = UsageSummary::new();
    let mut out = Vec::with_capacity(sorted.len() + 1);
    let mut states = Vec::with_capacity(sorted.len() + 1);
    for (event_type, s) in sorted {
        all.merge(&s);
        out.push(usage_row(event_type.clone(), &s));
        states.push(((None, None, Some(event_type)), Acc::Usage(s)));
    }
    if raw > 0 {
        out.push(usage_row(ALL.to_owned(), &all));
        states.push(((None, None, Some(ALL.to_owned())), Acc::Usage(all)));
    }
    let slots = slot_rows(hour, slots, |s| {
        let r = usage_row(ALL.to_owned(), &s);
        (r.values, r.count, r.latency, r.users)
    });
    Ok(Rolled {
        raw,
        rows: out,
        slots,
        states,
    })
}

fn usage_row(event_type: String, s: &UsageSummary) -> OutRow {
    let values = s.values();
    OutRow {
        endpoint: None,
        method: None,
        event_type: Some(event_type),
        count: i64::try_from(values.total_events).unwrap_or(i64::MAX),
        values: serde_json::to_value(values).unwrap_or_default(),
        latency: None,
        users: s.users().to_bytes(),
    }
}

/// The statement of [`write_hour`].
fn write_sql(schema: &SchemaName) -> String {
    format!(
        "WITH hourly AS ( \
           INSERT INTO {hourly} AS a (time_bucket, metric_type, endpoint_path, method, \
               event_type, aggregated_values, sample_count, latency_sketch, users_sketch) \
           SELECT $1, $2, u.e, u.m, u.t, u.v, u.c, u.l, u.s \
           FROM unnest($3::text[], $4::text[], $5::text[], $6::jsonb[], $7::int8[], \
                       $8::bytea[], $9::bytea[]) AS u(e, m, t, v, c, l, s) \
           ON CONFLICT (time_bucket, metric_type, endpoint_path, method, event_type) \
           DO UPDATE SET aggregated_values = EXCLUDED.aggregated_values, \
               sample_count = EXCLUDED.sample_count, \
               latency_sketch = EXCLUDED.latency_sketch, \
               users_sketch = EXCLUDED.users_sketch, \
               updated_at = now() \
           RETURNING 1), \
         five AS ( \
           INSERT INTO {five} (time_bucket, metric_type, aggregated_values, sample_count, \
               latency_sketch, users_sketch) \
           SELECT u.b, $2, u.v, u.c, u.l, u.s \
           FROM unnest($10::timestamptz[], $11::jsonb[], $12::int8[], $13::bytea[], \
                       $14::bytea[]) AS u(b, v, c, l, s)), \
         done AS ( \
           INSERT INTO {done} (metric_type, hour, raw_count) VALUES ($2, $1, $15) \
           ON CONFLICT (metric_type, hour) DO UPDATE \
           SET raw_count = EXCLUDED.raw_count, rolled_at = now()) \
         SELECT count(*) FROM hourly",
        hourly = schema.qualify("aggregated_metrics"),
        five = schema.qualify("aggregated_metrics_5min"),
        done = schema.qualify("rollup_hours"),
    )
}

/// Writes everything of a rolled hour in one statement (one round trip
/// after its parse): the upsert of the hourly rows, the insert of the
/// 5-minute rows (the hour's old ones were deleted at the start of the
/// transaction) and the `rollup_hours` record of the raw row count. Returns
/// the hourly rows written.
async fn write_hour(
    tx: &impl tokio_postgres::GenericClient,
    statement: &(impl tokio_postgres::ToStatement + Sync + Send + ?Sized),
    kind: Kind,
    hour: i64,
    rolled: &Rolled,
) -> Result<u64, Error> {
    let rows = &rolled.rows;
    let endpoints: Vec<Option<&str>> = rows.iter().map(|r| r.endpoint.as_deref()).collect();
    let methods: Vec<Option<&str>> = rows.iter().map(|r| r.method.as_deref()).collect();
    let types: Vec<Option<&str>> = rows.iter().map(|r| r.event_type.as_deref()).collect();
    let values: Vec<&serde_json::Value> = rows.iter().map(|r| &r.values).collect();
    let counts: Vec<i64> = rows.iter().map(|r| r.count).collect();
    let latency: Vec<Option<&[u8]>> = rows.iter().map(|r| r.latency.as_deref()).collect();
    let users: Vec<&[u8]> = rows.iter().map(|r| r.users.as_slice()).collect();
    let slots = &rolled.slots;
    let slot_starts: Vec<SystemTime> = slots.iter().map(|r| from_unix_secs(r.start)).collect();
    let slot_values: Vec<&serde_json::Value> = slots.iter().map(|r| &r.values).collect();
    let slot_counts: Vec<i64> = slots.iter().map(|r| r.count).collect();
    let slot_latency: Vec<Option<&[u8]>> = slots.iter().map(|r| r.latency.as_deref()).collect();
    let slot_users: Vec<&[u8]> = slots.iter().map(|r| r.users.as_slice()).collect();
    let raw_count = i64::try_from(rolled.raw).unwrap_or(i64::MAX);
    let row = tx
        .query_one(
            statement,
            &[
                &from_unix_secs(hour),
                &kind.metric_type(),
                &endpoints,
                &methods,
                &types,
                &values,
                &counts,
                &latency,
                &users,
                &slot_starts,
                &slot_values,
                &slot_counts,
                &slot_latency,
                &slot_users,
                &raw_count,
            ],
        )
        .await
        .map_err(|e| Error::db("writing an hour's rollups", e))?;
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_and_literals() {
        assert_eq!(floor_hour(0), 0);
        assert_eq!(floor_hour(3599), 0);
        assert_eq!(floor_hour(3600), 3600);
        assert_eq!(floor_hour(-1), -3600);
        assert_eq!(ts_literal(1_767_225_600), "'2026-01-01 00:00:00+00'");
        assert_eq!(ts_literal(1_767_225_600 + 3661), "'2026-01-01 01:01:01+00'");
    }

    #[test]
    fn key_hash_separates_close_keys() {
        // Where endpoint ends and method starts, trailing zero bytes, word
        // boundaries and single-byte changes all give different hashes.
        let keys: [(&[u8], &[u8]); 10] = [
            (b"/a", b"GET"),
            (b"/aG", b"ET"),
            (b"/a\0", b"GET"),
            (b"/a", b"GET\0"),
            (b"/api/v1/", b"GET"),
            (b"/api/v1/x", b"GET"),
            (b"/api/v1/y", b"GET"),
            (b"/api/v1/", b"POST"),
            (b"", b""),
            (b"\0", b""),
        ];
        let hashes: std::collections::HashSet<u64> =
            keys.iter().map(|(e, m)| key_hash(e, m)).collect();
        assert_eq!(hashes.len(), keys.len());
        assert_eq!(key_hash(b"/a", b"GET"), key_hash(b"/a", b"GET"));
    }

    #[test]
    fn interned_keys_resolve_hash_collisions_by_bytes() {
        let mut keys = Keys::default();
        let a = keys.intern(b"/a", b"GET").unwrap();
        let b = keys.intern(b"/b", b"GET").unwrap();
        // Pretend "/b GET" collided with "/a GET": the map points at "/a".
        let _ = keys.by_hash.insert(key_hash(b"/b", b"GET"), a);
        assert_eq!(keys.intern(b"/b", b"GET").unwrap(), b);
        assert_eq!(keys.intern(b"/a", b"GET").unwrap(), a);
        // A stream uses one form or the other, never both in one `Keys`.
        let mut joined = Keys::default();
        let c = joined.intern_joined(b"PUT\x1f/c").unwrap().unwrap();
        let d = joined.intern_joined(b"GET\x1f/d").unwrap().unwrap();
        let _ = joined.by_hash.insert(key_hash(b"GET\x1f/d", &[]), c);
        assert_eq!(joined.intern_joined(b"GET\x1f/d").unwrap(), Some(d));
        assert_eq!(joined.intern_joined(b"PUT\x1f/c").unwrap(), Some(c));
        assert_eq!(joined.keys[d], ("/d".to_owned(), "GET".to_owned()));
        assert_eq!(joined.intern_joined(b"A\x1fB\x1fC").unwrap(), None);
    }

    #[test]
    fn kinds() {
        for k in Kind::ALL {
            assert_eq!(Kind::of_table(k.table()), Some(k));
        }
        assert_eq!(Kind::of_table("aggregated_metrics"), None);
    }
}
