//! The admin dashboard page, mountable in any axum app: [`MetricsDashboard`].
//!
//! One HTML page ("Application Metrics"), its stylesheet and ES modules, and
//! the browser tracker, all compiled into the binary (no CDN, no build step,
//! works offline). The page reads the [dashboard API](super::api) from the
//! same origin; where it lives is the builder's
//! [`api_path`](MetricsDashboard::api_path), written into
//! `<meta name="app-metrics-api">`.
//!
//! | method, path (under the mount) | who | answer |
//! |---|---|---|
//! | GET `/` | admin | 200 the page, `text/html; charset=utf-8` |
//! | GET `/` | no identity / not an admin / check failed | 401 / 403 / 503, a small HTML page with the reason and no numbers |
//! | GET `/tracker.js` | anyone | 200 `text/javascript` |
//! | GET `/assets/{file}` | anyone | 200 `text/javascript` or `text/css; charset=utf-8`; 404 for any other name |
//!
//! Every file (the page included, with its API path filled in) is gzipped
//! once, when the router is built, and sent gzipped (`Content-Encoding:
//! gzip`) to clients whose `Accept-Encoding` allows it (q-values read:
//! `gzip;q=0` means no), as it is to everyone else, always with `Vary:
//! Accept-Encoding`. Each variant carries its own strong `ETag` (hashed
//! once too), answers `If-None-Match` with 304, and is sent with
//! `Cache-Control: no-cache` and `X-Content-Type-Options: nosniff`. HTML
//! answers add a `Content-Security-Policy` that allows scripts, styles and
//! requests to this origin only, no inline code and no framing.
//!
//! # Who sees the page
//!
//! The page goes through the same guard as the API's admin endpoints
//! ([`RequireAdmin`](crate::admin::RequireAdmin) with the builder's
//! [`SharedAdminCheck`]), so it needs the caller's
//! [`Identity`](metrics_core::Identity) in the request extensions, set by
//! the app's auth or by [`MetricsLayer`](crate::MetricsLayer) outside the
//! router, or else found by its own
//! [`identity_with`](MetricsDashboard::identity_with) source (as the API
//! does), so it answers the same inside or beside the metrics layer. The page itself holds no numbers: they come from the API, which
//! checks again on every call. The tracker and the assets are public, as a
//! login page's stylesheet would be.
//!
//! # Mounting
//!
//! The page links its files relatively (`assets/main.js`, `tracker.js`), so
//! it must be served at a URL ending in `/`. axum's `Router::nest("/metrics",
//! router)` gives the inner `/` the path `/metrics` only and leaves
//! `/metrics/` unrouted (axum 0.8, tokio-rs/axum#2659), so there are two
//! ways to mount:
//!
//! - [`router_at("/metrics")`](MetricsDashboard::router_at), merged into the
//!   app: the page at `/metrics/`, and `/metrics` redirects there (308,
//!   query kept). This is the one to use.
//! - [`router()`](MetricsDashboard::router), the same routes relative to the
//!   mount, for `.nest(path, ..)`, `.nest_service(path, ..)` or a merge at
//!   the root. Nested at `/metrics` it answers `/metrics` itself, with a
//!   `<base href="/metrics/">` so the links still resolve; `/metrics/` is then
//!   a 404, as for every nested axum router.
//!
//! ```
//! use axum::{Router, body::Body};
//! use http::Request;
//! use metrics_core::{SharedAdminCheck, StaticAdmins};
//! use metrics_tower::axum::dashboard::MetricsDashboard;
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let admins = SharedAdminCheck::new(StaticAdmins::parse("ada@example.com"));
//! let app: Router = Router::new()
//!     // .nest("/api/v1/metrics", api.router()) beside it, and the metrics layer outside.
//!     .merge(MetricsDashboard::new(admins).router_at("/metrics"));
//!
//! let res = app
//!     .oneshot(Request::get("/metrics/tracker.js").body(Body::empty()).unwrap())
//!     .await
//!     .unwrap();
//! assert_eq!(res.headers()["content-type"], "text/javascript");
//! # }
//! ```

mod assets;
mod handlers;
mod page;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use metrics_core::SharedAdminCheck;

use self::assets::Assets;
use self::handlers::DashboardState;
use self::page::Page;
use super::SharedIdentity;
use crate::identity::{IdentityLayer, MakeIdentity};

/// Where the page looks for the API unless told otherwise.
pub const DEFAULT_API_PATH: &str = "/api/v1/metrics";

/// The dashboard page, its assets and the tracker, as a mountable axum
/// router. See the [module docs](self) for the routes and how to mount them.
///
/// # Example
///
/// ```
/// use axum::{Router, body::Body};
/// use http::{Request, StatusCode};
/// use metrics_core::{Identity, SharedAdminCheck, StaticAdmins};
/// use metrics_tower::axum::dashboard::MetricsDashboard;
/// use tower::ServiceExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let admins = SharedAdminCheck::new(StaticAdmins::parse("ada@example.com"));
/// let app: Router = Router::new().merge(
///     MetricsDashboard::new(admins)
///         .api_path("/internal/metrics-api")
///         .router_at("/admin/metrics"),
/// );
///
/// // Normally the app's auth (or MetricsLayer + TrustedProxyHeaders) sets the identity.
/// let mut req = Request::get("/admin/metrics/").body(Body::empty()).unwrap();
/// req.extensions_mut().insert(Identity::new("ada@example.com"));
/// let res = app.clone().oneshot(req).await.unwrap();
/// assert_eq!(res.status(), StatusCode::OK);
///
/// let mut req = Request::get("/admin/metrics/").body(Body::empty()).unwrap();
/// req.extensions_mut().insert(Identity::new("bob@example.com"));
/// assert_eq!(app.oneshot(req).await.unwrap().status(), StatusCode::FORBIDDEN);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct MetricsDashboard {
    admins: SharedAdminCheck,
    identity: SharedIdentity,
    api_path: String,
}

impl MetricsDashboard {
    /// A dashboard shown to the administrators `admins` names (share the
    /// check with the API), reading the API at [`DEFAULT_API_PATH`].
    pub fn new(admins: SharedAdminCheck) -> Self {
        Self {
            admins,
            identity: SharedIdentity::default(),
            api_path: DEFAULT_API_PATH.to_owned(),
        }
    }

    /// Finds the caller of page requests that arrive without an
    /// [`Identity`](metrics_core::Identity) extension with `make_identity`
    /// (default: none, so they get the 401 page); the same rule as
    /// [`MetricsApi::identity_with`](crate::axum::api::MetricsApi::identity_with).
    pub fn identity_with<I>(mut self, make_identity: I) -> Self
    where
        I: MakeIdentity<axum::body::Body> + Send + Sync + 'static,
    {
        self.identity = SharedIdentity::new(make_identity);
        self
    }

    /// Where the page finds the API: the path the API router is nested at,
    /// on the same origin (the page's CSP allows no other). A trailing `/`
    /// is dropped. Default [`DEFAULT_API_PATH`].
    pub fn api_path(mut self, path: impl Into<String>) -> Self {
        let path = path.into();
        self.api_path = path.trim_end_matches('/').to_owned();
        self
    }

    /// The routes relative to the mount (`/`, `/tracker.js`,
    /// `/assets/{*path}`), for `.nest(..)`, `.nest_service(..)` or a merge at
    /// the root; see the [module docs](self#mounting) for what
    /// `Router::nest` does with the trailing slash. Works with any router
    /// state.
    pub fn router<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        self.routes("")
    }

    /// The routes under `mount` (for example `"/metrics"`), to merge into
    /// the app: the page at `<mount>/`, `<mount>` redirecting there,
    /// `<mount>/tracker.js` and `<mount>/assets/{*path}`. A trailing `/` on
    /// `mount` is dropped; `"/"` or `""` is the same as
    /// [`router`](Self::router).
    ///
    /// # Panics
    ///
    /// If `mount` does not start with `/`, or is not a path axum can route.
    #[track_caller]
    pub fn router_at<S: Clone + Send + Sync + 'static>(&self, mount: &str) -> Router<S> {
        let mount = mount.trim_end_matches('/');
        assert!(
            mount.is_empty() || mount.starts_with('/'),
            "the dashboard's mount path must start with '/', got {mount:?}"
        );
        self.routes(mount)
    }

    fn routes<S: Clone + Send + Sync + 'static>(&self, mount: &str) -> Router<S> {
        let state = Arc::new(DashboardState {
            admins: self.admins.clone(),
            page: Page::new(&self.api_path),
            assets: Assets::embedded(),
            relative: mount.is_empty(),
        });
        let (page_bytes, page_gzip_bytes) = state.page.sizes();
        tracing::debug!(
            mount,
            page_bytes,
            page_gzip_bytes,
            api_path = %self.api_path,
            "dashboard routes built"
        );
        let router = Router::new()
            .route(&format!("{mount}/"), get(handlers::page))
            .route(&format!("{mount}/tracker.js"), get(handlers::tracker))
            .route(&format!("{mount}/assets/{{*path}}"), get(handlers::asset));
        let router = if mount.is_empty() {
            router
        } else {
            // Relative, so it still points right when the app itself is
            // nested or sits behind a path prefix.
            let last = mount.rsplit('/').next().unwrap_or_default();
            let target = format!("{last}/");
            router.route(
                mount,
                get(move |request: Request| async move { add_slash(&target, &request) }),
            )
        };
        router
            .with_state(state)
            .layer(IdentityLayer::new(self.identity.clone()))
    }
}

/// `<mount>` → `<mount>/`, keeping the query (`/metrics?range=7d` opens the
/// same view).
fn add_slash(target: &str, request: &Request) -> Response {
    let location = match request.uri().query() {
        Some(query) => format!("{target}?{query}"),
        None => target.to_owned(),
    };
    Redirect::permanent(&location).into_response()
}
