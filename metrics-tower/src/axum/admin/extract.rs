//! [`RequireAdmin`]: the guard as an axum extractor.

use axum::extract::FromRequestParts;
use http::request::Parts;
use metrics_core::{Identity, SharedAdminCheck};

use super::{AdminRejection, VerifiedAdmin, verify};

/// Extracts the caller's [`Identity`] if, and only if, the caller is an
/// administrator; otherwise the handler does not run and an
/// [`AdminRejection`] answers (401 / 403 / 503).
///
/// Needs an [`Identity`] and a [`SharedAdminCheck`] in the request
/// extensions (see the [module docs](super)). Works with any router state.
///
/// # Example
///
/// ```
/// use axum::{Extension, Router, body::Body, routing::get};
/// use http::Request;
/// use metrics_core::{Identity, SharedAdminCheck, StaticAdmins};
/// use metrics_tower::axum::RequireAdmin;
/// use tower::ServiceExt;
///
/// async fn secrets(RequireAdmin(admin): RequireAdmin) -> String {
///     format!("hello, {}", admin.user_id())
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let admins = SharedAdminCheck::new(StaticAdmins::parse("ada@example.com"));
/// let app: Router = Router::new()
///     .route("/secrets", get(secrets))
///     .layer(Extension(admins));
///
/// // Normally the app's auth (or MetricsLayer + TrustedProxyHeaders) sets the identity.
/// let mut req = Request::get("/secrets").body(Body::empty()).unwrap();
/// req.extensions_mut().insert(Identity::new("bob@example.com"));
/// let res = app.clone().oneshot(req).await.unwrap();
/// assert_eq!(res.status(), 403);
///
/// let mut req = Request::get("/secrets").body(Body::empty()).unwrap();
/// req.extensions_mut().insert(Identity::new("ada@example.com"));
/// assert_eq!(app.oneshot(req).await.unwrap().status(), 200);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RequireAdmin(pub Identity);

impl<S: Send + Sync> FromRequestParts<S> for RequireAdmin {
    type Rejection = AdminRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let identity = parts
            .extensions
            .get::<Identity>()
            .cloned()
            .ok_or(AdminRejection::Unauthenticated)?;
        // Already decided by RequireAdminLayer for this very user.
        if parts
            .extensions
            .get::<VerifiedAdmin>()
            .is_some_and(|verified| verified.0 == *identity.user_id())
        {
            return Ok(Self(identity));
        }
        let check = parts
            .extensions
            .get::<SharedAdminCheck>()
            .cloned()
            .ok_or_else(|| {
                tracing::error!("RequireAdmin used without a SharedAdminCheck extension: 500");
                AdminRejection::NotConfigured
            })?;
        verify(&check, &identity).await?;
        Ok(Self(identity))
    }
}
