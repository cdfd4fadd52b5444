//! Who is behind a request: [`Identity`], set by the app's authentication (or
//! read from trusted proxy headers) and used for `user_id` and admin checks.

use std::fmt;
use std::sync::Arc;

use crate::record::UserId;

/// The authenticated caller of a request.
///
/// Apps with their own auth layer insert it as a request extension
/// (`req.extensions_mut().insert(Identity::new("ada@example.com"))`); the
/// metrics layer and the admin guard read it from there.
///
/// ```
/// use metrics_core::{AccessToken, Identity};
/// let id = Identity::new("ada@example.com").with_access_token(AccessToken::new("s3cret"));
/// assert_eq!(id.user_id().as_str(), "ada@example.com");
/// // Tokens never show up in Debug output.
/// assert!(!format!("{id:?}").contains("s3cret"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    user_id: UserId,
    access_token: Option<AccessToken>,
}

impl Identity {
    /// An identity for `user_id` without a token.
    pub fn new(user_id: impl Into<UserId>) -> Self {
        Self {
            user_id: user_id.into(),
            access_token: None,
        }
    }

    /// Attaches the caller's access token (for admin checks made on the
    /// caller's behalf).
    pub fn with_access_token(mut self, token: AccessToken) -> Self {
        self.access_token = Some(token);
        self
    }

    /// The user id recorded with the caller's requests and events.
    pub fn user_id(&self) -> &UserId {
        &self.user_id
    }

    /// The caller's access token, if the identity source provided one.
    pub fn access_token(&self) -> Option<&AccessToken> {
        self.access_token.as_ref()
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("user_id", &self.user_id)
            .field("access_token", &self.access_token)
            .finish()
    }
}

/// A bearer token acting on the caller's behalf. Its `Debug` output is
/// redacted, so it never reaches logs by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(Arc<str>);

impl AccessToken {
    /// Wraps a token.
    pub fn new(token: impl Into<Arc<str>>) -> Self {
        Self(token.into())
    }

    /// The token itself, for building an `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken(<redacted>)")
    }
}
