#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::sync::Arc;
use std::time::Duration;

use http::Request;

pub use metrics_core::query::{MetricsQuery, QueryError, SharedMetricsQuery};
pub use metrics_core::{
    self as core, AccessToken, AdminCheck, AdminCheckError, Batch, BuildError, CachedAdminCheck,
    Collector, CollectorHandle, CollectorStats, CorrelationId, ErrorType, Identity, MemorySink,
    MemorySnapshot, MetricsSink, Record, RequestRecord, RetryPolicy, Route, SharedAdminCheck,
    ShutdownError, SinkError, StaticAdmins, UsageEvent, UserId, WriteSummary, async_trait,
};
pub use metrics_tower::{
    self as tower, DefaultRoute, ExtensionIdentity, MakeIdentity, MakeRoute, MetricsLayer,
    MetricsService, TrustedProxyHeaders,
};

#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use metrics_pg as pg;

#[cfg(feature = "databricks")]
#[cfg_attr(docsrs, doc(cfg(feature = "databricks")))]
pub use metrics_core::DatabricksAdminCheck;

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use metrics_tower::axum::{
    AdminRejection, DEFAULT_EVENT_TYPES, MetricsApi, MetricsDashboard, RequireAdmin,
    RequireAdminLayer,
};

#[cfg(feature = "postgres")]
mod postgres;

/// Capacity of the in-memory store made by [`AppMetricsBuilder::memory`].
pub const DEFAULT_MEMORY_CAPACITY: usize = 100_000;

/// Errors from starting [`AppMetrics`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No storage was chosen: call `.memory()` or `.sink(..)` on the builder.
    #[error("no metrics store configured: call .memory() or .sink(..) on AppMetrics::builder()")]
    NoStore,
    /// The collector configuration is invalid (or no Tokio runtime is running).
    #[error(transparent)]
    Collector(#[from] BuildError),
    /// PostgreSQL could not be prepared (connection, migrations, partitions).
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    #[error("could not prepare PostgreSQL storage: {0}")]
    Postgres(#[from] metrics_pg::Error),
}

/// Where the facade's layer finds the user of a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdentitySource {
    /// The [`Identity`] extension set by the app's own auth (the default).
    #[default]
    Extension,
    /// Trusted proxy headers (`X-Forwarded-Email` / `X-Forwarded-User`,
    /// `X-Forwarded-Access-Token`): only behind a proxy that sets them.
    TrustedProxyHeaders,
}

impl<B> MakeIdentity<B> for IdentitySource {
    fn identity(&self, req: &mut Request<B>) -> Option<UserId> {
        match self {
            Self::Extension => ExtensionIdentity.identity(req),
            Self::TrustedProxyHeaders => TrustedProxyHeaders.identity(req),
        }
    }
}

enum Store {
    None,
    Memory(MemorySink),
    Sink(Arc<dyn MetricsSink>),
    #[cfg(feature = "postgres")]
    Postgres(postgres::PgStore),
}

/// Builds [`AppMetrics`]: choose a store, tune the layer and the collector,
/// then [`start`](Self::start).
#[must_use]
pub struct AppMetricsBuilder {
    store: Store,
    exclude_paths: Option<Vec<String>>,
    exclude_prefixes: Option<Vec<String>>,
    identity: IdentitySource,
    max_routes: Option<usize>,
    queue_capacity: Option<usize>,
    max_batch: Option<usize>,
    linger: Option<Duration>,
    retry: Option<RetryPolicy>,
    admins: Option<SharedAdminCheck>,
    query: Option<SharedMetricsQuery>,
}

impl std::fmt::Debug for AppMetricsBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let store = match &self.store {
            Store::None => "none",
            Store::Memory(_) => "memory",
            Store::Sink(_) => "sink",
            #[cfg(feature = "postgres")]
            Store::Postgres(_) => "postgres",
        };
        f.debug_struct("AppMetricsBuilder")
            .field("store", &store)
            .field("exclude_paths", &self.exclude_paths)
            .field("exclude_prefixes", &self.exclude_prefixes)
            .field("identity", &self.identity)
            .field("admins", &self.admins)
            .field("query", &self.query.is_some())
            .finish_non_exhaustive()
    }
}

impl AppMetricsBuilder {
    /// Stores records in memory (bounded to [`DEFAULT_MEMORY_CAPACITY`]
    /// records): for development, demos and tests.
    pub fn memory(self) -> Self {
        self.memory_with_capacity(DEFAULT_MEMORY_CAPACITY)
    }

    /// Stores records in memory, keeping at most `capacity` records.
    pub fn memory_with_capacity(mut self, capacity: usize) -> Self {
        self.store = Store::Memory(MemorySink::with_capacity(capacity));
        self
    }

    /// Writes records through any [`MetricsSink`].
    pub fn sink(mut self, sink: impl MetricsSink) -> Self {
        self.store = Store::Sink(Arc::new(sink));
        self
    }

    /// Stores records in PostgreSQL through `pool`: [`start`](Self::start)
    /// migrates the schema (`app_metrics` unless [`Self::postgres_schema`]
    /// says otherwise), creates the daily partitions, starts the collector
    /// with a [`pg::PgSink`], an hourly partition-maintenance task and the
    /// [`pg::Scheduler`] (rollups every minute, retention daily at 02:00 UTC,
    /// each run once across app instances thanks to an advisory lock).
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    pub fn postgres(mut self, pool: metrics_pg::deadpool_postgres::Pool) -> Self {
        self.store = Store::Postgres(postgres::PgStore::from_pool(pool));
        self
    }

    /// Like [`Self::postgres`], with a pool built from a connection string
    /// (`postgres://user:pass@host:port/db` or `key=value` pairs; no TLS).
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    pub fn postgres_url(mut self, url: impl Into<String>) -> Self {
        self.store = Store::Postgres(postgres::PgStore::from_url(url.into()));
        self
    }

    /// The schema the PostgreSQL tables live in (default `app_metrics`).
    /// Only meaningful after [`Self::postgres`] or [`Self::postgres_url`].
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    pub fn postgres_schema(mut self, schema: impl Into<String>) -> Self {
        if let Store::Postgres(pg) = &mut self.store {
            pg.schema = schema.into();
        }
        self
    }

    /// Paths that are never recorded, exactly matched (replaces the defaults
    /// `/health`, `/ready`, `/ping`).
    pub fn exclude_paths<I, S>(mut self, paths: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.exclude_paths = Some(paths.into_iter().map(Into::into).collect());
        self
    }

    /// Path prefixes that are never recorded (replaces the defaults
    /// `/internal/`, `/admin/system/`).
    pub fn exclude_prefixes<I, S>(mut self, prefixes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.exclude_prefixes = Some(prefixes.into_iter().map(Into::into).collect());
        self
    }

    /// Reads the user from trusted proxy headers (see [`IdentitySource`]).
    pub fn trusted_proxy_headers(mut self) -> Self {
        self.identity = IdentitySource::TrustedProxyHeaders;
        self
    }

    /// Chooses where the user of a request comes from.
    pub fn identity(mut self, source: IdentitySource) -> Self {
        self.identity = source;
        self
    }

    /// Caps the number of distinct route labels (see
    /// [`MetricsLayer::max_routes`]).
    pub fn max_routes(mut self, max: usize) -> Self {
        self.max_routes = Some(max);
        self
    }

    /// Capacity of the collector's queue: the most records held in memory
    /// while the store is slow or down.
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = Some(capacity);
        self
    }

    /// Records per batch written to the store.
    pub fn max_batch(mut self, max: usize) -> Self {
        self.max_batch = Some(max);
        self
    }

    /// How long a batch waits for more records after its first one.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = Some(linger);
        self
    }

    /// Retry policy for failed writes.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Who may read the dashboard API (the admin endpoints answer 403 to
    /// everyone else). Without it nobody is an admin: the admin endpoints
    /// answer 403 and a warning is logged at start. Wrap remote checks in
    /// [`CachedAdminCheck`]:
    /// `.admins(CachedAdminCheck::new(DatabricksAdminCheck::from_env()?))`.
    pub fn admins(mut self, check: impl AdminCheck) -> Self {
        self.admins = Some(SharedAdminCheck::new(check));
        self
    }

    /// Like [`admins`](Self::admins), for a check that is already shared
    /// (with other guards of the app, so they share one cache).
    pub fn admins_shared(mut self, check: SharedAdminCheck) -> Self {
        self.admins = Some(check);
        self
    }

    /// The store the dashboard API reads. The memory and PostgreSQL stores
    /// bring their own; set this with [`sink`](Self::sink) to serve the API
    /// from your store (without it, a custom sink's API answers 503).
    pub fn query(mut self, query: impl MetricsQuery) -> Self {
        self.query = Some(Arc::new(query));
        self
    }

    /// Starts the collector on the current Tokio runtime and returns the
    /// running [`AppMetrics`].
    pub async fn start(self) -> Result<AppMetrics, Error> {
        #[cfg(feature = "postgres")]
        let mut maintenance = None;
        let mut query = self.query;
        let (collector, memory) = match self.store {
            Store::None => return Err(Error::NoStore),
            Store::Memory(sink) => {
                let handle = tune(
                    Collector::builder(sink.clone()),
                    self.queue_capacity,
                    self.max_batch,
                    self.linger,
                    self.retry,
                )
                .spawn()?;
                query.get_or_insert_with(|| Arc::new(sink.clone()));
                (handle, Some(sink))
            }
            Store::Sink(sink) => {
                let handle = tune(
                    Collector::builder(sink),
                    self.queue_capacity,
                    self.max_batch,
                    self.linger,
                    self.retry,
                )
                .spawn()?;
                (handle, None)
            }
            #[cfg(feature = "postgres")]
            Store::Postgres(pg) => {
                let started = pg.start().await?;
                // Bigger batches make binary COPY several times faster (see
                // docs/operations.md); linger still bounds the latency.
                let max_batch = self.max_batch.or(Some(postgres::DEFAULT_PG_MAX_BATCH));
                let handle = tune(
                    Collector::builder(started.sink),
                    self.queue_capacity,
                    max_batch,
                    self.linger,
                    self.retry,
                )
                .spawn()?;
                maintenance = Some(started.maintenance);
                query.get_or_insert_with(|| Arc::new(started.query));
                (handle, None)
            }
        };
        let mut layer = MetricsLayer::new(collector.clone()).identity_with(self.identity);
        if let Some(paths) = self.exclude_paths {
            layer = layer.exclude_paths(paths);
        }
        if let Some(prefixes) = self.exclude_prefixes {
            layer = layer.exclude_prefixes(prefixes);
        }
        if let Some(max) = self.max_routes {
            layer = layer.max_routes(max);
        }
        let admins = self.admins.unwrap_or_else(|| {
            tracing::warn!(
                "no admin check configured (AppMetricsBuilder::admins): the dashboard API's admin endpoints answer 403 to everyone"
            );
            SharedAdminCheck::new(StaticAdmins::new(std::iter::empty::<&str>()))
        });
        Ok(AppMetrics {
            inner: Arc::new(Inner {
                collector,
                memory,
                layer,
                admins,
                query,
                #[cfg(feature = "postgres")]
                maintenance: std::sync::Mutex::new(maintenance),
            }),
        })
    }
}

fn tune<S: MetricsSink>(
    mut b: metrics_core::CollectorBuilder<S>,
    queue_capacity: Option<usize>,
    max_batch: Option<usize>,
    linger: Option<Duration>,
    retry: Option<RetryPolicy>,
) -> metrics_core::CollectorBuilder<S> {
    if let Some(c) = queue_capacity {
        b = b.queue_capacity(c);
    }
    if let Some(m) = max_batch {
        b = b.max_batch(m);
    }
    if let Some(l) = linger {
        b = b.linger(l);
    }
    if let Some(r) = retry {
        b = b.retry(r);
    }
    b
}

/// A running app-metrics: the collector, the store, and the layer to put on
/// your service. Cheap to clone (it is an `Arc` inside), so handlers can hold it
/// as state.
///
/// ```
/// use std::time::Duration;
/// use app_metrics::AppMetrics;
/// use axum::{routing::get, Router};
/// # use tower::ServiceExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let metrics = AppMetrics::builder().memory().start().await?;
/// let app = Router::new()
///     .route("/users/{id}", get(|| async { "ada" }))
///     .layer(metrics.layer());
///
/// let res = app.oneshot(http::Request::get("/users/7").body(axum::body::Body::empty())?).await?;
/// axum::body::to_bytes(res.into_body(), usize::MAX).await?; // the record is made at body end
///
/// let stats = metrics.shutdown(Duration::from_secs(5)).await?;
/// assert_eq!(stats.written, 1);
/// let stored = metrics.memory_sink().unwrap().snapshot();
/// assert_eq!(stored.requests()[0].route, "/users/{id}");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct AppMetrics {
    inner: Arc<Inner>,
}

struct Inner {
    collector: CollectorHandle,
    memory: Option<MemorySink>,
    layer: MetricsLayer<DefaultRoute, IdentitySource>,
    admins: SharedAdminCheck,
    query: Option<SharedMetricsQuery>,
    #[cfg(feature = "postgres")]
    maintenance: std::sync::Mutex<Option<postgres::Maintenance>>,
}

impl std::fmt::Debug for AppMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppMetrics")
            .field("collector", &self.inner.collector)
            .field("memory", &self.inner.memory.is_some())
            .finish_non_exhaustive()
    }
}

impl AppMetrics {
    /// Starts configuring app-metrics.
    pub fn builder() -> AppMetricsBuilder {
        AppMetricsBuilder {
            store: Store::None,
            exclude_paths: None,
            exclude_prefixes: None,
            identity: IdentitySource::default(),
            max_routes: None,
            queue_capacity: None,
            max_batch: None,
            linger: None,
            retry: None,
            admins: None,
            query: None,
        }
    }

    /// The layer that records every request of the service it wraps.
    pub fn layer(&self) -> MetricsLayer<DefaultRoute, IdentitySource> {
        self.inner.layer.clone()
    }

    /// The collector handle (to record usage events, flush, or read stats).
    pub fn collector(&self) -> &CollectorHandle {
        &self.inner.collector
    }

    /// The in-memory store, when the builder chose [`AppMetricsBuilder::memory`].
    pub fn memory_sink(&self) -> Option<&MemorySink> {
        self.inner.memory.as_ref()
    }

    /// The admin check the dashboard API uses (share it with your own
    /// admin-only routes via [`RequireAdminLayer`]).
    pub fn admins(&self) -> &SharedAdminCheck {
        &self.inner.admins
    }

    /// The store the dashboard API reads, if there is one (memory and
    /// PostgreSQL always; a custom sink only with
    /// [`AppMetricsBuilder::query`]).
    pub fn query(&self) -> Option<&SharedMetricsQuery> {
        self.inner.query.as_ref()
    }

    /// The dashboard API of DESIGN §5 (performance, usage, time series,
    /// an endpoint's slowest requests, usage-event ingest, the caller's own
    /// count, the OpenAPI document),
    /// wired to this store, collector and admin check. Tune it (event
    /// vocabulary, body limit, clock skew) before taking its router:
    /// `metrics.api().allow_event_types(["export"]).router()`.
    ///
    /// With a custom sink and no [`AppMetricsBuilder::query`], the query
    /// endpoints answer 503 (`no query store configured`); ingest still works.
    #[cfg(feature = "axum")]
    #[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
    pub fn api(&self) -> MetricsApi {
        let query = self
            .inner
            .query
            .clone()
            .unwrap_or_else(|| Arc::new(NoQueryStore));
        MetricsApi::new(
            query,
            self.inner.collector.clone(),
            self.inner.admins.clone(),
        )
    }

    /// The dashboard API's router with default settings, to mount with
    /// `.nest("/api/v1/metrics", metrics.api_router())` inside the router
    /// that has [`layer`](Self::layer) (the layer provides the caller's
    /// identity). Works with any router state.
    #[cfg(feature = "axum")]
    #[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
    pub fn api_router<S: Clone + Send + Sync + 'static>(&self) -> axum::Router<S> {
        self.api().router()
    }

    /// The dashboard page of DESIGN §7 ("Application Metrics", its assets
    /// and `tracker.js`), shown to the same administrators as the API
    /// ([`admins`](Self::admins)). It reads the API at `/api/v1/metrics`;
    /// if [`api_router`](Self::api_router) is nested elsewhere, say where:
    /// `metrics.dashboard().api_path("/internal/metrics").router_at("/metrics")`.
    #[cfg(feature = "axum")]
    #[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
    pub fn dashboard(&self) -> MetricsDashboard {
        MetricsDashboard::new(self.inner.admins.clone())
    }

    /// The dashboard at `mount`, to merge into the router that has
    /// [`layer`](Self::layer): `.merge(metrics.dashboard_router_at("/metrics"))`
    /// serves the page at `/metrics/` (`/metrics` redirects there),
    /// `/metrics/tracker.js` and `/metrics/assets/*`. Default settings; see
    /// [`dashboard`](Self::dashboard) to change the API path. Works with any
    /// router state.
    ///
    /// # Panics
    ///
    /// If `mount` does not start with `/`.
    #[cfg(feature = "axum")]
    #[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
    #[track_caller]
    pub fn dashboard_router_at<S: Clone + Send + Sync + 'static>(
        &self,
        mount: &str,
    ) -> axum::Router<S> {
        self.dashboard().router_at(mount)
    }

    /// The dashboard's routes relative to its mount (`/`, `/tracker.js`,
    /// `/assets/*`), beside [`api_router`](Self::api_router). axum's
    /// `.nest("/metrics", metrics.dashboard_router())` routes `/metrics`
    /// only, not `/metrics/` (see
    /// [`metrics_tower::axum::dashboard`](metrics_tower::axum::dashboard#mounting));
    /// prefer [`dashboard_router_at`](Self::dashboard_router_at), which serves
    /// both.
    #[cfg(feature = "axum")]
    #[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
    pub fn dashboard_router<S: Clone + Send + Sync + 'static>(&self) -> axum::Router<S> {
        self.dashboard().router()
    }

    /// The collector's counters right now.
    pub fn stats(&self) -> CollectorStats {
        self.inner.collector.stats()
    }

    /// Waits until every record queued so far is written (or counted dropped).
    pub async fn flush(&self) -> Result<(), ShutdownError> {
        self.inner.collector.flush().await
    }

    /// Stops intake, writes every queued record (within `deadline`) and
    /// returns the final counters. Call it after the server has stopped.
    pub async fn shutdown(&self, deadline: Duration) -> Result<CollectorStats, ShutdownError> {
        #[cfg(feature = "postgres")]
        {
            // Take it out of the lock first: a std guard must not live across an await.
            let maintenance = self
                .inner
                .maintenance
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            if let Some(m) = maintenance {
                m.stop().await;
            }
        }
        self.inner.collector.shutdown(deadline).await
    }
}

/// The query store of an app whose custom sink brought none: every query
/// answers 503 with a message that says what to configure.
#[cfg(feature = "axum")]
#[derive(Debug)]
struct NoQueryStore;

#[cfg(feature = "axum")]
#[async_trait]
impl MetricsQuery for NoQueryStore {
    async fn performance(
        &self,
        _: &metrics_core::query::PerformanceQuery,
    ) -> Result<metrics_core::query::PerformanceReport, QueryError> {
        Err(no_query_store())
    }

    async fn usage(
        &self,
        _: &metrics_core::query::UsageQuery,
    ) -> Result<metrics_core::query::UsageReport, QueryError> {
        Err(no_query_store())
    }

    async fn time_series(
        &self,
        _: &metrics_core::query::TimeSeriesQuery,
    ) -> Result<metrics_core::query::TimeSeries, QueryError> {
        Err(no_query_store())
    }

    async fn user_event_count(
        &self,
        _: &str,
        _: &metrics_core::aggregate::TimeRange,
    ) -> Result<u64, QueryError> {
        Err(no_query_store())
    }

    async fn slowest_requests(
        &self,
        _: &metrics_core::query::SlowRequestsQuery,
    ) -> Result<metrics_core::query::SlowRequests, QueryError> {
        Err(no_query_store())
    }
}

#[cfg(feature = "axum")]
fn no_query_store() -> QueryError {
    QueryError::Unavailable(
        "no query store configured: a custom sink needs AppMetricsBuilder::query(..) to serve the dashboard API".into(),
    )
}
