use std::sync::Arc;

use http::StatusCode;
use metrics_core::{CollectorHandle, Method};
use tower_layer::Layer;

use super::{Core, MetricsService};
use crate::exclude::{Exclusions, RequestHead};
use crate::identity::ExtensionIdentity;
use crate::route::{DEFAULT_MAX_ROUTES, DefaultRoute, RouteLabels, RouteStats};

/// A tower [`Layer`] that records one [`RequestRecord`](metrics_core::RequestRecord)
/// per request into a collector (see the [crate docs](crate#the-layer) for
/// what is recorded when).
///
/// Defaults: route labels from [`DefaultRoute`], user from the
/// [`Identity`](metrics_core::Identity) extension ([`ExtensionIdentity`]),
/// correlation ids on, at most 1,000 distinct route labels, and the default
/// [`Exclusions`] ([`DEFAULT_EXCLUDED_PATHS`](crate::exclude::DEFAULT_EXCLUDED_PATHS)
/// and [`DEFAULT_EXCLUDED_PREFIXES`](crate::exclude::DEFAULT_EXCLUDED_PREFIXES)),
/// which [`exclude_path`](Self::exclude_path) and its siblings add to.
///
/// Clones share the route label set and its overflow counter.
///
/// # Example
///
/// ```
/// use axum::{Router, routing::get};
/// use metrics_core::{Collector, MemorySink};
/// use metrics_tower::MetricsLayer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let sink = MemorySink::new();
/// let collector = Collector::builder(sink.clone()).spawn().expect("inside a Tokio runtime");
///
/// let app: Router = Router::new()
///     .route("/users/{id}", get(|| async { "ada" }))
///     // After the routes: the layer then sees axum's `MatchedPath`.
///     .layer(
///         MetricsLayer::new(collector.clone())
///             .exclude_path("/metrics-probe")
///             .max_routes(200),
///     );
///
/// # use tower::ServiceExt;
/// # let req = http::Request::get("/users/7").body(axum::body::Body::empty()).unwrap();
/// # let res = app.oneshot(req).await.unwrap();
/// # assert!(res.headers().contains_key("x-correlation-id"));
/// # let _ = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
/// collector.flush().await.unwrap();
/// let records = sink.snapshot().into_requests();
/// assert_eq!(records[0].route, "/users/{id}");
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct MetricsLayer<R = DefaultRoute, I = ExtensionIdentity> {
    pub(super) core: Arc<Core>,
    pub(super) make_route: R,
    pub(super) make_identity: I,
}

impl MetricsLayer {
    /// A layer recording into `collector`, with the defaults above.
    pub fn new(collector: CollectorHandle) -> Self {
        let core = Core {
            collector,
            labels: Arc::new(RouteLabels::new(DEFAULT_MAX_ROUTES)),
            exclusions: Exclusions::default(),
            correlation_id: true,
            correlation_id_extension: false,
            timeout_statuses: Box::new([
                StatusCode::REQUEST_TIMEOUT.as_u16(),
                StatusCode::GATEWAY_TIMEOUT.as_u16(),
            ]),
            other_method: Method::from_bytes(b"OTHER").unwrap_or_default(),
        };
        Self {
            core: Arc::new(core),
            make_route: DefaultRoute,
            make_identity: ExtensionIdentity,
        }
    }
}

impl<R, I> MetricsLayer<R, I> {
    // Builder methods run before the layer is shared, so `make_mut` does not
    // copy; if a clone exists, the clone keeps the old configuration.
    fn core_mut(&mut self) -> &mut Core {
        Arc::make_mut(&mut self.core)
    }

    /// Chooses route labels with `make_route` (see [`MakeRoute`](crate::route::MakeRoute)).
    pub fn route_with<R2>(self, make_route: R2) -> MetricsLayer<R2, I> {
        MetricsLayer {
            core: self.core,
            make_route,
            make_identity: self.make_identity,
        }
    }

    /// Finds the user of each request with `make_identity` (see
    /// [`MakeIdentity`](crate::identity::MakeIdentity)), for example
    /// [`TrustedProxyHeaders`](crate::identity::TrustedProxyHeaders).
    pub fn identity_with<I2>(self, make_identity: I2) -> MetricsLayer<R, I2> {
        MetricsLayer {
            core: self.core,
            make_route: self.make_route,
            make_identity,
        }
    }

    /// Also excludes `path`, matched exactly (the query string is ignored);
    /// the defaults stay. See [`exclusions`](Self::exclusions) to replace
    /// them.
    pub fn exclude_path(mut self, path: impl AsRef<str>) -> Self {
        let core = self.core_mut();
        core.exclusions = std::mem::take(&mut core.exclusions).path(path);
        self
    }

    /// Also excludes every path starting with `prefix`; the defaults stay.
    pub fn exclude_prefix(mut self, prefix: impl AsRef<str>) -> Self {
        let core = self.core_mut();
        core.exclusions = std::mem::take(&mut core.exclusions).prefix(prefix);
        self
    }

    /// Also excludes every request for which `predicate` returns `true`
    /// (earlier predicates still apply). It runs on the request path: keep
    /// it cheap.
    pub fn exclude_if<F>(mut self, predicate: F) -> Self
    where
        F: Fn(&RequestHead<'_>) -> bool + Send + Sync + 'static,
    {
        let core = self.core_mut();
        core.exclusions = std::mem::take(&mut core.exclusions).matching(predicate);
        self
    }

    /// Replaces every exclusion, the defaults included, with `exclusions`:
    /// `.exclusions(Exclusions::none())` records health probes too.
    pub fn exclusions(mut self, exclusions: Exclusions) -> Self {
        self.core_mut().exclusions = exclusions;
        self
    }

    /// Caps the number of distinct route labels (default 1,000). Past the
    /// cap, new labels are recorded as `<overflow>` and counted in
    /// [`route_stats`](Self::route_stats). Resets the label set.
    pub fn max_routes(mut self, max: usize) -> Self {
        self.core_mut().labels = Arc::new(RouteLabels::new(max));
        self
    }

    /// Turns correlation ids on (the default) or off. Off, the layer neither
    /// reads nor sets `x-correlation-id` and records no correlation id.
    pub fn correlation_id(mut self, enabled: bool) -> Self {
        self.core_mut().correlation_id = enabled;
        self
    }

    /// Also puts the correlation id into the request extensions (off by
    /// default), for inner services that read it from there
    /// (`Extension<CorrelationId>`, `req.extensions().get()`) rather than as
    /// the [current id](metrics_core::CorrelationId::current) or with the
    /// `CorrelationId` extractor. It costs up to three allocations per
    /// request (see [`correlation`](crate::correlation)).
    pub fn correlation_id_extension(mut self, enabled: bool) -> Self {
        self.core_mut().correlation_id_extension = enabled;
        self
    }

    /// Replaces the response statuses that mean "a timeout layer inside gave
    /// up" (default `408` and `504`); they are recorded as `504 Timeout`.
    pub fn timeout_statuses<T>(mut self, statuses: T) -> Self
    where
        T: IntoIterator<Item = StatusCode>,
    {
        self.core_mut().timeout_statuses = statuses.into_iter().map(|s| s.as_u16()).collect();
        self
    }

    /// Distinct route labels so far, the cap, and how many requests were
    /// recorded as `<overflow>`.
    pub fn route_stats(&self) -> RouteStats {
        self.core.labels.stats()
    }

    /// How many requests were recorded as `<overflow>` so far.
    pub fn route_overflow_count(&self) -> u64 {
        self.route_stats().overflowed
    }
}

impl<S, R: Clone, I: Clone> Layer<S> for MetricsLayer<R, I> {
    type Service = MetricsService<S, R, I>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            core: Arc::clone(&self.core),
            make_route: self.make_route.clone(),
            make_identity: self.make_identity.clone(),
        }
    }
}

// ===== impl MetricsService =====

// Here rather than in `service.rs`: the layer builds the service, so the
// service's module does not depend back on the layer's.
impl MetricsService<(), DefaultRoute, ExtensionIdentity> {
    /// A [`MetricsLayer`] recording into `collector` (same as
    /// [`MetricsLayer::new`]).
    pub fn layer(collector: CollectorHandle) -> MetricsLayer {
        MetricsLayer::new(collector)
    }
}
