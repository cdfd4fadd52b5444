//! Migrations: fresh, re-run, concurrent, down then up, checksum mismatch.

mod support;

use metrics_pg::{Error, Migrator};
use test_support::TestDb;
use test_support::tokio_postgres::Client;
use test_support::tokio_postgres::types::ToSql;

async fn tables(client: &Client, schema: &str) -> Vec<String> {
    client
        .query(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition \
             ORDER BY 1",
            &[&schema],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn recorded_versions(client: &Client, schema: &str) -> Vec<i32> {
    client
        .query(
            &format!("SELECT version FROM \"{schema}\"._migrations ORDER BY version"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn fresh_database_gets_every_table_and_bookkeeping() {
    let db = TestDb::new().await;
    let schema = format!("{}_m", db.name().chars().take(50).collect::<String>());
    let mut client = db.connect().await;
    let report = Migrator::new(&schema)
        .unwrap()
        .run(&mut client)
        .await
        .unwrap();
    let latest = Migrator::latest_version();
    assert_eq!(report.applied, (1..=latest).collect::<Vec<_>>());
    assert_eq!(report.current_version, latest);
    assert_eq!(
        tables(&client, &schema).await,
        [
            "_migrations",
            "aggregated_metrics",
            "aggregated_metrics_5min",
            "aggregated_metrics_daily",
            "performance_metrics",
            "rollup_days",
            "rollup_hours",
            "usage_events"
        ]
    );
    assert_eq!(recorded_versions(&client, &schema).await, report.applied);
    // Nothing leaked into public (search_path was only set locally).
    assert!(tables(&client, "public").await.is_empty());
}

#[tokio::test]
async fn rerun_is_a_no_op() {
    let (db, schema) = support::migrated_db().await;
    let mut client = db.connect().await;
    client
        .batch_execute(&format!(
            "INSERT INTO \"{schema}\".performance_metrics \
             VALUES (gen_random_uuid(), now(), '/a', 'GET', 200, 1.0, NULL, NULL, NULL)"
        ))
        .await
        .unwrap();
    let report = metrics_pg::migrate(&mut client, &schema).await.unwrap();
    assert!(report.applied.is_empty(), "{report:?}");
    assert_eq!(report.current_version, Migrator::latest_version());
    assert_eq!(
        support::count(&client, &schema, "performance_metrics").await,
        1
    );
}

#[tokio::test]
async fn concurrent_runs_both_succeed_and_one_does_the_work() {
    let db = TestDb::new().await;
    let schema = db.name().to_owned();
    let mut a = db.connect().await;
    let mut b = db.connect().await;
    let (ra, rb) = tokio::join!(
        metrics_pg::migrate(&mut a, &schema),
        metrics_pg::migrate(&mut b, &schema)
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    let latest = Migrator::latest_version();
    let mut all: Vec<i32> = ra.applied.iter().chain(&rb.applied).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (1..=latest).collect::<Vec<_>>(), "{ra:?} {rb:?}");
    assert!(
        ra.applied.is_empty() || rb.applied.is_empty(),
        "{ra:?} {rb:?}"
    );
    assert_eq!(ra.current_version, latest);
    assert_eq!(rb.current_version, latest);
    assert_eq!(
        recorded_versions(db.client(), &schema).await,
        (1..=latest).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn down_then_up() {
    let (db, schema) = support::migrated_db().await;
    let mut client = db.connect().await;
    let migrator = Migrator::new(&schema).unwrap();
    let latest = Migrator::latest_version();

    let down = migrator.down_to(&mut client, 1).await.unwrap();
    assert_eq!(down.reverted, ((2..=latest).rev()).collect::<Vec<_>>());
    assert_eq!(down.current_version, 1);
    assert_eq!(
        tables(&client, &schema).await,
        ["_migrations", "performance_metrics", "usage_events"]
    );

    let down = migrator.down_to(&mut client, 0).await.unwrap();
    assert_eq!(down.reverted, vec![1]);
    assert_eq!(down.current_version, 0);
    assert_eq!(tables(&client, &schema).await, ["_migrations"]);
    assert!(recorded_versions(&client, &schema).await.is_empty());

    let up = migrator.run(&mut client).await.unwrap();
    assert_eq!(up.applied, (1..=latest).collect::<Vec<_>>());
    assert_eq!(tables(&client, &schema).await.len(), 8);
}

#[tokio::test]
async fn edited_applied_migration_is_an_error_and_nothing_runs() {
    let (db, schema) = support::migrated_db().await;
    let mut client = db.connect().await;
    // What an edit of 0001's SQL after it ran looks like to the migrator: the
    // recorded checksum no longer matches the embedded one.
    client
        .batch_execute(&format!(
            "UPDATE \"{schema}\"._migrations SET checksum = repeat('0', 64) WHERE version = 1; \
             DELETE FROM \"{schema}\"._migrations WHERE version = 2; \
             DROP TABLE \"{schema}\".aggregated_metrics;"
        ))
        .await
        .unwrap();
    let err = metrics_pg::migrate(&mut client, &schema).await.unwrap_err();
    match &err {
        Error::ChecksumMismatch {
            version,
            recorded,
            embedded,
            ..
        } => {
            assert_eq!(*version, 1);
            assert_eq!(recorded, &"0".repeat(64));
            assert_ne!(recorded, embedded);
        }
        other => panic!("expected ChecksumMismatch, got {other:?}"),
    }
    assert!(!err.is_retryable());
    // Migration 2 was pending but must not have run.
    assert!(
        !tables(&client, &schema)
            .await
            .contains(&"aggregated_metrics".to_owned())
    );
}

#[tokio::test]
async fn schema_migrated_by_a_newer_version_is_refused() {
    let (db, schema) = support::migrated_db().await;
    let mut client = db.connect().await;
    client
        .batch_execute(&format!(
            "INSERT INTO \"{schema}\"._migrations (version, name, checksum, execution_ms) \
             VALUES (9999, 'future', 'x', 0)"
        ))
        .await
        .unwrap();
    let err = metrics_pg::migrate(&mut client, &schema).await.unwrap_err();
    assert!(
        matches!(err, Error::UnknownMigration { version: 9999, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn invalid_schema_name_is_refused_before_touching_the_database() {
    let db = TestDb::new().await;
    let mut client = db.connect().await;
    let err = metrics_pg::migrate(&mut client, "bad; DROP TABLE x")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidSchemaName(_)), "{err:?}");
}

#[tokio::test]
async fn check_constraints_hold_in_the_database() {
    let (db, schema) = support::migrated_db().await;
    let client = db.client();
    let insert = |status: i32, ms: f64| {
        let sql = format!(
            "INSERT INTO \"{schema}\".performance_metrics \
             VALUES (gen_random_uuid(), now(), '/a', 'GET', $1, $2, NULL, NULL, NULL)"
        );
        async move {
            let params: [&(dyn ToSql + Sync); 2] = [&status, &ms];
            client.execute(&sql, &params).await
        }
    };
    assert!(insert(200, 0.0).await.is_ok());
    for (status, ms) in [
        (99, 1.0),
        (600, 1.0),
        (200, -1.0),
        (200, f64::NAN),
        (200, f64::INFINITY),
    ] {
        let err = insert(status, ms).await.unwrap_err();
        assert_eq!(
            err.code().unwrap().code(),
            "23514",
            "status {status} ms {ms}"
        );
    }
    let err = client
        .execute(
            &format!(
                "INSERT INTO \"{schema}\".aggregated_metrics (time_bucket, metric_type, event_type) \
                 VALUES (date_trunc('hour', now()), 'other', 'x')"
            ),
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "23514");
}

#[tokio::test]
async fn aggregated_bucket_key_treats_nulls_as_equal() {
    let (db, schema) = support::migrated_db().await;
    let client = db.client();
    let usage = format!(
        "INSERT INTO \"{schema}\".aggregated_metrics (time_bucket, metric_type, event_type) \
         VALUES ('2025-01-01 10:00:00+00', 'usage', 'page_view')"
    );
    client.execute(&usage, &[]).await.unwrap();
    // endpoint_path and method are NULL in both rows: still a duplicate.
    let err = client.execute(&usage, &[]).await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "23505");
    let perf = format!(
        "INSERT INTO \"{schema}\".aggregated_metrics (time_bucket, metric_type, endpoint_path, method) \
         VALUES ('2025-01-01 10:00:00+00', 'performance', '/a', 'GET')"
    );
    client.execute(&perf, &[]).await.unwrap();
    let err = client.execute(&perf, &[]).await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "23505");
}
