//! The admin guard: who may read the dashboard API.
//!
//! Two forms with the same rules and the same answers:
//!
//! - [`RequireAdmin`], an extractor, for single handlers;
//! - [`RequireAdminLayer`], a tower layer, for whole routers.
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
//! The guard does no authentication. It reads the [`Identity`]
//! request extension, set by the app's auth middleware or by
//! [`MetricsLayer`](crate::MetricsLayer) with
//! [`TrustedProxyHeaders`](crate::TrustedProxyHeaders); that layer must run
//! before the guard (be outside it), which `Router::layer` on an outer router
//! gives.
//!
//! The check is a [`SharedAdminCheck`]. The layer carries its own and also
//! puts it in the request extensions, so [`RequireAdmin`] works under it
//! without more setup (and does not ask the check a second time). Handlers
//! using [`RequireAdmin`] without the layer need it as an extension:
//! `.layer(Extension(shared_admin_check))`. Wrap remote checks in
//! [`CachedAdminCheck`](metrics_core::CachedAdminCheck) and share one
//! instance, so every route uses the same cache.
//!
//! # Logging
//!
//! A failed check is logged at `warn` with the user id and the error; a
//! refusal at `debug`. Access tokens are never logged: `Identity` and
//! `AccessToken` redact them in `Debug`, and no error message contains them.

use metrics_core::{AdminCheck, Identity, SharedAdminCheck, UserId};

mod extract;
mod layer;
mod rejection;

pub use extract::RequireAdmin;
pub use layer::{RequireAdminLayer, RequireAdminService, ResponseFuture};
pub use rejection::AdminRejection;

/// Left in the extensions by [`RequireAdminLayer`] once `0` was found to be
/// an admin, so [`RequireAdmin`] below it does not ask again. Private: only
/// the guard can vouch for a request.
#[derive(Debug, Clone)]
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
