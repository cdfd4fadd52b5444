//! The example app's dashboard API end to end on real PostgreSQL (issue 5,
//! "Tests"): requests go through `example_dashboard::app` with `oneshot`, the
//! metrics layer records them, the collector writes them with binary COPY,
//! and the API answers from `PgMetricsQuery` (rollups plus raw rows).
//!
//! The HTTP contract that both stores must keep (access, limits, range
//! rules, empty answers, field names) is one suite, `tests/api_contract.rs`,
//! run on the memory store and on PostgreSQL; `metrics-tower/tests/api.rs`
//! checks the API layer's details on the memory store with a fixed clock.
//! Here the clock is real and the point is what only the database path has, so expectations are counted from what each test itself sent (the
//! layer records the dashboard API's own requests too) and cross-checked
//! against the rows in the database.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use app_metrics::admin::StaticAdmins;
use app_metrics::identity::{TrustedProxyHeaders, UserId};
use app_metrics::pg::RollupJob;
use app_metrics::pg::deadpool_postgres::Pool;
use app_metrics::query::format_rfc3339;
use app_metrics::sink::UsageEvent;
use app_metrics::store::Postgres;
use app_metrics::{AppMetrics, AppMetricsBuilder};
use axum::Router;
use axum::body::Body;
use example_dashboard::Metrics;
use http::{HeaderMap, Request};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use test_support::{TestDb, TestServer};
use tower::ServiceExt;

const ADMIN: &str = "admin@example.com";
const ADA: &str = "ada@example.com";
const BOB: &str = "bob@example.com";
const CY: &str = "cy@example.com";
const BASE: &str = "/api/v1/metrics";
const ITEMS: &str = "/api/demo/items/{id}";
const HOUR: u64 = 3_600;

// ===== harness =====

/// The example app on a fresh database of its own: the facade's PostgreSQL
/// store in a schema named after the database, identity from trusted proxy
/// headers, [`ADMIN`] the only admin, a short linger so flushes are quick.
struct App {
    metrics: Metrics,
    router: Router,
    pool: Pool,
    db: TestDb,
}

impl App {
    async fn start() -> Self {
        Self::start_with(|b| b).await
    }

    /// [`start`](Self::start) with extra builder settings.
    async fn start_with(
        configure: impl FnOnce(
            AppMetricsBuilder<TrustedProxyHeaders>,
        ) -> AppMetricsBuilder<TrustedProxyHeaders>,
    ) -> Self {
        let db = TestDb::new().await;
        let pool = app_metrics::pg::create_pool(db.url(), 8).unwrap();
        let metrics = configure(builder(pool.clone(), db.name()))
            .admins(StaticAdmins::new([ADMIN]))
            .start()
            .await
            .unwrap();
        let router = example_dashboard::app(&metrics);
        Self {
            metrics,
            router,
            pool,
            db,
        }
    }

    async fn send(&self, req: Request<Body>) -> Answer {
        send(&self.router, req).await
    }

    async fn get(&self, path: &str, user: Option<&str>) -> Answer {
        self.send(get(path, user)).await
    }

    /// A dashboard API GET (`path` under [`BASE`]).
    async fn api(&self, path: &str, user: Option<&str>) -> Answer {
        self.get(&format!("{BASE}{path}"), user).await
    }

    async fn post_events(
        &self,
        user: Option<&str>,
        content_type: Option<&str>,
        body: impl Into<Body>,
    ) -> Answer {
        self.send(post_events(user, content_type, body)).await
    }

    /// Waits until everything recorded so far is in the database.
    async fn flush(&self) {
        self.metrics.flush().await.unwrap();
    }

    /// `sql` with `{s}` replaced by the quoted schema.
    fn sql(&self, sql: &str) -> String {
        sql.replace("{s}", &format!("\"{}\"", self.db.name()))
    }

    async fn count(&self, sql: &str) -> i64 {
        self.db
            .client()
            .query_one(&self.sql(sql), &[])
            .await
            .unwrap()
            .get(0)
    }

    async fn execute(&self, sql: &str) {
        self.db
            .client()
            .batch_execute(&self.sql(sql))
            .await
            .unwrap();
    }

    /// Runs the rollup job as the scheduler would at `now`, again if the
    /// app's own scheduler holds the job's lock at that moment (bounded).
    async fn roll_up(&self) {
        let job = RollupJob::new(self.pool.clone(), self.db.name()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let report = job.run_at(SystemTime::now()).await.unwrap();
            if !report.skipped {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the rollup lock stayed taken for 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn builder(pool: Pool, schema: &str) -> AppMetricsBuilder<TrustedProxyHeaders> {
    AppMetrics::builder(Postgres::new(pool).schema(schema))
        .identity(TrustedProxyHeaders)
        .configure_collector(|c| c.linger(Duration::from_millis(5)))
}

fn get(path: &str, user: Option<&str>) -> Request<Body> {
    let mut req = Request::get(path);
    if let Some(user) = user {
        req = req.header("x-forwarded-email", user);
    }
    req.body(Body::empty()).unwrap()
}

fn post_events(
    user: Option<&str>,
    content_type: Option<&str>,
    body: impl Into<Body>,
) -> Request<Body> {
    let mut req = Request::post(format!("{BASE}/usage-events"));
    if let Some(user) = user {
        req = req.header("x-forwarded-email", user);
    }
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    req.body(body.into()).unwrap()
}

async fn send(router: &Router, req: Request<Body>) -> Answer {
    let res = router.clone().oneshot(req).await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    // Reading the body to its end is what makes the layer record the request.
    let body = res.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        text: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// A response, read.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: HeaderMap,
    text: String,
}

impl Answer {
    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("{e}: {} {}", self.status, self.text))
    }

    /// Asserts a 200 and returns the JSON body.
    #[track_caller]
    fn ok(&self) -> Value {
        assert_eq!(self.status, 200, "{}", self.text);
        self.json()
    }

    /// Asserts the status and the error envelope; returns the message.
    #[track_caller]
    fn assert_error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{}", self.text);
        let body = self.json();
        assert_eq!(body["status_code"], status, "{body}");
        assert!(body["error"].is_string(), "{body}");
        assert_eq!(self.headers["content-type"], "application/json");
        body["message"].as_str().unwrap().to_owned()
    }
}

fn ts(t: SystemTime) -> String {
    format_rfc3339(t)
}

/// Now, to the whole second (so formatted instants carry no fraction).
fn now_s() -> u64 {
    unix(SystemTime::now())
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs()
}

fn at(unix_secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(unix_secs)
}

/// A valid usage event stamped now.
fn event(event_type: &str, page: &str) -> Value {
    json!({
        "event_type": event_type,
        "timestamp": ts(SystemTime::now()),
        "page_name": page,
        "success": true,
    })
}

fn batch(events: &[Value]) -> String {
    json!({ "events": events }).to_string()
}

/// The `endpoints` row of `report` for (`endpoint`, `method`).
fn endpoint_row<'a>(report: &'a Value, endpoint: &str, method: &str) -> Option<&'a Value> {
    report["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["endpoint"] == endpoint && r["method"] == method)
}

fn u(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("{v} is not an unsigned integer"))
}

/// Tests that read "the current hour" must not straddle the end of one:
/// within 20 s of the next hour, wait for it (rare, bounded).
async fn clear_of_the_hour_boundary() {
    let left = HOUR - now_s() % HOUR;
    if left < 20 {
        eprintln!("waiting {left} s for the next hour to start");
        tokio::time::sleep(Duration::from_secs(left + 1)).await;
    }
}

// ===== 2. a recorded request reaches the dashboard =====

#[tokio::test]
async fn a_request_recorded_by_the_layer_is_in_performance_within_2_s_of_a_flush() {
    let app = App::start().await;
    for (path, status) in [
        ("/api/demo/items/7", 200),
        ("/api/demo/items/8", 200),
        ("/api/demo/items/seven", 404),
    ] {
        assert_eq!(app.get(path, Some(ADA)).await.status, status, "{path}");
    }
    app.flush().await;

    let deadline = Instant::now() + Duration::from_secs(2);
    let mut polls = 0_u64;
    let report = loop {
        // Flushed before each poll so that the polls' own records (the
        // layer records the API too) are all counted, deterministically.
        app.flush().await;
        let report = app.api("/performance", Some(ADMIN)).await.ok();
        polls += 1;
        if endpoint_row(&report, ITEMS, "GET").is_some() {
            break report;
        }
        assert!(
            Instant::now() < deadline,
            "not visible 2 s after the flush: {report}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let m = &report["metrics"];
    assert_eq!(u(&m["total_requests"]), 3 + (polls - 1), "{report}");
    assert_eq!(u(&m["active_users"]), 1 + u64::from(polls > 1), "{report}");
    let row = endpoint_row(&report, ITEMS, "GET").unwrap();
    assert_eq!(u(&row["request_count"]), 3, "{row}");
    assert_eq!(u(&row["error_count"]), 1, "{row}");

    // The same rows in the database: Ada's, and the median matches.
    let rows = app
        .db
        .client()
        .query(
            &app.sql(
                "SELECT response_time_ms, user_id FROM {s}.performance_metrics \
                 WHERE endpoint = $1 AND method = 'GET' ORDER BY response_time_ms",
            ),
            &[&ITEMS],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    assert!(
        rows.iter()
            .all(|r| r.get::<_, Option<&str>>(1) == Some(ADA))
    );
    let median: f64 = rows[1].get(0);
    let p50 = row["p50_response_time_ms"].as_f64().unwrap();
    assert!(
        (p50 - median).abs() <= median * 0.01 + 1e-9,
        "p50 {p50} vs stored median {median}"
    );
    // Still raw: the open hour has not been rolled up.
    let rolled = app
        .count(
            "SELECT count(*) FROM {s}.rollup_hours WHERE metric_type = 'performance' \
             AND hour >= (SELECT date_trunc('hour', min(\"timestamp\")) FROM {s}.performance_metrics)",
        )
        .await;
    assert_eq!(rolled, 0, "the rows were served raw");
}

// ===== 3. usage ingest =====

#[tokio::test]
async fn usage_events_flow_to_usage_and_each_callers_count() {
    let app = App::start().await;
    let mut spoofed = event("page_view", "/home");
    spoofed["user_id"] = json!("mallory@example.com");
    let ada = [
        spoofed,
        event("button_click", "/home"),
        event("query_executed", "/items"),
    ];
    let a = app
        .post_events(Some(ADA), Some("application/json"), batch(&ada))
        .await;
    assert_eq!(a.status, 202, "{}", a.text);
    assert_eq!(
        a.text,
        r#"{"message":"Events accepted","events_received":3,"status":"queued"}"#
    );
    // The beacon form: sendBeacon posts text/plain.
    let bob = [
        event("page_view", "/home"),
        event("form_submit", "/settings"),
    ];
    let a = app
        .post_events(Some(BOB), Some("text/plain;charset=UTF-8"), batch(&bob))
        .await;
    assert_eq!(a.status, 202, "{}", a.text);
    assert_eq!(
        a.text,
        r#"{"message":"Events accepted","events_received":2,"status":"queued"}"#
    );
    app.flush().await;

    let body = app.api("/usage", Some(ADMIN)).await.ok();
    let m = &body["metrics"];
    assert_eq!(
        (u(&m["total_events"]), u(&m["unique_users"])),
        (5, 2),
        "{body}"
    );
    assert_eq!(
        body["event_distribution"],
        json!({"page_view": 2, "button_click": 1, "query_executed": 1, "form_submit": 1})
    );
    assert_eq!(
        body["page_views"],
        // Page views only (the click, query and form are other types).
        json!({"/home": 2})
    );
    let filtered = app
        .api("/usage?event_type=page_view", Some(ADMIN))
        .await
        .ok();
    assert_eq!(u(&filtered["metrics"]["total_events"]), 2, "{filtered}");

    for (user, expected) in [(ADA, 3), (BOB, 2), (CY, 0)] {
        let c = app.api("/usage/count", Some(user)).await.ok();
        assert_eq!(c["user_id"], user, "{c}");
        assert_eq!(u(&c["count"]), expected, "{user}: {c}");
        assert_eq!(c["time_range"], "24h");
    }

    // Stored as the authenticated caller, never the body's user_id.
    let rows = app
        .db
        .client()
        .query(
            &app.sql("SELECT user_id, count(*) FROM {s}.usage_events GROUP BY 1 ORDER BY 1"),
            &[],
        )
        .await
        .unwrap();
    let stored: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(stored, [(ADA.to_owned(), 3), (BOB.to_owned(), 2)]);
}

// ===== 4. active users =====

#[tokio::test]
async fn active_users_are_deduplicated_across_requests_and_events() {
    clear_of_the_hour_boundary().await;
    let app = App::start().await;
    // Ada: requests and events (the POST is itself a recorded request).
    assert_eq!(app.get("/api/demo/items/1", Some(ADA)).await.status, 200);
    let a = app
        .post_events(
            Some(ADA),
            Some("application/json"),
            batch(&[event("page_view", "/home"), event("form_submit", "/home")]),
        )
        .await;
    assert_eq!(a.status, 202, "{}", a.text);
    // Cy: requests only.
    assert_eq!(app.get("/api/demo/items/2", Some(CY)).await.status, 200);
    assert_eq!(app.get("/api/demo/items/3", Some(CY)).await.status, 200);
    // Bob: events only, recorded server-side through the collector.
    for kind in ["page_view", "export_triggered"] {
        let e = UsageEvent::new(kind, UserId::new(BOB), SystemTime::now())
            .with_page_name(Some("/items".to_owned()));
        assert!(app.metrics.collector().record(e));
    }
    app.flush().await;

    // The admin's first dashboard request is answered before the layer
    // records it, so it is not among the users yet.
    let body = app.api("/usage", Some(ADMIN)).await.ok();
    assert_eq!(
        body["metrics"],
        json!({"total_events": 4, "unique_users": 2, "active_users": 3, "active_users_current_hour": 3}),
        "ada (both), cy (requests), bob (events)"
    );
    // Once recorded, the admin's own requests count as activity too.
    app.flush().await;
    let perf = app.api("/performance", Some(ADMIN)).await.ok();
    assert_eq!(
        u(&perf["metrics"]["active_users"]),
        3,
        "ada, cy and the admin's /usage request (bob sent no request): {perf}"
    );
    app.flush().await;
    let body = app.api("/usage", Some(ADMIN)).await.ok();
    assert_eq!(u(&body["metrics"]["active_users"]), 4, "{body}");
    assert_eq!(
        u(&body["metrics"]["active_users_current_hour"]),
        4,
        "{body}"
    );
    assert_eq!(u(&body["metrics"]["unique_users"]), 2, "{body}");
}

// ===== 7. rollups and raw rows together =====

/// Raw request rows straight into the table, as the sink would have written
/// them: `statuses[i]` at `hour + i` minutes, `10 + i` ms.
async fn insert_requests(app: &App, hour: u64, statuses: &[u16]) {
    let values: Vec<String> = statuses
        .iter()
        .enumerate()
        .map(|(i, status)| {
            format!(
                "(gen_random_uuid(), to_timestamp({}), '{ITEMS}', 'GET', {status}, {}, '{CY}')",
                hour + 60 * i as u64 + 30,
                10 + i
            )
        })
        .collect();
    app.execute(&format!(
        "INSERT INTO {{s}}.performance_metrics \
           (id, \"timestamp\", endpoint, method, status_code, response_time_ms, user_id) \
         VALUES {}",
        values.join(", ")
    ))
    .await;
}

async fn rolled_count(app: &App, metric_type: &str, hour: u64) -> Option<i64> {
    app.db
        .client()
        .query_opt(
            &app.sql(&format!(
                "SELECT raw_count FROM {{s}}.rollup_hours \
                 WHERE metric_type = $1 AND hour = to_timestamp({hour})"
            )),
            &[&metric_type],
        )
        .await
        .unwrap()
        .map(|r| r.get(0))
}

/// `total_requests` per data point timestamp of an hourly performance series.
fn hourly_counts(series: &Value) -> BTreeMap<String, u64> {
    series["data_points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["timestamp"].as_str().unwrap().to_owned(),
                u(&p["total_requests"]),
            )
        })
        .collect()
}

#[tokio::test]
async fn rolled_hours_and_raw_rows_are_counted_exactly_once() {
    let app = App::start().await;
    let open = now_s() / HOUR * HOUR;
    let (a, b) = (open - 4 * HOUR, open - 3 * HOUR);
    insert_requests(&app, a, &[200, 200, 500, 200, 200]).await;
    insert_requests(&app, b, &[200; 7]).await;
    app.execute(&format!(
        "INSERT INTO {{s}}.usage_events (id, \"timestamp\", received_at, event_type, user_id, page_name) \
         VALUES (gen_random_uuid(), to_timestamp({t}), to_timestamp({t}), 'query_executed', '{CY}', '/items'), \
                (gen_random_uuid(), to_timestamp({t}), to_timestamp({t}), 'page_view', '{BOB}', '/home')",
        t = a + 600
    ))
    .await;
    app.roll_up().await;
    assert_eq!(rolled_count(&app, "performance", a).await, Some(5));
    assert_eq!(rolled_count(&app, "performance", b).await, Some(7));
    assert_eq!(rolled_count(&app, "usage", a).await, Some(2));
    let rollup_rows = app
        .count(&format!(
            "SELECT count(*) FROM {{s}}.aggregated_metrics \
             WHERE time_bucket IN (to_timestamp({a}), to_timestamp({b})) AND endpoint_path = '{ITEMS}'"
        ))
        .await;
    assert_eq!(rollup_rows, 2, "one rollup row per hour for the endpoint");

    // The open hour, through the layer: 3 requests (one 404) and 1 event.
    for path in [
        "/api/demo/items/1",
        "/api/demo/items/2",
        "/api/demo/items/x",
    ] {
        app.get(path, Some(ADA)).await;
    }
    let ev = app
        .post_events(
            Some(ADA),
            Some("application/json"),
            batch(&[event("query_executed", "/items")]),
        )
        .await;
    assert_eq!(ev.status, 202);
    app.flush().await;

    // 12 rolled + 3 demo + 1 ingest request; the admin's queries are
    // counted from the next one on (each flushed before the next).
    let in_db = app
        .count(
            "SELECT count(*) FROM {s}.performance_metrics \
             WHERE \"timestamp\" >= now() - interval '24 hours'",
        )
        .await;
    assert_eq!(
        in_db, 16,
        "the database holds exactly what is counted below"
    );
    let perf = app
        .api("/performance?time_range=24h", Some(ADMIN))
        .await
        .ok();
    assert_eq!(u(&perf["metrics"]["total_requests"]), 16, "{perf}");
    let row = endpoint_row(&perf, ITEMS, "GET").unwrap();
    assert_eq!(
        (u(&row["request_count"]), u(&row["error_count"])),
        (15, 2),
        "{row}"
    );
    let usage = app.api("/usage?time_range=24h", Some(ADMIN)).await.ok();
    assert_eq!(u(&usage["metrics"]["total_events"]), 3, "{usage}");
    assert_eq!(
        usage["event_distribution"],
        json!({"query_executed": 2, "page_view": 1})
    );

    app.flush().await;
    let series = app
        .api(
            "/time-series?metric_type=performance&time_range=24h&interval=hourly",
            Some(ADMIN),
        )
        .await
        .ok();
    assert_eq!(series["interval"], "hourly");
    let counts = hourly_counts(&series);
    assert_eq!(
        counts.values().sum::<u64>(),
        18,
        "16 + the two queries: {series}"
    );
    assert_eq!(counts.get(&ts(at(a))), Some(&5), "{counts:?}");
    assert_eq!(counts.get(&ts(at(b))), Some(&7), "{counts:?}");

    // A late row in a rolled hour: counted once the hour is rolled again.
    insert_requests(&app, a + 1800, &[503]).await;
    app.flush().await;
    let perf = app
        .api("/performance?time_range=24h", Some(ADMIN))
        .await
        .ok();
    assert_eq!(
        u(&perf["metrics"]["total_requests"]),
        12 + 4 + 3,
        "until it is rolled again the hour is served from its rollup alone \
         (rolled 12, open hour 4, the admin's 3 earlier queries): {perf}"
    );
    app.roll_up().await;
    assert_eq!(rolled_count(&app, "performance", a).await, Some(6));
    app.flush().await;
    let perf = app
        .api("/performance?time_range=24h", Some(ADMIN))
        .await
        .ok();
    assert_eq!(
        u(&perf["metrics"]["total_requests"]),
        13 + 4 + 4,
        "rolled 13, open hour 4, the admin's 4 earlier queries: {perf}"
    );
    let row = endpoint_row(&perf, ITEMS, "GET").unwrap();
    assert_eq!(
        (u(&row["request_count"]), u(&row["error_count"])),
        (16, 3),
        "{row}"
    );
    app.flush().await;
    let series = app
        .api(
            "/time-series?metric_type=performance&time_range=24h&interval=hourly",
            Some(ADMIN),
        )
        .await
        .ok();
    let counts = hourly_counts(&series);
    assert_eq!(counts.get(&ts(at(a))), Some(&6), "{counts:?}");
    assert_eq!(counts.values().sum::<u64>(), 22, "{series}");
}

// ===== 8. correlation id =====

#[tokio::test]
async fn error_responses_echo_the_correlation_id_and_store_it() {
    let app = App::start().await;
    let with_id = |mut req: Request<Body>, id: &'static str| {
        req.headers_mut()
            .insert("x-correlation-id", http::HeaderValue::from_static(id));
        req
    };
    let a = app
        .send(with_id(
            get(&format!("{BASE}/performance"), Some(ADA)),
            "pg-corr-403",
        ))
        .await;
    a.assert_error(403);
    assert_eq!(a.headers["x-correlation-id"], "pg-corr-403");
    let a = app
        .send(with_id(
            get(&format!("{BASE}/usage?time_range=1y"), Some(ADMIN)),
            "pg-corr-422",
        ))
        .await;
    a.assert_error(422);
    assert_eq!(a.headers["x-correlation-id"], "pg-corr-422");

    app.flush().await;
    let rows = app
        .db
        .client()
        .query(
            &app.sql(
                "SELECT correlation_id, status_code, error_type FROM {s}.performance_metrics \
                 ORDER BY correlation_id",
            ),
            &[],
        )
        .await
        .unwrap();
    let stored: Vec<(Option<String>, i32, Option<String>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        stored,
        [
            (
                Some("pg-corr-403".to_owned()),
                403,
                Some("HTTP_403".to_owned())
            ),
            (
                Some("pg-corr-422".to_owned()),
                422,
                Some("HTTP_422".to_owned())
            ),
        ]
    );
}

// ===== 9. store down =====

#[tokio::test]
async fn a_stopped_database_is_503_for_queries_and_invisible_to_the_app() {
    let db = TestServer::dedicated().await.create_db().await;
    let metrics = AppMetrics::builder(Postgres::from_url(db.url()).schema(db.name()))
        .identity(TrustedProxyHeaders)
        .admins(StaticAdmins::new([ADMIN]))
        .configure_collector(|c| c.linger(Duration::from_millis(5)))
        .start()
        .await
        .unwrap();
    let app = example_dashboard::app(&metrics);
    // Up: answers, and the pool holds connections that are about to break.
    assert_eq!(
        send(&app, get(&format!("{BASE}/performance"), Some(ADMIN)))
            .await
            .status,
        200
    );
    db.server().stop().await;

    let a = send(&app, get(&format!("{BASE}/performance"), Some(ADMIN))).await;
    let msg = a.assert_error(503);
    assert_eq!(a.json()["error"], "Service Unavailable");
    assert_eq!(
        msg, "The metrics store is unavailable; try again later",
        "no backend details"
    );
    let a = send(&app, get(&format!("{BASE}/usage/count"), Some(ADA))).await;
    a.assert_error(503);
    // The app itself is unaffected: the record waits in the collector.
    let a = send(&app, get("/api/demo/items/7", Some(ADA))).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json(), json!({"id": 7, "name": "item 7"}));
    let a = send(
        &app,
        post_events(
            Some(ADA),
            Some("application/json"),
            batch(&[event("page_view", "/home")]),
        ),
    )
    .await;
    assert_eq!(a.status, 202, "ingest only queues: {}", a.text);
}

// ===== 10. OpenAPI =====

#[tokio::test]
async fn the_openapi_document_lists_the_five_endpoints() {
    let app = App::start().await;
    let a = app.api("/openapi.json", None).await;
    assert_eq!(a.status, 200);
    assert!(
        a.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let doc = a.json();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/performance", "get"),
        ("/usage", "get"),
        ("/time-series", "get"),
        ("/usage-events", "post"),
        ("/usage/count", "get"),
    ] {
        assert!(
            paths.get(path).is_some_and(|p| p[method].is_object()),
            "{path} {method} missing from {:?}",
            paths.keys().collect::<Vec<_>>()
        );
    }
}
