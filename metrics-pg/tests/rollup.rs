//! The rollup job on a real PostgreSQL: exact percentiles equal to
//! `percentile_cont`, idempotency (twice, concurrently), late rows re-rolled,
//! the grace period, usage rollups, and an interrupted run.

mod job_support;

use std::time::Duration;

use job_support::{
    DAY0, HOUR, Req, count, insert_event, insert_requests, migrated_db, perf_row, pool, req,
    rollup_dump, t,
};
use metrics_core::aggregate::LatencySketch;
use metrics_pg::{Clock, RollupJob};

const H10: u64 = DAY0 + 10 * HOUR;

fn job(db: &test_support::TestDb, schema: &str, now_secs: u64) -> RollupJob {
    RollupJob::new(pool(db), schema)
        .unwrap()
        .clock(Clock::fixed(t(now_secs)))
}

const KNOWN: [f64; 12] = [
    10.0, 20.0, 30.0, 40.0, 50.0, 100.0, 150.0, 200.0, 300.0, 500.0, 800.0, 1000.0,
];

#[tokio::test]
async fn known_small_data_gives_exactly_percentile_cont() {
    let (db, schema) = migrated_db().await;
    let client = db.connect().await;
    // Shuffled order and spread over the hour: the rollup must not depend on it.
    let rows: Vec<Req> = [
        800.0, 10.0, 300.0, 40.0, 1000.0, 20.0, 150.0, 50.0, 500.0, 30.0, 200.0, 100.0,
    ]
    .iter()
    .enumerate()
    .map(|(i, &ms)| {
        let status = if i % 4 == 0 { 500 } else { 200 };
        req(t(H10 + 60 * i as u64 * 5), "/api/items/{id}", status, ms)
    })
    .collect();
    insert_requests(&client, &schema, &rows).await;

    let report = job(&db, &schema, H10 + HOUR + 120)
        .run_once()
        .await
        .unwrap();
    assert_eq!(report.hours_rolled, 1, "{report:?}");
    assert_eq!(report.raw_rows_rolled, 12);
    assert_eq!(
        report.rollup_rows_written, 2,
        "per endpoint + all endpoints"
    );

    let truth = client
        .query_one(
            &format!(
                "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY response_time_ms), \
                        percentile_cont(0.95) WITHIN GROUP (ORDER BY response_time_ms), \
                        percentile_cont(0.99) WITHIN GROUP (ORDER BY response_time_ms), \
                        avg(response_time_ms), sum(response_time_ms) \
                 FROM \"{schema}\".performance_metrics"
            ),
            &[],
        )
        .await
        .unwrap();
    let (p50, p95, p99): (f64, f64, f64) = (truth.get(0), truth.get(1), truth.get(2));
    for (endpoint, method) in [("/api/items/{id}", "GET"), ("*", "*")] {
        let (values, n, sketch) = perf_row(&client, &schema, t(H10), endpoint, method)
            .await
            .unwrap_or_else(|| panic!("no rollup row for {endpoint}"));
        assert_eq!(n, 12);
        // Read the stored JSON numbers with PostgreSQL's exact float parser
        // (serde_json's default parser may be one ulp off).
        let stored = client
            .query_one(
                &format!(
                    "SELECT (aggregated_values->>'p50')::float8, (aggregated_values->>'p95')::float8, \
                            (aggregated_values->>'p99')::float8 \
                     FROM \"{schema}\".aggregated_metrics \
                     WHERE time_bucket = $1 AND endpoint_path = $2 AND method = $3"
                ),
                &[&t(H10), &endpoint, &method],
            )
            .await
            .unwrap();
        let got: (f64, f64, f64) = (stored.get(0), stored.get(1), stored.get(2));
        assert_eq!(got, (p50, p95, p99), "{values}");
        assert!(p50 < p95 && p95 < p99, "{p50} {p95} {p99}");
        assert_eq!(values["count"], 12);
        assert_eq!(values["min"].as_f64(), Some(10.0));
        assert_eq!(values["max"].as_f64(), Some(1000.0));
        assert_eq!(values["sum"].as_f64(), Some(truth.get::<_, f64>(4)));
        assert_eq!(values["avg"].as_f64(), Some(truth.get::<_, f64>(3)));
        assert_eq!(values["error_count"], 3);
        assert_eq!(values["error_rate"].as_f64(), Some(0.25));
        assert_eq!(values["status_code_distribution"]["200"], 9);
        assert_eq!(values["status_code_distribution"]["500"], 3);
        // The stored sketch answers the same, exactly.
        let s = LatencySketch::from_bytes(&sketch).unwrap();
        assert!(s.is_exact());
        assert_eq!(s.quantile(0.5).unwrap().value, p50);
        assert_eq!(s.quantile(0.95).unwrap().value, p95);
        assert_eq!(s.quantile(0.99).unwrap().value, p99);
        assert_eq!(s.quantile(0.95).unwrap().rel_error_bound, 0.0);
    }
    // Postgres says the same about the literal set, independently of our rows.
    let literal: f64 = client
        .query_one(
            "SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY v) FROM unnest($1::float8[]) v",
            &[&KNOWN.to_vec()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(literal, p95);
}

#[tokio::test]
async fn per_endpoint_rows_and_the_all_endpoints_row() {
    let (db, schema) = migrated_db().await;
    let client = db.connect().await;
    let mut rows = Vec::new();
    for i in 0..30u64 {
        let mut r = req(t(H10 + i), "/a", 200, (i + 1) as f64);
        r.user = Some(format!("u{}", i % 3));
        rows.push(r);
    }
    for i in 0..10u64 {
        let mut r = req(t(H10 + 100 + i), "/a", 201, 1000.0 + i as f64);
        r.method = "POST";
        r.user = Some("u9".into());
        rows.push(r);
    }
    rows.push(req(t(H10 + HOUR + 5), "/b", 404, 7.0)); // next hour
    insert_requests(&client, &schema, &rows).await;

    let report = job(&db, &schema, H10 + 2 * HOUR + 120)
        .run_once()
        .await
        .unwrap();
    assert_eq!(report.hours_rolled, 2);
    assert_eq!(report.rollup_rows_written, 3 + 2);

    let (get, n, _) = perf_row(&client, &schema, t(H10), "/a", "GET")
        .await
        .unwrap();
    assert_eq!((n, get["p50"].as_f64()), (30, Some(15.5)));
    let (post, n, _) = perf_row(&client, &schema, t(H10), "/a", "POST")
        .await
        .unwrap();
    assert_eq!((n, post["min"].as_f64()), (10, Some(1000.0)));
    let (all, n, _) = perf_row(&client, &schema, t(H10), "*", "*").await.unwrap();
    assert_eq!(n, 40);
    assert_eq!(all["max"].as_f64(), Some(1009.0));
    let users: Vec<u8> = client
        .query_one(
            &format!(
                "SELECT users_sketch FROM \"{schema}\".aggregated_metrics \
                 WHERE time_bucket = $1 AND endpoint_path = '*'"
            ),
            &[&t(H10)],
        )
        .await
        .unwrap()
        .get(0);
    let users = metrics_core::aggregate::DistinctUsers::from_bytes(&users).unwrap();
    assert_eq!(users.estimate().value, 4);
    let (next, n, _) = perf_row(&client, &schema, t(H10 + HOUR), "/b", "GET")
        .await
        .unwrap();
    assert_eq!((n, next["error_count"].as_u64()), (1, Some(1)));
}

#[tokio::test]
async fn usage_rollup_per_type_and_all_types() {
    let (db, schema) = migrated_db().await;
    let client = db.connect().await;
    for (i, (kind, user, page, ok)) in [
        ("page_view", "ada", Some("/home"), None),
        ("page_view", "bob", Some("/home"), None),
        ("page_view", "ada", Some("/about"), None),
        ("click", "ada", Some("/home"), Some(true)),
        ("click", "cy", None, Some(false)),
    ]
    .into_iter()
    .enumerate()
    {
        insert_event(&client, &schema, t(H10 + i as u64), kind, user, page, ok).await;
    }
    let report = job(&db, &schema, H10 + HOUR + 120)
        .run_once()
        .await
        .unwrap();
    assert_eq!(report.raw_rows_rolled, 5);
    let rows = client
        .query(
            &format!(
                "SELECT event_type, aggregated_values, sample_count FROM \"{schema}\".aggregated_metrics \
                 WHERE metric_type = 'usage' ORDER BY event_type"
            ),
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, serde_json::Value, i64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(got.len(), 3, "{got:?}");
    let (ty, all, n) = &got[0];
    assert_eq!((ty.as_str(), *n), ("*", 5));
    assert_eq!(all["total_events"], 5);
    assert_eq!(all["unique_users"], 3);
    assert_eq!(all["event_count_by_page"]["/home"], 3);
    assert_eq!(all["success_count"], 1);
    assert_eq!(all["failure_count"], 1);
    assert_eq!(all["success_rate"].as_f64(), Some(0.5));
    let (ty, click, _) = &got[1];
    assert_eq!((ty.as_str(), &click["unique_users"]), ("click", &2.into()));
    let (ty, views, _) = &got[2];
    assert_eq!(
        (ty.as_str(), &views["total_events"]),
        ("page_view", &3.into())
    );
}

#[tokio::test]
async fn running_twice_changes_nothing_and_late_rows_are_rolled_again() {
    let (db, schema) = migrated_db().await;
    let client = db.connect().await;
    let rows: Vec<Req> = (0..50u64)
        .map(|i| {
            req(
                t(H10 + i * 60),
                if i % 2 == 0 { "/x" } else { "/y" },
                200,
                i as f64,
            )
        })
        .collect();
    insert_requests(&client, &schema, &rows).await;
    let now = H10 + HOUR + 120;

    let first = job(&db, &schema, now).run_once().await.unwrap();
    assert_eq!(first.hours_rolled, 1);
    let after_first = rollup_dump(&client, &schema).await;
    assert_eq!(after_first.len(), 3);

    let second = job(&db, &schema, now + 60).run_once().await.unwrap();
    assert_eq!(second.hours_rolled, 0, "{second:?}");
    assert_eq!(rollup_dump(&client, &schema).await, after_first);

    // A late row for the rolled hour (the collector retried a batch).
    insert_requests(
        &client,
        &schema,
        &[req(t(H10 + 59 * 60), "/x", 503, 10_000.0)],
    )
    .await;
    let third = job(&db, &schema, now + 120).run_once().await.unwrap();
    assert_eq!((third.hours_rolled, third.raw_rows_rolled), (1, 51));
    let (x, n, _) = perf_row(&client, &schema, t(H10), "/x", "GET")
        .await
        .unwrap();
    assert_eq!(n, 26);
    assert_eq!(x["max"].as_f64(), Some(10_000.0));
    assert_eq!(x["error_count"], 1);
    let (all, n, _) = perf_row(&client, &schema, t(H10), "*", "*").await.unwrap();
    assert_eq!((n, all["count"].as_u64()), (51, Some(51)));
    assert_eq!(
        rollup_dump(&client, &schema).await.len(),
        3,
        "no duplicate keys"
    );
}

#[tokio::test]
async fn two_concurrent_runs_give_the_same_rows_as_one() {
    let (db, schema) = migrated_db().await;
    let client = db.connect().await;
    let rows: Vec<Req> = (0..2_000u64)
        .map(|i| req(t(H10 + i * 10), "/c", 200, (i % 97) as f64))
        .collect();
    insert_requests(&client, &schema, &rows).await;
    let now = H10 + 7 * HOUR;
    let (one, two) = (job(&db, &schema, now), job(&db, &schema, now));
    let (a, b) = tokio::join!(one.run_once(), two.run_once());
    let (a, b) = (a.unwrap(), b.unwrap());
    // Either one ran and the other skipped, or they ran one after the other.
    assert_eq!(a.hours_rolled + b.hours_rolled, 6, "{a:?} {b:?}");
    let concurrent = rollup_dump(&client, &schema).await;
    assert_eq!(concurrent.len(), 12);

    // The same data rolled by a single run in a fresh schema: identical rows.
    let (db2, schema2) = migrated_db().await;
    let client2 = db2.connect().await;
    insert_requests(&client2, &schema2, &rows).await;
    let _ = job(&db2, &schema2, now).run_once().await.unwrap();
    assert_eq!(rollup_dump(&client2, &schema2).await, concurrent);
}

#[tokio::test]
async fn open_hours_and_the_grace_period_wait() {
    let (db, schema) = migrated_db().await;
    let client = db.connect().await;
    insert_requests(&client, &schema, &[req(t(H10 + 10), "/g", 200, 1.0)]).await;
    // 1 min 59 s after the hour ended: still within the 2 min grace.
    let early = job(&db, &schema, H10 + HOUR + 119)
        .run_once()
        .await
        .unwrap();
    assert_eq!(early.hours_rolled, 0);
    assert!(rollup_dump(&client, &schema).await.is_empty());
    let on_time = job(&db, &schema, H10 + HOUR + 120)
        .run_once()
        .await
        .unwrap();
    assert_eq!(on_time.hours_rolled, 1);
    // A custom grace.
    insert_requests(&client, &schema, &[req(t(H10 + HOUR + 10), "/g", 200, 1.0)]).await;
    let custom = job(&db, &schema, H10 + 2 * HOUR + 1)
        .grace(Duration::ZERO)
        .run_once()
        .await
        .unwrap();
    assert_eq!(custom.hours_rolled, 1);
}

#[tokio::test]
async fn an_interrupted_run_leaves_whole_hours_and_the_next_run_finishes() {
    let (db, schema) = migrated_db().await;
    let client = db.connect().await;
    let mut rows = vec![
        req(t(H10 + 1), "/ok", 200, 1.0),
        req(t(H10 + HOUR + 1), "/ok", 200, 2.0),
        req(t(H10 + HOUR + 2), "/boom", 200, 3.0),
        req(t(H10 + 2 * HOUR + 1), "/ok", 200, 4.0),
    ];
    rows.reverse();
    insert_requests(&client, &schema, &rows).await;
    // Make the second hour's upsert fail half way through the run.
    client
        .batch_execute(&format!(
            "ALTER TABLE \"{schema}\".aggregated_metrics ADD CONSTRAINT no_boom \
             CHECK (endpoint_path IS DISTINCT FROM '/boom')"
        ))
        .await
        .unwrap();
    let now = H10 + 3 * HOUR + 120;
    let err = job(&db, &schema, now).run_once().await.unwrap_err();
    assert!(err.to_string().contains("no_boom"), "{err}");
    // Hour 10 is complete; hour 11 has nothing at all (not even its /ok or * row).
    let dump = rollup_dump(&client, &schema).await;
    assert_eq!(dump.len(), 2, "{dump:#?}");
    assert!(
        dump.iter().all(|l| l.starts_with(&format!("{H10} |"))),
        "{dump:#?}"
    );
    assert_eq!(
        count(
            &client,
            &format!("SELECT count(*) FROM \"{schema}\".rollup_hours")
        )
        .await,
        1
    );

    client
        .batch_execute(&format!(
            "ALTER TABLE \"{schema}\".aggregated_metrics DROP CONSTRAINT no_boom"
        ))
        .await
        .unwrap();
    let next = job(&db, &schema, now).run_once().await.unwrap();
    assert_eq!(next.hours_rolled, 2, "{next:?}");
    assert_eq!(rollup_dump(&client, &schema).await.len(), 2 + 3 + 2);
}
