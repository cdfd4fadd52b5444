//! The harness's one error type: what stopped a scenario from running at all.
//!
//! A scenario that runs and finds a defect is not an error: it prints
//! `verdict=FAIL`. An [`Error`] means the harness could not do what the
//! scenario needs (no PostgreSQL binaries, the app binary missing or not
//! starting, a database query failing), and the scenario is reported as
//! failed with the error's message.

use std::io;

/// Why the harness could not run (part of) a scenario.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum Error {
    /// The throwaway PostgreSQL cluster could not be created, started or stopped.
    #[error("PostgreSQL cluster: {0}")]
    Cluster(#[from] test_support::Error),
    /// A query of the harness itself failed (not one of the app's).
    #[error("{context}: {source}")]
    Db {
        /// What the harness was doing.
        context: &'static str,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A metrics-pg job the harness runs itself (migration, retention) failed.
    #[error("{context}: {source}")]
    Job {
        /// What the harness was doing.
        context: &'static str,
        /// The job's error.
        #[source]
        source: metrics_pg::Error,
    },
    /// The app process did not start or did not print its listening line.
    #[error("app {name}: {message}")]
    App {
        /// The app's name in the scenario (`app`, `app-2`, ...).
        name: String,
        /// What went wrong, with the tail of its output.
        message: String,
    },
    /// A file or socket operation of the harness failed.
    #[error("{context}: {source}")]
    Io {
        /// What the harness was doing.
        context: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The scenario's setup did not reach the state it needs (for example no
    /// `COPY` backend appeared to kill).
    #[error("{0}")]
    Setup(String),
}

impl Error {
    /// An [`Error::Io`] with `context`.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// A closure for `map_err` that wraps a driver error with `context`.
    pub(crate) fn db(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Self {
        move |source| Self::Db { context, source }
    }
}
