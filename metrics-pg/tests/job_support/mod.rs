//! Shared helpers of the rollup, retention, job lock, governance and CLI
//! tests: raw rows inserted with plain SQL (exact control over timestamps), a
//! canonical dump of the rollup rows, a rollup job on a fixed clock, and the
//! `metrics-aggregate` binary run with its output.
#![allow(dead_code, unreachable_pub)]

#[cfg(feature = "cli")]
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics_pg::deadpool_postgres::Pool;
use metrics_pg::{Clock, RollupJob};
use test_support::TestDb;
use test_support::tokio_postgres::Client;

/// 2026-01-01 00:00:00 UTC.
pub const DAY0: u64 = 1_767_225_600;
pub const HOUR: u64 = 3_600;
pub const DAY: u64 = 86_400;
/// 10:00 UTC of DAY0.
pub const H10: u64 = DAY0 + 10 * HOUR;

/// A fresh migrated database; the schema is the database's unique name.
pub async fn migrated_db() -> (TestDb, String) {
    let db = TestDb::new().await;
    let schema = db.name().to_owned();
    let mut client = db.connect().await;
    metrics_pg::migrate(&mut client, &schema)
        .await
        .expect("migrations apply");
    (db, schema)
}

pub fn pool(db: &TestDb) -> Pool {
    metrics_pg::create_pool(db.url(), 4).expect("pool")
}

/// `secs` after the Unix epoch.
pub fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// The date of day `n` counted from DAY0.
pub fn day(n: u64) -> time::Date {
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(DAY0 + n * DAY).unwrap())
        .unwrap()
        .date()
}

/// The rollup job with its clock fixed at `now_secs`.
pub fn rollup_job(db: &TestDb, schema: &str, now_secs: u64) -> RollupJob {
    RollupJob::new(pool(db), schema)
        .unwrap()
        .clock(Clock::fixed(t(now_secs)))
}

/// One raw request row.
#[derive(Debug, Clone)]
pub struct Req {
    pub at: SystemTime,
    pub endpoint: &'static str,
    pub method: &'static str,
    pub status: i32,
    pub ms: f64,
    pub user: Option<String>,
}

pub fn req(at: SystemTime, endpoint: &'static str, status: i32, ms: f64) -> Req {
    Req {
        at,
        endpoint,
        method: "GET",
        status,
        ms,
        user: None,
    }
}

pub async fn insert_requests(client: &Client, schema: &str, rows: &[Req]) {
    let ats: Vec<SystemTime> = rows.iter().map(|r| r.at).collect();
    let endpoints: Vec<&str> = rows.iter().map(|r| r.endpoint).collect();
    let methods: Vec<&str> = rows.iter().map(|r| r.method).collect();
    let statuses: Vec<i32> = rows.iter().map(|r| r.status).collect();
    let ms: Vec<f64> = rows.iter().map(|r| r.ms).collect();
    let users: Vec<Option<&str>> = rows.iter().map(|r| r.user.as_deref()).collect();
    client
        .execute(
            &format!(
                "INSERT INTO \"{schema}\".performance_metrics \
                   (id, \"timestamp\", endpoint, method, status_code, response_time_ms, user_id) \
                 SELECT gen_random_uuid(), a, e, m, s, r, u \
                 FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::int[], $5::float8[], $6::text[]) \
                   AS x(a, e, m, s, r, u)"
            ),
            &[&ats, &endpoints, &methods, &statuses, &ms, &users],
        )
        .await
        .expect("insert requests");
}

/// One raw usage event.
pub async fn insert_event(
    client: &Client,
    schema: &str,
    at: SystemTime,
    event_type: &str,
    user: &str,
    page: Option<&str>,
    success: Option<bool>,
) {
    client
        .execute(
            &format!(
                "INSERT INTO \"{schema}\".usage_events \
                   (id, \"timestamp\", received_at, event_type, user_id, page_name, success) \
                 VALUES (gen_random_uuid(), $1, $1, $2, $3, $4, $5)"
            ),
            &[&at, &event_type, &user, &page, &success],
        )
        .await
        .expect("insert event");
}

/// Every rollup row as one canonical line (no ids or timestamps of writing).
pub async fn rollup_dump(client: &Client, schema: &str) -> Vec<String> {
    client
        .query(
            &format!(
                "SELECT concat_ws(' | ', extract(epoch FROM time_bucket)::bigint, metric_type, \
                        coalesce(endpoint_path, '-'), coalesce(method, '-'), coalesce(event_type, '-'), \
                        aggregated_values::text, sample_count, \
                        coalesce(encode(latency_sketch, 'hex'), '-'), encode(users_sketch, 'hex')) \
                 FROM \"{schema}\".aggregated_metrics \
                 ORDER BY time_bucket, metric_type, endpoint_path, method, event_type"
            ),
            &[],
        )
        .await
        .expect("dump rollups")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The `aggregated_values` and sketch of one performance rollup row.
pub async fn perf_row(
    client: &Client,
    schema: &str,
    hour: SystemTime,
    endpoint: &str,
    method: &str,
) -> Option<(serde_json::Value, i64, Vec<u8>)> {
    client
        .query_opt(
            &format!(
                "SELECT aggregated_values, sample_count, latency_sketch \
                 FROM \"{schema}\".aggregated_metrics \
                 WHERE time_bucket = $1 AND metric_type = 'performance' \
                   AND endpoint_path = $2 AND method = $3"
            ),
            &[&hour, &endpoint, &method],
        )
        .await
        .expect("read rollup row")
        .map(|r| (r.get(0), r.get(1), r.get(2)))
}

pub async fn count(client: &Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.expect(sql).get(0)
}

/// Runs `metrics-aggregate` with `args` (no DATABASE_URL from the
/// environment, warnings and errors logged) and waits for it.
#[cfg(feature = "cli")]
pub fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_metrics-aggregate"))
        .args(args)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run metrics-aggregate")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
