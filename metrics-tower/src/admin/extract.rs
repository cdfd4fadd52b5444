//! [`RequireAdmin`]: the guard as an axum extractor.

use axum::extract::{FromRef, FromRequestParts};
use http::request::Parts;
use metrics_core::{Identity, SharedAdminCheck};

use super::{AdminRejection, VerifiedAdmin, verify};

/// Extracts the caller's [`Identity`] if, and only if, the caller is an
/// administrator; otherwise the handler does not run and an
/// [`AdminRejection`] answers (401 / 403 / 503).
///
/// Needs an [`Identity`] in the request extensions (see the
/// [module docs](super)) and a [`SharedAdminCheck`] from the router state:
/// the state is the check itself, or holds one (`SharedAdminCheck:
/// FromRef<YourState>`, derived with `#[derive(FromRef)]` or written by
/// hand, as axum shares a database pool). A router whose state has no check
/// does not compile. Under a [`RequireAdminLayer`](super::RequireAdminLayer)
/// that already let this user through, the check is not asked again.
///
/// # Example
///
/// ```
/// use axum::extract::FromRef;
/// use axum::{Router, body::Body, routing::get};
/// use http::Request;
/// use metrics_core::{Identity, SharedAdminCheck, StaticAdmins};
/// use metrics_tower::admin::RequireAdmin;
/// use tower::ServiceExt;
///
/// #[derive(Clone)]
/// struct AppState {
///     admins: SharedAdminCheck,
/// }
///
/// impl FromRef<AppState> for SharedAdminCheck {
///     fn from_ref(state: &AppState) -> Self {
///         state.admins.clone()
///     }
/// }
///
/// async fn secrets(RequireAdmin(admin): RequireAdmin) -> String {
///     format!("hello, {}", admin.user_id())
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let state = AppState { admins: SharedAdminCheck::new(StaticAdmins::parse("ada@example.com")) };
/// let app: Router = Router::new().route("/secrets", get(secrets)).with_state(state);
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

impl<S> FromRequestParts<S> for RequireAdmin
where
    S: Send + Sync,
    SharedAdminCheck: FromRef<S>,
{
    type Rejection = AdminRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
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
        verify(&SharedAdminCheck::from_ref(state), &identity).await?;
        Ok(Self(identity))
    }
}
