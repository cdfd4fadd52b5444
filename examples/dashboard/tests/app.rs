//! The example app's router driven in-process with `oneshot`.

use std::time::Duration;

use app_metrics::AppMetrics;
use app_metrics::identity::TrustedProxyHeaders;
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
    let metrics = AppMetrics::memory()
        .identity(TrustedProxyHeaders)
        .configure_collector(|c| c.linger(Duration::from_millis(10)))
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
    let metrics = AppMetrics::memory()
        .identity(TrustedProxyHeaders)
        .start()
        .await
        .unwrap();
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
    let metrics = AppMetrics::memory()
        .identity(TrustedProxyHeaders)
        .start()
        .await
        .unwrap();
    let app = example_dashboard::app(&metrics);
    get(&app, "/api/demo/items/1", None).await;
    metrics.flush().await.unwrap();
    let (s, _, body) = get(&app, "/api/demo/recorded", None).await;
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["collector"]["written"], 1, "{v}");
    // Every counter, the drops by reason included (the values moved on
    // since: this request is counted now).
    let collector = v["collector"].as_object().unwrap();
    let names: Vec<&str> = example_dashboard::counters::counters(&metrics.stats())
        .iter()
        .map(|(k, _)| *k)
        .collect();
    assert_eq!(collector.len(), names.len(), "{v}");
    for k in names {
        assert!(collector[k].is_u64(), "{k}: {v}");
    }
    assert_eq!(collector["dropped_queue_full"], 0, "{v}");
    assert_eq!(v["stored_requests"], 1);
    assert_eq!(v["recent"][0]["endpoint"], "/api/demo/items/{id}");
}

#[tokio::test]
async fn demo_pages_load_the_tracker_and_their_script() {
    let metrics = AppMetrics::memory()
        .identity(TrustedProxyHeaders)
        .start()
        .await
        .unwrap();
    let app = example_dashboard::app(&metrics);
    for page in ["/demo/", "/demo/reports.html"] {
        let (s, h, body) = get(&app, page, None).await;
        assert_eq!(s, 200, "{page}");
        assert_eq!(h["content-type"], "text/html; charset=utf-8");
        assert!(
            body.contains(
                r#"<script src="/metrics/tracker.js" data-endpoint="/api/v1/metrics/usage-events">"#
            ),
            "{page}: {body}"
        );
        assert!(body.contains(r#"src="/demo/demo.js""#), "{page}");
    }
    let (s, h, body) = get(&app, "/demo/demo.js", None).await;
    assert_eq!(
        (s, h["content-type"].to_str().unwrap()),
        (200, "text/javascript")
    );
    // Only event types of the default vocabulary.
    for kind in [
        "form_submit",
        "query_executed",
        "data_source_selected",
        "export_triggered",
    ] {
        assert!(body.contains(&format!("'{kind}'")), "{kind}");
        assert!(app_metrics::api::DEFAULT_EVENT_TYPES.contains(&kind));
    }
    let (s, h, _) = get(&app, "/demo", None).await;
    assert_eq!((s, h["location"].to_str().unwrap()), (308, "/demo/"));
}

#[tokio::test]
async fn auto_login_signs_in_only_requests_without_identity_headers() {
    const ADMIN: &str = "admin@example.com";
    let metrics = AppMetrics::memory()
        .identity(TrustedProxyHeaders)
        .admins(app_metrics::admin::StaticAdmins::new([ADMIN]))
        .start()
        .await
        .unwrap();
    let path = "/api/v1/metrics/performance";
    // Off by default: no identity, no numbers.
    let plain = example_dashboard::app(&metrics);
    assert_eq!(get(&plain, path, None).await.0, 401);

    let login = example_dashboard::demo::AutoLogin::new(ADMIN).unwrap();
    let app = example_dashboard::app_with(&metrics, Some(login));
    let (s, _, body) = get(&app, path, None).await;
    assert_eq!(s, 200, "{body}");
    // A request that names its user keeps it.
    assert_eq!(get(&app, path, Some("ada@example.com")).await.0, 403);
    let req = http::Request::get(path)
        .header("x-forwarded-user", "grace")
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.clone().oneshot(req).await.unwrap().status(), 403);

    metrics.flush().await.unwrap();
    let snap = metrics.memory_sink().unwrap().snapshot();
    let users: Vec<Option<&str>> = snap
        .requests()
        .iter()
        .map(|r| r.user_id.as_ref().map(|u| u.as_str()))
        .collect();
    assert_eq!(
        users,
        [None, Some(ADMIN), Some("ada@example.com"), Some("grace")]
    );
    assert!(example_dashboard::demo::AutoLogin::new(" ").is_none());
    assert!(example_dashboard::demo::AutoLogin::new("a\nb").is_none());
}
