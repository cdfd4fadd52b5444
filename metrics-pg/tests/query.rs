//! `PgMetricsQuery` on a real PostgreSQL, compared with the in-memory
//! reference (`MemorySink`'s `MetricsQuery`) over the same records: rolled
//! hours, daily and 5-minute rollups and raw rows mixed without double
//! counting, late rows, ranges ending mid-hour, filters, empty data, active
//! users across requests and events, the statement timeout and a stopped
//! server.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics_core::aggregate::{Preset, Resolution, TimeRange};
use metrics_core::query::{
    DataPoint, MetricsQuery, PerformanceQuery, PerformanceReport, QueryError, SeriesKind,
    SlowRequests, SlowRequestsQuery, TimeSeries, TimeSeriesQuery, UsageQuery, UsageReport,
};
use metrics_core::{
    Batch, CorrelationId, MemorySink, Method, MetricsSink, RequestRecord, Route, UsageEvent, UserId,
};
use metrics_pg::{Clock, PgMetricsQuery, PgSink, RollupJob};
use support::{first, migrated_db, pool};
use test_support::{TestDb, TestServer};

/// 2026-01-01 00:00:00 UTC.
const DAY0: u64 = 1_767_225_600;
const HOUR: u64 = 3_600;
const DAY: u64 = 86_400;
/// The clock of the queries: 05:40 on the second day, so the last 24 hours
/// start mid-hour and the current hour is open.
const NOW: u64 = DAY0 + DAY + 5 * HOUR + 40 * 60;

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

const ROUTES: [&str; 4] = ["/a", "/b/{id}", "/c", "/d/{id}/e"];
const TYPES: [&str; 3] = ["page_view", "button_click", "form_submit"];
const PAGES: [&str; 3] = ["/home", "/about", "/pricing"];

/// Deterministic traffic over `[from, to)`: ~`per_hour` requests and a third
/// as many usage events per hour, on 4 routes x 2 methods, with errors,
/// anonymous requests and users shared between requests and events.
fn traffic(from: u64, to: u64, per_hour: u64, seed: u64) -> (Vec<RequestRecord>, Vec<UsageEvent>) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut requests = Vec::new();
    let mut events = Vec::new();
    let n = (to - from) * per_hour / HOUR;
    for _ in 0..n {
        let at = t(from) + Duration::from_millis(rng.u64(..(to - from) * 1000));
        let route = ROUTES[rng.usize(..ROUTES.len())];
        let method = if rng.u8(..4) == 0 {
            Method::POST
        } else {
            Method::GET
        };
        let status = match rng.u8(..20) {
            0 => 500,
            1 | 2 => 404,
            _ => 200,
        };
        let mut r = RequestRecord::new(
            at,
            Route::from_static(route),
            method,
            status,
            Duration::ZERO,
        );
        // Whole microseconds: what PostgreSQL stores is what memory holds.
        r.response_time_ms = (rng.f64() * rng.f64() * 800.0 * 1000.0).round() / 1000.0;
        r.user_id = (rng.u8(..5) != 0).then(|| UserId::new(format!("u{}", rng.u8(..25))));
        requests.push(r);
    }
    for _ in 0..n / 3 {
        let at = t(from) + Duration::from_millis(rng.u64(..(to - from) * 1000));
        // Users e* send events but no requests; u* do both.
        let user = if rng.bool() {
            format!("u{}", rng.u8(..25))
        } else {
            format!("e{}", rng.u8(..10))
        };
        let page = (rng.u8(..4) != 0).then(|| PAGES[rng.usize(..PAGES.len())].to_owned());
        let e = UsageEvent::new(TYPES[rng.usize(..TYPES.len())], UserId::new(user), at)
            .with_received_at(at)
            .with_page_name(page)
            .with_success(Some(rng.u8(..10) != 0));
        events.push(e);
    }
    (requests, events)
}

/// A migrated database, a memory store and a sink holding the same records.
struct Fixture {
    db: TestDb,
    schema: String,
    memory: MemorySink,
    query: PgMetricsQuery,
}

impl Fixture {
    async fn new() -> Self {
        let (db, schema) = migrated_db().await;
        let query = PgMetricsQuery::new(pool(&db, 2), &schema).unwrap();
        Self {
            db,
            schema,
            memory: MemorySink::new(),
            query,
        }
    }

    async fn write(&self, requests: Vec<RequestRecord>, events: Vec<UsageEvent>) {
        let batch = Batch::from_parts(requests, events);
        let sink = PgSink::builder(pool(&self.db, 1))
            .schema(&self.schema)
            .build()
            .unwrap();
        let _ = sink.write(&batch, first()).await.unwrap();
        for r in batch.requests() {
            self.memory.insert(r.clone());
        }
        for e in batch.usage_events() {
            self.memory.insert(e.clone());
        }
    }

    /// The request total PostgreSQL answers for `q`.
    async fn pg_total(&self, q: &PerformanceQuery) -> u64 {
        self.query
            .performance(q)
            .await
            .unwrap()
            .metrics
            .total_requests
    }

    /// The request total the memory store (the reference) answers for `q`.
    async fn memory_total(&self, q: &PerformanceQuery) -> u64 {
        self.memory
            .performance(q)
            .await
            .unwrap()
            .metrics
            .total_requests
    }

    /// Rolls every hour closed at `at` (2 minutes of grace).
    async fn roll(&self, at: u64) {
        let report = RollupJob::new(pool(&self.db, 4), &self.schema)
            .unwrap()
            .clock(Clock::fixed(t(at)))
            .run_once()
            .await
            .unwrap();
        assert!(!report.skipped);
    }

    async fn exec(&self, sql: &str) -> u64 {
        let sql = sql.replace("{s}", &format!("\"{}\"", self.schema));
        self.db.client().execute(&sql, &[]).await.unwrap()
    }

    async fn count(&self, sql: &str) -> i64 {
        let sql = sql.replace("{s}", &format!("\"{}\"", self.schema));
        self.db.client().query_one(&sql, &[]).await.unwrap().get(0)
    }

    async fn compare_all(&self, range: TimeRange) {
        let now = t(NOW);
        let pq = PerformanceQuery::new(range, now);
        assert_perf_eq(
            &self.query.performance(&pq).await.unwrap(),
            &self.memory.performance(&pq).await.unwrap(),
        );
        let uq = UsageQuery::new(range, now);
        assert_eq!(
            self.query.usage(&uq).await.unwrap(),
            self.memory.usage(&uq).await.unwrap()
        );
        for kind in [SeriesKind::Performance, SeriesKind::Usage, SeriesKind::Both] {
            for res in [Resolution::FiveMinutes, Resolution::Hour] {
                let sq = TimeSeriesQuery::new(range, kind, now).resolution(res);
                assert_series_eq(
                    &self.query.time_series(&sq).await.unwrap(),
                    &self.memory.time_series(&sq).await.unwrap(),
                    &format!("{kind} {res}"),
                );
            }
        }
        for user in ["u1", "u7", "e3", "nobody"] {
            assert_eq!(
                self.query.user_event_count(user, &range).await.unwrap(),
                self.memory.user_event_count(user, &range).await.unwrap(),
                "events of {user}"
            );
        }
    }
}

/// Equal up to the last bits of floating-point sums (the order of adding
/// differs between the stores).
fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn assert_perf_eq(pg: &PerformanceReport, mem: &PerformanceReport) {
    let (p, m) = (&pg.metrics, &mem.metrics);
    assert_eq!(p.total_requests, m.total_requests);
    assert_eq!(p.active_users, m.active_users);
    assert_eq!(p.error_rate, m.error_rate);
    // At most 1,000 samples per key: the sketches are exact.
    assert_eq!(
        (
            p.p50_response_time_ms,
            p.p95_response_time_ms,
            p.p99_response_time_ms
        ),
        (
            m.p50_response_time_ms,
            m.p95_response_time_ms,
            m.p99_response_time_ms
        )
    );
    assert!(
        close(p.avg_response_time_ms, m.avg_response_time_ms),
        "{p:?} {m:?}"
    );
    assert_eq!(pg.endpoints.len(), mem.endpoints.len());
    for (a, b) in pg.endpoints.iter().zip(&mem.endpoints) {
        assert_eq!(
            (
                &a.endpoint,
                &a.method,
                a.request_count,
                a.error_count,
                a.error_rate
            ),
            (
                &b.endpoint,
                &b.method,
                b.request_count,
                b.error_count,
                b.error_rate
            )
        );
        assert_eq!(
            (
                a.p50_response_time_ms,
                a.p95_response_time_ms,
                a.p99_response_time_ms
            ),
            (
                b.p50_response_time_ms,
                b.p95_response_time_ms,
                b.p99_response_time_ms
            ),
            "{a:?}"
        );
        assert!(close(a.avg_response_time_ms, b.avg_response_time_ms));
    }
}

fn assert_series_eq(pg: &TimeSeries, mem: &TimeSeries, what: &str) {
    assert_eq!(pg.data_points.len(), mem.data_points.len(), "{what}");
    for (a, b) in pg.data_points.iter().zip(&mem.data_points) {
        assert_point_eq(a, b, what);
    }
}

fn assert_point_eq(a: &DataPoint, b: &DataPoint, what: &str) {
    assert_eq!(a.timestamp, b.timestamp, "{what}");
    assert_eq!(a.usage, b.usage, "{what} at {:?}", a.timestamp);
    match (&a.performance, &b.performance) {
        (None, None) => {}
        (Some(p), Some(m)) => {
            assert_eq!(
                (p.total_requests, p.error_count, p.error_rate),
                (m.total_requests, m.error_count, m.error_rate),
                "{what} at {:?}",
                a.timestamp
            );
            assert_eq!(
                (
                    p.p50_response_time_ms,
                    p.p95_response_time_ms,
                    p.p99_response_time_ms
                ),
                (
                    m.p50_response_time_ms,
                    m.p95_response_time_ms,
                    m.p99_response_time_ms
                ),
                "{what} at {:?}",
                a.timestamp
            );
            assert!(close(p.avg_response_time_ms, m.avg_response_time_ms));
        }
        _ => panic!("{what}: performance fields differ: {a:?} {b:?}"),
    }
}

/// 29 h 40 min of traffic; day 0 and hour 00 of day 1 rolled (day 0 also
/// as daily rows), the rest raw.
async fn mixed_fixture() -> Fixture {
    let f = Fixture::new().await;
    let (requests, events) = traffic(DAY0, NOW, 24, 7);
    f.write(requests, events).await;
    f.roll(DAY0 + DAY + HOUR + 120).await;
    assert_eq!(
        f.count("SELECT count(*) FROM {s}.rollup_days WHERE metric_type = 'performance'")
            .await,
        1,
        "day 0 is complete"
    );
    assert_eq!(
        f.count("SELECT count(*) FROM {s}.rollup_hours WHERE metric_type = 'usage'")
            .await,
        25
    );
    f
}

#[tokio::test]
async fn rolled_daily_and_raw_mix_matches_the_memory_store() {
    let f = mixed_fixture().await;
    let total = f.memory.snapshot().requests().len() as u64;
    let now = t(NOW);
    // The whole data set: every record counted exactly once.
    let week = TimeRange::preset(Preset::Last7Days, now);
    let p = f
        .query
        .performance(&PerformanceQuery::new(week, now))
        .await
        .unwrap();
    assert_eq!(p.metrics.total_requests, total);
    f.compare_all(week).await;
    // Starts mid-hour in rolled day 0, ends in the open hour.
    f.compare_all(TimeRange::preset(Preset::Last24Hours, now))
        .await;
    // Ends mid-hour inside the rolled hours: both edges are read raw.
    f.compare_all(
        TimeRange::custom(t(DAY0 + 3 * HOUR + 900), t(DAY0 + 20 * HOUR + 2_700), now).unwrap(),
    )
    .await;
    // Exactly the rolled day (read from its daily rows), and the rolled hour after it.
    f.compare_all(TimeRange::custom(t(DAY0), t(DAY0 + DAY + HOUR), now).unwrap())
        .await;
    // Only the open hour.
    f.compare_all(TimeRange::custom(t(DAY0 + DAY + 5 * HOUR), now, now).unwrap())
        .await;
}

#[tokio::test]
async fn endpoint_and_event_type_filters_match_the_memory_store() {
    let f = mixed_fixture().await;
    let now = t(NOW);
    for range in [
        TimeRange::preset(Preset::Last7Days, now),
        TimeRange::preset(Preset::Last24Hours, now),
    ] {
        for route in ["/b/{id}", "/c", "/nowhere"] {
            let q = PerformanceQuery::new(range, now).endpoint(route);
            let pg = f.query.performance(&q).await.unwrap();
            assert_perf_eq(&pg, &f.memory.performance(&q).await.unwrap());
            assert!(pg.endpoints.iter().all(|e| e.endpoint == route));
        }
        for kind in ["button_click", "page_view", "unknown"] {
            let q = UsageQuery::new(range, now).event_type(kind);
            let pg = f.query.usage(&q).await.unwrap();
            assert_eq!(pg, f.memory.usage(&q).await.unwrap(), "{kind}");
            assert!(pg.event_distribution.keys().all(|k| k == kind));
        }
    }
}

#[tokio::test]
async fn active_users_are_deduplicated_across_requests_and_events() {
    let f = Fixture::new().await;
    let at = |s: u64| t(DAY0 + s);
    let req = |s: u64, user: Option<&str>| {
        RequestRecord::new(
            at(s),
            Route::from_static("/x"),
            Method::GET,
            200,
            Duration::from_millis(5),
        )
        .with_user(user.map(UserId::new))
    };
    let ev = |s: u64, kind: &str, user: &str| {
        UsageEvent::new(kind, UserId::new(user), at(s)).with_received_at(at(s))
    };
    // Hour 0 (rolled later): ada and bob request, ada and cy send events.
    // Hour 2 (raw): ada requests again, dee sends an event, one anonymous request.
    f.write(
        vec![
            req(10, Some("ada")),
            req(20, Some("bob")),
            req(2 * HOUR + 5, Some("ada")),
            req(2 * HOUR + 6, None),
        ],
        vec![
            ev(30, "page_view", "ada"),
            ev(40, "button_click", "cy"),
            ev(2 * HOUR + 7, "page_view", "dee"),
        ],
    )
    .await;
    f.roll(DAY0 + HOUR + 120).await;
    let now = t(DAY0 + 2 * HOUR + 600);
    let range = TimeRange::preset(Preset::Last24Hours, now);
    let u = f.query.usage(&UsageQuery::new(range, now)).await.unwrap();
    assert_eq!(
        u,
        f.memory.usage(&UsageQuery::new(range, now)).await.unwrap()
    );
    assert_eq!(u.metrics.total_events, 3);
    assert_eq!(u.metrics.unique_users, 3, "ada, cy, dee");
    assert_eq!(u.metrics.active_users, 4, "ada, bob, cy, dee");
    assert_eq!(u.metrics.active_users_current_hour, 2, "ada, dee");
    let clicks = f
        .query
        .usage(&UsageQuery::new(range, now).event_type("page_view"))
        .await
        .unwrap();
    assert_eq!(
        (clicks.metrics.total_events, clicks.metrics.unique_users),
        (2, 2)
    );
    assert_eq!(
        clicks.metrics.active_users, 4,
        "the filter does not narrow active users"
    );
    let p = f
        .query
        .performance(&PerformanceQuery::new(range, now))
        .await
        .unwrap();
    assert_eq!((p.metrics.total_requests, p.metrics.active_users), (4, 2));
}

#[tokio::test]
async fn late_rows_count_once_and_after_the_next_rollup() {
    let f = Fixture::new().await;
    let (requests, events) = traffic(DAY0, DAY0 + 4 * HOUR, 30, 11);
    f.write(requests, events).await;
    f.roll(DAY0 + 3 * HOUR + 120).await; // hours 0..2 rolled, hour 3 raw
    let now = t(DAY0 + 4 * HOUR);
    let range = TimeRange::custom(t(DAY0), now, now).unwrap();
    let q = PerformanceQuery::new(range, now);
    let before = f.query.performance(&q).await.unwrap();
    assert_perf_eq(&before, &f.memory.performance(&q).await.unwrap());

    // Late rows land in rolled hour 1: the rollup answers for it until the
    // hour is rolled again, so they are not counted yet, and never twice.
    let late: Vec<RequestRecord> = (0..7)
        .map(|i| {
            RequestRecord::new(
                t(DAY0 + HOUR + 100 * i),
                Route::from_static("/late"),
                Method::GET,
                503,
                Duration::from_millis(40 + i),
            )
        })
        .collect();
    f.write(late, Vec::new()).await;
    let pending = f.query.performance(&q).await.unwrap();
    assert_eq!(
        pending.metrics.total_requests,
        before.metrics.total_requests
    );
    assert!(pending.endpoints.iter().all(|e| e.endpoint != "/late"));

    f.roll(DAY0 + 3 * HOUR + 180).await; // re-rolls hour 1 (its count changed)
    let after = f.query.performance(&q).await.unwrap();
    assert_eq!(
        after.metrics.total_requests,
        before.metrics.total_requests + 7
    );
    assert_perf_eq(&after, &f.memory.performance(&q).await.unwrap());
    f.compare_all(range).await;
}

/// The open hour's whole 5-minute slots are cached under their row count:
/// rows that arrive late in a closed slot change its count, so the next
/// query streams that slot again and counts them.
#[tokio::test]
async fn cached_raw_slots_are_refreshed_when_late_rows_arrive() {
    let f = Fixture::new().await;
    let (requests, events) = traffic(DAY0, DAY0 + 4 * HOUR, 120, 5);
    f.write(requests, events).await;
    f.roll(DAY0 + 3 * HOUR + 120).await; // hours 0..2 rolled, hour 3 raw
    // 03:47:30: the open hour has 9 whole slots and a partial one.
    let now = t(DAY0 + 3 * HOUR + 47 * 60 + 30);
    let range = TimeRange::custom(t(DAY0 + 30 * 60 + 17), now, now).unwrap();
    let q = PerformanceQuery::new(range, now);
    let sq = TimeSeriesQuery::new(range, SeriesKind::Both, now).resolution(Resolution::FiveMinutes);
    let uq = UsageQuery::new(range, now);
    let before = f.query.performance(&q).await.unwrap();
    assert_perf_eq(&before, &f.memory.performance(&q).await.unwrap());
    // Asked again: the same answer (now from the cached slots).
    assert_perf_eq(&f.query.performance(&q).await.unwrap(), &before);

    // Late rows in the open hour's second slot, from a new user.
    let late: Vec<RequestRecord> = (0..7)
        .map(|i| {
            RequestRecord::new(
                t(DAY0 + 3 * HOUR + 5 * 60 + 10 * i),
                Route::from_static("/late"),
                Method::GET,
                503,
                Duration::from_millis(900 + i),
            )
            .with_user(Some(UserId::new("late-user")))
        })
        .collect();
    f.write(late, Vec::new()).await;
    let after = f.query.performance(&q).await.unwrap();
    assert_eq!(
        after.metrics.total_requests,
        before.metrics.total_requests + 7
    );
    assert_eq!(after.metrics.active_users, before.metrics.active_users + 1);
    assert!(after.endpoints.iter().any(|e| e.endpoint == "/late"));
    assert_perf_eq(&after, &f.memory.performance(&q).await.unwrap());
    assert_series_eq(
        &f.query.time_series(&sq).await.unwrap(),
        &f.memory.time_series(&sq).await.unwrap(),
        "5min after late rows",
    );
    assert_eq!(
        f.query.usage(&uq).await.unwrap(),
        f.memory.usage(&uq).await.unwrap()
    );
    f.compare_all(range).await;

    // A late row in the range's partial first hour, which is rolled, in the
    // slot the range starts in: its slots (and the rows of that edge slot)
    // follow the hour's rollup version, like the rest of a rolled hour, so
    // the row counts once the job has re-rolled the hour.
    let early = RequestRecord::new(
        t(DAY0 + 33 * 60 + 7),
        Route::from_static("/late"),
        Method::GET,
        200,
        Duration::from_millis(950),
    );
    f.write(vec![early], Vec::new()).await;
    assert_eq!(f.pg_total(&q).await, after.metrics.total_requests);
    f.roll(DAY0 + 3 * HOUR + 180).await;
    let rerolled = f.query.performance(&q).await.unwrap();
    assert_eq!(
        rerolled.metrics.total_requests,
        after.metrics.total_requests + 1
    );
    assert_perf_eq(&rerolled, &f.memory.performance(&q).await.unwrap());
    f.compare_all(range).await;
    let after = rerolled;

    // The cache relies on raw rows never changing in place (the sink only
    // appends; retention drops whole rolled days): an UPDATE, which nothing
    // in the library does, keeps a slot's count and so is not seen until
    // the slot's count changes — which a query without the cache shows.
    assert_eq!(
        f.exec(
            "UPDATE {s}.performance_metrics SET response_time_ms = 123456 \
             WHERE endpoint = '/late'"
        )
        .await,
        8
    );
    let cached = f.query.performance(&q).await.unwrap();
    let uncached = f
        .query
        .clone()
        .cache_bytes(0)
        .performance(&q)
        .await
        .unwrap();
    assert_perf_eq(&cached, &after);
    let max_p99 = |r: &PerformanceReport| {
        r.endpoints
            .iter()
            .find(|e| e.endpoint == "/late")
            .map(|e| e.p99_response_time_ms)
    };
    assert!(max_p99(&cached) < Some(1_000.0), "{:?}", max_p99(&cached));
    assert!(
        max_p99(&uncached) > Some(100_000.0),
        "{:?}",
        max_p99(&uncached)
    );
}

/// With one pooled connection every side scan runs on the query's own
/// connection (several `COPY`s and statements pipelined at once).
#[tokio::test]
async fn a_pool_of_one_connection_gives_the_same_answers() {
    let mut f = Fixture::new().await;
    let (requests, events) = traffic(DAY0, NOW, 24, 3);
    f.write(requests, events).await;
    f.roll(DAY0 + DAY + 2 * HOUR + 120).await;
    f.query = PgMetricsQuery::new(pool(&f.db, 1), &f.schema).unwrap();
    let now = t(NOW);
    let range = TimeRange::custom(t(DAY0 + 7 * HOUR + 17), now, now).unwrap();
    f.compare_all(range).await;
    // And again, from the caches.
    f.compare_all(range).await;
    f.compare_all(TimeRange::preset(Preset::Last24Hours, now))
        .await;
}

#[tokio::test]
async fn empty_store_answers_zeros_and_empty_lists() {
    let f = Fixture::new().await;
    let now = t(NOW);
    for preset in [Preset::Last24Hours, Preset::Last90Days] {
        let range = TimeRange::preset(preset, now);
        let p = f
            .query
            .performance(&PerformanceQuery::new(range, now))
            .await
            .unwrap();
        assert_eq!(p, PerformanceReport::default());
        let u = f.query.usage(&UsageQuery::new(range, now)).await.unwrap();
        assert_eq!(u, UsageReport::default());
        let s = f
            .query
            .time_series(&TimeSeriesQuery::new(range, SeriesKind::Both, now))
            .await
            .unwrap();
        assert!(s.data_points.is_empty());
        assert_eq!(f.query.user_event_count("ada", &range).await.unwrap(), 0);
    }
    // Rolled hours without rows (an empty hour recorded by the job) are still empty.
    f.roll(NOW).await;
    let range = TimeRange::preset(Preset::Last24Hours, now);
    let p = f
        .query
        .performance(&PerformanceQuery::new(range, now))
        .await
        .unwrap();
    assert_eq!(p, PerformanceReport::default());
}

#[tokio::test]
async fn daily_and_five_minute_rows_are_the_sources_of_rolled_time() {
    let f = mixed_fixture().await;
    let now = t(NOW);
    let day0 = TimeRange::custom(t(DAY0), t(DAY0 + DAY), now).unwrap();
    let q = PerformanceQuery::new(day0, now);
    let truth = f.memory_total(&q).await;
    assert_eq!(f.pg_total(&q).await, truth);

    // Mark the daily all-endpoints row (and its version, as a rebuild of the
    // day does): a whole-day range reads it...
    assert_eq!(
        f.exec(
            "UPDATE {s}.aggregated_metrics_daily SET sample_count = sample_count + 1000 \
                WHERE metric_type = 'performance' AND endpoint_path = '*'"
        )
        .await,
        1
    );
    let _ = f
        .exec("UPDATE {s}.rollup_days SET built_at = built_at + interval '1 second'")
        .await;
    assert_eq!(f.pg_total(&q).await, truth + 1000);
    // ...a range one hour shorter merges hourly rows instead...
    let short = TimeRange::custom(t(DAY0), t(DAY0 + DAY - HOUR), now).unwrap();
    let sq = PerformanceQuery::new(short, now);
    assert_eq!(f.pg_total(&sq).await, f.memory_total(&sq).await);
    // ...and without its rollup_days row the day is not trusted.
    let _ = f.exec("DELETE FROM {s}.rollup_days").await;
    assert_eq!(f.pg_total(&q).await, truth);

    // The 5-minute series of a rolled hour reads the 5-minute rows.
    let hour = TimeRange::custom(t(DAY0 + 7 * HOUR), t(DAY0 + 8 * HOUR), now).unwrap();
    let tq = TimeSeriesQuery::new(hour, SeriesKind::Performance, now);
    let before = f.query.time_series(&tq).await.unwrap();
    assert_series_eq(&before, &f.memory.time_series(&tq).await.unwrap(), "5min");
    let marked = f
        .exec(
            "UPDATE {s}.aggregated_metrics_5min SET sample_count = 12345 \
             WHERE metric_type = 'performance' AND time_bucket >= '2026-01-01 07:00:00+00' \
               AND time_bucket < '2026-01-01 08:00:00+00'",
        )
        .await;
    assert!(marked > 0);
    let after = f.query.time_series(&tq).await.unwrap();
    let counts = |s: &TimeSeries| -> Vec<u64> {
        s.data_points
            .iter()
            .map(|p| p.performance.as_ref().unwrap().total_requests)
            .collect()
    };
    let expected: Vec<u64> = counts(&before)
        .into_iter()
        .map(|n| if n > 0 { 12345 } else { 0 })
        .collect();
    assert_eq!(counts(&after), expected);
}

#[tokio::test]
async fn an_old_partial_edge_hour_without_raw_rows_reads_its_whole_hourly_row() {
    let f = Fixture::new().await;
    let (requests, events) = traffic(DAY0, DAY0 + 3 * HOUR, 40, 5);
    f.write(requests, events).await;
    f.roll(DAY0 + 3 * HOUR + 120).await;
    let now = t(DAY0 + 3 * HOUR + 300);
    let range = TimeRange::custom(t(DAY0 + 1800), now, now).unwrap();
    let q = PerformanceQuery::new(range, now);
    let exact = f.query.performance(&q).await.unwrap();
    assert_perf_eq(&exact, &f.memory.performance(&q).await.unwrap());
    // Retention drops hour 0's raw rows (as it does after 7 days).
    let _ = f
        .exec("DELETE FROM {s}.performance_metrics WHERE \"timestamp\" < '2026-01-01 01:00:00+00'")
        .await;
    let _ = f
        .exec(
            "UPDATE {s}.rollup_hours SET raw_dropped = true WHERE hour = '2026-01-01 00:00:00+00'",
        )
        .await;
    let whole_hour = f
        .count("SELECT sample_count FROM {s}.aggregated_metrics WHERE time_bucket = '2026-01-01 00:00:00+00' \
                AND metric_type = 'performance' AND endpoint_path = '*'")
        .await as u64;
    let approx = f.query.performance(&q).await.unwrap();
    let whole = PerformanceQuery::new(TimeRange::custom(t(DAY0), now, now).unwrap(), now);
    let memory_whole = f.memory_total(&whole).await;
    assert_eq!(approx.metrics.total_requests, memory_whole);
    assert!(whole_hour > 0 && approx.metrics.total_requests > exact.metrics.total_requests);
}

#[tokio::test]
async fn statement_timeout_is_a_timeout_error_and_the_pool_recovers() {
    let f = mixed_fixture().await;
    let query = f
        .query
        .clone()
        .statement_timeout(Duration::from_millis(300));
    let now = t(NOW);
    let q = PerformanceQuery::new(TimeRange::preset(Preset::Last7Days, now), now);
    // Another session holds a lock that every dashboard query must wait for.
    let locker = f.db.connect().await;
    locker
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE \"{}\".rollup_hours IN ACCESS EXCLUSIVE MODE",
            f.schema
        ))
        .await
        .unwrap();
    let err = query.performance(&q).await.unwrap_err();
    assert!(
        matches!(err, QueryError::Timeout(d) if d == Duration::from_millis(300)),
        "{err:?}"
    );
    assert!(err.to_string().contains("did not finish"), "{err}");
    locker.batch_execute("ROLLBACK").await.unwrap();
    // The same pool answers once the lock is gone.
    let ok = query.performance(&q).await.unwrap();
    assert_eq!(
        ok.metrics.total_requests,
        f.memory.snapshot().requests().len() as u64
    );
}

#[tokio::test]
async fn a_stopped_server_is_unavailable() {
    let server = TestServer::dedicated().await;
    let db = server.create_db().await;
    let schema = db.name().to_owned();
    let mut client = db.connect().await;
    metrics_pg::migrate(&mut client, &schema).await.unwrap();
    drop(client);
    let url = format!("{}?connect_timeout=2", db.url());
    let url = if db.url().contains('?') {
        db.url().replace('?', "?connect_timeout=2&")
    } else {
        url
    };
    let query = PgMetricsQuery::new(metrics_pg::create_pool(&url, 2).unwrap(), &schema).unwrap();
    let now = SystemTime::now();
    let range = TimeRange::preset(Preset::Last24Hours, now);
    assert_eq!(query.user_event_count("ada", &range).await.unwrap(), 0);
    server.stop().await;
    for _ in 0..2 {
        let err = query
            .performance(&PerformanceQuery::new(range, now))
            .await
            .unwrap_err();
        assert!(matches!(err, QueryError::Unavailable(_)), "{err:?}");
    }
    drop(db);
}

#[test]
fn schema_names_are_validated() {
    let pool = metrics_pg::create_pool("postgres://app@localhost/app", 1).unwrap();
    assert!(PgMetricsQuery::new(pool.clone(), "App-Metrics").is_err());
    let q = PgMetricsQuery::new(pool, "app_metrics").unwrap();
    assert_eq!(q.schema().as_str(), "app_metrics");
    assert!(format!("{q:?}").contains("app_metrics"));
}

#[tokio::test]
async fn windows_over_the_exact_limit_give_the_memory_stores_histogram_answers() {
    // ~375 (POST) to ~1,100 (GET) samples per key and hour, > 1,000 per key
    // over the window: the merged sketches switch to bins, and bins depend
    // only on the samples, so even then both stores answer the same.
    let f = Fixture::new().await;
    let (requests, events) = traffic(DAY0, DAY0 + 3 * HOUR + 1800, 6_000, 13);
    f.write(requests, events).await;
    f.roll(DAY0 + 3 * HOUR + 120).await;
    let now = t(DAY0 + 3 * HOUR + 1800);
    for range in [
        TimeRange::custom(t(DAY0), now, now).unwrap(),
        TimeRange::custom(t(DAY0 + 1000), now, now).unwrap(),
    ] {
        let q = PerformanceQuery::new(range, now);
        let pg = f.query.performance(&q).await.unwrap();
        assert!(pg.endpoints.iter().all(|e| e.request_count > 1_000));
        assert_perf_eq(&pg, &f.memory.performance(&q).await.unwrap());
        // Twice: the second answer comes from the cache of decoded buckets.
        assert_perf_eq(&f.query.performance(&q).await.unwrap(), &pg);
        let uncached = f.query.clone().cache_bytes(0);
        assert_perf_eq(&uncached.performance(&q).await.unwrap(), &pg);
    }
}

// ===== drill-down: filtered time series and slowest requests =====

/// The filters of the drill-down tests: (endpoint, method).
const FILTERS: [(Option<&str>, Option<&str>); 6] = [
    // Two methods per hour: the rolled hours merge both rows' sketches.
    (Some("/b/{id}"), None),
    // One row per rolled hour: its stored values are the point.
    (Some("/c"), Some("POST")),
    (Some("/d/{id}/e"), Some("GET")),
    (Some("/nowhere"), None),
    // No route template is `*` (the all-endpoints rollup rows are not one).
    (Some("*"), None),
    // A method over every endpoint.
    (None, Some("POST")),
];

fn filtered(
    q: TimeSeriesQuery,
    (endpoint, method): (Option<&str>, Option<&str>),
) -> TimeSeriesQuery {
    let q = match endpoint {
        Some(e) => q.endpoint(e),
        None => q,
    };
    match method {
        Some(m) => q.method(m),
        None => q,
    }
}

#[tokio::test]
async fn filtered_time_series_match_the_memory_store() {
    let f = mixed_fixture().await;
    let now = t(NOW);
    for range in [
        TimeRange::preset(Preset::Last7Days, now),
        TimeRange::preset(Preset::Last24Hours, now),
        // Both edges mid-hour inside the rolled hours.
        TimeRange::custom(t(DAY0 + 3 * HOUR + 900), t(DAY0 + 20 * HOUR + 2_700), now).unwrap(),
        // The rolled day and the rolled hour after it.
        TimeRange::custom(t(DAY0), t(DAY0 + DAY + HOUR), now).unwrap(),
        // Only the open hour.
        TimeRange::custom(t(DAY0 + DAY + 5 * HOUR), now, now).unwrap(),
    ] {
        for filter in FILTERS {
            for kind in [SeriesKind::Performance, SeriesKind::Both] {
                for res in [Resolution::Hour, Resolution::FiveMinutes] {
                    let q = filtered(
                        TimeSeriesQuery::new(range, kind, now).resolution(res),
                        filter,
                    );
                    let pg = f.query.time_series(&q).await.unwrap();
                    let what = format!("{filter:?} {kind} {res} {:?}", range.start());
                    assert_series_eq(&pg, &f.memory.time_series(&q).await.unwrap(), &what);
                    if matches!(filter.0, Some("/nowhere" | "*")) && kind == SeriesKind::Performance
                    {
                        assert!(pg.data_points.is_empty(), "{what}");
                    }
                }
            }
        }
    }
    // The filter narrows the requests: /c POST is a small part of the total.
    let range = TimeRange::preset(Preset::Last7Days, now);
    let total = |s: &TimeSeries| -> u64 {
        s.data_points
            .iter()
            .map(|p| p.performance.as_ref().unwrap().total_requests)
            .sum()
    };
    let all = f
        .query
        .time_series(&TimeSeriesQuery::new(range, SeriesKind::Performance, now))
        .await
        .unwrap();
    let one = f
        .query
        .time_series(&filtered(
            TimeSeriesQuery::new(range, SeriesKind::Performance, now),
            FILTERS[1],
        ))
        .await
        .unwrap();
    assert!(
        0 < total(&one) && total(&one) * 8 < total(&all) * 2,
        "{} of {}",
        total(&one),
        total(&all)
    );
    assert_eq!(all.data_points.len(), one.data_points.len());
}

#[tokio::test]
async fn filtered_hourly_buckets_read_per_endpoint_rollups_and_five_minute_ones_raw_rows() {
    let f = mixed_fixture().await;
    let now = t(NOW);
    let range = TimeRange::custom(t(DAY0 + 7 * HOUR), t(DAY0 + 10 * HOUR), now).unwrap();
    let hourly = |method: Option<&str>| {
        filtered(
            TimeSeriesQuery::new(range, SeriesKind::Performance, now).resolution(Resolution::Hour),
            (Some("/c"), method),
        )
    };
    let counts = |s: &TimeSeries| -> Vec<u64> {
        s.data_points
            .iter()
            .map(|p| p.performance.as_ref().unwrap().total_requests)
            .collect()
    };
    let memory = |q: TimeSeriesQuery| {
        let m = f.memory.clone();
        async move { m.time_series(&q).await.unwrap() }
    };
    let (post, get) = (
        counts(&memory(hourly(Some("POST"))).await),
        counts(&memory(hourly(Some("GET"))).await),
    );
    assert_eq!(post.len(), 3);
    assert!(
        post.iter().zip(&get).any(|(p, g)| *p > 0 && *g > 0),
        "an hour with both methods: {post:?} {get:?}"
    );
    let five = hourly(None).resolution(Resolution::FiveMinutes);
    let five_before = f.query.time_series(&five).await.unwrap();
    assert_series_eq(&five_before, &memory(five.clone()).await, "5min");
    // Mark the rolled rows of /c: the hourly buckets are those rows...
    let marked = f
        .exec(
            "UPDATE {s}.aggregated_metrics SET sample_count = sample_count + 1000 \
             WHERE metric_type = 'performance' AND endpoint_path = '/c' \
               AND time_bucket >= '2026-01-01 07:00:00+00' AND time_bucket < '2026-01-01 10:00:00+00'",
        )
        .await;
    let rows = |v: &[u64]| v.iter().filter(|n| **n > 0).count() as u64;
    assert_eq!(marked, rows(&post) + rows(&get));
    let plus = |n: u64| if n > 0 { 1000 } else { 0 };
    // ...one method: that method's row, its stored values...
    let one = f.query.time_series(&hourly(Some("POST"))).await.unwrap();
    let expected: Vec<u64> = post.iter().map(|&n| n + plus(n)).collect();
    assert_eq!(counts(&one), expected);
    // ...both methods: their rows merged.
    let both = f.query.time_series(&hourly(None)).await.unwrap();
    let expected: Vec<u64> = post
        .iter()
        .zip(&get)
        .map(|(&p, &g)| p + g + plus(p) + plus(g))
        .collect();
    assert_eq!(counts(&both), expected);
    // The 5-minute buckets of one endpoint come from raw rows only.
    assert_series_eq(
        &f.query.time_series(&five).await.unwrap(),
        &five_before,
        "5min",
    );
}

#[tokio::test]
async fn filtered_five_minute_series_before_the_raw_retention_are_refused_by_both_stores() {
    let f = Fixture::new().await;
    let now = t(NOW + 30 * DAY);
    let range = TimeRange::preset(Preset::Last30Days, now);
    let q = TimeSeriesQuery::new(range, SeriesKind::Performance, now)
        .resolution(Resolution::FiveMinutes)
        .endpoint("/a");
    for err in [
        f.query.time_series(&q).await.unwrap_err(),
        f.memory.time_series(&q).await.unwrap_err(),
    ] {
        assert!(matches!(err, QueryError::Unsupported(_)), "{err:?}");
        assert!(err.to_string().contains("interval=hourly"), "{err}");
    }
    let hourly = q.resolution(Resolution::Hour);
    assert!(
        f.query
            .time_series(&hourly)
            .await
            .unwrap()
            .data_points
            .is_empty()
    );
}

fn assert_slow_eq(pg: &SlowRequests, mem: &SlowRequests, what: &str) {
    assert_eq!(pg.status_codes, mem.status_codes, "{what}");
    assert_eq!(pg.requests, mem.requests, "{what}");
}

#[tokio::test]
async fn slowest_requests_match_the_memory_store() {
    let f = mixed_fixture().await;
    let now = t(NOW);
    for range in [
        TimeRange::preset(Preset::Last7Days, now),
        TimeRange::preset(Preset::Last24Hours, now),
        TimeRange::preset(Preset::Last90Days, now),
        TimeRange::custom(t(DAY0 + 3 * HOUR + 900), t(DAY0 + 20 * HOUR + 2_700), now).unwrap(),
        TimeRange::custom(t(DAY0 + DAY + 5 * HOUR), now, now).unwrap(),
    ] {
        for route in ["/b/{id}", "/c", "/nowhere", "*"] {
            for method in [None, Some("GET"), Some("POST")] {
                for limit in [1, 7, 100] {
                    let mut q = SlowRequestsQuery::new(range, route, now).limit(limit);
                    if let Some(m) = method {
                        q = q.method(m);
                    }
                    let what = format!("{route} {method:?} {limit} {:?}", range.start());
                    let pg = f.query.slowest_requests(&q).await.unwrap();
                    assert_slow_eq(&pg, &f.memory.slowest_requests(&q).await.unwrap(), &what);
                    assert!(pg.requests.len() <= limit, "{what}");
                    let busy = matches!(route, "/b/{id}" | "/c") && method.is_none();
                    if busy && range.preset_kind() == Some(Preset::Last7Days) {
                        assert_eq!(pg.requests.len(), limit, "{what}");
                        assert!(pg.status_codes.len() >= 2, "{what}: {:?}", pg.status_codes);
                    }
                }
            }
        }
    }
}

#[tokio::test]
async fn slowest_requests_order_ties_clip_the_window_and_count_rolled_status_codes() {
    let f = Fixture::new().await;
    // Hours 0..2 of day 8 rolled, hour 3 open; rows 8 days back stay raw.
    let base = DAY0 + 8 * DAY;
    let now = t(base + 3 * HOUR + 1_200);
    let id = |s: &str| CorrelationId::from_header(&s.parse().unwrap());
    let rec = |secs: u64, method: Method, status: u16, ms: f64, corr: Option<&str>| {
        let mut r = RequestRecord::new(
            t(secs),
            Route::from_static("/slow/{id}"),
            method,
            status,
            Duration::ZERO,
        )
        .with_correlation_id(corr.and_then(id))
        .with_user(corr.map(|c| UserId::new(format!("user-{c}"))));
        r.response_time_ms = ms;
        r
    };
    let mut rows = vec![
        // Ties at 250 ms: newest first, then by correlation id (byte
        // order: "B" < "a"), none last.
        rec(base + 600, Method::GET, 200, 250.0, Some("a-1")),
        rec(base + 600, Method::GET, 200, 250.0, Some("B-2")),
        rec(base + 600, Method::GET, 503, 250.0, None),
        rec(base + 2 * HOUR + 7, Method::GET, 500, 250.0, Some("z")),
        rec(
            base + 3 * HOUR + 60,
            Method::POST,
            201,
            800.5,
            Some("open-hour"),
        ),
        rec(base + HOUR, Method::PUT, 409, 0.25, Some("fastest")),
    ];
    for i in 0..40 {
        rows.push(rec(
            base + 90 * i,
            Method::GET,
            200,
            10.0 + i as f64,
            Some(&format!("n{i}")),
        ));
    }
    f.write(rows, Vec::new()).await;
    f.roll(base + 3 * HOUR + 120).await;
    // 8 days before `now`: outside the raw retention, slower than all.
    f.write(
        vec![rec(
            base + 3 * HOUR - 8 * DAY,
            Method::GET,
            500,
            99_999.0,
            Some("old"),
        )],
        Vec::new(),
    )
    .await;
    let month = TimeRange::preset(Preset::Last30Days, now);
    let q = SlowRequestsQuery::new(month, "/slow/{id}", now).limit(6);
    let pg = f.query.slowest_requests(&q).await.unwrap();
    assert_slow_eq(&pg, &f.memory.slowest_requests(&q).await.unwrap(), "30d");
    let ids: Vec<Option<&str>> = pg
        .requests
        .iter()
        .map(|r| r.correlation_id.as_deref())
        .collect();
    assert_eq!(
        ids,
        [
            Some("open-hour"),
            Some("z"),
            Some("B-2"),
            Some("a-1"),
            None,
            Some("n39")
        ]
    );
    let first = &pg.requests[0];
    assert_eq!(
        (
            first.method.as_str(),
            first.status_code,
            first.response_time_ms
        ),
        ("POST", 201, 800.5)
    );
    assert_eq!(first.user_id.as_deref(), Some("user-open-hour"));
    assert_eq!(first.timestamp, t(base + 3 * HOUR + 60));
    assert_eq!(
        pg.status_codes,
        std::collections::BTreeMap::from([(200, 42), (201, 1), (409, 1), (500, 1), (503, 1)])
    );
    // The rolled hours' codes come from their rollup rows.
    let marked = f
        .exec(
            "UPDATE {s}.aggregated_metrics SET aggregated_values = jsonb_set(aggregated_values, \
               '{status_code_distribution,409}', '7') \
             WHERE endpoint_path = '/slow/{id}' AND method = 'PUT'",
        )
        .await;
    assert_eq!(marked, 1);
    let week = TimeRange::preset(Preset::Last7Days, now);
    let q = SlowRequestsQuery::new(week, "/slow/{id}", now).method("PUT");
    let put = f.query.slowest_requests(&q).await.unwrap();
    assert_eq!(
        put.status_codes,
        std::collections::BTreeMap::from([(409, 7)])
    );
    assert_eq!(put.requests.len(), 1);
    assert_eq!(put.requests[0].response_time_ms, 0.25);
    // A range that ends before the retention: nothing, on both stores.
    let old = TimeRange::custom(t(base - 9 * DAY), t(base - 7 * DAY), now).unwrap();
    let q = SlowRequestsQuery::new(old, "/slow/{id}", now);
    assert_eq!(
        f.query.slowest_requests(&q).await.unwrap(),
        SlowRequests::default()
    );
    assert_eq!(
        f.memory.slowest_requests(&q).await.unwrap(),
        SlowRequests::default()
    );
}
