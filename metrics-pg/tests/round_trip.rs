//! Every column of both raw tables survives a write through PgSink.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics_core::{
    Batch, CorrelationId, ErrorType, Method, MetricsSink, RequestRecord, Route, UsageEvent, UserId,
    WriteSummary,
};
use metrics_pg::PgSink;
use serde_json::json;
use support::{count, first, migrated_db, pool};

/// 2025-03-09 00:00:00 UTC.
const MIDNIGHT: u64 = 1_741_478_400;

fn micros_before_midnight() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(MIDNIGHT) - Duration::from_micros(1)
}

#[tokio::test]
async fn request_columns_round_trip() {
    let (db, schema) = migrated_db().await;
    let mut client = db.connect().await;
    // Give the boundary days partitions of their own, so the round trip also
    // shows the rows are routed to the right side of midnight.
    let days = [
        time::macros::date!(2025 - 03 - 08),
        time::macros::date!(2025 - 03 - 09),
    ];
    metrics_pg::create_partitions(&mut client, &schema, days)
        .await
        .unwrap();

    let long_route: &'static str = Box::leak("/r".repeat(127).into_boxed_str());
    assert_eq!(long_route.len(), 254);
    let long_route: &'static str = Box::leak(format!("{long_route}x").into_boxed_str());
    let cid = CorrelationId::generate();
    let full = RequestRecord::new(
        micros_before_midnight(),
        Route::from(String::from("/utilisateurs/{id}/é✓")),
        Method::from_bytes(b"PROPFIND").unwrap(),
        504,
        Duration::from_micros(12_345),
    )
    .with_user(Some(UserId::new("ada+ünïcödé@example.com")))
    .with_correlation_id(Some(cid.clone()))
    .with_error_type(Some(ErrorType::Timeout));
    let bare = RequestRecord::new(
        UNIX_EPOCH + Duration::from_secs(MIDNIGHT),
        Route::from_static(long_route),
        Method::GET,
        200,
        Duration::ZERO,
    );
    let backdated = RequestRecord::new(
        UNIX_EPOCH + Duration::from_secs(1_600_000_000),
        Route::from_static("/old"),
        Method::DELETE,
        404,
        Duration::from_millis(3),
    );
    let batch = Batch::from_parts(vec![full, bare, backdated], vec![]);
    let sink = PgSink::builder(pool(&db, 2))
        .schema(&schema)
        .build()
        .unwrap();
    assert_eq!(
        sink.write(&batch, first()).await.unwrap(),
        WriteSummary::all_written()
    );

    let rows = client
        .query(
            &format!(
                "SELECT id, \"timestamp\", endpoint, method, status_code, response_time_ms, user_id, \
                 error_type, correlation_id, tableoid::regclass::text \
                 FROM \"{schema}\".performance_metrics ORDER BY \"timestamp\" DESC"
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);

    let r = &rows[1];
    let id: uuid::Uuid = r.get(0);
    assert_eq!(id.get_version_num(), 7);
    assert_eq!(r.get::<_, SystemTime>(1), micros_before_midnight());
    assert_eq!(r.get::<_, &str>(2), "/utilisateurs/{id}/é✓");
    assert_eq!(r.get::<_, &str>(3), "PROPFIND");
    assert_eq!(r.get::<_, i32>(4), 504);
    assert_eq!(r.get::<_, f64>(5), 12.345);
    assert_eq!(r.get::<_, Option<&str>>(6), Some("ada+ünïcödé@example.com"));
    assert_eq!(r.get::<_, Option<&str>>(7), Some("Timeout"));
    assert_eq!(r.get::<_, Option<&str>>(8), Some(cid.as_str()));
    assert!(
        r.get::<_, &str>(9)
            .ends_with("performance_metrics_p20250308")
    );

    let r = &rows[0];
    assert_eq!(
        r.get::<_, SystemTime>(1),
        UNIX_EPOCH + Duration::from_secs(MIDNIGHT)
    );
    assert_eq!(r.get::<_, &str>(2).chars().count(), 255);
    assert_eq!(r.get::<_, &str>(3), "GET");
    assert_eq!(r.get::<_, f64>(5), 0.0);
    assert_eq!(r.get::<_, Option<&str>>(6), None);
    assert_eq!(r.get::<_, Option<&str>>(7), None);
    assert_eq!(r.get::<_, Option<&str>>(8), None);
    assert!(
        r.get::<_, &str>(9)
            .ends_with("performance_metrics_p20250309")
    );

    // A back-dated row without a partition of its own lands in the default
    // partition (nothing is lost) until maintenance gives it its day.
    let r = &rows[2];
    assert_eq!(r.get::<_, &str>(2), "/old");
    assert_eq!(r.get::<_, Option<&str>>(7), Some("HTTP_404"));
    assert!(r.get::<_, &str>(9).ends_with("performance_metrics_default"));
}

#[tokio::test]
async fn usage_columns_round_trip() {
    let (db, schema) = migrated_db().await;
    let client = db.client();
    let long_page = "é".repeat(255);
    let metadata = json!({
        "query": "naïve café ☕",
        "filters": {"tags": ["a", "b"], "range": {"from": 1, "to": [2, {"deep": null}]}},
        "n": 1.5,
        "ok": true
    });
    let received = UNIX_EPOCH + Duration::from_micros(1_741_478_399_999_999);
    let full = UsageEvent::new(
        "search",
        UserId::new("用户@example.com"),
        micros_before_midnight(),
    )
    .with_received_at(received)
    .with_page_name(Some(long_page.clone()))
    .with_element_id(Some("button.submit ✓".into()))
    .with_success(Some(false))
    .with_metadata(Some(metadata.clone()));
    let bare = UsageEvent::new(
        "page_view",
        UserId::new("u"),
        UNIX_EPOCH + Duration::from_secs(MIDNIGHT),
    )
    .with_received_at(received);
    let batch = Batch::from_parts(vec![], vec![full, bare]);
    let sink = PgSink::builder(pool(&db, 1))
        .schema(&schema)
        .build()
        .unwrap();
    assert_eq!(
        sink.write(&batch, first()).await.unwrap(),
        WriteSummary::all_written()
    );

    let rows = client
        .query(
            &format!(
                "SELECT id, \"timestamp\", received_at, event_type, user_id, page_name, element_id, \
                 success, metadata FROM \"{schema}\".usage_events ORDER BY \"timestamp\""
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    let r = &rows[0];
    assert_eq!(r.get::<_, uuid::Uuid>(0).get_version_num(), 7);
    assert_eq!(r.get::<_, SystemTime>(1), micros_before_midnight());
    assert_eq!(r.get::<_, SystemTime>(2), received);
    assert_eq!(r.get::<_, &str>(3), "search");
    assert_eq!(r.get::<_, &str>(4), "用户@example.com");
    assert_eq!(r.get::<_, Option<String>>(5), Some(long_page));
    assert_eq!(r.get::<_, Option<&str>>(6), Some("button.submit ✓"));
    assert_eq!(r.get::<_, Option<bool>>(7), Some(false));
    assert_eq!(r.get::<_, Option<serde_json::Value>>(8), Some(metadata));
    let r = &rows[1];
    assert_eq!(r.get::<_, &str>(3), "page_view");
    assert_eq!(r.get::<_, Option<&str>>(5), None);
    assert_eq!(r.get::<_, Option<&str>>(6), None);
    assert_eq!(r.get::<_, Option<bool>>(7), None);
    assert_eq!(r.get::<_, Option<serde_json::Value>>(8), None);
}

#[tokio::test]
async fn large_batch_is_split_across_streams_and_fully_written() {
    let (db, schema) = migrated_db().await;
    let sink = PgSink::builder(pool(&db, 3))
        .schema(&schema)
        .max_concurrent_copies(3)
        .min_rows_per_copy(100)
        .build()
        .unwrap();
    let t0 = support::at(1_741_478_400);
    let requests: Vec<_> = (0..1_000u64)
        .map(|i| support::req(t0 + Duration::from_millis(i), "/split", 200, i as f64))
        .collect();
    let usage: Vec<_> = (0..50u64)
        .map(|i| support::event(t0 + Duration::from_millis(i), "click", "u1"))
        .collect();
    let batch = Batch::from_parts(requests, usage);
    assert_eq!(
        sink.write(&batch, first()).await.unwrap(),
        WriteSummary::all_written()
    );
    let client = db.client();
    assert_eq!(count(client, &schema, "performance_metrics").await, 1_000);
    assert_eq!(count(client, &schema, "usage_events").await, 50);
    // Each latency was written exactly once.
    let distinct: i64 = client
        .query_one(
            &format!(
                "SELECT count(DISTINCT response_time_ms) FROM \"{schema}\".performance_metrics"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(distinct, 1_000);
    // An empty batch is a no-op.
    assert_eq!(
        sink.write(&Batch::new(), first()).await.unwrap(),
        WriteSummary::all_written()
    );
}
