//! The dashboard API's HTTP contract as both stores must answer it: one
//! suite that the in-memory store and PostgreSQL both run. Every check below
//! is a function over an [`Api`], and [`contract_suite!`] turns each into a
//! test on the in-memory store and on PostgreSQL (a throwaway cluster from
//! the test harness, or `DATABASE_URL`).
//!
//! **What belongs here:** every check whose answer a store computes or could
//! get wrong: bodies computed from data (totals, rates, percentiles, users,
//! distributions, buckets and their timestamps), sorting, filters, range
//! edges and clipping, counts, zeros and empty lists, what a refused request
//! leaves stored; and the original API's contract (issue 10: field names,
//! access bodies, batch and range rules), since a client written for the
//! original API depends on those names on either store. Each is written
//! once, here, and runs on both stores; a store answering differently is a
//! bug in that store, never a reason to leave it out.
//!
//! **What does not:** the API layer's own behaviour, which no store can change
//! (content types, the body byte limit, 404/405 envelopes, field validation
//! and drill-down parameter checks, configurable vocabulary and clock skew,
//! a full queue or shut-down collector, store errors mapped with a failing
//! stub store, the correlation id echo): `metrics-tower/tests/api.rs`, on the
//! memory store with a fixed clock. What only the database path has (rollups
//! and raw rows counted once, a stopped database, stored correlation ids):
//! `examples/dashboard/tests/api_pg.rs`.
//!
//! Requests go through the facade's layer and `api_router()` over HTTP
//! (`oneshot`), identity from the trusted proxy headers; the API's own
//! requests are excluded from recording, so the data is exactly what each
//! check records through the collector. The clock is real: the answer checks
//! place their data at whole seconds before a `t0` taken when they record it
//! and derive bucket timestamps and the current hour from it and from the
//! answer's own `end_time`.

use std::time::{Duration, SystemTime};

use app_metrics::AppMetrics;
use app_metrics::identity::{TrustedProxyHeaders, UserId};
use app_metrics::layer::Exclusions;
use app_metrics::sink::{Method, RequestRecord, Route, UsageEvent};
use app_metrics::store::{Memory, Postgres, Store};
use axum::Router;
use axum::body::Body;
use http::Request;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use test_support::TestDb;
use tower::ServiceExt;

const ADMIN: &str = "admin@example.com";
const USER: &str = "bob@example.com";
const BASE: &str = "/api/v1/metrics";
const DEFAULT_TEN: [&str; 10] = [
    "page_view",
    "button_click",
    "form_submit",
    "query_executed",
    "model_invoked",
    "preference_changed",
    "data_source_selected",
    "schema_detected",
    "file_uploaded",
    "export_triggered",
];

// ===== harness =====

/// The facade with one store behind the API router.
struct Api {
    metrics: AppMetrics<TrustedProxyHeaders>,
    router: Router,
    /// Keeps the PostgreSQL test database alive (dropped with the test).
    _db: Option<TestDb>,
}

impl Api {
    async fn memory() -> Self {
        Self::start(Memory::new().into(), None).await
    }

    async fn postgres() -> Self {
        let db = TestDb::new().await;
        let store = Postgres::from_url(db.url()).schema(db.name());
        Self::start(store.into(), Some(db)).await
    }

    async fn start(store: Store, db: Option<TestDb>) -> Self {
        let metrics = AppMetrics::builder(store)
            .identity(TrustedProxyHeaders)
            .admins(app_metrics::admin::StaticAdmins::new([ADMIN]))
            .configure_layer(|l| l.exclusions(Exclusions::none().prefix(BASE)))
            .configure_collector(|c| c.linger(Duration::from_millis(5)))
            .start()
            .await
            .expect("the facade starts");
        let router = Router::new()
            .nest(BASE, metrics.api_router())
            .layer(metrics.layer());
        Self {
            metrics,
            router,
            _db: db,
        }
    }

    async fn send(&self, req: Request<Body>) -> (u16, Value) {
        let (status, text) = self.send_text(req).await;
        let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
        (status, body)
    }

    /// The status and the body as sent (for checks of the exact text).
    async fn send_text(&self, req: Request<Body>) -> (u16, String) {
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status().as_u16();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    /// GET `BASE + path` as `user`: the status and the JSON body.
    async fn get(&self, path: &str, user: &str) -> (u16, Value) {
        let req = Request::get(format!("{BASE}{path}"))
            .header("x-forwarded-email", user)
            .body(Body::empty())
            .unwrap();
        self.send(req).await
    }

    /// GET `BASE + path` as `user`, or anonymously.
    async fn get_as(&self, path: &str, user: Option<&str>) -> (u16, Value) {
        let mut req = Request::get(format!("{BASE}{path}"));
        if let Some(user) = user {
            req = req.header("x-forwarded-email", user);
        }
        self.send(req.body(Body::empty()).unwrap()).await
    }

    /// POST a raw JSON body to `/usage-events` as `user`, or anonymously.
    async fn post_body(&self, user: Option<&str>, body: String) -> (u16, Value) {
        let mut req = Request::post(format!("{BASE}/usage-events"))
            .header("content-type", "application/json");
        if let Some(user) = user {
            req = req.header("x-forwarded-email", user);
        }
        self.send(req.body(Body::from(body)).unwrap()).await
    }

    /// GET as the admin, asserting a 200.
    async fn ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path, ADMIN).await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    async fn post_events(&self, user: &str, events: &[Value]) -> (u16, Value) {
        self.post_body(Some(user), json!({ "events": events }).to_string())
            .await
    }

    /// Records requests straight into the collector and waits until they
    /// are stored.
    async fn record(&self, records: impl IntoIterator<Item = RequestRecord>) {
        for r in records {
            assert!(self.metrics.collector().record(r), "queued");
        }
        self.metrics.flush().await.unwrap();
    }

    async fn record_events(&self, events: impl IntoIterator<Item = UsageEvent>) {
        for e in events {
            assert!(self.metrics.collector().record(e), "queued");
        }
        self.metrics.flush().await.unwrap();
    }

    /// Requests and events in one flush (so a rollup running meanwhile sees
    /// all of a kind's rows or none of them).
    async fn record_all(
        &self,
        requests: impl IntoIterator<Item = RequestRecord>,
        events: impl IntoIterator<Item = UsageEvent>,
    ) {
        for r in requests {
            assert!(self.metrics.collector().record(r), "queued");
        }
        for e in events {
            assert!(self.metrics.collector().record(e), "queued");
        }
        self.metrics.flush().await.unwrap();
    }
}

/// A request a minute ago (inside every range, clear of the open hour's
/// edge for the purposes here: both stores count raw and rolled rows once).
fn request(route: &'static str, method: Method, status: u16, ms: u64) -> RequestRecord {
    let mut r = RequestRecord::new(
        SystemTime::now() - Duration::from_secs(60),
        Route::from_static(route),
        method,
        status,
        Duration::from_millis(ms),
    );
    r.user_id = Some(UserId::new(USER));
    r
}

fn usage(kind: &str, page: Option<&str>, user: &str) -> UsageEvent {
    UsageEvent::new(
        kind,
        UserId::new(user),
        SystemTime::now() - Duration::from_secs(60),
    )
    .with_page_name(page.map(str::to_owned))
}

fn event(kind: &str) -> Value {
    json!({
        "event_type": kind,
        "timestamp": app_metrics::query::format_rfc3339(SystemTime::now()),
    })
}

fn is_rfc3339_utc(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.ends_with('Z')
            && time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .is_ok()
    })
}

const MIN5: u64 = 300;
const HOUR: u64 = 3_600;
const DAY: u64 = 86_400;
const CAROL: &str = "carol@example.com";
const OLD: &str = "old@example.com";

/// Now to the whole second: instants before it format without a fraction,
/// so a stored timestamp reads back as the same text from either store.
fn now_s() -> SystemTime {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn ago(t0: SystemTime, secs: u64) -> SystemTime {
    t0 - Duration::from_secs(secs)
}

fn ts(t: SystemTime) -> String {
    app_metrics::query::format_rfc3339(t)
}

/// An RFC 3339 field of an answer.
fn time_of(v: &Value) -> SystemTime {
    let t = time::OffsetDateTime::parse(
        v.as_str().unwrap_or_else(|| panic!("{v} is not a string")),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    SystemTime::from(t)
}

/// `t` rounded down to a multiple of `unit` seconds (a UTC bucket start).
fn floor(t: SystemTime, unit: u64) -> SystemTime {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs / unit * unit)
}

/// `end_time - start_time` of an answer.
fn span(body: &Value) -> Duration {
    time_of(&body["end_time"])
        .duration_since(time_of(&body["start_time"]))
        .unwrap_or_else(|_| panic!("start after end: {body}"))
}

/// The top-level field names of an answer, sorted.
fn keys(body: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

fn request_at(
    t: SystemTime,
    route: &'static str,
    method: Method,
    status: u16,
    ms: u64,
    user: Option<&str>,
) -> RequestRecord {
    let mut r = RequestRecord::new(
        t,
        Route::from_static(route),
        method,
        status,
        Duration::from_millis(ms),
    );
    r.user_id = user.map(UserId::new);
    r
}

fn usage_at(t: SystemTime, kind: &str, page: Option<&str>, user: &str) -> UsageEvent {
    UsageEvent::new(kind, UserId::new(user), t).with_page_name(page.map(str::to_owned))
}

/// The requests of [`seed`]: (seconds before `t0`, route, method, status,
/// milliseconds, user). Two endpoints, one request outside 24 h.
fn seed_requests() -> [(u64, &'static str, Method, u16, u64, &'static str); 5] {
    [
        (600, "/users/{id}", Method::GET, 200, 10, ADMIN),
        (600, "/users/{id}", Method::GET, 200, 20, ADMIN),
        (600, "/users/{id}", Method::GET, 500, 30, ADMIN),
        (120, "/orders", Method::POST, 201, 200, USER),
        (2 * DAY, "/orders", Method::POST, 201, 900, OLD),
    ]
}

/// The events of [`seed`]: (seconds before `t0`, type, page, user); one
/// outside 24 h.
const SEED_EVENTS: [(u64, &str, Option<&str>, &str); 4] = [
    (60, "page_view", Some("/home"), USER),
    (7_200, "page_view", Some("/home"), USER),
    (300, "button_click", Some("/cart"), CAROL),
    (3 * DAY, "query_executed", None, USER),
];

/// Records the known data of the answer checks; returns its `t0`.
async fn seed(api: &Api) -> SystemTime {
    let t0 = now_s();
    api.record_all(
        seed_requests()
            .into_iter()
            .map(|(s, route, method, status, ms, user)| {
                request_at(ago(t0, s), route, method, status, ms, Some(user))
            }),
        SEED_EVENTS
            .iter()
            .map(|&(s, kind, page, user)| usage_at(ago(t0, s), kind, page, user)),
    )
    .await;
    t0
}

macro_rules! contract_suite {
    ($($check:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $check() {
                    super::$check(super::Api::memory().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $check() {
                    super::$check(super::Api::postgres().await).await;
                }
            )*
        }
    };
}

contract_suite!(
    every_read_answers_time_range_start_time_and_end_time,
    time_series_points_carry_the_original_field_names,
    time_series_without_metric_type_is_a_422_naming_the_three,
    endpoints_are_sorted_by_average_then_count_then_name,
    usage_count_answers_count,
    the_default_vocabulary_is_the_original_ten,
    page_views_count_page_view_events_only,
    error_details_are_an_object,
    nul_in_any_stored_string_refuses_the_whole_batch,
    time_series_endpoint_filter_narrows_the_requests_only,
    requests_lists_an_endpoints_slowest_requests,
    reads_are_for_admins_and_ingest_needs_an_identity_first,
    batch_limits_and_custom_range_rules,
    an_empty_store_answers_zeros_and_empty_lists,
    performance_totals_ranges_and_the_endpoint_filter,
    usage_totals_users_and_the_event_type_filter,
    time_series_buckets_for_known_data,
);

// ===== 1. start_time / end_time =====

async fn every_read_answers_time_range_start_time_and_end_time(api: Api) {
    api.record([request("/a", Method::GET, 200, 5)]).await;
    for (path, range) in [
        ("/performance?time_range=7d", "7d"),
        ("/usage?time_range=30d", "30d"),
        ("/time-series?metric_type=both&time_range=90d", "90d"),
        ("/usage/count", "24h"),
    ] {
        let (status, body) = api.get(path, ADMIN).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body["time_range"], range, "{path}");
        assert!(is_rfc3339_utc(&body["start_time"]), "{path}: {body}");
        assert!(is_rfc3339_utc(&body["end_time"]), "{path}: {body}");
        // The query parameters' names are not the body's.
        assert!(body.get("start_date").is_none(), "{path}: {body}");
        assert!(body.get("end_date").is_none(), "{path}: {body}");
    }
    // A custom range answers the window it used.
    let now = SystemTime::now();
    let from = app_metrics::query::format_rfc3339(now - Duration::from_secs(7_200));
    let to = app_metrics::query::format_rfc3339(now - Duration::from_secs(3_600));
    let body = api
        .ok(&format!("/performance?start_date={from}&end_date={to}"))
        .await;
    assert_eq!(
        (&body["time_range"], &body["start_time"], &body["end_time"]),
        (&json!("custom"), &json!(from), &json!(to))
    );
}

// ===== 2. time-series field names =====

async fn time_series_points_carry_the_original_field_names(api: Api) {
    api.record([
        request("/a", Method::GET, 200, 10),
        request("/a", Method::GET, 500, 30),
    ])
    .await;
    api.record_events([usage("page_view", Some("/home"), USER)])
        .await;
    let body = api.ok("/time-series?metric_type=both").await;
    assert_eq!(body["metric_type"], "both");
    let points = body["data_points"].as_array().unwrap();
    let busy: Vec<&Value> = points
        .iter()
        .filter(|p| p["total_requests"].as_u64().unwrap() > 0)
        .collect();
    assert_eq!(busy.len(), 1, "{body}");
    let p = busy[0];
    assert_eq!(p["total_requests"], 2);
    assert_eq!(p["avg_response_time_ms"], 20.0);
    assert_eq!(p["error_rate"], 0.5);
    assert_eq!(p["total_events"], 1);
    assert_eq!(p["unique_users"], 1);
    for old in ["request_count", "event_count"] {
        assert!(p.get(old).is_none(), "{old} in {p}");
    }
    let body = api.ok("/time-series?metric_type=usage").await;
    let p = &body["data_points"][0];
    assert!(p.get("total_events").is_some() && p.get("unique_users").is_some());
    assert!(p.get("total_requests").is_none(), "{p}");
    let body = api.ok("/time-series?metric_type=performance").await;
    let p = &body["data_points"][0];
    for field in ["total_requests", "avg_response_time_ms", "error_rate"] {
        assert!(p.get(field).is_some(), "{field} missing from {p}");
    }
    assert!(p.get("total_events").is_none(), "{p}");
}

// ===== 3. metric_type required =====

async fn time_series_without_metric_type_is_a_422_naming_the_three(api: Api) {
    for path in [
        "/time-series",
        "/time-series?time_range=7d",
        "/time-series?metric_type=",
    ] {
        let (status, body) = api.get(path, ADMIN).await;
        assert_eq!(status, 422, "{path}: {body}");
        let message = body["message"].as_str().unwrap();
        for allowed in ["performance", "usage", "both"] {
            assert!(message.contains(allowed), "{path}: {message}");
        }
        assert_eq!(body["status_code"], 422);
    }
    let (_, body) = api.get("/time-series?time_range=7d", ADMIN).await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("metric_type is required: one of performance, usage, both"),
        "{body}"
    );
    let (status, body) = api.get("/time-series?metric_type=latency", ADMIN).await;
    assert_eq!(status, 422, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("metric_type must be one of")
            && message.contains("performance, usage, both"),
        "{message}"
    );
}

// ===== 4. endpoint order =====

async fn endpoints_are_sorted_by_average_then_count_then_name(api: Api) {
    let mut records = Vec::new();
    // /slow: one request at 90 ms, the highest average.
    records.push(request("/slow", Method::GET, 200, 90));
    // Three endpoints averaging 20 ms: /b with 4 requests first, then /a
    // and /c with 2 each by name, /c's POST after its GET.
    for ms in [10, 30, 10, 30] {
        records.push(request("/b", Method::GET, 200, ms));
    }
    for ms in [20, 20] {
        records.push(request("/a", Method::GET, 200, ms));
        records.push(request("/c", Method::GET, 200, ms));
        records.push(request("/c", Method::POST, 200, ms));
    }
    // /spiky: a high p95 (one 80 ms outlier) but a lower average (14 ms).
    for ms in [5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 80] {
        records.push(request("/spiky", Method::GET, 200, ms));
    }
    api.record(records).await;
    let body = api.ok("/performance").await;
    let order: Vec<String> = body["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["method"].as_str().unwrap(),
                e["endpoint"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            "GET /slow",
            "GET /b",
            "GET /a",
            "GET /c",
            "POST /c",
            "GET /spiky"
        ],
        "{body}"
    );
}

// ===== 5. /usage/count =====

async fn usage_count_answers_count(api: Api) {
    let t0 = now_s();
    api.record_events([
        usage_at(ago(t0, 60), "page_view", None, USER),
        usage_at(ago(t0, 60), "button_click", None, USER),
        usage_at(ago(t0, 3 * DAY), "query_executed", None, USER),
        usage_at(ago(t0, 60), "page_view", None, ADMIN),
        usage_at(ago(t0, 60), "page_view", Some("/home"), CAROL),
    ])
    .await;
    let (status, body) = api.get("/usage/count", USER).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["count"], &body["user_id"], &body["time_range"]),
        (&json!(2), &json!(USER), &json!("24h")),
        "the caller's own, the last 24 h: {body}"
    );
    let (status, body) = api.get("/usage/count?time_range=7d", USER).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["count"], 3, "the event 3 days ago is in 7 d: {body}");
    assert_eq!(body["time_range"], "7d");
    assert!(is_rfc3339_utc(&body["start_time"]) && is_rfc3339_utc(&body["end_time"]));
    assert!(body.get("event_count").is_none(), "{body}");
    assert_eq!(
        keys(&body),
        ["count", "end_time", "start_time", "time_range", "user_id"]
    );
    for (user, expected) in [(CAROL, 1), (ADMIN, 1), ("nobody@example.com", 0)] {
        let (status, body) = api.get("/usage/count", user).await;
        assert_eq!((status, &body["count"]), (200, &json!(expected)), "{user}");
        assert_eq!(body["user_id"], user);
    }
    // Events sent through the API count for their sender.
    let (status, body) = api
        .post_events(ADMIN, &[event("query_executed"), event("query_executed")])
        .await;
    assert_eq!(status, 202, "{body}");
    api.metrics.flush().await.unwrap();
    assert_eq!(api.get("/usage/count", ADMIN).await.1["count"], 3);
}

// ===== 6. vocabulary =====

async fn the_default_vocabulary_is_the_original_ten(api: Api) {
    let events: Vec<Value> = DEFAULT_TEN.iter().map(|t| event(t)).collect();
    let (status, body) = api.post_events(USER, &events).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body,
        json!({"message": "Events accepted", "events_received": 10, "status": "queued"})
    );
    api.metrics.flush().await.unwrap();
    let body = api.ok("/usage").await;
    let expected: serde_json::Map<String, Value> = DEFAULT_TEN
        .iter()
        .map(|t| ((*t).to_owned(), json!(1)))
        .collect();
    assert_eq!(body["event_distribution"], Value::Object(expected));

    for unknown in ["invalid_type", "link_click", "search", "error"] {
        let (status, body) = api.post_events(USER, &[event(unknown)]).await;
        assert!(status == 400 || status == 422, "{unknown}: {status} {body}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("Invalid event_type: '{unknown}'")),
            "{unknown}: {message}"
        );
    }
}

// ===== 7. page_views =====

async fn page_views_count_page_view_events_only(api: Api) {
    api.record_events([
        usage("page_view", Some("/home"), USER),
        usage("page_view", Some("/home"), ADMIN),
        usage("page_view", Some("/items"), USER),
        usage("button_click", Some("/home"), USER),
        usage("form_submit", Some("/settings"), USER),
        usage("page_view", None, USER),
    ])
    .await;
    let body = api.ok("/usage").await;
    assert_eq!(body["metrics"]["total_events"], 6);
    assert_eq!(
        body["page_views"],
        json!({"/home": 2, "/items": 1}),
        "{body}"
    );
    let body = api.ok("/usage?event_type=page_view").await;
    assert_eq!(
        body["page_views"],
        json!({"/home": 2, "/items": 1}),
        "{body}"
    );
    let body = api.ok("/usage?event_type=button_click").await;
    assert_eq!(body["page_views"], json!({}), "{body}");
}

// ===== 8. error details =====

async fn error_details_are_an_object(api: Api) {
    let (status, body) = api
        .post_events(
            USER,
            &[
                event("page_view"),
                json!({"event_type": "invalid_type", "timestamp": "soon"}),
            ],
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let details = body["details"].as_object().expect("details is an object");
    let errors = details["errors"].as_array().unwrap();
    let found: Vec<(u64, &str)> = errors
        .iter()
        .map(|e| (e["index"].as_u64().unwrap(), e["field"].as_str().unwrap()))
        .collect();
    assert_eq!(found, [(1, "event_type"), (1, "timestamp")], "{body}");
    for e in errors {
        assert!(e["message"].is_string(), "{e}");
    }
    assert_eq!(
        (&body["error"], &body["status_code"]),
        (&json!("Unprocessable Entity"), &json!(422))
    );
    // Errors without details carry none.
    let (_, body) = api.get("/time-series", ADMIN).await;
    assert!(body.get("details").is_none(), "{body}");
}

// ===== 8b. text the store cannot keep (issue 13 F3) =====

async fn nul_in_any_stored_string_refuses_the_whole_batch(api: Api) {
    let with = |field: &str, value: Value| {
        let mut e = event("page_view");
        e[field] = value;
        e
    };
    // What was seen: two events, one NUL in a page_name. It used to be a
    // 202, then one row stored and one counted dropped by the sink.
    let seen = [
        with("page_name", json!("/home")),
        with("page_name", json!("/ho\u{0}me")),
    ];
    let batches = [
        (seen.to_vec(), 1, "page_name"),
        (vec![with("element_id", json!("\u{0}"))], 0, "element_id"),
        (vec![with("metadata", json!({"k\u{0}": 1}))], 0, "metadata"),
        (
            vec![
                event("button_click"),
                with("metadata", json!({"a": [{"b": "x\u{0}"}]})),
            ],
            1,
            "metadata",
        ),
    ];
    for (events, index, field) in batches {
        let (status, body) = api.post_events(USER, &events).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(
            body["details"]["errors"],
            json!([{"index": index, "field": field, "message": body["details"]["errors"][0]["message"]}]),
            "{body}"
        );
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains(field) && message.contains("NUL"),
            "{message}"
        );
    }
    // Text the store does keep, next to it: control characters other than
    // NUL, RTL and zero-width marks, an emoji, in names and metadata.
    let odd = "\u{1}\u{7f}\u{202e}rtl\u{200b}\u{1f600}";
    let (status, body) = api
        .post_events(
            USER,
            &[
                with("page_name", json!(odd)),
                with("metadata", json!({ odd: [odd, {"k": odd}] })),
            ],
        )
        .await;
    assert_eq!(status, 202, "{body}");
    api.metrics.flush().await.unwrap();
    let usage = api.ok("/usage").await;
    assert_eq!(
        usage["metrics"]["total_events"], 2,
        "only the last batch: {usage}"
    );
    assert_eq!(usage["page_views"][odd], 1, "{usage}");
    let stats = api.metrics.stats();
    assert_eq!(stats.dropped(), 0, "nothing accepted then lost: {stats:?}");
    assert!(stats.is_consistent(), "{stats:?}");
}

// ===== 9. drill-down (issue 11): extra parameters and an extra route =====

fn with_id(mut r: RequestRecord, id: &str) -> RequestRecord {
    r.correlation_id = app_metrics::sink::CorrelationId::from_header(&id.parse().unwrap());
    r
}

async fn time_series_endpoint_filter_narrows_the_requests_only(api: Api) {
    let t0 = now_s();
    let at = ago(t0, 60);
    api.record_all(
        [
            request_at(at, "/items/{id}", Method::GET, 200, 10, Some(USER)),
            request_at(at, "/items/{id}", Method::GET, 500, 30, Some(USER)),
            request_at(at, "/items/{id}", Method::DELETE, 204, 50, Some(USER)),
            request_at(at, "/other", Method::GET, 200, 900, Some(USER)),
            request_at(at, "/orders", Method::POST, 201, 70, Some(USER)),
            request_at(
                ago(t0, 2 * DAY),
                "/orders",
                Method::POST,
                201,
                80,
                Some(USER),
            ),
        ],
        [usage_at(at, "page_view", Some("/home"), USER)],
    )
    .await;
    let busy = |body: &Value| -> Vec<Value> {
        body["data_points"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["total_requests"].as_u64().unwrap() > 0)
            .cloned()
            .collect()
    };
    let events = |body: &Value| -> u64 {
        body["data_points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["total_events"].as_u64().unwrap())
            .sum()
    };
    for (range, interval, unit) in [("24h", "5min", MIN5), ("7d", "hourly", HOUR)] {
        let body = api
            .ok(&format!(
                "/time-series?metric_type=both&time_range={range}&endpoint=/items/%7Bid%7D"
            ))
            .await;
        assert_eq!(body["interval"], interval, "{range}");
        let points = busy(&body);
        assert_eq!(points.len(), 1, "{range}: {body}");
        assert_eq!(points[0]["timestamp"], ts(floor(at, unit)), "{range}");
        assert_eq!(points[0]["total_requests"], 3, "{range}");
        assert_eq!(points[0]["error_count"], 1, "{range}: 204 is no error");
        assert_eq!(points[0]["error_rate"], 1.0 / 3.0, "{range}");
        assert_eq!(points[0]["avg_response_time_ms"], 30.0, "{range}");
        // Usage fields are not filtered: usage events belong to no endpoint.
        assert_eq!(events(&body), 1, "{range}");
        let body = api
            .ok(&format!(
                "/time-series?metric_type=performance&time_range={range}\
                 &endpoint=/items/%7Bid%7D&method=GET"
            ))
            .await;
        let points = busy(&body);
        assert_eq!(points.len(), 1, "{range}: {body}");
        assert_eq!(points[0]["total_requests"], 2, "{range}");
        assert_eq!(points[0]["p50_response_time_ms"], 20.0, "{range}");
        assert_eq!(
            points[0]["p99_response_time_ms"],
            10.0 + 20.0 * 0.99,
            "{range}"
        );
    }
    // Another method, another endpoint: nothing at all.
    for q in [
        "/time-series?metric_type=performance&endpoint=/items/%7Bid%7D&method=POST",
        "/time-series?metric_type=performance&endpoint=/nowhere",
    ] {
        assert_eq!(api.ok(q).await["data_points"], json!([]), "{q}");
    }
    // One endpoint over several hours.
    let orders = api
        .ok("/time-series?metric_type=both&endpoint=/orders&method=POST&time_range=7d")
        .await;
    let hours: Vec<(&Value, &Value)> = orders["data_points"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["total_requests"].as_u64().unwrap() > 0)
        .map(|p| (&p["timestamp"], &p["total_requests"]))
        .collect();
    assert_eq!(
        hours,
        [
            (&json!(ts(floor(ago(t0, 2 * DAY), HOUR))), &json!(1)),
            (&json!(ts(floor(at, HOUR))), &json!(1))
        ],
        "{orders}"
    );
    // An empty filter is no filter.
    let all = api.ok("/time-series?metric_type=both").await;
    let unfiltered = api
        .ok("/time-series?metric_type=both&endpoint=&method=")
        .await;
    assert_eq!(busy(&unfiltered), busy(&all));
    assert_eq!(busy(&all)[0]["total_requests"], 5, "{all}");
    assert_eq!(events(&unfiltered), events(&all));
}

async fn requests_lists_an_endpoints_slowest_requests(api: Api) {
    let t0 = now_s();
    let at = ago(t0, 60);
    let items = |method, status, ms, user, id: Option<&str>| {
        let r = request_at(at, "/items/{id}", method, status, ms, user);
        match id {
            Some(id) => with_id(r, id),
            None => r,
        }
    };
    api.record([
        items(Method::GET, 200, 10, Some(USER), Some("c-10")),
        items(Method::GET, 500, 30, Some(USER), Some("c-30")),
        items(Method::DELETE, 204, 50, Some(USER), Some("c-50")),
        items(Method::GET, 200, 20, Some(USER), None),
        // The same latency, newer and anonymous.
        request_at(ago(t0, 30), "/items/{id}", Method::GET, 200, 20, None),
        with_id(
            request_at(at, "/other", Method::GET, 200, 900, Some(USER)),
            "c-900",
        ),
        with_id(
            request_at(
                ago(t0, 2 * DAY),
                "/other",
                Method::GET,
                200,
                700,
                Some(USER),
            ),
            "c-old",
        ),
    ])
    .await;
    let row = |t: SystemTime,
               method: &str,
               status: u16,
               ms: f64,
               user: Option<&str>,
               id: Option<&str>| {
        json!({
            "timestamp": ts(t),
            "method": method,
            "status_code": status,
            "response_time_ms": ms,
            "user_id": user,
            "correlation_id": id,
        })
    };
    let body = api
        .ok("/requests?endpoint=/items/%7Bid%7D&time_range=30d")
        .await;
    assert_eq!(body["time_range"], "30d");
    assert_eq!(body["endpoint"], "/items/{id}");
    assert_eq!(body["method"], Value::Null);
    assert_eq!(body["limit"], 20);
    assert_eq!(
        keys(&body),
        [
            "end_time",
            "endpoint",
            "limit",
            "method",
            "requests",
            "start_time",
            "status_codes",
            "time_range"
        ]
    );
    // Clipped to the raw retention: the window searched is the last 7 days.
    assert_eq!(span(&body), Duration::from_secs(7 * DAY));
    assert!(is_rfc3339_utc(&body["start_time"]) && is_rfc3339_utc(&body["end_time"]));
    assert_eq!(body["status_codes"], json!({"200": 3, "204": 1, "500": 1}));
    assert_eq!(
        body["requests"],
        json!([
            row(at, "DELETE", 204, 50.0, Some(USER), Some("c-50")),
            row(at, "GET", 500, 30.0, Some(USER), Some("c-30")),
            // Ties: newer first.
            row(ago(t0, 30), "GET", 200, 20.0, None, None),
            row(at, "GET", 200, 20.0, Some(USER), None),
            row(at, "GET", 200, 10.0, Some(USER), Some("c-10")),
        ]),
        "{body}"
    );
    let body = api
        .ok("/requests?endpoint=/items/%7Bid%7D&method=GET&limit=2")
        .await;
    assert_eq!(body["time_range"], "24h");
    assert_eq!(
        (&body["method"], &body["limit"]),
        (&json!("GET"), &json!(2))
    );
    assert_eq!(span(&body), Duration::from_secs(DAY));
    let slowest: Vec<(&Value, &Value)> = body["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (&r["response_time_ms"], &r["correlation_id"]))
        .collect();
    assert_eq!(
        slowest,
        [(&json!(30.0), &json!("c-30")), (&json!(20.0), &Value::Null)]
    );
    assert_eq!(body["status_codes"], json!({"200": 3, "500": 1}));
    // The request 2 days ago is inside the raw retention, not inside 24 h.
    let month = api.ok("/requests?endpoint=/other&time_range=30d").await;
    let ids: Vec<&Value> = month["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["correlation_id"])
        .collect();
    assert_eq!(ids, [&json!("c-900"), &json!("c-old")], "{month}");
    assert_eq!(month["status_codes"], json!({"200": 2}));
    let day = api.ok("/requests?endpoint=/other").await;
    assert_eq!(day["status_codes"], json!({"200": 1}), "{day}");
    // Nothing for an unknown endpoint, or a range before the retention
    // (clipped to an empty window at its start).
    let none = api.ok("/requests?endpoint=/nowhere").await;
    assert_eq!(
        (&none["requests"], &none["status_codes"]),
        (&json!([]), &json!({}))
    );
    let before = SystemTime::now();
    let old = api
        .ok(&format!(
            "/requests?endpoint=/other&start_date={}&end_date={}",
            ts(ago(t0, 20 * DAY)),
            ts(ago(t0, 10 * DAY))
        ))
        .await;
    let after = SystemTime::now();
    assert_eq!(old["time_range"], "custom");
    assert_eq!(old["start_time"], old["end_time"], "{old}");
    let week = Duration::from_secs(7 * DAY);
    let start = time_of(&old["start_time"]);
    assert!(
        floor(before - week, 1) <= start && start <= after - week,
        "the retention's start: {old}"
    );
    assert_eq!(
        (&old["requests"], &old["status_codes"]),
        (&json!([]), &json!({}))
    );
}

// ===== the rest of the HTTP contract, on both stores =====

const ADMIN_READS: [&str; 4] = [
    "/performance",
    "/usage",
    "/time-series?metric_type=both",
    "/requests?endpoint=/a",
];

async fn reads_are_for_admins_and_ingest_needs_an_identity_first(api: Api) {
    let unauthenticated =
        json!({"error": "Unauthorized", "message": "Authentication required", "status_code": 401});
    let denied = json!({
        "error": "Access Denied",
        "message": "Administrator privileges required to access metrics",
        "status_code": 403
    });
    for path in ADMIN_READS {
        assert_eq!(
            api.get_as(path, None).await,
            (401, unauthenticated.clone()),
            "{path}"
        );
        assert_eq!(
            api.get_as(path, Some(USER)).await,
            (403, denied.clone()),
            "{path}"
        );
        let (status, body) = api.get_as(path, Some(ADMIN)).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    // Identity before anything else: an anonymous batch is a 401 whatever
    // its body, and the caller's own count needs one too.
    for events in [vec![event("page_view")], vec![]] {
        let body = json!({ "events": events }).to_string();
        assert_eq!(
            api.post_body(None, body).await,
            (401, unauthenticated.clone())
        );
    }
    assert_eq!(api.get_as("/usage/count", None).await.0, 401);
    api.metrics.flush().await.unwrap();
    let usage = api.ok("/usage").await;
    assert_eq!(
        usage["metrics"]["total_events"], 0,
        "a refused batch is never stored: {usage}"
    );
}

async fn batch_limits_and_custom_range_rules(api: Api) {
    let (status, body) = api.post_events(USER, &[]).await;
    assert_eq!(status, 422, "an empty batch: {body}");
    let events: Vec<Value> = (0..1001).map(|_| event("file_uploaded")).collect();
    let req = Request::post(format!("{BASE}/usage-events"))
        .header("x-forwarded-email", USER)
        .header("content-type", "application/json")
        .body(Body::from(json!({ "events": events }).to_string()))
        .unwrap();
    assert_eq!(
        api.send_text(req).await,
        (
            413,
            r#"{"detail":"Batch size exceeds maximum of 1000 events","max_batch_size":1000,"received":1001}"#
                .to_owned()
        )
    );
    // Counted even when the excess events are not events at all.
    let (status, body) = api
        .post_body(
            Some(USER),
            format!(r#"{{"events":[{}]}}"#, vec!["0"; 1500].join(",")),
        )
        .await;
    assert_eq!((status, &body["received"]), (413, &json!(1500)), "{body}");
    api.metrics.flush().await.unwrap();
    assert_eq!(
        api.ok("/usage").await["metrics"]["total_events"],
        0,
        "a refused batch is never stored"
    );
    let (status, body) = api.post_events(USER, &events[..1000]).await;
    assert_eq!(
        (status, &body["events_received"]),
        (202, &json!(1000)),
        "{body}"
    );
    api.metrics.flush().await.unwrap();
    assert_eq!(api.ok("/usage").await["metrics"]["total_events"], 1000);

    let now = SystemTime::now();
    let ago = |secs: u64| now - Duration::from_secs(secs);
    let ahead = |secs: u64| now + Duration::from_secs(secs);
    let range = |start: SystemTime, end: SystemTime| {
        format!(
            "start_date={}&end_date={}",
            app_metrics::query::format_rfc3339(start),
            app_metrics::query::format_rfc3339(end)
        )
    };
    const DAY: u64 = 86_400;
    let cases = [
        (
            range(ago(90 * DAY + 11), ago(10)),
            "the range from start_date to end_date must not span more than 90 days",
        ),
        (
            range(ago(3600), ahead(3600)),
            "end_date must not be in the future",
        ),
        (
            range(ago(3600), ago(3600)),
            "start_date must be before end_date",
        ),
        (
            range(ago(3600), ago(7200)),
            "start_date must be before end_date",
        ),
        (
            range(ago(95 * DAY), ago(10 * DAY)),
            "start_date must not be more than 90 days ago (data is kept for 90 days)",
        ),
    ];
    for path in [
        "/performance?",
        "/usage?",
        "/time-series?metric_type=both&",
        "/usage/count?",
        "/requests?endpoint=/a&",
    ] {
        for (q, expected) in &cases {
            let (status, body) = api.get(&format!("{path}{q}"), ADMIN).await;
            assert_eq!(
                (status, body["message"].as_str()),
                (400, Some(*expected)),
                "{path}{q}"
            );
        }
        // Exactly 90 days up to a little ahead of now (clamped to the
        // server's now) is served as a custom range.
        let end = ahead(30);
        let body = api
            .ok(&format!(
                "{path}{}",
                range(end - Duration::from_secs(90 * DAY), end)
            ))
            .await;
        assert_eq!(body["time_range"], "custom", "{path}: {body}");
        let (status, body) = api.get(&format!("{path}time_range=1y"), ADMIN).await;
        assert_eq!(status, 422, "{body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("time_range must be one of")
        );
        let q = format!(
            "start_date=yesterday&end_date={}",
            app_metrics::query::format_rfc3339(now)
        );
        let (status, body) = api.get(&format!("{path}{q}"), ADMIN).await;
        assert_eq!(status, 422, "{body}");
        assert!(
            body["message"].as_str().unwrap().contains("RFC 3339"),
            "{body}"
        );
    }
}

async fn an_empty_store_answers_zeros_and_empty_lists(api: Api) {
    for (range, secs) in [
        ("24h", DAY),
        ("7d", 7 * DAY),
        ("30d", 30 * DAY),
        ("90d", 90 * DAY),
    ] {
        let length = Duration::from_secs(secs);
        let body = api.ok(&format!("/performance?time_range={range}")).await;
        assert_eq!(
            keys(&body),
            [
                "end_time",
                "endpoints",
                "metrics",
                "start_time",
                "time_range"
            ]
        );
        assert_eq!((&body["time_range"], span(&body)), (&json!(range), length));
        assert_eq!(
            body["metrics"],
            json!({
                "total_requests": 0, "avg_response_time_ms": 0.0, "p50_response_time_ms": 0.0,
                "p95_response_time_ms": 0.0, "p99_response_time_ms": 0.0, "error_rate": 0.0,
                "active_users": 0
            }),
            "{range}"
        );
        assert_eq!(body["endpoints"], json!([]));
        let body = api.ok(&format!("/usage?time_range={range}")).await;
        assert_eq!(
            keys(&body),
            [
                "end_time",
                "event_distribution",
                "metrics",
                "page_views",
                "start_time",
                "time_range"
            ]
        );
        assert_eq!((&body["time_range"], span(&body)), (&json!(range), length));
        assert_eq!(
            body["metrics"],
            json!({"total_events": 0, "unique_users": 0, "active_users": 0, "active_users_current_hour": 0}),
            "{range}"
        );
        assert_eq!(body["event_distribution"], json!({}));
        assert_eq!(body["page_views"], json!({}));
        let body = api
            .ok(&format!("/time-series?metric_type=both&time_range={range}"))
            .await;
        assert_eq!(
            keys(&body),
            [
                "data_points",
                "end_time",
                "interval",
                "metric_type",
                "start_time",
                "time_range"
            ]
        );
        let interval = if range == "24h" { "5min" } else { "hourly" };
        assert_eq!(
            (&body["metric_type"], &body["interval"], &body["time_range"]),
            (&json!("both"), &json!(interval), &json!(range))
        );
        assert_eq!(span(&body), length, "{range}");
        assert_eq!(body["data_points"], json!([]), "{range}");
        let body = api
            .ok(&format!("/requests?endpoint=/a&time_range={range}"))
            .await;
        assert_eq!(
            (&body["requests"], &body["status_codes"]),
            (&json!([]), &json!({})),
            "{range}"
        );
        let (status, body) = api
            .get(&format!("/usage/count?time_range={range}"), USER)
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            keys(&body),
            ["count", "end_time", "start_time", "time_range", "user_id"]
        );
        assert_eq!(
            (&body["count"], &body["user_id"], &body["time_range"]),
            (&json!(0), &json!(USER), &json!(range))
        );
        assert_eq!(span(&body), length, "{range}");
    }
    let body = api.ok("/time-series?metric_type=performance").await;
    assert_eq!(
        (&body["metric_type"], &body["interval"]),
        (&json!("performance"), &json!("5min"))
    );
    assert_eq!(body["data_points"], json!([]));
}

// ===== answers for known data (the seed) =====

async fn performance_totals_ranges_and_the_endpoint_filter(api: Api) {
    seed(&api).await;
    let body = api.ok("/performance").await;
    let m = &body["metrics"];
    assert_eq!(
        (
            &m["total_requests"],
            &m["error_rate"],
            &m["active_users"],
            &m["avg_response_time_ms"]
        ),
        (&json!(4), &json!(0.25), &json!(2), &json!(65.0)),
        "{body}"
    );
    let endpoints = body["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 2, "{body}");
    assert_eq!(
        (&endpoints[0]["endpoint"], &endpoints[0]["method"]),
        (&json!("/orders"), &json!("POST")),
        "slowest first"
    );
    let users = &endpoints[1];
    assert_eq!(
        (
            &users["endpoint"],
            &users["method"],
            &users["request_count"],
            &users["error_count"]
        ),
        (&json!("/users/{id}"), &json!("GET"), &json!(3), &json!(1))
    );
    // The latency sketch is exact to within 1 %.
    let p50 = users["p50_response_time_ms"].as_f64().unwrap();
    assert!((p50 - 20.0).abs() <= 0.2, "{p50}");

    // 7 days hold the request 2 days ago and its user.
    let m = &api.ok("/performance?time_range=7d").await["metrics"];
    assert_eq!(
        (
            &m["total_requests"],
            &m["active_users"],
            &m["avg_response_time_ms"]
        ),
        (&json!(5), &json!(3), &json!(232.0)),
        "{m}"
    );
    let body = api.ok("/performance?endpoint=/users/%7Bid%7D").await;
    assert_eq!(body["metrics"]["total_requests"], 3);
    assert_eq!(body["metrics"]["error_rate"], 1.0 / 3.0);
    assert_eq!(body["endpoints"].as_array().unwrap().len(), 1);
    // An endpoint filter of exactly 500 characters is served (and matches nothing).
    let longest = api
        .ok(&format!("/performance?endpoint=/{}", "a".repeat(499)))
        .await;
    assert_eq!(longest["metrics"]["total_requests"], 0);
    assert_eq!(longest["endpoints"], json!([]));
}

async fn usage_totals_users_and_the_event_type_filter(api: Api) {
    let t0 = seed(&api).await;
    let body = api.ok("/usage").await;
    // The current hour is the answer's: [its start, now], requests' users too.
    let hour = floor(time_of(&body["end_time"]), HOUR);
    let mut current: Vec<&str> = seed_requests()
        .iter()
        .map(|r| (r.0, r.5))
        .chain(SEED_EVENTS.iter().map(|e| (e.0, e.3)))
        .filter(|&(s, _)| ago(t0, s) >= hour)
        .map(|(_, user)| user)
        .collect();
    current.sort_unstable();
    current.dedup();
    assert_eq!(
        body["metrics"],
        json!({
            "total_events": 3,
            "unique_users": 2,
            "active_users": 3,
            "active_users_current_hour": current.len(),
        }),
        "events by bob and carol; requests by the admin and bob: {body}"
    );
    assert_eq!(
        body["event_distribution"],
        json!({"page_view": 2, "button_click": 1})
    );
    let body = api.ok("/usage?time_range=7d").await;
    assert_eq!(
        (
            &body["metrics"]["total_events"],
            &body["metrics"]["active_users"]
        ),
        (&json!(4), &json!(4)),
        "{body}"
    );
    let body = api
        .ok("/usage?time_range=7d&event_type=query_executed")
        .await;
    assert_eq!(body["metrics"]["total_events"], 1, "{body}");
    assert_eq!(body["metrics"]["unique_users"], 1, "{body}");
    assert_eq!(body["event_distribution"], json!({"query_executed": 1}));
}

async fn time_series_buckets_for_known_data(api: Api) {
    let t0 = seed(&api).await;
    let body = api.ok("/time-series?metric_type=performance").await;
    assert_eq!(
        (&body["metric_type"], &body["interval"]),
        (&json!("performance"), &json!("5min"))
    );
    // Every 5-minute bucket of the range, from the one holding its start.
    let points = body["data_points"].as_array().unwrap();
    let first = floor(time_of(&body["start_time"]), MIN5);
    let stamps: Vec<String> = points
        .iter()
        .map(|p| p["timestamp"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = (0..points.len() as u64)
        .map(|i| ts(first + Duration::from_secs(i * MIN5)))
        .collect();
    assert_eq!(
        stamps, expected,
        "consecutive buckets from the range's start"
    );
    let last_start = floor(time_of(&body["end_time"]) - Duration::from_nanos(1), MIN5);
    assert_eq!(
        stamps.last(),
        Some(&ts(last_start)),
        "up to the range's end"
    );
    let with_requests: Vec<(&str, u64)> = points
        .iter()
        .filter(|p| p["total_requests"].as_u64().unwrap() > 0)
        .map(|p| {
            (
                p["timestamp"].as_str().unwrap(),
                p["total_requests"].as_u64().unwrap(),
            )
        })
        .collect();
    let (users, orders) = (ts(floor(ago(t0, 600), MIN5)), ts(floor(ago(t0, 120), MIN5)));
    assert_eq!(
        with_requests,
        [(users.as_str(), 3), (orders.as_str(), 1)],
        "{body}"
    );

    let body = api.ok("/time-series?metric_type=both&time_range=7d").await;
    assert_eq!(body["interval"], "hourly");
    let points = body["data_points"].as_array().unwrap();
    let sum = |field: &str| -> u64 { points.iter().map(|p| p[field].as_u64().unwrap()).sum() };
    assert_eq!(
        (sum("total_requests"), sum("total_events")),
        (5, 4),
        "{body}"
    );
    let last = points.last().unwrap();
    let hour = floor(time_of(&body["end_time"]) - Duration::from_nanos(1), HOUR);
    assert_eq!(last["timestamp"], ts(hour), "the current hour last");
    let in_hour = |s: u64| floor(ago(t0, s), HOUR) == hour;
    let requests = seed_requests().iter().filter(|r| in_hour(r.0)).count();
    let mut users: Vec<&str> = SEED_EVENTS
        .iter()
        .filter(|e| in_hour(e.0))
        .map(|e| e.3)
        .collect();
    let events = users.len();
    users.sort_unstable();
    users.dedup();
    assert_eq!(
        (
            &last["total_requests"],
            &last["total_events"],
            &last["unique_users"]
        ),
        (&json!(requests), &json!(events), &json!(users.len())),
        "{last}"
    );

    let body = api
        .ok("/time-series?metric_type=usage&interval=hourly")
        .await;
    assert_eq!(body["interval"], "hourly");
    let events: u64 = body["data_points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["total_events"].as_u64().unwrap())
        .sum();
    assert_eq!(events, 3);
}
