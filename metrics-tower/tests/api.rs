//! The dashboard API's HTTP contract (DESIGN §5) over the memory store:
//! every status and body, access rules, ingest limits, range rules, answers
//! for known data, store failures and the correlation id on errors.

#![cfg(feature = "axum")]

mod api_support;

use std::sync::Arc;
use std::time::Duration;

use api_support::*;
use axum::body::Body;
use http::{Request, StatusCode};
use metrics_core::{Method, RequestRecord, Route, SharedAdminCheck, UsageEvent, UserId};
use metrics_tower::axum::api::DEFAULT_EVENT_TYPES;
use serde_json::{Value, json};

/// The admin reads, each with its required parameters.
const ADMIN_PATHS: [&str; 4] = [
    "/performance",
    "/usage",
    "/time-series?metric_type=performance",
    "/requests?endpoint=/users/%7Bid%7D",
];
/// Every read, each with its required parameters.
const READ_PATHS: [&str; 5] = [
    "/performance",
    "/usage",
    "/time-series?metric_type=both",
    "/usage/count",
    "/requests?endpoint=/users/%7Bid%7D",
];

// ===== access =====

#[tokio::test]
async fn admin_endpoints_answer_401_403_503_with_the_guard_bodies() {
    let h = Harness::new();
    let broken = Harness::custom(
        None,
        Some(SharedAdminCheck::new(BrokenAdmins)),
        None,
        |api| api,
    );
    for path in ADMIN_PATHS {
        let a = h.get(path, None).await;
        assert_eq!(a.status, 401, "{path}");
        assert_eq!(
            a.json(),
            json!({"error":"Unauthorized","message":"Authentication required","status_code":401})
        );
        let a = h.get(path, Some(USER)).await;
        assert_eq!(a.status, 403, "{path}");
        assert_eq!(
            a.json(),
            json!({"error":"Access Denied","message":"Administrator privileges required to access metrics","status_code":403})
        );
        let a = broken.get(path, Some(ADMIN)).await;
        assert_eq!(a.status, 503, "{path}");
        assert_eq!(
            a.json(),
            json!({"error":"Service Unavailable","message":"Unable to verify administrator privileges","status_code":503})
        );
        assert_eq!(h.get(path, Some(ADMIN)).await.status, 200, "{path}");
        // The guard comes before the parameters.
        let a = h.get(&with_query(path, "time_range=1y"), Some(USER)).await;
        assert_eq!(a.status, 403, "{path}");
    }
}

#[tokio::test]
async fn ingest_and_count_need_an_identity_before_anything_else() {
    let h = Harness::new();
    let unauthenticated =
        json!({"error":"Unauthorized","message":"Authentication required","status_code":401});
    for body in [r#"{"events":[]}"#, "{not json", ""] {
        let a = h.post_events(None, body).await;
        assert_eq!(a.status, 401, "{body:?}");
        assert_eq!(a.json(), unauthenticated);
    }
    let a = h.send(post(None, Some("application/xml"), "<x/>")).await;
    assert_eq!(a.status, 401, "content type is checked after the identity");
    let big = vec![b' '; 2 * 1024 * 1024];
    assert_eq!(h.post_events(None, big).await.status, 401);
    let a = h.get("/usage/count", None).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.json(), unauthenticated);
    // Non-admins may use both.
    assert_eq!(
        h.post_events(Some(USER), batch(&[event("page_view", secs(1))]))
            .await
            .status,
        202
    );
    assert_eq!(h.get("/usage/count", Some(USER)).await.status, 200);
    assert_eq!(h.stored_events().await.len(), 1);
}

#[tokio::test]
async fn openapi_document_is_public_json() {
    let h = Harness::new();
    let a = h.get("/openapi.json", None).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["content-type"], "application/json");
    let doc = a.json();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/usage-events"]["post"].is_object());
}

#[tokio::test]
async fn unknown_paths_and_methods_get_404_and_405_envelopes() {
    let h = Harness::new();
    let msg = h.get("/nope", Some(ADMIN)).await.assert_error(404);
    assert!(msg.contains("/nope"), "{msg}");
    let a = h
        .send(
            Request::delete(format!("{BASE}/performance"))
                .header("x-forwarded-email", ADMIN)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    a.assert_error(405);
    assert!(a.headers["allow"].to_str().unwrap().contains("GET"));
    let a = h.send(get("/usage-events", Some(USER))).await;
    a.assert_error(405);
    assert_eq!(a.headers["allow"], "POST");
}

// ===== ingest =====

#[tokio::test]
async fn accepted_batch_is_202_and_stored_as_the_caller() {
    let h = Harness::new();
    let events = [
        json!({
            "event_type": "button_click",
            "timestamp": ts(now() - secs(90)),
            "page_name": "/checkout",
            "element_id": "pay",
            "success": true,
            "metadata": {"cart": {"items": 3}},
            "user_id": "mallory@example.com",
            "unknown_field": [1, 2, 3]
        }),
        json!({"event_type": "page_view", "timestamp": "2024-06-01T14:29:00+02:00", "page_name": null}),
    ];
    let a = h.post_events(Some(USER), batch(&events)).await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
    assert_eq!(
        a.text,
        r#"{"message":"Events accepted","events_received":2,"status":"queued"}"#
    );
    let stored = h.stored_events().await;
    assert_eq!(stored.len(), 2);
    let click = &stored[0];
    assert_eq!(click.user_id.as_str(), USER, "never the body's user_id");
    assert_eq!(click.event_type, "button_click");
    assert_eq!(click.timestamp, now() - secs(90));
    assert_eq!(click.received_at, now());
    assert_eq!(click.page_name.as_deref(), Some("/checkout"));
    assert_eq!(click.element_id.as_deref(), Some("pay"));
    assert_eq!(click.success, Some(true));
    assert_eq!(click.metadata, Some(json!({"cart": {"items": 3}})));
    let view = &stored[1];
    assert_eq!(view.user_id.as_str(), USER);
    assert_eq!(view.timestamp, now() - secs(60), "offsets are honoured");
    assert_eq!((view.page_name.as_deref(), view.success), (None, None));
}

#[tokio::test]
async fn content_types_json_text_plain_or_none_and_415_otherwise() {
    let h = Harness::new();
    let body = batch(&[event("form_submit", secs(5))]);
    for ct in [
        Some("application/json"),
        Some("application/json; charset=utf-8"),
        Some("text/plain"),
        Some("text/plain;charset=UTF-8"),
        Some("Text/Plain"),
        None,
    ] {
        let a = h.send(post(Some(USER), ct, body.clone())).await;
        assert_eq!(a.status, 202, "{ct:?}: {}", a.text);
    }
    assert_eq!(h.stored_events().await.len(), 6);
    for ct in [
        "application/xml",
        "multipart/form-data; boundary=x",
        "application/jsonx",
    ] {
        let a = h.send(post(Some(USER), Some(ct), body.clone())).await;
        let msg = a.assert_error(415);
        assert!(msg.contains("application/json"), "{msg}");
    }
    assert_eq!(h.stored_events().await.len(), 6, "nothing queued on 415");
}

#[tokio::test]
async fn batch_size_limits() {
    let h = Harness::new();
    let a = h.post_events(Some(USER), batch(&[])).await;
    a.assert_error(422);

    let events: Vec<Value> = (0..1001).map(|_| event("file_uploaded", secs(1))).collect();
    let a = h.post_events(Some(USER), batch(&events)).await;
    assert_eq!(a.status, 413);
    assert_eq!(
        a.text,
        r#"{"detail":"Batch size exceeds maximum of 1000 events","max_batch_size":1000,"received":1001}"#
    );
    // Counted even when the excess events are not events at all.
    let body = format!(r#"{{"events":[{}]}}"#, vec!["0"; 1500].join(","));
    let a = h.post_events(Some(USER), body).await;
    assert_eq!(a.status, 413);
    assert_eq!(a.json()["received"], 1500);
    assert!(h.stored_events().await.is_empty());

    let a = h.post_events(Some(USER), batch(&events[..1000])).await;
    assert_eq!(a.status, 202, "{}", a.text);
    assert_eq!(a.json()["events_received"], 1000);
    assert_eq!(h.stored_events().await.len(), 1000);
}

#[tokio::test]
async fn bodies_over_the_byte_limit_are_413() {
    let h = Harness::new();
    // Valid JSON, just too long: padding inside an ignored field.
    let pad = "x".repeat(1024 * 1024);
    let body = format!(r#"{{"pad":"{pad}","events":[]}}"#);
    assert!(body.len() > 1024 * 1024);
    let msg = h
        .post_events(Some(USER), body.clone())
        .await
        .assert_error(413);
    assert!(msg.contains("1048576"), "{msg}");
    // Without a Content-Length (streamed): still refused while reading.
    let streamed = Body::new(Streamed::new(body.into_bytes(), 64 * 1024));
    h.send(post(Some(USER), None, streamed))
        .await
        .assert_error(413);

    // A smaller configured limit applies.
    let small = Harness::with(|api| api.max_body_bytes(100));
    let events = batch(&[
        event("query_executed", secs(1)),
        event("query_executed", secs(2)),
    ]);
    assert!(events.len() > 100);
    small
        .post_events(Some(USER), events)
        .await
        .assert_error(413);
    let one = batch(&[event("query_executed", secs(1))]);
    assert!(one.len() <= 100);
    assert_eq!(small.post_events(Some(USER), one).await.status, 202);
}

#[tokio::test]
async fn malformed_json_is_400_and_wrong_shapes_422() {
    let h = Harness::new();
    for body in [
        "{not json",
        r#"{"events":[{"event_type":"form_submit"}"#,
        "",
    ] {
        let msg = h.post_events(Some(USER), body).await.assert_error(400);
        assert!(msg.contains("not valid JSON"), "{msg}");
    }
    for body in [
        r#"{"events":{}}"#,
        r#"{"evts":[]}"#,
        "[]",
        r#"{"events":null}"#,
    ] {
        h.post_events(Some(USER), body).await.assert_error(422);
    }
    assert!(h.stored_events().await.is_empty());
}

/// Each field rule: the body with one bad event among good ones is a 422
/// naming that event and field, and nothing is queued.
#[tokio::test]
async fn every_field_limit_is_a_422_for_the_whole_batch() {
    let h = Harness::new();
    let deep = |levels: usize| {
        let mut v = json!({});
        for _ in 1..levels {
            v = json!({ "n": v });
        }
        v
    };
    // {"k":"…"} is 8 bytes plus the string.
    let sized = |bytes: usize| json!({ "k": "m".repeat(bytes - 8) });
    assert_eq!(
        serde_json::to_string(&sized(16 * 1024)).unwrap().len(),
        16 * 1024
    );
    let base = || event("page_view", secs(10));
    let with = |k: &str, v: Value| {
        let mut e = base();
        e[k] = v;
        e
    };
    let without = |k: &str| {
        let mut e = base();
        e.as_object_mut().unwrap().remove(k);
        e
    };
    let bad: Vec<(&str, Value, &str)> = vec![
        (
            "page_name",
            with("page_name", json!("p".repeat(256))),
            "at most 255 characters",
        ),
        (
            "element_id",
            with("element_id", json!("é".repeat(256))),
            "at most 255 characters",
        ),
        (
            "metadata",
            with("metadata", sized(16 * 1024 + 1)),
            "at most 16384 bytes",
        ),
        (
            "metadata",
            with("metadata", deep(11)),
            "at most 10 levels deep",
        ),
        ("metadata", with("metadata", json!([1])), "JSON object"),
        (
            "event_type",
            with("event_type", json!("teleport")),
            "Invalid event_type: 'teleport'",
        ),
        (
            "event_type",
            with("event_type", json!("x".repeat(101))),
            "at most 100 characters",
        ),
        (
            "event_type",
            without("event_type"),
            "event_type is required",
        ),
        (
            "event_type",
            with("event_type", json!(7)),
            "must be a string",
        ),
        ("timestamp", without("timestamp"), "timestamp is required"),
        (
            "timestamp",
            with("timestamp", json!("yesterday")),
            "RFC 3339",
        ),
        (
            "timestamp",
            with("timestamp", json!(ts(now() - DAY - secs(1)))),
            "more than 24 h before",
        ),
        (
            "timestamp",
            with("timestamp", json!(ts(now() + secs(301)))),
            "more than 5 min after",
        ),
        ("success", with("success", json!("yes")), "boolean"),
        ("event", json!("page_view"), "JSON object"),
    ];
    for (field, bad_event, expected) in bad {
        let a = h
            .post_events(Some(USER), batch(&[base(), bad_event.clone(), base()]))
            .await;
        a.assert_error(422);
        let details = a.json()["details"]["errors"].clone();
        assert_eq!(
            details.as_array().unwrap().len(),
            1,
            "{bad_event}: {details}"
        );
        assert_eq!(details[0]["index"], 1, "{details}");
        assert_eq!(details[0]["field"], field, "{details}");
        let message = details[0]["message"].as_str().unwrap();
        assert!(
            message.contains(expected),
            "{field}: {message:?} lacks {expected:?}"
        );
    }
    assert!(h.stored_events().await.is_empty(), "nothing queued");

    // The limits themselves are accepted.
    let edge = [
        with("page_name", json!("p".repeat(255))),
        with("element_id", json!("é".repeat(255))),
        with("metadata", sized(16 * 1024)),
        with("metadata", deep(10)),
        with("event_type", json!("export_triggered")),
        with("timestamp", json!(ts(now() - DAY))),
        with("timestamp", json!(ts(now() + secs(300)))),
        with("success", json!(false)),
        with("metadata", Value::Null),
    ];
    let a = h.post_events(Some(USER), batch(&edge)).await;
    assert_eq!(a.status, 202, "{}", a.text);
    assert_eq!(h.stored_events().await.len(), edge.len());
}

#[tokio::test]
async fn every_problem_of_every_event_is_listed() {
    let h = Harness::new();
    let events = [
        json!({"event_type": "teleport"}),
        event("page_view", secs(1)),
        json!({"timestamp": "soon", "success": 1}),
    ];
    let a = h.post_events(Some(USER), batch(&events)).await;
    a.assert_error(422);
    let found: Vec<(u64, String)> = a.json()["details"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["index"].as_u64().unwrap(),
                d["field"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            (0, "event_type".to_owned()),
            (0, "timestamp".to_owned()),
            (2, "event_type".to_owned()),
            (2, "timestamp".to_owned()),
            (2, "success".to_owned()),
        ]
    );
}

#[tokio::test]
async fn vocabulary_and_skew_are_configurable() {
    assert_eq!(DEFAULT_EVENT_TYPES.len(), 10);
    let h = Harness::with(|api| api.allow_event_types(["checkout"]));
    let a = h
        .post_events(
            Some(USER),
            batch(&[event("checkout", secs(1)), event("page_view", secs(1))]),
        )
        .await;
    assert_eq!(a.status, 202, "{}", a.text);

    let only = Harness::with(|api| api.event_types(["checkout"]));
    only.post_events(Some(USER), batch(&[event("page_view", secs(1))]))
        .await
        .assert_error(422);
    assert_eq!(
        only.post_events(Some(USER), batch(&[event("checkout", secs(1))]))
            .await
            .status,
        202
    );

    let tight = Harness::with(|api| api.clock_skew(secs(10), secs(60)));
    let a = tight
        .post_events(Some(USER), batch(&[event("page_view", secs(61))]))
        .await;
    a.assert_error(422);
    assert!(a.text.contains("more than 1 min before"), "{}", a.text);
    let ahead = json!({"event_type": "page_view", "timestamp": ts(now() + secs(11))});
    let a = tight.post_events(Some(USER), batch(&[ahead])).await;
    a.assert_error(422);
    assert!(a.text.contains("more than 10 s after"), "{}", a.text);
}

#[tokio::test]
async fn a_full_queue_is_503_and_the_refusals_are_counted() {
    let (stalled, _worker) = stalled_collector(1);
    let h = Harness::custom(None, None, Some(stalled.clone()), |api| api);
    let a = h
        .post_events(
            Some(USER),
            batch(&[
                event("query_executed", secs(1)),
                event("query_executed", secs(2)),
            ]),
        )
        .await;
    assert_eq!(a.status, 503);
    assert_eq!(
        a.json(),
        json!({"error":"Service Unavailable","message":"The metrics queue is full; retry later","status_code":503})
    );
    let stats = stalled.stats();
    assert_eq!((stats.received, stats.dropped_queue_full), (2, 1));
}

#[tokio::test]
async fn a_shut_down_collector_is_503() {
    let ingest = metrics_core::Collector::builder(metrics_core::MemorySink::new())
        .spawn()
        .unwrap();
    ingest.shutdown(Duration::from_secs(1)).await.unwrap();
    let h = Harness::custom(None, None, Some(ingest.clone()), |api| api);
    let msg = h
        .post_events(Some(USER), batch(&[event("query_executed", secs(1))]))
        .await
        .assert_error(503);
    assert_eq!(msg, "The metrics queue is full; retry later");
    assert_eq!(ingest.stats().dropped_closed, 1);
}

// ===== ranges =====

#[tokio::test]
async fn custom_range_rules_are_400_with_their_messages() {
    let h = Harness::new();
    let hour = secs(3_600);
    let cases = [
        (
            now() - hour,
            now() - 2 * hour,
            "start_date must be before end_date",
        ),
        (
            now() - hour,
            now() + secs(61),
            "end_date must not be in the future",
        ),
        (
            now() - 100 * DAY,
            now() - 5 * DAY,
            "the range from start_date to end_date must not span more than 90 days",
        ),
        (
            now() - 95 * DAY,
            now() - 10 * DAY,
            "start_date must not be more than 90 days ago (data is kept for 90 days)",
        ),
    ];
    for path in READ_PATHS {
        for (start, end, expected) in &cases {
            let q = with_query(
                path,
                &format!("start_date={}&end_date={}", ts(*start), ts(*end)),
            );
            let msg = h.get(&q, Some(ADMIN)).await.assert_error(400);
            assert_eq!(msg, *expected, "{q}");
        }
    }
}

#[tokio::test]
async fn exactly_ninety_days_and_a_slightly_fast_end_are_accepted() {
    let h = Harness::new();
    let q = format!(
        "/performance?start_date={}&end_date={}",
        ts(now() - 90 * DAY),
        ts(now())
    );
    let a = h.get(&q, Some(ADMIN)).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let body = a.json();
    assert_eq!(body["time_range"], "custom");
    assert_eq!(body["start_time"], ts(now() - 90 * DAY));
    let q = format!(
        "/performance?start_date={}&end_date={}",
        ts(now() - 90 * DAY - secs(1)),
        ts(now())
    );
    h.get(&q, Some(ADMIN)).await.assert_error(400);
    // 30 s ahead (a browser clock running fast) is served up to now.
    let q = format!(
        "/usage?start_date={}&end_date={}",
        ts(now() - secs(3_600)),
        ts(now() + secs(30))
    );
    let a = h.get(&q, Some(ADMIN)).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json()["end_time"], ts(now()));
}

#[tokio::test]
async fn unreadable_parameters_are_422() {
    let h = Harness::new();
    let start = ts(now() - secs(3_600));
    let cases = [
        (
            "/performance?time_range=1y".to_owned(),
            "time_range must be one of",
        ),
        (format!("/usage?start_date={start}"), "end_date is missing"),
        (
            format!("/usage/count?end_date={start}"),
            "start_date is missing",
        ),
        (
            format!("/performance?start_date=yesterday&end_date={start}"),
            "start_date must be an RFC 3339 timestamp",
        ),
        (
            "/time-series?metric_type=both&interval=daily".to_owned(),
            "interval must be one of",
        ),
        (
            "/time-series?time_range=7d".to_owned(),
            "metric_type is required: one of performance, usage, both",
        ),
        (
            "/time-series?metric_type=latency".to_owned(),
            "metric_type must be one of",
        ),
        (
            "/usage?time_range=7d&time_range=30d".to_owned(),
            "invalid query string",
        ),
        // CONTRACT §1: at most 500 characters, checked before the range.
        (
            format!("/performance?endpoint=/{}&start_date=x", "a".repeat(500)),
            "endpoint must be at most 500 characters (got 501)",
        ),
    ];
    for (q, expected) in cases {
        let msg = h.get(&q, Some(ADMIN)).await.assert_error(422);
        assert!(msg.contains(expected), "{q}: {msg:?}");
    }
    // Unknown and empty parameters are ignored.
    let a = h
        .get(
            "/performance?time_range=7d&start_date=&colour=blue",
            Some(ADMIN),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json()["time_range"], "7d");
}

// ===== answers =====

#[tokio::test]
async fn empty_store_answers_zeros_and_empty_lists() {
    let h = Harness::new();
    let a = h.get("/performance", Some(ADMIN)).await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.json(),
        json!({
            "time_range": "24h",
            "start_time": ts(now() - DAY),
            "end_time": ts(now()),
            "metrics": {
                "total_requests": 0, "avg_response_time_ms": 0.0, "p50_response_time_ms": 0.0,
                "p95_response_time_ms": 0.0, "p99_response_time_ms": 0.0, "error_rate": 0.0,
                "active_users": 0
            },
            "endpoints": []
        })
    );
    let a = h.get("/usage?time_range=90d", Some(ADMIN)).await;
    assert_eq!(
        a.json(),
        json!({
            "time_range": "90d",
            "start_time": ts(now() - 90 * DAY),
            "end_time": ts(now()),
            "metrics": {"total_events": 0, "unique_users": 0, "active_users": 0, "active_users_current_hour": 0},
            "event_distribution": {},
            "page_views": {}
        })
    );
    let a = h
        .get(
            "/time-series?metric_type=performance&time_range=7d",
            Some(ADMIN),
        )
        .await;
    assert_eq!(
        a.json(),
        json!({
            "metric_type": "performance",
            "interval": "hourly",
            "time_range": "7d",
            "start_time": ts(now() - 7 * DAY),
            "end_time": ts(now()),
            "data_points": []
        })
    );
    let a = h.get("/usage/count?time_range=30d", Some(USER)).await;
    assert_eq!(
        a.json(),
        json!({
            "count": 0,
            "user_id": USER,
            "time_range": "30d",
            "start_time": ts(now() - 30 * DAY),
            "end_time": ts(now())
        })
    );
}

fn request(
    ago: Duration,
    route: &'static str,
    method: Method,
    status: u16,
    ms: u64,
    user: &str,
) -> RequestRecord {
    RequestRecord::new(
        now() - ago,
        Route::from_static(route),
        method,
        status,
        Duration::from_millis(ms),
    )
    .with_user(Some(UserId::new(user)))
}

fn usage_event(ago: Duration, event_type: &str, page: Option<&str>, user: &str) -> UsageEvent {
    UsageEvent::new(event_type, UserId::new(user), now() - ago)
        .with_page_name(page.map(str::to_owned))
}

/// Two endpoints, three users, usage events; one request outside 24 h.
fn seed(h: &Harness) {
    let s = &h.store;
    for (ms, status) in [(10, 200), (20, 200), (30, 500)] {
        s.insert(request(
            secs(600),
            "/users/{id}",
            Method::GET,
            status,
            ms,
            ADMIN,
        ));
    }
    s.insert(request(secs(120), "/orders", Method::POST, 201, 200, USER));
    s.insert(request(
        2 * DAY,
        "/orders",
        Method::POST,
        201,
        900,
        "old@example.com",
    ));
    s.insert(usage_event(secs(60), "page_view", Some("/home"), USER));
    s.insert(usage_event(secs(7_200), "page_view", Some("/home"), USER));
    s.insert(usage_event(
        secs(300),
        "button_click",
        Some("/cart"),
        "carol@example.com",
    ));
    s.insert(usage_event(3 * DAY, "query_executed", None, USER));
}

#[tokio::test]
async fn performance_report_for_known_data() {
    let h = Harness::new();
    seed(&h);
    let body = h.get("/performance", Some(ADMIN)).await.json();
    let m = &body["metrics"];
    assert_eq!(m["total_requests"], 4);
    assert_eq!(m["error_rate"], 0.25);
    assert_eq!(m["active_users"], 2);
    assert_eq!(m["avg_response_time_ms"], 65.0);
    let endpoints = body["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 2);
    assert_eq!(endpoints[0]["endpoint"], "/orders", "slowest first");
    assert_eq!(endpoints[0]["method"], "POST");
    assert_eq!(endpoints[1]["endpoint"], "/users/{id}");
    assert_eq!(endpoints[1]["request_count"], 3);
    assert_eq!(endpoints[1]["error_count"], 1);
    // The latency sketch is exact to within 1 %.
    let p50 = endpoints[1]["p50_response_time_ms"].as_f64().unwrap();
    assert!((p50 - 20.0).abs() <= 0.2, "{p50}");

    let body = h
        .get("/performance?time_range=7d", Some(ADMIN))
        .await
        .json();
    assert_eq!(body["metrics"]["total_requests"], 5);

    let body = h
        .get("/performance?endpoint=/users/%7Bid%7D", Some(ADMIN))
        .await
        .json();
    assert_eq!(body["metrics"]["total_requests"], 3);
    assert_eq!(body["endpoints"].as_array().unwrap().len(), 1);

    // An endpoint filter of exactly 500 characters is served (and matches nothing).
    let longest = format!("/performance?endpoint=/{}", "a".repeat(499));
    let a = h.get(&longest, Some(ADMIN)).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json()["metrics"]["total_requests"], 0);
}

#[tokio::test]
async fn usage_report_for_known_data() {
    let h = Harness::new();
    seed(&h);
    let body = h.get("/usage", Some(ADMIN)).await.json();
    assert_eq!(
        body["metrics"],
        json!({"total_events": 3, "unique_users": 2, "active_users": 3, "active_users_current_hour": 3})
    );
    assert_eq!(
        body["event_distribution"],
        json!({"page_view": 2, "button_click": 1})
    );
    // Page views only: the click on /cart is not one.
    assert_eq!(body["page_views"], json!({"/home": 2}));

    let body = h
        .get(
            "/usage?time_range=7d&event_type=query_executed",
            Some(ADMIN),
        )
        .await
        .json();
    assert_eq!(body["metrics"]["total_events"], 1);
    assert_eq!(body["event_distribution"], json!({"query_executed": 1}));
}

#[tokio::test]
async fn time_series_for_known_data() {
    let h = Harness::new();
    seed(&h);
    let body = h
        .get("/time-series?metric_type=performance", Some(ADMIN))
        .await
        .json();
    assert_eq!(body["metric_type"], "performance");
    assert_eq!(body["interval"], "5min");
    let points = body["data_points"].as_array().unwrap();
    // 24 h of 5-minute buckets (the range starts on a bucket boundary).
    assert_eq!(points.len(), 24 * 12);
    let with_requests: Vec<(&str, u64)> = points
        .iter()
        .filter(|p| p["total_requests"].as_u64().unwrap() > 0)
        .map(|p| {
            (
                p["timestamp"].as_str().unwrap(),
                p["total_requests"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        with_requests,
        [("2024-06-01T12:20:00Z", 3), ("2024-06-01T12:25:00Z", 1)]
    );
    assert!(points[0].get("total_events").is_none());

    let body = h
        .get("/time-series?metric_type=both&time_range=7d", Some(ADMIN))
        .await
        .json();
    assert_eq!(body["interval"], "hourly");
    let points = body["data_points"].as_array().unwrap();
    let last = points.last().unwrap();
    assert_eq!(last["timestamp"], "2024-06-01T12:00:00Z");
    assert_eq!(
        (
            last["total_requests"].as_u64(),
            last["total_events"].as_u64()
        ),
        (Some(4), Some(2))
    );
    assert_eq!(last["unique_users"], 2);

    let body = h
        .get(
            "/time-series?metric_type=usage&interval=hourly",
            Some(ADMIN),
        )
        .await
        .json();
    assert_eq!(body["interval"], "hourly");
    let points = body["data_points"].as_array().unwrap();
    assert!(points.iter().all(|p| p.get("total_requests").is_none()));
    let events: u64 = points
        .iter()
        .map(|p| p["total_events"].as_u64().unwrap())
        .sum();
    assert_eq!(events, 3);
}

// ===== drill-down =====

#[tokio::test]
async fn time_series_filtered_by_endpoint_and_method() {
    let h = Harness::new();
    seed(&h);
    let requests = |body: &Value| -> Vec<(String, u64)> {
        body["data_points"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["total_requests"].as_u64().unwrap() > 0)
            .map(|p| {
                (
                    p["timestamp"].as_str().unwrap().to_owned(),
                    p["total_requests"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let events = |body: &Value| -> u64 {
        body["data_points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["total_events"].as_u64().unwrap())
            .sum()
    };
    let all = h
        .get("/time-series?metric_type=both", Some(ADMIN))
        .await
        .json();
    let users = h
        .get(
            "/time-series?metric_type=both&endpoint=/users/%7Bid%7D",
            Some(ADMIN),
        )
        .await
        .json();
    assert_eq!(users["interval"], "5min");
    assert_eq!(requests(&users), [("2024-06-01T12:20:00Z".to_owned(), 3)]);
    let p = users["data_points"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["total_requests"] == 3)
        .unwrap();
    assert_eq!(
        (&p["error_count"], &p["p50_response_time_ms"]),
        (&json!(1), &json!(20.0))
    );
    // Usage fields are never filtered: usage events belong to no endpoint.
    assert_eq!(events(&users), events(&all));
    assert_eq!(events(&all), 3);
    let get = h
        .get(
            "/time-series?metric_type=performance&endpoint=/users/%7Bid%7D&method=GET&time_range=7d",
            Some(ADMIN),
        )
        .await
        .json();
    assert_eq!(get["interval"], "hourly");
    assert_eq!(requests(&get), [("2024-06-01T12:00:00Z".to_owned(), 3)]);
    // Another method, another endpoint: nothing (an empty list without
    // usage fields, zeros beside them).
    for q in [
        "/time-series?metric_type=performance&endpoint=/users/%7Bid%7D&method=POST",
        "/time-series?metric_type=performance&endpoint=/nowhere",
    ] {
        let body = h.get(q, Some(ADMIN)).await.json();
        assert_eq!(body["data_points"], json!([]), "{q}");
    }
    let orders = h
        .get(
            "/time-series?metric_type=both&endpoint=/orders&method=POST&time_range=7d",
            Some(ADMIN),
        )
        .await
        .json();
    assert_eq!(
        requests(&orders),
        [
            ("2024-05-30T12:00:00Z".to_owned(), 1),
            ("2024-06-01T12:00:00Z".to_owned(), 1)
        ]
    );
    // An empty filter is no filter.
    let unfiltered = h
        .get(
            "/time-series?metric_type=both&endpoint=&method=",
            Some(ADMIN),
        )
        .await
        .json();
    assert_eq!(unfiltered, all);
}

#[tokio::test]
async fn drill_down_parameters_are_checked() {
    let h = Harness::new();
    let long = "e".repeat(501);
    let ts_base = "/time-series?metric_type=performance";
    let unreadable = [
        (
            format!("{ts_base}&endpoint=/{long}"),
            "endpoint must be at most 500 characters",
        ),
        (
            format!("{ts_base}&method=GET"),
            "method filters one endpoint's requests: give endpoint too",
        ),
        (
            format!("{ts_base}&endpoint=/x&method={}", "M".repeat(33)),
            "method must be an HTTP method such as GET, at most 32 characters",
        ),
        (
            "/requests".to_owned(),
            "endpoint is required: the route template",
        ),
        ("/requests?endpoint=".to_owned(), "endpoint is required"),
        (
            format!("/requests?endpoint=/{long}"),
            "endpoint must be at most 500 characters",
        ),
        (
            format!("/requests?endpoint=/x&method={}", "M".repeat(33)),
            "method must be an HTTP method",
        ),
        (
            "/requests?endpoint=/x&limit=0".to_owned(),
            "limit must be a whole number from 1 to 100 (got \"0\")",
        ),
        (
            "/requests?endpoint=/x&limit=101".to_owned(),
            "limit must be a whole number from 1 to 100 (got \"101\")",
        ),
        (
            "/requests?endpoint=/x&limit=ten".to_owned(),
            "limit must be a whole number from 1 to 100 (got \"ten\")",
        ),
        (
            "/requests?endpoint=/x&time_range=1y".to_owned(),
            "time_range must be one of",
        ),
    ];
    for (q, expected) in unreadable {
        let msg = h.get(&q, Some(ADMIN)).await.assert_error(422);
        assert!(msg.contains(expected), "{q}: {msg:?}");
    }
    // 500 characters is fine.
    let a = h
        .get(
            &format!("{ts_base}&endpoint=/{}", "e".repeat(499)),
            Some(ADMIN),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    // 5-minute buckets of one endpoint exist for the raw retention only.
    let msg = h
        .get(
            &format!("{ts_base}&endpoint=/x&interval=5min&time_range=30d"),
            Some(ADMIN),
        )
        .await
        .assert_error(400);
    assert_eq!(
        msg,
        "5-minute buckets of one endpoint are read from raw requests, which are kept for 7 days: \
         use interval=hourly, or a range that starts within the last 7 days"
    );
    for ok in [
        format!("{ts_base}&endpoint=/x&interval=hourly&time_range=30d"),
        format!("{ts_base}&endpoint=/x&interval=5min&time_range=7d"),
        format!("{ts_base}&interval=5min&time_range=30d"),
    ] {
        assert_eq!(h.get(&ok, Some(ADMIN)).await.status, 200, "{ok}");
    }
    // Range rules are 400 as elsewhere.
    let bad = format!(
        "/requests?endpoint=/x&start_date={}&end_date={}",
        ts(now() - secs(60)),
        ts(now() - secs(120))
    );
    let msg = h.get(&bad, Some(ADMIN)).await.assert_error(400);
    assert_eq!(msg, "start_date must be before end_date");
}

#[tokio::test]
async fn requests_lists_the_slowest_with_status_codes() {
    let h = Harness::new();
    seed(&h);
    let id = |s: &str| metrics_core::CorrelationId::from_header(&s.parse().unwrap());
    h.store.insert(
        request(secs(90), "/users/{id}", Method::DELETE, 404, 45, USER)
            .with_correlation_id(id("req-404")),
    );
    let mut anonymous = request(secs(30), "/users/{id}", Method::GET, 200, 20, USER);
    anonymous.user_id = None;
    h.store.insert(anonymous);
    let body = h
        .get("/requests?endpoint=/users/%7Bid%7D", Some(ADMIN))
        .await
        .json();
    let row =
        |ago: u64, method: &str, status: u16, ms: f64, user: Option<&str>, corr: Option<&str>| {
            json!({
                "timestamp": ts(now() - secs(ago)),
                "method": method,
                "status_code": status,
                "response_time_ms": ms,
                "user_id": user,
                "correlation_id": corr,
            })
        };
    assert_eq!(
        body,
        json!({
            "time_range": "24h",
            "start_time": ts(now() - DAY),
            "end_time": ts(now()),
            "endpoint": "/users/{id}",
            "method": null,
            "limit": 20,
            "status_codes": {"200": 3, "404": 1, "500": 1},
            "requests": [
                row(90, "DELETE", 404, 45.0, Some(USER), Some("req-404")),
                row(600, "GET", 500, 30.0, Some(ADMIN), None),
                // Ties: newer first.
                row(30, "GET", 200, 20.0, None, None),
                row(600, "GET", 200, 20.0, Some(ADMIN), None),
                row(600, "GET", 200, 10.0, Some(ADMIN), None),
            ]
        })
    );
    let get = h
        .get(
            "/requests?endpoint=/users/%7Bid%7D&method=GET&limit=2",
            Some(ADMIN),
        )
        .await
        .json();
    assert_eq!(get["method"], "GET");
    assert_eq!(get["limit"], 2);
    assert_eq!(get["status_codes"], json!({"200": 3, "500": 1}));
    let ms: Vec<f64> = get["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["response_time_ms"].as_f64().unwrap())
        .collect();
    assert_eq!(ms, [30.0, 20.0]);
    // Longer ranges are clipped to the raw retention, and say so; the
    // request 2 days ago is inside it.
    let month = h
        .get("/requests?endpoint=/orders&time_range=30d", Some(ADMIN))
        .await
        .json();
    assert_eq!(month["time_range"], "30d");
    assert_eq!(month["start_time"], ts(now() - 7 * DAY));
    assert_eq!(month["end_time"], ts(now()));
    assert_eq!(month["status_codes"], json!({"201": 2}));
    assert_eq!(month["requests"][0]["response_time_ms"], 900.0);
    // Nothing for an unknown endpoint, or a range before the retention.
    let none = h
        .get("/requests?endpoint=/nowhere", Some(ADMIN))
        .await
        .json();
    assert_eq!(
        (&none["requests"], &none["status_codes"]),
        (&json!([]), &json!({}))
    );
    let old = format!(
        "/requests?endpoint=/orders&start_date={}&end_date={}",
        ts(now() - 20 * DAY),
        ts(now() - 10 * DAY)
    );
    let old = h.get(&old, Some(ADMIN)).await.json();
    assert_eq!(old["time_range"], "custom");
    assert_eq!(
        (&old["start_time"], &old["end_time"]),
        (&json!(ts(now() - 7 * DAY)), &json!(ts(now() - 7 * DAY)))
    );
    assert_eq!(old["requests"], json!([]));
}

async fn count(h: &Harness, user: &str, query: &str) -> Value {
    h.get(&format!("/usage/count{query}"), Some(user))
        .await
        .json()
}

#[tokio::test]
async fn usage_count_is_the_callers_own() {
    let h = Harness::new();
    seed(&h);
    let bob = count(&h, USER, "").await;
    assert_eq!(
        (bob["user_id"].as_str(), bob["count"].as_u64()),
        (Some(USER), Some(2))
    );
    assert_eq!(count(&h, USER, "?time_range=7d").await["count"], 3);
    assert_eq!(count(&h, "carol@example.com", "").await["count"], 1);
    assert_eq!(count(&h, ADMIN, "").await["count"], 0);

    // Events sent through the API count for their sender.
    let a = h
        .post_events(
            Some(ADMIN),
            batch(&[
                event("query_executed", secs(5)),
                event("query_executed", secs(6)),
            ]),
        )
        .await;
    assert_eq!(a.status, 202);
    h.collector.flush().await.unwrap();
    assert_eq!(count(&h, ADMIN, "").await["count"], 2);
}

// ===== store failures =====

#[tokio::test]
async fn store_timeouts_are_503_and_internal_errors_500() {
    let slow = Harness::custom(Some(Arc::new(FailingQuery(timeout))), None, None, |api| api);
    for path in READ_PATHS {
        let msg = slow.get(path, Some(ADMIN)).await.assert_error(503);
        assert_eq!(
            msg, "The metrics query did not finish within 10 s; try a shorter time range",
            "{path}"
        );
    }
    let broken = Harness::custom(Some(Arc::new(FailingQuery(internal))), None, None, |api| {
        api
    });
    for path in READ_PATHS {
        let a = broken.get(path, Some(ADMIN)).await;
        a.assert_error(500);
        assert!(
            !a.text.contains("secret"),
            "no store detail leaks: {}",
            a.text
        );
    }
}

// ===== correlation id =====

#[tokio::test]
async fn errors_echo_the_correlation_id() {
    let h = Harness::new();
    let with_id = |mut req: Request<Body>, id: &str| {
        req.headers_mut()
            .insert("x-correlation-id", id.parse().unwrap());
        req
    };
    let cases = [
        (with_id(get("/performance", None), "corr-401"), 401),
        (with_id(get("/performance", Some(USER)), "corr-403"), 403),
        (
            with_id(get("/performance?time_range=1y", Some(ADMIN)), "corr-422"),
            422,
        ),
        (
            with_id(post(Some(USER), Some("image/png"), "x"), "corr-415"),
            415,
        ),
        (with_id(post(Some(USER), None, "{"), "corr-400"), 400),
        (with_id(get("/missing", Some(USER)), "corr-404"), 404),
    ];
    for (req, status) in cases {
        let id = req.headers()["x-correlation-id"].clone();
        let a = h.send(req).await;
        assert_eq!(a.status.as_u16(), status);
        assert_eq!(a.headers["x-correlation-id"], id);
    }
    // Without one, a generated id is echoed.
    let a = h.get("/performance", None).await;
    assert!(!a.headers["x-correlation-id"].is_empty());
}
