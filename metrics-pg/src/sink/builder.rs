//! [`PgSinkBuilder`]: the sink's settings, validated once in `build`.

use std::fmt;
use std::time::Duration;

use deadpool_postgres::Pool;

use super::{PgSink, Settings};
use crate::error::Error;
use crate::schema::SchemaName;

/// Builder of a [`PgSink`]; see [`PgSink::builder`].
pub struct PgSinkBuilder {
    pub(super) pool: Pool,
    pub(super) schema: String,
    pub(super) settings: Settings,
}

impl PgSinkBuilder {
    /// The schema holding the tables (default `app_metrics`).
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// How long a write waits for a pooled connection before failing with a
    /// retryable error (default 30 s).
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.settings.acquire_timeout = timeout;
        self
    }

    /// `statement_timeout` of the write transactions (default 30 s). The
    /// client also gives up 5 s after it, in case the server vanished.
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.settings.statement_timeout = timeout;
        self
    }

    /// The longest one write (one call of [`MetricsSink::write`]) may take,
    /// all its chunks, bisection rounds and commit resolutions together
    /// (default 60 s). Past it the sink stops, keeps what it learnt and
    /// fails with a retryable [`Error::WriteDeadline`]; the retry of the
    /// same batch goes on from there. [`MetricsSink::max_write_duration`]
    /// reports it (plus a second of slack), so the collector never gives up
    /// on a write before the sink does.
    ///
    /// [`MetricsSink::write`]: metrics_core::MetricsSink::write
    /// [`MetricsSink::max_write_duration`]: metrics_core::MetricsSink::max_write_duration
    pub fn write_deadline(mut self, deadline: Duration) -> Self {
        self.settings.write_deadline = deadline;
        self
    }

    /// How many COPY streams (connections) one large batch may use at once
    /// (default 2).
    pub fn max_concurrent_copies(mut self, n: usize) -> Self {
        self.settings.max_concurrent_copies = n;
        self
    }

    /// The smallest chunk worth a COPY stream of its own (default 500): a
    /// batch is split only into chunks at least this large.
    pub fn min_rows_per_copy(mut self, n: usize) -> Self {
        self.settings.min_rows_per_copy = n;
        self
    }

    /// Validates the settings and builds the sink.
    pub fn build(self) -> Result<PgSink, Error> {
        let schema = SchemaName::new(&self.schema)?;
        let s = &self.settings;
        if s.max_concurrent_copies == 0 {
            return Err(Error::InvalidSetting {
                setting: "max_concurrent_copies",
                reason: "must be at least 1",
            });
        }
        if s.min_rows_per_copy == 0 {
            return Err(Error::InvalidSetting {
                setting: "min_rows_per_copy",
                reason: "must be at least 1",
            });
        }
        if s.acquire_timeout.is_zero() {
            return Err(Error::InvalidSetting {
                setting: "acquire_timeout",
                reason: "must be greater than zero",
            });
        }
        if s.statement_timeout < Duration::from_millis(1) {
            return Err(Error::InvalidSetting {
                setting: "statement_timeout",
                reason: "must be at least 1 ms (0 would disable it)",
            });
        }
        if s.write_deadline.is_zero() {
            return Err(Error::InvalidSetting {
                setting: "write_deadline",
                reason: "must be greater than zero",
            });
        }
        Ok(PgSink::from_parts(self.pool, schema, self.settings))
    }
}

impl fmt::Debug for PgSinkBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgSinkBuilder")
            .field("schema", &self.schema)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}
