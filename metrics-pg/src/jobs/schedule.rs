//! The in-process scheduler: the rollup every minute, partition maintenance
//! every hour and retention daily at 02:00 UTC, in one task the application
//! starts and stops.
//!
//! Every app instance may run a scheduler: each job run first try-locks its
//! Postgres advisory lock, so with N instances each minute's rollup is done
//! once and the others report `skipped`. Use the `metrics-aggregate` binary
//! instead (cron, Kubernetes CronJob) when you prefer jobs outside the app;
//! both can run at once, the lock keeps them apart.
//!
//! Each run logs one `info` line (`metrics job run`: job, outcome, duration
//! and what it did), or a `warn` line when it fails. No run waits for ever:
//! connections, statements and round trips have limits
//! ([`SchedulerConfig::job_acquire_timeout`],
//! [`SchedulerConfig::job_statement_timeout`]), and
//! [`SchedulerHandle::stop_within`] bounds the wait for a run to stop.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use deadpool_postgres::Pool;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::conn;
use crate::error::Error;
use crate::jobs::governance::Governance;
use crate::jobs::lock::JobLimits;
use crate::jobs::partition::PartitionReport;
use crate::jobs::report::JobReport;
use crate::jobs::retention::RetentionJob;
use crate::jobs::rollup::RollupJob;

const DAY: Duration = Duration::from_secs(86_400);

/// Settings of the [`Scheduler`].
///
/// ```
/// use std::time::Duration;
/// use metrics_pg::SchedulerConfig;
///
/// let c = SchedulerConfig::default();
/// assert_eq!(c.rollup_every, Duration::from_secs(60));
/// assert_eq!(c.retention_at_utc, Duration::from_secs(2 * 3600)); // 02:00 UTC
/// ```
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct SchedulerConfig {
    /// Interval of the rollup job (default 1 minute; the first run starts at
    /// once).
    pub rollup_every: Duration,
    /// Time of day (UTC, since midnight) of the daily retention run (default
    /// 02:00).
    pub retention_at_utc: Duration,
    /// Grace period before an hour counts as closed (default 2 minutes).
    pub grace: Duration,
    /// Raw rows kept (default 7 days).
    pub raw_retention: Duration,
    /// Rollups kept (default 90 days).
    pub rollup_retention: Duration,
    /// Record-count thresholds (default 800,000 / 1,000,000).
    pub governance: Governance,
    /// Interval of partition maintenance ([`maintain_partitions`] for the
    /// day of the jobs' clock; default 1 hour, cheap when the partitions
    /// exist). The first run is one interval after the start: run
    /// [`maintain_partitions`] once before serving, as [`migrate`] is.
    ///
    /// [`maintain_partitions`]: crate::maintain_partitions
    /// [`migrate`]: crate::migrate
    pub partitions_every: Duration,
    /// How long a job run waits for a pooled connection before it fails
    /// with [`Error::PoolTimeout`] (default 60 s).
    pub job_acquire_timeout: Duration,
    /// `statement_timeout` of every job statement (default 600 s; the client
    /// gives up 5 s later). A run past it fails with a timeout
    /// ([`Error::is_timeout`]) and the job runs again at its next slot.
    pub job_statement_timeout: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            rollup_every: Duration::from_secs(60),
            retention_at_utc: Duration::from_secs(2 * 3600),
            grace: RollupJob::DEFAULT_GRACE,
            raw_retention: RetentionJob::DEFAULT_RAW_RETENTION,
            rollup_retention: RetentionJob::DEFAULT_ROLLUP_RETENTION,
            governance: Governance::default(),
            partitions_every: Duration::from_secs(3600),
            job_acquire_timeout: JobLimits::DEFAULT_ACQUIRE,
            job_statement_timeout: JobLimits::DEFAULT_STATEMENT,
        }
    }
}

/// Namespace of [`Scheduler::spawn`].
#[derive(Debug, Clone, Copy)]
pub struct Scheduler {
    _priv: (),
}

/// The running scheduler: [`stop`](Self::stop) it at shutdown.
///
/// Dropping the handle without `stop` leaves the task running until the
/// runtime shuts down.
#[derive(Debug)]
pub struct SchedulerHandle {
    stop: Arc<Notify>,
    task: JoinHandle<()>,
    reports: watch::Receiver<Option<JobReport>>,
}

impl Scheduler {
    /// Starts the scheduler on the current Tokio runtime (call it from
    /// within one).
    ///
    /// # Example
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use metrics_pg::{Scheduler, SchedulerConfig};
    ///
    /// let pool = metrics_pg::create_pool("postgres://app@localhost/app", 4)?;
    /// let scheduler = Scheduler::spawn(pool, "app_metrics", SchedulerConfig::default())?;
    /// // ... serve ...
    /// scheduler.stop().await;
    /// # Ok(()) }
    /// ```
    pub fn spawn(
        pool: Pool,
        schema: &str,
        config: SchedulerConfig,
    ) -> Result<SchedulerHandle, Error> {
        let rollup = RollupJob::new(pool.clone(), schema)?
            .grace(config.grace)
            .governance(config.governance)
            .acquire_timeout(config.job_acquire_timeout)
            .statement_timeout(config.job_statement_timeout);
        let retention = RetentionJob::new(pool, schema)?
            .grace(config.grace)
            .acquire_timeout(config.job_acquire_timeout)
            .statement_timeout(config.job_statement_timeout)
            .raw_retention(config.raw_retention)
            .rollup_retention(config.rollup_retention)
            .governance(config.governance);
        Ok(Self::spawn_jobs(rollup, retention, &config))
    }

    /// Starts the scheduler with jobs configured by the caller: their clocks
    /// and limits are used for the runs (partition maintenance uses the
    /// rollup job's), and the retention job's clock also places its daily
    /// slot (the rollup's cadence is a plain interval).
    pub fn spawn_jobs(
        rollup: RollupJob,
        retention: RetentionJob,
        config: &SchedulerConfig,
    ) -> SchedulerHandle {
        let stop = Arc::new(Notify::new());
        let (tx, reports) = watch::channel(None);
        let cadence = Cadence {
            rollup_every: config.rollup_every.max(Duration::from_millis(1)),
            retention_at: config.retention_at_utc,
            partitions_every: config.partitions_every.max(Duration::from_millis(1)),
        };
        let task = tokio::spawn(run(rollup, retention, cadence, Arc::clone(&stop), tx));
        SchedulerHandle {
            stop,
            task,
            reports,
        }
    }
}

impl SchedulerHandle {
    /// The report of the latest finished job run (`None` before the first).
    pub fn reports(&self) -> watch::Receiver<Option<JobReport>> {
        self.reports.clone()
    }

    /// How long [`stop`](Self::stop) waits for the scheduler's task.
    pub const DEFAULT_STOP_WAIT: Duration = Duration::from_secs(10);

    /// Stops the scheduler, waiting at most
    /// [`DEFAULT_STOP_WAIT`](Self::DEFAULT_STOP_WAIT) (see
    /// [`stop_within`](Self::stop_within)).
    pub async fn stop(self) {
        let _ = self.stop_within(Self::DEFAULT_STOP_WAIT).await;
    }

    /// Stops the scheduler and waits at most `limit` for its task; `true`
    /// if it ended within it. A job run in progress is cancelled at its
    /// next await: its open transaction rolls back (every rolled hour and
    /// every partition drop is its own transaction, so nothing is left
    /// half-written) and its connections are closed, which releases the
    /// advisory lock. Past `limit` (a run busy without awaiting) the task
    /// is aborted and left to end on its own.
    pub async fn stop_within(self, limit: Duration) -> bool {
        // notify_one stores a permit: a task between awaits still sees it.
        self.stop.notify_one();
        let mut task = self.task;
        if tokio::time::timeout(limit, &mut task).await.is_ok() {
            return true;
        }
        task.abort();
        tracing::warn!(
            ?limit,
            "metrics scheduler did not stop in time; its task was aborted"
        );
        false
    }
}

/// When each job runs.
#[derive(Debug, Clone, Copy)]
struct Cadence {
    rollup_every: Duration,
    retention_at: Duration,
    partitions_every: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Job {
    Rollup,
    Retention,
    Partitions,
}

impl Job {
    fn name(self) -> &'static str {
        match self {
            Self::Rollup => "rollup",
            Self::Retention => "retention",
            Self::Partitions => "partitions",
        }
    }
}

/// What a finished run reports.
enum Ran {
    Job(JobReport),
    Partitions(PartitionReport),
}

async fn run(
    rollup: RollupJob,
    retention: RetentionJob,
    cadence: Cadence,
    stop: Arc<Notify>,
    reports: watch::Sender<Option<JobReport>>,
) {
    let mut tick = tokio::time::interval(cadence.rollup_every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut partitions = tokio::time::interval_at(
        tokio::time::Instant::now() + cadence.partitions_every,
        cadence.partitions_every,
    );
    partitions.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut next_retention =
        tokio::time::Instant::now() + until_next_daily(retention.now(), cadence.retention_at);
    loop {
        let job = tokio::select! {
            biased;
            () = stop.notified() => return,
            () = tokio::time::sleep_until(next_retention) => Job::Retention,
            _ = partitions.tick() => Job::Partitions,
            _ = tick.tick() => Job::Rollup,
        };
        let started = Instant::now();
        let result = tokio::select! {
            biased;
            () = stop.notified() => return,
            r = async {
                match job {
                    Job::Retention => retention.run_once().await.map(Ran::Job),
                    Job::Rollup => rollup.run_once().await.map(Ran::Job),
                    Job::Partitions => maintain_partitions_now(&rollup, &retention).await.map(Ran::Partitions),
                }
            } => r,
        };
        log_run(job, &result, started.elapsed());
        if job == Job::Retention {
            next_retention = tokio::time::Instant::now()
                + until_next_daily(retention.now(), cadence.retention_at);
        }
        if let Ok(Ran::Job(report)) = result {
            let _ = reports.send(Some(report));
        }
    }
}

/// The one log line of a run: `info` with what it did, `warn` on failure.
fn log_run(job: Job, result: &Result<Ran, Error>, elapsed: Duration) {
    let elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    match result {
        Ok(Ran::Job(r)) => tracing::info!(
            job = job.name(),
            outcome = if r.skipped { "skipped" } else { "ok" },
            elapsed_ms,
            hours_rolled = r.hours_rolled,
            raw_rows_rolled = r.raw_rows_rolled,
            rollup_rows_written = r.rollup_rows_written,
            partitions_dropped = r.partitions_dropped.len(),
            raw_rows_dropped = r.raw_rows_dropped,
            rollup_rows_deleted = r.rollup_rows_deleted,
            "metrics job run"
        ),
        Ok(Ran::Partitions(r)) => tracing::info!(
            job = job.name(),
            outcome = "ok",
            elapsed_ms,
            partitions_created = r.created.len(),
            rows_moved = r.rows_moved,
            "metrics job run"
        ),
        Err(e) => tracing::warn!(
            job = job.name(),
            outcome = "failed",
            elapsed_ms,
            timeout = e.is_timeout(),
            error = %e,
            "metrics job run failed; it runs again at its next slot"
        ),
    }
}

/// Partition maintenance for the day of the retention job's clock, on a
/// connection of the rollup job's pool.
async fn maintain_partitions_now(
    rollup: &RollupJob,
    retention: &RetentionJob,
) -> Result<PartitionReport, Error> {
    let limits = rollup.limits();
    // Closed, not pooled, if the pass is cancelled or times out.
    let mut conn = conn::DiscardOnDrop::new(limits.acquire(rollup.pool()).await?);
    let today = time::OffsetDateTime::from(retention.now()).date();
    // Each day is its own transaction with its own lock and statement
    // timeouts; this bounds the round trips of the whole pass.
    let report = limits
        .within(crate::jobs::partition::maintain_partitions(
            conn.get(),
            rollup.schema_name().as_str(),
            today,
        ))
        .await?;
    conn.keep();
    Ok(report)
}

/// Time from `now` until the next `at` (time of day, UTC); a full day when
/// `now` is exactly on it (the run that just happened).
pub(crate) fn until_next_daily(now: SystemTime, at: Duration) -> Duration {
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let day = DAY.as_nanos();
    let in_day = since_epoch.as_nanos() % day;
    let target = at.as_nanos() % day;
    let wait = (target + day - in_day) % day;
    if wait == 0 {
        DAY
    } else {
        Duration::from_nanos(u64::try_from(wait).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(h: u64, m: u64, s: u64) -> SystemTime {
        // 2026-01-01 is a UTC midnight.
        UNIX_EPOCH + Duration::from_secs(1_767_225_600 + h * 3600 + m * 60 + s)
    }

    #[test]
    fn next_daily_slot() {
        let two = Duration::from_secs(2 * 3600);
        assert_eq!(
            until_next_daily(at(0, 0, 0), two),
            Duration::from_secs(7200)
        );
        assert_eq!(until_next_daily(at(1, 59, 59), two), Duration::from_secs(1));
        assert_eq!(until_next_daily(at(2, 0, 0), two), DAY);
        assert_eq!(
            until_next_daily(at(2, 0, 1), two),
            DAY - Duration::from_secs(1)
        );
        assert_eq!(
            until_next_daily(at(23, 0, 0), two),
            Duration::from_secs(3 * 3600)
        );
        assert_eq!(
            until_next_daily(at(1, 0, 0) + Duration::from_millis(500), two),
            Duration::from_millis(3_599_500)
        );
    }
}
