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
//!    `concurrency` hours at once, on pooled connections): its raw rows stream
//!    out with binary `COPY (SELECT ..) TO STDOUT` into per-key summaries
//!    (the client holds sketches, never the hour's rows), the rollup rows are
//!    upserted on the bucket key (`INSERT .. ON CONFLICT DO UPDATE`), and the
//!    number of rows streamed is recorded in `rollup_hours`. A run cut short
//!    leaves every hour either fully rolled or untouched; the next run picks
//!    up the rest.
//!
//! Counting from the streamed rows (not a separate `count(*)`) matters: the
//! recorded count is exactly what went into the rollup, so a row committed
//! while the `COPY` ran shows up as a changed count in the next run.
//!
//! Rows per hour: performance per `(endpoint, method)` plus an
//! all-endpoints row whose `endpoint_path` and `method` are
//! [`ALL`] (`*`); usage per `event_type` plus an all-types row with
//! `event_type = '*'`. The all-rows sketches are merges of the per-key ones,
//! which give the same state as adding every sample (see
//! [`LatencySketch`]).
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
use std::time::{Duration, Instant, SystemTime};

use deadpool_postgres::Pool;
use futures_util::{StreamExt, pin_mut};
use metrics_core::aggregate::{
    DEFAULT_EXACT_LIMIT, DistinctUsers, LatencySketch, PerformanceSummary, UsageSummary,
};
use tokio_postgres::binary_copy::BinaryCopyOutStream;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Transaction};

use crate::error::Error;
use crate::governance::Governance;
use crate::job::{Clock, JobLock, JobReport, ROLLUP_LOCK_CLASS, from_unix_secs, unix_secs};
use crate::schema::SchemaName;

/// The `endpoint_path`, `method` and `event_type` of the all-endpoints and
/// all-types rollup rows. Route templates start with `/` (or are
/// `<unmatched>`), so `*` never collides with a real key.
pub const ALL: &str = "*";

const HOUR: i64 = 3600;
const DAY: i64 = 86_400;
/// Width of an `aggregated_metrics_5min` slot, and slots per hour.
const SLOT: i64 = 300;
const SLOTS: usize = (HOUR / SLOT) as usize;

/// `statement_timeout` of each rollup transaction: generous (an hour of a
/// busy service streams in seconds), but a stuck statement must not hold the
/// job's lock for ever.
const ROLL_STATEMENT_TIMEOUT: &str = "SET LOCAL statement_timeout = '600s'";

/// The raw tables and their rollup `metric_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Performance,
    Usage,
}

impl Kind {
    pub(crate) const ALL: [Self; 2] = [Self::Performance, Self::Usage];

    pub(crate) fn table(self) -> &'static str {
        match self {
            Self::Performance => "performance_metrics",
            Self::Usage => "usage_events",
        }
    }

    pub(crate) fn metric_type(self) -> &'static str {
        match self {
            Self::Performance => "performance",
            Self::Usage => "usage",
        }
    }

    pub(crate) fn of_table(table: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.table() == table)
    }
}

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

/// Start of the hour containing `secs`.
pub(crate) fn floor_hour(secs: i64) -> i64 {
    secs.div_euclid(HOUR) * HOUR
}

/// Start of the UTC day containing `secs`.
pub(crate) fn floor_day(secs: i64) -> i64 {
    secs.div_euclid(DAY) * DAY
}

/// The 5-minute slot (0..12) of an instant `secs` within the hour `hour`.
/// Rows outside the hour (cannot happen: the `COPY` selects the hour) are
/// clamped rather than dropped.
#[inline]
fn slot_of(hour: i64, secs: i64) -> usize {
    usize::try_from((secs - hour).div_euclid(SLOT))
        .unwrap_or(0)
        .min(SLOTS - 1)
}

/// `'YYYY-MM-DD HH:MM:SS+00'`, a timestamptz literal (COPY takes no
/// parameters). Only ever built from our own integers.
pub(crate) fn ts_literal(secs: i64) -> String {
    let t =
        time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "'{:04}-{:02}-{:02} {:02}:{:02}:{:02}+00'",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
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
    for kind in Kind::ALL {
        let (hours, gap_fills) =
            closed_hours_to_roll(client, schema, kind, closed_end, recheck).await?;
        let results = futures_util::stream::iter(hours)
            .map(|hour| roll_hour_on(pool, schema, kind, hour, options.exact_limit))
            .buffered(options.concurrency.max(1));
        pin_mut!(results);
        while let Some(done) = results.next().await {
            let (raw, written) = done?;
            // Empty hours are only recorded (so they are not visited again).
            report.hours_rolled += u64::from(raw > 0);
            report.raw_rows_rolled += raw;
            report.rollup_rows_written += written;
        }
        record_empty_hours(client, schema, kind, &gap_fills).await?;
    }
    let days = crate::daily::build_complete_days(client, pool, schema, options.concurrency).await?;
    if days.days > 0 {
        tracing::debug!(schema = %schema, days = days.days, rows = days.rows, "built daily rollups");
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
) -> Result<(u64, u64), Error> {
    let mut conn = pool.get().await.map_err(Error::Pool)?;
    let client: &mut Client = &mut conn;
    let tx = client
        .transaction()
        .await
        .map_err(|e| Error::db("starting a rollup transaction", e))?;
    let (raw, written) = roll_hour(&tx, schema, kind, hour, exact_limit).await?;
    tx.commit()
        .await
        .map_err(|e| Error::db("committing a rollup", e))?;
    tracing::debug!(schema = %schema, table = kind.table(), hour = %ts_literal(hour), raw, written, "rolled hour");
    Ok((raw, written))
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
                schema.qualify(&format!("{}_default", kind.table()))
            ),
            &[],
        )
        .await
        .map_err(|e| Error::db("finding the oldest stray raw row", e))?
        .get(0);
    let mut first = stray.map(|s| floor_hour(s.floor() as i64));
    for (name, day) in crate::retention::day_partitions(client, schema, kind.table()).await? {
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
) -> Result<(u64, u64), Error> {
    tx.batch_execute(ROLL_STATEMENT_TIMEOUT)
        .await
        .map_err(|e| Error::db("setting statement_timeout", e))?;
    let Rolled { raw, rows, slots } = match kind {
        Kind::Performance => stream_performance(tx, schema, hour, exact_limit).await?,
        Kind::Usage => stream_usage(tx, schema, hour).await?,
    };
    let written = upsert(tx, schema, kind, hour, &rows).await?;
    write_slots(tx, schema, kind, hour, &slots).await?;
    // The day's daily rows no longer equal the merge of its hours: withdraw
    // them (atomically with the new hourly rows) until the day is rebuilt.
    let _ = tx
        .execute(
            &format!(
                "DELETE FROM {} WHERE metric_type = $1 AND day = $2",
                schema.qualify("rollup_days")
            ),
            &[&kind.metric_type(), &from_unix_secs(floor_day(hour))],
        )
        .await
        .map_err(|e| Error::db("withdrawing a day's daily rollup", e))?;
    let raw_count = i64::try_from(raw).unwrap_or(i64::MAX);
    let _ = tx
        .execute(
            &format!(
                "INSERT INTO {} AS r (metric_type, hour, raw_count) VALUES ($1, $2, $3) \
                 ON CONFLICT (metric_type, hour) DO UPDATE \
                 SET raw_count = EXCLUDED.raw_count, rolled_at = now()",
                schema.qualify("rollup_hours")
            ),
            &[&kind.metric_type(), &from_unix_secs(hour), &raw_count],
        )
        .await
        .map_err(|e| Error::db("recording a rolled hour", e))?;
    Ok((raw, written))
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

async fn stream_performance(
    tx: &Transaction<'_>,
    schema: &SchemaName,
    hour: i64,
    exact_limit: u32,
) -> Result<Rolled, Error> {
    let sql = copy_sql(
        schema,
        Kind::Performance,
        "endpoint, method, status_code, response_time_ms, user_id, \"timestamp\"",
        hour,
    );
    let stream = tx
        .copy_out(sql.as_str())
        .await
        .map_err(|e| Error::db("streaming raw requests", e))?;
    let rows = BinaryCopyOutStream::new(
        stream,
        &[
            Type::TEXT,
            Type::TEXT,
            Type::INT4,
            Type::FLOAT8,
            Type::TEXT,
            Type::TIMESTAMPTZ,
        ],
    );
    pin_mut!(rows);
    // endpoint -> [(method, bucket)]: a handful of methods per endpoint, and
    // looking the endpoint up by &str avoids allocating per row.
    let mut buckets: HashMap<String, Vec<(String, PerfBucket)>> = HashMap::new();
    let mut slots: [Option<PerfBucket>; SLOTS] = Default::default();
    let mut raw = 0u64;
    while let Some(row) = rows.next().await {
        let row = row.map_err(|e| Error::db("streaming raw requests", e))?;
        let endpoint: &str = row
            .try_get(0)
            .map_err(|e| Error::db("decoding a raw request", e))?;
        let method: &str = row
            .try_get(1)
            .map_err(|e| Error::db("decoding a raw request", e))?;
        let status: i32 = row
            .try_get(2)
            .map_err(|e| Error::db("decoding a raw request", e))?;
        let ms: f64 = row
            .try_get(3)
            .map_err(|e| Error::db("decoding a raw request", e))?;
        let user: Option<&str> = row
            .try_get(4)
            .map_err(|e| Error::db("decoding a raw request", e))?;
        let at: SystemTime = row
            .try_get(5)
            .map_err(|e| Error::db("decoding a raw request", e))?;
        raw += 1;
        // The table's CHECK keeps status_code in 100..=599.
        let status = u16::try_from(status).unwrap_or(0);
        let slot =
            slots[slot_of(hour, unix_secs(at))].get_or_insert_with(|| PerfBucket::new(exact_limit));
        slot.summary.add_sample(status, ms);
        if let Some(user) = user {
            slot.users.add(user);
        }
        if !buckets.contains_key(endpoint) {
            let _ = buckets.insert(endpoint.to_owned(), Vec::new());
        }
        let Some(methods) = buckets.get_mut(endpoint) else {
            continue; // inserted just above
        };
        let i = match methods.iter().position(|(m, _)| m == method) {
            Some(i) => i,
            None => {
                methods.push((method.to_owned(), PerfBucket::new(exact_limit)));
                methods.len() - 1
            }
        };
        let bucket = &mut methods[i].1;
        bucket.summary.add_sample(status, ms);
        if let Some(user) = user {
            bucket.users.add(user);
        }
    }
    // Sorted, so rows are written in key order: equal inputs give equal
    // statements, and concurrent upserts of one hour lock rows in one order.
    let sorted: BTreeMap<(String, String), PerfBucket> = buckets
        .into_iter()
        .flat_map(|(e, ms)| ms.into_iter().map(move |(m, b)| ((e.clone(), m), b)))
        .collect();
    let mut all = PerfBucket::new(exact_limit);
    let mut out = Vec::with_capacity(sorted.len() + 1);
    for ((endpoint, method), b) in sorted {
        all.summary.merge(&b.summary);
        all.users.merge(&b.users);
        out.push(perf_row(Some(endpoint), Some(method), &b));
    }
    if raw > 0 {
        out.push(perf_row(Some(ALL.to_owned()), Some(ALL.to_owned()), &all));
    }
    let slots = slot_rows(hour, slots, |b| {
        let r = perf_row(None, None, &b);
        (r.values, r.count, r.latency, r.users)
    });
    Ok(Rolled {
        raw,
        rows: out,
        slots,
    })
}

/// The non-empty slots of an hour as `aggregated_metrics_5min` rows.
fn slot_rows<B>(
    hour: i64,
    slots: [Option<B>; SLOTS],
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
    let mut slots: [Option<UsageSummary>; SLOTS] = Default::default();
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
    for (event_type, s) in sorted {
        all.merge(&s);
        out.push(usage_row(event_type, &s));
    }
    if raw > 0 {
        out.push(usage_row(ALL.to_owned(), &all));
    }
    let slots = slot_rows(hour, slots, |s| {
        let r = usage_row(ALL.to_owned(), &s);
        (r.values, r.count, r.latency, r.users)
    });
    Ok(Rolled {
        raw,
        rows: out,
        slots,
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

/// Replaces the hour's `aggregated_metrics_5min` rows (delete, then one
/// set-based insert of the non-empty slots).
async fn write_slots(
    tx: &Transaction<'_>,
    schema: &SchemaName,
    kind: Kind,
    hour: i64,
    slots: &[SlotRow],
) -> Result<(), Error> {
    let table = schema.qualify("aggregated_metrics_5min");
    let _ = tx
        .execute(
            &format!(
                "DELETE FROM {table} WHERE metric_type = $1 AND time_bucket >= $2 AND time_bucket < $3"
            ),
            &[
                &kind.metric_type(),
                &from_unix_secs(hour),
                &from_unix_secs(hour + HOUR),
            ],
        )
        .await
        .map_err(|e| Error::db("deleting an hour's 5-minute rollups", e))?;
    if slots.is_empty() {
        return Ok(());
    }
    let starts: Vec<SystemTime> = slots.iter().map(|r| from_unix_secs(r.start)).collect();
    let values: Vec<&serde_json::Value> = slots.iter().map(|r| &r.values).collect();
    let counts: Vec<i64> = slots.iter().map(|r| r.count).collect();
    let latency: Vec<Option<&[u8]>> = slots.iter().map(|r| r.latency.as_deref()).collect();
    let users: Vec<&[u8]> = slots.iter().map(|r| r.users.as_slice()).collect();
    let _ = tx
        .execute(
            &format!(
                "INSERT INTO {table} (time_bucket, metric_type, aggregated_values, sample_count, \
                                      latency_sketch, users_sketch) \
                 SELECT u.b, $1, u.v, u.c, u.l, u.s \
                 FROM unnest($2::timestamptz[], $3::jsonb[], $4::int8[], $5::bytea[], $6::bytea[]) \
                      AS u(b, v, c, l, s)"
            ),
            &[
                &kind.metric_type(),
                &starts,
                &values,
                &counts,
                &latency,
                &users,
            ],
        )
        .await
        .map_err(|e| Error::db("writing 5-minute rollups", e))?;
    Ok(())
}

/// One set-based upsert of every rollup row of the hour.
async fn upsert(
    tx: &Transaction<'_>,
    schema: &SchemaName,
    kind: Kind,
    hour: i64,
    rows: &[OutRow],
) -> Result<u64, Error> {
    if rows.is_empty() {
        return Ok(0);
    }
    let endpoints: Vec<Option<&str>> = rows.iter().map(|r| r.endpoint.as_deref()).collect();
    let methods: Vec<Option<&str>> = rows.iter().map(|r| r.method.as_deref()).collect();
    let types: Vec<Option<&str>> = rows.iter().map(|r| r.event_type.as_deref()).collect();
    let values: Vec<&serde_json::Value> = rows.iter().map(|r| &r.values).collect();
    let counts: Vec<i64> = rows.iter().map(|r| r.count).collect();
    let latency: Vec<Option<&[u8]>> = rows.iter().map(|r| r.latency.as_deref()).collect();
    let users: Vec<&[u8]> = rows.iter().map(|r| r.users.as_slice()).collect();
    tx.execute(
        &format!(
            "INSERT INTO {} AS a (time_bucket, metric_type, endpoint_path, method, event_type, \
                                  aggregated_values, sample_count, latency_sketch, users_sketch) \
             SELECT $1, $2, u.e, u.m, u.t, u.v, u.c, u.l, u.s \
             FROM unnest($3::text[], $4::text[], $5::text[], $6::jsonb[], $7::int8[], $8::bytea[], $9::bytea[]) \
                  AS u(e, m, t, v, c, l, s) \
             ON CONFLICT (time_bucket, metric_type, endpoint_path, method, event_type) DO UPDATE \
             SET aggregated_values = EXCLUDED.aggregated_values, \
                 sample_count = EXCLUDED.sample_count, \
                 latency_sketch = EXCLUDED.latency_sketch, \
                 users_sketch = EXCLUDED.users_sketch, \
                 updated_at = now()",
            schema.qualify("aggregated_metrics")
        ),
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
        ],
    )
    .await
    .map_err(|e| Error::db("upserting rollup rows", e))
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
    fn kinds() {
        for k in Kind::ALL {
            assert_eq!(Kind::of_table(k.table()), Some(k));
        }
        assert_eq!(Kind::of_table("aggregated_metrics"), None);
    }
}
