//! The retention job: drops raw day partitions past the raw horizon once
//! every hour in them is rolled up, and deletes rollups past theirs.
//!
//! # Never losing rows
//!
//! A day partition is dropped in one transaction that
//!
//! 1. locks the parent raw table in `SHARE ROW EXCLUSIVE` mode: nothing can
//!    be inserted (a late row would otherwise slip in between the check and
//!    the drop), reads keep going, and the lock order (parent first) is the
//!    one writers use, so no deadlock;
//! 2. re-counts the partition's rows per hour and rolls every hour that was
//!    never rolled or whose count changed (inside the same transaction);
//! 3. marks those hours `raw_dropped` in `rollup_hours` (so they are never
//!    rolled again from a partial set of rows) and drops the partition.
//!
//! If anything fails the transaction rolls back and the partition stays;
//! the next run tries again.
//!
//! # Horizons
//!
//! A partition for day `D` is dropped once `D + 1 day <= now − raw_retention`
//! (every row in it is older than the horizon). A rollup hour `[h, h + 1 h)`
//! is deleted once `h + 1 h <= now − rollup_retention`. The rollup horizon is
//! never shorter than the raw one (the longer of the two is used), so no hour
//! loses its rollup while its raw rows could still be re-rolled.

use std::time::{Duration, Instant, SystemTime};

use deadpool_postgres::Pool;
use tokio_postgres::Client;

use crate::error::Error;
use crate::jobs::clock::Clock;
use crate::jobs::governance::Governance;
use crate::jobs::lock::{JobLock, RETENTION_LOCK_CLASS, ROLLUP_LOCK_CLASS};
use crate::jobs::partition::day_partitions;
use crate::jobs::report::JobReport;
use crate::jobs::rollup::{RollupOptions, hours_to_roll, roll_closed_hours, roll_hour};
use crate::schema::SchemaName;
use crate::tables::{Kind, PARTITIONED_TABLES};
use crate::units::{DAY, HOUR, duration_secs, floor_hour, from_unix_secs, unix_secs};

/// Drops expired raw partitions (after rolling any hour not yet rolled) and
/// deletes expired rollups. Run it daily (the [`Scheduler`](crate::Scheduler)
/// does at 02:00 UTC; `metrics-aggregate retention` from cron).
///
/// # Example
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use metrics_pg::RetentionJob;
///
/// let pool = metrics_pg::create_pool("postgres://app@localhost/app", 2)?;
/// let report = RetentionJob::new(pool, "app_metrics")?
///     .raw_retention(Duration::from_secs(7 * 86_400))
///     .rollup_retention(Duration::from_secs(90 * 86_400))
///     .run_once()
///     .await?;
/// println!("{report}");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RetentionJob {
    pool: Pool,
    schema: SchemaName,
    raw_retention: Duration,
    rollup_retention: Duration,
    rollup: RollupOptions,
    governance: Governance,
    clock: Clock,
}

impl RetentionJob {
    /// Default horizon of the raw tables: 7 days.
    pub const DEFAULT_RAW_RETENTION: Duration = Duration::from_secs(7 * 86_400);
    /// Default horizon of the rollups: 90 days.
    pub const DEFAULT_ROLLUP_RETENTION: Duration = Duration::from_secs(90 * 86_400);

    /// A job for the tables in `schema`, with the default horizons.
    pub fn new(pool: Pool, schema: &str) -> Result<Self, Error> {
        Ok(Self {
            pool,
            schema: SchemaName::new(schema)?,
            raw_retention: Self::DEFAULT_RAW_RETENTION,
            rollup_retention: Self::DEFAULT_ROLLUP_RETENTION,
            rollup: RollupOptions::default(),
            governance: Governance::default(),
            clock: Clock::system(),
        })
    }

    /// How long raw rows are kept (whole UTC days; default 7 days).
    pub fn raw_retention(mut self, keep: Duration) -> Self {
        self.raw_retention = keep;
        self
    }

    /// How long hourly rollups are kept (default 90 days; never less than
    /// the raw retention).
    pub fn rollup_retention(mut self, keep: Duration) -> Self {
        self.rollup_retention = keep;
        self
    }

    /// Grace period of the rollup pass this job starts with (see
    /// [`RollupJob::grace`](crate::RollupJob::grace)).
    pub fn grace(mut self, grace: Duration) -> Self {
        self.rollup.grace = grace;
        self
    }

    /// Exact limit of the sketches of hours this job rolls (see
    /// [`RollupJob::exact_limit`](crate::RollupJob::exact_limit)).
    pub fn exact_limit(mut self, limit: u32) -> Self {
        self.rollup.exact_limit = limit;
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
        self.rollup.limits.acquire = wait.max(Duration::from_millis(1));
        self
    }

    /// `statement_timeout` of every statement of the job (default 600 s;
    /// the client gives up 5 s later). A statement past it fails the run
    /// with a timeout ([`Error::is_timeout`]); each partition drop is its
    /// own transaction, so what was done stays done.
    pub fn statement_timeout(mut self, limit: Duration) -> Self {
        self.rollup.limits.statement = limit.max(Duration::from_millis(1));
        self
    }

    /// The clock `run_once` reads; the [`Scheduler`](crate::Scheduler) also
    /// finds the next daily slot on it.
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The current time on the job's clock.
    pub(crate) fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// Applies retention at the clock's current time.
    pub async fn run_once(&self) -> Result<JobReport, Error> {
        self.run_at(self.clock.now()).await
    }

    /// Applies retention as of `now`: first a rollup pass of closed hours,
    /// then partition drops, then rollup deletes.
    pub async fn run_at(&self, now: SystemTime) -> Result<JobReport, Error> {
        let started = Instant::now();
        let limits = self.rollup.limits;
        let mut report = JobReport {
            job: "retention",
            ..JobReport::default()
        };
        let Some(mut lock) =
            JobLock::try_acquire(&self.pool, &limits, RETENTION_LOCK_CLASS, &self.schema).await?
        else {
            report.skipped = true;
            report.elapsed = started.elapsed();
            return Ok(report);
        };
        // Rolling and dropping exclude the rollup job (which only ever
        // try-locks, so it skips a minute rather than queueing behind us).
        lock.also_wait_for(ROLLUP_LOCK_CLASS, &self.schema).await?;
        let client: &mut Client = lock.client();
        roll_closed_hours(
            client,
            &self.pool,
            &self.schema,
            &self.rollup,
            now,
            &mut report,
        )
        .await?;

        let now_secs = unix_secs(now);
        let raw_cutoff = now_secs.saturating_sub(duration_secs(self.raw_retention));
        for table in PARTITIONED_TABLES {
            let Some(kind) = Kind::of_table(table) else {
                continue;
            };
            let days = limits
                .within(day_partitions(client, &self.schema, table))
                .await?;
            for (name, day) in days {
                if day + DAY <= raw_cutoff {
                    limits
                        .within(self.drop_partition(client, kind, &name, day, &mut report))
                        .await?;
                }
            }
        }

        let keep = duration_secs(self.rollup_retention.max(self.raw_retention));
        // Hour [h, h+1h) expires when h + 1h <= cutoff, i.e. h <= cutoff - 1h.
        let last_expired = from_unix_secs(now_secs.saturating_sub(keep) - HOUR);
        report.rollup_rows_deleted = limits
            .within(self.delete_expired(client, last_expired, now_secs, keep))
            .await?;
        let _ = limits
            .within(crate::jobs::daily::delete_expired_days(
                client,
                &self.schema,
                last_expired,
            ))
            .await?;
        // Hours re-rolled before their partition was dropped withdrew their
        // day's daily rows: build those days again.
        let _ = crate::jobs::daily::build_complete_days(
            client,
            &self.pool,
            &self.schema,
            self.rollup.concurrency,
            crate::jobs::daily::DayAccs::new(),
            &limits,
        )
        .await?;

        report.raw_rows_estimate = Some(
            limits
                .within(self.governance.check(&*client, &self.schema))
                .await?,
        );
        lock.release().await?;
        report.elapsed = started.elapsed();
        // The scheduler logs the run at info; the CLI prints the report.
        tracing::debug!(schema = %self.schema, %report, "retention done");
        Ok(report)
    }

    /// Deletes the rollups (hourly, bookkeeping, 5-minute) of hours up to
    /// `last_expired`; returns the hourly rows deleted.
    async fn delete_expired(
        &self,
        client: &Client,
        last_expired: SystemTime,
        now_secs: i64,
        keep: i64,
    ) -> Result<u64, Error> {
        let deleted = client
            .execute(
                &format!(
                    "DELETE FROM {} WHERE time_bucket <= $1",
                    self.schema.qualify("aggregated_metrics")
                ),
                &[&last_expired],
            )
            .await
            .map_err(|e| Error::db("deleting expired rollups", e))?;
        let _ = client
            .execute(
                &format!(
                    "DELETE FROM {} WHERE hour <= $1",
                    self.schema.qualify("rollup_hours")
                ),
                &[&last_expired],
            )
            .await
            .map_err(|e| Error::db("deleting expired rollup bookkeeping", e))?;
        // 5-minute rows go with their hour (slots of [h, h + 1 h) for every
        // expired h); daily rows with the first expired hour of their day.
        let _ = client
            .execute(
                &format!(
                    "DELETE FROM {} WHERE time_bucket < $1",
                    self.schema.qualify("aggregated_metrics_5min")
                ),
                &[&from_unix_secs(
                    floor_hour(now_secs.saturating_sub(keep) - HOUR) + HOUR,
                )],
            )
            .await
            .map_err(|e| Error::db("deleting expired 5-minute rollups", e))?;
        Ok(deleted)
    }

    /// Rolls whatever the partition still needs, then drops it, atomically.
    async fn drop_partition(
        &self,
        client: &mut Client,
        kind: Kind,
        name: &str,
        day: i64,
        report: &mut JobReport,
    ) -> Result<(), Error> {
        let set_timeout = self.rollup.limits.set_local();
        let tx = client
            .transaction()
            .await
            .map_err(|e| Error::db("starting a partition drop", e))?;
        // Writers wait at most this long behind us; if they hold the table
        // longer, give up and retry on the next run rather than pile up.
        tx.batch_execute(&format!(
            "SET LOCAL lock_timeout = '30s'; LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE",
            self.schema.qualify(kind.table())
        ))
        .await
        .map_err(|e| Error::db("locking a raw table to drop a partition", e))?;
        for hour in hours_to_roll(&tx, &self.schema, kind, day, day + DAY).await? {
            let (raw, written, _) = roll_hour(
                &tx,
                &self.schema,
                kind,
                hour,
                self.rollup.exact_limit,
                &set_timeout,
            )
            .await?;
            report.hours_rolled += 1;
            report.raw_rows_rolled += raw;
            report.rollup_rows_written += written;
        }
        let part = self.schema.qualify(name);
        let rows: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {part}"), &[])
            .await
            .map_err(|e| Error::db("counting a partition's rows", e))?
            .get(0);
        let _ = tx
            .execute(
                &format!(
                    "UPDATE {} SET raw_dropped = true \
                     WHERE metric_type = $1 AND hour >= $2 AND hour < $3",
                    self.schema.qualify("rollup_hours")
                ),
                &[
                    &kind.metric_type(),
                    &from_unix_secs(day),
                    &from_unix_secs(day + DAY),
                ],
            )
            .await
            .map_err(|e| Error::db("marking dropped hours", e))?;
        tx.batch_execute(&format!("DROP TABLE {part}"))
            .await
            .map_err(|e| Error::db("dropping an expired partition", e))?;
        tx.commit()
            .await
            .map_err(|e| Error::db("committing a partition drop", e))?;
        tracing::info!(schema = %self.schema, partition = name, rows, "dropped expired raw partition");
        report.partitions_dropped.push(name.to_owned());
        report.raw_rows_dropped += u64::try_from(rows).unwrap_or(0);
        Ok(())
    }
}
