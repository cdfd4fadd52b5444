//! Refused rows are isolated and counted; failures are classified; a partly
//! written batch is completed, not duplicated, by its retry (recognised by
//! its batch id).

mod support;

use std::time::Duration;

use metrics_core::{Batch, MetricsSink, SinkError, WriteSummary};
use metrics_pg::{Error, PgSink};
use support::{at, count, event, first, migrated_db, pool, req};

const T0: u64 = 1_741_478_400;

fn thousand_with(bad_index: usize, bad: metrics_core::RequestRecord) -> Batch {
    let mut requests: Vec<_> = (0..1_000u64)
        .map(|i| req(at(T0) + Duration::from_millis(i), "/ok", 200, 1.0))
        .collect();
    requests[bad_index] = bad;
    Batch::from_parts(requests, vec![])
}

#[tokio::test]
async fn row_breaking_a_known_check_is_rejected_without_losing_the_others() {
    let (db, schema) = migrated_db().await;
    let sink = PgSink::builder(pool(&db, 2))
        .schema(&schema)
        .build()
        .unwrap();
    let batch = thousand_with(417, req(at(T0), "/bad", 600, 1.0));
    assert_eq!(
        sink.write(&batch, first()).await.unwrap(),
        WriteSummary::with_rejected(1)
    );
    assert_eq!(
        count(db.client(), &schema, "performance_metrics").await,
        999
    );
}

#[tokio::test]
async fn row_refused_by_the_server_is_isolated_by_bisection() {
    let (db, schema) = migrated_db().await;
    // A constraint the sink knows nothing about: only the server can refuse
    // the row, so the sink has to find it by splitting the batch.
    db.client()
        .batch_execute(&format!(
            "ALTER TABLE \"{schema}\".performance_metrics \
             ADD CONSTRAINT no_poison CHECK (endpoint <> '/poison')"
        ))
        .await
        .unwrap();
    let sink = PgSink::builder(pool(&db, 2))
        .schema(&schema)
        .build()
        .unwrap();
    let batch = thousand_with(733, req(at(T0), "/poison", 200, 1.0));
    assert_eq!(
        sink.write(&batch, first()).await.unwrap(),
        WriteSummary::with_rejected(1)
    );
    let client = db.client();
    assert_eq!(count(client, &schema, "performance_metrics").await, 999);
    let poison: i64 = client
        .query_one(
            &format!(
                "SELECT count(*) FROM \"{schema}\".performance_metrics WHERE endpoint = '/poison'"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(poison, 0);
}

#[tokio::test]
async fn usage_event_the_server_refuses_is_isolated() {
    let (db, schema) = migrated_db().await;
    let sink = PgSink::builder(pool(&db, 1))
        .schema(&schema)
        .build()
        .unwrap();
    let mut events: Vec<_> = (0..20).map(|_| event(at(T0), "click", "u")).collect();
    // PostgreSQL text cannot hold NUL: a data exception (class 22).
    events[5] = event(at(T0), "click", "u").with_page_name(Some("a\0b".into()));
    let batch = Batch::from_parts(vec![req(at(T0), "/a", 200, 1.0)], events);
    assert_eq!(
        sink.write(&batch, first()).await.unwrap(),
        WriteSummary::with_rejected(1)
    );
    assert_eq!(count(db.client(), &schema, "usage_events").await, 19);
    assert_eq!(count(db.client(), &schema, "performance_metrics").await, 1);
}

#[tokio::test]
async fn missing_tables_are_rejected_not_retried() {
    let db = test_support::TestDb::new().await;
    let sink = PgSink::builder(pool(&db, 1))
        .schema("not_migrated")
        .build()
        .unwrap();
    let batch = Batch::from_parts(vec![req(at(T0), "/a", 200, 1.0)], vec![]);
    let err = sink.write_batch(&batch, first()).await.unwrap_err();
    // 3F000 invalid_schema_name (or 42P01 undefined_table had the schema existed).
    assert_eq!(err.code().map(|c| c.code()), Some("3F000"), "{err}");
    assert!(err.to_string().contains("not_migrated"), "{err}");
    assert!(!err.is_retryable());
    let second = sink.write(&batch, first()).await;
    assert!(matches!(second, Err(SinkError::Rejected(_))), "{second:?}");
}

#[tokio::test]
async fn unreachable_server_is_retryable() {
    // Nothing listens on port 1.
    let pool =
        metrics_pg::create_pool("postgres://postgres@127.0.0.1:1/x?connect_timeout=2", 1).unwrap();
    let sink = PgSink::builder(pool)
        .acquire_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let batch = Batch::from_parts(vec![req(at(T0), "/a", 200, 1.0)], vec![]);
    let err = sink.write_batch(&batch, first()).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(matches!(
        sink.write(&batch, first()).await,
        Err(SinkError::Unavailable(_))
    ));
}

#[tokio::test]
async fn exhausted_pool_times_out_retryably() {
    let (db, schema) = migrated_db().await;
    let pool = pool(&db, 1);
    let sink = PgSink::builder(pool.clone())
        .schema(&schema)
        .acquire_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let held = pool.get().await.unwrap();
    let batch = Batch::from_parts(vec![req(at(T0), "/a", 200, 1.0)], vec![]);
    let err = sink.write_batch(&batch, first()).await.unwrap_err();
    assert!(matches!(err, Error::PoolTimeout(_)), "{err:?}");
    assert!(err.is_retryable());
    drop(held);
    assert_eq!(
        sink.write(&batch, first()).await.unwrap(),
        WriteSummary::all_written()
    );
}

#[tokio::test]
async fn invalid_settings_are_refused_by_build() {
    let db = test_support::TestDb::new().await;
    let p = pool(&db, 1);
    for builder in [
        PgSink::builder(p.clone()).max_concurrent_copies(0),
        PgSink::builder(p.clone()).min_rows_per_copy(0),
        PgSink::builder(p.clone()).acquire_timeout(Duration::ZERO),
        PgSink::builder(p.clone()).statement_timeout(Duration::ZERO),
    ] {
        assert!(matches!(builder.build(), Err(Error::InvalidSetting { .. })));
    }
    assert!(matches!(
        PgSink::builder(p).schema("Nope").build(),
        Err(Error::InvalidSchemaName(_))
    ));
}

/// Makes inserts of rows with endpoint '/flaky' fail with `code` while the
/// switch table says so.
async fn install_flaky_trigger(
    client: &test_support::tokio_postgres::Client,
    schema: &str,
    code: &str,
) {
    client
        .batch_execute(&format!(
            "CREATE TABLE \"{schema}\".switch (on_ boolean NOT NULL);
             INSERT INTO \"{schema}\".switch VALUES (true);
             CREATE FUNCTION \"{schema}\".flaky() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               IF NEW.endpoint = '/flaky' AND (SELECT on_ FROM \"{schema}\".switch) THEN
                 RAISE EXCEPTION 'flaky' USING ERRCODE = '{code}';
               END IF;
               RETURN NEW;
             END $$;
             CREATE TRIGGER flaky BEFORE INSERT ON \"{schema}\".performance_metrics
               FOR EACH ROW EXECUTE FUNCTION \"{schema}\".flaky();"
        ))
        .await
        .unwrap();
}

fn two_chunk_batch() -> Batch {
    // 1,000 rows in two chunks of 500; the flaky row is in the second.
    let mut requests: Vec<_> = (0..1_000u64)
        .map(|i| req(at(T0) + Duration::from_millis(i), "/ok", 200, i as f64))
        .collect();
    requests[900] = req(at(T0), "/flaky", 200, 900.0);
    Batch::from_parts(requests, vec![event(at(T0), "click", "u")])
}

#[tokio::test]
async fn retry_of_a_partly_written_batch_writes_only_the_rest() {
    let (db, schema) = migrated_db().await;
    let client = db.client();
    // 40001 serialization_failure: retryable.
    install_flaky_trigger(client, &schema, "40001").await;
    let sink = PgSink::builder(pool(&db, 2))
        .schema(&schema)
        .max_concurrent_copies(2)
        .min_rows_per_copy(500)
        .build()
        .unwrap();
    let batch = two_chunk_batch();
    let attempt = first();

    let err = sink.write(&batch, attempt).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    // The first chunk (and the usage events) are committed, the second not.
    assert_eq!(count(client, &schema, "performance_metrics").await, 500);

    // Still failing: the retry fails again without re-writing chunk one.
    let err = sink.write(&batch, attempt.retry()).await.unwrap_err();
    assert!(err.is_retryable());
    client
        .batch_execute(&format!("UPDATE \"{schema}\".switch SET on_ = false"))
        .await
        .unwrap();
    assert_eq!(
        sink.write(&batch, attempt.retry().retry()).await.unwrap(),
        WriteSummary::all_written()
    );
    // Exactly once, although three attempts were needed.
    assert_eq!(count(client, &schema, "performance_metrics").await, 1_000);
    assert_eq!(count(client, &schema, "usage_events").await, 1);
}

#[tokio::test]
async fn progress_of_an_abandoned_batch_is_not_applied_to_the_next() {
    let (db, schema) = migrated_db().await;
    let client = db.client();
    install_flaky_trigger(client, &schema, "40001").await;
    let sink = PgSink::builder(pool(&db, 2))
        .schema(&schema)
        .min_rows_per_copy(500)
        .build()
        .unwrap();
    assert!(sink.write(&two_chunk_batch(), first()).await.is_err());
    let written_by_the_failed_attempt = count(client, &schema, "performance_metrics").await;
    assert_eq!(written_by_the_failed_attempt, 500);
    // The collector gave up on that batch; the next one has the same shape
    // (1,000 requests + 1 event) but other content, and must be written whole.
    let next: Vec<_> = (0..1_000u64)
        .map(|i| req(at(T0 + 60) + Duration::from_millis(i), "/next", 201, 1.0))
        .collect();
    let next = Batch::from_parts(next, vec![event(at(T0), "view", "v")]);
    assert_eq!(
        sink.write(&next, first()).await.unwrap(),
        WriteSummary::all_written()
    );
    let next_rows: i64 = client
        .query_one(
            &format!(
                "SELECT count(*) FROM \"{schema}\".performance_metrics WHERE endpoint = '/next'"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(next_rows, 1_000);
}

#[tokio::test]
async fn retry_of_a_partly_written_batch_is_recognised_after_an_interruption() {
    let (db, schema) = migrated_db().await;
    let client = db.client();
    install_flaky_trigger(client, &schema, "40001").await;
    let sink = PgSink::builder(pool(&db, 2))
        .schema(&schema)
        .min_rows_per_copy(500)
        .build()
        .unwrap();
    let batch = two_chunk_batch();
    let attempt = first();
    assert!(sink.write(&batch, attempt).await.is_err());
    assert_eq!(count(client, &schema, "performance_metrics").await, 500);
    client
        .batch_execute(&format!("UPDATE \"{schema}\".switch SET on_ = false"))
        .await
        .unwrap();
    // Same content, a different Batch value (as the collector would hold),
    // under the same batch id.
    let again = batch.clone();
    assert_eq!(
        sink.write(&again, attempt.retry()).await.unwrap(),
        WriteSummary::all_written()
    );
    // Exactly once: 1,000 distinct latencies, 1,000 rows.
    assert_eq!(count(client, &schema, "performance_metrics").await, 1_000);
}

#[tokio::test]
async fn a_new_batch_id_is_a_new_batch_even_with_the_same_content() {
    // The retry is recognised by its id, not by what the batch holds: a
    // batch written afresh (a new id) after the collector gave up on an
    // identical one is written whole, its first chunk included.
    let (db, schema) = migrated_db().await;
    let client = db.client();
    install_flaky_trigger(client, &schema, "40001").await;
    let sink = PgSink::builder(pool(&db, 2))
        .schema(&schema)
        .min_rows_per_copy(500)
        .build()
        .unwrap();
    // Requests only: whether the usage chunk starts before the failure stops
    // new chunks is a race, the two request chunks are not.
    let batch = Batch::from_parts(two_chunk_batch().requests().to_vec(), vec![]);
    assert!(sink.write(&batch, first()).await.is_err());
    assert_eq!(count(client, &schema, "performance_metrics").await, 500);
    client
        .batch_execute(&format!("UPDATE \"{schema}\".switch SET on_ = false"))
        .await
        .unwrap();
    assert_eq!(
        sink.write(&batch, first()).await.unwrap(),
        WriteSummary::all_written()
    );
    assert_eq!(count(client, &schema, "performance_metrics").await, 1_500);
}

#[tokio::test]
async fn permanent_failure_after_a_partial_write_counts_only_the_unwritten_rows() {
    let (db, schema) = migrated_db().await;
    let client = db.client();
    // 42501 insufficient_privilege: neither retryable nor a data error.
    install_flaky_trigger(client, &schema, "42501").await;
    let sink = PgSink::builder(pool(&db, 2))
        .schema(&schema)
        .min_rows_per_copy(500)
        .build()
        .unwrap();
    // Requests only: both chunks are in flight together, and the first one
    // is always allowed to finish, so the outcome does not depend on timing.
    let batch = Batch::from_parts(two_chunk_batch().requests().to_vec(), vec![]);
    let summary = sink.write(&batch, first()).await.unwrap();
    assert_eq!(summary, WriteSummary::with_rejected(500));
    assert_eq!(count(client, &schema, "performance_metrics").await, 500);
    // Had nothing been committed, the batch would fail as a whole.
    let only_bad = Batch::from_parts(vec![req(at(T0), "/flaky", 200, 1.0)], vec![]);
    assert!(matches!(
        sink.write(&only_bad, first()).await,
        Err(SinkError::Rejected(_))
    ));
}
