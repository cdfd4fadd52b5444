//! The advisory lock that makes N instances run each job once, and the
//! limits every job works under: how long it waits for a connection, and
//! how long any one of its statements may run.

use std::fmt;
use std::time::Duration;

use deadpool_postgres::{Object, Pool};

use crate::conn;
use crate::error::Error;
use crate::schema::SchemaName;

/// The limits of a job's work: no wait for a connection, no statement and no
/// round trip is unbounded, so a stalled pool or server fails the run with a
/// timeout ([`Error::is_timeout`]) instead of hanging it (and whoever waits
/// for it, such as [`SchedulerHandle::stop`](crate::SchedulerHandle::stop)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct JobLimits {
    /// How long a job waits for a pooled connection.
    pub(crate) acquire: Duration,
    /// `statement_timeout` of every job statement; the client gives up
    /// [`CLIENT_DEADLINE_MARGIN`](conn::CLIENT_DEADLINE_MARGIN) later.
    pub(crate) statement: Duration,
}

impl JobLimits {
    /// A minute for a connection: jobs are never in a hurry, but a pool
    /// that frees none in a minute is stalled, not busy.
    pub(crate) const DEFAULT_ACQUIRE: Duration = Duration::from_secs(60);
    /// Ten minutes per statement: an hour of a busy service streams in
    /// seconds, but a stuck statement must not hold the job's lock for ever.
    pub(crate) const DEFAULT_STATEMENT: Duration = Duration::from_secs(600);

    /// A pooled connection within the acquire limit.
    pub(crate) async fn acquire(&self, pool: &Pool) -> Result<Object, Error> {
        conn::acquire(pool, self.acquire).await
    }

    /// The `SET LOCAL statement_timeout` of a job transaction.
    pub(crate) fn set_local(&self) -> String {
        conn::set_statement_timeout(self.statement)
    }

    /// Runs `work` under the client-side deadline of one statement.
    pub(crate) async fn within<T>(
        &self,
        work: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        conn::within_deadline(self.statement, work).await
    }
}

impl Default for JobLimits {
    fn default() -> Self {
        Self {
            acquire: Self::DEFAULT_ACQUIRE,
            statement: Self::DEFAULT_STATEMENT,
        }
    }
}

/// First key of the rollup job's advisory lock ("amRU"); the second is
/// `hashtext(schema)`, so instances using different schemas never contend.
pub(crate) const ROLLUP_LOCK_CLASS: i32 = 0x616D_5255;
/// First key of the retention job's advisory lock ("amRT").
pub(crate) const RETENTION_LOCK_CLASS: i32 = 0x616D_5254;

/// A session-level advisory lock held on a pooled connection.
///
/// Session locks outlive transactions, which lets a job commit one hour at a
/// time while keeping other instances out. The flip side: a connection must
/// never go back to the pool still holding the lock. [`JobLock::release`]
/// unlocks; if the guard is dropped instead (the job's future was cancelled,
/// or unlocking failed), the connection is detached from the pool and closed,
/// which makes the server release the lock and roll back any open
/// transaction.
///
/// The locked session runs with `statement_timeout` set to the job's limit
/// (a session setting, reset before the connection goes back to the pool),
/// so every statement on it is bounded on the server too.
pub(crate) struct JobLock {
    client: Option<Object>,
    limits: JobLimits,
}

impl JobLock {
    /// Tries to take the `(class, hashtext(schema))` lock without waiting;
    /// `None` when another session holds it.
    pub(crate) async fn try_acquire(
        pool: &Pool,
        limits: &JobLimits,
        class: i32,
        schema: &SchemaName,
    ) -> Result<Option<Self>, Error> {
        let client = limits.acquire(pool).await?;
        let mut guard = Self {
            client: Some(client),
            limits: *limits,
        };
        let session_timeout = format!(
            "SET statement_timeout = {}",
            limits.statement.as_millis().max(1)
        );
        let session = guard.client();
        let got: bool = limits
            .within(async {
                session
                    .batch_execute(&session_timeout)
                    .await
                    .map_err(|e| Error::db("setting a job's statement_timeout", e))?;
                let row = session
                    .query_one(
                        "SELECT pg_try_advisory_lock($1, hashtext($2))",
                        &[&class, &schema.as_str()],
                    )
                    .await
                    .map_err(|e| Error::db("taking a job's advisory lock", e))?;
                Ok(row.get(0))
            })
            .await?;
        if got {
            return Ok(Some(guard));
        }
        // Nothing is held: hand the connection back, as it was.
        let session = guard.client();
        limits
            .within(async {
                session
                    .batch_execute("RESET statement_timeout")
                    .await
                    .map_err(|e| Error::db("resetting a job's statement_timeout", e))
            })
            .await?;
        guard.client = None;
        Ok(None)
    }

    /// Takes a further lock on the same session, waiting for it (at most
    /// the statement limit).
    pub(crate) async fn also_wait_for(
        &mut self,
        class: i32,
        schema: &SchemaName,
    ) -> Result<(), Error> {
        let limits = self.limits;
        let session = self.client();
        limits
            .within(async {
                session
                    .execute(
                        "SELECT pg_advisory_lock($1, hashtext($2))",
                        &[&class, &schema.as_str()],
                    )
                    .await
                    .map_err(|e| Error::db("waiting for a job's advisory lock", e))
            })
            .await
            .map(drop)
    }

    /// The locked session.
    pub(crate) fn client(&mut self) -> &mut Object {
        self.client
            .as_mut()
            .unwrap_or_else(|| unreachable!("JobLock used after release"))
    }

    /// Releases every advisory lock of the session, resets its statement
    /// timeout and returns the connection to the pool.
    pub(crate) async fn release(mut self) -> Result<(), Error> {
        let limits = self.limits;
        let session = self.client();
        let result = limits
            .within(async {
                session
                    .batch_execute("SELECT pg_advisory_unlock_all(); RESET statement_timeout")
                    .await
                    .map_err(|e| Error::db("releasing a job's advisory lock", e))
            })
            .await;
        if result.is_ok() {
            self.client = None; // back to the pool, unlocked
        }
        // On error, Drop closes the connection, which releases the locks
        // server-side.
        result
    }
}

impl Drop for JobLock {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Dropped while held: the run was cancelled or failed. Its
            // session may be waiting in a statement, deaf to the close.
            conn::cancel_running(&client);
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
