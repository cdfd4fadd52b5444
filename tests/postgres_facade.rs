//! The facade wired to PostgreSQL: `.postgres_url(..)` migrates, creates partitions, and every
//! request recorded by the layer lands in `performance_metrics` by shutdown.

use std::time::Duration;

use app_metrics::AppMetrics;
use app_metrics::identity::TrustedProxyHeaders;
use app_metrics::store::Postgres;
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
    let metrics = AppMetrics::builder(Postgres::from_url(db.url()).schema(&schema))
        .identity(TrustedProxyHeaders)
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
async fn invalid_settings_are_start_errors_and_an_unreachable_database_is_not() {
    // What a restart cannot fix fails at once, without touching the network.
    let bad_schema = AppMetrics::builder(
        Postgres::from_url("postgres://nobody@127.0.0.1:1/none").schema("Not-A-Schema"),
    )
    .start()
    .await
    .expect_err("an invalid schema name");
    assert!(bad_schema.to_string().contains("schema"), "{bad_schema}");
    let bad_url = AppMetrics::postgres_url("postgres://x@h/db?port=notanumber")
        .start()
        .await
        .expect_err("an invalid connection string");
    assert!(bad_url.to_string().contains("PostgreSQL"), "{bad_url}");

    // Nothing listens on port 1: the app starts anyway (issue 13 F7).
    let metrics = AppMetrics::postgres_url("postgres://nobody@127.0.0.1:1/none?connect_timeout=2")
        .start()
        .await
        .expect("an unreachable database does not stop the app");
    assert!(
        metrics.collector().record(request_record()),
        "records are taken"
    );
    let stats = match metrics.shutdown(Duration::from_secs(1)).await {
        Ok(stats) | Err(app_metrics::ShutdownError::DeadlineExceeded(stats)) => stats,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(
        (stats.received, stats.written, stats.dropped_shutdown),
        (1, 0, 1),
        "{stats:?}"
    );
    assert!(stats.is_consistent(), "{stats:?}");
}

fn request_record() -> app_metrics::sink::RequestRecord {
    app_metrics::sink::RequestRecord::new(
        std::time::SystemTime::now(),
        app_metrics::sink::Route::from_static("/r"),
        app_metrics::sink::Method::GET,
        200,
        Duration::from_millis(1),
    )
}

#[tokio::test]
async fn started_facade_rolls_up_closed_hours_in_the_background() {
    let db = TestDb::new().await;
    let schema = db.name().to_owned();
    let mut client = db.connect().await;
    app_metrics::pg::migrate(&mut client, &schema)
        .await
        .unwrap();
    // Two rows in an hour that closed three hours ago (client-side ids, like the sink).
    client
        .batch_execute(&format!(
            "INSERT INTO \"{schema}\".performance_metrics
                 (id, \"timestamp\", endpoint, method, status_code, response_time_ms)
             VALUES (gen_random_uuid(), date_trunc('hour', now()) - interval '3 hours' + interval '5 minutes',
                     '/old/{{id}}', 'GET', 200, 12.5),
                    (gen_random_uuid(), date_trunc('hour', now()) - interval '3 hours' + interval '6 minutes',
                     '/old/{{id}}', 'GET', 500, 40.0)"
        ))
        .await
        .unwrap();

    let metrics = AppMetrics::builder(Postgres::from_url(db.url()).schema(&schema))
        .start()
        .await
        .unwrap();

    // The scheduler's first rollup runs right after start; poll for its row.
    let query = format!(
        "SELECT sample_count, aggregated_values->>'error_count'
         FROM \"{schema}\".aggregated_metrics
         WHERE metric_type = 'performance' AND endpoint_path = '/old/{{id}}'"
    );
    let mut found = None;
    for _ in 0..100 {
        if let Some(row) = client.query_opt(&query, &[]).await.unwrap() {
            found = Some(row);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    metrics.shutdown(Duration::from_secs(10)).await.unwrap();
    let row = found.expect("the in-process scheduler rolled up the closed hour");
    let samples: i64 = row
        .try_get::<_, i64>(0)
        .unwrap_or_else(|_| i64::from(row.get::<_, i32>(0)));
    assert_eq!(samples, 2);
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("1"));
}
