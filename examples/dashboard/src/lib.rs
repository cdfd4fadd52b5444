//! The example app: a small axum service wired with app-metrics.
//!
//! [`app`] builds the router (demo routes plus a view of what was recorded) so
//! tests can drive it with `oneshot`; `main.rs` reads its [`settings`] and
//! serves it with [`server::serve`], optionally with self-generated demo
//! traffic ([`demo_traffic`]), and prints the collector's [`counters`] at exit.

pub mod counters;
pub mod demo;
pub mod server;
pub mod settings;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use app_metrics::AppMetrics;
use app_metrics::identity::{MakeIdentity, TrustedProxyHeaders};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

/// The longest delay `/api/demo/slow` accepts, in milliseconds.
pub const MAX_SLOW_MS: u64 = 5_000;

/// Where the example app mounts the dashboard API.
pub const API_PREFIX: &str = "/api/v1/metrics";

/// The example's app-metrics by default: callers are identified by the
/// headers of an authenticating proxy (as the Databricks Apps proxy sends
/// them); `METRICS_IDENTITY=extension` uses another identity source.
pub type Metrics = AppMetrics<TrustedProxyHeaders>;

/// What the example's routers need of an identity source.
pub trait IdentitySource: MakeIdentity<Body> + Clone + Send + Sync + 'static {}

impl<I: MakeIdentity<Body> + Clone + Send + Sync + 'static> IdentitySource for I {}

/// Builds the example app's router around an already started
/// [`AppMetrics`] (usually [`Metrics`]): the demo routes, the dashboard API
/// under [`API_PREFIX`] and the page under `/metrics/`, and the metrics
/// layer last, so it wraps (and records) every route above it, the API's
/// included.
pub fn app<I: IdentitySource>(metrics: &AppMetrics<I>) -> Router {
    app_with(metrics, None)
}

/// [`app`], with the development-only [`demo::AutoLogin`] outermost when
/// `auto_login` is given.
pub fn app_with<I: IdentitySource>(
    metrics: &AppMetrics<I>,
    auto_login: Option<demo::AutoLogin>,
) -> Router {
    let router = routes(metrics);
    match auto_login {
        Some(login) => router.layer(axum::middleware::from_fn(move |req, next| {
            login.clone().apply(req, next)
        })),
        None => router,
    }
}

fn routes<I: IdentitySource>(metrics: &AppMetrics<I>) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/api/demo/items/{id}", get(item))
        .route("/api/demo/slow", get(slow))
        .route("/api/demo/status/{code}", get(status))
        .route("/api/demo/recorded", get(recorded::<I>))
        .nest(API_PREFIX, metrics.api_router())
        .merge(metrics.dashboard_router_at("/metrics"))
        .merge(demo::pages())
        .with_state(metrics.clone())
        .layer(metrics.layer())
}

async fn item(Path(id): Path<String>) -> Response {
    match id.parse::<u64>() {
        Ok(n) => Json(json!({ "id": n, "name": format!("item {n}") })).into_response(),
        Err(_) => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": "Not Found", "message": "items have numeric ids", "status_code": 404 })),
        )
            .into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct SlowParams {
    ms: Option<u64>,
}

async fn slow(Query(p): Query<SlowParams>) -> Json<serde_json::Value> {
    let ms = p.ms.unwrap_or(100).min(MAX_SLOW_MS);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Json(json!({ "slept_ms": ms }))
}

async fn status(Path(code): Path<u16>) -> Response {
    match StatusCode::from_u16(code) {
        Ok(s) if (200..=599).contains(&code) => {
            (s, Json(json!({ "status_code": code }))).into_response()
        }
        _ => (
            StatusCode::BAD_REQUEST,
            Json(json!({
                "error": "Bad Request",
                "message": "code must be an HTTP status between 200 and 599",
                "status_code": 400
            })),
        )
            .into_response(),
    }
}

/// What the collector has seen (every counter, see [`counters::counters`]),
/// and the last records the memory store holds (a debugging view; the
/// admin-only dashboard API answers the real questions).
async fn recorded<I: Send + Sync + 'static>(
    State(metrics): State<AppMetrics<I>>,
) -> Json<serde_json::Value> {
    let mut body = json!({ "collector": counters::counters_json(&metrics.stats()) });
    if let Some(memory) = metrics.memory_sink() {
        let snap = memory.snapshot();
        let requests = snap.requests();
        let recent: Vec<_> = requests
            .iter()
            .rev()
            .take(20)
            .map(|r| {
                json!({
                    "endpoint": r.route.as_str(),
                    "method": r.method.as_str(),
                    "status_code": r.status,
                    "response_time_ms": r.response_time_ms,
                    "user_id": r.user_id.as_ref().map(|u| u.as_str()),
                    "error_type": r.error_type.as_ref().map(|e| e.to_string()),
                    "correlation_id": r.correlation_id.as_ref().map(|c| c.as_str()),
                })
            })
            .collect();
        body["stored_requests"] = json!(requests.len());
        body["recent"] = json!(recent);
    }
    Json(body)
}

/// Sends a steady mix of demo requests to `addr` until the returned task is
/// aborted: item lookups, a few slow calls, some 4xx/5xx, from a handful of
/// users identified by trusted proxy headers, and now and then a batch of
/// usage events to the dashboard API's ingest endpoint.
pub fn demo_traffic(addr: SocketAddr) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let users = [
            "ada@example.com",
            "grace@example.com",
            "linus@example.com",
            "admin@example.com",
        ];
        let mut rng = fastrand_lite(0x5eed);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            let n = rng();
            let path = match n % 20 {
                0 => "/api/demo/slow?ms=250".to_owned(),
                1 => "/api/demo/status/500".to_owned(),
                2 | 3 => "/api/demo/status/404".to_owned(),
                4 => "/api/demo/items/not-a-number".to_owned(),
                5 => "/health".to_owned(),
                _ => format!("/api/demo/items/{}", n % 1000),
            };
            let user = users[(n / 20) as usize % users.len()];
            if let Err(e) = http_get(addr, &path, user).await {
                tracing::warn!(error = %e, "demo traffic request failed");
            }
            // Every tenth tick, the page the user is on reports what they did,
            // as a browser tracker would (one batch per flush).
            if n % 10 == 0 {
                let body = demo_events(n, SystemTime::now());
                match http_post_json(addr, USAGE_EVENTS_PATH, user, &body).await {
                    Ok(202) => {}
                    Ok(status) => tracing::warn!(status, "demo usage events refused"),
                    Err(e) => tracing::warn!(error = %e, "demo usage events failed"),
                }
            }
        }
    })
}

/// Where the example app takes usage events.
pub const USAGE_EVENTS_PATH: &str = "/api/v1/metrics/usage-events"; // API_PREFIX + "/usage-events"

/// A small batch of usage events, as the browser tracker sends them.
fn demo_events(n: u64, now: SystemTime) -> String {
    const PAGES: [&str; 4] = ["/home", "/items", "/items/detail", "/settings"];
    // From the API's default vocabulary (the original API's ten types).
    const KINDS: [&str; 5] = [
        "page_view",
        "button_click",
        "query_executed",
        "form_submit",
        "export_triggered",
    ];
    let ts = app_metrics::query::format_rfc3339(now);
    let events: Vec<serde_json::Value> = (0..1 + n % 3)
        .map(|i| {
            let k = (n / 7 + i) as usize;
            json!({
                "event_type": KINDS[k % KINDS.len()],
                "timestamp": ts,
                "page_name": PAGES[(k / 2) % PAGES.len()],
                "element_id": format!("demo-{}", k % 9),
                "success": k % 11 != 0,
                "metadata": { "source": "demo-traffic" },
            })
        })
        .collect();
    json!({ "events": events }).to_string()
}

/// A tiny deterministic xorshift generator (demo traffic needs no real randomness).
fn fastrand_lite(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

/// One HTTP/1.1 GET over a fresh connection; returns the status code.
async fn http_get(addr: SocketAddr, path: &str, user: &str) -> std::io::Result<u16> {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nX-Forwarded-Email: {user}\r\nConnection: close\r\n\r\n"
    );
    http_exchange(addr, req).await
}

/// One HTTP/1.1 POST of a JSON body over a fresh connection; returns the
/// status code.
async fn http_post_json(
    addr: SocketAddr,
    path: &str,
    user: &str,
    body: &str,
) -> std::io::Result<u16> {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nX-Forwarded-Email: {user}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    http_exchange(addr, req).await
}

async fn http_exchange(addr: SocketAddr, req: String) -> std::io::Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(1024);
    stream.read_to_end(&mut buf).await?;
    let head = String::from_utf8_lossy(&buf[..buf.len().min(16)]).into_owned();
    head.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response head: {head:?}")))
}
