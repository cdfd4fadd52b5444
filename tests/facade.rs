//! The facade as an axum user meets it (issue 12 item 4): each test is one
//! trap that used to be easy to fall into.

use std::time::{Duration, SystemTime};

use app_metrics::admin::{RequireAdmin, StaticAdmins};
use app_metrics::identity::{TrustedProxyHeaders, UserId};
use app_metrics::layer::Exclusions;
use app_metrics::sink::MemorySink;
use app_metrics::store::CustomSink;
use app_metrics::{AppMetrics, BuildError, Error};
use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

const ADMIN: &str = "ada@example.com";
const BASE: &str = "/api/v1/metrics";

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, String) {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn get_as(path: &str, user: Option<&str>) -> Request<Body> {
    let mut req = Request::get(path);
    if let Some(user) = user {
        req = req.header("x-forwarded-email", user);
    }
    req.body(Body::empty()).unwrap()
}

fn events_as(user: &str) -> Request<Body> {
    let now = app_metrics::query::format_rfc3339(SystemTime::now());
    Request::post(format!("{BASE}/usage-events"))
        .header("x-forwarded-email", user)
        .header("content-type", "application/json")
        .body(Body::from(format!(
            r#"{{"events":[{{"event_type":"page_view","timestamp":"{now}"}}]}}"#
        )))
        .unwrap()
}

/// The API router and the dashboard page answer the same whether they are
/// mounted before `.layer(metrics.layer())` (inside it: recorded) or after
/// it (beside it: not recorded, but still identified). After it, every call
/// used to be a 401.
#[tokio::test]
async fn api_and_page_work_before_and_after_the_layer() {
    for inside in [true, false] {
        let metrics = AppMetrics::memory()
            .identity(TrustedProxyHeaders)
            .admins(StaticAdmins::parse(ADMIN))
            .start()
            .await
            .unwrap();
        let routes = Router::new().route("/users/{id}", get(|| async { "user" }));
        let app = if inside {
            routes
                .nest(BASE, metrics.api_router())
                .merge(metrics.dashboard_router_at("/metrics"))
                .layer(metrics.layer())
        } else {
            routes
                .layer(metrics.layer())
                .nest(BASE, metrics.api_router())
                .merge(metrics.dashboard_router_at("/metrics"))
        };
        let at = if inside { "inside" } else { "after" };

        let perf = format!("{BASE}/performance");
        assert_eq!(send(&app, get_as(&perf, Some(ADMIN))).await.0, 200, "{at}");
        assert_eq!(
            send(&app, get_as(&perf, Some("bob@example.com"))).await.0,
            403,
            "{at}"
        );
        assert_eq!(send(&app, get_as(&perf, None)).await.0, 401, "{at}");
        assert_eq!(
            send(&app, events_as("bob@example.com")).await.0,
            202,
            "{at}"
        );
        let (status, page) = send(&app, get_as("/metrics/", Some(ADMIN))).await;
        assert_eq!(status, 200, "{at}");
        assert!(page.contains("Application Metrics"), "{at}");
        assert_eq!(
            send(&app, get_as("/metrics/", Some("bob@example.com")))
                .await
                .0,
            403
        );
        assert_eq!(
            send(&app, get_as("/users/7", Some("bob@example.com")))
                .await
                .0,
            200
        );

        metrics.shutdown(Duration::from_secs(5)).await.unwrap();
        let snap = metrics.memory_sink().unwrap().snapshot();
        let event = &snap.usage_events()[0];
        assert_eq!(event.user_id.as_str(), "bob@example.com", "{at}");
        let routes: Vec<&str> = snap.requests().iter().map(|r| r.route.as_str()).collect();
        if inside {
            assert_eq!(routes.len(), 7, "every call is recorded: {routes:?}");
        } else {
            assert_eq!(routes, ["/users/{id}"], "only the routes inside the layer");
        }
    }
}

/// A custom identity (here a closure reading the app's own gateway header)
/// is given to the facade: the layer records its user and the API accepts it.
#[tokio::test]
async fn a_closure_identity_reaches_the_layer_and_the_api() {
    let gateway = |req: &mut Request<Body>| {
        req.headers()
            .get("x-gateway-user")
            .and_then(|v| v.to_str().ok())
            .map(UserId::from)
    };
    let metrics = AppMetrics::memory()
        .identity(gateway)
        .admins(StaticAdmins::parse("ada"))
        .start()
        .await
        .unwrap();
    let app = Router::new()
        .nest(BASE, metrics.api_router())
        .layer(metrics.layer());
    let req = Request::get(format!("{BASE}/usage?time_range=24h"))
        .header("x-gateway-user", "ada")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, req).await.0, 200);
    let req = Request::get(format!("{BASE}/usage?time_range=24h"))
        .header("x-forwarded-email", "ada")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        send(&app, req).await.0,
        401,
        "proxy headers are not this app's source"
    );
    metrics.shutdown(Duration::from_secs(5)).await.unwrap();
    let snap = metrics.memory_sink().unwrap().snapshot();
    let users: Vec<_> = snap.requests().iter().map(|r| r.user_id.clone()).collect();
    assert_eq!(users, [Some(UserId::from("ada")), None]);
}

/// `exclude_path` adds to the defaults (which used to be replaced, so users
/// repeated them); `exclusions` replaces them, explicitly.
#[tokio::test]
async fn exclusions_add_to_the_defaults_unless_replaced() {
    for replace in [false, true] {
        let metrics = AppMetrics::memory()
            .configure_layer(move |layer| {
                if replace {
                    layer.exclusions(Exclusions::none().path("/skip"))
                } else {
                    layer.exclude_path("/skip")
                }
            })
            .start()
            .await
            .unwrap();
        let app = Router::new()
            .route("/skip", get(|| async { "" }))
            .route("/health", get(|| async { "ok" }))
            .route("/kept", get(|| async { "" }))
            .layer(metrics.layer());
        for path in ["/skip", "/health", "/kept"] {
            assert_eq!(send(&app, get_as(path, None)).await.0, 200);
        }
        metrics.shutdown(Duration::from_secs(5)).await.unwrap();
        let snap = metrics.memory_sink().unwrap().snapshot();
        let mut routes: Vec<&str> = snap.requests().iter().map(|r| r.route.as_str()).collect();
        routes.sort_unstable();
        if replace {
            assert_eq!(routes, ["/health", "/kept"], "the defaults are gone");
        } else {
            assert_eq!(routes, ["/kept"], "the defaults stay");
        }
    }
}

/// The layer's and the collector's own builders are reachable: settings the
/// facade never copied (`correlation_id`, `export_timeout`) take effect.
#[tokio::test]
async fn the_layer_and_collector_builders_are_the_real_ones() {
    let metrics = AppMetrics::memory()
        .configure_layer(|layer| layer.correlation_id(false))
        .configure_collector(|c| c.export_timeout(Duration::from_secs(3)))
        .start()
        .await
        .unwrap();
    let app = Router::new()
        .route("/a", get(|| async { "a" }))
        .layer(metrics.layer());
    let res = app.oneshot(get_as("/a", None)).await.unwrap();
    assert!(!res.headers().contains_key("x-correlation-id"));
    res.into_body().collect().await.unwrap();
    metrics.shutdown(Duration::from_secs(5)).await.unwrap();
    let snap = metrics.memory_sink().unwrap().snapshot();
    assert!(snap.requests()[0].correlation_id.is_none());

    // An invalid collector setting is refused at start, as the collector's
    // own builder refuses it.
    let err = AppMetrics::memory()
        .configure_collector(|c| c.export_timeout(Duration::ZERO))
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Collector(BuildError::InvalidSetting {
                setting: "export_timeout",
                ..
            })
        ),
        "{err:?}"
    );
}

/// `RequireAdmin` takes the admin check from the router state (`AppMetrics`
/// is one): no extension to forget, which used to be a run-time 500.
#[tokio::test]
async fn require_admin_finds_the_check_in_the_app_metrics_state() {
    let metrics = AppMetrics::memory()
        .identity(TrustedProxyHeaders)
        .admins(StaticAdmins::parse(ADMIN))
        .start()
        .await
        .unwrap();
    let app =
        Router::new()
            .route(
                "/ops",
                get(|RequireAdmin(admin): RequireAdmin| async move {
                    format!("hello {}", admin.user_id())
                }),
            )
            .with_state(metrics.clone())
            .layer(metrics.layer());
    assert_eq!(
        send(&app, get_as("/ops", Some(ADMIN))).await,
        (StatusCode::OK, format!("hello {ADMIN}"))
    );
    assert_eq!(
        send(&app, get_as("/ops", Some("bob@example.com"))).await.0,
        403
    );
    assert_eq!(send(&app, get_as("/ops", None)).await.0, 401);
}

/// A custom sink is an entry point of its own; its query side is a setting
/// of that store only (without one, the API's queries answer 503).
#[tokio::test]
async fn a_custom_sink_with_and_without_a_query_store() {
    let written = MemorySink::new();
    let metrics = AppMetrics::with_sink(written.clone())
        .identity(TrustedProxyHeaders)
        .admins(StaticAdmins::parse(ADMIN))
        .start()
        .await
        .unwrap();
    let app = Router::new()
        .nest(BASE, metrics.api_router())
        .layer(metrics.layer());
    let (status, body) = send(&app, get_as(&format!("{BASE}/performance"), Some(ADMIN))).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(r#""status_code":503"#), "{body}");
    metrics.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        written.snapshot().requests().len(),
        1,
        "the sink got the record"
    );

    let queried = MemorySink::new();
    let metrics = AppMetrics::builder(CustomSink::new(queried.clone()).query(queried.clone()))
        .identity(TrustedProxyHeaders)
        .admins(StaticAdmins::parse(ADMIN))
        .start()
        .await
        .unwrap();
    let app = Router::new()
        .nest(BASE, metrics.api_router())
        .layer(metrics.layer());
    let (status, body) = send(&app, get_as(&format!("{BASE}/performance"), Some(ADMIN))).await;
    assert_eq!(status, 200, "{body}");
    metrics.shutdown(Duration::from_secs(5)).await.unwrap();
}
