//! The facade wired to PostgreSQL: `.postgres_url(..)` migrates, creates partitions, and every
//! request recorded by the layer lands in `performance_metrics` by shutdown.

use std::time::Duration;

use app_metrics::AppMetrics;
use axum::{Router, body::Body, routing::get};
use http_body_util::BodyExt;
use test_support::TestDb;
use tower::ServiceExt;

async fn call(app: &Router, path: &str, user: &str) -> u16 {
    let req = http::Request::get(path)
        .header("x-forwarded-email", user)
        .header("x-correlation-id", "req-abc-123")
        .body(Body::empty())
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status().as_u16();
    res.into_body().collect().await.unwrap();
    status
}

#[tokio::test]
async fn requests_reach_postgres_through_the_facade() {
    let db = TestDb::new().await;
    // The test's own schema keeps it isolated even on a shared DATABASE_URL.
    let schema = db.name().to_owned();
    let metrics = AppMetrics::builder()
        .postgres_url(db.url())
        .postgres_schema(&schema)
        .trusted_proxy_headers()
        .start()
        .await
        .expect("start with PostgreSQL");

    let app = Router::new()
        .route("/users/{id}", get(|| async { "ada" }))
        .route(
            "/fail",
            get(|| async { (http::StatusCode::BAD_GATEWAY, "upstream down") }),
        )
        .layer(metrics.layer());

    for i in 0..25 {
        assert_eq!(
            call(&app, &format!("/users/{i}"), "ada@example.com").await,
            200
        );
    }
    assert_eq!(call(&app, "/fail", "grace@example.com").await, 502);

    let stats = metrics.shutdown(Duration::from_secs(30)).await.unwrap();
    assert_eq!(stats.written, 26, "{stats:?}");
    assert_eq!(stats.dropped(), 0, "{stats:?}");

    let client = db.connect().await;
    let rows = client
        .query(
            &format!(
                "SELECT endpoint, method, status_code, user_id, error_type, correlation_id, response_time_ms
                 FROM \"{schema}\".performance_metrics ORDER BY status_code, endpoint"
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 26);
    let users: Vec<(
        String,
        String,
        i32,
        Option<String>,
        Option<String>,
        Option<String>,
        f64,
    )> = rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                r.get(6),
            )
        })
        .collect();
    assert!(
        users[..25]
            .iter()
            .all(|u| u.0 == "/users/{id}" && u.2 == 200 && u.4.is_none())
    );
    assert!(
        users
            .iter()
            .all(|u| u.1 == "GET" && u.5.as_deref() == Some("req-abc-123") && u.6 >= 0.0)
    );
    let fail = &users[25];
    assert_eq!(fail.0, "/fail");
    assert_eq!(fail.2, 502);
    assert_eq!(fail.3.as_deref(), Some("grace@example.com"));
    assert_eq!(fail.4.as_deref(), Some("HTTP_502"));

    // start() created today's partition, so nothing went to the default one.
    let in_default: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM \"{schema}\".performance_metrics_default"),
            &[],
        )
        .await
        .map(|r| r.get(0))
        .unwrap_or(-1);
    assert_eq!(in_default, 0);
}

#[tokio::test]
async fn unreachable_database_is_a_clear_start_error() {
    let err = AppMetrics::builder()
        .postgres_url("postgres://nobody@127.0.0.1:1/none?connect_timeout=2")
        .start()
        .await
        .expect_err("nothing listens on port 1");
    let text = err.to_string();
    assert!(text.contains("PostgreSQL"), "{text}");
}
