//! The advisory lock that makes N instances run each job once, and how long
//! a job waits for a connection.

use std::fmt;
use std::time::Duration;

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
