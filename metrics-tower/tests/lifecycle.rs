//! When a request is recorded, and that it is recorded exactly once, on every
//! path: complete body, exact Content-Length, early drops (timed to the drop),
//! errors, panics; the correlation id echoed on responses made by layers
//! inside (timeout, caught panic) and on excluded paths; every default
//! exclusion applied through the layer.

mod support;

use std::convert::Infallible;
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Empty, Full};
use metrics_core::ErrorType;
use metrics_tower::MetricsLayer;
use support::{Chunks, Failing, Recorded, get, response};
use tower::{BoxError, Layer, Service, ServiceBuilder, ServiceExt};

type Req = Request<Empty<Bytes>>;

/// The layer over a handler answering with a streamed body of `chunks`.
fn streaming(
    rec: &Recorded,
    chunks: &'static [&'static str],
) -> impl Service<
    Req,
    Response = Response<impl Body<Data = Bytes, Error: Debug> + Unpin>,
    Error = Infallible,
> {
    ServiceBuilder::new()
        .layer(MetricsLayer::new(rec.collector.clone()))
        .service_fn(move |_req: Req| async move {
            Ok::<_, Infallible>(Response::new(Chunks::new(chunks.iter().copied())))
        })
}

/// The layer over tower-http's timeout (one second, answering `status`) over
/// a handler that takes five.
fn timeout_response_inside(
    rec: &Recorded,
    status: StatusCode,
) -> impl Service<Req, Response = Response<impl Body<Data = Bytes, Error: Debug>>, Error = Infallible>
{
    ServiceBuilder::new()
        .layer(MetricsLayer::new(rec.collector.clone()))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            status,
            Duration::from_secs(1),
        ))
        .service_fn(|_req: Req| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
        })
}

/// The layer over tower-http's `CatchPanicLayer` over a handler that panics.
fn panic_caught_inside(
    rec: &Recorded,
) -> impl Service<Req, Response = Response<impl Body<Data = Bytes, Error: Debug>>, Error = Infallible>
{
    ServiceBuilder::new()
        .layer(MetricsLayer::new(rec.collector.clone()))
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        .service_fn(|_req: Req| async move {
            panic!("handler bug");
            #[allow(unreachable_code)]
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
        })
}

#[tokio::test(start_paused = true)]
async fn record_exists_only_after_the_body_ends_and_times_the_body() {
    let rec = Recorded::new();
    let svc = streaming(&rec, &["a", "b", "c"]);

    let res = svc.oneshot(get("/stream")).await.unwrap();
    assert!(
        rec.records().await.is_empty(),
        "no record before the body is read"
    );

    let mut body = res.into_body();
    tokio::time::advance(Duration::from_millis(40)).await;
    body.frame().await.unwrap().unwrap();
    body.frame().await.unwrap().unwrap();
    assert!(rec.records().await.is_empty(), "no record mid-body");

    tokio::time::advance(Duration::from_millis(10)).await;
    body.frame().await.unwrap().unwrap();
    // The last chunk made the body report its end: recorded without a final
    // `None` poll.
    let r = rec.single().await;
    assert_eq!((r.status, r.error_type.clone()), (200, None));
    assert_eq!(r.route, "/stream");
    assert!(
        (50.0..51.0).contains(&r.response_time_ms),
        "duration runs to the end of the body: {}",
        r.response_time_ms
    );

    assert!(body.frame().await.is_none());
    drop(body);
    assert_eq!(rec.records().await.len(), 1, "still exactly one record");
}

#[tokio::test]
async fn fixed_content_length_body_is_recorded_without_a_final_poll() {
    let rec = Recorded::new();
    let svc = ServiceBuilder::new()
        .layer(MetricsLayer::new(rec.collector.clone()))
        .service_fn(|_req: Req| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hello"))))
        });

    let res = svc.oneshot(get("/fixed")).await.unwrap();
    let mut body = res.into_body();
    assert_eq!(body.size_hint().exact(), Some(5), "size hint forwarded");
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "hello");
    assert!(body.is_end_stream());
    // Like hyper with an exact Content-Length: stop here, keep the body.
    let r = rec.single().await;
    assert_eq!(r.status, 200);
    drop(body);
    assert_eq!(rec.records().await.len(), 1);
}

#[tokio::test]
async fn empty_and_head_responses_are_recorded_with_the_response() {
    let rec = Recorded::new();
    let mut svc = ServiceBuilder::new()
        .layer(MetricsLayer::new(rec.collector.clone()))
        .service_fn(|req: Req| async move {
            let status = if req.uri().path() == "/gone" {
                204
            } else {
                200
            };
            let body = if req.method() == http::Method::HEAD {
                Full::new(Bytes::from_static(b"never sent"))
            } else {
                Full::new(Bytes::new())
            };
            Ok::<_, Infallible>(response(status, body))
        });

    // Responses are kept alive (bodies never polled) while we check.
    let empty = svc
        .ready()
        .await
        .unwrap()
        .call(get("/empty"))
        .await
        .unwrap();
    let no_content = svc.ready().await.unwrap().call(get("/gone")).await.unwrap();
    let head = Request::head("/h").body(Empty::new()).unwrap();
    let head = svc.ready().await.unwrap().call(head).await.unwrap();

    let mut statuses: Vec<(String, u16)> = rec
        .records()
        .await
        .into_iter()
        .map(|r| (format!("{} {}", r.method, r.route), r.status))
        .collect();
    statuses.sort();
    assert_eq!(
        statuses,
        [
            ("GET /empty".to_owned(), 200),
            ("GET /gone".to_owned(), 204),
            ("HEAD /h".to_owned(), 200)
        ]
    );
    drop((empty, no_content, head));
    assert_eq!(rec.records().await.len(), 3, "dropping them adds nothing");
}

#[tokio::test]
async fn dropped_future_is_recorded_once_as_client_closed() {
    let rec = Recorded::new();
    let mut svc = ServiceBuilder::new()
        .layer(MetricsLayer::new(rec.collector.clone()))
        .service_fn(|_req: Req| async {
            std::future::pending::<()>().await;
            Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
        });

    let mut fut = Box::pin(svc.ready().await.unwrap().call(get("/slow")));
    // Poll once so the inner future has started, then give up like a client.
    let mut cx = Context::from_waker(Waker::noop());
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    drop(fut);

    let r = rec.single().await;
    assert_eq!(r.status, 499);
    assert_eq!(r.error_type, Some(ErrorType::ClientClosed));
    assert_eq!(r.route, "/slow");
}

#[tokio::test]
async fn dropped_body_is_recorded_once_as_client_closed() {
    let rec = Recorded::new();
    let svc = streaming(&rec, &["a", "b"]);

    let res = svc.oneshot(get("/download")).await.unwrap();
    let mut body = res.into_body();
    body.frame().await.unwrap().unwrap();
    drop(body);

    let r = rec.single().await;
    assert_eq!(
        (r.status, r.error_type),
        (499, Some(ErrorType::ClientClosed))
    );
}

#[tokio::test]
async fn inner_error_is_recorded_as_500_and_the_error_passes_through() {
    let rec = Recorded::new();
    let svc = ServiceBuilder::new()
        .layer(MetricsLayer::new(rec.collector.clone()))
        .service_fn(|_req: Req| async {
            Err::<Response<Empty<Bytes>>, _>(std::io::Error::other("db down"))
        });

    let err = svc.oneshot(get("/fails")).await.unwrap_err();
    assert_eq!(err.to_string(), "db down", "error type and value unchanged");
    let r = rec.single().await;
    assert_eq!(
        (r.status, r.error_type),
        (500, Some(ErrorType::ServiceError))
    );
}

#[tokio::test(start_paused = true)]
async fn tower_timeout_inside_is_recorded_as_504_timeout() {
    let rec = Recorded::new();
    let svc = ServiceBuilder::new()
        .layer(MetricsLayer::new(rec.collector.clone()))
        .timeout(Duration::from_secs(1))
        .service_fn(|_req: Req| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, BoxError>(Response::new(Empty::<Bytes>::new()))
        });

    let err = svc.oneshot(get("/slow")).await.unwrap_err();
    assert!(err.is::<tower::timeout::error::Elapsed>());
    let r = rec.single().await;
    assert_eq!((r.status, r.error_type), (504, Some(ErrorType::Timeout)));
    assert!(
        (1000.0..1001.0).contains(&r.response_time_ms),
        "{}",
        r.response_time_ms
    );
}

#[tokio::test(start_paused = true)]
async fn timeout_response_inside_is_recorded_as_504_timeout() {
    let rec = Recorded::new();
    let svc = timeout_response_inside(&rec, StatusCode::REQUEST_TIMEOUT);

    let res = svc.oneshot(get("/slow")).await.unwrap();
    assert_eq!(
        res.status(),
        StatusCode::REQUEST_TIMEOUT,
        "response unchanged"
    );
    let r = rec.single().await;
    assert_eq!((r.status, r.error_type), (504, Some(ErrorType::Timeout)));
}

#[tokio::test]
async fn handler_error_statuses_carry_their_class() {
    let rec = Recorded::new();
    let mut svc = ServiceBuilder::new()
        .layer(MetricsLayer::new(rec.collector.clone()))
        .service_fn(|req: Req| async move {
            let status: u16 = req.uri().path()[1..].parse().unwrap();
            Ok::<_, Infallible>(response(status, Full::new(Bytes::from_static(b"x"))))
        });
    for status in [200, 302, 400, 500] {
        let res = svc
            .ready()
            .await
            .unwrap()
            .call(get(&format!("/{status}")))
            .await
            .unwrap();
        res.into_body().collect().await.unwrap();
    }
    let mut got: Vec<_> = rec
        .records()
        .await
        .into_iter()
        .map(|r| (r.status, r.error_type.map(|e| e.to_string())))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            (200, None),
            (302, None),
            (400, Some("HTTP_400".to_owned())),
            (500, Some("HTTP_500".to_owned()))
        ]
    );
}

#[tokio::test]
async fn body_error_is_recorded_once_as_500() {
    let rec = Recorded::new();
    let svc = ServiceBuilder::new()
        .layer(MetricsLayer::new(rec.collector.clone()))
        .service_fn(|_req: Req| async { Ok::<_, Infallible>(Response::new(Failing)) });
    let res = svc.oneshot(get("/broken")).await.unwrap();
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    assert!(body.frame().await.unwrap().is_err());
    drop(body);
    let r = rec.single().await;
    assert_eq!(
        (r.status, r.error_type),
        (500, Some(ErrorType::ServiceError))
    );
}

#[tokio::test]
async fn panic_in_handler_is_recorded_as_500_panic_and_resumed() {
    let rec = Recorded::new();
    let svc = ServiceBuilder::new()
        .layer(MetricsLayer::new(rec.collector.clone()))
        .service_fn(|req: Req| async move {
            if req.uri().path() == "/boom" {
                panic!("handler bug");
            }
            Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
        });
    // Run it in its own task so the panic is caught by Tokio, as a server's
    // connection task would be.
    let joined = tokio::spawn(svc.oneshot(get("/boom"))).await;
    let panic = joined.unwrap_err().into_panic();
    assert_eq!(
        panic.downcast_ref::<&str>(),
        Some(&"handler bug"),
        "panic resumed unchanged"
    );

    let r = rec.single().await;
    assert_eq!((r.status, r.error_type), (500, Some(ErrorType::Panic)));
}

#[tokio::test]
async fn catch_panic_layer_inside_turns_panics_into_recorded_500s() {
    let rec = Recorded::new();
    let svc = panic_caught_inside(&rec);
    let res = svc.oneshot(get("/boom")).await.unwrap();
    assert_eq!(res.status(), 500);
    res.into_body().collect().await.unwrap();
    let r = rec.single().await;
    assert_eq!((r.status, r.error_type), (500, Some(ErrorType::Http(500))));
}

/// Ready only once `open` is set; counts calls.
#[derive(Clone)]
struct GateReady {
    open: Arc<AtomicBool>,
}

impl Service<Req> for GateReady {
    type Response = Response<Empty<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.open.load(Ordering::SeqCst) {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn call(&mut self, _req: Req) -> Self::Future {
        std::future::ready(Ok(Response::new(Empty::new())))
    }
}

#[tokio::test]
async fn poll_ready_is_passed_through() {
    let rec = Recorded::new();
    let open = Arc::new(AtomicBool::new(false));
    let mut svc = MetricsLayer::new(rec.collector).layer(GateReady { open: open.clone() });
    let mut cx = Context::from_waker(Waker::noop());
    assert!(
        svc.poll_ready(&mut cx).is_pending(),
        "not ready while the inner is not"
    );
    open.store(true, Ordering::SeqCst);
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
}

#[tokio::test(start_paused = true)]
async fn failing_hanging_or_panicking_sinks_never_affect_responses() {
    use metrics_core::Collector;
    use metrics_core::test_util::{GateMode, GatedSink};

    for mode in [GateMode::Unavailable, GateMode::Never, GateMode::Panic] {
        let sink = GatedSink::with_mode(mode);
        let collector = Collector::builder(sink.clone())
            .queue_capacity(4)
            .max_batch(1)
            .spawn()
            .unwrap();
        let mut svc = ServiceBuilder::new()
            .layer(MetricsLayer::new(collector.clone()))
            .service_fn(|_req: Req| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
            });
        // More requests than the queue holds, with the worker stuck or failing.
        for _ in 0..20 {
            let res = svc.ready().await.unwrap().call(get("/x")).await.unwrap();
            assert_eq!(res.status(), 200, "{mode:?}");
            assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "ok");
            // Let the worker run (and fail, hang or panic) between requests.
            tokio::task::yield_now().await;
        }
        let stats = collector.stats();
        assert_eq!(stats.received, 20, "{mode:?}: every request was offered");
        assert!(sink.calls() >= 1, "{mode:?}: the sink was tried");
    }
}

#[tokio::test(start_paused = true)]
async fn a_body_dropped_early_is_timed_to_its_drop() {
    let rec = Recorded::new();
    let svc = streaming(&rec, &["a", "b", "c"]);
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
    let svc = timeout_response_inside(&rec, StatusCode::GATEWAY_TIMEOUT);
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
    let svc = panic_caught_inside(&rec);
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
