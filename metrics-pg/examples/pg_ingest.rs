//! Driver of `benches/pg_ingest.sh`: generates the same deterministic request
//! rows for every mode and measures how fast they get into PostgreSQL.
//!
//! ```text
//! pg_ingest csv      --rows N --out FILE          # rows as CSV for psql \copy (original layout)
//! pg_ingest per-row  --url URL --rows N --table T # one INSERT per row, autocommit (original design)
//! pg_ingest sink     --url URL --rows N [--streams 2] [--batch 20000] [--schema bench] [--pre-sql SQL]
//! ```
//!
//! `per-row` and `sink` print `rows_per_s=<n>` (and a few `info` lines); the
//! script turns them into RESULT lines. Rows: ≈50 endpoints, 1,000 users,
//! log-normal latencies, spread over the 7 days before a fixed instant, from
//! a seeded generator, so every mode sees the same data.

use std::io::{BufWriter, Write};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use metrics_core::{Collector, CorrelationId, Method, RequestRecord, Route, UserId};
use metrics_pg::PgSink;

const SEED: u64 = 0x00C0_FFEE;
const USERS: usize = 1_000;
/// End of the generated week: a fixed instant, so runs are comparable.
const END_SECS: u64 = 1_767_225_600; // 2026-01-01 00:00:00 UTC
const WEEK_SECS: u64 = 7 * 24 * 3600;

/// 50 route templates with a method and a typical latency (ms).
const ENDPOINTS: [(&str, &str, f64); 50] = [
    ("/api/v1/users", "GET", 35.0),
    ("/api/v1/users/{id}", "GET", 12.0),
    ("/api/v1/users/{id}", "PUT", 45.0),
    ("/api/v1/users/{id}", "DELETE", 30.0),
    ("/api/v1/users", "POST", 60.0),
    ("/api/v1/orders", "GET", 80.0),
    ("/api/v1/orders/{id}", "GET", 20.0),
    ("/api/v1/orders", "POST", 120.0),
    ("/api/v1/orders/{id}/items", "GET", 40.0),
    ("/api/v1/orders/{id}/cancel", "POST", 90.0),
    ("/api/v1/products", "GET", 55.0),
    ("/api/v1/products/{id}", "GET", 15.0),
    ("/api/v1/products/search", "GET", 150.0),
    ("/api/v1/products/{id}/reviews", "GET", 70.0),
    ("/api/v1/products/{id}/reviews", "POST", 85.0),
    ("/api/v1/cart", "GET", 18.0),
    ("/api/v1/cart/items", "POST", 25.0),
    ("/api/v1/cart/items/{id}", "DELETE", 22.0),
    ("/api/v1/checkout", "POST", 300.0),
    ("/api/v1/payments/{id}", "GET", 40.0),
    ("/api/v1/payments", "POST", 450.0),
    ("/api/v1/invoices", "GET", 95.0),
    ("/api/v1/invoices/{id}", "GET", 30.0),
    ("/api/v1/invoices/{id}/pdf", "GET", 600.0),
    ("/api/v1/reports/daily", "GET", 900.0),
    ("/api/v1/reports/monthly", "GET", 1_500.0),
    ("/api/v1/notifications", "GET", 25.0),
    ("/api/v1/notifications/{id}/read", "POST", 15.0),
    ("/api/v1/settings", "GET", 10.0),
    ("/api/v1/settings", "PUT", 35.0),
    ("/api/v1/teams", "GET", 40.0),
    ("/api/v1/teams/{id}", "GET", 18.0),
    ("/api/v1/teams/{id}/members", "GET", 45.0),
    ("/api/v1/teams/{id}/members", "POST", 65.0),
    ("/api/v1/projects", "GET", 50.0),
    ("/api/v1/projects/{id}", "GET", 20.0),
    ("/api/v1/projects/{id}", "PATCH", 55.0),
    ("/api/v1/projects/{id}/tasks", "GET", 60.0),
    ("/api/v1/projects/{id}/tasks", "POST", 70.0),
    ("/api/v1/tasks/{id}", "GET", 14.0),
    ("/api/v1/tasks/{id}", "PATCH", 40.0),
    ("/api/v1/files/{id}", "GET", 200.0),
    ("/api/v1/files", "POST", 800.0),
    ("/api/v1/auth/login", "POST", 250.0),
    ("/api/v1/auth/refresh", "POST", 30.0),
    ("/api/v1/auth/logout", "POST", 12.0),
    ("/api/v1/search", "GET", 180.0),
    ("/api/v1/export", "POST", 2_000.0),
    ("/api/v1/metrics/summary", "GET", 110.0),
    ("/<unmatched>", "GET", 3.0),
];

/// One generated request.
struct Row {
    timestamp: SystemTime,
    endpoint: usize,
    status: u16,
    latency_ms: f64,
    user: Option<usize>,
}

/// The deterministic row generator shared by every mode.
struct Rows {
    rng: fastrand::Rng,
    i: u64,
    n: u64,
}

impl Rows {
    fn new(n: u64) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(SEED),
            i: 0,
            n,
        }
    }

    fn normal(&mut self) -> f64 {
        // Box-Muller.
        let u1 = self.rng.f64().max(f64::MIN_POSITIVE);
        let u2 = self.rng.f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

impl Iterator for Rows {
    type Item = Row;

    fn next(&mut self) -> Option<Row> {
        if self.i >= self.n {
            return None;
        }
        // Arrival order: evenly spread over the week, with sub-step jitter.
        let step_us = WEEK_SECS * 1_000_000 / self.n.max(1);
        let offset_us = self.i * step_us + self.rng.u64(0..step_us.max(1));
        let timestamp = UNIX_EPOCH
            + Duration::from_secs(END_SECS - WEEK_SECS)
            + Duration::from_micros(offset_us);
        self.i += 1;
        // Skewed popularity: the first endpoints get most of the traffic.
        let endpoint = ((self.rng.f64().powi(2)) * ENDPOINTS.len() as f64) as usize;
        let status = match self.rng.u32(0..1000) {
            0..=899 => 200,
            900..=929 => 201,
            930..=969 => 404,
            970..=979 => 400,
            980..=989 => 401,
            990..=994 => 500,
            995..=997 => 503,
            _ => 302,
        };
        let median = ENDPOINTS[endpoint].2;
        let latency_ms = (median.ln() + 0.8 * self.normal()).exp();
        let user = (self.rng.u32(0..10) != 0).then(|| self.rng.usize(0..USERS));
        Some(Row {
            timestamp,
            endpoint,
            status,
            latency_ms,
            user,
        })
    }
}

fn users() -> Vec<UserId> {
    (0..USERS)
        .map(|u| UserId::new(format!("user{u:04}@example.com")))
        .collect()
}

fn error_type(status: u16) -> Option<String> {
    (status >= 400).then(|| format!("HTTP_{status}"))
}

fn rfc3339_utc(ts: SystemTime) -> String {
    let d = ts.duration_since(UNIX_EPOCH).unwrap_or_default();
    let t = time::OffsetDateTime::from_unix_timestamp(d.as_secs() as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}+00",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        d.subsec_micros()
    )
}

struct Args {
    mode: String,
    url: String,
    rows: u64,
    out: String,
    table: String,
    schema: String,
    streams: usize,
    batch: usize,
    pre_sql: String,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mode = it.next().ok_or("missing mode: csv | per-row | sink")?;
    let mut a = Args {
        mode,
        url: String::new(),
        rows: 1_000_000,
        out: String::new(),
        table: "orig_performance_metrics".into(),
        schema: "bench".into(),
        streams: 2,
        batch: 20_000,
        pre_sql: String::new(),
    };
    while let Some(flag) = it.next() {
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--url" => a.url = v,
            "--rows" => a.rows = v.parse().map_err(|e| format!("--rows: {e}"))?,
            "--out" => a.out = v,
            "--table" => a.table = v,
            "--schema" => a.schema = v,
            "--streams" => a.streams = v.parse().map_err(|e| format!("--streams: {e}"))?,
            "--batch" => a.batch = v.parse().map_err(|e| format!("--batch: {e}"))?,
            "--pre-sql" => a.pre_sql = v,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(a)
}

/// Resident memory now, in MiB (Linux), to show it stays flat.
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn write_csv(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(&args.out)?);
    let mut uuid_rng = fastrand::Rng::with_seed(SEED ^ 0xFFFF);
    for row in Rows::new(args.rows) {
        // The original design: random (v4) ids.
        let id = uuid::Builder::from_random_bytes(uuid_rng.u128(..).to_le_bytes()).into_uuid();
        let (path, method, _) = ENDPOINTS[row.endpoint];
        let user = row
            .user
            .map(|u| format!("user{u:04}@example.com"))
            .unwrap_or_default();
        writeln!(
            out,
            "{id},{},{path},{method},{},{},{user},{}",
            rfc3339_utc(row.timestamp),
            row.status,
            row.latency_ms,
            error_type(row.status).unwrap_or_default()
        )?;
    }
    out.flush()?;
    Ok(())
}

async fn per_row(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let (client, conn) = tokio_postgres::connect(&args.url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let stmt = client
        .prepare(&format!(
            "INSERT INTO {} (id, \"timestamp\", endpoint, method, status_code, response_time_ms, user_id, error_type) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            args.table
        ))
        .await?;
    let users: Vec<String> = (0..USERS)
        .map(|u| format!("user{u:04}@example.com"))
        .collect();
    let mut uuid_rng = fastrand::Rng::with_seed(SEED ^ 0xFFFF);
    let rows: Vec<Row> = Rows::new(args.rows).collect();
    let started = Instant::now();
    for row in &rows {
        let id = uuid::Builder::from_random_bytes(uuid_rng.u128(..).to_le_bytes()).into_uuid();
        let (path, method, _) = ENDPOINTS[row.endpoint];
        let status = i32::from(row.status);
        let user = row.user.map(|u| users[u].as_str());
        let err = error_type(row.status);
        // Autocommit: one transaction (and one WAL flush) per request, as the
        // original per-request write did.
        client
            .execute(
                &stmt,
                &[
                    &id,
                    &row.timestamp,
                    &path,
                    &method,
                    &status,
                    &row.latency_ms,
                    &user,
                    &err,
                ],
            )
            .await?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!("rows_per_s={:.0}", rows.len() as f64 / secs);
    Ok(())
}

async fn sink(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let pool = metrics_pg::create_pool(&args.url, args.streams + 1)?;
    {
        let mut client = pool.get().await?;
        metrics_pg::migrate(&mut client, &args.schema).await?;
        let end = time::OffsetDateTime::from_unix_timestamp(END_SECS as i64)?.date();
        let mut day = end - time::Duration::days(8);
        let mut days = Vec::new();
        while day <= end {
            days.push(day);
            day = day.next_day().ok_or("date overflow")?;
        }
        metrics_pg::create_partitions(&mut client, &args.schema, days).await?;
        // For index-layout experiments (docs/decisions.md): extra DDL to run
        // on the migrated, partitioned schema before the load.
        if !args.pre_sql.is_empty() {
            client.batch_execute(&args.pre_sql).await?;
        }
    }
    let sink = PgSink::builder(pool)
        .schema(args.schema.clone())
        .max_concurrent_copies(args.streams)
        .min_rows_per_copy(1_000)
        .build()?;
    let queue_capacity = 100_000;
    let handle = Collector::builder(sink)
        .queue_capacity(queue_capacity)
        .max_batch(args.batch)
        .linger(Duration::from_millis(200))
        .export_timeout(Duration::from_secs(60))
        .spawn()?;
    let users = users();
    let routes: Vec<(Route, Method)> = ENDPOINTS
        .iter()
        .map(|(p, m, _)| {
            (
                Route::from(Arc::<str>::from(*p)),
                Method::from_bytes(m.as_bytes()).unwrap_or(Method::GET),
            )
        })
        .collect();

    let rss_start = rss_mib();
    let mut rss_max = rss_start;
    let started = Instant::now();
    for (i, row) in Rows::new(args.rows).enumerate() {
        // An app does not outrun its metrics forever; keep the queue below
        // capacity (the bench measures throughput, not drops).
        if i % 1_000 == 0 {
            while handle.stats().pending > (queue_capacity - 2_000) as u64 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            if i % 100_000 == 0 {
                rss_max = rss_max.max(rss_mib());
            }
        }
        let (route, method) = &routes[row.endpoint];
        let mut r = RequestRecord::new(
            row.timestamp,
            route.clone(),
            method.clone(),
            row.status,
            Duration::ZERO,
        )
        .with_user(row.user.map(|u| users[u].clone()))
        .with_correlation_id(Some(CorrelationId::generate()));
        r.response_time_ms = row.latency_ms;
        handle.record(r);
    }
    handle.flush().await?;
    let secs = started.elapsed().as_secs_f64();
    rss_max = rss_max.max(rss_mib());
    let stats = handle.shutdown(Duration::from_secs(60)).await?;
    println!(
        "info pg_sink written={} dropped={} batches={} retries={} rss_start_mib={rss_start:.0} rss_max_mib={rss_max:.0}",
        stats.written,
        stats.dropped(),
        stats.batches,
        stats.retries
    );
    if stats.written != args.rows {
        return Err(format!("only {} of {} rows written", stats.written, args.rows).into());
    }
    println!("rows_per_s={:.0}", args.rows as f64 / secs);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    match args.mode.as_str() {
        "csv" => write_csv(&args),
        "per-row" => per_row(&args).await,
        "sink" => sink(&args).await,
        other => Err(format!("unknown mode {other}").into()),
    }
}
