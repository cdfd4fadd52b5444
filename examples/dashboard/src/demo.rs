//! The example app's demo pages (`/demo/`): two small HTML pages that load
//! the dashboard's `tracker.js` from `/metrics/tracker.js`, so clicking
//! around sends real usage events, and the development-only auto-login that
//! lets a plain browser open the admin dashboard.

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

const INDEX_HTML: &str = include_str!("demo/index.html");
const REPORTS_HTML: &str = include_str!("demo/reports.html");
const DEMO_JS: &str = include_str!("demo/demo.js");
const DEMO_CSS: &str = include_str!("demo/demo.css");

/// The demo pages under `/demo`.
pub fn pages<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/demo", get(|| async { Redirect::permanent("/demo/") }))
        .route("/demo/", get(|| async { html(INDEX_HTML) }))
        .route("/demo/reports.html", get(|| async { html(REPORTS_HTML) }))
        .route(
            "/demo/demo.js",
            get(|| async { asset("text/javascript", DEMO_JS) }),
        )
        .route(
            "/demo/demo.css",
            get(|| async { asset("text/css; charset=utf-8", DEMO_CSS) }),
        )
}

fn html(body: &'static str) -> Response {
    asset("text/html; charset=utf-8", body)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response()
}

const EMAIL: HeaderName = HeaderName::from_static("x-forwarded-email");
const USER: HeaderName = HeaderName::from_static("x-forwarded-user");

/// Development only (`DEMO_AUTO_LOGIN`): a request that carries no identity
/// header gets `X-Forwarded-Email: <user>`, as if an auth proxy had signed
/// it in, so a plain browser (and its beacons) can open the dashboard as
/// the demo admin. Requests that name a user keep theirs. Mount it
/// outermost, before the metrics layer reads the headers; never in
/// production: anyone who can reach the app becomes `user`.
#[derive(Clone, Debug)]
pub struct AutoLogin {
    user: HeaderValue,
}

impl AutoLogin {
    /// Signs in requests without identity headers as `user`; `None` when
    /// `user` cannot be a header value.
    pub fn new(user: &str) -> Option<Self> {
        HeaderValue::from_str(user.trim())
            .ok()
            .filter(|v| !v.is_empty())
            .map(|user| Self { user })
    }

    /// The middleware function, for `axum::middleware::from_fn`.
    pub async fn apply(self, mut req: Request, next: Next) -> Response {
        let headers = req.headers_mut();
        if !headers.contains_key(&EMAIL) && !headers.contains_key(&USER) {
            headers.insert(EMAIL, self.user.clone());
        }
        next.run(req).await
    }
}
