//! Partition maintenance: the window ahead, stray rows moved, nothing lost.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics_core::{Batch, MetricsSink, WriteSummary};
use metrics_pg::PgSink;
use support::{count, event, first, migrated_db, pool, req, today};
use test_support::tokio_postgres::Client;

async fn partitions(client: &Client, schema: &str, table: &str) -> Vec<String> {
    client
        .query(
            "SELECT c.relname FROM pg_inherits i \
             JOIN pg_class c ON c.oid = i.inhrelid \
             JOIN pg_class p ON p.oid = i.inhparent \
             JOIN pg_namespace n ON n.oid = p.relnamespace \
             WHERE n.nspname = $1 AND p.relname = $2 ORDER BY 1",
            &[&schema, &table],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn midnight_utc(day: time::Date) -> SystemTime {
    let secs = day.midnight().assume_utc().unix_timestamp();
    UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap())
}

fn pname(table: &str, day: time::Date) -> String {
    format!(
        "{table}_p{:04}{:02}{:02}",
        day.year(),
        u8::from(day.month()),
        day.day()
    )
}

#[tokio::test]
async fn maintenance_creates_the_window_and_is_idempotent() {
    let (db, schema) = migrated_db().await;
    let mut client = db.connect().await;
    let day = today();
    let report = metrics_pg::maintain_partitions(&mut client, &schema, day)
        .await
        .unwrap();
    assert_eq!(report.created.len(), 2 * 5, "{report:?}");
    assert_eq!(report.rows_moved, 0);
    for table in ["performance_metrics", "usage_events"] {
        let mut expected = vec![format!("{table}_default")];
        let mut d = day.previous_day().unwrap();
        for _ in 0..5 {
            expected.push(pname(table, d));
            d = d.next_day().unwrap();
        }
        expected.sort();
        assert_eq!(partitions(&client, &schema, table).await, expected);
    }
    // Partitions carry the parent's indexes: BRIN(timestamp),
    // (endpoint, timestamp) INCLUDE (method, status_code, response_time_ms)
    // and (endpoint, response_time_ms DESC).
    let indexes: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = $1 AND tablename = $2",
            &[&schema, &pname("performance_metrics", day)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(indexes, 3);

    let again = metrics_pg::maintain_partitions(&mut client, &schema, day)
        .await
        .unwrap();
    assert!(again.created.is_empty(), "{again:?}");
}

#[tokio::test]
async fn stray_rows_wait_in_the_default_partition_and_are_moved_without_loss() {
    let (db, schema) = migrated_db().await;
    let mut client = db.connect().await;
    let day = today();
    metrics_pg::maintain_partitions(&mut client, &schema, day)
        .await
        .unwrap();

    // Back-dated by ten days and two days past the window: no partition yet.
    let old = day.checked_sub(time::Duration::days(10)).unwrap();
    let future = day.checked_add(time::Duration::days(6)).unwrap();
    let mut requests = Vec::new();
    let mut usage = Vec::new();
    for (i, d) in [old, day, future].into_iter().enumerate() {
        for k in 0..100u64 {
            let ts = midnight_utc(d) + Duration::from_secs(k * 800);
            requests.push(req(ts, "/r", 200, (i as u64 * 1000 + k) as f64));
            usage.push(event(ts, "view", "u"));
        }
    }
    // One exactly at the end of the old day.
    requests.push(req(
        midnight_utc(old.next_day().unwrap()) - Duration::from_micros(1),
        "/edge",
        200,
        1.0,
    ));
    let sink = PgSink::builder(pool(&db, 2))
        .schema(&schema)
        .build()
        .unwrap();
    let batch = Batch::from_parts(requests, usage);
    assert_eq!(
        sink.write(&batch, first()).await.unwrap(),
        WriteSummary::all_written()
    );
    assert_eq!(
        count(&client, &schema, "performance_metrics_default").await,
        201
    );
    assert_eq!(count(&client, &schema, "usage_events_default").await, 200);

    let report = metrics_pg::maintain_partitions(&mut client, &schema, day)
        .await
        .unwrap();
    assert_eq!(report.rows_moved, 201 + 200, "{report:?}");
    for table in ["performance_metrics", "usage_events"] {
        assert!(report.created.contains(&pname(table, old)), "{report:?}");
        assert!(report.created.contains(&pname(table, future)), "{report:?}");
        assert_eq!(
            count(&client, &schema, &format!("{table}_default")).await,
            0
        );
    }
    assert_eq!(count(&client, &schema, "performance_metrics").await, 301);
    assert_eq!(count(&client, &schema, "usage_events").await, 300);
    assert_eq!(
        count(&client, &schema, &pname("performance_metrics", old)).await,
        101
    );
    assert_eq!(
        count(&client, &schema, &pname("performance_metrics", future)).await,
        100
    );
    // Every latency is still there exactly once.
    let distinct: i64 = client
        .query_one(
            &format!("SELECT count(DISTINCT response_time_ms) FROM \"{schema}\".performance_metrics WHERE endpoint = '/r'"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(distinct, 300);
    // Writes for the moved days now go straight to their partition.
    let later = Batch::from_parts(vec![req(midnight_utc(old), "/r2", 200, 1.0)], vec![]);
    sink.write(&later, first()).await.unwrap();
    assert_eq!(
        count(&client, &schema, "performance_metrics_default").await,
        0
    );
    assert_eq!(
        count(&client, &schema, &pname("performance_metrics", old)).await,
        102
    );
}

#[tokio::test]
async fn partitions_created_before_a_backfill_take_its_rows_directly() {
    let (db, schema) = migrated_db().await;
    let mut client = db.connect().await;
    let day = time::macros::date!(2024 - 02 - 29);
    let report = metrics_pg::create_partitions(&mut client, &schema, [day])
        .await
        .unwrap();
    assert_eq!(
        report.created,
        vec![
            pname("performance_metrics", day),
            pname("usage_events", day)
        ]
    );
    let sink = PgSink::builder(pool(&db, 1))
        .schema(&schema)
        .build()
        .unwrap();
    let ts = midnight_utc(day) + Duration::from_secs(3600);
    let batch = Batch::from_parts(vec![req(ts, "/b", 200, 1.0)], vec![event(ts, "view", "u")]);
    sink.write(&batch, first()).await.unwrap();
    assert_eq!(
        count(&client, &schema, &pname("performance_metrics", day)).await,
        1
    );
    assert_eq!(
        count(&client, &schema, &pname("usage_events", day)).await,
        1
    );
    assert_eq!(
        count(&client, &schema, "performance_metrics_default").await,
        0
    );
}

#[tokio::test]
async fn maintenance_while_writes_flow_loses_nothing() {
    let (db, schema) = migrated_db().await;
    let mut client = db.connect().await;
    let day = today();
    let sink = PgSink::builder(pool(&db, 2))
        .schema(&schema)
        .build()
        .unwrap();
    // Rows for the window days, written while maintenance creates the
    // window (they land in default first, then get moved, or go straight
    // to a partition once it exists).
    let writer = {
        let sink = sink.clone();
        tokio::spawn(async move {
            let mut written = 0u64;
            for round in 0..20u64 {
                let batch: Vec<_> = (0..200u64)
                    .map(|k| {
                        req(
                            midnight_utc(day) + Duration::from_secs(round * 200 + k),
                            "/w",
                            200,
                            1.0,
                        )
                    })
                    .collect();
                let batch = Batch::from_parts(batch, vec![]);
                sink.write(&batch, first()).await.unwrap();
                written += 200;
            }
            written
        })
    };
    let report = metrics_pg::maintain_partitions(&mut client, &schema, day)
        .await
        .unwrap();
    let written = writer.await.unwrap();
    assert_eq!(report.created.len(), 10);
    metrics_pg::maintain_partitions(&mut client, &schema, day)
        .await
        .unwrap();
    assert_eq!(
        count(&client, &schema, "performance_metrics").await,
        written as i64
    );
    assert_eq!(
        count(&client, &schema, "performance_metrics_default").await,
        0
    );
}
