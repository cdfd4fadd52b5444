//! Where records go, chosen first: [`AppMetrics::builder`](crate::AppMetrics::builder)
//! takes a [`Store`], so an app cannot start without one, and each store's
//! own settings (the PostgreSQL schema, the memory capacity, a custom sink's
//! query side) live on that store's type, where they cannot be given to
//! another.
//!
//! [`AppMetrics::memory`](crate::AppMetrics::memory),
//! [`AppMetrics::postgres`](crate::AppMetrics::postgres) and
//! [`AppMetrics::with_sink`](crate::AppMetrics::with_sink) are the shortcuts
//! with defaults. An app that picks its store at run time builds a `Store`:
//!
//! ```
//! use app_metrics::AppMetrics;
//! use app_metrics::store::{Memory, Postgres, Store};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), app_metrics::Error> {
//! let store: Store = match std::env::var("DATABASE_URL") {
//!     Ok(url) => Postgres::from_url(url).schema("metrics").into(),
//!     Err(_) => Memory::new().into(),
//! };
//! # let store: Store = Memory::new().into();
//! let metrics = AppMetrics::builder(store).start().await?;
//! # metrics.shutdown(std::time::Duration::from_secs(1)).await.unwrap();
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::Arc;

use metrics_core::query::{MetricsQuery, SharedMetricsQuery};
use metrics_core::{MemorySink, MetricsSink};

/// Capacity of the in-memory store unless [`Memory::with_capacity`] says
/// otherwise.
pub const DEFAULT_MEMORY_CAPACITY: usize = 100_000;

/// The store an [`AppMetrics`](crate::AppMetrics) writes to and its
/// dashboard API reads from: made from a [`Memory`], a [`Postgres`] or a
/// [`CustomSink`] (`.into()`).
pub struct Store(pub(crate) Kind);

pub(crate) enum Kind {
    Memory(MemorySink),
    Sink {
        sink: Arc<dyn MetricsSink>,
        query: Option<SharedMetricsQuery>,
    },
    #[cfg(feature = "postgres")]
    Postgres(crate::postgres::PgStore),
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.0 {
            Kind::Memory(_) => "memory",
            Kind::Sink { .. } => "custom sink",
            #[cfg(feature = "postgres")]
            Kind::Postgres(_) => "postgres",
        };
        f.debug_tuple("Store").field(&kind).finish()
    }
}

// ===== Memory =====

/// Records kept in memory (bounded): for development, demos and tests. The
/// dashboard API reads them back; [`AppMetrics::memory_sink`](crate::AppMetrics::memory_sink)
/// shows them.
#[derive(Debug, Clone, Copy)]
#[must_use]
pub struct Memory {
    capacity: usize,
}

impl Memory {
    /// At most [`DEFAULT_MEMORY_CAPACITY`] records (the oldest go first).
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_MEMORY_CAPACITY)
    }

    /// At most `capacity` records.
    pub fn with_capacity(capacity: usize) -> Self {
        Self { capacity }
    }
}

impl Default for Memory {
    fn default() -> Self {
        Self::new()
    }
}

impl From<Memory> for Store {
    fn from(memory: Memory) -> Self {
        Self(Kind::Memory(MemorySink::with_capacity(memory.capacity)))
    }
}

// ===== CustomSink =====

/// Records written through any [`MetricsSink`] of yours. The dashboard API
/// reads from [`query`](Self::query), if given; without it the API's query
/// endpoints answer 503 (`no query store configured`) and ingest still
/// works.
#[must_use]
pub struct CustomSink {
    sink: Arc<dyn MetricsSink>,
    query: Option<SharedMetricsQuery>,
}

impl CustomSink {
    /// Writes through `sink`.
    pub fn new(sink: impl MetricsSink) -> Self {
        Self {
            sink: Arc::new(sink),
            query: None,
        }
    }

    /// The store the dashboard API reads.
    pub fn query(mut self, query: impl MetricsQuery) -> Self {
        self.query = Some(Arc::new(query));
        self
    }
}

impl fmt::Debug for CustomSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CustomSink")
            .field("query", &self.query.is_some())
            .finish_non_exhaustive()
    }
}

impl From<CustomSink> for Store {
    fn from(custom: CustomSink) -> Self {
        Self(Kind::Sink {
            sink: custom.sink,
            query: custom.query,
        })
    }
}

// ===== Postgres =====

/// Records stored in PostgreSQL. The schema (`app_metrics` unless
/// [`schema`](Self::schema) says otherwise) is migrated and the daily
/// partitions are created, then the
/// [`Scheduler`](metrics_pg::Scheduler) starts (rollups every minute,
/// partition maintenance hourly, retention daily at 02:00 UTC, each run once
/// across app instances thanks to an advisory lock); the collector writes
/// through a [`PgSink`](metrics_pg::PgSink). All of that happens in
/// [`start`](crate::AppMetricsBuilder::start) when the database is
/// reachable, and in the background, retried, when it is not: the app starts
/// and serves meanwhile (see `start`). Batches are 10,000 records unless
/// [`configure_collector`](crate::AppMetricsBuilder::configure_collector)
/// says otherwise.
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
#[must_use]
pub struct Postgres(crate::postgres::PgStore);

#[cfg(feature = "postgres")]
impl Postgres {
    /// Through `pool` (shared with the app if it likes).
    pub fn new(pool: metrics_pg::deadpool_postgres::Pool) -> Self {
        Self(crate::postgres::PgStore::from_pool(pool))
    }

    /// Through a pool built from a connection string
    /// (`postgres://user:pass@host:port/db` or `key=value` pairs; no TLS).
    pub fn from_url(url: impl Into<String>) -> Self {
        Self(crate::postgres::PgStore::from_url(url.into()))
    }

    /// The schema the tables live in (default `app_metrics`).
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.0.schema = schema.into();
        self
    }
}

#[cfg(feature = "postgres")]
impl fmt::Debug for Postgres {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may hold a password: only the schema is shown.
        f.debug_struct("Postgres")
            .field("schema", &self.0.schema)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "postgres")]
impl From<Postgres> for Store {
    fn from(pg: Postgres) -> Self {
        Self(Kind::Postgres(pg.0))
    }
}

// ===== no query store =====

/// The query store of an app whose custom sink brought none: every query
/// answers 503 with a message that says what to configure.
#[cfg(feature = "axum")]
#[derive(Debug)]
pub(crate) struct NoQueryStore;

#[cfg(feature = "axum")]
#[metrics_core::async_trait]
impl MetricsQuery for NoQueryStore {
    async fn performance(
        &self,
        _: &metrics_core::query::PerformanceQuery,
    ) -> Result<metrics_core::query::PerformanceReport, metrics_core::query::QueryError> {
        Err(no_query_store())
    }

    async fn usage(
        &self,
        _: &metrics_core::query::UsageQuery,
    ) -> Result<metrics_core::query::UsageReport, metrics_core::query::QueryError> {
        Err(no_query_store())
    }

    async fn time_series(
        &self,
        _: &metrics_core::query::TimeSeriesQuery,
    ) -> Result<metrics_core::query::TimeSeries, metrics_core::query::QueryError> {
        Err(no_query_store())
    }

    async fn user_event_count(
        &self,
        _: &str,
        _: &metrics_core::aggregate::TimeRange,
    ) -> Result<u64, metrics_core::query::QueryError> {
        Err(no_query_store())
    }

    async fn slowest_requests(
        &self,
        _: &metrics_core::query::SlowRequestsQuery,
    ) -> Result<metrics_core::query::SlowRequests, metrics_core::query::QueryError> {
        Err(no_query_store())
    }
}

#[cfg(feature = "axum")]
fn no_query_store() -> metrics_core::query::QueryError {
    metrics_core::query::QueryError::Unavailable(
        "no query store configured: give the custom sink a query store (store::CustomSink::query) to serve the dashboard API".into(),
    )
}
