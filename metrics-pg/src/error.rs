//! The error type of `metrics-pg`.

use std::time::Duration;

use tokio_postgres::error::SqlState;

/// Everything that can go wrong in `metrics-pg`: migrations, partition
/// maintenance, building a [`PgSink`](crate::PgSink) and writing batches.
///
/// Callers decide what to do with the predicates rather than by matching
/// foreign errors: [`Error::is_retryable`] (the database may accept the same
/// work later) and [`Error::is_data_error`] (these rows will never be
/// accepted). The underlying `tokio_postgres::Error` stays reachable through
/// [`std::error::Error::source`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// PostgreSQL (or the connection to it) failed while doing `context`.
    #[error("PostgreSQL error while {context}: {}", describe(source))]
    Db {
        /// What metrics-pg was doing, for the reader of the log.
        context: &'static str,
        /// The driver's error (carries the SQLSTATE when the server sent one).
        #[source]
        source: tokio_postgres::Error,
    },
    /// No pooled connection became available in time. The database may be
    /// down or every connection busy; raise the pool size or the acquire
    /// timeout if this happens while the database is healthy.
    #[error("no PostgreSQL connection available within {0:?} (database down or pool exhausted)")]
    PoolTimeout(Duration),
    /// The pool could not hand out a connection.
    #[error("could not get a PostgreSQL connection from the pool: {0}")]
    Pool(#[source] deadpool_postgres::PoolError),
    /// A statement did not finish within the client-side deadline (the
    /// statement timeout plus a margin); the connection was discarded.
    #[error("PostgreSQL did not answer within {0:?}; the connection was discarded")]
    Timeout(Duration),
    /// A write of the [`PgSink`](crate::PgSink) did not finish within its
    /// write deadline. What it stored is remembered: the retry of the same
    /// batch writes only the rest.
    #[error(
        "the write did not finish within the sink's write deadline of {0:?}; the retry of this batch goes on from where it stopped"
    )]
    WriteDeadline(Duration),
    /// A `COMMIT` was sent and its answer lost, and the server cannot tell
    /// yet whether transaction `xid` committed (it is still in progress, or
    /// the server cannot be asked). The retry of the batch asks again before
    /// writing anything, so the chunk is stored once either way.
    #[error(
        "the outcome of transaction {xid} is not known yet (its COMMIT was sent but not answered); the retry resolves it before writing"
    )]
    CommitInDoubt {
        /// The transaction's `txid_current()`.
        xid: i64,
    },
    /// The schema name cannot be used (it must be a plain lower-case SQL
    /// identifier so it never needs quoting tricks).
    #[error(
        "invalid schema name {0:?}: use 1-63 characters of a-z, 0-9 and _, not starting with a digit"
    )]
    InvalidSchemaName(String),
    /// A migration that was already applied has been edited since: its
    /// checksum no longer matches the one recorded when it ran.
    #[error(
        "migration {version} ({name}) was changed after it was applied (recorded checksum {recorded}, embedded {embedded}); restore the original SQL and add a new migration instead"
    )]
    ChecksumMismatch {
        /// Version of the edited migration.
        version: i32,
        /// Its name.
        name: String,
        /// Checksum recorded in the bookkeeping table.
        recorded: String,
        /// Checksum of the SQL embedded in this build.
        embedded: String,
    },
    /// The database has a migration this build does not know: it was
    /// migrated by a newer version of metrics-pg.
    #[error(
        "the database schema is at migration {version}, newer than this build of metrics-pg knows ({latest}); upgrade metrics-pg or migrate down with the newer version"
    )]
    UnknownMigration {
        /// The unknown version found in the bookkeeping table.
        version: i32,
        /// The newest version this build embeds.
        latest: i32,
    },
    /// A builder setting is out of range.
    #[error("invalid metrics-pg setting `{setting}`: {reason}")]
    InvalidSetting {
        /// The builder method concerned.
        setting: &'static str,
        /// What is wrong and what to do.
        reason: &'static str,
    },
    /// The connection string could not be parsed.
    #[error("invalid PostgreSQL connection string: {0}")]
    InvalidUrl(#[source] tokio_postgres::Error),
    /// The connection pool could not be created.
    #[error("could not create the PostgreSQL connection pool: {0}")]
    CreatePool(#[source] deadpool_postgres::BuildError),
    /// A binary `COPY` stream from the server did not have the shape the
    /// rollup asked for (a server or proxy bug, or an incompatible server).
    #[error("unexpected binary COPY data while {context}: {reason}")]
    CopyFormat {
        /// What metrics-pg was reading.
        context: &'static str,
        /// What was wrong.
        reason: &'static str,
    },
    /// PostgreSQL answered a statement with something other than what it
    /// asked for (a server or proxy bug, or an incompatible server).
    #[error("unexpected answer from PostgreSQL while {context}: {reason}")]
    UnexpectedAnswer {
        /// What metrics-pg was doing.
        context: &'static str,
        /// What was wrong.
        reason: &'static str,
    },
    /// A stored rollup row could not be read back (its sketch bytes or its
    /// `aggregated_values` are not what metrics-pg writes). Re-rolling the
    /// hour rewrites it while its raw rows exist.
    #[error(
        "rollup row {key} in {table} cannot be read: {reason}; re-run the rollup for that hour or delete the row"
    )]
    CorruptRollup {
        /// The table holding the row.
        table: &'static str,
        /// The row's key, for the reader of the log.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl Error {
    pub(crate) fn db(context: &'static str, source: tokio_postgres::Error) -> Self {
        Self::Db { context, source }
    }

    /// Whether the same work may succeed later: the connection was lost or
    /// refused, the server is shutting down or starting, a serialization
    /// failure or deadlock, too many connections, or a timeout.
    ///
    /// ```
    /// use std::time::Duration;
    /// use metrics_pg::Error;
    /// assert!(Error::PoolTimeout(Duration::from_secs(30)).is_retryable());
    /// assert!(!Error::InvalidSchemaName("A-B".into()).is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Db { source, .. } => pg_error_is_retryable(source),
            Self::PoolTimeout(_)
            | Self::Timeout(_)
            | Self::WriteDeadline(_)
            | Self::CommitInDoubt { .. } => true,
            Self::Pool(e) => pool_error_is_retryable(e),
            _ => false,
        }
    }

    /// Whether this is a timeout: no pooled connection in time, the client
    /// deadline, the sink's write deadline, or the server's
    /// `statement_timeout` / `lock_timeout` (SQLSTATE 57014, which a cancel
    /// request also gives, and 55P03).
    ///
    /// ```
    /// use std::time::Duration;
    /// use metrics_pg::Error;
    /// assert!(Error::PoolTimeout(Duration::from_secs(1)).is_timeout());
    /// assert!(!Error::InvalidSchemaName("A-B".into()).is_timeout());
    /// ```
    pub fn is_timeout(&self) -> bool {
        match self {
            Self::PoolTimeout(_) | Self::Timeout(_) | Self::WriteDeadline(_) => true,
            Self::Db { source, .. } => source.code().is_some_and(|c| {
                *c == SqlState::QUERY_CANCELED || *c == SqlState::LOCK_NOT_AVAILABLE
            }),
            _ => false,
        }
    }

    /// Whether the server refused the *data* (SQLSTATE class 22, data
    /// exception, or 23, integrity constraint violation): writing the same
    /// rows again would fail again, so the sink isolates them instead.
    pub fn is_data_error(&self) -> bool {
        match self {
            Self::Db { source, .. } => pg_error_is_data_error(source),
            _ => false,
        }
    }

    /// The SQLSTATE the server sent, if any.
    pub fn code(&self) -> Option<&SqlState> {
        match self {
            Self::Db { source, .. } => source.code(),
            Self::Pool(deadpool_postgres::PoolError::Backend(e)) => e.code(),
            _ => None,
        }
    }
}

/// The server's message and SQLSTATE when there is one (the driver's own
/// `Display` says only "db error" then), else the driver's text.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({}): {}", db.severity(), db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// SQLSTATEs after which the same statement may succeed later.
fn code_is_retryable(code: &SqlState) -> bool {
    let c = code.code();
    // Class 08: connection exception; 57P01..57P03: admin/crash shutdown,
    // cannot connect now (starting up or shutting down); 53300: too many
    // connections; 53xxx generally (disk full, out of memory) is an operator
    // problem that may clear; 40001/40P01: serialization failure, deadlock.
    c.starts_with("08")
        || c.starts_with("53")
        || *code == SqlState::ADMIN_SHUTDOWN
        || *code == SqlState::CRASH_SHUTDOWN
        || *code == SqlState::CANNOT_CONNECT_NOW
        || *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
        // A statement timeout or a cancel, a lock timeout: the server was
        // slow or busy, not the data wrong.
        || *code == SqlState::QUERY_CANCELED
        || *code == SqlState::LOCK_NOT_AVAILABLE
}

pub(crate) fn pg_error_is_retryable(e: &tokio_postgres::Error) -> bool {
    if let Some(code) = e.code() {
        return code_is_retryable(code);
    }
    // Without a SQLSTATE the failure is on the wire: the connection closed, an
    // I/O error, a connect failure or a client-side timeout. Encoding errors
    // (a value that cannot be serialised) carry no I/O source and are not
    // worth retrying.
    e.is_closed() || has_io_source(e)
}

fn has_io_source(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = e.source();
    while let Some(err) = cur {
        if err.is::<std::io::Error>() {
            return true;
        }
        cur = err.source();
    }
    false
}

pub(crate) fn pg_error_is_data_error(e: &tokio_postgres::Error) -> bool {
    e.code()
        .is_some_and(|c| c.code().starts_with("22") || c.code().starts_with("23"))
}

fn pool_error_is_retryable(e: &deadpool_postgres::PoolError) -> bool {
    use deadpool_postgres::PoolError;
    match e {
        PoolError::Timeout(_) => true,
        PoolError::Backend(e) => pg_error_is_retryable(e),
        // A post-create hook failing is most likely the database refusing a
        // setting while it starts; a closed pool or a missing runtime is not.
        PoolError::PostCreateHook(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_codes() {
        for code in [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::CONNECTION_FAILURE,
            SqlState::QUERY_CANCELED,
        ] {
            assert!(code_is_retryable(&code), "{code:?}");
        }
        for code in [
            SqlState::CHECK_VIOLATION,
            SqlState::UNIQUE_VIOLATION,
            SqlState::UNDEFINED_TABLE,
            SqlState::INSUFFICIENT_PRIVILEGE,
            SqlState::INVALID_TEXT_REPRESENTATION,
        ] {
            assert!(!code_is_retryable(&code), "{code:?}");
        }
    }

    #[test]
    fn non_db_variants() {
        assert!(Error::Timeout(Duration::from_secs(1)).is_retryable());
        assert!(Error::PoolTimeout(Duration::from_secs(1)).is_retryable());
        assert!(
            !Error::InvalidSetting {
                setting: "x",
                reason: "y"
            }
            .is_retryable()
        );
        assert!(!Error::PoolTimeout(Duration::from_secs(1)).is_data_error());
        let deadline = Error::WriteDeadline(Duration::from_secs(60));
        assert!(deadline.is_retryable() && deadline.is_timeout());
        let in_doubt = Error::CommitInDoubt { xid: 7 };
        assert!(in_doubt.is_retryable() && !in_doubt.is_timeout());
        assert!(in_doubt.to_string().contains("retry resolves it"));
        assert!(code_is_retryable(&SqlState::LOCK_NOT_AVAILABLE));
        let e = Error::ChecksumMismatch {
            version: 1,
            name: "raw_tables".into(),
            recorded: "a".into(),
            embedded: "b".into(),
        };
        assert!(!e.is_retryable());
        assert!(e.to_string().contains("add a new migration"));
    }
}
