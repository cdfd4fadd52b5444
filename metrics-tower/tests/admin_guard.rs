//! The admin guard (extractor and layer) over real axum routers: the
//! 401 / 403 / 503 / 200 matrix with the exact bodies, when the check is
//! (not) asked, the guard behind `MetricsLayer` + proxy headers, tokens kept
//! out of `Debug` and logs, and (feature `databricks`) the whole path to a
//! local SCIM server.

#![cfg(feature = "axum")]

mod support;

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRef, State};
use axum::routing::get;
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use metrics_core::{
    AccessToken, AdminCheck, AdminCheckError, Identity, SharedAdminCheck, StaticAdmins, async_trait,
};
use metrics_tower::{MetricsLayer, identity::TrustedProxyHeaders};
use metrics_tower::{admin::AdminRejection, admin::RequireAdmin, admin::RequireAdminLayer};
use serde_json::{Value, json};
use support::Recorded;
use tower::ServiceExt;
use tower::util::MapRequestLayer;

const TOKEN: &str = "dapi-very-secret-token-42";

// ===== helpers =====

/// Admins from a list; counts calls; fails for users listed as broken.
struct Scripted {
    admins: &'static [&'static str],
    broken: &'static [&'static str],
    calls: AtomicUsize,
}

impl Scripted {
    fn new(admins: &'static [&'static str], broken: &'static [&'static str]) -> Arc<Self> {
        Arc::new(Self {
            admins,
            broken,
            calls: AtomicUsize::new(0),
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl AdminCheck for Scripted {
    async fn is_admin(&self, identity: &Identity) -> Result<bool, AdminCheckError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let user = identity.user_id().as_str();
        if self.broken.contains(&user) {
            return Err(AdminCheckError::unavailable("connection refused"));
        }
        Ok(self.admins.contains(&user))
    }
}

fn standard() -> Arc<Scripted> {
    Scripted::new(&["ada@example.com"], &["broken@example.com"])
}

/// Puts the proxy headers' identity into the extensions, as the app's auth
/// or `MetricsLayer` + `TrustedProxyHeaders` would.
fn proxy_identity() -> MapRequestLayer<fn(Request<Body>) -> Request<Body>> {
    fn insert(mut req: Request<Body>) -> Request<Body> {
        if let Some(identity) = TrustedProxyHeaders::from_headers(req.headers()) {
            req.extensions_mut().insert(identity);
        }
        req
    }
    MapRequestLayer::new(insert as fn(Request<Body>) -> Request<Body>)
}

fn get_as(uri: &str, user: Option<&str>) -> Request<Body> {
    let mut req = Request::get(uri);
    if let Some(user) = user {
        req = req
            .header("x-forwarded-email", user)
            .header("x-forwarded-access-token", TOKEN);
    }
    req.body(Body::empty()).unwrap()
}

struct Answer {
    status: StatusCode,
    content_type: Option<String>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

async fn send(app: &Router, req: Request<Body>) -> Answer {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let content_type = res
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = res.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        content_type,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

fn unauthorized() -> Value {
    json!({"error": "Unauthorized", "message": "Authentication required", "status_code": 401})
}

fn access_denied() -> Value {
    json!({
        "error": "Access Denied",
        "message": "Administrator privileges required to access metrics",
        "status_code": 403
    })
}

fn unavailable() -> Value {
    json!({
        "error": "Service Unavailable",
        "message": "Unable to verify administrator privileges",
        "status_code": 503
    })
}

async fn assert_rejected(app: &Router, req: Request<Body>, status: u16, body: Value) {
    let answer = send(app, req).await;
    assert_eq!(answer.status.as_u16(), status, "{}", answer.body);
    assert_eq!(answer.content_type.as_deref(), Some("application/json"));
    assert_eq!(answer.json(), body);
}

async fn assert_matrix(app: &Router, uri: &str) {
    assert_rejected(app, get_as(uri, None), 401, unauthorized()).await;
    assert_rejected(
        app,
        get_as(uri, Some("bob@example.com")),
        403,
        access_denied(),
    )
    .await;
    assert_rejected(
        app,
        get_as(uri, Some("broken@example.com")),
        503,
        unavailable(),
    )
    .await;
    let ok = send(app, get_as(uri, Some("ada@example.com"))).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_eq!(ok.body, "hello ada@example.com");
}

async fn hello(RequireAdmin(admin): RequireAdmin) -> String {
    format!("hello {}", admin.user_id())
}

// ===== extractor =====

#[tokio::test]
async fn extractor_answers_401_403_503_200() {
    let check = standard();
    let app = Router::new()
        .route("/secret", get(hello))
        .with_state(SharedAdminCheck::from_arc(check.clone()))
        .layer(proxy_identity());
    assert_matrix(&app, "/secret").await;
    assert_eq!(check.calls(), 3, "no call without an identity");
}

/// The check comes from the app's own state through `FromRef`, as axum
/// shares a pool: no extension to forget (that was a run-time 500).
#[tokio::test]
async fn extractor_reads_the_check_from_the_app_state() {
    #[derive(Clone)]
    struct AppState {
        admins: SharedAdminCheck,
        greeting: &'static str,
    }
    impl FromRef<AppState> for SharedAdminCheck {
        fn from_ref(state: &AppState) -> Self {
            state.admins.clone()
        }
    }
    let check = standard();
    let state = AppState {
        admins: SharedAdminCheck::from_arc(check.clone()),
        greeting: "hello",
    };
    let app = Router::new()
        .route(
            "/secret",
            get(
                |State(state): State<AppState>, RequireAdmin(admin): RequireAdmin| async move {
                    format!("{} {}", state.greeting, admin.user_id())
                },
            ),
        )
        .with_state(state)
        .layer(proxy_identity());
    assert_matrix(&app, "/secret").await;
    assert_eq!(check.calls(), 3, "no call without an identity");
}

/// Under the layer the extractor takes the layer's decision: the state's
/// check (which admits nobody) is not asked.
fn nobody() -> SharedAdminCheck {
    SharedAdminCheck::new(StaticAdmins::parse(""))
}

// ===== layer =====

#[tokio::test]
async fn layer_answers_401_403_503_200_without_calling_the_inner_service() {
    let check = standard();
    let inner_calls = Arc::new(AtomicUsize::new(0));
    let counted = {
        let inner_calls = inner_calls.clone();
        move |RequireAdmin(admin): RequireAdmin| async move {
            inner_calls.fetch_add(1, Ordering::SeqCst);
            format!("hello {}", admin.user_id())
        }
    };
    let app = Router::new()
        .route("/a", get(counted.clone()))
        .route("/b", get(counted))
        .layer(RequireAdminLayer::new(SharedAdminCheck::from_arc(
            check.clone(),
        )))
        .with_state(nobody())
        .layer(proxy_identity());
    assert_matrix(&app, "/a").await;
    assert_eq!(
        inner_calls.load(Ordering::SeqCst),
        1,
        "only the admin got through"
    );
    assert_eq!(
        check.calls(),
        3,
        "asked once per identified request; the extractor under the layer did not ask again"
    );
    assert_matrix(&app, "/b").await;
    assert_eq!(inner_calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn layer_passes_the_inner_response_through() {
    let app = Router::new()
        .route(
            "/teapot",
            get(|| async {
                (
                    StatusCode::IM_A_TEAPOT,
                    [("x-inner", "yes")],
                    "short and stout",
                )
            }),
        )
        .layer(RequireAdminLayer::new(SharedAdminCheck::new(
            StaticAdmins::parse("ada@example.com"),
        )))
        .layer(proxy_identity());
    let res = app
        .oneshot(get_as("/teapot", Some("ADA@example.com")))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::IM_A_TEAPOT);
    assert_eq!(res.headers()["x-inner"], "yes");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"short and stout");
}

#[tokio::test]
async fn layer_guards_a_nested_router_only() {
    let check = standard();
    let app = Router::new()
        .route("/public", get(|| async { "anyone" }))
        .nest(
            "/api/v1/metrics",
            Router::new()
                .route("/performance", get(hello))
                .layer(RequireAdminLayer::new(SharedAdminCheck::from_arc(
                    check.clone(),
                )))
                .with_state(nobody()),
        )
        .layer(proxy_identity());
    assert_eq!(
        send(&app, get_as("/public", None)).await.status,
        StatusCode::OK
    );
    assert_matrix(&app, "/api/v1/metrics/performance").await;
}

/// The intended set-up: `MetricsLayer` with `TrustedProxyHeaders` outside,
/// the guard inside; every request, refused or not, is still recorded.
#[tokio::test]
async fn guard_behind_metrics_layer_with_proxy_headers() {
    let recorded = Recorded::new();
    let app = Router::new()
        .nest(
            "/api/v1/metrics",
            Router::new()
                .route("/performance", get(hello))
                .layer(RequireAdminLayer::new(SharedAdminCheck::from_arc(
                    standard(),
                )))
                .with_state(nobody()),
        )
        .layer(MetricsLayer::new(recorded.collector.clone()).identity_with(TrustedProxyHeaders));
    assert_matrix(&app, "/api/v1/metrics/performance").await;

    let mut records = recorded.records().await;
    records.sort_by_key(|r| r.status);
    let seen: Vec<(u16, Option<&str>)> = records
        .iter()
        .map(|r| (r.status, r.user_id.as_ref().map(|u| u.as_str())))
        .collect();
    assert_eq!(
        seen,
        [
            (200, Some("ada@example.com")),
            (401, None),
            (403, Some("bob@example.com")),
            (503, Some("broken@example.com")),
        ]
    );
}

// ===== no tokens in Debug or logs =====

/// Captures every tracing event (all targets, TRACE) emitted on the current
/// thread while installed (tests run on a current-thread runtime, so the
/// guard, the check and the HTTP client all log here).
///
/// One global subscriber routes events to the installing thread's buffer. A
/// per-test `set_default` would race with the other tests: tracing caches
/// each callsite's interest, and a callsite first hit by a thread without a
/// subscriber can stay disabled for ours.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

thread_local! {
    static CAPTURE: std::cell::RefCell<Option<Logs>> = const { std::cell::RefCell::new(None) };
}

struct ThreadWriter;

impl io::Write for ThreadWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        CAPTURE.with(|capture| {
            if let Some(logs) = &*capture.borrow() {
                logs.0.lock().unwrap().extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Capturing;

impl Drop for Capturing {
    fn drop(&mut self) {
        CAPTURE.with(|capture| capture.borrow_mut().take());
    }
}

impl Logs {
    fn install(&self) -> Capturing {
        static GLOBAL: std::sync::Once = std::sync::Once::new();
        GLOBAL.call_once(|| {
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_ansi(false)
                .with_writer(|| ThreadWriter)
                .finish();
            tracing::subscriber::set_global_default(subscriber).unwrap();
        });
        CAPTURE.with(|capture| *capture.borrow_mut() = Some(self.clone()));
        Capturing
    }

    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

#[test]
fn debug_never_shows_tokens() {
    let identity = Identity::new("ada@example.com").with_access_token(AccessToken::new(TOKEN));
    let req = {
        let mut req = get_as("/x", Some("ada@example.com"));
        req.extensions_mut().insert(identity.clone());
        req
    };
    for shown in [
        format!("{identity:?}"),
        format!("{:?}", RequireAdmin(identity.clone())),
        format!(
            "{:?}",
            AdminRejection::CheckFailed(AdminCheckError::MissingToken)
        ),
        format!("{:?}", req.extensions().get::<Identity>()),
        format!(
            "{:?}",
            SharedAdminCheck::new(StaticAdmins::parse("ada@example.com"))
        ),
    ] {
        assert!(!shown.contains(TOKEN), "{shown}");
    }
    assert!(format!("{identity:?}").contains("ada@example.com"));
}

#[tokio::test]
async fn logs_never_show_tokens() {
    let logs = Logs::default();
    let _guard = logs.install();
    let app = Router::new()
        .route("/secret", get(hello))
        .layer(RequireAdminLayer::new(SharedAdminCheck::from_arc(
            standard(),
        )))
        .with_state(nobody())
        .layer(proxy_identity());
    assert_matrix(&app, "/secret").await;

    let text = logs.text();
    assert!(
        text.contains("admin check failed") && text.contains("broken@example.com"),
        "the failure is logged: {text}"
    );
    assert!(!text.contains(TOKEN), "{text}");
}

// ===== the Databricks check, end to end =====

#[cfg(feature = "databricks")]
mod databricks {
    use std::time::Duration;

    use metrics_core::{CachedAdminCheck, DatabricksAdminCheck};
    use wiremock::matchers::{header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;

    const ME: &str = "/api/2.0/preview/scim/v2/Me";

    fn me(groups: &[&str]) -> Value {
        let groups: Vec<Value> = groups.iter().map(|g| json!({"display": g})).collect();
        json!({"userName": "ada@example.com", "groups": groups})
    }

    /// ada (in `admins`) and bob (in `users`) told apart by their tokens.
    async fn workspace() -> MockServer {
        let server = MockServer::start().await;
        for (token, groups) in [
            (TOKEN, &["users", "Admins"][..]),
            ("bob-token", &["users"][..]),
        ] {
            Mock::given(method("GET"))
                .and(path(ME))
                .and(header("authorization", format!("Bearer {token}").as_str()))
                .respond_with(ResponseTemplate::new(200).set_body_json(me(groups)))
                .mount(&server)
                .await;
        }
        server
    }

    fn guarded(check: impl AdminCheck) -> Router {
        Router::new()
            .route("/performance", get(hello))
            .layer(RequireAdminLayer::new(SharedAdminCheck::new(check)))
            .with_state(super::nobody())
            .layer(proxy_identity())
    }

    fn as_bob() -> Request<Body> {
        Request::get("/performance")
            .header("x-forwarded-email", "bob@example.com")
            .header("x-forwarded-access-token", "bob-token")
            .body(Body::empty())
            .unwrap()
    }

    fn without_token() -> Request<Body> {
        Request::get("/performance")
            .header("x-forwarded-email", "ada@example.com")
            .body(Body::empty())
            .unwrap()
    }

    async fn jump(by: Duration) {
        tokio::time::pause();
        tokio::time::advance(by).await;
        tokio::time::resume();
    }

    #[tokio::test]
    async fn admin_non_admin_and_missing_token() {
        let server = workspace().await;
        let app = guarded(DatabricksAdminCheck::builder(server.uri()).build().unwrap());
        let ok = send(&app, get_as("/performance", Some("ada@example.com"))).await;
        assert_eq!(
            (ok.status, ok.body.as_str()),
            (StatusCode::OK, "hello ada@example.com")
        );
        assert_rejected(&app, as_bob(), 403, access_denied()).await;
        assert_rejected(&app, without_token(), 503, unavailable()).await;
        assert_rejected(&app, get_as("/performance", None), 401, unauthorized()).await;
        assert_eq!(server.received_requests().await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn api_failure_is_503() {
        for failure in [
            ResponseTemplate::new(500),
            ResponseTemplate::new(401),
            ResponseTemplate::new(200).set_body_string("{not json"),
        ] {
            let server = MockServer::start().await;
            Mock::given(method("GET"))
                .respond_with(failure)
                .mount(&server)
                .await;
            let app = guarded(DatabricksAdminCheck::builder(server.uri()).build().unwrap());
            assert_rejected(
                &app,
                get_as("/performance", Some("ada@example.com")),
                503,
                unavailable(),
            )
            .await;
        }
    }

    #[tokio::test]
    async fn expired_admin_plus_failing_api_is_503() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200).set_body_json(me(&["admins"])))
            .up_to_n_times(1)
            .with_priority(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(502))
            .with_priority(2)
            .mount(&server)
            .await;
        let app = guarded(CachedAdminCheck::new(
            DatabricksAdminCheck::builder(server.uri()).build().unwrap(),
        ));
        let ada = || get_as("/performance", Some("ada@example.com"));

        assert_eq!(send(&app, ada()).await.status, StatusCode::OK);
        jump(Duration::from_secs(299)).await;
        assert_eq!(send(&app, ada()).await.status, StatusCode::OK, "cached");
        assert_eq!(server.received_requests().await.unwrap().len(), 1);

        jump(Duration::from_secs(1)).await;
        assert_rejected(&app, ada(), 503, unavailable()).await;
        assert_rejected(&app, ada(), 503, unavailable()).await;
        assert_eq!(
            server.received_requests().await.unwrap().len(),
            3,
            "errors are not cached"
        );
    }

    #[tokio::test]
    async fn logs_of_remote_checks_never_show_tokens() {
        let logs = Logs::default();
        let _guard = logs.install();
        let server = workspace().await;
        Mock::given(method("GET"))
            .and(header("authorization", "Bearer carol-token"))
            .respond_with(ResponseTemplate::new(500))
            .mount(&server)
            .await;
        let app = guarded(DatabricksAdminCheck::builder(server.uri()).build().unwrap());
        assert_eq!(
            send(&app, get_as("/performance", Some("ada@example.com")))
                .await
                .status,
            StatusCode::OK
        );
        assert_eq!(send(&app, as_bob()).await.status, StatusCode::FORBIDDEN);
        let carol = Request::get("/performance")
            .header("x-forwarded-email", "carol@example.com")
            .header("x-forwarded-access-token", "carol-token")
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            send(&app, carol).await.status,
            StatusCode::SERVICE_UNAVAILABLE
        );

        let text = logs.text();
        assert!(text.contains("admin check failed"), "{text}");
        assert!(text.contains("databricks admin check"), "{text}");
        for token in [TOKEN, "bob-token", "carol-token"] {
            assert!(!text.contains(token), "{token} in logs: {text}");
        }
    }
}
