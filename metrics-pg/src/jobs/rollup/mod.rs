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

mod hour;
mod hours;
mod requests;
mod rows;
mod usage;
mod write;

pub(crate) use self::hour::roll_hour;
use self::hour::roll_hour_with;
use self::hours::closed_hours_to_roll;
pub(crate) use self::hours::hours_to_roll;
use self::write::write_sql;

use std::time::{Duration, Instant, SystemTime};

use deadpool_postgres::Pool;
use futures_util::{StreamExt, pin_mut};
use metrics_core::aggregate::DEFAULT_EXACT_LIMIT;
use tokio_postgres::Client;

use crate::conn;
use crate::error::Error;
use crate::jobs::clock::Clock;
use crate::jobs::daily::{Acc, DayAccs, Key};
use crate::jobs::governance::Governance;
use crate::jobs::lock::{JobLimits, JobLock, ROLLUP_LOCK_CLASS};
use crate::jobs::report::JobReport;
use crate::jobs::task::AbortOnDrop;
use crate::schema::SchemaName;
use crate::tables::Kind;
use crate::units::{HOUR, floor_day, floor_hour, from_unix_secs, ts_literal, unix_secs};

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
    pub(crate) limits: JobLimits,
}

impl Default for RollupOptions {
    fn default() -> Self {
        Self {
            concurrency: 2,
            grace: RollupJob::DEFAULT_GRACE,
            recheck_window: RollupJob::DEFAULT_RECHECK_WINDOW,
            exact_limit: DEFAULT_EXACT_LIMIT,
            limits: JobLimits::default(),
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

    /// How long the job waits for a pooled connection before the run fails
    /// with [`Error::PoolTimeout`] (default 60 s).
    pub fn acquire_timeout(mut self, wait: Duration) -> Self {
        self.options.limits.acquire = wait.max(Duration::from_millis(1));
        self
    }

    /// `statement_timeout` of every statement of the job (default 600 s;
    /// the client gives up 5 s later, in case the server vanished). A
    /// statement past it fails the run with a timeout
    /// ([`Error::is_timeout`]); hours rolled before it stay rolled.
    pub fn statement_timeout(mut self, limit: Duration) -> Self {
        self.options.limits.statement = limit.max(Duration::from_millis(1));
        self
    }

    /// The job's wait and statement limits.
    pub(crate) fn limits(&self) -> &JobLimits {
        &self.options.limits
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
        let Some(mut lock) = JobLock::try_acquire(
            &self.pool,
            &self.options.limits,
            ROLLUP_LOCK_CLASS,
            &self.schema,
        )
        .await?
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
        let limits = self.options.limits;
        report.raw_rows_estimate = Some(
            limits
                .within(self.governance.check(&*client, &self.schema))
                .await?,
        );
        lock.release().await?;
        report.elapsed = started.elapsed();
        // The scheduler logs the run at info; the CLI prints the report.
        tracing::debug!(schema = %self.schema, %report, "rollup done");
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
    let limits = options.limits;
    let mut accs = DayAccs::new();
    for kind in Kind::ALL {
        let (hours, gap_fills) = limits
            .within(closed_hours_to_roll(
                client, schema, kind, closed_end, recheck,
            ))
            .await?;
        let results = futures_util::stream::iter(hours)
            .map(|hour| {
                // A task per hour, so the hours rolled at once also decode
                // and sketch on different cores (a `buffered` stream alone
                // polls them all from this one task).
                let (pool, schema) = (pool.clone(), schema.clone());
                let exact_limit = options.exact_limit;
                AbortOnDrop::spawn(async move {
                    limits
                        .within(roll_hour_on(
                            &pool,
                            &schema,
                            kind,
                            hour,
                            exact_limit,
                            &limits,
                        ))
                        .await
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
        limits
            .within(record_empty_hours(client, schema, kind, &gap_fills))
            .await?;
    }
    let td = Instant::now();
    let days = crate::jobs::daily::build_complete_days(
        client,
        pool,
        schema,
        options.concurrency,
        accs,
        &limits,
    )
    .await?;
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
    limits: &JobLimits,
) -> Result<(i64, u64, u64, Vec<(Key, Acc)>), Error> {
    // Closed, not pooled, if the run is cancelled or times out mid-hour.
    let mut conn = conn::DiscardOnDrop::new(limits.acquire(pool).await?);
    // Parsed once per pooled connection, not once per hour.
    let write = conn
        .get()
        .prepare_cached(&write_sql(schema))
        .await
        .map_err(|e| Error::db("writing an hour's rollups", e))?;
    let client: &mut Client = conn.get();
    let tx = client
        .transaction()
        .await
        .map_err(|e| Error::db("starting a rollup transaction", e))?;
    let (raw, written, states) = roll_hour_with(
        &tx,
        schema,
        kind,
        hour,
        exact_limit,
        &write,
        &limits.set_local(),
    )
    .await?;
    tx.commit()
        .await
        .map_err(|e| Error::db("committing a rollup", e))?;
    conn.keep();
    tracing::debug!(schema = %schema, table = kind.table(), hour = %ts_literal(hour), raw, written, "rolled hour");
    Ok((hour, raw, written, states))
}
