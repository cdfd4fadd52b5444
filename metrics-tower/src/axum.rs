//! axum integration (feature `axum`).
//!
//! The admin guard lives here: [`RequireAdmin`] (extractor) and
//! [`RequireAdminLayer`] (layer); see [`admin`]. So does the dashboard API
//! router, [`MetricsApi`]; see [`api`], and the dashboard page,
//! [`MetricsDashboard`]; see [`dashboard`].
//!
//! [`DefaultRoute`](crate::DefaultRoute) already prefers axum's `MatchedPath`
//! with this feature on. [`MatchedPathRoute`] is the strict variant for apps
//! that want every request without a matched route as `<unmatched>`, without
//! falling back to path normalisation.
//!
//! `MatchedPath` exists once axum has routed the request. `Router::layer`
//! applies the layer to every route after routing, so the template is known;
//! for `Router::new().nest("/api", inner).layer(metrics)` it is the full
//! template (`/api/users/{id}`). A layer wrapped around the whole `Router`
//! from outside (for example `ServiceBuilder::new().layer(metrics).service(router)`)
//! runs *before* routing and sees no `MatchedPath`: [`DefaultRoute`](crate::DefaultRoute)
//! then normalises paths and [`MatchedPathRoute`] labels everything
//! `<unmatched>`, so prefer `Router::layer`.

pub mod admin;
pub mod api;
pub mod dashboard;

pub use admin::{AdminRejection, RequireAdmin, RequireAdminLayer};
pub use api::{DEFAULT_EVENT_TYPES, MetricsApi};
pub use dashboard::MetricsDashboard;

use axum::extract::MatchedPath;
use http::Request;
use metrics_core::Route;

use crate::route::{MakeRoute, RouteLabel};

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
