//! The admin guard: who may read the dashboard API.
//!
//! Two forms with the same rules and the same answers:
//!
//! - [`RequireAdminLayer`], a tower layer for whole services or routers. It
//!   needs only `tower` and `http`, so a plain hyper or tower service can use
//!   it without the `axum` feature;
//! - `RequireAdmin` (feature `axum`), an extractor for single handlers.
//!
//! | the request | answer |
//! |---|---|
//! | no [`Identity`] in the extensions | 401 |
//! | the check says "not an admin" | 403 `Access Denied` / `Administrator privileges required to access metrics` |
//! | the check fails (timeout, backend down, no token) | 503 (fail secure; never the last known answer) |
//! | the check says "admin" | the handler runs |
//!
//! Every rejection has the API's JSON error envelope
//! `{"error": "...", "message": "...", "status_code": n}` (see
//! [`AdminRejection`]).
//!
//! # Where the identity and the check come from
//!
//! The guard does no authentication. It reads the [`Identity`] request
//! extension, set by the app's auth middleware, by
//! [`MetricsLayer`](crate::MetricsLayer) with
//! [`TrustedProxyHeaders`](crate::identity::TrustedProxyHeaders), or by an
//! [`IdentityLayer`](crate::identity::IdentityLayer) with any
//! [`MakeIdentity`](crate::identity::MakeIdentity); that layer must run
//! before the guard (be outside it).
//!
//! The check is a [`SharedAdminCheck`]. The layer carries its own. The
//! extractor takes it from the router state (`SharedAdminCheck:
//! FromRef<S>`, as axum's own examples share a pool), so a router without a
//! check does not compile; under the layer it does not ask the check a
//! second time. Wrap remote checks in
//! [`CachedAdminCheck`](metrics_core::CachedAdminCheck) and share one
//! instance, so every route uses the same cache.
//!
//! # Without axum
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use metrics_core::{Identity, SharedAdminCheck, StaticAdmins};
//! use metrics_tower::admin::RequireAdminLayer;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let admins = SharedAdminCheck::new(StaticAdmins::parse("ada@example.com"));
//! let service = ServiceBuilder::new()
//!     .layer(RequireAdminLayer::new(admins))
//!     .service(service_fn(|_req: Request<Full<Bytes>>| async {
//!         Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from("numbers"))))
//!     }));
//!
//! let mut req = Request::new(Full::default());
//! req.extensions_mut().insert(Identity::new("bob@example.com"));
//! let res = service.clone().oneshot(req).await.unwrap();
//! assert_eq!(res.status(), 403);
//!
//! let mut req = Request::new(Full::default());
//! req.extensions_mut().insert(Identity::new("ada@example.com"));
//! let res = service.oneshot(req).await.unwrap();
//! assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "numbers");
//! # }
//! ```
//!
//! # Logging
//!
//! A failed check is logged at `warn` with the user id and the error; a
//! refusal at `debug`. Access tokens are never logged: `Identity` and
//! `AccessToken` redact them in `Debug`, and no error message contains them.

use metrics_core::{AdminCheck, Identity, SharedAdminCheck, UserId};

#[cfg(feature = "axum")]
mod extract;
mod layer;
mod rejection;

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use extract::RequireAdmin;
pub use layer::{RequireAdminLayer, RequireAdminService, ResponseBody, ResponseFuture};
pub use rejection::AdminRejection;

/// Left in the extensions by [`RequireAdminLayer`] once `0` was found to be
/// an admin, so `RequireAdmin` below it does not ask again. Private: only
/// the guard can vouch for a request.
#[derive(Debug, Clone)]
#[cfg_attr(
    not(feature = "axum"),
    allow(dead_code, reason = "read by the axum extractor only")
)]
struct VerifiedAdmin(UserId);

/// The guard's decision for `identity`.
async fn verify(check: &SharedAdminCheck, identity: &Identity) -> Result<(), AdminRejection> {
    match check.is_admin(identity).await {
        Ok(true) => Ok(()),
        Ok(false) => {
            tracing::debug!(user = %identity.user_id(), "not an admin: 403");
            Err(AdminRejection::NotAdmin)
        }
        Err(error) => {
            tracing::warn!(
                user = %identity.user_id(),
                %error,
                "admin check failed: answering 503"
            );
            Err(AdminRejection::CheckFailed(error))
        }
    }
}
