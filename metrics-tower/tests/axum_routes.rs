//! Route labels through axum routers (nested included), unmatched requests,
//! exclusions and the label cap, over a real `Router`.

#![cfg(feature = "axum")]

mod support;

use axum::body::Body;
use axum::extract::Extension;
use axum::routing::get;
use axum::{Router, http::StatusCode};
use http::Request;
use http_body_util::BodyExt;
use metrics_core::{CorrelationId, ErrorType, Identity, Route};
use metrics_tower::axum::MatchedPathRoute;
use metrics_tower::exclude::Exclusions;
use metrics_tower::route::RouteLabel;
use metrics_tower::{MetricsLayer, identity::TrustedProxyHeaders};
use support::Recorded;
use tower::{ServiceBuilder, ServiceExt};

async fn send(app: &Router, req: Request<Body>) -> http::Response<Body> {
    let res = app.clone().oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    http::Response::from_parts(parts, Body::from(bytes))
}

fn get_req(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

fn app(layer: MetricsLayer) -> Router {
    let users = Router::new()
        .route("/users/{id}", get(|| async { "user" }))
        .route("/users/{id}/orders/{order}", get(|| async { "order" }));
    Router::new()
        .route("/", get(|| async { "root" }))
        .route("/health", get(|| async { "ok" }))
        .route("/missing", get(|| async { StatusCode::NOT_FOUND }))
        .nest("/api/v1", users)
        .layer(layer)
}

async fn routes(rec: &Recorded) -> Vec<(String, u16)> {
    let mut got: Vec<_> = rec
        .records()
        .await
        .into_iter()
        .map(|r| (r.route.to_string(), r.status))
        .collect();
    got.sort();
    got
}

#[tokio::test]
async fn nested_routers_are_labelled_with_full_templates() {
    let rec = Recorded::new();
    let app = app(MetricsLayer::new(rec.collector.clone()));
    for uri in [
        "/",
        "/api/v1/users/1",
        "/api/v1/users/2",
        "/api/v1/users/3/orders/9",
    ] {
        assert_eq!(send(&app, get_req(uri)).await.status(), 200);
    }
    assert_eq!(
        routes(&rec).await,
        [
            ("/".to_owned(), 200),
            ("/api/v1/users/{id}".to_owned(), 200),
            ("/api/v1/users/{id}".to_owned(), 200),
            ("/api/v1/users/{id}/orders/{order}".to_owned(), 200),
        ]
    );
}

#[tokio::test]
async fn unmatched_requests_share_one_label_and_handler_404s_keep_theirs() {
    let rec = Recorded::new();
    let layer = MetricsLayer::new(rec.collector.clone());
    let app = app(layer.clone());
    for i in 0..50 {
        let res = send(&app, get_req(&format!("/scan/{i}/wp-login-{i}.php"))).await;
        assert_eq!(res.status(), 404);
    }
    assert_eq!(send(&app, get_req("/missing")).await.status(), 404);
    let got = routes(&rec).await;
    assert_eq!(got.len(), 51);
    assert_eq!(got.iter().filter(|(r, _)| r == "<unmatched>").count(), 50);
    assert!(got.contains(&("/missing".to_owned(), 404)), "{got:?}");
    assert_eq!(layer.route_stats().distinct, 1, "scans never became labels");
}

#[tokio::test]
async fn strict_matched_path_route_labels_everything_else_unmatched() {
    let rec = Recorded::new();
    let app: Router = Router::new()
        .route("/a", get(|| async { "a" }))
        .layer(MetricsLayer::new(rec.collector.clone()).route_with(MatchedPathRoute));
    send(&app, get_req("/a")).await;
    send(&app, get_req("/nope/123")).await;
    assert_eq!(
        routes(&rec).await,
        [("/a".to_owned(), 200), ("<unmatched>".to_owned(), 404)]
    );
}

#[tokio::test]
async fn closures_choose_the_route_and_the_user() {
    let rec = Recorded::new();
    let layer = MetricsLayer::new(rec.collector.clone())
        // Everything under /files/ is one label; the rest keeps MatchedPath.
        .route_with(metrics_tower::route::from_fn(|req: &Request<Body>| {
            if req.uri().path().starts_with("/files/") {
                RouteLabel::Fixed(Route::from_static("/files/{*path}"))
            } else {
                req.extensions()
                    .get::<axum::extract::MatchedPath>()
                    .map_or(RouteLabel::Unknown, |p| RouteLabel::Template(p.as_str()))
            }
        }))
        // The user from a header of the app's own gateway.
        .identity_with(|req: &mut Request<Body>| {
            req.headers()
                .get("x-gateway-user")
                .and_then(|v| v.to_str().ok())
                .map(metrics_core::UserId::from)
        });
    let app: Router = Router::new()
        .route("/files/{*path}", get(|| async { "file" }))
        .route("/a", get(|| async { "a" }))
        .layer(layer);
    let req = Request::get("/files/x/y.txt")
        .header("x-gateway-user", "ada")
        .body(Body::empty())
        .unwrap();
    send(&app, req).await;
    send(&app, get_req("/a")).await;
    let mut got: Vec<_> = rec
        .records()
        .await
        .into_iter()
        .map(|r| (r.route.to_string(), r.user_id.map(|u| u.to_string())))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("/a".to_owned(), None),
            ("/files/{*path}".to_owned(), Some("ada".to_owned()))
        ]
    );
}

#[tokio::test]
async fn layer_outside_the_router_normalises_paths() {
    // Wrapped around the whole router, the layer runs before routing and
    // sees no MatchedPath: the normaliser takes over.
    let rec = Recorded::new();
    let inner: Router = Router::new().route("/users/{id}", get(|| async { "user" }));
    let svc = ServiceBuilder::new()
        .layer(MetricsLayer::new(rec.collector.clone()))
        .service(inner);
    let res = svc.clone().oneshot(get_req("/users/42")).await.unwrap();
    res.into_body().collect().await.unwrap();
    let res = svc.oneshot(get_req("/nothing/here")).await.unwrap();
    res.into_body().collect().await.unwrap();
    assert_eq!(
        routes(&rec).await,
        [
            ("/users/{id}".to_owned(), 200),
            ("<unmatched>".to_owned(), 404)
        ]
    );
}

#[tokio::test]
async fn default_exclusions_apply_and_excluded_responses_still_get_an_id() {
    let rec = Recorded::new();
    let app = app(MetricsLayer::new(rec.collector.clone()));
    let res = send(&app, get_req("/health")).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("x-correlation-id"));
    send(&app, get_req("/internal/metrics")).await;
    send(&app, get_req("/")).await;
    assert_eq!(routes(&rec).await, [("/".to_owned(), 200)]);
}

#[tokio::test]
async fn custom_exclusions_replace_the_defaults() {
    let rec = Recorded::new();
    let app = app(MetricsLayer::new(rec.collector.clone())
        .exclusions(Exclusions::none().path("/").prefix("/api/v1/users/9"))
        .exclude_if(|head| head.headers().contains_key("x-synthetic")));
    send(&app, get_req("/")).await;
    send(&app, get_req("/api/v1/users/99")).await;
    let synthetic = Request::get("/api/v1/users/1")
        .header("x-synthetic", "1")
        .body(Body::empty())
        .unwrap();
    send(&app, synthetic).await;
    send(&app, get_req("/health")).await;
    send(&app, get_req("/api/v1/users/1")).await;
    assert_eq!(
        routes(&rec).await,
        [
            ("/api/v1/users/{id}".to_owned(), 200),
            ("/health".to_owned(), 200)
        ]
    );
}

#[tokio::test]
async fn added_exclusions_keep_the_defaults() {
    let rec = Recorded::new();
    let app = app(MetricsLayer::new(rec.collector.clone())
        .exclude_path("/")
        .exclude_prefix("/api/v1/users/9")
        .exclude_if(|head| head.headers().contains_key("x-synthetic"))
        .exclude_if(|head| head.method() == http::Method::OPTIONS));
    send(&app, get_req("/")).await;
    send(&app, get_req("/api/v1/users/99")).await;
    let synthetic = Request::get("/api/v1/users/1")
        .header("x-synthetic", "1")
        .body(Body::empty())
        .unwrap();
    send(&app, synthetic).await;
    let options = Request::options("/api/v1/users/1")
        .body(Body::empty())
        .unwrap();
    send(&app, options).await;
    // The defaults still hold: the probe and the internal path are not recorded.
    send(&app, get_req("/health")).await;
    send(&app, get_req("/internal/metrics")).await;
    send(&app, get_req("/api/v1/users/1")).await;
    assert_eq!(routes(&rec).await, [("/api/v1/users/{id}".to_owned(), 200)]);
}

#[tokio::test]
async fn label_cap_sends_new_labels_to_overflow_and_counts_them() {
    let rec = Recorded::new();
    let layer = MetricsLayer::new(rec.collector.clone()).max_routes(2);
    let app: Router = Router::new()
        .route("/a", get(|| async { "a" }))
        .route("/b", get(|| async { "b" }))
        .route("/c", get(|| async { "c" }))
        .layer(layer.clone());
    for uri in ["/a", "/b", "/c", "/c", "/a"] {
        assert_eq!(
            send(&app, get_req(uri)).await.status(),
            200,
            "responses unaffected"
        );
    }
    assert_eq!(
        routes(&rec).await,
        [
            ("/a".to_owned(), 200),
            ("/a".to_owned(), 200),
            ("/b".to_owned(), 200),
            (Route::OVERFLOW.to_string(), 200),
            (Route::OVERFLOW.to_string(), 200),
        ]
    );
    let stats = layer.route_stats();
    assert_eq!((stats.distinct, stats.max, stats.overflowed), (2, 2, 2));
    assert_eq!(layer.route_overflow_count(), 2);
}

#[tokio::test]
async fn correlation_id_is_reused_generated_and_visible_to_handlers() {
    let rec = Recorded::new();
    let app: Router = Router::new()
        .route(
            "/echo",
            get(|id: CorrelationId| async move { id.to_string() }),
        )
        .route(
            "/fail",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "nope") }),
        )
        .layer(MetricsLayer::new(rec.collector.clone()));

    // Reused when acceptable, on success and on handler errors.
    for uri in ["/echo", "/fail", "/not-found"] {
        let req = Request::get(uri)
            .header("x-correlation-id", "abc-123")
            .body(Body::empty())
            .unwrap();
        let res = send(&app, req).await;
        assert_eq!(res.headers()["x-correlation-id"], "abc-123", "{uri}");
        if uri == "/echo" {
            let body = res.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, "abc-123", "handler sees the same id");
        }
    }

    // Replaced when absent or unacceptable; the handler and the record see
    // the replacement.
    let oversized = "x".repeat(CorrelationId::MAX_LEN + 1);
    let bad_values: [&[u8]; 3] = [oversized.as_bytes(), b"with space", b"caf\xc3\xa9"];
    let mut generated = Vec::new();
    for bad in bad_values.into_iter().map(Some).chain([None]) {
        let mut req = Request::get("/echo");
        if let Some(bad) = bad {
            req = req.header("x-correlation-id", bad);
        }
        let res = send(&app, req.body(Body::empty()).unwrap()).await;
        let echoed = res.headers()["x-correlation-id"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(uuid::Uuid::parse_str(&echoed).is_ok(), "{echoed}");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, echoed.as_bytes());
        generated.push(echoed);
    }

    let records = rec.records().await;
    let ids: Vec<_> = records
        .iter()
        .map(|r| r.correlation_id.as_ref().unwrap().to_string())
        .collect();
    assert_eq!(&ids[..3], ["abc-123", "abc-123", "abc-123"]);
    assert_eq!(&ids[3..], &generated[..]);
    assert_eq!(records[1].error_type, Some(ErrorType::Http(500)));
}

#[tokio::test]
async fn the_id_is_current_in_handlers_inner_middleware_and_excluded_paths_not_in_extensions() {
    let rec = Recorded::new();
    // An inner middleware that reads the current id in its `call` (as a
    // tracing layer's span maker would) and passes it on in a header.
    let seen_in_call = tower::util::MapRequestLayer::new(|mut req: Request<Body>| {
        if let Some(id) = CorrelationId::current() {
            req.headers_mut()
                .insert("x-seen", id.header_value().clone());
        }
        req
    });
    let app: Router = Router::new()
        .route(
            "/inner",
            get(
                |headers: http::HeaderMap, ext: Option<Extension<CorrelationId>>| async move {
                    let seen = headers
                        .get("x-seen")
                        .map(|v| v.to_str().unwrap().to_owned());
                    format!("{seen:?} extension={}", ext.is_some())
                },
            ),
        )
        .route(
            "/optional",
            get(|id: Option<CorrelationId>| async move { format!("{id:?}") }),
        )
        .route(
            "/health",
            get(|id: CorrelationId| async move { id.to_string() }),
        )
        .layer(seen_in_call)
        .layer(MetricsLayer::new(rec.collector.clone()).exclude_path("/health"));

    let get_with_id = |uri: &'static str| {
        Request::get(uri)
            .header("x-correlation-id", "id-7")
            .body(Body::empty())
            .unwrap()
    };
    let body = |res: http::Response<_>| async move {
        let bytes = BodyExt::collect(res.into_body()).await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    };
    let res = send(&app, get_with_id("/inner")).await;
    assert_eq!(res.headers()["x-correlation-id"], "id-7");
    assert_eq!(body(res).await, r#"Some("id-7") extension=false"#);
    let res = send(&app, get_with_id("/optional")).await;
    assert_eq!(body(res).await, r#"Some("id-7")"#);
    // Excluded paths are not recorded, but their handlers see the id.
    let res = send(&app, get_with_id("/health")).await;
    assert_eq!(res.headers()["x-correlation-id"], "id-7");
    assert_eq!(body(res).await, "id-7");
    // After the request, nothing is current on this thread.
    assert_eq!(CorrelationId::current(), None);
}

#[tokio::test]
async fn without_ids_the_extractor_rejects_and_the_optional_one_is_none() {
    let rec = Recorded::new();
    let app: Router = Router::new()
        .route(
            "/id",
            get(|id: CorrelationId| async move { id.to_string() }),
        )
        .route(
            "/optional",
            get(|id: Option<CorrelationId>| async move { format!("{id:?}") }),
        )
        .layer(MetricsLayer::new(rec.collector.clone()).correlation_id(false));
    let res = send(&app, Request::get("/id").body(Body::empty()).unwrap()).await;
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!res.headers().contains_key("x-correlation-id"));
    let text = BodyExt::collect(res.into_body()).await.unwrap().to_bytes();
    assert!(
        String::from_utf8_lossy(&text).contains("no correlation id"),
        "{text:?}"
    );
    let res = send(&app, Request::get("/optional").body(Body::empty()).unwrap()).await;
    let text = BodyExt::collect(res.into_body()).await.unwrap().to_bytes();
    assert_eq!(text, "None");
}

#[tokio::test]
async fn the_extension_is_there_when_turned_on() {
    let rec = Recorded::new();
    let app: Router = Router::new()
        .route(
            "/ext",
            get(|Extension(id): Extension<CorrelationId>| async move { id.to_string() }),
        )
        .layer(MetricsLayer::new(rec.collector.clone()).correlation_id_extension(true));
    let req = Request::get("/ext")
        .header("x-correlation-id", "ext-1")
        .body(Body::empty())
        .unwrap();
    let res = send(&app, req).await;
    assert_eq!(res.status(), StatusCode::OK);
    let text = BodyExt::collect(res.into_body()).await.unwrap().to_bytes();
    assert_eq!(text, "ext-1");
    let records = rec.records().await;
    assert_eq!(
        records[0].correlation_id.as_ref().unwrap().as_str(),
        "ext-1"
    );
}

#[tokio::test]
async fn identity_from_extension_or_trusted_headers() {
    let rec = Recorded::new();
    let handler = |ident: Option<Extension<Identity>>| async move {
        ident
            .map(|Extension(i)| i.user_id().to_string())
            .unwrap_or_default()
    };
    // Default: the app's auth (outer layer) sets the extension.
    let with_auth: Router = Router::new()
        .route("/me", get(handler))
        .layer(MetricsLayer::new(rec.collector.clone()))
        .layer(axum::middleware::from_fn(
            |mut req: axum::extract::Request, next: axum::middleware::Next| async move {
                req.extensions_mut()
                    .insert(Identity::new("ada@example.com"));
                next.run(req).await
            },
        ));
    let spoof = Request::get("/me")
        .header("x-forwarded-email", "mallory@example.com")
        .body(Body::empty())
        .unwrap();
    send(&with_auth, spoof).await;

    // Opt-in: trusted proxy headers, visible to handlers too.
    let proxied: Router = Router::new()
        .route("/me", get(handler))
        .layer(MetricsLayer::new(rec.collector.clone()).identity_with(TrustedProxyHeaders));
    let req = Request::get("/me")
        .header("x-forwarded-email", "bob@example.com")
        .header("x-forwarded-access-token", "tok")
        .body(Body::empty())
        .unwrap();
    let res = send(&proxied, req).await;
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "bob@example.com");
    send(&proxied, get_req("/me")).await;

    let users: Vec<_> = rec
        .records()
        .await
        .into_iter()
        .map(|r| r.user_id.map(|u| u.to_string()))
        .collect();
    assert_eq!(
        users,
        [
            Some("ada@example.com".to_owned()),
            Some("bob@example.com".to_owned()),
            None
        ]
    );
}

#[tokio::test]
async fn bad_input_never_panics_or_creates_labels() {
    let rec = Recorded::new();
    let layer = MetricsLayer::new(rec.collector.clone()).max_routes(10);
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service_fn(|_req: Request<Body>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(Body::from("ok")))
        });
    let long_path = format!("/{}", "a/".repeat(5_000));
    let odd_method = http::Method::from_bytes(b"BREW-COFFEE-NOW-PLEASE").unwrap();
    let requests = [
        Request::get(long_path.as_str())
            .body(Body::empty())
            .unwrap(),
        Request::get("/%ZZ/%/%%").body(Body::empty()).unwrap(),
        Request::builder()
            .method(odd_method)
            .uri("/tea")
            .body(Body::empty())
            .unwrap(),
        Request::get("/x")
            .header("x-correlation-id", "y".repeat(10_000))
            .body(Body::empty())
            .unwrap(),
    ];
    for req in requests {
        let res = svc.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), 200);
        res.into_body().collect().await.unwrap();
    }
    for i in 0..100 {
        let res = svc
            .clone()
            .oneshot(get_req(&format!("/junk-{i}")))
            .await
            .unwrap();
        res.into_body().collect().await.unwrap();
    }
    let records = rec.records().await;
    assert_eq!(records.len(), 104);
    assert_eq!(
        records[0].route,
        Route::OVERFLOW,
        "10 KB path is not a label"
    );
    assert_eq!(records[1].route, "/%ZZ/%/%%");
    assert_eq!(records[2].method.as_str(), "OTHER");
    assert_eq!(
        records[3].correlation_id.as_ref().unwrap().as_str().len(),
        36
    );
    let stats = layer.route_stats();
    assert_eq!(stats.distinct, 10);
    assert_eq!(stats.overflowed, 1 + 93);
}
