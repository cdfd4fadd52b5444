//! axum integration (feature `axum`).
//!
//! The dashboard API router, [`MetricsApi`](api::MetricsApi) (see [`api`]),
//! and the dashboard page, [`MetricsDashboard`](dashboard::MetricsDashboard)
//! (see [`dashboard`]), live here; the admin guard's extractor is
//! [`crate::admin::RequireAdmin`].
//!
//! [`DefaultRoute`](crate::route::DefaultRoute) already prefers axum's `MatchedPath`
//! with this feature on. [`MatchedPathRoute`] is the strict variant for apps
//! that want every request without a matched route as `<unmatched>`, without
//! falling back to path normalisation.
//!
//! `MatchedPath` exists once axum has routed the request. `Router::layer`
//! applies the layer to every route after routing, so the template is known;
//! for `Router::new().nest("/api", inner).layer(metrics)` it is the full
//! template (`/api/users/{id}`). A layer wrapped around the whole `Router`
//! from outside (for example `ServiceBuilder::new().layer(metrics).service(router)`)
//! runs *before* routing and sees no `MatchedPath`: [`DefaultRoute`](crate::route::DefaultRoute)
//! then normalises paths and [`MatchedPathRoute`] labels everything
//! `<unmatched>`, so prefer `Router::layer`.

pub mod api;
pub mod dashboard;

use std::fmt;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::MatchedPath;
use http::Request;
use metrics_core::{Route, UserId};

use crate::identity::{ExtensionIdentity, MakeIdentity};
use crate::route::{MakeRoute, RouteLabel};

/// The API's and the dashboard's identity source, shared by clones of their
/// builders and routers.
#[derive(Clone)]
struct SharedIdentity(Arc<dyn MakeIdentity<Body> + Send + Sync>);

impl SharedIdentity {
    fn new(make_identity: impl MakeIdentity<Body> + Send + Sync + 'static) -> Self {
        Self(Arc::new(make_identity))
    }
}

impl Default for SharedIdentity {
    fn default() -> Self {
        Self::new(ExtensionIdentity)
    }
}

impl MakeIdentity<Body> for SharedIdentity {
    fn identity(&self, req: &mut Request<Body>) -> Option<UserId> {
        self.0.identity(req)
    }
}

impl fmt::Debug for SharedIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MakeIdentity(..)")
    }
}

/// Route labels from axum's `MatchedPath` only; requests without one are
/// labelled [`Route::UNMATCHED`].
///
/// ```
/// use axum::{Router, routing::get};
/// use metrics_core::{Collector, MemorySink};
/// use metrics_tower::{MetricsLayer, axum::MatchedPathRoute};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let collector = Collector::builder(MemorySink::new()).spawn().unwrap();
/// let app: Router = Router::new()
///     .route("/", get(|| async { "hi" }))
///     .layer(MetricsLayer::new(collector).route_with(MatchedPathRoute));
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct MatchedPathRoute;

impl<B> MakeRoute<B> for MatchedPathRoute {
    fn make_route<'a>(&self, req: &'a Request<B>) -> RouteLabel<'a> {
        match req.extensions().get::<MatchedPath>() {
            Some(path) => RouteLabel::Template(path.as_str()),
            None => RouteLabel::Fixed(Route::UNMATCHED),
        }
    }
}
