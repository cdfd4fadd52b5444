//! The jobs' advisory lock on a real PostgreSQL: N instances run each job
//! once, so a run while another session holds the job's lock is `skipped` and
//! writes nothing (library API and CLI); a rollup cancelled at any point
//! leaves whole hours only, releases its lock, and the next run finishes with
//! the same rows as an uninterrupted run.

mod job_support;

use std::future::Future;
use std::pin::pin;
use std::task::Poll;

use job_support::{
    DAY0, H10, HOUR, Req, cli, day, insert_requests, migrated_db, pool, req, rollup_dump,
    rollup_job, t, text,
};
use metrics_pg::{Clock, RetentionJob};
use test_support::tokio_postgres::Client;

/// The first keys of the jobs' advisory locks ("amRU" and "amRT", documented
/// in metrics-pg/src/job.rs; the second key is `hashtext(schema)`). Hard-coded
/// here because they are crate-private: if they change, these tests fail
/// loudly rather than pass vacuously (the "skipped" assertions would fail).
const ROLLUP_LOCK: i32 = 0x616D_5255;
const RETENTION_LOCK: i32 = 0x616D_5254;

async fn lock(client: &Client, class: i32, schema: &str) {
    client
        .execute(
            "SELECT pg_advisory_lock($1, hashtext($2))",
            &[&class, &schema],
        )
        .await
        .unwrap();
}

async fn unlock(client: &Client, class: i32, schema: &str) {
    let released: bool = client
        .query_one(
            "SELECT pg_advisory_unlock($1, hashtext($2))",
            &[&class, &schema],
        )
        .await
        .unwrap()
        .get(0);
    assert!(released, "the test held the lock");
}

fn hourly_rows(hours: u64) -> Vec<Req> {
    (0..hours * 40)
        .map(|i| {
            req(
                t(H10 + (i % hours) * HOUR + i),
                // Every hour gets both endpoints.
                if (i / hours) % 3 == 0 {
                    "/a"
                } else {
                    "/b/{id}"
                },
                if i % 7 == 0 { 500 } else { 200 },
                (i % 113) as f64 + 0.5,
            )
        })
        .collect()
}

// ===== N instances: the advisory lock =====

#[tokio::test]
async fn a_rollup_while_another_instance_holds_the_lock_is_skipped_and_writes_nothing() {
    let (db, schema) = migrated_db().await;
    let client = db.connect().await;
    insert_requests(&client, &schema, &hourly_rows(2)).await;
    let other_instance = db.connect().await;
    lock(&other_instance, ROLLUP_LOCK, &schema).await;

    let report = rollup_job(&db, &schema, H10 + 3 * HOUR)
        .run_once()
        .await
        .unwrap();
    assert!(report.skipped, "{report:?}");
    assert_eq!((report.hours_rolled, report.rollup_rows_written), (0, 0));
    assert!(
        report.to_string().starts_with("rollup: skipped"),
        "{report}"
    );
    assert!(rollup_dump(&client, &schema).await.is_empty());

    // The CLI, as a cron job beside the app, skips too and still exits 0.
    let out = cli(&["rollup", "--database-url", db.url(), "--schema", &schema]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("rollup: skipped"),
        "{}",
        text(&out.stdout)
    );
    assert!(rollup_dump(&client, &schema).await.is_empty());

    unlock(&other_instance, ROLLUP_LOCK, &schema).await;
    let report = rollup_job(&db, &schema, H10 + 3 * HOUR)
        .run_once()
        .await
        .unwrap();
    assert!(!report.skipped);
    assert_eq!(report.hours_rolled, 2, "{report:?}");
}

#[tokio::test]
async fn retention_while_another_instance_holds_its_lock_is_skipped_and_drops_nothing() {
    let (db, schema) = migrated_db().await;
    let mut client = db.connect().await;
    metrics_pg::create_partitions(&mut client, &schema, (0..=1).map(day))
        .await
        .unwrap();
    insert_requests(&client, &schema, &[req(t(DAY0 + 5), "/old", 200, 1.0)]).await;
    assert_eq!(day_partitions(&client, &schema).await, 2);

    let other_instance = db.connect().await;
    lock(&other_instance, RETENTION_LOCK, &schema).await;
    let job = RetentionJob::new(pool(&db), &schema)
        .unwrap()
        .clock(Clock::fixed(t(DAY0 + 30 * 86_400)));
    let report = job.run_once().await.unwrap();
    assert!(report.skipped, "{report:?}");
    assert!(report.partitions_dropped.is_empty());
    assert_eq!(day_partitions(&client, &schema).await, 2);
    assert!(rollup_dump(&client, &schema).await.is_empty());

    unlock(&other_instance, RETENTION_LOCK, &schema).await;
    let report = job.run_once().await.unwrap();
    assert!(!report.skipped);
    assert_eq!(report.partitions_dropped.len(), 4, "{report:?}");
    assert_eq!(day_partitions(&client, &schema).await, 0);
    assert!(
        !rollup_dump(&client, &schema).await.is_empty(),
        "rolled first"
    );
}

/// How many of the two day partitions of days 0 and 1 (2026-01-01 and -02)
/// of `performance_metrics` exist.
async fn day_partitions(client: &Client, schema: &str) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 \
               AND c.relname IN ('performance_metrics_p20260101', 'performance_metrics_p20260102')",
            &[&schema],
        )
        .await
        .unwrap()
        .get(0)
}

// ===== a run interrupted half way =====

/// Polls `fut` until it has returned `Pending` `polls` times, then drops it
/// (as a scheduler stop or a killed task would); `Some` if it finished first.
async fn cancel_after<F: Future>(fut: F, polls: usize) -> Option<F::Output> {
    let mut fut = pin!(fut);
    let mut pending = 0;
    std::future::poll_fn(|cx| match fut.as_mut().poll(cx) {
        Poll::Ready(v) => Poll::Ready(Some(v)),
        Poll::Pending => {
            pending += 1;
            if pending >= polls {
                Poll::Ready(None)
            } else {
                Poll::Pending
            }
        }
    })
    .await
}

/// Rows per hour in the dump (its lines start with the hour's epoch).
fn rows_per_hour(dump: &[String], hours: u64) -> Vec<usize> {
    (0..hours)
        .map(|h| {
            let prefix = format!("{} |", H10 + h * HOUR);
            dump.iter().filter(|l| l.starts_with(&prefix)).count()
        })
        .collect()
}

#[tokio::test]
async fn a_cancelled_rollup_leaves_whole_hours_releases_its_lock_and_the_next_run_finishes() {
    const HOURS: u64 = 6;
    let rows = hourly_rows(HOURS);
    let now = H10 + (HOURS + 1) * HOUR;

    // The reference: one uninterrupted run.
    let (ref_db, ref_schema) = migrated_db().await;
    let ref_client = ref_db.connect().await;
    insert_requests(&ref_client, &ref_schema, &rows).await;
    let full = rollup_job(&ref_db, &ref_schema, now)
        .run_once()
        .await
        .unwrap();
    assert_eq!(full.hours_rolled, HOURS);
    let reference = rollup_dump(&ref_client, &ref_schema).await;
    // Three rows per hour: /a, /b/{id} and the all-endpoints row.
    assert_eq!(rows_per_hour(&reference, HOURS), vec![3; HOURS as usize]);

    let mut cancelled_somewhere = false;
    for polls in [1, 2, 3, 5, 8, 13, 21, 34] {
        let (db, schema) = migrated_db().await;
        let client = db.connect().await;
        insert_requests(&client, &schema, &rows).await;
        let job = rollup_job(&db, &schema, now);
        let finished = cancel_after(job.run_once(), polls).await;
        cancelled_somewhere |= finished.is_none();

        // Whatever is visible is whole hours: 0 or 3 rows each.
        let dump = rollup_dump(&client, &schema).await;
        for (h, n) in rows_per_hour(&dump, HOURS).into_iter().enumerate() {
            assert!(n == 0 || n == 3, "polls {polls}: hour {h} has {n} rows");
        }

        // The lock went with the cancelled run's connection: taking it here
        // waits (server side, bounded by a statement timeout) until the
        // server has released it, and fails the test if it never is.
        let probe = db.connect().await;
        probe
            .batch_execute("SET statement_timeout = '30s'")
            .await
            .unwrap();
        lock(&probe, ROLLUP_LOCK, &schema).await;
        unlock(&probe, ROLLUP_LOCK, &schema).await;

        let next = job.run_once().await.unwrap();
        assert!(!next.skipped, "polls {polls}: {next:?}");
        assert_eq!(
            rollup_dump(&client, &schema).await,
            reference,
            "polls {polls}: the next run finishes the job"
        );
    }
    assert!(
        cancelled_somewhere,
        "no run was cancelled before it finished"
    );
}
