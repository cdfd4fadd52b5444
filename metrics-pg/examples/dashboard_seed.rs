//! Driver of `benches/dashboard_queries.sh`.
//!
//! ```text
//! dashboard_seed seed     --url URL [--schema app_metrics] [--per-day 1000000]
//!                         [--events-per-day 100000] [--endpoints 50] [--users 3000]
//!                         [--history-days 30]
//! dashboard_seed ours     --url URL [--schema app_metrics] [--runs 20]
//! dashboard_seed original --url URL [--schema app_metrics] [--runs 5]
//! ```
//!
//! * `seed` migrates `--schema`, creates the day partitions, binary-COPYs
//!   raw rows from the UTC midnight 7 days ago up to now (`--per-day`
//!   requests a day over `--endpoints` endpoints, log-normal latencies,
//!   ~2 % errors, `--users` users, 10 % anonymous; `--events-per-day` usage
//!   events of 10 types on 20 pages), rolls every closed hour up with
//!   [`RollupJob`] (hourly, 5-minute and daily rollups), and then makes
//!   older history by copying the 7 rolled whole days back in time, a week
//!   at a time, until `--history-days` days are rolled up (the copied hours
//!   are marked `raw_dropped`, as retention leaves them).
//! * `ours` times [`PgMetricsQuery`] directly (no HTTP): performance, usage
//!   and time series (`both`, default resolution) for 24h/7d/30d/90d, then
//!   the drill-down into [`DRILL_ENDPOINT`]: its slowest requests over 7d
//!   (`endpoint=requests`) and its performance time series for the four
//!   ranges (`endpoint=time-series-endpoint`); 3 warm-ups then `--runs` timed
//!   calls each; prints `ours endpoint=.. range=.. ms=<median>`.
//! * `original` times the original design's SQL over the raw rows of the
//!   same ranges (`percentile_cont` + avg/count/error rate, summary and
//!   `GROUP BY endpoint, method`; counts and `GROUP BY event_type`/page;
//!   `date_trunc`/`date_bin` buckets), 1 warm-up then `--runs` runs; prints
//!   `original endpoint=.. range=.. ms=<median>`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::pin_mut;
use metrics_core::aggregate::{Preset, TimeRange};
use metrics_core::query::{
    MetricsQuery, PerformanceQuery, SeriesKind, SlowRequestsQuery, TimeSeriesQuery, UsageQuery,
};
use metrics_pg::tokio_postgres::binary_copy::BinaryCopyInWriter;
use metrics_pg::tokio_postgres::types::{ToSql, Type};
use metrics_pg::{Clock, PgMetricsQuery, RollupJob};

const DAY: u64 = 86_400;
const SEED: u64 = 0xDA5B_0A2D;
/// The endpoint the drill-down lines ask about: one of the 50, each as busy
/// as the others (1/50 of the requests, 20,000 a day at 1 M/day), served
/// with one method (GET).
const DRILL_ENDPOINT: &str = "/api/v1/r0/{id}";
const PRESETS: [Preset; 4] = [
    Preset::Last24Hours,
    Preset::Last7Days,
    Preset::Last30Days,
    Preset::Last90Days,
];
/// The API's default vocabulary (CONTRACT.md §1).
const EVENT_TYPES: [&str; 10] = [
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

#[derive(Debug)]
struct Args {
    cmd: String,
    url: String,
    schema: String,
    per_day: u64,
    events_per_day: u64,
    endpoints: u64,
    users: u64,
    history_days: u64,
    runs: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let cmd = it.next().ok_or("missing command: seed | ours | original")?;
    let mut a = Args {
        cmd,
        url: String::new(),
        schema: "app_metrics".into(),
        per_day: 1_000_000,
        events_per_day: 100_000,
        endpoints: 50,
        users: 3_000,
        history_days: 30,
        runs: 0,
    };
    while let Some(flag) = it.next() {
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: not a number"))
        };
        match flag.as_str() {
            "--url" => a.url = v,
            "--schema" => a.schema = v,
            "--per-day" => a.per_day = num(&v)?,
            "--events-per-day" => a.events_per_day = num(&v)?,
            "--endpoints" => a.endpoints = num(&v)?.max(1),
            "--users" => a.users = num(&v)?.max(1),
            "--history-days" => a.history_days = num(&v)?,
            "--runs" => a.runs = usize::try_from(num(&v)?).unwrap_or(1),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(a)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    match args.cmd.as_str() {
        "seed" => seed(&args).await,
        "ours" => ours(&args).await,
        "original" => original(&args).await,
        other => Err(format!("unknown command {other}").into()),
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Standard normal from a seeded generator (Box-Muller).
fn normal(rng: &mut fastrand::Rng) -> f64 {
    let u1 = rng.f64().max(f64::MIN_POSITIVE);
    let u2 = rng.f64();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// The seeded stretch of time: from the UTC midnight 7 days ago to now.
#[derive(Debug, Clone, Copy)]
struct Window {
    now: SystemTime,
    /// Today's UTC midnight (Unix seconds).
    today: u64,
    /// The first seeded second (Unix seconds).
    first: u64,
    /// Seconds from `first` to `now`.
    span: u64,
}

impl Window {
    fn ending(now: SystemTime) -> Self {
        let today = unix(now) / DAY * DAY;
        let first = today - 7 * DAY;
        Self {
            now,
            today,
            first,
            span: unix(now) - first,
        }
    }

    /// The time of row `i` of `rows`, evenly spread over the window in time
    /// order, like real traffic.
    fn at(self, i: u64, rows: u64) -> SystemTime {
        UNIX_EPOCH
            + Duration::from_micros(self.first * 1_000_000 + i * self.span * 1_000_000 / rows)
    }
}

async fn seed(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let pool = metrics_pg::create_pool(&args.url, 4)?;
    let mut client = pool.get().await?;
    let s = &args.schema;
    let _ = metrics_pg::migrate(&mut client, s).await?;
    let window = Window::ending(SystemTime::now());
    let days: Vec<time::Date> = (0..=8)
        .map(|i| {
            time::OffsetDateTime::from_unix_timestamp((window.first + i * DAY) as i64)
                .map(|t| t.date())
        })
        .collect::<Result<_, _>>()?;
    let _ = metrics_pg::create_partitions(&mut client, s, days).await?;

    // ----- raw requests and usage events -----
    let users: Vec<String> = (0..args.users)
        .map(|i| format!("user{i}@example.com"))
        .collect();
    // One generator for both, in this order, so a seed is reproducible.
    let mut rng = fastrand::Rng::with_seed(SEED);
    let started = Instant::now();
    let n = copy_requests(&client, args, window, &users, &mut rng).await?;
    eprintln!(
        "info seeded {n} raw requests in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let n = copy_usage_events(&client, args, window, &users, &mut rng).await?;
    eprintln!(
        "info seeded {n} raw usage events in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    vacuum(&client, s, &["performance_metrics", "usage_events"]).await?;

    // ----- rollups of every closed hour -----
    let started = Instant::now();
    let report = RollupJob::new(pool.clone(), s)?
        .clock(Clock::fixed(window.now))
        .governance(metrics_pg::Governance::disabled())
        .run_once()
        .await?;
    eprintln!(
        "info {report} (rollup of the raw week took {:.1}s)",
        started.elapsed().as_secs_f64()
    );

    // ----- older history: the 7 rolled whole days, copied back a week at a time -----
    let started = Instant::now();
    let copies = args.history_days.saturating_sub(7).div_ceil(7);
    copy_history(&client, s, window, copies).await?;
    vacuum(
        &client,
        s,
        &[
            "aggregated_metrics",
            "aggregated_metrics_5min",
            "aggregated_metrics_daily",
            "rollup_hours",
            "rollup_days",
        ],
    )
    .await?;
    report_history(&client, s, copies, started).await
}

/// Binary-COPYs `--per-day` requests a day over the window: `--endpoints`
/// endpoints, log-normal latencies, ~2 % errors, 10 % anonymous. Returns
/// the rows written.
async fn copy_requests(
    client: &metrics_pg::tokio_postgres::Client,
    args: &Args,
    window: Window,
    users: &[String],
    rng: &mut fastrand::Rng,
) -> Result<u64, Box<dyn std::error::Error>> {
    let s = &args.schema;
    let rows = args.per_day * window.span / DAY;
    let endpoints: Vec<(String, &str, f64)> = (0..args.endpoints)
        .map(|i| {
            let method = ["GET", "GET", "POST", "PUT", "DELETE"][(i % 5) as usize];
            (
                format!("/api/v1/r{i}/{{id}}"),
                method,
                8.0 + (i * 37 % 300) as f64,
            )
        })
        .collect();
    let sink = client
        .copy_in(&format!(
            "COPY \"{s}\".performance_metrics (id, \"timestamp\", endpoint, method, status_code, \
             response_time_ms, user_id, correlation_id) FROM STDIN (FORMAT binary)"
        ))
        .await?;
    let writer = BinaryCopyInWriter::new(
        sink,
        &[
            Type::UUID,
            Type::TIMESTAMPTZ,
            Type::TEXT,
            Type::TEXT,
            Type::INT4,
            Type::FLOAT8,
            Type::TEXT,
            Type::TEXT,
        ],
    );
    pin_mut!(writer);
    for i in 0..rows {
        let at = window.at(i, rows);
        let (endpoint, method, median) = &endpoints[rng.usize(..endpoints.len())];
        let ms = (median.ln() + 0.8 * normal(rng)).exp();
        let status: i32 = match rng.u32(..100) {
            0 => 500,
            1 => 404,
            _ => 200,
        };
        let user = (rng.u32(..10) != 0).then(|| users[rng.usize(..users.len())].as_str());
        let id = uuid::Uuid::now_v7();
        // Every request the layer records carries one (CorrelationId).
        let correlation_id = metrics_core::CorrelationId::generate_at(at);
        let correlation_id = correlation_id.as_str();
        let values: [&(dyn ToSql + Sync); 8] = [
            &id,
            &at,
            endpoint,
            method,
            &status,
            &ms,
            &user,
            &correlation_id,
        ];
        writer.as_mut().write(&values).await?;
    }
    Ok(writer.finish().await?)
}

/// Binary-COPYs `--events-per-day` usage events a day over the window, of
/// 10 types on 20 pages. Returns the rows written.
async fn copy_usage_events(
    client: &metrics_pg::tokio_postgres::Client,
    args: &Args,
    window: Window,
    users: &[String],
    rng: &mut fastrand::Rng,
) -> Result<u64, Box<dyn std::error::Error>> {
    let s = &args.schema;
    let events = args.events_per_day * window.span / DAY;
    let pages: Vec<String> = (0..20).map(|i| format!("/page/{i}")).collect();
    let sink = client
        .copy_in(&format!(
            "COPY \"{s}\".usage_events (id, \"timestamp\", received_at, event_type, user_id, \
             page_name, success) FROM STDIN (FORMAT binary)"
        ))
        .await?;
    let writer = BinaryCopyInWriter::new(
        sink,
        &[
            Type::UUID,
            Type::TIMESTAMPTZ,
            Type::TIMESTAMPTZ,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::BOOL,
        ],
    );
    pin_mut!(writer);
    for i in 0..events {
        let at = window.at(i, events);
        let kind = EVENT_TYPES[rng.usize(..EVENT_TYPES.len())];
        let user = users[rng.usize(..users.len())].as_str();
        let page = (rng.u32(..5) != 0).then(|| pages[rng.usize(..pages.len())].as_str());
        let success = Some(rng.u32(..20) != 0);
        let id = uuid::Uuid::now_v7();
        let values: [&(dyn ToSql + Sync); 7] = [&id, &at, &at, &kind, &user, &page, &success];
        writer.as_mut().write(&values).await?;
    }
    Ok(writer.finish().await?)
}

/// Copies the rolled whole days of the window back in time `copies` times,
/// a week further each time; the copied hours are marked `raw_dropped`, as
/// retention leaves them.
async fn copy_history(
    client: &metrics_pg::tokio_postgres::Client,
    s: &str,
    window: Window,
    copies: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let (lo, hi) = (
        UNIX_EPOCH + Duration::from_secs(window.first),
        UNIX_EPOCH + Duration::from_secs(window.today),
    );
    for k in 1..=copies {
        let shift = format!("interval '{} days'", 7 * k);
        client
            .batch_execute(&format!(
                "BEGIN;
                 INSERT INTO \"{s}\".aggregated_metrics (time_bucket, metric_type, endpoint_path, method,
                        event_type, aggregated_values, sample_count, latency_sketch, users_sketch)
                   SELECT time_bucket - {shift}, metric_type, endpoint_path, method, event_type,
                          aggregated_values, sample_count, latency_sketch, users_sketch
                   FROM \"{s}\".aggregated_metrics
                   WHERE time_bucket >= '{lo}' AND time_bucket < '{hi}';
                 INSERT INTO \"{s}\".aggregated_metrics_5min (time_bucket, metric_type, aggregated_values,
                        sample_count, latency_sketch, users_sketch)
                   SELECT time_bucket - {shift}, metric_type, aggregated_values, sample_count,
                          latency_sketch, users_sketch
                   FROM \"{s}\".aggregated_metrics_5min
                   WHERE time_bucket >= '{lo}' AND time_bucket < '{hi}';
                 INSERT INTO \"{s}\".aggregated_metrics_daily (time_bucket, metric_type, endpoint_path,
                        method, event_type, aggregated_values, sample_count, latency_sketch, users_sketch)
                   SELECT time_bucket - {shift}, metric_type, endpoint_path, method, event_type,
                          aggregated_values, sample_count, latency_sketch, users_sketch
                   FROM \"{s}\".aggregated_metrics_daily
                   WHERE time_bucket >= '{lo}' AND time_bucket < '{hi}';
                 INSERT INTO \"{s}\".rollup_hours (metric_type, hour, raw_count, raw_dropped)
                   SELECT metric_type, hour - {shift}, raw_count, true
                   FROM \"{s}\".rollup_hours WHERE hour >= '{lo}' AND hour < '{hi}';
                 INSERT INTO \"{s}\".rollup_days (metric_type, day)
                   SELECT metric_type, day - {shift}
                   FROM \"{s}\".rollup_days WHERE day >= '{lo}' AND day < '{hi}';
                 COMMIT;",
                lo = ts(lo),
                hi = ts(hi),
            ))
            .await?;
    }
    Ok(())
}

/// Prints how far back the rolled history reaches.
async fn report_history(
    client: &metrics_pg::tokio_postgres::Client,
    s: &str,
    copies: u64,
    started: Instant,
) -> Result<(), Box<dyn std::error::Error>> {
    let stats = client
        .query_one(
            &format!(
                "SELECT (SELECT count(*) FROM \"{s}\".aggregated_metrics), \
                        (SELECT count(*) FROM \"{s}\".aggregated_metrics_daily), \
                        (SELECT count(*) FROM \"{s}\".rollup_days WHERE metric_type = 'performance'), \
                        (SELECT extract(epoch FROM now() - min(hour))::int8 / 86400 FROM \"{s}\".rollup_hours)"
            ),
            &[],
        )
        .await?;
    eprintln!(
        "info history: {copies} week copies in {:.1}s; {} hourly rows, {} daily rows, {} complete days, rolled back {} days",
        started.elapsed().as_secs_f64(),
        stats.get::<_, i64>(0),
        stats.get::<_, i64>(1),
        stats.get::<_, i64>(2),
        stats.get::<_, i64>(3),
    );
    Ok(())
}

/// `VACUUM ANALYZE` each table (one statement per call: VACUUM cannot run
/// in the implicit transaction of a multi-statement string).
async fn vacuum(
    client: &metrics_pg::tokio_postgres::Client,
    schema: &str,
    tables: &[&str],
) -> Result<(), Box<dyn std::error::Error>> {
    for t in tables {
        client
            .batch_execute(&format!("VACUUM ANALYZE \"{schema}\".\"{t}\""))
            .await?;
    }
    Ok(())
}

fn ts(t: SystemTime) -> String {
    metrics_core::query::format_rfc3339(t)
}

fn median_ms(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

async fn ours(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let runs = if args.runs == 0 { 20 } else { args.runs };
    let pool = metrics_pg::create_pool(&args.url, 2)?;
    let q = PgMetricsQuery::new(pool, &args.schema)?;
    // The three dashboard reads, then the drill-down: slowest requests over
    // 7 days and one endpoint's series.
    let lines: [(&str, &[Preset]); 5] = [
        ("performance", &PRESETS),
        ("usage", &PRESETS),
        ("time-series", &PRESETS),
        ("requests", &[Preset::Last7Days]),
        ("time-series-endpoint", &PRESETS),
    ];
    for (endpoint, presets) in lines {
        for &preset in presets {
            let mut times = Vec::with_capacity(runs);
            let mut size = 0;
            for i in 0..runs + 3 {
                let now = SystemTime::now();
                let range = TimeRange::preset(preset, now);
                let t0 = Instant::now();
                size = match endpoint {
                    "performance" => {
                        let r = q.performance(&PerformanceQuery::new(range, now)).await?;
                        usize::try_from(r.metrics.total_requests).unwrap_or(0)
                    }
                    "usage" => {
                        let r = q.usage(&UsageQuery::new(range, now)).await?;
                        usize::try_from(r.metrics.total_events).unwrap_or(0)
                    }
                    "time-series" => {
                        let r = q
                            .time_series(&TimeSeriesQuery::new(range, SeriesKind::Both, now))
                            .await?;
                        r.data_points.len()
                    }
                    "requests" => {
                        let r = q
                            .slowest_requests(&SlowRequestsQuery::new(range, DRILL_ENDPOINT, now))
                            .await?;
                        r.requests.len()
                    }
                    _ => {
                        let r = q
                            .time_series(
                                &TimeSeriesQuery::new(range, SeriesKind::Performance, now)
                                    .endpoint(DRILL_ENDPOINT),
                            )
                            .await?;
                        r.data_points.len()
                    }
                };
                if i >= 3 {
                    times.push(t0.elapsed().as_secs_f64() * 1000.0);
                }
            }
            eprintln!("info ours {endpoint} {preset}: answer size {size}");
            println!(
                "ours endpoint={endpoint} range={preset} ms={:.2}",
                median_ms(times)
            );
        }
    }
    Ok(())
}

/// The original design's SQL for one endpoint over `[start, end)`.
fn original_sql(s: &str, endpoint: &str, preset: Preset) -> Vec<String> {
    let pm = format!("\"{s}\".performance_metrics");
    let ue = format!("\"{s}\".usage_events");
    let pct = "percentile_cont(0.5) WITHIN GROUP (ORDER BY response_time_ms), \
               percentile_cont(0.95) WITHIN GROUP (ORDER BY response_time_ms), \
               percentile_cont(0.99) WITHIN GROUP (ORDER BY response_time_ms)";
    let range = "\"timestamp\" >= $1 AND \"timestamp\" < $2";
    match endpoint {
        "performance" => vec![
            format!(
                "SELECT count(*), avg(response_time_ms), {pct}, \
                        count(*) FILTER (WHERE status_code >= 400)::float8 / greatest(count(*), 1), \
                        count(DISTINCT user_id) \
                 FROM {pm} WHERE {range}"
            ),
            format!(
                "SELECT endpoint, method, count(*), \
                        count(*) FILTER (WHERE status_code >= 400), avg(response_time_ms), {pct} \
                 FROM {pm} WHERE {range} GROUP BY endpoint, method"
            ),
        ],
        "usage" => vec![
            format!("SELECT count(*), count(DISTINCT user_id) FROM {ue} WHERE {range}"),
            format!("SELECT event_type, count(*) FROM {ue} WHERE {range} GROUP BY event_type"),
            format!(
                "SELECT page_name, count(*) FROM {ue} WHERE {range} AND page_name IS NOT NULL \
                 AND event_type = 'page_view' GROUP BY page_name"
            ),
            format!(
                "SELECT count(DISTINCT u) FROM (SELECT user_id FROM {pm} WHERE {range} \
                 UNION ALL SELECT user_id FROM {ue} WHERE {range}) x(u)"
            ),
        ],
        _ => {
            let bucket = if preset == Preset::Last24Hours {
                "date_bin('5 minutes', \"timestamp\", timestamptz '2000-01-01')"
            } else {
                "date_trunc('hour', \"timestamp\")"
            };
            vec![
                format!(
                    "SELECT {bucket}, count(*), avg(response_time_ms), {pct}, \
                            count(*) FILTER (WHERE status_code >= 400) \
                     FROM {pm} WHERE {range} GROUP BY 1 ORDER BY 1"
                ),
                format!(
                    "SELECT {bucket}, count(*), count(DISTINCT user_id) \
                     FROM {ue} WHERE {range} GROUP BY 1 ORDER BY 1"
                ),
            ]
        }
    }
}

async fn original(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let runs = if args.runs == 0 { 5 } else { args.runs };
    let pool = metrics_pg::create_pool(&args.url, 1)?;
    let client = pool.get().await?;
    for endpoint in ["performance", "usage", "time-series"] {
        for preset in PRESETS {
            let statements = original_sql(&args.schema, endpoint, preset);
            let mut times = Vec::with_capacity(runs);
            let mut rows = 0;
            for i in 0..runs + 1 {
                let now = SystemTime::now();
                let range = TimeRange::preset(preset, now);
                let (start, end) = (range.start(), range.end());
                let t0 = Instant::now();
                rows = 0;
                for sql in &statements {
                    rows += client.query(sql.as_str(), &[&start, &end]).await?.len();
                }
                if i >= 1 {
                    times.push(t0.elapsed().as_secs_f64() * 1000.0);
                }
            }
            eprintln!("info original {endpoint} {preset}: {rows} result rows");
            println!(
                "original endpoint={endpoint} range={preset} ms={:.2}",
                median_ms(times)
            );
        }
    }
    Ok(())
}
