//! Nothing a request carries can put a NUL (U+0000) into a request record's
//! text (route, method, user, correlation id, error type), which PostgreSQL
//! would refuse (issue 13 F3): `http` refuses NUL in URIs, methods and
//! header values, hyper refuses it on the wire, a percent-encoded `%00`
//! stays text, and what an app's own sources return is made storable.

#![cfg(feature = "axum")]

mod support;

use std::convert::Infallible;

use axum::Router;
use axum::routing::get as get_route;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response, Uri};
use http_body_util::Empty;
use metrics_core::{RequestRecord, UserId};
use metrics_tower::MetricsLayer;
use metrics_tower::identity::TrustedProxyHeaders;
use metrics_tower::route::RouteLabel;
use support::{Recorded, get};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::{ServiceBuilder, ServiceExt};

fn no_nul(r: &RequestRecord) {
    let texts = [
        Some(r.route.as_str().to_owned()),
        Some(r.method.to_string()),
        r.user_id.as_ref().map(|u| u.as_str().to_owned()),
        r.correlation_id.as_ref().map(|c| c.as_str().to_owned()),
        r.error_type.as_ref().map(ToString::to_string),
    ];
    for t in texts.into_iter().flatten() {
        assert!(!t.contains('\0'), "{t:?} in {r:?}");
    }
}

#[test]
fn http_types_cannot_hold_nul() {
    assert!(Uri::try_from("/a\0b").is_err());
    assert!(Uri::try_from("/a?q=\0").is_err());
    assert!(Method::from_bytes(b"GE\0T").is_err());
    assert!(HeaderValue::from_bytes(b"ada\0@example.com").is_err());
    assert!(HeaderValue::from_str("\0").is_err());
    assert!(HeaderName::from_bytes(b"x-\0").is_err());
}

#[tokio::test]
async fn percent_encoded_nul_stays_text_in_the_route() {
    let rec = Recorded::new();
    let svc = ServiceBuilder::new()
        .layer(MetricsLayer::new(rec.collector.clone()).identity_with(TrustedProxyHeaders))
        .service_fn(|_req: Request<Empty<Bytes>>| async {
            Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
        });
    let mut req = get("/a%00b/%00");
    req.headers_mut()
        .insert("x-correlation-id", HeaderValue::from_static("req-%00"));
    req.headers_mut().insert(
        "x-forwarded-email",
        HeaderValue::from_static("ada%00@example.com"),
    );
    let res = svc.oneshot(req).await.unwrap();
    drop(res);
    let r = rec.single().await;
    assert_eq!(r.route.as_str(), "/a%00b/%00");
    assert_eq!(r.correlation_id.as_ref().unwrap().as_str(), "req-%00");
    no_nul(&r);
}

/// An app's own route and identity sources may return NUL (a JWT claim can
/// encode `\u0000`): the route is not admitted, the user is made storable.
#[tokio::test]
async fn app_sources_returning_nul_are_made_storable() {
    let rec = Recorded::new();
    let route =
        metrics_tower::route::from_fn(|_req: &Request<Empty<Bytes>>| RouteLabel::Template("/t\0"));
    let user = |_req: &mut Request<Empty<Bytes>>| Some(UserId::from("ada\0"));
    let svc = ServiceBuilder::new()
        .layer(
            MetricsLayer::new(rec.collector.clone())
                .route_with(route)
                .identity_with(user),
        )
        .service_fn(|_req: Request<Empty<Bytes>>| async {
            Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
        });
    drop(svc.oneshot(get("/x")).await.unwrap());
    let r = rec.single().await;
    assert_eq!(r.route, metrics_core::Route::OVERFLOW);
    assert_eq!(r.user_id.as_ref().unwrap().as_str(), "ada\u{fffd}");
    no_nul(&r);
}

/// On the wire: hyper refuses a NUL in the request line or a header with a
/// 400 before the app (and the layer) sees anything.
#[tokio::test]
async fn nul_on_the_wire_never_reaches_the_layer() {
    let rec = Recorded::new();
    let app = Router::new()
        .route("/{*rest}", get_route(|| async { "ok" }))
        .layer(MetricsLayer::new(rec.collector.clone()).identity_with(TrustedProxyHeaders));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    for head in [
        &b"GET /a\0b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"[..],
        b"GET /a HTTP/1.1\r\nHost: x\r\nX-Forwarded-Email: ada\0@x\r\nConnection: close\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: x\r\nX-Correlation-ID: r\0\r\nConnection: close\r\n\r\n",
    ] {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(head).await.unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
            "{answer}"
        );
    }
    // A clean request afterwards is the only record.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"));
    let records = rec.records().await;
    assert_eq!(records.len(), 1, "{records:?}");
    no_nul(&records[0]);
    server.abort();
}
