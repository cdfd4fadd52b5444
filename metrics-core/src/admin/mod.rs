//! Who may see the dashboard: the [`AdminCheck`] trait and its
//! implementations.
//!
//! - [`StaticAdmins`]: a fixed list of user ids (env `ADMIN_USERS`), for
//!   development and for apps whose admins are known at deploy time.
//! - `DatabricksAdminCheck` (feature `databricks`): asks the Databricks
//!   workspace, with the caller's own token, which groups the caller is in.
//! - [`CachedAdminCheck`]: wraps any check in a TTL cache (300 s for both
//!   answers by default) with one lookup in flight per user. Remote checks
//!   should always be wrapped in it.
//!
//! A check answers `Ok(true)` (admin), `Ok(false)` (not an admin) or an
//! [`AdminCheckError`] when it cannot tell. The HTTP guard in `metrics-tower`
//! turns these into 200 / 403 / 503: an error never grants access and is never
//! cached.
//!
//! # Writing your own check
//!
//! ```
//! use metrics_core::{AdminCheck, AdminCheckError, Identity, async_trait};
//!
//! /// Admins are everyone at example.com.
//! struct CompanyStaff;
//!
//! #[async_trait]
//! impl AdminCheck for CompanyStaff {
//!     async fn is_admin(&self, identity: &Identity) -> Result<bool, AdminCheckError> {
//!         Ok(identity.user_id().as_str().ends_with("@example.com"))
//!     }
//! }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! assert!(CompanyStaff.is_admin(&Identity::new("ada@example.com")).await.unwrap());
//! # }
//! ```

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::identity::Identity;

mod cache;
#[cfg(feature = "databricks")]
mod databricks;
mod static_list;

pub use cache::CachedAdminCheck;
#[cfg(feature = "databricks")]
pub use databricks::{DatabricksAdminCheck, DatabricksAdminCheckBuilder, DatabricksConfigError};
pub use static_list::StaticAdmins;

/// Decides whether the caller of a request is an administrator.
///
/// Held as a trait object (`Arc<dyn AdminCheck>`) by the guard, hence
/// `async_trait`. Implementations answer `Ok(false)` for "known not to be an
/// admin" and `Err(_)` only when they cannot tell; the guard denies access in
/// both cases (403 and 503 respectively).
#[async_trait]
pub trait AdminCheck: Send + Sync + 'static {
    /// Whether `identity` has administrator privileges.
    async fn is_admin(&self, identity: &Identity) -> Result<bool, AdminCheckError>;
}

#[async_trait]
impl<T: AdminCheck + ?Sized> AdminCheck for Arc<T> {
    async fn is_admin(&self, identity: &Identity) -> Result<bool, AdminCheckError> {
        (**self).is_admin(identity).await
    }
}

#[async_trait]
impl<T: AdminCheck + ?Sized> AdminCheck for Box<T> {
    async fn is_admin(&self, identity: &Identity) -> Result<bool, AdminCheckError> {
        (**self).is_admin(identity).await
    }
}

/// A cheap, cloneable handle to any [`AdminCheck`]: what the HTTP guard
/// reads from request extensions, and what apps pass around.
///
/// ```
/// use metrics_core::{AdminCheck, CachedAdminCheck, Identity, SharedAdminCheck, StaticAdmins};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let admins = SharedAdminCheck::new(CachedAdminCheck::new(StaticAdmins::from_env()));
/// let for_the_router = admins.clone(); // one check, one cache
/// assert!(!for_the_router.is_admin(&Identity::new("nobody")).await.unwrap());
/// # }
/// ```
#[derive(Clone)]
pub struct SharedAdminCheck {
    check: Arc<dyn AdminCheck>,
    // Shown by Debug, since the check itself need not be Debug.
    type_name: &'static str,
}

impl SharedAdminCheck {
    /// Shares `check`.
    pub fn new<C: AdminCheck>(check: C) -> Self {
        Self {
            check: Arc::new(check),
            type_name: std::any::type_name::<C>(),
        }
    }

    /// Shares a check that is already behind an `Arc`.
    pub fn from_arc(check: Arc<dyn AdminCheck>) -> Self {
        Self {
            check,
            type_name: "dyn AdminCheck",
        }
    }

    /// The shared check as a trait object.
    pub fn as_arc(&self) -> &Arc<dyn AdminCheck> {
        &self.check
    }
}

#[async_trait]
impl AdminCheck for SharedAdminCheck {
    async fn is_admin(&self, identity: &Identity) -> Result<bool, AdminCheckError> {
        self.check.is_admin(identity).await
    }
}

impl std::fmt::Debug for SharedAdminCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SharedAdminCheck")
            .field(&self.type_name)
            .finish()
    }
}

/// A shareable error source. `AdminCheckError` is `Clone` because one failed
/// lookup answers every caller that was waiting for it.
pub type SharedError = Arc<dyn StdError + Send + Sync + 'static>;

/// Why an [`AdminCheck`] could not decide. The guard answers 503 (fail
/// secure) for every variant; none of them is cached.
///
/// Messages never contain access tokens.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum AdminCheckError {
    /// The check acts on the caller's behalf and the identity carries no
    /// access token (for example the proxy did not forward
    /// `X-Forwarded-Access-Token`).
    #[error(
        "the admin check needs the caller's access token and the request carried none; forward it (X-Forwarded-Access-Token) or use another check"
    )]
    MissingToken,
    /// The backend could not be reached (connection refused, DNS, TLS, reset).
    #[error("admin check backend unreachable: {0}")]
    Unavailable(#[source] SharedError),
    /// The backend did not answer within the configured timeout.
    #[error("admin check backend did not answer within {0:?}")]
    Timeout(Duration),
    /// The backend answered with a non-success HTTP status.
    #[error("admin check backend answered HTTP {status}")]
    Status {
        /// The HTTP status code received.
        status: u16,
    },
    /// The backend's answer could not be understood (malformed JSON, too
    /// large).
    #[error("admin check backend sent an unusable answer: {0}")]
    InvalidResponse(#[source] SharedError),
}

impl AdminCheckError {
    /// A connection-level failure.
    pub fn unavailable(err: impl Into<Box<dyn StdError + Send + Sync + 'static>>) -> Self {
        Self::Unavailable(Arc::from(err.into()))
    }

    /// An answer that could not be understood.
    pub fn invalid_response(err: impl Into<Box<dyn StdError + Send + Sync + 'static>>) -> Self {
        Self::InvalidResponse(Arc::from(err.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Yes;

    #[async_trait]
    impl AdminCheck for Yes {
        async fn is_admin(&self, _: &Identity) -> Result<bool, AdminCheckError> {
            Ok(true)
        }
    }

    #[tokio::test]
    async fn arc_and_box_forward() {
        let id = Identity::new("ada");
        let dynamic: Arc<dyn AdminCheck> = Arc::new(Yes);
        assert!(dynamic.is_admin(&id).await.unwrap());
        let boxed: Box<dyn AdminCheck> = Box::new(Yes);
        assert!(boxed.is_admin(&id).await.unwrap());
        let shared = SharedAdminCheck::new(Yes);
        assert!(shared.clone().is_admin(&id).await.unwrap());
        assert!(format!("{shared:?}").contains("Yes"));
        assert!(
            SharedAdminCheck::from_arc(dynamic)
                .is_admin(&id)
                .await
                .unwrap()
        );
    }

    #[test]
    fn errors_keep_their_source_and_clone() {
        let err = AdminCheckError::unavailable("connection refused");
        let copy = err.clone();
        assert_eq!(
            copy.source().map(ToString::to_string).as_deref(),
            Some("connection refused")
        );
        assert_eq!(
            err.to_string(),
            "admin check backend unreachable: connection refused"
        );
    }
}
