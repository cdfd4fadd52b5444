#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use metrics_core::{CollectorBuilder, CollectorHandle, CollectorStats, MemorySink, MetricsSink};
use metrics_core::{SharedAdminCheck, StaticAdmins};
use metrics_tower::MetricsLayer;
use metrics_tower::identity::ExtensionIdentity;
use metrics_tower::route::DefaultRoute;

pub use metrics_core::{BuildError, ShutdownError};

/// The crates behind the facade, for what the modules below leave out.
pub use metrics_core as core;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use metrics_pg as pg;
pub use metrics_tower as tower;

#[cfg(feature = "postgres")]
mod postgres;
pub mod store;

/// Writing records somewhere else: the [`MetricsSink`]
/// trait, the records it receives and the in-memory store.
pub mod sink {
    /// The rejection of the `CorrelationId` extractor.
    #[cfg(feature = "axum")]
    pub use metrics_core::MissingCorrelationId;
    pub use metrics_core::{
        Batch, BatchId, BoxError, CorrelationId, ErrorType, MemorySink, MemorySnapshot, Method,
        MetricsSink, Record, RequestRecord, Route, SinkError, UsageEvent, WriteAttempt,
        WriteSummary, async_trait,
    };
}

/// The collector between the request path and the store: its builder (see
/// [`AppMetricsBuilder::configure_collector`]), handle, counters and retry
/// policy.
pub mod collector {
    pub use metrics_core::{
        Collector, CollectorBuilder, CollectorHandle, CollectorStats, RetryPolicy,
    };
}

/// The dashboard's questions and answers, and the [`MetricsQuery`](query::MetricsQuery)
/// trait a store answers them through.
pub mod query {
    pub use metrics_core::query::*;
}

/// Who the caller is: the [`Identity`](identity::Identity) extension and the
/// sources that find it ([`MakeIdentity`](identity::MakeIdentity); see
/// [`AppMetricsBuilder::identity`]).
pub mod identity {
    pub use metrics_core::{AccessToken, Identity, UserId};
    pub use metrics_tower::identity::*;
}

/// The request layer's pieces: [`MetricsLayer`] (see
/// [`AppMetricsBuilder::configure_layer`]), exclusions and route labels.
pub mod layer {
    pub use metrics_tower::exclude::{
        DEFAULT_EXCLUDED_PATHS, DEFAULT_EXCLUDED_PREFIXES, Exclusions, RequestHead,
    };
    pub use metrics_tower::route::{
        DefaultRoute, MakeRoute, NormalizedPath, RouteLabel, RouteStats,
    };
    pub use metrics_tower::{MetricsLayer, MetricsService};
}

/// Who may read the dashboard: the [`AdminCheck`](admin::AdminCheck) trait
/// and its implementations, and the guard for your own admin routes
/// ([`RequireAdminLayer`](admin::RequireAdminLayer); with `axum`,
/// [`RequireAdmin`](admin::RequireAdmin), which takes the check from any
/// state `SharedAdminCheck: FromRef` of, [`AppMetrics`] included).
pub mod admin {
    #[cfg(feature = "databricks")]
    #[cfg_attr(docsrs, doc(cfg(feature = "databricks")))]
    pub use metrics_core::DatabricksAdminCheck;
    pub use metrics_core::{
        AdminCheck, AdminCheckError, CachedAdminCheck, SharedAdminCheck, StaticAdmins,
    };
    #[cfg(feature = "axum")]
    #[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
    pub use metrics_tower::admin::RequireAdmin;
    pub use metrics_tower::admin::{AdminRejection, RequireAdminLayer};
}

/// The dashboard API and page routers (see [`AppMetrics::api`] and
/// [`AppMetrics::dashboard`]).
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod api {
    pub use metrics_tower::axum::api::{DEFAULT_EVENT_TYPES, MetricsApi};
    pub use metrics_tower::axum::dashboard::MetricsDashboard;
}

use store::{Kind, Store};

/// Errors from starting [`AppMetrics`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The collector configuration is invalid (or no Tokio runtime is running).
    #[error(transparent)]
    Collector(#[from] BuildError),
    /// The PostgreSQL settings are invalid: the connection string, the
    /// schema name or a sink setting. An unreachable database is *not* an
    /// error: see [`AppMetricsBuilder::start`].
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    #[error("invalid PostgreSQL storage settings: {0}")]
    Postgres(#[from] metrics_pg::Error),
}

/// The collector builder the facade hands to
/// [`AppMetricsBuilder::configure_collector`]: every store's sink is shared
/// behind one `Arc`, so one closure type fits them all.
pub type SharedCollectorBuilder = CollectorBuilder<Arc<dyn MetricsSink>>;

type LayerStep = Box<dyn FnOnce(MetricsLayer) -> MetricsLayer + Send>;
type CollectorStep = Box<dyn FnOnce(SharedCollectorBuilder) -> SharedCollectorBuilder + Send>;

/// Builds [`AppMetrics`] around a store (see [`AppMetrics::builder`]): who
/// the caller is, who the admins are, and the layer's and collector's own
/// settings; then [`start`](Self::start).
#[must_use]
pub struct AppMetricsBuilder<I = ExtensionIdentity> {
    store: Store,
    identity: I,
    layer: Vec<LayerStep>,
    collector: Vec<CollectorStep>,
    admins: Option<SharedAdminCheck>,
}

impl<I> fmt::Debug for AppMetricsBuilder<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppMetricsBuilder")
            .field("store", &self.store)
            .field("identity", &std::any::type_name::<I>())
            .field("layer_steps", &self.layer.len())
            .field("collector_steps", &self.collector.len())
            .field("admins", &self.admins)
            .finish()
    }
}

impl<I> AppMetricsBuilder<I> {
    /// Where the user of a request comes from: any
    /// [`MakeIdentity`](identity::MakeIdentity), a closure
    /// `Fn(&mut Request<B>) -> Option<UserId>` included. The default,
    /// [`ExtensionIdentity`], reads the
    /// [`Identity`](identity::Identity) your own auth layer inserted;
    /// [`TrustedProxyHeaders`](identity::TrustedProxyHeaders) reads an
    /// authenticating proxy's headers. The layer records that user, and the
    /// dashboard API and page use the same source, so they identify callers
    /// wherever they are mounted.
    pub fn identity<I2>(self, make_identity: I2) -> AppMetricsBuilder<I2> {
        AppMetricsBuilder {
            store: self.store,
            identity: make_identity,
            layer: self.layer,
            collector: self.collector,
            admins: self.admins,
        }
    }

    /// Who may read the dashboard API (the admin endpoints answer 403 to
    /// everyone else). Without it nobody is an admin: the admin endpoints
    /// answer 403 and a warning is logged at start. Wrap remote checks in
    /// [`CachedAdminCheck`](admin::CachedAdminCheck):
    /// `.admins(CachedAdminCheck::new(DatabricksAdminCheck::from_env()?))`.
    pub fn admins(self, check: impl metrics_core::AdminCheck) -> Self {
        self.admins_shared(SharedAdminCheck::new(check))
    }

    /// Like [`admins`](Self::admins), for a check that is already shared
    /// (with other guards of the app, so they share one cache).
    pub fn admins_shared(mut self, check: SharedAdminCheck) -> Self {
        self.admins = Some(check);
        self
    }

    /// Tunes the [`MetricsLayer`] with its own builder methods: exclusions
    /// (`exclude_path` adds to the defaults, `exclusions` replaces them),
    /// `exclude_if`, `max_routes`, `correlation_id`, `timeout_statuses`.
    /// Steps run in the order given, when [`start`](Self::start) builds the
    /// layer; the identity is [`identity`](Self::identity)'s.
    ///
    /// ```
    /// # use app_metrics::AppMetrics;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), app_metrics::Error> {
    /// let metrics = AppMetrics::memory()
    ///     .configure_layer(|layer| {
    ///         layer
    ///             .exclude_path("/metrics-probe") // /health, /ready, ... stay excluded
    ///             .exclude_if(|head| head.method() == http::Method::OPTIONS)
    ///             .max_routes(500)
    ///     })
    ///     .start()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn configure_layer<F>(mut self, step: F) -> Self
    where
        F: FnOnce(MetricsLayer) -> MetricsLayer + Send + 'static,
    {
        self.layer.push(Box::new(step));
        self
    }

    /// Tunes the collector with its own builder methods: `queue_capacity`
    /// and `memory_budget` (the record and byte caps while the store is
    /// down), `max_batch`, `linger`, `retry`, `export_timeout`. Steps run in the order given, after the
    /// store's defaults (PostgreSQL: batches of 10,000); an invalid setting
    /// makes [`start`](Self::start) fail with [`Error::Collector`].
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use app_metrics::AppMetrics;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), app_metrics::Error> {
    /// let metrics = AppMetrics::memory()
    ///     .configure_collector(|collector| {
    ///         collector
    ///             .queue_capacity(50_000)
    ///             .export_timeout(Duration::from_secs(5))
    ///     })
    ///     .start()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn configure_collector<F>(mut self, step: F) -> Self
    where
        F: FnOnce(SharedCollectorBuilder) -> SharedCollectorBuilder + Send + 'static,
    {
        self.collector.push(Box::new(step));
        self
    }

    /// Prepares the store, starts the collector on the current Tokio
    /// runtime and returns the running [`AppMetrics`].
    ///
    /// With PostgreSQL, settings are checked first (connection string,
    /// schema name, sink settings: [`Error::Postgres`]), then the database
    /// gets a short first try: reachable, it is migrated and today's
    /// partitions are created before `start` returns, and the scheduler
    /// (rollups, partitions, retention) starts. Unreachable (refused, or no
    /// answer within 2 s), `start` returns anyway and the app serves while
    /// the metrics database is down:
    ///
    /// - records wait in the collector's bounded queue
    ///   ([`queue_capacity`](metrics_core::CollectorBuilder::queue_capacity));
    ///   its writes fail as retryable (`store not ready: migrations pending`)
    ///   and are retried with its backoff, and past the queue's capacity
    ///   records are counted as dropped, never failing a request;
    /// - the dashboard API answers 503;
    /// - the migrations are retried in the background (1 s, doubling to
    ///   30 s; each failure logged at `warn`, or at `error` when it is not
    ///   about connectivity, such as a migration failing with an SQL error;
    ///   success at `info`), then the queued records are written and the
    ///   scheduler starts.
    ///
    /// [`shutdown`](AppMetrics::shutdown) during that time still ends by its
    /// deadline, counting what could not be written as `dropped_shutdown`.
    pub async fn start(self) -> Result<AppMetrics<I>, Error>
    where
        I: Clone + Send + Sync + 'static,
    {
        #[cfg(feature = "postgres")]
        let mut maintenance = None;
        // The store-specific collector default (PostgreSQL: bigger batches
        // make binary COPY several times faster, see docs/operations.md;
        // linger still bounds the latency) runs before the user's steps.
        let (sink, query, memory, max_batch): (Arc<dyn MetricsSink>, _, _, _) = match self.store.0 {
            Kind::Memory(sink) => {
                let query: metrics_core::query::SharedMetricsQuery = Arc::new(sink.clone());
                (Arc::new(sink.clone()), Some(query), Some(sink), None)
            }
            Kind::Sink { sink, query } => (sink, query, None, None),
            #[cfg(feature = "postgres")]
            Kind::Postgres(pg) => {
                let started = pg.start().await?;
                maintenance = Some(started.maintenance);
                let query: metrics_core::query::SharedMetricsQuery = Arc::new(started.query);
                let max_batch = Some(postgres::DEFAULT_PG_MAX_BATCH);
                (Arc::new(started.sink), Some(query), None, max_batch)
            }
        };
        let mut builder = metrics_core::Collector::builder(sink);
        if let Some(max) = max_batch {
            builder = builder.max_batch(max);
        }
        let collector = self
            .collector
            .into_iter()
            .fold(builder, |b, step| step(b))
            .spawn()?;
        let layer = self
            .layer
            .into_iter()
            .fold(MetricsLayer::new(collector.clone()), |l, step| step(l))
            .identity_with(self.identity.clone());
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
                identity: self.identity,
                admins,
                query,
                #[cfg(feature = "postgres")]
                maintenance: std::sync::Mutex::new(maintenance),
            }),
        })
    }
}

/// A running app-metrics: the collector, the store, the layer to put on
/// your service and the dashboard routers. Cheap to clone (it is an `Arc`
/// inside), so handlers can hold it as state; `I` is the identity source
/// given to [`AppMetricsBuilder::identity`].
///
/// # The one order that works
///
/// Routes first, the dashboard routers beside them, the metrics layer last
/// (so it wraps every route above it, the dashboard's included), and your
/// own auth layer after it when it sets the [`Identity`](identity::Identity):
///
/// ```
/// use std::time::Duration;
/// use app_metrics::AppMetrics;
/// use app_metrics::admin::StaticAdmins;
/// use app_metrics::identity::TrustedProxyHeaders;
/// use axum::{routing::get, Router};
/// # use tower::ServiceExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let metrics = AppMetrics::memory()
///     .identity(TrustedProxyHeaders)
///     .admins(StaticAdmins::parse("ada@example.com"))
///     .start()
///     .await?;
/// let app = Router::new()
///     .route("/users/{id}", get(|| async { "ada" }))
///     .nest("/api/v1/metrics", metrics.api_router())
///     .merge(metrics.dashboard_router_at("/metrics"))
///     .layer(metrics.layer());
///
/// let req = http::Request::get("/users/7").header("x-forwarded-email", "bob@example.com");
/// let res = app.clone().oneshot(req.body(axum::body::Body::empty())?).await?;
/// axum::body::to_bytes(res.into_body(), usize::MAX).await?; // the record is made at body end
///
/// let stats = metrics.shutdown(Duration::from_secs(5)).await?;
/// assert_eq!(stats.written, 1);
/// let stored = metrics.memory_sink().unwrap().snapshot();
/// assert_eq!(stored.requests()[0].route, "/users/{id}");
/// assert_eq!(stored.requests()[0].user_id.as_ref().unwrap().as_str(), "bob@example.com");
/// # Ok(())
/// # }
/// ```
///
/// Mounted after the layer instead, the API and page still identify their
/// callers (they use the same identity source), but their own calls are not
/// recorded.
pub struct AppMetrics<I = ExtensionIdentity> {
    inner: Arc<Inner<I>>,
}

struct Inner<I> {
    collector: CollectorHandle,
    memory: Option<MemorySink>,
    layer: MetricsLayer<DefaultRoute, I>,
    /// For the dashboard API and page.
    #[cfg_attr(
        not(feature = "axum"),
        allow(dead_code, reason = "only the axum routers use it")
    )]
    identity: I,
    admins: SharedAdminCheck,
    query: Option<metrics_core::query::SharedMetricsQuery>,
    #[cfg(feature = "postgres")]
    maintenance: std::sync::Mutex<Option<postgres::Maintenance>>,
}

impl<I> Clone for AppMetrics<I> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<I> fmt::Debug for AppMetrics<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppMetrics")
            .field("collector", &self.inner.collector)
            .field("memory", &self.inner.memory.is_some())
            .finish_non_exhaustive()
    }
}

impl AppMetrics {
    /// Starts configuring app-metrics around `store` (a
    /// [`store::Memory`], [`store::Postgres`] or [`store::CustomSink`], or
    /// a [`Store`] chosen at run time). The shortcuts below take the
    /// store's defaults.
    pub fn builder(store: impl Into<Store>) -> AppMetricsBuilder {
        AppMetricsBuilder {
            store: store.into(),
            identity: ExtensionIdentity,
            layer: Vec::new(),
            collector: Vec::new(),
            admins: None,
        }
    }

    /// Records in memory ([`store::Memory::new`]): for development, demos
    /// and tests.
    pub fn memory() -> AppMetricsBuilder {
        Self::builder(store::Memory::new())
    }

    /// Records in PostgreSQL through `pool`, tables in the `app_metrics`
    /// schema ([`store::Postgres`] for another schema).
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    pub fn postgres(pool: metrics_pg::deadpool_postgres::Pool) -> AppMetricsBuilder {
        Self::builder(store::Postgres::new(pool))
    }

    /// Like [`postgres`](Self::postgres), with a pool built from a
    /// connection string.
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    pub fn postgres_url(url: impl Into<String>) -> AppMetricsBuilder {
        Self::builder(store::Postgres::from_url(url))
    }

    /// Records written through any [`MetricsSink`], with
    /// no query side ([`store::CustomSink::query`] adds one).
    pub fn with_sink(sink: impl MetricsSink) -> AppMetricsBuilder {
        Self::builder(store::CustomSink::new(sink))
    }
}

impl<I> AppMetrics<I> {
    /// The layer that records every request of the service it wraps.
    pub fn layer(&self) -> MetricsLayer<DefaultRoute, I>
    where
        I: Clone,
    {
        self.inner.layer.clone()
    }

    /// The collector handle (to record usage events, flush, or read stats).
    pub fn collector(&self) -> &CollectorHandle {
        &self.inner.collector
    }

    /// The in-memory store, when the store is [`store::Memory`].
    pub fn memory_sink(&self) -> Option<&MemorySink> {
        self.inner.memory.as_ref()
    }

    /// The admin check the dashboard API uses (share it with your own
    /// admin-only routes: [`RequireAdmin`](admin::RequireAdmin) finds it in
    /// an `AppMetrics` state, [`RequireAdminLayer`](admin::RequireAdminLayer)
    /// takes it).
    pub fn admins(&self) -> &SharedAdminCheck {
        &self.inner.admins
    }

    /// The store the dashboard API reads, if there is one (memory and
    /// PostgreSQL always; a custom sink only with
    /// [`store::CustomSink::query`]).
    pub fn query(&self) -> Option<&metrics_core::query::SharedMetricsQuery> {
        self.inner.query.as_ref()
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

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl<I> AppMetrics<I>
where
    I: metrics_tower::identity::MakeIdentity<axum::body::Body> + Clone + Send + Sync + 'static,
{
    /// The dashboard API (performance, usage, time series, an endpoint's
    /// slowest requests, usage-event ingest, the caller's own count, the
    /// OpenAPI document), wired to this store, collector, admin check and
    /// identity source. Tune it (event vocabulary, body limit, clock skew)
    /// before taking its router:
    /// `metrics.api().allow_event_types(["export"]).router()`.
    ///
    /// With a custom sink without a query store, the query endpoints answer
    /// 503 (`no query store configured`); ingest still works.
    pub fn api(&self) -> api::MetricsApi {
        let query = self
            .inner
            .query
            .clone()
            .unwrap_or_else(|| Arc::new(store::NoQueryStore));
        api::MetricsApi::new(
            query,
            self.inner.collector.clone(),
            self.inner.admins.clone(),
        )
        .identity_with(self.inner.identity.clone())
    }

    /// The dashboard API's router with default settings:
    /// `.nest("/api/v1/metrics", metrics.api_router())`, before
    /// [`layer`](Self::layer) so its calls are recorded too (see
    /// [the one order that works](Self#the-one-order-that-works)). Works
    /// with any router state.
    pub fn api_router<S: Clone + Send + Sync + 'static>(&self) -> axum::Router<S> {
        self.api().router()
    }

    /// The dashboard page ("Application Metrics", its assets and
    /// `tracker.js`), shown to the same administrators as the API
    /// ([`admins`](Self::admins)) and identifying callers the same way. It
    /// reads the API at `/api/v1/metrics`; if
    /// [`api_router`](Self::api_router) is nested elsewhere, say where:
    /// `metrics.dashboard().api_path("/internal/metrics").router_at("/metrics")`.
    pub fn dashboard(&self) -> api::MetricsDashboard {
        api::MetricsDashboard::new(self.inner.admins.clone())
            .identity_with(self.inner.identity.clone())
    }

    /// The dashboard at `mount`, to merge beside the API:
    /// `.merge(metrics.dashboard_router_at("/metrics"))` serves the page at
    /// `/metrics/` (`/metrics` redirects there), `/metrics/tracker.js` and
    /// `/metrics/assets/*`. Default settings; see
    /// [`dashboard`](Self::dashboard) to change the API path. Works with any
    /// router state.
    ///
    /// # Panics
    ///
    /// If `mount` does not start with `/`.
    #[track_caller]
    pub fn dashboard_router_at<S: Clone + Send + Sync + 'static>(
        &self,
        mount: &str,
    ) -> axum::Router<S> {
        self.dashboard().router_at(mount)
    }

    /// The dashboard's routes relative to its mount (`/`, `/tracker.js`,
    /// `/assets/*`). axum's `.nest("/metrics", metrics.dashboard_router())`
    /// routes `/metrics` only, not `/metrics/` (see
    /// [`metrics_tower::axum::dashboard`](metrics_tower::axum::dashboard#mounting));
    /// prefer [`dashboard_router_at`](Self::dashboard_router_at), which
    /// serves both.
    pub fn dashboard_router<S: Clone + Send + Sync + 'static>(&self) -> axum::Router<S> {
        self.dashboard().router()
    }
}

/// [`RequireAdmin`](admin::RequireAdmin) in a router whose state is the
/// `AppMetrics` asks its admin check.
#[cfg(feature = "axum")]
impl<I> axum::extract::FromRef<AppMetrics<I>> for SharedAdminCheck {
    fn from_ref(metrics: &AppMetrics<I>) -> Self {
        metrics.inner.admins.clone()
    }
}
