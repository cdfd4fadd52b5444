//! The rollup job on a real PostgreSQL: exact percentiles equal to
//! `percentile_cont`, idempotency (twice, concurrently), late rows re-rolled,
//! the grace period, usage rollups, an interrupted run, and the 5-minute and
//! daily rollups written alongside.

mod job_support;

use std::collections::BTreeMap;
use std::time::Duration;

use job_support::{
    DAY, DAY0, H10, HOUR, Req, count, insert_event, insert_requests, migrated_db, perf_row, req,
    rollup_dump, rollup_job, t,
};
use metrics_core::aggregate::{DistinctUsers, LatencySketch};

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

    let report = rollup_job(&db, &schema, H10 + HOUR + 120)
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

    let report = rollup_job(&db, &schema, H10 + 2 * HOUR + 120)
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
    let report = rollup_job(&db, &schema, H10 + HOUR + 120)
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

    let first = rollup_job(&db, &schema, now).run_once().await.unwrap();
    assert_eq!(first.hours_rolled, 1);
    let after_first = rollup_dump(&client, &schema).await;
    assert_eq!(after_first.len(), 3);

    let second = rollup_job(&db, &schema, now + 60).run_once().await.unwrap();
    assert_eq!(second.hours_rolled, 0, "{second:?}");
    assert_eq!(rollup_dump(&client, &schema).await, after_first);

    // A late row for the rolled hour (the collector retried a batch).
    insert_requests(
        &client,
        &schema,
        &[req(t(H10 + 59 * 60), "/x", 503, 10_000.0)],
    )
    .await;
    let third = rollup_job(&db, &schema, now + 120)
        .run_once()
        .await
        .unwrap();
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
    let (one, two) = (rollup_job(&db, &schema, now), rollup_job(&db, &schema, now));
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
    let _ = rollup_job(&db2, &schema2, now).run_once().await.unwrap();
    assert_eq!(rollup_dump(&client2, &schema2).await, concurrent);
}

#[tokio::test]
async fn open_hours_and_the_grace_period_wait() {
    let (db, schema) = migrated_db().await;
    let client = db.connect().await;
    insert_requests(&client, &schema, &[req(t(H10 + 10), "/g", 200, 1.0)]).await;
    // 1 min 59 s after the hour ended: still within the 2 min grace.
    let early = rollup_job(&db, &schema, H10 + HOUR + 119)
        .run_once()
        .await
        .unwrap();
    assert_eq!(early.hours_rolled, 0);
    assert!(rollup_dump(&client, &schema).await.is_empty());
    let on_time = rollup_job(&db, &schema, H10 + HOUR + 120)
        .run_once()
        .await
        .unwrap();
    assert_eq!(on_time.hours_rolled, 1);
    // A custom grace.
    insert_requests(&client, &schema, &[req(t(H10 + HOUR + 10), "/g", 200, 1.0)]).await;
    let custom = rollup_job(&db, &schema, H10 + 2 * HOUR + 1)
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
    let err = rollup_job(&db, &schema, now).run_once().await.unwrap_err();
    assert!(err.to_string().contains("no_boom"), "{err}");
    // Hour 10 is complete; hour 11 has nothing at all (not even its /ok or *
    // row). Hours are rolled two at a time, so hour 12 may or may not have
    // been finished beside the failing hour 11 — but only ever whole.
    let dump = rollup_dump(&client, &schema).await;
    let rows_of = |hour: u64| {
        dump.iter()
            .filter(|l| l.starts_with(&format!("{hour} |")))
            .count()
    };
    assert_eq!(rows_of(H10), 2, "{dump:#?}");
    assert_eq!(rows_of(H10 + HOUR), 0, "{dump:#?}");
    let third_done = rows_of(H10 + 2 * HOUR);
    assert!(third_done == 0 || third_done == 2, "{dump:#?}");
    assert_eq!(dump.len(), 2 + third_done, "{dump:#?}");
    let rolled_before = count(
        &client,
        &format!("SELECT count(*) FROM \"{schema}\".rollup_hours WHERE raw_count > 0"),
    )
    .await;
    assert_eq!(rolled_before, 1 + (third_done / 2) as i64);

    client
        .batch_execute(&format!(
            "ALTER TABLE \"{schema}\".aggregated_metrics DROP CONSTRAINT no_boom"
        ))
        .await
        .unwrap();
    let next = rollup_job(&db, &schema, now).run_once().await.unwrap();
    assert_eq!(next.hours_rolled, 3 - rolled_before as u64, "{next:?}");
    assert_eq!(rollup_dump(&client, &schema).await.len(), 2 + 3 + 2);
}

// ===== 5-minute and daily rollups =====

/// `(slot start, sample_count, aggregated_values, latency_sketch, users_sketch)`
/// of every 5-minute row of `metric_type`, ascending.
type SlotRow = (u64, i64, serde_json::Value, Option<Vec<u8>>, Vec<u8>);

async fn slot_rows(
    client: &test_support::tokio_postgres::Client,
    schema: &str,
    metric_type: &str,
) -> Vec<SlotRow> {
    client
        .query(
            &format!(
                "SELECT extract(epoch FROM time_bucket)::bigint, sample_count, aggregated_values, \
                        latency_sketch, users_sketch \
                 FROM \"{schema}\".aggregated_metrics_5min WHERE metric_type = $1 ORDER BY time_bucket"
            ),
            &[&metric_type],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, i64>(0) as u64, r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
}

/// `(p50, p95, p99)` per 5-minute slot straight from the raw rows.
async fn raw_slot_percentiles(
    client: &test_support::tokio_postgres::Client,
    schema: &str,
) -> Vec<(u64, i64, f64, f64, f64)> {
    client
        .query(
            &format!(
                "SELECT extract(epoch FROM date_bin('5 minutes', \"timestamp\", TIMESTAMPTZ '2000-01-01 00:00:00+00'))::bigint, \
                        count(*), \
                        percentile_cont(0.5) WITHIN GROUP (ORDER BY response_time_ms), \
                        percentile_cont(0.95) WITHIN GROUP (ORDER BY response_time_ms), \
                        percentile_cont(0.99) WITHIN GROUP (ORDER BY response_time_ms) \
                 FROM \"{schema}\".performance_metrics GROUP BY 1 ORDER BY 1"
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, i64>(0) as u64, r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
}

/// Requests in slots 0, 1, 5 and 11 of hour H10 (none in the others), three
/// users, two endpoints, some errors.
fn slotted_requests() -> Vec<Req> {
    let mut rows = Vec::new();
    for (slot, n) in [(0u64, 7u64), (1, 3), (5, 20), (11, 4)] {
        for i in 0..n {
            let at = H10 + slot * 300 + i * 13 % 300;
            let status = if i % 5 == 4 { 503 } else { 200 };
            let mut r = req(
                t(at),
                if i % 2 == 0 { "/s/{id}" } else { "/t" },
                status,
                (slot * 100 + i * i + 1) as f64,
            );
            r.user = Some(format!("u{}", (slot + i) % 3));
            rows.push(r);
        }
    }
    rows
}

#[tokio::test]
async fn five_minute_rows_add_up_to_the_hourly_all_endpoints_row() {
    let (db, schema) = migrated_db().await;
    let client = db.connect().await;
    insert_requests(&client, &schema, &slotted_requests()).await;
    for (i, (slot, kind, user)) in [
        (0u64, "click", "ada"),
        (0, "page_view", "bob"),
        (7, "click", "ada"),
    ]
    .into_iter()
    .enumerate()
    {
        let at = t(H10 + slot * 300 + i as u64);
        insert_event(&client, &schema, at, kind, user, Some("/home"), Some(true)).await;
    }
    let _ = rollup_job(&db, &schema, H10 + HOUR + 120)
        .run_once()
        .await
        .unwrap();

    let slots = slot_rows(&client, &schema, "performance").await;
    let starts: Vec<u64> = slots.iter().map(|s| s.0).collect();
    assert_eq!(
        starts,
        [H10, H10 + 300, H10 + 1500, H10 + 3300],
        "empty slots have no row"
    );
    // Each slot's percentiles are percentile_cont over that slot's raw rows.
    let truth = raw_slot_percentiles(&client, &schema).await;
    assert_eq!(truth.len(), slots.len());
    for ((start, n, v, _, _), (t_start, t_n, p50, p95, p99)) in slots.iter().zip(&truth) {
        assert_eq!((start, n), (t_start, t_n));
        let got = (
            v["p50"].as_f64().unwrap(),
            v["p95"].as_f64().unwrap(),
            v["p99"].as_f64().unwrap(),
        );
        // serde_json may be an ulp off on parsing; the values are small integers
        // or simple interpolations, compare tightly.
        for (a, b) in [(got.0, *p50), (got.1, *p95), (got.2, *p99)] {
            assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{a} vs {b}");
        }
    }

    // Merged, the slots are the hourly all-endpoints row.
    let (hourly, hourly_n, hourly_sketch) =
        perf_row(&client, &schema, t(H10), "*", "*").await.unwrap();
    assert_eq!(slots.iter().map(|s| s.1).sum::<i64>(), hourly_n);
    assert_eq!(hourly_n, 34);
    let mut merged = LatencySketch::new();
    let mut users = DistinctUsers::new();
    let mut errors = 0;
    let mut status: BTreeMap<String, u64> = BTreeMap::new();
    for (_, _, v, latency, u) in &slots {
        merged.merge(&LatencySketch::from_bytes(latency.as_deref().unwrap()).unwrap());
        users.merge(&DistinctUsers::from_bytes(u).unwrap());
        errors += v["error_count"].as_u64().unwrap();
        for (code, n) in v["status_code_distribution"].as_object().unwrap() {
            *status.entry(code.clone()).or_default() += n.as_u64().unwrap();
        }
    }
    let hourly_sketch = LatencySketch::from_bytes(&hourly_sketch).unwrap();
    assert!(merged.is_exact() && hourly_sketch.is_exact());
    for q in [0.5, 0.95, 0.99] {
        assert_eq!(merged.quantile(q), hourly_sketch.quantile(q), "q={q}");
    }
    assert_eq!(merged.count(), hourly_sketch.count());
    assert_eq!(users.estimate().value, 3);
    assert_eq!(hourly["error_count"].as_u64(), Some(errors));
    let hourly_status: BTreeMap<String, u64> = hourly["status_code_distribution"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect();
    assert_eq!(status, hourly_status);

    // Usage: the all-types key per slot.
    let usage = slot_rows(&client, &schema, "usage").await;
    let got: Vec<(u64, i64, u64)> = usage
        .iter()
        .map(|(s, n, v, l, _)| {
            assert!(l.is_none());
            (*s, *n, v["unique_users"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(got, [(H10, 2, 2), (H10 + 7 * 300, 1, 1)]);
}

#[tokio::test]
async fn a_late_row_rewrites_its_five_minute_slot() {
    let (db, schema) = migrated_db().await;
    let client = db.connect().await;
    insert_requests(&client, &schema, &slotted_requests()).await;
    let now = H10 + HOUR + 120;
    let _ = rollup_job(&db, &schema, now).run_once().await.unwrap();
    let before = slot_rows(&client, &schema, "performance").await;
    assert_eq!(before.len(), 4);

    // Late rows: one into an empty slot (7), one into slot 0.
    insert_requests(
        &client,
        &schema,
        &[
            req(t(H10 + 7 * 300 + 10), "/t", 200, 5.0),
            req(t(H10 + 299), "/t", 500, 9_999.0),
        ],
    )
    .await;
    let report = rollup_job(&db, &schema, now + 60).run_once().await.unwrap();
    assert_eq!(report.hours_rolled, 1);
    let after = slot_rows(&client, &schema, "performance").await;
    let counts: Vec<(u64, i64)> = after.iter().map(|s| (s.0, s.1)).collect();
    assert_eq!(
        counts,
        [
            (H10, 8),
            (H10 + 300, 3),
            (H10 + 1500, 20),
            (H10 + 2100, 1),
            (H10 + 3300, 4)
        ]
    );
    assert_eq!(after[0].2["max"].as_f64(), Some(9_999.0));
    assert_eq!(after[3].2["p50"].as_f64(), Some(5.0));
    // Slots the late rows did not touch are unchanged.
    assert_eq!(after[1], before[1]);
    let (_, hourly_n, _) = perf_row(&client, &schema, t(H10), "*", "*").await.unwrap();
    assert_eq!(after.iter().map(|s| s.1).sum::<i64>(), hourly_n);
}

/// Daily rows of `metric_type` for the day starting at `day`:
/// key -> (sample_count, values, latency, users).
async fn daily_rows(
    client: &test_support::tokio_postgres::Client,
    schema: &str,
    day: u64,
    metric_type: &str,
) -> BTreeMap<String, (i64, serde_json::Value, Option<Vec<u8>>, Vec<u8>)> {
    client
        .query(
            &format!(
                "SELECT concat_ws('|', endpoint_path, method, event_type), sample_count, \
                        aggregated_values, latency_sketch, users_sketch \
                 FROM \"{schema}\".aggregated_metrics_daily \
                 WHERE time_bucket = $1 AND metric_type = $2"
            ),
            &[&t(day), &metric_type],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3), r.get(4))))
        .collect()
}

/// The hourly rows of the day starting at `day`, merged in the test.
async fn merged_hours(
    client: &test_support::tokio_postgres::Client,
    schema: &str,
    day: u64,
    metric_type: &str,
) -> BTreeMap<String, (i64, Option<LatencySketch>, DistinctUsers)> {
    let mut out: BTreeMap<String, (i64, Option<LatencySketch>, DistinctUsers)> = BTreeMap::new();
    for r in client
        .query(
            &format!(
                "SELECT concat_ws('|', endpoint_path, method, event_type), sample_count, \
                        latency_sketch, users_sketch \
                 FROM \"{schema}\".aggregated_metrics \
                 WHERE time_bucket >= $1 AND time_bucket < $2 AND metric_type = $3"
            ),
            &[&t(day), &t(day + DAY), &metric_type],
        )
        .await
        .unwrap()
    {
        let e = out
            .entry(r.get(0))
            .or_insert((0, None, DistinctUsers::new()));
        e.0 += r.get::<_, i64>(1);
        if let Some(b) = r.get::<_, Option<&[u8]>>(2) {
            let s = LatencySketch::from_bytes(b).unwrap();
            match &mut e.1 {
                Some(acc) => acc.merge(&s),
                None => e.1 = Some(s),
            }
        }
        e.2.merge(&DistinctUsers::from_bytes(r.get(3)).unwrap());
    }
    out
}

async fn built_days(
    client: &test_support::tokio_postgres::Client,
    schema: &str,
) -> Vec<(String, u64)> {
    client
        .query(
            &format!(
                "SELECT metric_type, extract(epoch FROM day)::bigint FROM \"{schema}\".rollup_days \
                 ORDER BY 1, 2"
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
        .collect()
}

/// Every hour of DAY0 gets requests (two endpoints, 60 per hour per endpoint
/// over the day: more than the exact limit, so the daily sketches are
/// binned) and usage events; day 1 gets rows in its first 3 hours only.
async fn two_days(client: &test_support::tokio_postgres::Client, schema: &str) {
    let mut rows = Vec::new();
    for h in 0..27u64 {
        for i in 0..60u64 {
            let at = DAY0 + h * HOUR + i * 59;
            let mut r = req(
                t(at),
                if i % 3 == 0 { "/a" } else { "/b/{id}" },
                200 + (i % 7 == 0) as i32 * 300,
                (1 + (h * 31 + i * 17) % 400) as f64,
            );
            r.user = Some(format!("u{}", (h + i) % 40));
            rows.push(r);
        }
        insert_event(
            client,
            schema,
            t(DAY0 + h * HOUR + 5),
            "click",
            &format!("v{}", h % 5),
            Some("/home"),
            Some(h % 4 != 0),
        )
        .await;
    }
    insert_requests(client, schema, &rows).await;
}

#[tokio::test]
async fn a_complete_day_gets_daily_rows_equal_to_the_merge_of_its_hours() {
    let (db, schema) = migrated_db().await;
    let client = db.connect().await;
    two_days(&client, &schema).await;
    // Day 1's first 3 hours are closed, the rest of it is not.
    let report = rollup_job(&db, &schema, DAY0 + DAY + 3 * HOUR + 120)
        .run_once()
        .await
        .unwrap();
    assert_eq!(report.hours_rolled, 2 * 27);
    // Only day 0 is complete, for both metric types; the partial day 1 has nothing.
    assert_eq!(
        built_days(&client, &schema).await,
        [("performance".to_owned(), DAY0), ("usage".to_owned(), DAY0)]
    );
    assert!(
        daily_rows(&client, &schema, DAY0 + DAY, "performance")
            .await
            .is_empty()
    );

    for metric_type in ["performance", "usage"] {
        let daily = daily_rows(&client, &schema, DAY0, metric_type).await;
        let merged = merged_hours(&client, &schema, DAY0, metric_type).await;
        let keys: Vec<&String> = daily.keys().collect();
        assert_eq!(keys, merged.keys().collect::<Vec<_>>());
        for (key, (n, values, latency, users)) in &daily {
            let (m_n, m_latency, m_users) = &merged[key];
            assert_eq!(n, m_n, "{key}");
            assert_eq!(&DistinctUsers::from_bytes(users).unwrap(), m_users, "{key}");
            match (latency, m_latency) {
                (Some(l), Some(m)) => {
                    let l = LatencySketch::from_bytes(l).unwrap();
                    assert_eq!(l.count(), m.count());
                    for (name, q) in [("p50", 0.5), ("p95", 0.95), ("p99", 0.99)] {
                        let want = m.quantile(q).unwrap().value;
                        assert_eq!(l.quantile(q).unwrap().value, want, "{key} {name}");
                        // serde_json's float parser may be an ulp off.
                        let stored = values[name].as_f64().unwrap();
                        assert!((stored - want).abs() <= 1e-12 * want, "{key} {name}");
                    }
                }
                (None, None) => assert_eq!(metric_type, "usage"),
                other => panic!("{key}: {other:?}"),
            }
        }
    }
    let perf = daily_rows(&client, &schema, DAY0, "performance").await;
    let all = &perf["*|*"];
    assert_eq!(all.0, 24 * 60);
    assert_eq!(all.1["count"].as_u64(), Some(24 * 60));
    assert_eq!(all.1["error_count"].as_u64(), Some(24 * 9));
    assert_eq!(all.1["max"].as_f64(), Some(400.0));
    assert_eq!(
        all.1["status_code_distribution"]["500"].as_u64(),
        Some(24 * 9)
    );
    assert_eq!(perf["/a|GET"].0, 24 * 20);
    let usage = daily_rows(&client, &schema, DAY0, "usage").await;
    let clicks = &usage["click"].1;
    assert_eq!(
        (
            clicks["total_events"].as_u64(),
            clicks["unique_users"].as_u64()
        ),
        (Some(24), Some(5))
    );
    assert_eq!(
        (
            clicks["success_count"].as_u64(),
            clicks["failure_count"].as_u64()
        ),
        (Some(18), Some(6))
    );
    assert_eq!(
        usage["*"].1["event_count_by_page"]["/home"].as_u64(),
        Some(24)
    );

    // Running again changes nothing.
    let dump = daily_rows(&client, &schema, DAY0, "performance").await;
    let _ = rollup_job(&db, &schema, DAY0 + DAY + 3 * HOUR + 180)
        .run_once()
        .await
        .unwrap();
    assert_eq!(
        daily_rows(&client, &schema, DAY0, "performance").await,
        dump
    );
}

#[tokio::test]
async fn a_rerolled_hour_rebuilds_its_day() {
    let (db, schema) = migrated_db().await;
    let client = db.connect().await;
    two_days(&client, &schema).await;
    let now = DAY0 + DAY + 3 * HOUR + 120;
    let _ = rollup_job(&db, &schema, now).run_once().await.unwrap();
    let before = daily_rows(&client, &schema, DAY0, "performance").await;
    assert_eq!(before["*|*"].0, 24 * 60);

    // A late row for hour 5 of day 0 (within the recheck window).
    let mut late = req(t(DAY0 + 5 * HOUR + 1), "/late", 404, 12_345.0);
    late.user = Some("latecomer".into());
    insert_requests(&client, &schema, &[late]).await;
    let report = rollup_job(&db, &schema, now + 60).run_once().await.unwrap();
    assert_eq!(report.hours_rolled, 1);
    let after = daily_rows(&client, &schema, DAY0, "performance").await;
    assert_eq!(after["*|*"].0, 24 * 60 + 1);
    assert_eq!(after["*|*"].1["max"].as_f64(), Some(12_345.0));
    assert_eq!(after["/late|GET"].0, 1);
    assert_eq!(after["/a|GET"], before["/a|GET"]);
    let users = DistinctUsers::from_bytes(&after["*|*"].3).unwrap();
    assert_eq!(users.estimate().value, 41);
    assert_eq!(built_days(&client, &schema).await.len(), 2);

    // If the rebuild fails, the day has no rollup_days row (queries fall
    // back to the hourly rows) and the next run builds it.
    insert_requests(
        &client,
        &schema,
        &[req(t(DAY0 + 6 * HOUR + 1), "/boom", 200, 1.0)],
    )
    .await;
    client
        .batch_execute(&format!(
            "ALTER TABLE \"{schema}\".aggregated_metrics_daily ADD CONSTRAINT no_boom \
             CHECK (endpoint_path IS DISTINCT FROM '/boom')"
        ))
        .await
        .unwrap();
    let err = rollup_job(&db, &schema, now + 120)
        .run_once()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no_boom"), "{err}");
    assert_eq!(
        built_days(&client, &schema).await,
        [("usage".to_owned(), DAY0)],
        "the hour's transaction withdrew the day"
    );
    // The hourly rows already have the new row; the stale daily rows are untrusted.
    let (_, n, _) = perf_row(&client, &schema, t(DAY0 + 6 * HOUR), "*", "*")
        .await
        .unwrap();
    assert_eq!(n, 61);
    client
        .batch_execute(&format!(
            "ALTER TABLE \"{schema}\".aggregated_metrics_daily DROP CONSTRAINT no_boom"
        ))
        .await
        .unwrap();
    let report = rollup_job(&db, &schema, now + 180)
        .run_once()
        .await
        .unwrap();
    assert_eq!(report.hours_rolled, 0, "only the day is left to do");
    assert_eq!(built_days(&client, &schema).await.len(), 2);
    let fixed = daily_rows(&client, &schema, DAY0, "performance").await;
    assert_eq!(fixed["*|*"].0, 24 * 60 + 2);
    assert_eq!(fixed["/boom|GET"].0, 1);
}

#[tokio::test]
async fn keys_holding_the_separator_byte_are_rolled_under_the_right_key() {
    let (db, schema) = migrated_db().await;
    let client = db.connect().await;
    // The rollup streams `method || U+001F || endpoint`: an endpoint holding
    // that byte still splits right (methods are HTTP tokens), and a method
    // holding it makes the hour stream again with separate columns.
    let mut odd_method = req(t(H10 + 2 * HOUR + 1), "/plain", 200, 3.0);
    odd_method.method = "GE\u{1f}T";
    insert_requests(
        &client,
        &schema,
        &[
            req(t(H10 + 1), "/a\u{1f}b", 200, 1.0),
            req(t(H10 + 2), "/a", 200, 2.0),
            odd_method,
            req(t(H10 + 2 * HOUR + 2), "/x\u{1f}y", 404, 4.0),
        ],
    )
    .await;
    let report = rollup_job(&db, &schema, H10 + 3 * HOUR + 120)
        .run_once()
        .await
        .unwrap();
    assert_eq!(report.raw_rows_rolled, 4);
    let keys: Vec<(i64, String, String, i64)> = client
        .query(
            &format!(
                "SELECT extract(epoch FROM time_bucket)::bigint, endpoint_path, method, sample_count \
                 FROM \"{schema}\".aggregated_metrics WHERE endpoint_path <> '*' ORDER BY 1, 2, 3"
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let h10 = H10 as i64;
    let h12 = h10 + 2 * HOUR as i64;
    assert_eq!(
        keys,
        [
            (h10, "/a".to_owned(), "GET".to_owned(), 1),
            (h10, "/a\u{1f}b".to_owned(), "GET".to_owned(), 1),
            (h12, "/plain".to_owned(), "GE\u{1f}T".to_owned(), 1),
            (h12, "/x\u{1f}y".to_owned(), "GET".to_owned(), 1),
        ]
    );
    // The status travels as NULL when it is 200 (a cheaper send): both
    // stream forms decode it back, beside other codes.
    let statuses: Vec<(i64, serde_json::Value)> = client
        .query(
            &format!(
                "SELECT extract(epoch FROM time_bucket)::bigint, \
                        aggregated_values->'status_code_distribution' \
                 FROM \"{schema}\".aggregated_metrics WHERE endpoint_path = '*' ORDER BY 1"
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        statuses,
        [
            (h10, serde_json::json!({"200": 2})),
            (h12, serde_json::json!({"200": 1, "404": 1})),
        ]
    );
}

#[tokio::test]
async fn a_first_run_after_a_long_gap_records_empty_hours_so_days_complete() {
    let (db, schema) = migrated_db().await;
    let client = db.connect().await;
    // Rows only in hours 5 and 6 of day 0; the first run comes three days
    // later, so new hours are found by counting (not visited one by one).
    insert_requests(
        &client,
        &schema,
        &[
            req(t(DAY0 + 5 * HOUR + 1), "/g", 200, 1.0),
            req(t(DAY0 + 6 * HOUR + 1), "/g", 200, 2.0),
        ],
    )
    .await;
    let report = rollup_job(&db, &schema, DAY0 + 3 * DAY + 120)
        .run_once()
        .await
        .unwrap();
    assert_eq!(report.hours_rolled, 2);
    // From midnight of day 0 (the day of the first row) to the last closed
    // hour: every hour recorded, the empty ones with count 0.
    let hours = count(
        &client,
        &format!(
            "SELECT count(*) FROM \"{schema}\".rollup_hours WHERE metric_type = 'performance'"
        ),
    )
    .await;
    assert_eq!(hours, 3 * 24);
    assert_eq!(
        built_days(&client, &schema).await,
        [
            ("performance".to_owned(), DAY0),
            ("performance".to_owned(), DAY0 + DAY),
            ("performance".to_owned(), DAY0 + 2 * DAY),
        ]
    );
    let day0 = daily_rows(&client, &schema, DAY0, "performance").await;
    assert_eq!(day0["*|*"].0, 2);
    assert_eq!(day0["/g|GET"].1["p50"].as_f64(), Some(1.5));
    // Empty days are complete with no daily rows.
    assert!(
        daily_rows(&client, &schema, DAY0 + DAY, "performance")
            .await
            .is_empty()
    );
    // A later run visits nothing again.
    let again = rollup_job(&db, &schema, DAY0 + 3 * DAY + 180)
        .run_once()
        .await
        .unwrap();
    assert_eq!(again.hours_rolled, 0);
}
