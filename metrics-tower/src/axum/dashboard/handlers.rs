//! The dashboard's axum handlers and the state they share. The page and
//! the files know how to answer (`page`, `assets`); these only take the
//! request apart and pick the answer, so the router (the parent) and the
//! parts (the siblings) do not depend on each other.

use std::sync::Arc;

use axum::extract::{NestedPath, Path, Request, State};
use axum::response::Response;
use http::HeaderMap;
use metrics_core::SharedAdminCheck;

use super::assets::Assets;
use super::page::{self, Page};

/// What the handlers share, made once per router.
#[derive(Debug)]
pub(super) struct DashboardState {
    pub(super) admins: SharedAdminCheck,
    pub(super) page: Page,
    pub(super) assets: Assets,
    /// Built by [`MetricsDashboard::router`](super::MetricsDashboard::router): the page's own path is the
    /// nest path, which may lack the trailing slash.
    pub(super) relative: bool,
}

impl DashboardState {
    /// The `<base>` the page needs: when the relative router is nested at a
    /// path without a trailing slash, the page is answered at that path and
    /// its links must resolve below it.
    fn base_for(&self, nested: Option<&NestedPath>) -> Option<String> {
        let nested = nested?.as_str();
        (self.relative && !nested.ends_with('/')).then(|| format!("{nested}/"))
    }
}

/// `GET /`: the dashboard for admins, the refusal page for everyone else.
pub(super) async fn page(State(state): State<Arc<DashboardState>>, request: Request) -> Response {
    let (parts, _body) = request.into_parts();
    let base = state.base_for(parts.extensions.get::<NestedPath>());
    page::answer(&state.page, &state.admins, parts, base.as_deref()).await
}

/// `GET /assets/{*path}`: the file, or 404 for any other name.
pub(super) async fn asset(
    State(state): State<Arc<DashboardState>>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    state.assets.respond(&path, &headers)
}

/// `GET /tracker.js`.
pub(super) async fn tracker(
    State(state): State<Arc<DashboardState>>,
    headers: HeaderMap,
) -> Response {
    state.assets.respond_tracker(&headers)
}
