//! Audit of issue 2's layer requirements not pinned down elsewhere:
//! the duration of a body dropped early runs to its drop; the correlation id
//! is echoed on error responses made by layers inside (timeout, caught panic)
//! and on excluded paths; every default exclusion of the seed applies through
//! the layer.

mod support;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use metrics_core::ErrorType;
use metrics_tower::MetricsLayer;
use support::{Chunks, Recorded, get};
use tower::{Service, ServiceBuilder, ServiceExt};

type Req = Request<Empty<Bytes>>;

#[tokio::test(start_paused = true)]
async fn a_body_dropped_early_is_timed_to_its_drop() {
    let rec = Recorded::new();
    let svc = ServiceBuilder::new()
        .layer(MetricsLayer::new(rec.collector.clone()))
        .service_fn(|_req: Req| async {
            Ok::<_, Infallible>(Response::new(Chunks::new(["a", "b", "c"])))
        });
    let res = svc.oneshot(get("/download")).await.unwrap();
    let mut body = res.into_body();
    tokio::time::advance(Duration::from_millis(10)).await;
    body.frame().await.unwrap().unwrap();
    tokio::time::advance(Duration::from_millis(30)).await;
    drop(body);
    let r = rec.single().await;
    assert_eq!(
        (r.status, r.error_type.clone()),
        (499, Some(ErrorType::ClientClosed))
    );
    assert!(
        (40.0..41.0).contains(&r.response_time_ms),
        "timed to the drop: {}",
        r.response_time_ms
    );
}

#[tokio::test(start_paused = true)]
async fn the_correlation_id_is_echoed_on_a_timeout_response_made_inside() {
    let rec = Recorded::new();
    let svc = ServiceBuilder::new()
        .layer(MetricsLayer::new(rec.collector.clone()))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            Duration::from_secs(1),
        ))
        .service_fn(|_req: Req| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
        });
    let req = Request::get("/slow")
        .header("x-correlation-id", "trace-504")
        .body(Empty::new())
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(res.headers()["x-correlation-id"], "trace-504");
    res.into_body().collect().await.unwrap();
    let r = rec.single().await;
    assert_eq!((r.status, r.error_type), (504, Some(ErrorType::Timeout)));
    assert_eq!(r.correlation_id.unwrap().as_str(), "trace-504");
}

#[tokio::test]
async fn the_correlation_id_is_echoed_on_a_caught_panic() {
    let rec = Recorded::new();
    let svc = ServiceBuilder::new()
        .layer(MetricsLayer::new(rec.collector.clone()))
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        .service_fn(|_req: Req| async move {
            panic!("handler bug");
            #[allow(unreachable_code)]
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
        });
    let res = svc.oneshot(get("/boom")).await.unwrap();
    assert_eq!(res.status(), 500);
    let echoed = res.headers()["x-correlation-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(uuid::Uuid::parse_str(&echoed).is_ok(), "{echoed}");
    res.into_body().collect().await.unwrap();
    let r = rec.single().await;
    assert_eq!(r.correlation_id.unwrap().as_str(), echoed);
}

#[tokio::test]
async fn every_default_exclusion_applies_and_excluded_responses_echo_the_id() {
    let rec = Recorded::new();
    let mut svc = ServiceBuilder::new()
        .layer(MetricsLayer::new(rec.collector.clone()))
        .service_fn(|_req: Req| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        });
    for path in [
        "/health",
        "/ready",
        "/ping",
        "/internal/x",
        "/admin/system/gc",
        // Near misses are recorded.
        "/healthz",
        "/internal",
        "/admin/systems",
    ] {
        let req = Request::get(path)
            .header("x-correlation-id", "excluded-1")
            .body(Empty::new())
            .unwrap();
        let res = svc.ready().await.unwrap().call(req).await.unwrap();
        assert_eq!(res.headers()["x-correlation-id"], "excluded-1", "{path}");
        res.into_body().collect().await.unwrap();
    }
    let mut recorded: Vec<String> = rec
        .records()
        .await
        .into_iter()
        .map(|r| r.route.to_string())
        .collect();
    recorded.sort();
    assert_eq!(recorded, ["/admin/systems", "/healthz", "/internal"]);
}
