//! What the rollup and retention jobs share: their report, the clock they read,
//! and the advisory lock that makes N instances run each job once.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use deadpool_postgres::{Object, Pool};

use crate::conn;
use crate::error::Error;
use crate::schema::SchemaName;

/// How long a job waits for a pooled connection (as long as its
/// statements may run: a job is never in a hurry, but must not wait for
/// ever on a pool that never frees one).
pub(crate) const JOB_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(600);

/// First key of the rollup job's advisory lock ("amRU"); the second is
/// `hashtext(schema)`, so instances using different schemas never contend.
pub(crate) const ROLLUP_LOCK_CLASS: i32 = 0x616D_5255;
/// First key of the retention job's advisory lock ("amRT").
pub(crate) const RETENTION_LOCK_CLASS: i32 = 0x616D_5254;

/// Where the jobs read the current time. The default is the system clock;
/// tests (and backfills) use a fixed instant so nothing waits on real time.
///
/// ```
/// use std::time::{Duration, SystemTime, UNIX_EPOCH};
/// use metrics_pg::Clock;
///
/// let fixed = Clock::fixed(UNIX_EPOCH + Duration::from_secs(3600));
/// assert_eq!(fixed.now(), UNIX_EPOCH + Duration::from_secs(3600));
/// assert!(Clock::system().now() > SystemTime::UNIX_EPOCH);
/// ```
#[derive(Clone)]
pub struct Clock(ClockInner);

#[derive(Clone)]
enum ClockInner {
    System,
    Fixed(SystemTime),
    Custom(Arc<dyn Fn() -> SystemTime + Send + Sync>),
}

impl Clock {
    /// The system clock (`SystemTime::now`).
    pub fn system() -> Self {
        Self(ClockInner::System)
    }

    /// Always `at`.
    pub fn fixed(at: SystemTime) -> Self {
        Self(ClockInner::Fixed(at))
    }

    /// Whatever `f` returns.
    pub fn from_fn(f: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        Self(ClockInner::Custom(Arc::new(f)))
    }

    /// The current time according to this clock.
    pub fn now(&self) -> SystemTime {
        match &self.0 {
            ClockInner::System => SystemTime::now(),
            ClockInner::Fixed(t) => *t,
            ClockInner::Custom(f) => f(),
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            ClockInner::System => f.write_str("Clock::system()"),
            ClockInner::Fixed(t) => f.debug_tuple("Clock::fixed").field(t).finish(),
            ClockInner::Custom(_) => f.write_str("Clock::from_fn(..)"),
        }
    }
}

/// What one run of a job did. Printed by `metrics-aggregate` as its summary
/// line (the `Display` form).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobReport {
    /// `"rollup"` or `"retention"`.
    pub job: &'static str,
    /// Another instance held the job's advisory lock, so this run did nothing.
    pub skipped: bool,
    /// Hours with raw rows rolled up (or rolled again after late rows), both
    /// raw tables.
    pub hours_rolled: u64,
    /// Raw rows read by those rollups.
    pub raw_rows_rolled: u64,
    /// `aggregated_metrics` rows written (inserted or updated).
    pub rollup_rows_written: u64,
    /// Raw day partitions dropped by retention, as `table_pYYYYMMDD`.
    pub partitions_dropped: Vec<String>,
    /// Raw rows removed with those partitions.
    pub raw_rows_dropped: u64,
    /// Rollup rows deleted because they were older than the rollup horizon.
    pub rollup_rows_deleted: u64,
    /// Estimated raw rows after the run (the governance count), when checked.
    pub raw_rows_estimate: Option<u64>,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl fmt::Display for JobReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.skipped {
            return write!(
                f,
                "{}: skipped (another instance holds the job's advisory lock)",
                self.job
            );
        }
        write!(
            f,
            "{}: {} hours rolled ({} raw rows -> {} rollup rows)",
            self.job, self.hours_rolled, self.raw_rows_rolled, self.rollup_rows_written
        )?;
        if self.job == "retention" {
            write!(
                f,
                ", {} partitions dropped ({} raw rows), {} rollup rows deleted",
                self.partitions_dropped.len(),
                self.raw_rows_dropped,
                self.rollup_rows_deleted
            )?;
        }
        if let Some(n) = self.raw_rows_estimate {
            write!(f, ", ~{} raw rows stored", thousands(n))?;
        }
        write!(f, " in {:.2}s", self.elapsed.as_secs_f64())
    }
}

/// `1234567` → `"1,234,567"`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A session-level advisory lock held on a pooled connection.
///
/// Session locks outlive transactions, which lets a job commit one hour at a
/// time while keeping other instances out. The flip side: a connection must
/// never go back to the pool still holding the lock. [`JobLock::release`]
/// unlocks; if the guard is dropped instead (the job's future was cancelled,
/// or unlocking failed), the connection is detached from the pool and closed,
/// which makes the server release the lock and roll back any open
/// transaction.
pub(crate) struct JobLock {
    client: Option<Object>,
}

impl JobLock {
    /// Tries to take the `(class, hashtext(schema))` lock without waiting;
    /// `None` when another session holds it.
    pub(crate) async fn try_acquire(
        pool: &Pool,
        class: i32,
        schema: &SchemaName,
    ) -> Result<Option<Self>, Error> {
        let client = conn::acquire(pool, JOB_ACQUIRE_TIMEOUT).await?;
        let mut guard = Self {
            client: Some(client),
        };
        let got: bool = guard
            .client()
            .query_one(
                "SELECT pg_try_advisory_lock($1, hashtext($2))",
                &[&class, &schema.as_str()],
            )
            .await
            .map_err(|e| Error::db("taking a job's advisory lock", e))?
            .get(0);
        if got {
            Ok(Some(guard))
        } else {
            // Nothing is held: hand the connection back normally.
            guard.client = None;
            Ok(None)
        }
    }

    /// Takes a further lock on the same session, waiting for it.
    pub(crate) async fn also_wait_for(
        &mut self,
        class: i32,
        schema: &SchemaName,
    ) -> Result<(), Error> {
        let _ = self
            .client()
            .execute(
                "SELECT pg_advisory_lock($1, hashtext($2))",
                &[&class, &schema.as_str()],
            )
            .await
            .map_err(|e| Error::db("waiting for a job's advisory lock", e))?;
        Ok(())
    }

    /// The locked session.
    pub(crate) fn client(&mut self) -> &mut Object {
        self.client
            .as_mut()
            .unwrap_or_else(|| unreachable!("JobLock used after release"))
    }

    /// Releases every advisory lock of the session and returns the
    /// connection to the pool.
    pub(crate) async fn release(mut self) -> Result<(), Error> {
        let result = self
            .client()
            .execute("SELECT pg_advisory_unlock_all()", &[])
            .await;
        match result {
            Ok(_) => {
                self.client = None; // back to the pool, unlocked
                Ok(())
            }
            // Drop closes the connection, which releases the locks server-side.
            Err(e) => Err(Error::db("releasing a job's advisory lock", e)),
        }
    }
}

impl Drop for JobLock {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            conn::discard(client);
        }
    }
}

impl fmt::Debug for JobLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobLock")
            .field("held", &self.client.is_some())
            .finish()
    }
}

/// A spawned task that is aborted when its handle is dropped: a cancelled
/// run (the scheduler stopping) must not leave hour tasks running on. The
/// aborted task drops its open transaction, which rolls back.
#[derive(Debug)]
pub(crate) struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T: Send + 'static> AbortOnDrop<T> {
    pub(crate) fn spawn(f: impl Future<Output = T> + Send + 'static) -> Self {
        Self(tokio::spawn(f))
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for AbortOnDrop<T> {
    type Output = T;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<T> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|done| match done {
                Ok(v) => v,
                // A panic in the task is a panic of the run, as before the spawn.
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                // Only our Drop aborts the task, and then nobody polls it.
                Err(e) => unreachable!("rollup task cancelled while awaited: {e}"),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(800_000), "800,000");
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(thousands(12_345_678), "12,345,678");
    }

    #[test]
    fn report_line() {
        let r = JobReport {
            job: "rollup",
            hours_rolled: 2,
            raw_rows_rolled: 1_500,
            rollup_rows_written: 8,
            raw_rows_estimate: Some(1_234_567),
            elapsed: Duration::from_millis(250),
            ..JobReport::default()
        };
        assert_eq!(
            r.to_string(),
            "rollup: 2 hours rolled (1500 raw rows -> 8 rollup rows), ~1,234,567 raw rows stored in 0.25s"
        );
        let skipped = JobReport {
            job: "retention",
            skipped: true,
            ..JobReport::default()
        };
        assert!(skipped.to_string().contains("skipped"));
    }
}
