//! The original API's contract (../shared/CONTRACT.md §1, issue 10), one
//! suite that both stores run: every check below is a function over an
//! [`Api`], and [`contract_suite!`] turns each into a test on the in-memory
//! store and on PostgreSQL (a throwaway cluster from the test harness, or
//! `DATABASE_URL`). A client written for the original API depends on these
//! names, so a near miss fails here.
//!
//! Requests go through the facade's layer and `api_router()` over HTTP
//! (`oneshot`), identity from the trusted proxy headers; the API's own
//! requests are excluded from recording, so the data is exactly what each
//! check records through the collector.

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
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status().as_u16();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
        (status, body)
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
        let req = Request::post(format!("{BASE}/usage-events"))
            .header("x-forwarded-email", user)
            .header("content-type", "application/json")
            .body(Body::from(json!({ "events": events }).to_string()))
            .unwrap();
        self.send(req).await
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
    time_series_endpoint_filter_narrows_the_requests_only,
    requests_lists_an_endpoints_slowest_requests,
    reads_are_for_admins_and_ingest_needs_an_identity_first,
    batch_limits_and_custom_range_rules,
    an_empty_store_answers_zeros_and_empty_lists,
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
    let (status, body) = api.get("/time-series?metric_type=latency", ADMIN).await;
    assert_eq!(status, 422, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("performance, usage, both"), "{message}");
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
    api.record_events([
        usage("page_view", None, USER),
        usage("button_click", None, USER),
        usage("page_view", None, ADMIN),
    ])
    .await;
    let (status, body) = api.get("/usage/count?time_range=7d", USER).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["count"], 2, "{body}");
    assert_eq!(body["time_range"], "7d");
    assert!(is_rfc3339_utc(&body["start_time"]) && is_rfc3339_utc(&body["end_time"]));
    assert!(body.get("event_count").is_none(), "{body}");
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for key in keys {
        assert!(
            ["count", "time_range", "start_time", "end_time", "user_id"].contains(&key),
            "unexpected {key} in {body}"
        );
    }
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

// ===== 9. drill-down (issue 11): extra parameters and an extra route =====

fn with_id(mut r: RequestRecord, id: &str) -> RequestRecord {
    r.correlation_id = app_metrics::sink::CorrelationId::from_header(&id.parse().unwrap());
    r
}

async fn time_series_endpoint_filter_narrows_the_requests_only(api: Api) {
    api.record([
        request("/items/{id}", Method::GET, 200, 10),
        request("/items/{id}", Method::GET, 500, 30),
        request("/items/{id}", Method::DELETE, 204, 50),
        request("/other", Method::GET, 200, 900),
    ])
    .await;
    api.record_events([usage("page_view", Some("/home"), USER)])
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
    for range in ["24h", "7d"] {
        let body = api
            .ok(&format!(
                "/time-series?metric_type=both&time_range={range}&endpoint=/items/%7Bid%7D"
            ))
            .await;
        let points = busy(&body);
        assert_eq!(points.len(), 1, "{range}: {body}");
        assert_eq!(points[0]["total_requests"], 3, "{range}");
        assert_eq!(points[0]["error_rate"], 1.0 / 3.0, "{range}");
        assert_eq!(points[0]["avg_response_time_ms"], 30.0, "{range}");
        // Usage fields are not filtered.
        let events: u64 = body["data_points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["total_events"].as_u64().unwrap())
            .sum();
        assert_eq!(events, 1, "{range}");
        let body = api
            .ok(&format!(
                "/time-series?metric_type=performance&time_range={range}\
                 &endpoint=/items/%7Bid%7D&method=GET"
            ))
            .await;
        let points = busy(&body);
        assert_eq!(points[0]["total_requests"], 2, "{range}");
        assert_eq!(points[0]["p50_response_time_ms"], 20.0, "{range}");
        assert_eq!(
            points[0]["p99_response_time_ms"],
            10.0 + 20.0 * 0.99,
            "{range}"
        );
    }
    let body = api
        .ok("/time-series?metric_type=performance&endpoint=/nowhere")
        .await;
    assert_eq!(body["data_points"], json!([]));
    let (status, body) = api
        .get("/time-series?metric_type=performance&method=GET", ADMIN)
        .await;
    assert_eq!(status, 422, "{body}");
}

async fn requests_lists_an_endpoints_slowest_requests(api: Api) {
    api.record([
        with_id(request("/items/{id}", Method::GET, 200, 10), "c-10"),
        with_id(request("/items/{id}", Method::GET, 500, 30), "c-30"),
        with_id(request("/items/{id}", Method::DELETE, 204, 50), "c-50"),
        request("/items/{id}", Method::GET, 200, 20),
        with_id(request("/other", Method::GET, 200, 900), "c-900"),
    ])
    .await;
    let body = api
        .ok("/requests?endpoint=/items/%7Bid%7D&time_range=30d")
        .await;
    assert_eq!(body["time_range"], "30d");
    assert_eq!(body["endpoint"], "/items/{id}");
    assert_eq!(body["method"], Value::Null);
    assert_eq!(body["limit"], 20);
    // Clipped to the raw retention: the window searched is the last 7 days.
    let span = |body: &Value| {
        let t = |k: &str| {
            time::OffsetDateTime::parse(
                body[k].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap()
        };
        t("end_time") - t("start_time")
    };
    assert_eq!(span(&body), time::Duration::days(7));
    assert!(is_rfc3339_utc(&body["start_time"]) && is_rfc3339_utc(&body["end_time"]));
    assert_eq!(body["status_codes"], json!({"200": 2, "204": 1, "500": 1}));
    let requests = body["requests"].as_array().unwrap();
    let ids: Vec<&Value> = requests.iter().map(|r| &r["correlation_id"]).collect();
    assert_eq!(
        ids,
        [&json!("c-50"), &json!("c-30"), &Value::Null, &json!("c-10")]
    );
    let first = requests[0].as_object().unwrap();
    let mut keys: Vec<&str> = first.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "correlation_id",
            "method",
            "response_time_ms",
            "status_code",
            "timestamp",
            "user_id"
        ]
    );
    assert_eq!(
        (
            &first["method"],
            &first["status_code"],
            &first["response_time_ms"],
            &first["user_id"]
        ),
        (&json!("DELETE"), &json!(204), &json!(50.0), &json!(USER))
    );
    assert!(is_rfc3339_utc(&first["timestamp"]));
    let body = api
        .ok("/requests?endpoint=/items/%7Bid%7D&method=GET&limit=1")
        .await;
    assert_eq!(body["time_range"], "24h");
    assert_eq!(span(&body), time::Duration::hours(24));
    assert_eq!(body["requests"].as_array().unwrap().len(), 1);
    assert_eq!(body["requests"][0]["correlation_id"], "c-30");
    assert_eq!(body["status_codes"], json!({"200": 2, "500": 1}));
    // Admin only, endpoint required.
    let (status, _) = api.get("/requests?endpoint=/items/%7Bid%7D", USER).await;
    assert_eq!(status, 403);
    let (status, body) = api.get("/requests", ADMIN).await;
    assert_eq!(status, 422, "{body}");
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
    let events: Vec<Value> = (0..1001).map(|_| event("file_uploaded")).collect();
    let (status, body) = api.post_events(USER, &events).await;
    assert_eq!(status, 413);
    assert_eq!(
        body,
        json!({"detail": "Batch size exceeds maximum of 1000 events", "max_batch_size": 1000, "received": 1001})
    );
    let pad = "x".repeat(1024 * 1024);
    let (status, body) = api
        .post_body(Some(USER), format!(r#"{{"pad":"{pad}","events":[]}}"#))
        .await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("1048576"),
        "{body}"
    );
    api.metrics.flush().await.unwrap();
    assert_eq!(api.ok("/usage").await["metrics"]["total_events"], 0);

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
    let body = api.ok("/performance").await;
    assert_eq!(body["time_range"], "24h");
    assert_eq!(
        body["metrics"],
        json!({
            "total_requests": 0, "avg_response_time_ms": 0.0, "p50_response_time_ms": 0.0,
            "p95_response_time_ms": 0.0, "p99_response_time_ms": 0.0, "error_rate": 0.0,
            "active_users": 0
        })
    );
    assert_eq!(body["endpoints"], json!([]));
    for range in ["24h", "7d", "30d", "90d"] {
        let body = api.ok(&format!("/usage?time_range={range}")).await;
        assert_eq!(body["time_range"], range);
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
        assert_eq!(body["metric_type"], "both");
        assert_eq!(body["data_points"], json!([]), "{range}");
        let body = api
            .ok(&format!("/requests?endpoint=/a&time_range={range}"))
            .await;
        assert_eq!(
            (&body["requests"], &body["status_codes"]),
            (&json!([]), &json!({})),
            "{range}"
        );
    }
    let body = api.ok("/time-series?metric_type=performance").await;
    assert_eq!(
        (&body["metric_type"], &body["interval"]),
        (&json!("performance"), &json!("5min"))
    );
    assert_eq!(body["data_points"], json!([]));
    let (status, body) = api.get("/usage/count", USER).await;
    assert_eq!((status, &body["count"]), (200, &json!(0)));
}
