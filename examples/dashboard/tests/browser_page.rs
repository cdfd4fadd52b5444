//! The dashboard page in a real headless Chromium, against the example app on
//! a real port (memory store): every bullet of CONTRACT.md §3 "Routes" and
//! "Page" from the outside, as an admin, a non-admin and an anonymous
//! visitor.
//!
//! Data comes from records put straight into the memory store (so every
//! number is known) or, where a test needs an exact answer (missing values,
//! a failing part), from the harness answering the API call itself
//! (`fail_requests_with_body` with status 200). The dashboard's own requests
//! are excluded from recording, so they do not change the numbers under test.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use app_metrics::AppMetrics;
use app_metrics::admin::StaticAdmins;
use app_metrics::identity::{TrustedProxyHeaders, UserId};
use app_metrics::layer::Exclusions;
use app_metrics::sink::{CorrelationId, RequestRecord, Route, UsageEvent};
use example_dashboard::Metrics;
use http::{HeaderValue, Method};
use serde_json::{Value, json};
use test_support::browser::{Browser, Page, SeenRequest};

const ADMIN: &str = "admin@example.com";
const API: &str = "/api/v1/metrics";
const WAIT: Duration = Duration::from_secs(15);

// ===== the site =====

struct Site {
    base: String,
    metrics: Metrics,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Site {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Site {
    /// The example app on a free port, `ADMIN` its only admin.
    async fn start() -> Self {
        let metrics = AppMetrics::memory()
            .identity(TrustedProxyHeaders)
            .configure_collector(|c| c.linger(Duration::from_millis(5)))
            .admins(StaticAdmins::parse(ADMIN))
            // The page's own traffic would change the numbers under test.
            .configure_layer(|l| {
                l.exclusions(Exclusions::none().prefixes(["/metrics", "/api/v1/metrics/"]))
            })
            .start()
            .await
            .unwrap();
        let app = example_dashboard::app(&metrics);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            base: format!("http://{addr}"),
            metrics,
            server,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Requests over the last hours: three endpoints, one with errors, each
    /// request with the correlation id `req-<i>` (but one).
    fn seed_requests(&self) {
        let sink = self.metrics.memory_sink().unwrap();
        let now = SystemTime::now();
        let rows: &[(&'static str, Method, u16, u64)] = &[
            ("/api/items/{id}", Method::GET, 200, 12_000),
            ("/api/items/{id}", Method::GET, 200, 18_000),
            ("/api/items/{id}", Method::GET, 404, 6_000),
            ("/api/orders", Method::POST, 201, 40_000),
            ("/api/orders", Method::POST, 500, 90_000),
            ("/api/health", Method::GET, 200, 1_000),
            ("/api/health", Method::GET, 200, 1_500),
            ("/api/health", Method::GET, 200, 2_500),
        ];
        for (i, (route, method, status, micros)) in rows.iter().enumerate() {
            let at = now - Duration::from_secs(600 + 900 * i as u64);
            sink.insert(
                RequestRecord::new(
                    at,
                    Route::from(*route),
                    method.clone(),
                    *status,
                    Duration::from_micros(*micros),
                )
                .with_user(Some(UserId::new(
                    ["ada@example.com", "bob@example.com"][i % 2],
                )))
                // Every request but the second health check has one: req-<i>.
                .with_correlation_id((i != 6).then(|| {
                    CorrelationId::from_header(&HeaderValue::try_from(format!("req-{i}")).unwrap())
                        .unwrap()
                })),
            );
        }
    }

    /// Requests of `/api/reports/{report_id}/exports` as production would
    /// record them: a generated (UUIDv7) correlation id, a long user name.
    fn seed_realistic_requests(&self) {
        let sink = self.metrics.memory_sink().unwrap();
        let now = SystemTime::now();
        for i in 0..3u64 {
            sink.insert(
                RequestRecord::new(
                    now - Duration::from_secs(3_600 * (i + 1)),
                    Route::from("/api/reports/{report_id}/exports"),
                    Method::POST,
                    200,
                    Duration::from_micros(1_234_567 + i),
                )
                .with_user(Some(UserId::new(
                    "firstname.lastname@subsidiary.example.com",
                )))
                .with_correlation_id(Some(CorrelationId::generate())),
            );
        }
    }

    /// Usage events: page views on seven pages (counts 7..1) and clicks.
    fn seed_events(&self) {
        let sink = self.metrics.memory_sink().unwrap();
        let now = SystemTime::now();
        let pages = [
            "/home",
            "/items",
            "/orders",
            "/settings",
            "/help",
            "/about",
            "/legal",
        ];
        let mut k = 0;
        for (i, page) in pages.iter().enumerate() {
            for _ in 0..(pages.len() - i) {
                k += 1;
                sink.insert(
                    UsageEvent::new(
                        "page_view",
                        UserId::new(
                            ["ada@example.com", "bob@example.com", "cy@example.com"][k % 3],
                        ),
                        now - Duration::from_secs(300 + 120 * k as u64),
                    )
                    .with_page_name(Some((*page).to_owned())),
                );
            }
        }
        for j in 0..3 {
            sink.insert(
                UsageEvent::new(
                    "button_click",
                    UserId::new("ada@example.com"),
                    now - Duration::from_secs(200 + 60 * j),
                )
                .with_element_id(Some("save".to_owned())),
            );
        }
    }
}

// ===== the page =====

async fn browser() -> &'static Browser {
    Browser::shared().await
}

/// A page with the admin's identity (or `user`'s, or none).
async fn page_as(user: Option<&str>) -> Page {
    let page = browser().await.new_page().await;
    if let Some(user) = user {
        page.set_extra_headers(&[("X-Forwarded-Email", user)]).await;
    }
    page
}

fn js_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn q(testid: &str) -> String {
    format!("document.querySelector('[data-testid=\"{testid}\"]')")
}

async fn text(page: &Page, testid: &str) -> String {
    page.eval(&format!("{}.textContent.trim()", q(testid)))
        .await
}

async fn visible(page: &Page, testid: &str) -> bool {
    page.eval(&format!(
        "(() => {{ const e = {}; return !!e && e.checkVisibility(); }})()",
        q(testid)
    ))
    .await
}

async fn attr(page: &Page, testid: &str, name: &str) -> Option<String> {
    page.eval(&format!("{}.getAttribute({})", q(testid), js_str(name)))
        .await
}

/// The page's GETs to the three data endpoints, in order.
fn data_requests(page: &Page) -> Vec<SeenRequest> {
    page.requests()
        .into_iter()
        .filter(|r| {
            r.method == "GET"
                && ["/performance?", "/usage?", "/time-series?"]
                    .iter()
                    .any(|p| r.url.contains(&format!("{API}{p}")))
        })
        .collect()
}

/// The path and query of each data request, sorted (they run in parallel).
fn data_paths(page: &Page, base: &str) -> Vec<String> {
    let mut paths: Vec<String> = data_requests(page)
        .into_iter()
        .map(|r| r.url.strip_prefix(base).unwrap_or(&r.url).to_owned())
        .collect();
    paths.sort();
    paths
}

fn expected_paths(range: &str) -> Vec<String> {
    let mut paths = vec![
        format!("{API}/performance?{range}"),
        format!("{API}/usage?{range}"),
        format!("{API}/time-series?metric_type=both&{range}"),
    ];
    paths.sort();
    paths
}

const IDLE: &str = "document.getElementById('main').getAttribute('aria-busy') === 'false' \
    && document.querySelector('[data-testid=\"refresh-button\"]').textContent === 'Refresh' \
    && document.querySelector('[data-testid=\"loading\"]').hidden";

/// Opens the dashboard and waits for the first answers to be rendered.
async fn open(site: &Site, page: &Page, query: &str) {
    page.goto(&site.url(&format!("/metrics/{query}"))).await;
    page.wait_for(IDLE, WAIT).await;
}

/// Clicks Refresh and waits for its three answers to be rendered.
async fn refresh(page: &Page) {
    page.clear_requests();
    page.click("[data-testid=refresh-button]").await;
    for _ in 0..500 {
        if data_requests(page).len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    page.wait_for(IDLE, WAIT).await;
}

/// The API's own answer, fetched in the page (same identity).
async fn api(page: &Page, path: &str) -> Value {
    page.eval(&format!(
        "fetch({}).then(r => r.json())",
        js_str(&format!("{API}{path}"))
    ))
    .await
}

/// Sets a datetime-local input as a user's picker would, firing `input`.
async fn set_input(page: &Page, testid: &str, value: &str) {
    page.exec(&format!(
        "(() => {{ const e = {}; e.value = {}; e.dispatchEvent(new Event('input', {{ bubbles: true }})); \
         e.dispatchEvent(new Event('change', {{ bubbles: true }})); }})()",
        q(testid),
        js_str(value)
    ))
    .await;
}

/// A datetime-local value `offset_hours` from now, in the page's local time.
async fn local_input(page: &Page, offset_hours: f64) -> String {
    page.eval(&format!(
        "(() => {{ const d = new Date(Date.now() + {offset_hours} * 3600e3); const p = n => String(n).padStart(2, '0'); \
         return `${{d.getFullYear()}}-${{p(d.getMonth() + 1)}}-${{p(d.getDate())}}T${{p(d.getHours())}}:${{p(d.getMinutes())}}`; }})()"
    ))
    .await
}

/// The events the tracker has sent so far (the POST bodies), after a flush.
async fn tracked(page: &Page) -> Vec<Value> {
    page.exec("window.AppMetrics.flush()").await;
    page.wait_for(
        "window.AppMetrics.stats().in_flight === 0 && window.AppMetrics.stats().queued === 0",
        WAIT,
    )
    .await;
    page.requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.url.ends_with(&format!("{API}/usage-events")))
        .flat_map(|r| {
            let body: Value = serde_json::from_str(r.post_data.as_deref().unwrap_or("{}")).unwrap();
            body["events"].as_array().cloned().unwrap_or_default()
        })
        .collect()
}

// ===== Routes =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_page_redirect_tracker_and_assets() {
    let site = Site::start().await;
    let page = page_as(Some(ADMIN)).await;
    // Without the slash: redirected to the page.
    page.goto(&site.url("/metrics?range=7d")).await;
    let at: String = page.eval("location.pathname + location.search").await;
    assert_eq!(at, "/metrics/?range=7d");
    assert_eq!(
        page.eval::<String>("document.title").await,
        "Application Metrics"
    );
    page.wait_for(IDLE, WAIT).await;

    // Every request the page made went to its own origin and succeeded.
    let answers: Value = page
        .eval(
            "Promise.all(performance.getEntriesByType('resource').map(e => e.name)\
               .filter(u => u.includes('/metrics/assets/') || u.endsWith('/metrics/tracker.js'))\
               .map(u => fetch(u).then(r => [u, r.status, r.headers.get('content-type')])))",
        )
        .await;
    let answers = answers.as_array().unwrap();
    assert!(answers.len() >= 10, "page files: {answers:?}");
    for a in answers {
        let (url, status, ty) = (
            a[0].as_str().unwrap(),
            a[1].as_u64().unwrap(),
            a[2].as_str().unwrap(),
        );
        assert_eq!(status, 200, "{url}");
        let want = if url.ends_with(".css") {
            "text/css; charset=utf-8"
        } else {
            "text/javascript"
        };
        assert_eq!(ty, want, "{url}");
    }

    // The tracker and the assets need no identity.
    let anon = page_as(None).await;
    anon.goto(&site.url("/metrics/tracker.js")).await;
    let tracker: (String, usize) = anon
        .eval("fetch(location.href).then(async r => [r.headers.get('content-type'), (await r.arrayBuffer()).byteLength])")
        .await;
    assert_eq!(tracker.0, "text/javascript");
    assert!(tracker.1 <= 20 * 1024, "tracker.js is {} bytes", tracker.1);
    let status: u16 = anon
        .eval("fetch('/metrics/assets/main.js').then(r => r.status)")
        .await;
    assert_eq!(status, 200);
    let status: u16 = anon
        .eval("fetch('/metrics/assets/nothing.js').then(r => r.status)")
        .await;
    assert_eq!(status, 404);
    let page_type: String = page
        .eval("fetch('/metrics/').then(r => r.headers.get('content-type'))")
        .await;
    assert_eq!(page_type, "text/html; charset=utf-8");
}

/// What the page's own files cost a first visit, as Chromium measured it:
/// every file (the page, tracker.js, the stylesheet and every module)
/// gzipped on the wire, ≤ 60 KB transferred (headers included); the
/// uncompressed total is printed beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_files_fit_the_budget_as_transferred() {
    let site = Site::start().await;
    site.seed_requests();
    let page = page_as(Some(ADMIN)).await; // a new browser context: nothing cached
    open(&site, &page, "").await;

    #[derive(serde::Deserialize, Debug)]
    struct File {
        name: String,
        transfer: u64,
        encoded: u64,
        decoded: u64,
    }
    let files: Vec<File> = page
        .eval(
            "[performance.getEntriesByType('navigation')[0], ...performance.getEntriesByType('resource')]\
               .filter(e => !['fetch', 'xmlhttprequest', 'beacon'].includes(e.initiatorType) && new URL(e.name).pathname.startsWith('/metrics/'))\
               .map(e => ({ name: new URL(e.name).pathname, transfer: e.transferSize, encoded: e.encodedBodySize, decoded: e.decodedBodySize }))",
        )
        .await;
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    for want in [
        "/metrics/",
        "/metrics/tracker.js",
        "/metrics/assets/app.css",
        "/metrics/assets/main.js",
        "/metrics/assets/dom.js",
    ] {
        assert!(names.contains(&want), "{want} not loaded: {names:?}");
    }
    assert!(
        files.len() >= 12,
        "page, tracker, css and modules: {names:?}"
    );
    for f in &files {
        assert!(
            f.transfer > f.encoded,
            "{}: sent, not cached: {f:?}",
            f.name
        );
        assert!(f.encoded < f.decoded, "{}: sent gzipped: {f:?}", f.name);
    }
    let transferred: u64 = files.iter().map(|f| f.transfer).sum();
    let uncompressed: u64 = files.iter().map(|f| f.decoded).sum();
    println!(
        "dashboard page files: {} files, {transferred} bytes transferred, {uncompressed} bytes uncompressed",
        files.len()
    );
    assert!(
        transferred <= 60_000,
        "page + assets + tracker transferred {transferred} bytes: {files:#?}"
    );
}

// ===== first load, texts and test ids =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_load_texts_and_three_parallel_requests() {
    let site = Site::start().await;
    site.seed_requests();
    let page = page_as(Some(ADMIN)).await;
    for part in [
        "metrics/performance?",
        "metrics/usage?",
        "metrics/time-series?",
    ] {
        page.hold_requests(part).await;
    }
    page.goto(&site.url("/metrics/")).await;
    // All three are out before any has an answer: they run in parallel.
    page.wait_for(&format!("{} && true", q("refresh-button")), WAIT)
        .await;
    for _ in 0..500 {
        if page.held_requests() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(page.held_requests(), 3);

    assert_eq!(
        page.eval::<String>("document.title").await,
        "Application Metrics"
    );
    assert_eq!(
        page.eval::<String>("document.querySelector('h1').textContent")
            .await,
        "Application Metrics"
    );
    assert!(visible(&page, "loading").await);
    assert_eq!(text(&page, "loading").await, "Loading metrics...");
    // Busy while they run.
    assert_eq!(text(&page, "refresh-button").await, "Refreshing\u{2026}");
    assert!(
        page.eval::<bool>(&format!("{}.disabled", q("refresh-button")))
            .await
    );
    assert_eq!(
        page.eval::<String>("document.getElementById('main').getAttribute('aria-busy')")
            .await,
        "true"
    );

    // The range selector.
    assert_eq!(
        attr(&page, "time-range-selector", "role").await.as_deref(),
        Some("group")
    );
    assert_eq!(
        attr(&page, "time-range-selector", "aria-label")
            .await
            .as_deref(),
        Some("Time range")
    );
    let buttons: Vec<(String, String, String)> = page
        .eval(&format!(
            "[...{}.querySelectorAll('button')].map(b => [b.dataset.range, b.textContent, b.getAttribute('aria-pressed')])",
            q("time-range-selector")
        ))
        .await;
    let want = [
        ("24h", "Last 24 Hours", "true"),
        ("7d", "Last 7 Days", "false"),
        ("30d", "Last 30 Days", "false"),
        ("90d", "Last 90 Days", "false"),
        ("custom", "Custom", "false"),
    ];
    assert_eq!(buttons.len(), want.len(), "{buttons:?}");
    for ((r, t, p), (wr, wt, wp)) in buttons.iter().zip(want) {
        assert_eq!((r.as_str(), t.as_str(), p.as_str()), (wr, wt, wp));
    }
    let body: String = page.eval("document.body.innerText").await;
    assert!(
        body.contains("Select a time range and click 'Refresh' to update metrics."),
        "{body}"
    );

    page.release_requests().await;
    page.wait_for(IDLE, WAIT).await;
    assert!(!visible(&page, "loading").await);
    assert!(
        !page
            .eval::<bool>(&format!("{}.disabled", q("refresh-button")))
            .await
    );
    assert_eq!(
        data_paths(&page, &site.base),
        expected_paths("time_range=24h")
    );
    for testid in [
        "chart-performance",
        "chart-usage",
        "chart-event-types",
        "top-pages",
        "endpoint-table",
        "endpoint-count",
        "card-total-requests",
    ] {
        assert!(visible(&page, testid).await, "{testid} is not shown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cards_show_the_api_numbers_formatted() {
    let site = Site::start().await;
    site.seed_requests();
    site.seed_events();
    let page = page_as(Some(ADMIN)).await;
    open(&site, &page, "").await;
    let perf = api(&page, "/performance?time_range=24h").await;
    let usage = api(&page, "/usage?time_range=24h").await;
    let cards = [
        ("avg-response-time", &perf, "avg_response_time_ms", "ms"),
        ("p50", &perf, "p50_response_time_ms", "ms"),
        ("p95", &perf, "p95_response_time_ms", "ms"),
        ("p99", &perf, "p99_response_time_ms", "ms"),
        ("error-rate", &perf, "error_rate", "percent"),
        ("total-requests", &perf, "total_requests", "count"),
        ("active-users", &usage, "active_users", "count"),
        ("total-events", &usage, "total_events", "count"),
        ("unique-users", &usage, "unique_users", "count"),
    ];
    for (key, answer, field, kind) in cards {
        let raw = &answer["metrics"][field];
        assert!(raw.is_number(), "{field} in {answer}");
        let value_id = format!("card-{key}-value");
        assert!(visible(&page, &format!("card-{key}")).await, "{key}");
        let data_value = attr(&page, &value_id, "data-value").await.unwrap();
        assert_eq!(
            data_value.parse::<f64>().unwrap(),
            raw.as_f64().unwrap(),
            "{key}: data-value"
        );
        let shown = text(&page, &value_id).await;
        let want: String = match kind {
            "ms" => page.eval(&format!("`${{({raw}).toFixed(2)}} ms`")).await,
            "percent" => {
                page.eval(&format!("`${{(({raw}) * 100).toFixed(2)}}%`"))
                    .await
            }
            _ => page.eval(&format!("({raw}).toLocaleString()")).await,
        };
        assert_eq!(shown, want, "{key}");
    }
    // 2 of 8 requests failed: 25.00%, shown in the error colour, labelled "Error Rate".
    assert_eq!(text(&page, "card-error-rate-value").await, "25.00%");
    let label: String = page
        .eval(&format!(
            "{}.querySelector('h3').textContent",
            q("card-error-rate")
        ))
        .await;
    assert_eq!(label, "Error Rate");
    let colours: (String, String) = page
        .eval(&format!(
            "[getComputedStyle({}).color, getComputedStyle({}).color]",
            q("card-error-rate-value"),
            q("card-total-requests-value")
        ))
        .await;
    assert_ne!(colours.0, colours.1, "the error rate has its own colour");
    assert_eq!(colours.0, "rgb(180, 35, 24)");
    assert_eq!(text(&page, "card-total-requests-value").await, "8");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_numbers_use_locale_digits_and_two_decimals() {
    let site = Site::start().await;
    let page = page_as(Some(ADMIN)).await;
    let perf = json!({
        "time_range": "24h", "start_time": "2026-01-01T00:00:00Z", "end_time": "2026-01-02T00:00:00Z",
        "metrics": { "avg_response_time_ms": 1234.5678, "total_requests": 1234567, "error_rate": 0.125,
                     "p50_response_time_ms": 0, "p95_response_time_ms": 0.005, "p99_response_time_ms": 10 },
        "endpoints": []
    });
    page.fail_requests_with_body("metrics/performance?", 200, &perf.to_string())
        .await;
    open(&site, &page, "").await;
    assert_eq!(
        text(&page, "card-avg-response-time-value").await,
        "1234.57 ms"
    );
    assert_eq!(text(&page, "card-error-rate-value").await, "12.50%");
    assert_eq!(text(&page, "card-p50-value").await, "0.00 ms");
    assert!(
        visible(&page, "card-p50").await,
        "a percentile card stays at 0"
    );
    assert_eq!(text(&page, "card-p95-value").await, "0.01 ms");
    assert_eq!(text(&page, "card-p99-value").await, "10.00 ms");
    let locale: String = page.eval("(1234567).toLocaleString()").await;
    assert_eq!(text(&page, "card-total-requests-value").await, locale);
    assert_eq!(
        attr(&page, "card-total-requests-value", "data-value")
            .await
            .as_deref(),
        Some("1234567")
    );
    assert_eq!(
        attr(&page, "card-avg-response-time-value", "data-value")
            .await
            .as_deref(),
        Some("1234.5678")
    );
}

// ===== range, Refresh, busy =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_changes_send_nothing_refresh_sends_three() {
    let site = Site::start().await;
    site.seed_requests();
    let page = page_as(Some(ADMIN)).await;
    open(&site, &page, "").await;
    page.clear_requests();
    for range in ["7d", "30d", "90d", "7d"] {
        page.click(&format!("[data-range=\"{range}\"]")).await;
        let pressed: Vec<String> = page
            .eval("[...document.querySelectorAll('[data-range][aria-pressed=true]')].map(b => b.dataset.range)")
            .await;
        assert_eq!(pressed, [range]);
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        data_requests(&page).is_empty(),
        "a range change sent {:?}",
        data_requests(&page)
    );
    let search: String = page.eval("location.search").await;
    assert_eq!(search, "?range=7d");

    refresh(&page).await;
    assert_eq!(
        data_paths(&page, &site.base),
        expected_paths("time_range=7d")
    );
    let pressed: String = page
        .eval("document.querySelector('[data-range][aria-pressed=true]').dataset.range")
        .await;
    assert_eq!(pressed, "7d", "the selection is never reset");
    // No polling: nothing more comes.
    page.clear_requests();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(data_requests(&page).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_polling_and_no_caching() {
    let site = Site::start().await;
    let page = page_as(Some(ADMIN)).await;
    page.use_manual_clock().await;
    open(&site, &page, "").await;
    // The only timer left is the tracker's 10 s flush; the page keeps none.
    let timers = page.pending_timers().await;
    assert!(
        timers.iter().all(|t| t.delay_ms == 10_000.0),
        "the page keeps a timer: {timers:?}"
    );
    page.clear_requests();
    page.advance_clock(Duration::from_secs(300)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        data_requests(&page).is_empty(),
        "{:?}",
        data_requests(&page)
    );
    // Each Refresh asks the server again (no answer is reused).
    refresh(&page).await;
    refresh(&page).await;
    assert_eq!(data_requests(&page).len(), 3);
    let cache: Vec<String> = page
        .eval("performance.getEntriesByType('resource').filter(e => e.name.includes('/api/v1/metrics/') && e.transferSize === 0 && e.responseStart > 0).map(e => e.name)")
        .await;
    assert!(cache.is_empty(), "served from a cache: {cache:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_is_busy_while_its_requests_run() {
    let site = Site::start().await;
    let page = page_as(Some(ADMIN)).await;
    open(&site, &page, "").await;
    page.clear_requests();
    page.hold_requests("metrics/time-series?").await;
    page.click("[data-testid=refresh-button]").await;
    page.wait_for(
        &format!(
            "{}.textContent === 'Refreshing\u{2026}'",
            q("refresh-button")
        ),
        WAIT,
    )
    .await;
    assert!(
        page.eval::<bool>(&format!("{}.disabled", q("refresh-button")))
            .await
    );
    assert_eq!(
        page.eval::<String>("document.getElementById('main').getAttribute('aria-busy')")
            .await,
        "true"
    );
    // Clicks while busy are ignored.
    page.click("[data-testid=refresh-button]").await;
    page.exec(&format!("{}.click()", q("refresh-button"))).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(data_requests(&page).len(), 3, "{:?}", data_requests(&page));
    page.release_requests().await;
    page.wait_for(IDLE, WAIT).await;
    assert_eq!(text(&page, "refresh-button").await, "Refresh");
    assert_eq!(data_requests(&page).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calculating_after_two_seconds_and_a_ten_second_timeout() {
    let site = Site::start().await;
    let page = page_as(Some(ADMIN)).await;
    page.use_manual_clock().await;
    page.hold_requests("metrics/performance?").await;
    page.goto(&site.url("/metrics/")).await;
    page.wait_for(
        "window.__testClock && document.querySelector('[data-testid=\"refresh-button\"]').disabled",
        WAIT,
    )
    .await;
    assert!(!visible(&page, "calculating").await);
    page.advance_clock(Duration::from_millis(1900)).await;
    assert!(!visible(&page, "calculating").await, "not before 2 s");
    page.advance_clock(Duration::from_millis(200)).await;
    assert!(visible(&page, "calculating").await);
    assert_eq!(text(&page, "calculating").await, "Calculating...");

    page.advance_clock(Duration::from_secs(8)).await;
    page.wait_for(IDLE, WAIT).await;
    assert!(!visible(&page, "calculating").await);
    assert!(visible(&page, "toast").await);
    let toast = text(&page, "toast").await;
    assert!(
        toast.contains("Failed to load performance metrics: Data temporarily unavailable"),
        "{toast}"
    );
    // What arrived is shown.
    assert!(
        attr(&page, "card-total-events-value", "data-value")
            .await
            .is_some()
    );
    assert!(
        attr(&page, "card-total-requests-value", "data-value")
            .await
            .is_none()
    );
    page.release_requests().await;
}

// ===== custom range =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_range_rules_messages_and_apply() {
    let site = Site::start().await;
    let page = page_as(Some(ADMIN)).await;
    open(&site, &page, "").await;
    assert!(!visible(&page, "custom-range").await);
    page.click("[data-range=custom]").await;
    assert!(visible(&page, "custom-range").await);
    for id in ["custom-start", "custom-end"] {
        assert_eq!(
            attr(&page, id, "type").await.as_deref(),
            Some("datetime-local")
        );
    }
    assert_eq!(
        attr(&page, "custom-range-error", "role").await.as_deref(),
        Some("alert")
    );
    let apply_disabled = format!("{}.disabled", q("custom-apply"));
    assert!(
        page.eval::<bool>(&apply_disabled).await,
        "incomplete: Apply disabled"
    );

    let day = 24.0;
    let cases = [
        (-1.0, day, "Cannot select future dates."),
        (-100.0 * day, 2.0 * day, "Cannot select future dates."),
        (-1.0, -2.0, "Start date must be before end date."),
        (-2.0, -2.0, "Start date must be before end date."),
        (
            -100.0 * day,
            -day,
            "Date range cannot exceed 90 days. Please select a shorter range.",
        ),
        (
            -95.0 * day,
            -94.0 * day,
            "Data is only available for the last 90 days. Please select a more recent date.",
        ),
    ];
    for (start, end, message) in cases {
        let s = local_input(&page, start).await;
        let e = local_input(&page, end).await;
        set_input(&page, "custom-start", &s).await;
        set_input(&page, "custom-end", &e).await;
        assert_eq!(
            text(&page, "custom-range-error").await,
            message,
            "{s} .. {e}"
        );
        assert!(
            page.eval::<bool>(&apply_disabled).await,
            "{s} .. {e}: Apply disabled"
        );
    }

    page.clear_requests();
    let s = local_input(&page, -50.0).await;
    let e = local_input(&page, -2.0).await;
    set_input(&page, "custom-start", &s).await;
    set_input(&page, "custom-end", &e).await;
    assert_eq!(text(&page, "custom-range-error").await, "");
    assert!(!page.eval::<bool>(&apply_disabled).await);
    page.click("[data-testid=custom-apply]").await;
    let pressed: Vec<String> = page
        .eval("[...document.querySelectorAll('[data-range][aria-pressed=true]')].map(b => b.dataset.range)")
        .await;
    assert_eq!(pressed, ["custom"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(data_requests(&page).is_empty(), "Apply loads nothing");

    // The range is the local times in UTC, in the URL and in the requests.
    let (start_utc, end_utc): (String, String) = page
        .eval(&format!(
            "[{}, {}].map(v => new Date(v).toISOString().replace(/\\.\\d{{3}}Z$/, 'Z'))",
            js_str(&s),
            js_str(&e)
        ))
        .await;
    let params: (String, String) = page
        .eval("(() => { const u = new URLSearchParams(location.search); return [u.get('start'), u.get('end')]; })()")
        .await;
    assert_eq!(params, (start_utc.clone(), end_utc.clone()));
    refresh(&page).await;
    assert_eq!(
        data_paths(&page, &site.base),
        expected_paths(&format!("start_date={start_utc}&end_date={end_utc}"))
    );
    assert!(!visible(&page, "toast").await, "the API took the range");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_state_opens_the_same_view() {
    let site = Site::start().await;
    let page = page_as(Some(ADMIN)).await;
    open(&site, &page, "?range=30d").await;
    assert_eq!(
        data_paths(&page, &site.base),
        expected_paths("time_range=30d")
    );
    let pressed: String = page
        .eval("document.querySelector('[data-range][aria-pressed=true]').dataset.range")
        .await;
    assert_eq!(pressed, "30d");

    let start: String = page
        .eval("new Date(Date.now() - 3 * 86400e3).toISOString().replace(/\\.\\d{3}Z$/, 'Z')")
        .await;
    let end: String = page
        .eval("new Date(Date.now() - 86400e3).toISOString().replace(/\\.\\d{3}Z$/, 'Z')")
        .await;
    let custom = page_as(Some(ADMIN)).await;
    open(&site, &custom, &format!("?start={start}&end={end}")).await;
    assert_eq!(
        data_paths(&custom, &site.base),
        expected_paths(&format!("start_date={start}&end_date={end}"))
    );
    let pressed: String = custom
        .eval("document.querySelector('[data-range][aria-pressed=true]').dataset.range")
        .await;
    assert_eq!(pressed, "custom");
    assert!(visible(&custom, "custom-range").await);

    // A link the rules refuse: the default range, and why.
    let bad = page_as(Some(ADMIN)).await;
    open(&site, &bad, &format!("?start={end}&end={start}")).await;
    assert_eq!(
        data_paths(&bad, &site.base),
        expected_paths("time_range=24h")
    );
    assert_eq!(
        text(&bad, "custom-range-error").await,
        "Start date must be before end date."
    );
}

// ===== tables and charts =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charts_and_their_tables_carry_the_series() {
    let site = Site::start().await;
    site.seed_requests();
    site.seed_events();
    let page = page_as(Some(ADMIN)).await;
    open(&site, &page, "").await;
    for (testid, label) in [
        ("chart-performance", "Performance metrics time series chart"),
        ("chart-usage", "Usage metrics time series chart"),
        ("chart-event-types", "Events by type bar chart"),
    ] {
        assert_eq!(
            attr(&page, testid, "role").await.as_deref(),
            Some("img"),
            "{testid}"
        );
        assert_eq!(
            attr(&page, testid, "aria-label").await.as_deref(),
            Some(label),
            "{testid}"
        );
        let drawn: usize = page
            .eval(&format!(
                "{}.querySelectorAll('path.line, rect.bar').length",
                q(testid)
            ))
            .await;
        assert!(drawn > 0, "{testid} draws nothing");
    }
    // The lines are inside the plot, and their highest point is high in it
    // (the axis fits the data: a nice maximum is at most 2.5 times the data's).
    for testid in ["chart-performance", "chart-usage"] {
        let geometry: (f64, f64, Option<f64>, usize, usize) = page
            .eval(&format!(
                "(() => {{ const c = {}; const top = Math.min(...[...c.querySelectorAll('line.grid')].map(l => +l.getAttribute('y1')));                  const bottom = +c.querySelector('line.axis').getAttribute('y1');                  const ys = [...c.querySelectorAll('path.line')].flatMap(p => (p.getAttribute('d').match(/-?[\\d.]+|NaN/g) || []).filter((_, i) => i % 2).map(Number))                    .concat([...c.querySelectorAll('circle.point')].map(e => +e.getAttribute('cy')));                  return [top, bottom, Math.min(...ys.filter(Number.isFinite)), ys.length, ys.filter(y => !Number.isFinite(y)).length]; }})()",
                q(testid)
            ))
            .await;
        let (top, bottom, highest, n, bad) = geometry;
        assert!(n > 0 && bad == 0, "{testid}: {n} points, {bad} not finite");
        let highest = highest.unwrap();
        assert!(highest >= top - 0.5, "{testid}: above the plot");
        assert!(
            highest <= bottom - 0.39 * (bottom - top),
            "{testid}: the highest point is low ({highest} in {top}..{bottom}): the axis does not fit"
        );
    }

    let series = api(&page, "/time-series?metric_type=both&time_range=24h").await;
    let points = series["data_points"].as_array().unwrap();
    assert!(!points.is_empty());
    for (table, field) in [
        ("chart-performance-table", "total_requests"),
        ("chart-usage-table", "total_events"),
    ] {
        let rows: Vec<Vec<String>> = page
            .eval(&format!(
                "[...{}.tBodies[0].rows].map(r => [...r.cells].map(c => c.dataset.value))",
                q(table)
            ))
            .await;
        assert_eq!(rows.len(), points.len(), "{table}: one row per point");
        for (row, point) in rows.iter().zip(points) {
            assert!(point[field].is_number(), "{field} in {point}");
            assert_eq!(
                row[1].parse::<f64>().unwrap(),
                point[field].as_f64().unwrap(),
                "{table} {point}"
            );
        }
    }
    let total_in_table: f64 = page
        .eval(&format!(
            "[...{}.tBodies[0].rows].reduce((s, r) => s + Number(r.cells[1].dataset.value), 0)",
            q("chart-performance-table")
        ))
        .await;
    assert_eq!(total_in_table, 8.0);

    let types: Vec<(String, String)> = page
        .eval(&format!(
            "[...{}.tBodies[0].rows].map(r => [r.cells[0].textContent, r.cells[1].dataset.value])",
            q("chart-event-types-table")
        ))
        .await;
    assert_eq!(
        types,
        [
            ("page_view".to_owned(), "28".to_owned()),
            ("button_click".to_owned(), "3".to_owned())
        ]
    );

    let top: Vec<(String, String)> = page
        .eval(&format!("[...{}.querySelectorAll('li')].map(li => [li.querySelector('.page-name').textContent, li.querySelector('.page-count').dataset.value])", q("top-pages")))
        .await;
    let want: Vec<(String, String)> = [
        ("/home", 7),
        ("/items", 6),
        ("/orders", 5),
        ("/settings", 4),
        ("/help", 3),
    ]
    .iter()
    .map(|(p, n)| ((*p).to_owned(), n.to_string()))
    .collect();
    assert_eq!(top, want, "the top 5 page views");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tooltips_are_reachable_by_keyboard() {
    let site = Site::start().await;
    site.seed_requests();
    site.seed_events();
    let page = page_as(Some(ADMIN)).await;
    open(&site, &page, "").await;
    page.exec(&format!("{}.focus()", q("refresh-button"))).await;
    for (testid, expect) in [
        ("chart-performance", "Avg: "),
        ("chart-usage", "Events: "),
        ("chart-event-types", "page_view"),
    ] {
        let mut reached = false;
        for _ in 0..10 {
            page.press_key("Tab").await;
            let at: Option<String> = page.eval("document.activeElement.dataset.testid").await;
            if at.as_deref() == Some(testid) {
                reached = true;
                break;
            }
        }
        assert!(reached, "Tab never reached {testid}");
        let tip = format!(
            "{}.closest('.chart-wrap').querySelector('.tooltip')",
            q(testid)
        );
        page.wait_for(&format!("!{tip}.hidden"), WAIT).await;
        let first: String = page.eval(&format!("{tip}.textContent")).await;
        assert!(first.contains(expect), "{testid}: {first}");
        page.press_key(if testid == "chart-event-types" {
            "ArrowDown"
        } else {
            "ArrowLeft"
        })
        .await;
        let second: String = page.eval(&format!("{tip}.textContent")).await;
        assert_ne!(first, second, "{testid}: the arrow keys move the cursor");
        page.press_key("Escape").await;
        assert!(
            page.eval::<bool>(&format!("{tip}.hidden")).await,
            "{testid}: Escape hides it"
        );
    }
}

// ===== endpoint table =====

fn endpoint(
    path: &str,
    method: &str,
    avg: Option<f64>,
    p50: Option<f64>,
    count: u64,
    rate: f64,
) -> Value {
    json!({ "endpoint": path, "method": method, "avg_response_time_ms": avg, "request_count": count,
            "error_count": 0, "error_rate": rate, "p50_response_time_ms": p50,
            "p95_response_time_ms": 3.0, "p99_response_time_ms": 4.0 })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_table_sorts_every_column() {
    let site = Site::start().await;
    let page = page_as(Some(ADMIN)).await;
    let mut endpoints = vec![
        endpoint("/b", "GET", Some(30.0), Some(2.0), 5, 0.1),
        endpoint("/a", "POST", Some(50.0), None, 9, 0.0),
        endpoint("/c", "DELETE", Some(10.0), Some(1.0), 7, 0.5),
        endpoint("/d", "PUT", None, Some(5.0), 1, 0.2),
    ];
    for i in 0..36 {
        endpoints.push(endpoint(
            &format!("/z/{i:02}"),
            "GET",
            Some(1.0),
            Some(1.0),
            1,
            0.0,
        ));
    }
    let perf = json!({
        "time_range": "24h", "start_time": "2026-01-01T00:00:00Z", "end_time": "2026-01-02T00:00:00Z",
        "metrics": { "avg_response_time_ms": 1.0, "total_requests": 60, "error_rate": 0.0,
                     "p50_response_time_ms": 1.0, "p95_response_time_ms": 1.0, "p99_response_time_ms": 1.0 },
        "endpoints": endpoints,
    });
    page.fail_requests_with_body("metrics/performance?", 200, &perf.to_string())
        .await;
    open(&site, &page, "").await;

    let caption: String = page
        .eval(&format!("{}.caption.textContent", q("endpoint-table")))
        .await;
    assert_eq!(caption, "Endpoint Performance Breakdown");
    let keys: Vec<(String, bool)> = page
        .eval(&format!("[...{}.querySelectorAll('th[data-sort-key]')].map(th => [th.dataset.sortKey, !!th.querySelector('button')])", q("endpoint-table")))
        .await;
    let want = [
        "endpoint",
        "method",
        "avg_response_time_ms",
        "p50_response_time_ms",
        "p95_response_time_ms",
        "p99_response_time_ms",
        "request_count",
        "error_rate",
    ];
    assert_eq!(keys.iter().map(|k| k.0.as_str()).collect::<Vec<_>>(), want);
    assert!(keys.iter().all(|k| k.1), "every header has a button");
    assert_eq!(text(&page, "endpoint-count").await, "Total endpoints: 40");
    let rows: usize = page
        .eval("document.querySelectorAll('[data-testid=endpoint-row]').length")
        .await;
    assert_eq!(rows, 40, "every endpoint, no pagination");

    let column = |key: &str| {
        format!(
            "(() => {{ const i = [...document.querySelectorAll('th[data-sort-key]')].findIndex(th => th.dataset.sortKey === '{key}'); \
             return [...document.querySelectorAll('[data-testid=endpoint-row]')].slice(0, 4).map(r => r.cells[i].dataset.value); }})()"
        )
    };
    let last = |key: &str| {
        format!(
            "(() => {{ const i = [...document.querySelectorAll('th[data-sort-key]')].findIndex(th => th.dataset.sortKey === '{key}'); \
             const rows = [...document.querySelectorAll('[data-testid=endpoint-row]')]; return rows[rows.length - 1].cells[i].dataset.value; }})()"
        )
    };
    let sorts = || {
        format!(
            "[...{}.querySelectorAll('th[data-sort-key]')].map(th => th.getAttribute('aria-sort'))",
            q("endpoint-table")
        )
    };
    let aria = |active: &str, dir: &str| -> Vec<String> {
        want.iter()
            .map(|k| {
                if *k == active {
                    dir.to_owned()
                } else {
                    "none".to_owned()
                }
            })
            .collect()
    };

    // Default: avg descending, the missing one last.
    assert_eq!(
        page.eval::<Vec<String>>(&column("avg_response_time_ms"))
            .await,
        ["50", "30", "10", "1"]
    );
    assert_eq!(page.eval::<String>(&last("avg_response_time_ms")).await, "");
    assert_eq!(
        page.eval::<Vec<String>>(&sorts()).await,
        aria("avg_response_time_ms", "descending")
    );

    // The active column flips; missing values stay last.
    page.click("th[data-sort-key=avg_response_time_ms] button")
        .await;
    assert_eq!(
        page.eval::<Vec<String>>(&sorts()).await,
        aria("avg_response_time_ms", "ascending")
    );
    let asc: Vec<String> = page.eval(&column("avg_response_time_ms")).await;
    assert_eq!(asc, ["1", "1", "1", "1"]);
    assert_eq!(page.eval::<String>(&last("avg_response_time_ms")).await, "");

    // A new column starts descending.
    page.click("th[data-sort-key=p50_response_time_ms] button")
        .await;
    assert_eq!(
        page.eval::<Vec<String>>(&sorts()).await,
        aria("p50_response_time_ms", "descending")
    );
    assert_eq!(
        page.eval::<Vec<String>>(&column("p50_response_time_ms"))
            .await,
        ["5", "2", "1", "1"]
    );
    assert_eq!(page.eval::<String>(&last("p50_response_time_ms")).await, "");

    page.click("th[data-sort-key=request_count] button").await;
    assert_eq!(
        page.eval::<Vec<String>>(&column("request_count")).await,
        ["9", "7", "5", "1"]
    );
    page.click("th[data-sort-key=error_rate] button").await;
    assert_eq!(
        page.eval::<Vec<String>>(&column("error_rate")).await,
        ["0.5", "0.2", "0.1", "0"]
    );

    // Strings by localeCompare.
    page.click("th[data-sort-key=method] button").await;
    assert_eq!(
        page.eval::<Vec<String>>(&sorts()).await,
        aria("method", "descending")
    );
    assert_eq!(
        page.eval::<Vec<String>>(&column("method")).await,
        ["PUT", "POST", "GET", "GET"]
    );
    page.click("th[data-sort-key=method] button").await;
    assert_eq!(
        page.eval::<Vec<String>>(&column("method")).await,
        ["DELETE", "GET", "GET", "GET"]
    );
    page.click("th[data-sort-key=endpoint] button").await;
    let by_name: Vec<String> = page.eval(&column("endpoint")).await;
    let expected: Vec<String> = page
        .eval("['/a','/b','/c','/d',...Array.from({length: 36}, (_, i) => '/z/' + String(i).padStart(2, '0'))].sort((x, y) => y.localeCompare(x)).slice(0, 4)")
        .await;
    assert_eq!(by_name, expected);
    // Cells carry the raw values, and show them formatted.
    let shown: String = page
        .eval("[...document.querySelectorAll('[data-testid=endpoint-row]')].find(r => r.cells[0].dataset.value === '/b').cells[2].textContent")
        .await;
    assert_eq!(shown, "30.00 ms");
}

// ===== the endpoint detail view =====

const ITEMS: &str = "/api/items/{id}";

/// The detail view's two requests among the page's requests.
fn detail_requests(page: &Page) -> Vec<SeenRequest> {
    page.requests()
        .into_iter()
        .filter(|r| {
            r.url.contains(&format!("{API}/requests?")) || r.url.contains("metric_type=performance")
        })
        .collect()
}

/// Every request to the API but the tracker's POSTs.
fn api_requests(page: &Page) -> Vec<String> {
    page.requests()
        .into_iter()
        .map(|r| r.url)
        .filter(|u| u.contains(API) && !u.contains("/usage-events"))
        .collect()
}

const DETAIL_LOADED: &str = "(() => { const d = document.querySelector('[data-testid=\"endpoint-detail\"]'); \
    return !d.hidden && d.getAttribute('aria-busy') === 'false'; })()";

fn row_button(method: &str, endpoint: &str) -> String {
    format!("[data-testid=endpoint-row] button[aria-label=\"Details for {method} {endpoint}\"]")
}

/// Clicks the row of `method endpoint` and waits for its detail view.
async fn open_detail(page: &Page, method: &str, endpoint: &str) {
    page.click(&row_button(method, endpoint)).await;
    page.wait_for(DETAIL_LOADED, WAIT).await;
}

/// The cells of a detail table's body, as shown.
async fn cells(page: &Page, testid: &str) -> Vec<Vec<String>> {
    page.eval(&format!(
        "[...{}.tBodies[0].rows].map(r => [...r.cells].map(c => c.textContent.trim()))",
        q(testid)
    ))
    .await
}

/// Whether the focused element is inside the element with `testid`.
async fn focus_in(page: &Page, testid: &str) -> bool {
    page.eval(&format!("{}.contains(document.activeElement)", q(testid)))
        .await
}

async fn focused_label(page: &Page) -> Option<String> {
    page.eval("document.activeElement && document.activeElement.getAttribute('aria-label')")
        .await
}

/// The query of the detail view of `GET ITEMS`, encoded.
const ITEMS_QUERY: &str = "endpoint=%2Fapi%2Fitems%2F%7Bid%7D&method=GET";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_a_row_sends_the_two_detail_requests_and_shows_its_parts() {
    let site = Site::start().await;
    site.seed_requests();
    let page = page_as(Some(ADMIN)).await;
    open(&site, &page, "").await;
    assert!(!visible(&page, "endpoint-detail").await, "closed at first");
    page.clear_requests();
    open_detail(&page, "GET", ITEMS).await;

    // Exactly the two detail requests, nothing else.
    let mut sent: Vec<String> = api_requests(&page)
        .into_iter()
        .map(|u| u.strip_prefix(&site.base).unwrap().to_owned())
        .collect();
    sent.sort();
    let e = ITEMS_QUERY;
    assert_eq!(
        sent,
        [
            format!("{API}/requests?{e}&time_range=7d&limit=20"),
            format!("{API}/time-series?metric_type=performance&{e}&time_range=24h"),
        ],
    );
    assert_detail_heading(&page).await;
    assert_detail_chart(&page).await;
    assert_detail_tables(&page).await;

    // Another row replaces it; a request without a correlation id has no button.
    open_detail(&page, "GET", "/api/health").await;
    assert_eq!(
        cells(&page, "endpoint-detail-statuses").await,
        [["200", "3", "100.00%"]]
    );
    let ids: Vec<String> = cells(&page, "endpoint-detail-requests")
        .await
        .into_iter()
        .map(|r| r[4].clone())
        .collect();
    assert_eq!(ids, ["req-7 Copy", "\u{2014}", "req-5 Copy"]);

    // Refresh sends its three requests only, and closes the view.
    refresh(&page).await;
    assert_eq!(
        data_paths(&page, &site.base),
        expected_paths("time_range=24h")
    );
    assert_eq!(api_requests(&page).len(), 3, "{:?}", api_requests(&page));
    assert!(detail_requests(&page).is_empty());
    assert!(
        !visible(&page, "endpoint-detail").await,
        "Refresh closes it"
    );
    let rows: usize = page
        .eval(&format!(
            "{}.tBodies[0].rows.length",
            q("endpoint-detail-requests")
        ))
        .await;
    assert_eq!(rows, 0, "its numbers are gone");
}

/// The open detail view of `GET ITEMS` is visible and named after it, with
/// nothing failed.
async fn assert_detail_heading(page: &Page) {
    assert!(visible(page, "endpoint-detail").await);
    assert_eq!(
        page.eval::<String>(&format!(
            "{}.querySelector('h2').textContent",
            q("endpoint-detail")
        ))
        .await,
        "Endpoint details: GET /api/items/{id}"
    );
    let labelled: String = page
        .eval(&format!(
            "document.getElementById({}.getAttribute('aria-labelledby')).textContent",
            q("endpoint-detail")
        ))
        .await;
    assert_eq!(labelled, "Endpoint details: GET /api/items/{id}");
    assert!(
        text(page, "endpoint-detail-range")
            .await
            .starts_with("Response times for Last 24 Hours"),
    );
    assert!(!visible(page, "endpoint-detail-error").await);
    assert!(!visible(page, "toast").await);
}

/// The detail chart of `GET ITEMS`: an image with its label, the three
/// percentiles and the rate drawn, and a table of the API's buckets for this
/// endpoint only.
async fn assert_detail_chart(page: &Page) {
    let e = ITEMS_QUERY;
    // The chart: an image with its label, the three percentiles and the rate drawn.
    assert_eq!(
        attr(page, "endpoint-detail-chart", "role").await.as_deref(),
        Some("img")
    );
    assert_eq!(
        attr(page, "endpoint-detail-chart", "aria-label")
            .await
            .as_deref(),
        Some("Response time percentiles and request rate of GET /api/items/{id}")
    );
    let lines: Vec<String> = page
        .eval(&format!(
            "[...{}.querySelectorAll('path.line')].map(p => p.getAttribute('class'))",
            q("endpoint-detail-chart")
        ))
        .await;
    assert_eq!(
        lines,
        ["line s-p50", "line s-p95", "line s-p99", "line s-rate"]
    );
    // Its table holds the API's buckets for this endpoint only.
    let series = api(
        page,
        &format!("/time-series?metric_type=performance&{e}&time_range=24h"),
    )
    .await;
    let points = series["data_points"].as_array().unwrap();
    let rows: Vec<(String, String, String)> = page
        .eval(&format!(
            "[...{}.tBodies[0].rows].map(r => [r.cells[0].dataset.value, r.cells[1].dataset.value, r.cells[3].dataset.value])",
            q("endpoint-detail-chart-table")
        ))
        .await;
    assert_eq!(rows.len(), points.len());
    for (row, p) in rows.iter().zip(points) {
        assert_eq!(row.0, p["timestamp"].as_str().unwrap());
        assert_eq!(row.1, p["total_requests"].to_string());
        assert_eq!(row.2, p["p50_response_time_ms"].to_string());
    }
    let busy: Vec<&(String, String, String)> = rows.iter().filter(|r| r.1 != "0").collect();
    let mut p50s: Vec<&str> = busy.iter().map(|r| r.2.as_str()).collect();
    p50s.sort();
    assert_eq!(
        p50s,
        ["12", "18", "6"],
        "one bucket per request of this endpoint"
    );
    let rate: String = page
        .eval(&format!(
            "[...{}.tBodies[0].rows].find(r => r.cells[1].dataset.value === '1').cells[2].textContent",
            q("endpoint-detail-chart-table")
        ))
        .await;
    assert_eq!(rate, "0.2/min", "1 request in a 5-minute bucket");
}

/// The detail tables of `GET ITEMS`: its status codes and its slowest
/// requests.
async fn assert_detail_tables(page: &Page) {
    let e = ITEMS_QUERY;
    // The status codes of the last 7 days.
    assert_eq!(
        cells(page, "endpoint-detail-statuses").await,
        [["200", "2", "66.67%"], ["404", "1", "33.33%"]]
    );
    // The slowest requests, slowest first, each with its correlation id.
    let requests = cells(page, "endpoint-detail-requests").await;
    let columns: Vec<Vec<&str>> = requests
        .iter()
        .map(|r| vec![r[1].as_str(), r[2].as_str(), r[3].as_str(), r[4].as_str()])
        .collect();
    assert_eq!(
        columns,
        [
            ["200", "18.00 ms", "bob@example.com", "req-1 Copy"],
            ["200", "12.00 ms", "ada@example.com", "req-0 Copy"],
            ["404", "6.00 ms", "ada@example.com", "req-2 Copy"],
        ]
    );
    let times: Vec<String> = page
        .eval(&format!(
            "[...{}.tBodies[0].rows].map(r => r.cells[0].dataset.value)",
            q("endpoint-detail-requests")
        ))
        .await;
    let answer = api(page, &format!("/requests?{e}&time_range=7d&limit=20")).await;
    let want: Vec<&str> = answer["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["timestamp"].as_str().unwrap())
        .collect();
    assert_eq!(times, want);
    let copies: usize = page
        .eval("document.querySelectorAll('[data-testid=copy-correlation-id]').length")
        .await;
    assert_eq!(copies, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn correlation_ids_and_their_copy_buttons_fit_at_1280_px() {
    let site = Site::start().await;
    site.seed_realistic_requests();
    let page = page_as(Some(ADMIN)).await;
    page.set_viewport(1280, 900).await;
    open(&site, &page, "").await;
    open_detail(&page, "POST", "/api/reports/{report_id}/exports").await;
    // Every id whole and every button inside the table's scroll box and the
    // window: nothing to scroll sideways for.
    let clipped: Vec<String> = page
        .eval(&format!(
            "(() => {{ const t = {}; const box = t.parentElement.getBoundingClientRect();
               return [...t.querySelectorAll('code, [data-testid=copy-correlation-id]')]
                 .filter(e => {{ const r = e.getBoundingClientRect();
                   return r.right > box.right + 0.5 || r.right > window.innerWidth; }})
                 .map(e => e.textContent); }})()",
            q("endpoint-detail-requests")
        ))
        .await;
    assert!(clipped.is_empty(), "clipped at 1280 px: {clipped:?}");
    let scrolls: bool = page
        .eval(&format!(
            "(() => {{ const s = {}.parentElement; return s.scrollWidth > s.clientWidth; }})()",
            q("endpoint-detail-requests")
        ))
        .await;
    assert!(
        !scrolls,
        "the slowest requests table scrolls sideways at 1280 px"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_detail_view_opens_and_closes_by_keyboard() {
    let site = Site::start().await;
    site.seed_requests();
    let page = page_as(Some(ADMIN)).await;
    open(&site, &page, "").await;
    page.exec(&format!(
        "window.__opened = []; {}.addEventListener('endpoint-open', e => window.__opened.push(e.detail.method + ' ' + e.detail.endpoint))",
        q("endpoint-table")
    ))
    .await;
    let label = format!("Details for GET {ITEMS}");

    // Enter on the row's button opens it, with the focus inside.
    page.exec(&format!(
        "document.querySelector({}).focus()",
        js_str(&row_button("GET", ITEMS))
    ))
    .await;
    page.press_key("Enter").await;
    page.wait_for(DETAIL_LOADED, WAIT).await;
    assert!(
        focus_in(&page, "endpoint-detail").await,
        "the focus moved into the view"
    );
    // Escape closes it and gives the focus back to the row.
    page.press_key("Escape").await;
    assert!(!visible(&page, "endpoint-detail").await);
    assert_eq!(focused_label(&page).await.as_deref(), Some(label.as_str()));

    // Space opens it too; the close button closes it.
    page.press_key("Space").await;
    page.wait_for(DETAIL_LOADED, WAIT).await;
    assert!(focus_in(&page, "endpoint-detail").await);
    page.press_key("Tab").await;
    assert_eq!(
        page.eval::<Option<String>>("document.activeElement.dataset.testid")
            .await
            .as_deref(),
        Some("endpoint-detail-close")
    );
    page.press_key("Enter").await;
    assert!(!visible(&page, "endpoint-detail").await);
    assert_eq!(focused_label(&page).await.as_deref(), Some(label.as_str()));

    // The chart's tooltip takes the first Escape, the view the second.
    page.press_key("Enter").await;
    page.wait_for(DETAIL_LOADED, WAIT).await;
    page.exec(&format!("{}.focus()", q("endpoint-detail-chart")))
        .await;
    let tooltip = format!(
        "{}.closest('.chart-wrap').querySelector('.tooltip')",
        q("endpoint-detail-chart")
    );
    assert!(
        !page.eval::<bool>(&format!("{tooltip}.hidden")).await,
        "a tooltip on focus"
    );
    let read: String = page.eval(&format!("{tooltip}.textContent")).await;
    assert!(
        read.contains("P99: ") && read.contains("Requests/min: "),
        "{read}"
    );
    page.press_key("Escape").await;
    assert!(page.eval::<bool>(&format!("{tooltip}.hidden")).await);
    assert!(
        visible(&page, "endpoint-detail").await,
        "the first Escape only hides the tooltip"
    );
    page.press_key("Escape").await;
    assert!(!visible(&page, "endpoint-detail").await);
    assert_eq!(focused_label(&page).await.as_deref(), Some(label.as_str()));

    // A mouse click on the row opens it; after a re-sort the focus still finds the row.
    page.click("[data-testid=endpoint-row] td:nth-child(3)")
        .await;
    page.wait_for(DETAIL_LOADED, WAIT).await;
    page.click("th[data-sort-key=endpoint] button").await;
    page.click("[data-testid=endpoint-detail-close]").await;
    let opened: Vec<String> = page.eval("window.__opened").await;
    assert_eq!(opened.len(), 4, "{opened:?}");
    let back: Option<String> = focused_label(&page).await;
    assert_eq!(
        back.as_deref(),
        Some(format!("Details for {}", opened[3]).as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_buttons_copy_the_correlation_id_or_select_it() {
    let site = Site::start().await;
    site.seed_requests();
    let page = page_as(Some(ADMIN)).await;
    open(&site, &page, "").await;
    open_detail(&page, "POST", "/api/orders").await;
    let first = "document.querySelector('[data-testid=copy-correlation-id]')";
    assert_eq!(
        page.eval::<String>(&format!("{first}.getAttribute('aria-label')"))
            .await,
        "Copy correlation id req-4"
    );

    // With a clipboard: the id is written to it.
    page.exec("window.__copied = []; navigator.clipboard.writeText = (t) => { window.__copied.push(t); return Promise.resolve(); }")
        .await;
    page.click("[data-testid=copy-correlation-id]").await;
    page.wait_for("window.__copied.length === 1", WAIT).await;
    assert_eq!(page.eval::<Vec<String>>("window.__copied").await, ["req-4"]);
    assert_eq!(
        text(&page, "endpoint-detail-copy-status").await,
        "Copied correlation id req-4."
    );
    assert_eq!(
        attr(&page, "endpoint-detail-copy-status", "role")
            .await
            .as_deref(),
        Some("status")
    );

    // Refused (no permission): the id is selected for Ctrl+C instead.
    page.exec("navigator.clipboard.writeText = () => Promise.reject(new DOMException('denied', 'NotAllowedError'))")
        .await;
    page.click(
        "[data-testid=endpoint-detail-requests] tr:nth-child(2) [data-testid=copy-correlation-id]",
    )
    .await;
    page.wait_for("String(getSelection()) === 'req-3'", WAIT)
        .await;
    assert!(
        text(&page, "endpoint-detail-copy-status")
            .await
            .contains("press Ctrl+C")
    );

    // No clipboard at all (an insecure origin): selected too.
    page.exec("getSelection().removeAllRanges(); Object.defineProperty(navigator, 'clipboard', { value: undefined, configurable: true })")
        .await;
    page.click("[data-testid=copy-correlation-id]").await;
    page.wait_for("String(getSelection()) === 'req-4'", WAIT)
        .await;
    assert!(!visible(&page, "endpoint-detail-error").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detail_failures_show_inside_the_view_not_as_the_toast() {
    let site = Site::start().await;
    site.seed_requests();
    let page = page_as(Some(ADMIN)).await;
    open(&site, &page, "").await;

    page.fail_requests("metrics/requests?", 500).await;
    open_detail(&page, "GET", ITEMS).await;
    assert!(visible(&page, "endpoint-detail-error").await);
    assert_eq!(
        attr(&page, "endpoint-detail-error", "role")
            .await
            .as_deref(),
        Some("alert")
    );
    let lines: Vec<String> = page
        .eval(&format!(
            "[...{}.querySelectorAll('li')].map(li => li.textContent)",
            q("endpoint-detail-error")
        ))
        .await;
    assert_eq!(
        lines,
        ["Failed to load slowest requests: injected by the test harness (status 500)"]
    );
    assert!(
        text(&page, "endpoint-detail-error")
            .await
            .starts_with("Failed to load endpoint details.")
    );
    assert!(!visible(&page, "toast").await, "not the page's toast");
    // What arrived is drawn.
    let drawn: usize = page
        .eval(&format!(
            "{}.querySelectorAll('path.line').length",
            q("endpoint-detail-chart")
        ))
        .await;
    assert_eq!(drawn, 4);
    assert_eq!(
        page.eval::<usize>(&format!(
            "{}.tBodies[0].rows.length",
            q("endpoint-detail-requests")
        ))
        .await,
        0
    );

    // The series failing (a network error), the requests arriving.
    page.clear_failures().await;
    page.fail_requests("time-series?metric_type=performance", 0)
        .await;
    open_detail(&page, "GET", ITEMS).await;
    let lines: Vec<String> = page
        .eval(&format!(
            "[...{}.querySelectorAll('li')].map(li => li.textContent)",
            q("endpoint-detail-error")
        ))
        .await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("Failed to load response times: "),
        "{lines:?}"
    );
    assert_eq!(cells(&page, "endpoint-detail-statuses").await.len(), 2);
    assert!(!visible(&page, "toast").await);

    // A good open clears it; the page's own calls were never affected.
    page.clear_failures().await;
    open_detail(&page, "GET", ITEMS).await;
    assert!(!visible(&page, "endpoint-detail-error").await);
    assert_eq!(text(&page, "card-total-requests-value").await, "8");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_changes_send_nothing_and_mark_the_open_detail() {
    let site = Site::start().await;
    site.seed_requests();
    let page = page_as(Some(ADMIN)).await;
    open(&site, &page, "").await;
    open_detail(&page, "GET", ITEMS).await;
    page.clear_requests();

    page.click("[data-range=\"7d\"]").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(api_requests(&page).is_empty(), "{:?}", api_requests(&page));
    assert!(visible(&page, "endpoint-detail").await, "it stays open");
    assert!(
        visible(&page, "endpoint-detail-stale").await,
        "marked out of date"
    );
    assert!(
        text(&page, "endpoint-detail-range")
            .await
            .starts_with("Response times for Last 24 Hours"),
        "labelled with the range it shows"
    );
    page.click("[data-range=\"24h\"]").await;
    assert!(!visible(&page, "endpoint-detail-stale").await);
    page.click("[data-range=\"30d\"]").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(api_requests(&page).is_empty(), "{:?}", api_requests(&page));

    // Opened again, it asks for the selected range.
    open_detail(&page, "GET", ITEMS).await;
    assert!(!visible(&page, "endpoint-detail-stale").await);
    let sent = detail_requests(&page);
    assert_eq!(sent.len(), 2);
    assert!(
        sent.iter().any(
            |r| r.url.contains("metric_type=performance") && r.url.ends_with("&time_range=30d")
        ),
        "{sent:?}"
    );
    assert!(
        text(&page, "endpoint-detail-range")
            .await
            .starts_with("Response times for Last 30 Days")
    );

    // A short custom range before the raw retention asks for hourly buckets
    // (5-minute buckets of one endpoint exist for 7 days only).
    page.click("[data-range=custom]").await;
    set_input(
        &page,
        "custom-start",
        &local_input(&page, -10.0 * 24.0).await,
    )
    .await;
    set_input(&page, "custom-end", &local_input(&page, -9.5 * 24.0).await).await;
    page.click("[data-testid=custom-apply]").await;
    assert!(visible(&page, "endpoint-detail-stale").await);
    page.clear_requests();
    open_detail(&page, "GET", ITEMS).await;
    let series: Vec<SeenRequest> = detail_requests(&page)
        .into_iter()
        .filter(|r| r.url.contains("metric_type=performance"))
        .collect();
    assert_eq!(series.len(), 1);
    assert!(
        series[0].url.contains("&start_date=") && series[0].url.ends_with("&interval=hourly"),
        "{}",
        series[0].url
    );
    assert!(!visible(&page, "endpoint-detail-error").await, "answered");
    assert_eq!(
        text(&page, "endpoint-detail-chart").await,
        "",
        "no requests in that range: nothing drawn"
    );
    let empty: String = page
        .eval(&format!(
            "{}.querySelector('p.empty').textContent",
            q("endpoint-detail")
        ))
        .await;
    assert_eq!(empty, "No requests to this endpoint in the selected range.");
    // The slowest requests are the last 7 days' whatever the range.
    assert_eq!(cells(&page, "endpoint-detail-requests").await.len(), 3);
}

// ===== empty, failures, access =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_state_texts() {
    let site = Site::start().await;
    let page = page_as(Some(ADMIN)).await;
    open(&site, &page, "").await;
    assert!(visible(&page, "empty-state").await);
    assert_eq!(
        text(&page, "empty-state").await,
        "No data available. Metrics will appear after application usage."
    );
    let body: String = page.eval("document.body.innerText").await;
    for line in [
        "No endpoint data available",
        "No time-series data available for the selected range.",
        "No usage data available",
    ] {
        assert!(body.contains(line), "{line} missing from {body}");
    }
    assert!(
        !page
            .eval::<bool>(&format!("{}.disabled", q("refresh-button")))
            .await,
        "Refresh stays enabled"
    );
    for key in ["p50", "p95", "p99"] {
        assert!(visible(&page, &format!("card-{key}")).await);
        assert_eq!(text(&page, &format!("card-{key}-value")).await, "0.00 ms");
    }
    assert_eq!(text(&page, "endpoint-count").await, "Total endpoints: 0");

    // Events alone are data: no empty state.
    site.seed_events();
    refresh(&page).await;
    assert!(
        !visible(&page, "empty-state").await,
        "events but no requests"
    );
    site.metrics.memory_sink().unwrap().clear();
    refresh(&page).await;
    assert!(visible(&page, "empty-state").await);
    // Requests alone too.
    site.seed_requests();
    refresh(&page).await;
    assert!(
        !visible(&page, "empty-state").await,
        "requests but no events"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_show_a_toast_per_part_and_render_the_rest() {
    let site = Site::start().await;
    site.seed_requests();
    site.seed_events();
    let page = page_as(Some(ADMIN)).await;
    page.fail_requests("metrics/usage?", 500).await;
    open(&site, &page, "").await;
    assert!(visible(&page, "toast").await);
    assert_eq!(attr(&page, "toast", "role").await.as_deref(), Some("alert"));
    let toast = text(&page, "toast").await;
    assert!(
        toast.contains("Failed to refresh metrics. Please try again."),
        "{toast}"
    );
    assert!(
        toast.contains("Failed to load usage metrics: injected by the test harness (status 500)"),
        "{toast}"
    );
    assert!(!toast.contains("performance metrics"), "{toast}");
    assert_eq!(
        text(&page, "card-total-requests-value").await,
        "8",
        "what arrived is rendered"
    );
    assert!(
        attr(&page, "card-total-events-value", "data-value")
            .await
            .is_none()
    );

    page.clear_failures().await;
    page.fail_requests("metrics/performance?", 503).await;
    page.fail_requests("metrics/time-series?", 0).await;
    refresh(&page).await;
    let lines: Vec<String> = page
        .eval(&format!(
            "[...{}.querySelectorAll('li')].map(li => li.textContent)",
            q("toast")
        ))
        .await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with("Failed to load performance metrics: "),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("Failed to load time-series metrics: "),
        "{lines:?}"
    );
    assert_eq!(text(&page, "card-total-events-value").await, "31");

    page.clear_failures().await;
    refresh(&page).await;
    assert!(!visible(&page, "toast").await, "a good refresh clears it");
}

async fn assert_no_numbers(page: &Page, text_expected: &str) {
    let body: String = page.eval("document.body.innerText").await;
    assert!(body.contains(text_expected), "{body}");
    assert!(
        !body.chars().any(|c| c.is_ascii_digit()),
        "a number is shown: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_admins_and_anonymous_see_the_texts_and_no_numbers() {
    let site = Site::start().await;
    site.seed_requests();
    let other = page_as(Some("bob@example.com")).await;
    other.goto(&site.url("/metrics/")).await;
    assert_eq!(
        other.eval::<String>("document.title").await,
        "Application Metrics"
    );
    assert_no_numbers(
        &other,
        "Admin access required. Only workspace administrators can view metrics.",
    )
    .await;

    let anon = page_as(None).await;
    anon.goto(&site.url("/metrics/")).await;
    assert_no_numbers(&anon, "Authentication required. Please log in.").await;

    // The API refusing a page that was served (the grant was revoked).
    for (status, message) in [
        (
            403,
            "Admin access required. Only workspace administrators can view metrics.",
        ),
        (401, "Authentication required. Please log in."),
    ] {
        let page = page_as(Some(ADMIN)).await;
        page.fail_requests("metrics/performance?", status).await;
        page.goto(&site.url("/metrics/")).await;
        page.wait_for(&format!("{}.checkVisibility()", q("access-message")), WAIT)
            .await;
        assert_no_numbers(&page, message).await;
        assert!(!visible(&page, "toast").await);
    }
}

// ===== tracking =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_tracks_its_own_use() {
    let site = Site::start().await;
    let page = page_as(Some(ADMIN)).await;
    open(&site, &page, "").await;
    let script: (String, String) = page
        .eval("(() => { const s = document.querySelector('script[src$=\"tracker.js\"]'); return [s.dataset.autoClick, s.dataset.endpoint]; })()")
        .await;
    assert_eq!(script, ("false".to_owned(), format!("{API}/usage-events")));
    page.click("[data-range=\"7d\"]").await;
    refresh(&page).await;
    page.click("[data-range=custom]").await;
    set_input(&page, "custom-start", &local_input(&page, -5.0).await).await;
    set_input(&page, "custom-end", &local_input(&page, -1.0).await).await;
    page.click("[data-testid=custom-apply]").await;
    let events = tracked(&page).await;
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"page_view"), "{events:#?}");
    let changes: Vec<&Value> = events
        .iter()
        .filter(|e| e["event_type"] == "preference_changed")
        .collect();
    assert_eq!(changes.len(), 2, "{events:#?}");
    assert_eq!(changes[0]["element_id"], "time-range-selector");
    assert_eq!(
        changes[0]["metadata"],
        json!({ "previous_time_range": "24h", "new_time_range": "7d" })
    );
    assert_eq!(
        changes[1]["metadata"],
        json!({ "previous_time_range": "7d", "new_time_range": "custom" })
    );
    let clicks: Vec<&Value> = events
        .iter()
        .filter(|e| e["event_type"] == "button_click")
        .collect();
    assert_eq!(clicks.len(), 1, "auto clicks are off: {events:#?}");
    assert_eq!(clicks[0]["element_id"], "refresh-button");
    assert_eq!(
        clicks[0]["metadata"],
        json!({ "time_range": "7d", "action": "manual_refresh" })
    );

    // They reach the store as the admin's.
    site.metrics.flush().await.unwrap();
    let stored = site.metrics.memory_sink().unwrap().snapshot();
    let stored: Vec<&UsageEvent> = stored.usage_events().iter().collect();
    assert!(
        stored
            .iter()
            .any(|e| e.event_type == "button_click" && e.user_id.as_str() == ADMIN),
        "{stored:#?}"
    );
}

// ===== accessibility and origin =====

/// In-page: every visible text's contrast against its nearest opaque
/// background, and every chart stroke / fill / swatch against its panel.
const CONTRAST_JS: &str = r#"(() => {
  const rgb = (c) => c.match(/[\d.]+/g).map(Number);
  const lum = (c) => { const [r, g, b] = rgb(c).slice(0, 3).map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; }); return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const opaque = (c) => { const m = rgb(c); return m.length < 4 || m[3] > 0; };
  const ratio = (a, b) => { const x = lum(a), y = lum(b); return (Math.max(x, y) + 0.05) / (Math.min(x, y) + 0.05); };
  const bg = (el) => { for (let e = el; e; e = e.parentElement) { const c = getComputedStyle(e).backgroundColor; if (opaque(c) && c !== 'transparent') return c; } return 'rgb(255, 255, 255)'; };
  const out = { texts: 0, graphics: 0, bad: [] };
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n; (n = walker.nextNode());) {
    const el = n.parentElement;
    if (!n.textContent.trim() || !el.checkVisibility()) continue;
    const s = getComputedStyle(el);
    const fg = el instanceof SVGElement ? s.fill : s.color;
    const size = parseFloat(s.fontSize), bold = Number(s.fontWeight) >= 700;
    const need = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    const r = ratio(fg, bg(el)); out.texts++;
    if (r < need) out.bad.push(`text "${n.textContent.trim().slice(0, 40)}" ${fg} on ${bg(el)}: ${r.toFixed(2)}`);
  }
  for (const el of document.querySelectorAll('.chart-svg path.line, .chart-svg circle, .chart-svg rect.bar, .chart-svg line, .swatch')) {
    if (!el.checkVisibility() || el.closest('[visibility=hidden]')) continue;
    const s = getComputedStyle(el);
    const fg = el.classList.contains('swatch') ? s.backgroundColor : el.tagName === 'path' || el.tagName === 'line' ? s.stroke : s.fill;
    const r = ratio(fg, bg(el.closest('.panel') || el)); out.graphics++;
    if (r < 3) out.bad.push(`graphic ${el.tagName}.${el.getAttribute('class')} ${fg}: ${r.toFixed(2)}`);
  }
  return out;
})()"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contrast_from_the_rendered_styles() {
    let site = Site::start().await;
    site.seed_requests();
    site.seed_events();
    let page = page_as(Some(ADMIN)).await;
    page.fail_requests("metrics/time-series?", 500).await;
    open(&site, &page, "").await;
    page.clear_failures().await;
    refresh(&page).await;
    page.fail_requests("metrics/performance?", 500).await;
    refresh(&page).await; // a toast to measure too
    page.clear_failures().await;
    page.exec("document.querySelectorAll('details').forEach(d => d.open = true)")
        .await;
    page.click("[data-range=custom]").await;
    set_input(&page, "custom-start", &local_input(&page, 5.0).await).await; // an error text
    page.exec(&format!("{}.focus()", q("chart-performance")))
        .await; // a tooltip

    #[derive(serde::Deserialize, Debug)]
    struct Contrast {
        texts: usize,
        graphics: usize,
        bad: Vec<String>,
    }
    let c: Contrast = page.eval(CONTRAST_JS).await;
    assert!(
        c.texts > 100 && c.graphics > 10,
        "measured too little: {c:?}"
    );
    assert!(c.bad.is_empty(), "below WCAG AA: {:#?}", c.bad);

    // An endpoint's detail view, with its chart, tables and a copy note
    // (after a good refresh: the rows are back, the toast gone).
    refresh(&page).await;
    open_detail(&page, "GET", "/api/items/{id}").await;
    page.exec("navigator.clipboard.writeText = () => Promise.resolve()")
        .await;
    page.click("[data-testid=copy-correlation-id]").await;
    page.wait_for(
        &format!("{}.textContent !== ''", q("endpoint-detail-copy-status")),
        WAIT,
    )
    .await;
    page.exec("document.querySelectorAll('details').forEach(d => d.open = true)")
        .await;
    let c: Contrast = page.eval(CONTRAST_JS).await;
    assert!(c.bad.is_empty(), "detail view: {:#?}", c.bad);
    let detail: Contrast = page
        .eval(&CONTRAST_JS.replace(
            "document.querySelectorAll('.chart-svg",
            "document.querySelector('[data-testid=endpoint-detail]').querySelectorAll('.chart-svg",
        ))
        .await;
    assert!(
        detail.graphics >= 4,
        "the detail chart's lines and swatches were measured: {detail:?}"
    );

    // The detail view's failure box.
    page.fail_requests("metrics/requests?", 500).await;
    open_detail(&page, "GET", "/api/items/{id}").await;
    page.clear_failures().await;
    assert!(visible(&page, "endpoint-detail-error").await);
    let c: Contrast = page.eval(CONTRAST_JS).await;
    assert!(c.bad.is_empty(), "detail failure: {:#?}", c.bad);

    // The busy button too.
    page.hold_requests("metrics/usage?").await;
    page.click("[data-testid=refresh-button]").await;
    page.wait_for(&format!("{}.disabled", q("refresh-button")), WAIT)
        .await;
    let c: Contrast = page.eval(CONTRAST_JS).await;
    assert!(c.bad.is_empty(), "busy: {:#?}", c.bad);
    page.release_requests().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_from_another_origin_and_no_console_errors() {
    let site = Site::start().await;
    site.seed_requests();
    site.seed_events();
    let page = page_as(Some(ADMIN)).await;
    open(&site, &page, "").await;
    let mut requests = page.requests();
    page.click("[data-range=\"90d\"]").await;
    refresh(&page).await;
    open_detail(&page, "GET", "/api/items/{id}").await;
    assert!(!visible(&page, "endpoint-detail-error").await);
    page.exec(&format!("{}.focus()", q("chart-usage"))).await;
    page.exec("window.AppMetrics.flush()").await;
    requests.extend(page.requests());
    assert!(requests.len() >= 12, "{requests:#?}");
    assert!(
        requests.iter().all(|r| !r.url.ends_with("/favicon.ico")),
        "the page has an icon of its own (an empty data: URL): no /favicon.ico 404 to record"
    );
    for r in &requests {
        assert!(
            r.url.starts_with(&format!("{}/", site.base)),
            "another origin: {}",
            r.url
        );
    }
    let console = page.console_messages();
    let problems: Vec<&String> = console
        .iter()
        .filter(|m| {
            m.starts_with("error")
                || m.starts_with("exception")
                || m.contains("Content Security Policy")
        })
        .collect();
    assert!(problems.is_empty(), "{problems:#?}");

    // And the browser enforces the page's CSP: another origin is refused.
    let refused: bool = page
        .eval("fetch('http://127.0.0.2:9/x').then(() => false, () => true)")
        .await;
    assert!(refused);
    let blocked = |page: &Page| {
        page.console_messages()
            .iter()
            .any(|m| m.contains("Blocked by the Content-Security-Policy (connect-src)"))
    };
    for _ in 0..100 {
        if blocked(&page) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(blocked(&page), "{:#?}", page.console_messages());
    assert!(!page.requests().iter().any(|r| r.url.contains("127.0.0.2")));
}
