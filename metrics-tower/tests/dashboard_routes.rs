//! The dashboard router over real axum routers: who gets the page and who a
//! refusal (with the contract's texts and no numbers), the exact content
//! types, `ETag` / 304, `Cache-Control`, `nosniff`, the CSP, the
//! trailing-slash redirect, both ways of mounting, the API path in the
//! `<meta>`, unknown assets, every file the page links being served, gzip
//! by `Accept-Encoding` (q-values, `Vary`, an `ETag` and a 304 per variant),
//! and the size budgets (tracker ≤ 20 KiB, page + assets + tracker ≤ 60 KB
//! as sent gzipped; the uncompressed total is printed).

#![cfg(feature = "axum")]

use std::collections::BTreeSet;
use std::io::Read as _;

use axum::Router;
use axum::body::Body;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use metrics_core::{AdminCheck, AdminCheckError, Identity, SharedAdminCheck, async_trait};
use metrics_tower::axum::dashboard::MetricsDashboard;
use tower::ServiceExt;
use tower::util::MapRequestLayer;

const ADMIN: &str = "ada@example.com";
const USER: &str = "bob@example.com";
const BROKEN: &str = "broken@example.com";

const NOT_ADMIN_TEXT: &str =
    "Admin access required. Only workspace administrators can view metrics.";
const UNAUTHENTICATED_TEXT: &str = "Authentication required. Please log in.";

// ===== helpers =====

/// `ADMIN` is an admin, `BROKEN` makes the check fail, everyone else is not.
struct Admins;

#[async_trait]
impl AdminCheck for Admins {
    async fn is_admin(&self, identity: &Identity) -> Result<bool, AdminCheckError> {
        match identity.user_id().as_str() {
            BROKEN => Err(AdminCheckError::unavailable("connection refused")),
            user => Ok(user == ADMIN),
        }
    }
}

fn dashboard() -> MetricsDashboard {
    MetricsDashboard::new(SharedAdminCheck::new(Admins))
}

/// The identity from an `x-user` header, as the app's auth would set it.
fn with_identity(router: Router) -> Router {
    fn insert(mut req: Request<Body>) -> Request<Body> {
        let user = req
            .headers()
            .get("x-user")
            .and_then(|v| v.to_str().ok())
            .map(Identity::new);
        if let Some(identity) = user {
            req.extensions_mut().insert(identity);
        }
        req
    }
    router.layer(MapRequestLayer::new(insert as fn(_) -> _))
}

/// The example app's way: merged at `/metrics`.
fn app() -> Router {
    with_identity(Router::new().merge(dashboard().router_at("/metrics")))
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    /// The body as text (empty when it is not UTF-8, as gzip is not).
    body: String,
    /// The body's bytes as sent.
    bytes: Vec<u8>,
}

impl Answer {
    /// The body, gunzipped when it was sent gzipped.
    fn decoded(&self) -> String {
        if self.headers.get("content-encoding").is_none() {
            return self.body.clone();
        }
        let mut out = String::new();
        flate2::read::GzDecoder::new(&self.bytes[..])
            .read_to_string(&mut out)
            .expect("a valid gzip stream of UTF-8 text");
        out
    }
}

async fn get(app: &Router, path: &str, user: Option<&str>, headers: &[(&str, &str)]) -> Answer {
    let mut req = Request::get(path);
    if let Some(user) = user {
        req = req.header("x-user", user);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes().to_vec();
    Answer {
        status,
        headers,
        body: String::from_utf8(bytes.clone()).unwrap_or_default(),
        bytes,
    }
}

fn header<'a>(answer: &'a Answer, name: &str) -> &'a str {
    answer
        .headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

/// The text a reader sees: the body without tags.
fn visible_text(html: &str) -> String {
    let body = html.split("<body>").nth(1).unwrap_or(html);
    let mut out = String::new();
    let mut in_tag = false;
    for c in body.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// Every `src="..."` / `href="..."` value in `html`.
fn links(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["src=\"", "href=\""] {
        for piece in html.split(attr).skip(1) {
            out.push(piece.split('"').next().unwrap().to_owned());
        }
    }
    out
}

/// Whether `html` has an attribute like `onclick=`.
fn has_inline_handler(html: &str) -> bool {
    html.split(" on").skip(1).any(|rest| {
        let name: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
        !name.is_empty() && rest[name.len()..].starts_with('=')
    })
}

/// Every module a script imports (`from "./x.js"`).
fn imports(js: &str) -> Vec<String> {
    js.split("from \"./")
        .skip(1)
        .map(|piece| piece.split('"').next().unwrap().to_owned())
        .collect()
}

// ===== the page =====

#[tokio::test]
async fn admin_gets_the_page_with_its_headers() {
    let page = get(&app(), "/metrics/", Some(ADMIN), &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(header(&page, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&page, "cache-control"), "no-cache");
    assert_eq!(header(&page, "x-content-type-options"), "nosniff");
    assert!(page.body.contains("<title>Application Metrics</title>"));
    assert!(page.body.contains("<h1>Application Metrics</h1>"));
    assert!(
        page.body
            .contains(r#"<meta name="app-metrics-api" content="/api/v1/metrics">"#)
    );
    assert!(!page.body.contains("{{"), "a placeholder is left");
    assert!(!page.body.contains("<base"), "no <base> at /metrics/");

    let csp = header(&page, "content-security-policy");
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} missing from {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    // And the page needs no exemption: no inline script, style or handler.
    assert!(!page.body.contains("<style"));
    assert!(!page.body.contains("style=\""));
    assert!(!has_inline_handler(&page.body), "an inline event handler");
    for script in page.body.split("<script").skip(1) {
        let open = script.split('>').next().unwrap();
        assert!(open.contains("src=\""), "inline script: <script{open}>");
        assert!(script.split('>').nth(1).unwrap().starts_with("</script"));
    }
}

#[tokio::test]
async fn page_links_are_relative_to_the_mount_and_the_tracker_is_configured() {
    let page = get(&app(), "/metrics/", Some(ADMIN), &[]).await;
    let links = links(&page.body);
    assert!(links.contains(&"assets/app.css".to_owned()), "{links:?}");
    assert!(links.contains(&"assets/main.js".to_owned()), "{links:?}");
    assert!(links.contains(&"tracker.js".to_owned()), "{links:?}");
    for link in &links {
        assert!(
            !link.starts_with('/') && !link.contains("//"),
            "{link} is not relative"
        );
    }
    let tracker = page
        .body
        .split("<script src=\"tracker.js\"")
        .nth(1)
        .unwrap()
        .split('>')
        .next()
        .unwrap();
    assert!(tracker.contains(r#"data-endpoint="/api/v1/metrics/usage-events""#));
    assert!(tracker.contains(r#"data-auto-click="false""#));
}

#[tokio::test]
async fn etag_is_strong_and_if_none_match_gives_304() {
    let app = app();
    for path in [
        "/metrics/",
        "/metrics/tracker.js",
        "/metrics/assets/main.js",
    ] {
        let first = get(&app, path, Some(ADMIN), &[]).await;
        let etag = header(&first, "etag").to_owned();
        assert!(
            etag.starts_with('"') && etag.ends_with('"'),
            "{path}: {etag}"
        );
        let again = get(&app, path, Some(ADMIN), &[]).await;
        assert_eq!(header(&again, "etag"), etag, "{path}: the tag is stable");

        let cached = get(&app, path, Some(ADMIN), &[("if-none-match", &etag)]).await;
        assert_eq!(cached.status, StatusCode::NOT_MODIFIED, "{path}");
        assert!(cached.body.is_empty(), "{path}");
        assert_eq!(header(&cached, "etag"), etag);
        assert_eq!(header(&cached, "cache-control"), "no-cache");

        let stale = get(&app, path, Some(ADMIN), &[("if-none-match", "\"old\"")]).await;
        assert_eq!(stale.status, StatusCode::OK, "{path}");
        assert_eq!(stale.body, first.body);
    }
}

#[tokio::test]
async fn the_etag_follows_the_content() {
    let a = with_identity(dashboard().router_at("/metrics"));
    let b = with_identity(dashboard().api_path("/other").router_at("/metrics"));
    let a = get(&a, "/metrics/", Some(ADMIN), &[]).await;
    let b = get(&b, "/metrics/", Some(ADMIN), &[]).await;
    assert_ne!(header(&a, "etag"), header(&b, "etag"));
}

#[tokio::test]
async fn a_304_is_only_for_admins() {
    let app = app();
    let page = get(&app, "/metrics/", Some(ADMIN), &[]).await;
    let etag = header(&page, "etag").to_owned();
    let other = get(&app, "/metrics/", Some(USER), &[("if-none-match", &etag)]).await;
    assert_eq!(other.status, StatusCode::FORBIDDEN);
}

// ===== who sees what =====

#[tokio::test]
async fn others_get_the_contract_texts_and_no_numbers() {
    let app = app();
    let cases = [
        (Some(USER), StatusCode::FORBIDDEN, NOT_ADMIN_TEXT),
        (None, StatusCode::UNAUTHORIZED, UNAUTHENTICATED_TEXT),
        (
            Some(BROKEN),
            StatusCode::SERVICE_UNAVAILABLE,
            "Unable to verify administrator privileges. Please try again later.",
        ),
    ];
    for (user, status, text) in cases {
        let page = get(&app, "/metrics/", user, &[]).await;
        assert_eq!(page.status, status, "{user:?}");
        assert_eq!(header(&page, "content-type"), "text/html; charset=utf-8");
        assert_eq!(header(&page, "cache-control"), "no-store");
        assert_eq!(header(&page, "x-content-type-options"), "nosniff");
        assert!(header(&page, "content-security-policy").contains("default-src 'self'"));
        assert!(page.body.contains("<title>Application Metrics</title>"));
        let seen = visible_text(&page.body);
        assert!(seen.contains(text), "{user:?}: {seen}");
        assert!(
            !seen.chars().any(|c| c.is_ascii_digit()),
            "{user:?} sees a number: {seen}"
        );
        assert!(!page.body.contains("<script"), "{user:?}: no script");
        assert!(!page.body.contains("app-metrics-api"), "{user:?}");
    }
}

#[tokio::test]
async fn tracker_and_assets_need_no_identity() {
    let app = app();
    let tracker = get(&app, "/metrics/tracker.js", None, &[]).await;
    assert_eq!(tracker.status, StatusCode::OK);
    assert_eq!(header(&tracker, "content-type"), "text/javascript");
    assert_eq!(header(&tracker, "x-content-type-options"), "nosniff");
    assert_eq!(header(&tracker, "cache-control"), "no-cache");
    assert!(
        tracker.body.len() <= 20 * 1024,
        "tracker.js is {} bytes",
        tracker.body.len()
    );

    let css = get(&app, "/metrics/assets/app.css", None, &[]).await;
    assert_eq!(css.status, StatusCode::OK);
    assert_eq!(header(&css, "content-type"), "text/css; charset=utf-8");
    assert_eq!(header(&css, "x-content-type-options"), "nosniff");

    let js = get(&app, "/metrics/assets/main.js", Some(USER), &[]).await;
    assert_eq!(js.status, StatusCode::OK);
    assert_eq!(header(&js, "content-type"), "text/javascript");
}

#[tokio::test]
async fn unknown_assets_are_404() {
    let app = app();
    for path in [
        "/metrics/assets/nope.js",
        "/metrics/assets/index.html",
        "/metrics/assets/../mod.rs",
        "/metrics/assets/%2e%2e/mod.rs",
        "/metrics/assets/main.js/x",
        "/metrics/assets/MAIN.JS",
    ] {
        let res = get(&app, path, Some(ADMIN), &[]).await;
        assert_eq!(res.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(header(&res, "x-content-type-options"), "nosniff");
    }
}

// ===== mounting =====

#[tokio::test]
async fn without_the_slash_redirects_keeping_the_query() {
    let app = app();
    let plain = get(&app, "/metrics", None, &[]).await;
    assert_eq!(plain.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(header(&plain, "location"), "metrics/");

    let query = get(&app, "/metrics?range=7d", Some(ADMIN), &[]).await;
    assert_eq!(query.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(header(&query, "location"), "metrics/?range=7d");

    // Relative to the page's URL, so a deeper mount points to its own slash form.
    let deep = with_identity(dashboard().router_at("/admin/metrics/"));
    let res = get(&deep, "/admin/metrics", None, &[]).await;
    assert_eq!(header(&res, "location"), "metrics/");
    assert_eq!(
        get(&deep, "/admin/metrics/", Some(ADMIN), &[]).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn relative_router_nested_answers_at_the_nest_path_with_a_base() {
    let app = with_identity(Router::new().nest("/metrics", dashboard().router()));
    let page = get(&app, "/metrics", Some(ADMIN), &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains(r#"<base href="/metrics/">"#),
        "{}",
        page.body
    );
    let again = get(&app, "/metrics?range=7d", Some(ADMIN), &[]).await;
    assert_eq!(header(&again, "etag"), header(&page, "etag"));

    let refused = get(&app, "/metrics", Some(USER), &[]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.body.contains(r#"<base href="/metrics/">"#));

    for path in ["/metrics/tracker.js", "/metrics/assets/app.css"] {
        assert_eq!(
            get(&app, path, None, &[]).await.status,
            StatusCode::OK,
            "{path}"
        );
    }
    // axum's nest leaves the slash form unrouted: why `router_at` exists.
    assert_eq!(
        get(&app, "/metrics/", Some(ADMIN), &[]).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn relative_router_merged_at_the_root() {
    let app = with_identity(dashboard().router());
    let page = get(&app, "/", Some(ADMIN), &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.body.contains("<base"));
    assert_eq!(
        get(&app, "/assets/main.js", None, &[]).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn router_state_is_generic() {
    #[derive(Clone)]
    struct AppState;
    let app: Router = Router::<AppState>::new()
        .merge(dashboard().router_at("/metrics"))
        .with_state(AppState);
    let res = get(&app, "/metrics/tracker.js", None, &[]).await;
    assert_eq!(res.status, StatusCode::OK);
}

#[tokio::test]
async fn api_path_goes_into_the_meta_escaped() {
    let app = with_identity(
        dashboard()
            .api_path("/internal/api/\"x\"<y>/")
            .router_at("/metrics"),
    );
    let page = get(&app, "/metrics/", Some(ADMIN), &[]).await;
    assert!(
        page.body.contains(
            r#"<meta name="app-metrics-api" content="/internal/api/&quot;x&quot;&lt;y&gt;">"#
        ),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains(r#"data-endpoint="/internal/api/&quot;x&quot;&lt;y&gt;/usage-events""#)
    );
}

#[test]
#[should_panic(expected = "must start with '/'")]
fn mount_must_be_a_path() {
    let _: Router = dashboard().router_at("metrics");
}

// ===== the files =====

#[tokio::test]
async fn every_file_the_page_uses_is_served() {
    let app = app();
    const GZIP: &[(&str, &str)] = &[("accept-encoding", "gzip, deflate, br, zstd")];
    let page = get(&app, "/metrics/", Some(ADMIN), &[]).await;
    let mut seen = BTreeSet::new();
    let mut todo: Vec<String> = links(&page.body)
        .into_iter()
        // tracker.js is the app's, not the page's; the icon is an empty
        // `data:` URL, nothing to fetch.
        .filter(|l| l != "tracker.js" && l != "data:,")
        .collect();
    let mut total = page.body.len();
    let mut wire = get(&app, "/metrics/", Some(ADMIN), GZIP).await.bytes.len();
    while let Some(link) = todo.pop() {
        if !seen.insert(link.clone()) {
            continue;
        }
        let path = format!("/metrics/{link}");
        let file = get(&app, &path, None, &[]).await;
        assert_eq!(file.status, StatusCode::OK, "{link}");
        total += file.body.len();
        wire += get(&app, &path, None, GZIP).await.bytes.len();
        if link.ends_with(".js") {
            for import in imports(&file.body) {
                todo.push(format!("assets/{import}"));
            }
            // The SVG namespace is a name, not a request.
            let body = file.body.replace("http://www.w3.org/2000/svg", "");
            assert!(
                !body.contains("http://") && !body.contains("https://"),
                "{link} names another origin"
            );
        }
    }
    assert!(seen.len() >= 9, "page, css and the modules: {seen:?}");
    let tracker = get(&app, "/metrics/tracker.js", None, &[]).await;
    total += tracker.body.len();
    wire += get(&app, "/metrics/tracker.js", None, GZIP)
        .await
        .bytes
        .len();
    // The budget is what a browser transfers (it asks for gzip); the
    // uncompressed total is reported to watch the source grow.
    println!(
        "dashboard files: {} files, {total} bytes uncompressed, {wire} bytes gzipped",
        seen.len() + 2
    );
    assert!(
        wire <= 60_000,
        "page + assets + tracker are {wire} bytes gzipped"
    );
    assert!(wire * 2 < total, "gzip saves little: {wire} of {total}");
}

// ===== gzip =====

/// Every kind of file: the page, the tracker, a stylesheet and a module.
const FILES: [&str; 4] = [
    "/metrics/",
    "/metrics/tracker.js",
    "/metrics/assets/app.css",
    "/metrics/assets/main.js",
];

#[tokio::test]
async fn gzip_when_accept_encoding_allows_it() {
    let app = app();
    for path in FILES {
        let plain = get(&app, path, Some(ADMIN), &[]).await;
        assert!(plain.headers.get("content-encoding").is_none(), "{path}");
        assert_eq!(header(&plain, "vary"), "accept-encoding", "{path}");
        for accept in [
            "gzip",
            "gzip, deflate, br, zstd",
            "br;q=1.0, gzip;q=0.8, *;q=0.1",
            "deflate, *;q=0.5",
            "identity;q=0.5, gzip",
        ] {
            let gz = get(&app, path, Some(ADMIN), &[("accept-encoding", accept)]).await;
            assert_eq!(gz.status, StatusCode::OK, "{path} {accept}");
            assert_eq!(header(&gz, "content-encoding"), "gzip", "{path} {accept}");
            assert_eq!(header(&gz, "vary"), "accept-encoding");
            assert_eq!(header(&gz, "content-type"), header(&plain, "content-type"));
            assert_eq!(header(&gz, "cache-control"), "no-cache");
            assert_eq!(header(&gz, "x-content-type-options"), "nosniff");
            assert_eq!(
                header(&gz, "content-length"),
                gz.bytes.len().to_string(),
                "{path}"
            );
            assert!(gz.bytes.len() < plain.bytes.len(), "{path}");
            assert_eq!(gz.decoded(), plain.body, "{path}: the same file");
            let (tag, plain_tag) = (header(&gz, "etag"), header(&plain, "etag"));
            assert!(tag.starts_with('"') && tag.ends_with('"'), "strong: {tag}");
            assert_ne!(tag, plain_tag, "{path}: a tag per variant");
        }
    }
    // The page's CSP and other HTML headers come with either variant.
    let gz = get(
        &app,
        "/metrics/",
        Some(ADMIN),
        &[("accept-encoding", "gzip")],
    )
    .await;
    assert!(header(&gz, "content-security-policy").contains("default-src 'self'"));
    assert_eq!(header(&gz, "x-frame-options"), "DENY");
}

#[tokio::test]
async fn identity_when_gzip_is_not_allowed() {
    let app = app();
    for path in FILES {
        let plain = get(&app, path, Some(ADMIN), &[]).await;
        for accept in [
            "",
            "identity",
            "deflate, br",
            "gzip;q=0",
            "gzip; q=0.000, *",
            "*;q=0",
            "gzip;q=0.5, identity",
            "gzip;q=2",
            "gzip;q=nope",
        ] {
            let res = get(&app, path, Some(ADMIN), &[("accept-encoding", accept)]).await;
            assert_eq!(res.status, StatusCode::OK, "{path} {accept:?}");
            assert!(
                res.headers.get("content-encoding").is_none(),
                "{path} {accept:?}"
            );
            assert_eq!(header(&res, "vary"), "accept-encoding");
            assert_eq!(res.body, plain.body, "{path} {accept:?}");
            assert_eq!(header(&res, "etag"), header(&plain, "etag"));
        }
    }
}

#[tokio::test]
async fn each_variant_answers_its_own_if_none_match() {
    let app = app();
    let gzip = ("accept-encoding", "gzip, deflate");
    for path in FILES {
        let plain = get(&app, path, Some(ADMIN), &[]).await;
        let gz = get(&app, path, Some(ADMIN), &[gzip]).await;
        let (plain_tag, gz_tag) = (header(&plain, "etag"), header(&gz, "etag"));

        let cached = get(&app, path, Some(ADMIN), &[gzip, ("if-none-match", gz_tag)]).await;
        assert_eq!(cached.status, StatusCode::NOT_MODIFIED, "{path}");
        assert!(cached.bytes.is_empty());
        assert_eq!(header(&cached, "etag"), gz_tag);
        assert_eq!(header(&cached, "vary"), "accept-encoding");
        assert_eq!(header(&cached, "cache-control"), "no-cache");

        let cached = get(&app, path, Some(ADMIN), &[("if-none-match", plain_tag)]).await;
        assert_eq!(cached.status, StatusCode::NOT_MODIFIED, "{path}");
        assert_eq!(header(&cached, "etag"), plain_tag);
        assert_eq!(header(&cached, "vary"), "accept-encoding");

        // Holding the other variant is not holding this one.
        let other = get(
            &app,
            path,
            Some(ADMIN),
            &[gzip, ("if-none-match", plain_tag)],
        )
        .await;
        assert_eq!(other.status, StatusCode::OK, "{path}");
        assert_eq!(header(&other, "content-encoding"), "gzip");
        assert_eq!(other.bytes, gz.bytes);
        let other = get(&app, path, Some(ADMIN), &[("if-none-match", gz_tag)]).await;
        assert_eq!(other.status, StatusCode::OK, "{path}");
        assert!(other.headers.get("content-encoding").is_none());
        assert_eq!(other.body, plain.body);
    }
}

#[tokio::test]
async fn gzip_follows_the_api_path_and_the_base() {
    let gzip = ("accept-encoding", "gzip");
    let app = with_identity(dashboard().api_path("/other").router_at("/metrics"));
    let page = get(&app, "/metrics/", Some(ADMIN), &[gzip]).await;
    assert!(
        page.decoded()
            .contains(r#"<meta name="app-metrics-api" content="/other">"#)
    );
    let default = get(&self::app(), "/metrics/", Some(ADMIN), &[gzip]).await;
    assert_ne!(header(&page, "etag"), header(&default, "etag"));

    let nested = with_identity(Router::new().nest("/metrics", dashboard().router()));
    let page = get(&nested, "/metrics", Some(ADMIN), &[gzip]).await;
    assert_eq!(header(&page, "content-encoding"), "gzip");
    assert!(page.decoded().contains(r#"<base href="/metrics/">"#));
    let tag = header(&page, "etag").to_owned();
    let cached = get(
        &nested,
        "/metrics",
        Some(ADMIN),
        &[gzip, ("if-none-match", &tag)],
    )
    .await;
    assert_eq!(cached.status, StatusCode::NOT_MODIFIED);

    // Refusals are small and never cached: sent as they are.
    let refused = get(&self::app(), "/metrics/", Some(USER), &[gzip]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.headers.get("content-encoding").is_none());
    assert!(refused.body.contains(NOT_ADMIN_TEXT));
}
