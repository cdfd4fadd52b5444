//! Who made a request: the `user_id` of its record.
//!
//! The metrics layer does no authentication. By default
//! ([`ExtensionIdentity`]) it reads the [`Identity`] request extension that
//! the app's own auth middleware inserted, so that middleware must run
//! *before* the metrics layer sees the request (be an outer layer). Apps
//! behind an authenticating proxy that forwards the user in headers (the
//! Databricks Apps proxy sends `X-Forwarded-Email`, `X-Forwarded-User` and
//! `X-Forwarded-Access-Token`) opt into [`TrustedProxyHeaders`].
//! Requests without an identity are recorded with no user.

use http::{HeaderMap, HeaderName, Request};
use metrics_core::{AccessToken, Identity, UserId};

/// Finds the user behind a request.
///
/// It gets the request mutably so an implementation can leave the
/// [`Identity`] it found in the extensions, for handlers and the admin guard.
pub trait MakeIdentity<B> {
    /// The user id to record with `req`, if any.
    fn identity(&self, req: &mut Request<B>) -> Option<UserId>;
}

/// Reads the [`Identity`] extension set by the app's authentication (the
/// default). Costs one map lookup and a reference-count bump.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExtensionIdentity;

impl<B> MakeIdentity<B> for ExtensionIdentity {
    fn identity(&self, req: &mut Request<B>) -> Option<UserId> {
        req.extensions()
            .get::<Identity>()
            .map(|i| i.user_id().clone())
    }
}

/// Records no user at all.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoIdentity;

impl<B> MakeIdentity<B> for NoIdentity {
    fn identity(&self, _req: &mut Request<B>) -> Option<UserId> {
        None
    }
}

/// Trusts identity headers set by an authenticating reverse proxy:
/// `X-Forwarded-Email`, else `X-Forwarded-User`, plus
/// `X-Forwarded-Access-Token` as the identity's [`AccessToken`].
///
/// **Only use this behind a proxy that strips these headers from client
/// requests**; otherwise any client can claim to be anyone.
///
/// An [`Identity`] already present in the extensions wins. Otherwise the one
/// built from the headers is inserted into the extensions, so handlers and the
/// admin guard see the same user. Header values must be visible ASCII and at
/// most [`TrustedProxyHeaders::MAX_USER_LEN`] bytes (tokens:
/// [`TrustedProxyHeaders::MAX_TOKEN_LEN`]); anything else is ignored.
///
/// ```
/// use http::Request;
/// use metrics_core::Identity;
/// use metrics_tower::{MakeIdentity, TrustedProxyHeaders};
///
/// let mut req = Request::builder()
///     .header("x-forwarded-email", "ada@example.com")
///     .header("x-forwarded-access-token", "s3cret")
///     .body(())
///     .unwrap();
/// let user = TrustedProxyHeaders.identity(&mut req).unwrap();
/// assert_eq!(user.as_str(), "ada@example.com");
/// let identity = req.extensions().get::<Identity>().unwrap();
/// assert_eq!(identity.access_token().unwrap().expose(), "s3cret");
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct TrustedProxyHeaders;

impl TrustedProxyHeaders {
    /// Longest accepted user header, in bytes.
    pub const MAX_USER_LEN: usize = 320;
    /// Longest accepted access token header, in bytes.
    pub const MAX_TOKEN_LEN: usize = 16 * 1024;

    const EMAIL: HeaderName = HeaderName::from_static("x-forwarded-email");
    const USER: HeaderName = HeaderName::from_static("x-forwarded-user");
    const TOKEN: HeaderName = HeaderName::from_static("x-forwarded-access-token");

    /// The identity the headers describe, if any.
    pub fn from_headers(headers: &HeaderMap) -> Option<Identity> {
        let user = visible(headers, &Self::EMAIL, Self::MAX_USER_LEN)
            .or_else(|| visible(headers, &Self::USER, Self::MAX_USER_LEN))?;
        let identity = Identity::new(user);
        Some(match visible(headers, &Self::TOKEN, Self::MAX_TOKEN_LEN) {
            Some(token) => identity.with_access_token(AccessToken::new(token)),
            None => identity,
        })
    }
}

fn visible<'h>(headers: &'h HeaderMap, name: &HeaderName, max: usize) -> Option<&'h str> {
    let value = headers.get(name)?.as_bytes();
    let ok = !value.is_empty() && value.len() <= max && value.iter().all(u8::is_ascii_graphic);
    // Visible ASCII is always UTF-8.
    ok.then(|| std::str::from_utf8(value).ok()).flatten()
}

impl<B> MakeIdentity<B> for TrustedProxyHeaders {
    fn identity(&self, req: &mut Request<B>) -> Option<UserId> {
        if let Some(existing) = req.extensions().get::<Identity>() {
            return Some(existing.user_id().clone());
        }
        let identity = Self::from_headers(req.headers())?;
        let user = identity.user_id().clone();
        req.extensions_mut().insert(identity);
        Some(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &[u8])]) -> Request<()> {
        let mut b = Request::builder();
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn extension_identity_reads_the_extension() {
        let mut r = req(&[("x-forwarded-email", b"spoof@example.com")]);
        assert_eq!(
            ExtensionIdentity.identity(&mut r),
            None,
            "headers are not trusted"
        );
        r.extensions_mut().insert(Identity::new("ada@example.com"));
        assert_eq!(
            ExtensionIdentity.identity(&mut r).unwrap().as_str(),
            "ada@example.com"
        );
    }

    #[test]
    fn proxy_headers_prefer_email_and_reject_junk() {
        let mut r = req(&[
            ("x-forwarded-user", b"ada"),
            ("x-forwarded-email", b"ada@example.com"),
        ]);
        assert_eq!(
            TrustedProxyHeaders.identity(&mut r).unwrap().as_str(),
            "ada@example.com"
        );

        let mut r = req(&[
            ("x-forwarded-email", b"has space"),
            ("x-forwarded-user", b"bob"),
        ]);
        assert_eq!(
            TrustedProxyHeaders.identity(&mut r).unwrap().as_str(),
            "bob"
        );

        let long = vec![b'a'; TrustedProxyHeaders::MAX_USER_LEN + 1];
        let mut r = req(&[("x-forwarded-user", &long)]);
        assert_eq!(TrustedProxyHeaders.identity(&mut r), None);
        assert!(r.extensions().get::<Identity>().is_none());

        let mut r = req(&[("x-forwarded-user", b"caf\xc3\xa9")]);
        assert_eq!(TrustedProxyHeaders.identity(&mut r), None);
    }

    #[test]
    fn proxy_headers_keep_an_existing_identity() {
        let mut r = req(&[("x-forwarded-user", b"bob")]);
        r.extensions_mut().insert(Identity::new("ada"));
        assert_eq!(
            TrustedProxyHeaders.identity(&mut r).unwrap().as_str(),
            "ada"
        );
    }

    #[test]
    fn token_without_user_is_ignored() {
        let mut r = req(&[("x-forwarded-access-token", b"tok")]);
        assert_eq!(TrustedProxyHeaders.identity(&mut r), None);
        let mut r = req(&[("x-forwarded-user", b"ada")]);
        TrustedProxyHeaders.identity(&mut r);
        assert!(
            r.extensions()
                .get::<Identity>()
                .unwrap()
                .access_token()
                .is_none()
        );
    }
}
