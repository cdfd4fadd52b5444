//! Shared helpers of the metrics-pg integration tests.
#![allow(dead_code, unreachable_pub)]

pub mod proxy;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics_core::{BatchId, Method, RequestRecord, Route, UsageEvent, UserId, WriteAttempt};
use metrics_pg::deadpool_postgres::Pool;
use test_support::TestDb;
use test_support::tokio_postgres::Client;

/// The first attempt at a new batch, as the collector passes it.
pub fn first() -> WriteAttempt {
    WriteAttempt::first(BatchId::generate())
}

/// A fresh database, migrated, with its schema name (the test database's
/// unique name, so the tests also run isolated on a shared external server).
pub async fn migrated_db() -> (TestDb, String) {
    let db = TestDb::new().await;
    let schema = db.name().to_owned();
    let mut client = db.connect().await;
    metrics_pg::migrate(&mut client, &schema)
        .await
        .expect("migrations apply");
    (db, schema)
}

/// A pool on the test database.
pub fn pool(db: &TestDb, size: usize) -> Pool {
    metrics_pg::create_pool(db.url(), size).expect("pool")
}

/// A time `secs` seconds after the Unix epoch.
pub fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// A plain request record.
pub fn req(ts: SystemTime, route: &'static str, status: u16, ms: f64) -> RequestRecord {
    let mut r = RequestRecord::new(
        ts,
        Route::from_static(route),
        Method::GET,
        status,
        Duration::ZERO,
    );
    r.response_time_ms = ms;
    r
}

/// A plain usage event.
pub fn event(ts: SystemTime, kind: &str, user: &str) -> UsageEvent {
    UsageEvent::new(kind, UserId::new(user), ts).with_received_at(ts)
}

/// `SELECT count(*)` of a table of the schema.
pub async fn count(client: &Client, schema: &str, table: &str) -> i64 {
    client
        .query_one(
            &format!("SELECT count(*) FROM \"{schema}\".\"{table}\""),
            &[],
        )
        .await
        .expect("count")
        .get(0)
}

/// The current UTC date.
pub fn today() -> time::Date {
    time::OffsetDateTime::now_utc().date()
}
