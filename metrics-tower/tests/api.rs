//! The dashboard API layer's own behaviour (`metrics_tower::axum::api`),
//! on the memory store with a fixed clock and test doubles.
//!
//! **What belongs here:** what the router decides and no store can change:
//! content types and the byte limit, 404/405 envelopes, the validation of
//! every field and query parameter (drill-down parameters included) and the
//! range edges on a fixed clock, configurable vocabulary and clock skew, an
//! unavailable admin check, ingest into a full queue or a shut-down
//! collector, store errors mapped to statuses (a failing stub store), the
//! correlation id on errors, what an accepted batch hands the collector.
//!
//! **What does not:** any answer a store computes (bodies from data, sorting,
//! counts, zeros, filters, buckets) and the original API's contract (access
//! bodies, batch limits, range rules, field names): those are written once,
//! in the shared suite `tests/api_contract.rs` of the `app-metrics` package,
//! which runs each check on the memory store and on PostgreSQL. A check
//! written here must not repeat one of the suite's.

#![cfg(feature = "axum")]

mod api_support;

use std::sync::Arc;
use std::time::Duration;

use api_support::*;
use axum::body::Body;
use http::{Request, StatusCode};
use metrics_core::SharedAdminCheck;
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
async fn an_unavailable_admin_check_is_503_and_the_guard_comes_before_the_parameters() {
    let h = Harness::new();
    let broken = Harness::custom(
        None,
        Some(SharedAdminCheck::new(BrokenAdmins)),
        None,
        |api| api,
    );
    for path in ADMIN_PATHS {
        let a = broken.get(path, Some(ADMIN)).await;
        assert_eq!(a.status, 503, "{path}");
        assert_eq!(
            a.json(),
            json!({"error":"Service Unavailable","message":"Unable to verify administrator privileges","status_code":503})
        );
        let a = h.get(&with_query(path, "time_range=1y"), Some(USER)).await;
        assert_eq!(a.status, 403, "{path}: the guard before the parameters");
        let a = h.get(&with_query(path, "time_range=1y"), None).await;
        assert_eq!(a.status, 401, "{path}: the guard before the parameters");
    }
}

/// Behind a proxy that appends its `X-Forwarded-Email` to the client's,
/// the request carries two: neither may be trusted (issue 13 F6).
#[tokio::test]
async fn a_repeated_identity_header_is_no_identity() {
    let h = Harness::new();
    let two = |path: &str, first: &str, second: &str| {
        Request::get(format!("{BASE}{path}"))
            .header("x-forwarded-email", first)
            .header("x-forwarded-email", second)
            .body(Body::empty())
            .unwrap()
    };
    for path in ADMIN_PATHS {
        for (first, second) in [(ADMIN, USER), (USER, ADMIN), (ADMIN, ADMIN)] {
            let a = h.send(two(path, first, second)).await;
            assert_eq!(a.status, 401, "{path} as {first} + {second}: {}", a.text);
        }
        // One line joining two values is two values.
        let req = Request::get(format!("{BASE}{path}"))
            .header("x-forwarded-email", format!("{ADMIN},{USER}"))
            .body(Body::empty())
            .unwrap();
        assert_eq!(h.send(req).await.status, 401, "{path}");
        // A spoofed second header of another kind voids the email too.
        let req = Request::get(format!("{BASE}{path}"))
            .header("x-forwarded-email", ADMIN)
            .header("x-forwarded-user", "ada")
            .header("x-forwarded-user", "root")
            .body(Body::empty())
            .unwrap();
        assert_eq!(h.send(req).await.status, 401, "{path}");
        // The single header still works.
        assert_eq!(h.get(path, Some(ADMIN)).await.status, 200, "{path}");
    }
    let req = Request::post(format!("{BASE}/usage-events"))
        .header("x-forwarded-email", USER)
        .header("x-forwarded-email", ADMIN)
        .header("content-type", "application/json")
        .body(Body::from(batch(&[event("page_view", secs(1))])))
        .unwrap();
    assert_eq!(h.send(req).await.status, 401);
    assert!(h.stored_events().await.is_empty());
    // The layer recorded those requests without a user.
    let requests = h.store.snapshot().requests().to_vec();
    let anonymous = requests.iter().filter(|r| r.user_id.is_none()).count();
    assert_eq!(anonymous, ADMIN_PATHS.len() * 5 + 1, "{requests:?}");
    assert!(
        requests
            .iter()
            .filter_map(|r| r.user_id.as_ref())
            .all(|u| u.as_str() == ADMIN)
    );
}

/// An identity from the app's own authentication holding a NUL (a JWT
/// claim can encode `\u0000`) cannot be stored with the events: 422, not a
/// 202 followed by rows the store refuses (issue 13 F3).
#[tokio::test]
async fn a_caller_whose_user_id_holds_nul_is_refused() {
    let store = metrics_core::MemorySink::new();
    let collector = metrics_core::Collector::builder(store.clone())
        .spawn()
        .unwrap();
    let api = metrics_tower::axum::api::MetricsApi::new(
        Arc::new(store.clone()),
        collector.clone(),
        SharedAdminCheck::new(metrics_core::StaticAdmins::new([ADMIN])),
    )
    .clock(now);
    let app =
        axum::Router::new()
            .nest(BASE, api.router())
            .layer(tower::util::MapRequestLayer::new(
                |mut req: Request<Body>| {
                    req.extensions_mut()
                        .insert(metrics_core::Identity::new("ada\0"));
                    req
                },
            ));
    let req = post(
        None,
        Some("application/json"),
        batch(&[event("page_view", secs(1))]),
    );
    let res = tower::ServiceExt::oneshot(app, req).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap()
        .to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("user id"),
        "{body}"
    );
    collector.flush().await.unwrap();
    assert!(store.snapshot().usage_events().is_empty());
}

#[tokio::test]
async fn ingest_checks_the_identity_before_the_body() {
    let h = Harness::new();
    for body in ["{not json", ""] {
        let a = h.post_events(None, body).await;
        assert_eq!(a.status, 401, "{body:?}");
        assert_eq!(
            a.json(),
            json!({"error":"Unauthorized","message":"Authentication required","status_code":401})
        );
    }
    let a = h.send(post(None, Some("application/xml"), "<x/>")).await;
    assert_eq!(a.status, 401, "content type is checked after the identity");
    let big = vec![b' '; 2 * 1024 * 1024];
    assert_eq!(
        h.post_events(None, big).await.status,
        401,
        "the byte limit is checked after the identity"
    );
    assert!(h.stored_events().await.is_empty());
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
        // NUL, which PostgreSQL cannot store (issue 13 F3), in every string
        // that is stored: the name, the id, the type, metadata keys and
        // string values at any depth.
        ("page_name", with("page_name", json!("/home\u{0}")), "NUL"),
        ("element_id", with("element_id", json!("\u{0}")), "NUL"),
        (
            "event_type",
            with("event_type", json!("page_view\u{0}")),
            "NUL",
        ),
        ("metadata", with("metadata", json!({"k\u{0}": 1})), "NUL"),
        ("metadata", with("metadata", json!({"k": "v\u{0}"})), "NUL"),
        (
            "metadata",
            with("metadata", json!({"a": [1, {"b": ["ok", "x\u{0}y"]}]})),
            "NUL",
        ),
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
        // Text PostgreSQL does keep: other control characters, RTL and
        // zero-width marks, a surrogate pair.
        with(
            "page_name",
            json!("\u{1}\u{1f}\u{7f}\u{202e}rtl\u{200b}\u{1f600}"),
        ),
        with("metadata", json!({"\u{202e}": ["\u{200b}", "\t\n"]})),
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
async fn the_range_edges_are_exactly_90_days_and_60_s_ahead() {
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
    // 61 s ahead is the future.
    let q = format!(
        "/usage?start_date={}&end_date={}",
        ts(now() - secs(3_600)),
        ts(now() + secs(61))
    );
    let msg = h.get(&q, Some(ADMIN)).await.assert_error(400);
    assert_eq!(msg, "end_date must not be in the future");
}

#[tokio::test]
async fn unreadable_parameters_are_422() {
    let h = Harness::new();
    let start = ts(now() - secs(3_600));
    let cases = [
        (format!("/usage?start_date={start}"), "end_date is missing"),
        (
            format!("/usage/count?end_date={start}"),
            "start_date is missing",
        ),
        (
            "/time-series?metric_type=both&interval=daily".to_owned(),
            "interval must be one of",
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

// ===== drill-down =====

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
