//! Exactly once when the outcome of a COMMIT is not known (issue 13,
//! Deliver 1): a lost acknowledgement, a COMMIT that never arrived, a write
//! dropped mid-COMMIT, the write deadline, a backend killed mid-COPY. Each
//! test runs against a real PostgreSQL, through a proxy that loses COMMITs
//! on purpose, and checks that the retried batch is stored once: as many
//! rows as records, every correlation id once.

mod support;

use std::time::Duration;

use metrics_core::{Batch, CorrelationId, MetricsSink, WriteAttempt, WriteSummary};
use metrics_pg::{Error, PgSink};
use support::proxy::{Cut, Proxy};
use support::{at, count, event, first, migrated_db, req};
use test_support::TestDb;

const T0: u64 = 1_741_478_400;
const ROWS: usize = 1_000;

/// 1,000 requests (two chunks of 500) with unique correlation ids, and one
/// usage event.
fn batch() -> Batch {
    let requests = (0..ROWS as u64)
        .map(|i| {
            req(at(T0) + Duration::from_millis(i), "/eo", 200, i as f64)
                .with_correlation_id(Some(CorrelationId::generate()))
        })
        .collect();
    Batch::from_parts(requests, vec![event(at(T0), "click", "u")])
}

fn sink(url: &str, schema: &str) -> PgSink {
    PgSink::builder(metrics_pg::create_pool(url, 3).unwrap())
        .schema(schema)
        .max_concurrent_copies(2)
        .min_rows_per_copy(500)
        .acquire_timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Retries `attempt` (as the collector would, same id) until it succeeds;
/// every failure on the way must be retryable.
async fn write_until_done(sink: &PgSink, batch: &Batch, mut attempt: WriteAttempt) -> WriteSummary {
    for _ in 0..50 {
        match sink.write(batch, attempt).await {
            Ok(summary) => return summary,
            Err(e) => {
                assert!(e.is_retryable(), "{e:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                attempt = attempt.retry();
            }
        }
    }
    panic!("the batch was not written after 50 attempts");
}

/// Rows stored, and distinct correlation ids among them.
async fn stored(db: &TestDb, schema: &str) -> (i64, i64) {
    let row = db
        .client()
        .query_one(
            &format!(
                "SELECT count(*), count(DISTINCT correlation_id) FROM \"{schema}\".performance_metrics"
            ),
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

async fn assert_stored_once(db: &TestDb, schema: &str) {
    assert_eq!(stored(db, schema).await, (ROWS as i64, ROWS as i64));
    assert_eq!(count(db.client(), schema, "usage_events").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_commit_acknowledgement_does_not_duplicate_the_chunk() {
    let (db, schema) = migrated_db().await;
    let proxy = Proxy::start(&db).await;
    let sink = sink(&proxy.url(&db), &schema);
    let batch = batch();
    // The server commits the first chunk to finish; its answer never arrives.
    proxy.arm(Cut::AfterCommit);
    let summary = write_until_done(&sink, &batch, first()).await;
    assert_eq!(proxy.cuts(), [Cut::AfterCommit], "the proxy cut a COMMIT");
    assert_eq!(summary, WriteSummary::all_written());
    assert_stored_once(&db, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_never_reached_the_server_is_written_once_by_the_retry() {
    let (db, schema) = migrated_db().await;
    let proxy = Proxy::start(&db).await;
    let sink = sink(&proxy.url(&db), &schema);
    let batch = batch();
    proxy.arm(Cut::BeforeCommit);
    let summary = write_until_done(&sink, &batch, first()).await;
    assert_eq!(proxy.cuts(), [Cut::BeforeCommit]);
    assert_eq!(summary, WriteSummary::all_written());
    assert_stored_once(&db, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_dropped_during_its_commit_is_completed_once_by_the_retry() {
    // The collector's export timeout drops the write's future wherever it
    // is; here, while its COMMIT is committed but unanswered.
    let (db, schema) = migrated_db().await;
    let proxy = Proxy::start(&db).await;
    let sink = sink(&proxy.url(&db), &schema);
    let batch = batch();
    let attempt = first();
    proxy.arm(Cut::Stall);
    tokio::select! {
        r = sink.write(&batch, attempt) => panic!("the stalled write finished: {r:?}"),
        () = proxy.cut_done() => {}
    }
    // The stalled chunk is committed; the other one may or may not be.
    let (rows, _) = stored(&db, &schema).await;
    assert!(rows >= 500, "{rows}");
    let summary = write_until_done(&sink, &batch, attempt.retry()).await;
    assert_eq!(summary, WriteSummary::all_written());
    assert_stored_once(&db, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_past_its_deadline_fails_retryably_and_the_retry_completes_it() {
    let (db, schema) = migrated_db().await;
    let proxy = Proxy::start(&db).await;
    let deadline = Duration::from_secs(2);
    let sink = PgSink::builder(metrics_pg::create_pool(&proxy.url(&db), 3).unwrap())
        .schema(&schema)
        .min_rows_per_copy(500)
        .write_deadline(deadline)
        .build()
        .unwrap();
    assert_eq!(
        sink.max_write_duration(),
        Some(deadline + Duration::from_secs(1)),
        "the bound the collector keeps its export timeout above"
    );
    let batch = batch();
    let attempt = first();
    proxy.arm(Cut::Stall);
    let err = sink.write_batch(&batch, attempt).await.unwrap_err();
    assert!(
        matches!(err, Error::WriteDeadline(d) if d == deadline),
        "{err:?}"
    );
    assert!(err.is_retryable() && err.is_timeout());
    assert_eq!(proxy.cuts(), [Cut::Stall]);
    let summary = write_until_done(&sink, &batch, attempt.retry()).await;
    assert_eq!(summary, WriteSummary::all_written());
    assert_stored_once(&db, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_terminated_mid_copy_is_written_once_by_the_retry() {
    let (db, schema) = migrated_db().await;
    // Rows of '/slow' sleep in a trigger while the switch is on, so the
    // test can find the COPY running and kill its backend.
    db.client()
        .batch_execute(&format!(
            "CREATE TABLE \"{schema}\".switch (on_ boolean NOT NULL);
             INSERT INTO \"{schema}\".switch VALUES (true);
             CREATE FUNCTION \"{schema}\".slow() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               IF NEW.endpoint = '/slow' AND (SELECT on_ FROM \"{schema}\".switch) THEN
                 PERFORM pg_sleep(60);
               END IF;
               RETURN NEW;
             END $$;
             CREATE TRIGGER slow BEFORE INSERT ON \"{schema}\".performance_metrics
               FOR EACH ROW EXECUTE FUNCTION \"{schema}\".slow();"
        ))
        .await
        .unwrap();
    let sink = sink(db.url(), &schema);
    let mut requests = batch().requests().to_vec();
    requests[700].route = metrics_core::Route::from_static("/slow");
    let batch = Batch::from_parts(requests, vec![event(at(T0), "click", "u")]);
    let attempt = first();
    let write = sink.write(&batch, attempt);
    let kill = async {
        let client = db.connect().await;
        loop {
            let killed: i64 = client
                .query_one(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                     WHERE datname = current_database() AND wait_event = 'PgSleep' \
                       AND pid <> pg_backend_pid()",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if killed > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let (result, ()) = tokio::join!(write, kill);
    let err = result.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    db.client()
        .batch_execute(&format!("UPDATE \"{schema}\".switch SET on_ = false"))
        .await
        .unwrap();
    let summary = write_until_done(&sink, &batch, attempt.retry()).await;
    assert_eq!(summary, WriteSummary::all_written());
    assert_stored_once(&db, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_doubt_commit_across_a_server_restart_is_confirmed_by_its_rows() {
    // After a restart a transaction id may be handed out again, so the
    // sink does not trust `committed` alone: it looks for the chunk's first
    // row by the id it was written with. The stalled chunk committed before
    // the restart; the retry must find it and not write it again.
    let server = test_support::TestServer::dedicated().await;
    let db = server.create_db().await;
    let schema = db.name().to_owned();
    metrics_pg::migrate(&mut db.connect().await, &schema)
        .await
        .unwrap();
    let proxy = Proxy::start(&db).await;
    let sink = sink(&proxy.url(&db), &schema);
    let batch = batch();
    let attempt = first();
    proxy.arm(Cut::Stall);
    tokio::select! {
        r = sink.write(&batch, attempt) => panic!("the stalled write finished: {r:?}"),
        () = proxy.cut_done() => {}
    }
    server.stop().await;
    server.start().await;
    let summary = write_until_done(&sink, &batch, attempt.retry()).await;
    assert_eq!(summary, WriteSummary::all_written());
    let client = db.connect().await;
    let row = client
        .query_one(
            &format!(
                "SELECT count(*), count(DISTINCT correlation_id) FROM \"{schema}\".performance_metrics"
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, i64>(0), row.get::<_, i64>(1)),
        (ROWS as i64, ROWS as i64)
    );
    assert_eq!(count(&client, &schema, "usage_events").await, 1);
}
