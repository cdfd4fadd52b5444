//! The readiness gate: the PostgreSQL sink and query store, closed until the
//! background preparation ([`super::prepare`]) has migrated the schema and
//! created the partitions.
//!
//! While closed, a write fails as retryable ([`SinkError::unavailable`]), so
//! the collector keeps the batch and retries it with its backoff while new
//! records wait in its bounded queue; a query fails as
//! [`QueryError::Unavailable`], which the dashboard API answers with 503.
//! Neither touches the database: before the migrations ran, its tables may
//! not exist, and a COPY into a missing table would be a *rejected* batch
//! (dropped for good) instead of a delayed one.
//!
//! The gate only ever opens (a database lost later is the sink's own
//! retryable error), so the check is one atomic load.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use metrics_core::aggregate::TimeRange;
use metrics_core::query::{
    MetricsQuery, PerformanceQuery, PerformanceReport, QueryError, SlowRequests, SlowRequestsQuery,
    TimeSeries, TimeSeriesQuery, UsageQuery, UsageReport,
};
use metrics_core::{Batch, MetricsSink, SinkError, WriteAttempt, WriteSummary, async_trait};
use metrics_pg::{PgMetricsQuery, PgSink};

/// Why the gate refuses, in the sink's error and the logs.
pub(crate) const NOT_READY: &str = "store not ready: migrations pending";

/// Whether the store is prepared; shared by the gate and the preparation
/// task, which opens it once.
#[derive(Debug, Clone, Default)]
pub(crate) struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub(crate) fn is_ready(&self) -> bool {
        // Acquire pairs with `open`'s Release: whoever sees `true` also sees
        // the migrated schema's effects in the preparation task's order.
        self.0.load(Ordering::Acquire)
    }

    pub(crate) fn open(&self) {
        self.0.store(true, Ordering::Release);
    }
}

// ===== ReadySink =====

/// [`PgSink`] behind the gate.
#[derive(Debug)]
pub(crate) struct ReadySink {
    inner: PgSink,
    ready: Readiness,
}

impl ReadySink {
    pub(crate) fn new(inner: PgSink, ready: Readiness) -> Self {
        Self { inner, ready }
    }
}

#[async_trait]
impl MetricsSink for ReadySink {
    async fn write(&self, batch: &Batch, attempt: WriteAttempt) -> Result<WriteSummary, SinkError> {
        if !self.ready.is_ready() {
            // Nothing was sent: the retry of this batch is its first real
            // attempt, whatever its number says.
            return Err(SinkError::unavailable(NOT_READY));
        }
        self.inner.write(batch, attempt).await
    }

    fn max_write_duration(&self) -> Option<std::time::Duration> {
        self.inner.max_write_duration()
    }
}

// ===== ReadyQuery =====

/// [`PgMetricsQuery`] behind the gate.
#[derive(Debug)]
pub(crate) struct ReadyQuery {
    inner: PgMetricsQuery,
    ready: Readiness,
}

impl ReadyQuery {
    pub(crate) fn new(inner: PgMetricsQuery, ready: Readiness) -> Self {
        Self { inner, ready }
    }

    fn check(&self) -> Result<(), QueryError> {
        if self.ready.is_ready() {
            Ok(())
        } else {
            Err(QueryError::Unavailable(NOT_READY.into()))
        }
    }
}

#[async_trait]
impl MetricsQuery for ReadyQuery {
    async fn performance(&self, query: &PerformanceQuery) -> Result<PerformanceReport, QueryError> {
        self.check()?;
        self.inner.performance(query).await
    }

    async fn usage(&self, query: &UsageQuery) -> Result<UsageReport, QueryError> {
        self.check()?;
        self.inner.usage(query).await
    }

    async fn time_series(&self, query: &TimeSeriesQuery) -> Result<TimeSeries, QueryError> {
        self.check()?;
        self.inner.time_series(query).await
    }

    async fn user_event_count(&self, user_id: &str, range: &TimeRange) -> Result<u64, QueryError> {
        self.check()?;
        self.inner.user_event_count(user_id, range).await
    }

    async fn slowest_requests(
        &self,
        query: &SlowRequestsQuery,
    ) -> Result<SlowRequests, QueryError> {
        self.check()?;
        self.inner.slowest_requests(query).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use metrics_core::{BatchId, Method, Record, RequestRecord, Route};

    use super::*;

    /// A pool that never connects: nothing listens on port 1. The gate must
    /// answer before the pool is ever asked.
    fn unreachable_pool() -> metrics_pg::deadpool_postgres::Pool {
        metrics_pg::create_pool("postgres://nobody@127.0.0.1:1/none?connect_timeout=1", 1).unwrap()
    }

    #[tokio::test]
    async fn a_closed_gate_is_retryable_and_never_reaches_the_database() {
        let ready = Readiness::default();
        let pool = unreachable_pool();
        let sink = ReadySink::new(PgSink::new(pool.clone()), ready.clone());
        let mut batch = Batch::new();
        batch.push(Record::Request(RequestRecord::new(
            SystemTime::now(),
            Route::from_static("/a"),
            Method::GET,
            200,
            std::time::Duration::from_millis(1),
        )));
        let err = sink
            .write(&batch, WriteAttempt::first(BatchId::generate()))
            .await
            .unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert!(err.to_string().contains(NOT_READY), "{err}");
        assert_eq!(pool.status().size, 0, "no connection was attempted");

        let query = ReadyQuery::new(
            PgMetricsQuery::new(pool.clone(), metrics_pg::DEFAULT_SCHEMA).unwrap(),
            ready.clone(),
        );
        let range = TimeRange::preset(
            metrics_core::aggregate::Preset::Last24Hours,
            SystemTime::now(),
        );
        let err = query.user_event_count("ada", &range).await.unwrap_err();
        assert!(matches!(err, QueryError::Unavailable(_)), "{err}");
        assert_eq!(pool.status().size, 0);

        // Opened, the calls go through (and fail on the dead pool as the
        // sink's own retryable error, not the gate's).
        ready.open();
        let err = sink
            .write(&batch, WriteAttempt::first(BatchId::generate()))
            .await
            .unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert!(!err.to_string().contains(NOT_READY), "{err}");
    }
}
