//! The example app's router driven in-process with `oneshot`.

use std::time::Duration;

use app_metrics::AppMetrics;
use axum::body::Body;
use http_body_util::BodyExt;
use tower::ServiceExt;

async fn get(app: &axum::Router, path: &str, user: Option<&str>) -> (u16, http::HeaderMap, String) {
    let mut req = http::Request::get(path);
    if let Some(u) = user {
        req = req.header("x-forwarded-email", u);
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn demo_routes_are_recorded_with_templates_users_and_correlation_ids() {
    let metrics = AppMetrics::builder()
        .memory()
        .trusted_proxy_headers()
        .linger(Duration::from_millis(10))
        .start()
        .await
        .unwrap();
    let app = example_dashboard::app(&metrics);

    let (s, h, body) = get(&app, "/api/demo/items/42", Some("ada@example.com")).await;
    assert_eq!(s, 200);
    assert!(body.contains("item 42"));
    let cid = h["x-correlation-id"].to_str().unwrap().to_owned();

    let (s, h, _) = get(&app, "/api/demo/status/503", None).await;
    assert_eq!(s, 503);
    assert!(h.contains_key("x-correlation-id"), "echoed on errors too");

    let (s, _, _) = get(&app, "/api/demo/status/42", None).await;
    assert_eq!(s, 400, "codes outside 200..=599 are refused");

    let (s, _, _) = get(&app, "/health", None).await;
    assert_eq!(s, 200);

    let stats = metrics.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(stats.written, 3, "/health is excluded: {stats:?}");
    let snap = metrics.memory_sink().unwrap().snapshot();
    let reqs = snap.requests();
    assert_eq!(reqs[0].route, "/api/demo/items/{id}");
    assert_eq!(
        reqs[0].user_id.as_ref().unwrap().as_str(),
        "ada@example.com"
    );
    assert_eq!(reqs[0].correlation_id.as_ref().unwrap().as_str(), cid);
    assert_eq!(reqs[1].route, "/api/demo/status/{code}");
    assert_eq!(reqs[1].status, 503);
    assert_eq!(reqs[1].error_type.as_ref().unwrap().to_string(), "HTTP_503");
    assert!(reqs[1].user_id.is_none());
}

#[tokio::test(start_paused = true)]
async fn slow_route_is_capped_and_timed_to_the_body_end() {
    let metrics = AppMetrics::builder().memory().start().await.unwrap();
    let app = example_dashboard::app(&metrics);
    let (s, _, body) = get(&app, "/api/demo/slow?ms=999999", None).await;
    assert_eq!(s, 200);
    assert!(
        body.contains(&example_dashboard::MAX_SLOW_MS.to_string()),
        "{body}"
    );
    metrics.shutdown(Duration::from_secs(5)).await.unwrap();
    let snap = metrics.memory_sink().unwrap().snapshot();
    let ms = snap.requests()[0].response_time_ms;
    assert!(
        ms >= example_dashboard::MAX_SLOW_MS as f64,
        "duration {ms} ms must include the handler's sleep"
    );
}

#[tokio::test]
async fn recorded_view_reports_collector_counters() {
    let metrics = AppMetrics::builder().memory().start().await.unwrap();
    let app = example_dashboard::app(&metrics);
    get(&app, "/api/demo/items/1", None).await;
    metrics.flush().await.unwrap();
    let (s, _, body) = get(&app, "/api/demo/recorded", None).await;
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["collector"]["written"], 1, "{v}");
    assert_eq!(v["stored_requests"], 1);
    assert_eq!(v["recent"][0]["endpoint"], "/api/demo/items/{id}");
}
