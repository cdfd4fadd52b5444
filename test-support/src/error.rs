//! The harness's error type.

use std::{io, path::PathBuf, process::ExitStatus};

/// Why a throwaway PostgreSQL cluster could not be created, started, stopped or reached.
///
/// Every message names what is missing or what failed, so that a test run that cannot get a
/// database fails loudly and says why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `initdb` and `pg_ctl` were found neither on `PATH` nor in the usual install locations.
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl) not found; searched: {searched}. \
         Install PostgreSQL (Debian: `apt-get install -y postgresql`), put its bin directory \
         on PATH or in APP_METRICS_PG_BIN, or set DATABASE_URL to a running server"
    )]
    BinariesNotFound {
        /// The places that were looked at, in order.
        searched: String,
    },

    /// An I/O operation on the cluster's files or a child process failed.
    #[error("{context}: {source}")]
    Io {
        /// What the harness was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A helper command (`initdb`, `pg_ctl`, `useradd`, ...) exited unsuccessfully.
    #[error("`{command}` failed ({status}): {output}")]
    Command {
        /// The command line, for the reader to retry by hand.
        command: String,
        /// How it exited.
        status: ExitStatus,
        /// Its standard output and error, trimmed.
        output: String,
    },

    /// The server did not come up; the tail of its log says why.
    #[error("PostgreSQL did not start (data dir {data_dir}): {log_tail}")]
    Startup {
        /// The cluster's data directory.
        data_dir: PathBuf,
        /// The last lines of the server log.
        log_tail: String,
    },

    /// We run as root, so the cluster must run as another user, and none could be found or made.
    #[error("running as root and no unprivileged user to run PostgreSQL as: {0}")]
    NoUser(String),

    /// The server was started (or given) but a connection or statement failed.
    #[error("PostgreSQL at {url}: {source}")]
    Postgres {
        /// The connection string, without any password.
        url: String,
        /// The driver error.
        #[source]
        source: tokio_postgres::Error,
    },

    /// `DATABASE_URL` (or another given connection string) could not be parsed.
    #[error("invalid connection string {url:?}: {source}")]
    InvalidUrl {
        /// The string as given (any password redacted).
        url: String,
        /// The parser's error.
        #[source]
        source: tokio_postgres::Error,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}
