//! Preparing the store in the background: connect, migrate, create the
//! partitions, then open the [readiness gate](super::ready) and start the
//! scheduler. Retried with capped backoff until it succeeds or the app shuts
//! down, so an app restarted during a database outage starts, serves, and
//! picks the database up when it comes back (issue 13 F7).
//!
//! Every failure is logged: at `warn` when it is about reaching the database
//! (refused, reset, timed out, server starting: [`metrics_pg::Error::is_retryable`]),
//! at `error` otherwise (a migration failing with a real SQL error, a schema
//! migrated by a newer version, an edited migration): those need an operator,
//! but the app keeps serving meanwhile and the attempt is repeated, since a
//! fix (a grant, a restored migration) needs no restart. Success is logged at
//! `info`.

use std::sync::Arc;
use std::time::Duration;

use metrics_pg::deadpool_postgres::Pool;
use metrics_pg::{Scheduler, SchedulerConfig, SchedulerHandle};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::ready::Readiness;

/// The first retry's delay; each failure doubles it, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest delay between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long one attempt waits for a connection. A pool built from a URL
/// gives up sooner (its connect timeout); this bounds a pool of the app's
/// own without one. Migrations themselves are not bounded: on a large
/// database they may legitimately take minutes, under their advisory lock.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the preparation is, for `start()`'s first try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// Waiting for a connection (attempt `n`, from 1).
    Connecting(u32),
    /// Connected: migrating and creating partitions (attempt `n`).
    Migrating(u32),
    /// Attempt `n` failed; the next one comes after a backoff.
    Failed(u32),
    /// Done: the gate is open and the scheduler running.
    Ready,
}

/// The running preparation; [`stop`](Self::stop) ends it at shutdown.
#[derive(Debug)]
pub(crate) struct Preparation {
    stop: Arc<Notify>,
    task: JoinHandle<Option<SchedulerHandle>>,
    progress: watch::Receiver<Progress>,
}

impl Preparation {
    /// Starts preparing `schema` through `pool` on the current runtime.
    pub(crate) fn spawn(pool: Pool, schema: String, ready: Readiness) -> Self {
        let stop = Arc::new(Notify::new());
        let (tx, progress) = watch::channel(Progress::Connecting(1));
        let task = tokio::spawn(run(pool, schema, ready, tx, Arc::clone(&stop)));
        Self {
            stop,
            task,
            progress,
        }
    }

    /// Waits for the first attempt, within bounds: at most `connect` while
    /// it has no connection (the database may be down, or a network may
    /// swallow packets), and at most `total` in all once it has one (the
    /// migrations of a reachable database, as `start()` always waited for).
    /// Returns where the preparation is.
    pub(crate) async fn first_try(&self, connect: Duration, total: Duration) -> Progress {
        let mut progress = self.progress.clone();
        let connected = progress.wait_for(|p| !matches!(p, Progress::Connecting(_)));
        if tokio::time::timeout(connect, connected).await.is_err() {
            return *self.progress.borrow();
        }
        let done = progress.wait_for(|p| matches!(p, Progress::Failed(_) | Progress::Ready));
        let _in_time = tokio::time::timeout(total.saturating_sub(connect), done).await;
        *self.progress.borrow()
    }

    /// Stops the preparation (an attempt in progress is cancelled, which
    /// closes its connection and rolls its transaction back) and returns the
    /// scheduler if it had started.
    pub(crate) async fn stop(self) -> Option<SchedulerHandle> {
        // notify_one stores a permit: a task between awaits still sees it.
        self.stop.notify_one();
        self.task.await.ok().flatten()
    }
}

async fn run(
    pool: Pool,
    schema: String,
    ready: Readiness,
    progress: watch::Sender<Progress>,
    stop: Arc<Notify>,
) -> Option<SchedulerHandle> {
    let mut delay = FIRST_BACKOFF;
    let mut attempt = 0_u32;
    loop {
        attempt = attempt.saturating_add(1);
        progress.send_replace(Progress::Connecting(attempt));
        let result = tokio::select! {
            biased;
            () = stop.notified() => return None,
            r = prepare_once(&pool, &schema, || {
                progress.send_replace(Progress::Migrating(attempt));
            }) => r,
        };
        match result {
            Ok(()) => {
                ready.open();
                tracing::info!(
                    schema,
                    attempt,
                    "metrics store ready: migrations applied and partitions created"
                );
                let scheduler = start_scheduler(pool, &schema);
                progress.send_replace(Progress::Ready);
                return scheduler;
            }
            Err(error) => {
                progress.send_replace(Progress::Failed(attempt));
                if error.is_retryable() {
                    tracing::warn!(
                        %error, schema, attempt, retry_in = ?delay,
                        "metrics store not ready (database unreachable): records are buffered, the dashboard API answers 503"
                    );
                } else {
                    tracing::error!(
                        %error, schema, attempt, retry_in = ?delay,
                        "metrics store could not be prepared: records are buffered, the dashboard API answers 503 until this is fixed"
                    );
                }
            }
        }
        tokio::select! {
            biased;
            () = stop.notified() => return None,
            () = tokio::time::sleep(delay) => {}
        }
        delay = next_delay(delay);
    }
}

/// One attempt: a connection, the migrations, today's partitions (and the
/// days around it). `connected` runs once the connection is there.
async fn prepare_once(
    pool: &Pool,
    schema: &str,
    connected: impl FnOnce(),
) -> Result<(), metrics_pg::Error> {
    let mut client = tokio::time::timeout(ACQUIRE_TIMEOUT, pool.get())
        .await
        .map_err(|_| metrics_pg::Error::PoolTimeout(ACQUIRE_TIMEOUT))?
        .map_err(metrics_pg::Error::Pool)?;
    connected();
    let _report = metrics_pg::migrate(&mut client, schema).await?;
    let today = time::OffsetDateTime::now_utc().date();
    let _report = metrics_pg::maintain_partitions(&mut client, schema, today).await?;
    Ok(())
}

/// Rollups every minute, partitions hourly, retention daily at 02:00 UTC;
/// an advisory lock makes sure that with N app instances each job runs
/// once. Only after the migrations: its jobs need the tables.
fn start_scheduler(pool: Pool, schema: &str) -> Option<SchedulerHandle> {
    match Scheduler::spawn(pool, schema, SchedulerConfig::default()) {
        Ok(scheduler) => Some(scheduler),
        Err(error) => {
            // Its settings were checked by `start()`: not expected.
            tracing::error!(%error, schema, "metrics scheduler could not start: no rollups or retention");
            None
        }
    }
}

/// The delay after `delay`: doubled, capped at [`MAX_BACKOFF`]. No jitter:
/// one app has one preparation, and several apps restarted at once are
/// spread by their own start times.
fn next_delay(delay: Duration) -> Duration {
    delay.saturating_mul(2).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_to_thirty() {
        let mut d = FIRST_BACKOFF;
        let mut seen = vec![d];
        for _ in 0..7 {
            d = next_delay(d);
            seen.push(d);
        }
        let secs: Vec<u64> = seen.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    /// Nothing listens on port 1: every attempt is refused at once.
    fn unreachable_pool() -> Pool {
        metrics_pg::create_pool("postgres://nobody@127.0.0.1:1/none?connect_timeout=1", 1).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreachable_database_is_retried_with_backoff_until_stopped() {
        let ready = Readiness::default();
        let prep = Preparation::spawn(unreachable_pool(), "app_metrics".into(), ready.clone());
        // Paused time: the first try's bounds pass only as the runtime idles.
        let p = prep
            .first_try(Duration::from_secs(2), Duration::from_secs(30))
            .await;
        assert!(
            matches!(p, Progress::Failed(1) | Progress::Connecting(_)),
            "{p:?}"
        );
        let mut progress = prep.progress.clone();
        // The next attempts come, each failing, the gate staying closed.
        progress
            .wait_for(|p| matches!(p, Progress::Failed(n) if *n >= 3))
            .await
            .unwrap();
        assert!(!ready.is_ready());
        // Stopping ends it, even in the middle of a backoff.
        assert!(prep.stop().await.is_none());
        assert!(!ready.is_ready());
    }
}
