//! The admin guard's tower layer on a plain tower service (no axum router,
//! no `axum` feature needed): hyper-style `Request<Full<Bytes>>` in,
//! `Response<Full<Bytes>>` out, with the identity from an `IdentityLayer`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body::Body as _;
use http_body_util::{BodyExt, Full};
use metrics_core::{Identity, SharedAdminCheck, StaticAdmins};
use metrics_tower::admin::RequireAdminLayer;
use metrics_tower::identity::{IdentityLayer, TrustedProxyHeaders};
use tower::{ServiceBuilder, ServiceExt, service_fn};

fn request(user: Option<&str>) -> Request<Full<Bytes>> {
    let mut b = Request::get("/report");
    if let Some(user) = user {
        b = b.header("x-forwarded-email", user);
    }
    b.body(Full::default()).unwrap()
}

#[tokio::test]
async fn plain_tower_service_is_guarded_with_the_api_bodies() {
    let inner_calls = Arc::new(AtomicUsize::new(0));
    let calls = inner_calls.clone();
    let service = ServiceBuilder::new()
        .layer(IdentityLayer::new(TrustedProxyHeaders))
        .layer(RequireAdminLayer::new(SharedAdminCheck::new(
            StaticAdmins::parse("ada@example.com"),
        )))
        .service(service_fn(move |req: Request<Full<Bytes>>| {
            calls.fetch_add(1, Ordering::SeqCst);
            let user = req
                .extensions()
                .get::<Identity>()
                .unwrap()
                .user_id()
                .to_string();
            async move {
                Ok::<_, Infallible>(
                    Response::builder()
                        .header("x-inner", "yes")
                        .body(Full::new(Bytes::from(format!("numbers for {user}"))))
                        .unwrap(),
                )
            }
        }));

    for (user, status, body) in [
        (
            None,
            StatusCode::UNAUTHORIZED,
            r#"{"error":"Unauthorized","message":"Authentication required","status_code":401}"#,
        ),
        (
            Some("bob@example.com"),
            StatusCode::FORBIDDEN,
            r#"{"error":"Access Denied","message":"Administrator privileges required to access metrics","status_code":403}"#,
        ),
    ] {
        let res = service.clone().oneshot(request(user)).await.unwrap();
        assert_eq!(res.status(), status);
        assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(res.headers()[header::CACHE_CONTROL], "no-store");
        assert_eq!(res.body().size_hint().exact(), Some(body.len() as u64));
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(bytes, body);
    }
    assert_eq!(
        inner_calls.load(Ordering::SeqCst),
        0,
        "refused requests never reach the service"
    );

    let res = service
        .oneshot(request(Some("ada@example.com")))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-inner"], "yes");
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(bytes, "numbers for ada@example.com");
    assert_eq!(inner_calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_closure_identity_feeds_the_guard() {
    // A custom source (here a header of the app's own gateway), as a closure.
    let gateway = |req: &mut Request<Full<Bytes>>| {
        req.headers()
            .get("x-gateway-user")
            .and_then(|v| v.to_str().ok())
            .map(metrics_core::UserId::from)
    };
    let service = ServiceBuilder::new()
        .layer(IdentityLayer::new(gateway))
        .layer(RequireAdminLayer::new(SharedAdminCheck::new(
            StaticAdmins::parse("ada"),
        )))
        .service(service_fn(|_req: Request<Full<Bytes>>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        }));
    let req = Request::get("/")
        .header("x-gateway-user", "ada")
        .body(Full::default())
        .unwrap();
    assert_eq!(service.clone().oneshot(req).await.unwrap().status(), 200);
    let req = Request::get("/")
        .header("x-gateway-user", "eve")
        .body(Full::default())
        .unwrap();
    assert_eq!(service.oneshot(req).await.unwrap().status(), 403);
}
