//! What the rollup and retention jobs share: their report, the clock they read,
//! and the advisory lock that makes N instances run each job once.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deadpool_postgres::{Object, Pool};

use crate::error::Error;
use crate::schema::SchemaName;

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

/// Seconds since the Unix epoch (negative before it).
pub(crate) fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => {
            let d = e.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            // -0.5 s is in the hour/second before the epoch.
            if d.subsec_nanos() > 0 {
                -secs - 1
            } else {
                -secs
            }
        }
    }
}

/// The instant `secs` seconds after the Unix epoch.
pub(crate) fn from_unix_secs(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
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
        let client = pool.get().await.map_err(Error::Pool)?;
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
            drop(Object::take(client));
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
    fn unix_seconds_round_trip() {
        for s in [-7201, -3600, -1, 0, 1, 3599, 1_767_225_600] {
            assert_eq!(unix_secs(from_unix_secs(s)), s);
        }
        assert_eq!(unix_secs(UNIX_EPOCH - Duration::from_millis(500)), -1);
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
