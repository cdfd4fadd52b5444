//! No job waits for ever (issue 13, F5): a job on an exhausted pool or
//! blocked behind a table lock fails with a typed timeout, the scheduler's
//! stop returns within its bound while a run is stuck, and each scheduled
//! run logs one line saying what it did (issue 13, Deliver 3).

mod job_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use job_support::{DAY0, H10, HOUR, insert_requests, migrated_db, pool, req, t};
use metrics_pg::{Clock, Error, RetentionJob, RollupJob, Scheduler, SchedulerConfig};
use test_support::TestDb;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// A rollup job on a fixed clock two hours after 10:00 of DAY0.
fn rollup(db: &TestDb, schema: &str, pool_size: usize) -> RollupJob {
    RollupJob::new(
        metrics_pg::create_pool(db.url(), pool_size).unwrap(),
        schema,
    )
    .unwrap()
    .clock(Clock::fixed(t(H10 + 2 * HOUR)))
}

/// Holds `LOCK TABLE .. IN ACCESS EXCLUSIVE MODE` on `table` in an open
/// transaction of its own connection until dropped.
async fn lock_table(
    db: &TestDb,
    schema: &str,
    table: &str,
) -> test_support::tokio_postgres::Client {
    let client = db.connect().await;
    client
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE \"{schema}\".{table} IN ACCESS EXCLUSIVE MODE"
        ))
        .await
        .unwrap();
    client
}

/// Advisory locks held in the database (the jobs' only kind).
async fn advisory_locks(db: &TestDb) -> i64 {
    db.client()
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// Waits (at most 30 s, a liveness bound, not a timing assertion) until
/// `cond` holds.
async fn eventually<F: std::future::Future<Output = bool>>(mut cond: impl FnMut() -> F) {
    for _ in 0..300 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("condition not reached within 30 s");
}

#[tokio::test]
async fn a_job_on_an_exhausted_pool_fails_with_a_pool_timeout() {
    let (db, schema) = migrated_db().await;
    let pool = metrics_pg::create_pool(db.url(), 1).unwrap();
    let job = RollupJob::new(pool.clone(), &schema)
        .unwrap()
        .acquire_timeout(Duration::from_millis(200));
    let held = pool.get().await.unwrap();
    let err = job.run_once().await.unwrap_err();
    assert!(
        matches!(err, Error::PoolTimeout(d) if d == Duration::from_millis(200)),
        "{err:?}"
    );
    assert!(err.is_timeout() && err.is_retryable());
    drop(held);
    assert!(!job.run_once().await.unwrap().skipped);
}

#[tokio::test]
async fn a_rollup_blocked_on_a_table_lock_fails_with_a_statement_timeout_and_releases_its_lock() {
    let (db, schema) = migrated_db().await;
    insert_requests(db.client(), &schema, &[req(t(H10 + 60), "/a", 200, 5.0)]).await;
    let job = rollup(&db, &schema, 2).statement_timeout(Duration::from_millis(300));
    let holder = lock_table(&db, &schema, "rollup_hours").await;
    let err = job.run_once().await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(err.code().map(|c| c.code()), Some("57014"), "{err}");
    // The failed run's session was closed: its advisory lock is gone.
    eventually(|| async { advisory_locks(&db).await == 0 }).await;
    drop(holder);
    let report = job.run_once().await.unwrap();
    assert!(!report.skipped);
    assert_eq!(report.raw_rows_rolled, 1);
}

#[tokio::test]
async fn retention_blocked_on_a_table_lock_fails_with_a_statement_timeout() {
    let (db, schema) = migrated_db().await;
    let job = RetentionJob::new(pool(&db), &schema)
        .unwrap()
        .clock(Clock::fixed(t(DAY0 + 30 * 86_400)))
        .statement_timeout(Duration::from_millis(300));
    let _holder = lock_table(&db, &schema, "aggregated_metrics").await;
    let err = job.run_once().await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
}

#[tokio::test]
async fn partition_maintenance_behind_a_held_default_partition_fails_with_a_lock_timeout() {
    let (db, schema) = migrated_db().await;
    let _holder = lock_table(&db, &schema, "performance_metrics_default").await;
    let mut client = db.connect().await;
    let err = metrics_pg::maintain_partitions(&mut client, &schema, job_support::day(400))
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(err.code().map(|c| c.code()), Some("55P03"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_returns_within_its_bound_while_a_run_is_blocked() {
    let (db, schema) = migrated_db().await;
    insert_requests(db.client(), &schema, &[req(t(H10 + 60), "/a", 200, 5.0)]).await;
    // A statement limit far beyond the test: only stop can end the run.
    let rollup = rollup(&db, &schema, 3).statement_timeout(Duration::from_secs(600));
    let retention = RetentionJob::new(pool(&db), &schema).unwrap();
    let holder = lock_table(&db, &schema, "rollup_hours").await;
    let scheduler = Scheduler::spawn_jobs(rollup, retention, &SchedulerConfig::default());
    // The first rollup starts at once and waits behind the table lock.
    eventually(|| async {
        let waiting: i64 = db
            .client()
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock' \
                   AND application_name = 'app-metrics'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        waiting > 0
    })
    .await;
    let stopped = tokio::time::timeout(
        Duration::from_secs(30),
        scheduler.stop_within(Duration::from_secs(5)),
    )
    .await
    .expect("stop_within returns");
    assert!(stopped, "the run was cancelled at its await");
    // Cancelling closed the run's session: the advisory lock is released
    // although the table lock is still held.
    eventually(|| async { advisory_locks(&db).await == 0 }).await;
    drop(holder);
}

// ===== the log line of each run =====

/// Every event's level, message and other fields (`name=value`).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<(Level, String)>>>);

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={value:?}", field.name()));
    }
}

impl<S: Subscriber> Layer<S> for Captured {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut f = Fields(String::new());
        event.record(&mut f);
        self.0
            .lock()
            .unwrap()
            .push((*event.metadata().level(), f.0));
    }
}

impl Captured {
    fn lines(&self, needle: &str) -> Vec<(Level, String)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, l)| l.contains(needle))
            .cloned()
            .collect()
    }
}

#[tokio::test]
async fn each_scheduled_run_logs_one_line_with_what_it_did_and_a_warning_when_it_fails() {
    let captured = Captured::default();
    // One thread (current-thread runtime): the thread-local default sees
    // the scheduler task's events.
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(captured.clone()));
    let (db, schema) = migrated_db().await;
    insert_requests(
        db.client(),
        &schema,
        &[
            req(t(H10 + 60), "/a", 200, 5.0),
            req(t(H10 + 120), "/b", 200, 7.0),
        ],
    )
    .await;
    let pool = metrics_pg::create_pool(db.url(), 3).unwrap();
    let rollup = RollupJob::new(pool.clone(), &schema)
        .unwrap()
        .clock(Clock::fixed(t(H10 + 2 * HOUR)))
        .acquire_timeout(Duration::from_millis(200));
    let retention = RetentionJob::new(pool.clone(), &schema).unwrap();
    let scheduler = Scheduler::spawn_jobs(rollup, retention, &SchedulerConfig::default());
    let mut reports = scheduler.reports();
    let report = reports
        .wait_for(Option::is_some)
        .await
        .unwrap()
        .clone()
        .unwrap();
    assert_eq!(report.raw_rows_rolled, 2);
    let ok: Vec<_> = captured
        .lines("message=metrics job run")
        .into_iter()
        .filter(|(_, l)| !l.contains("failed"))
        .collect();
    assert_eq!(ok.len(), 1, "{ok:?}");
    let (level, line) = &ok[0];
    assert_eq!(*level, Level::INFO);
    for field in [
        "job=\"rollup\"",
        "outcome=\"ok\"",
        "elapsed_ms=",
        "hours_rolled=1",
        "raw_rows_rolled=2",
    ] {
        assert!(line.contains(field), "{field} missing in {line}");
    }
    scheduler.stop().await;

    // A failing run: every connection taken, so the job times out waiting.
    let held: Vec<_> = futures_util::future::join_all((0..3).map(|_| pool.get()))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let rollup = RollupJob::new(pool.clone(), &schema)
        .unwrap()
        .acquire_timeout(Duration::from_millis(200));
    let retention = RetentionJob::new(pool.clone(), &schema).unwrap();
    let scheduler = Scheduler::spawn_jobs(rollup, retention, &SchedulerConfig::default());
    eventually(|| async { !captured.lines("metrics job run failed").is_empty() }).await;
    let failed = captured.lines("metrics job run failed");
    let (level, line) = &failed[0];
    assert_eq!(*level, Level::WARN);
    for field in ["job=\"rollup\"", "outcome=\"failed\"", "timeout=true"] {
        assert!(line.contains(field), "{field} missing in {line}");
    }
    assert!(scheduler.stop_within(Duration::from_secs(10)).await);
    drop(held);
}
