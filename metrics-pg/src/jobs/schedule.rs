//! The in-process scheduler: the rollup every minute, partition maintenance
//! every hour and retention daily at 02:00 UTC, in one task the application
//! starts and stops.
//!
//! Every app instance may run a scheduler: each job run first try-locks its
//! Postgres advisory lock, so with N instances each minute's rollup is done
//! once and the others report `skipped`. Use the `metrics-aggregate` binary
//! instead (cron, Kubernetes CronJob) when you prefer jobs outside the app;
//! both can run at once, the lock keeps them apart.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deadpool_postgres::Pool;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::conn;
use crate::error::Error;
use crate::jobs::governance::Governance;
use crate::jobs::lock::JOB_ACQUIRE_TIMEOUT;
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
            .governance(config.governance);
        let retention = RetentionJob::new(pool, schema)?
            .grace(config.grace)
            .raw_retention(config.raw_retention)
            .rollup_retention(config.rollup_retention)
            .governance(config.governance);
        Ok(Self::spawn_jobs(rollup, retention, &config))
    }

    /// Starts the scheduler with jobs configured by the caller: their clocks
    /// are used for the runs, and the retention job's clock also places its
    /// daily slot (the rollup's cadence is a plain interval).
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

    /// Stops the scheduler and waits for its task. A job run in progress is
    /// cancelled: its open transaction rolls back (every rolled hour and
    /// every partition drop is its own transaction, so nothing is left
    /// half-written) and its connection is closed, which releases the
    /// advisory lock.
    pub async fn stop(self) {
        // notify_one stores a permit: a task between awaits still sees it.
        self.stop.notify_one();
        let _ = self.task.await;
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
        let result = tokio::select! {
            biased;
            () = stop.notified() => return,
            r = async {
                match job {
                    Job::Retention => retention.run_once().await.map(Some),
                    Job::Rollup => rollup.run_once().await.map(Some),
                    Job::Partitions => maintain_partitions_now(&rollup, &retention).await.map(|()| None),
                }
            } => r,
        };
        if job == Job::Retention {
            next_retention = tokio::time::Instant::now()
                + until_next_daily(retention.now(), cadence.retention_at);
        }
        match result {
            Ok(Some(report)) => {
                let _ = reports.send(Some(report));
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(
                error = %e,
                job = match job {
                    Job::Retention => "retention",
                    Job::Rollup => "rollup",
                    Job::Partitions => "partitions",
                },
                "metrics job failed; it runs again at its next slot"
            ),
        }
    }
}

/// Partition maintenance for the day of the retention job's clock, on a
/// connection of the rollup job's pool.
async fn maintain_partitions_now(
    rollup: &RollupJob,
    retention: &RetentionJob,
) -> Result<(), Error> {
    let mut client = conn::acquire(rollup.pool(), JOB_ACQUIRE_TIMEOUT).await?;
    let today = time::OffsetDateTime::from(retention.now()).date();
    let report = crate::jobs::partition::maintain_partitions(
        &mut client,
        rollup.schema_name().as_str(),
        today,
    )
    .await?;
    tracing::debug!(?report, "partition maintenance done");
    Ok(())
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
