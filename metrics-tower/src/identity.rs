//! Who made a request: the `user_id` of its record.
//!
//! The metrics layer does no authentication. By default
//! ([`ExtensionIdentity`]) it reads the [`Identity`] request extension that
//! the app's own auth middleware inserted, so that middleware must run
//! *before* the metrics layer sees the request (be an outer layer). Apps
//! behind an authenticating proxy that forwards the user in headers (the
//! Databricks Apps proxy sends `X-Forwarded-Email`, `X-Forwarded-User` and
//! `X-Forwarded-Access-Token`) opt into [`TrustedProxyHeaders`].
//! Requests without an identity are recorded with no user. Any other source
//! (a JWT, a session cookie) is a [`MakeIdentity`]: a type of yours, or a
//! closure `Fn(&mut Request<B>) -> Option<UserId>`.
//!
//! Routes that are not behind the metrics layer (the dashboard API mounted
//! outside it, a plain tower service with the admin guard) get the same
//! identity from an [`IdentityLayer`].

use std::task::{Context, Poll};

use http::{HeaderMap, HeaderName, Request};
use metrics_core::{AccessToken, Identity, UserId};
use tower_layer::Layer;
use tower_service::Service;

/// Finds the user behind a request.
///
/// It gets the request mutably so an implementation can leave the
/// [`Identity`] it found in the extensions, for handlers and the admin guard
/// (an [`IdentityLayer`] inserts one built from the returned user id when it
/// does not). Called once per request on the request path: keep it cheap and
/// never block.
///
/// Closures implement it, as tower-http's hooks do:
///
/// ```
/// use http::Request;
/// use metrics_core::UserId;
/// use metrics_tower::identity::MakeIdentity;
///
/// // The user an upstream gateway put in a header of its own.
/// let from_gateway = |req: &mut Request<()>| {
///     req.headers()
///         .get("x-gateway-user")
///         .and_then(|v| v.to_str().ok())
///         .map(UserId::from)
/// };
/// let mut req = Request::builder().header("x-gateway-user", "ada").body(()).unwrap();
/// assert_eq!(from_gateway.identity(&mut req).unwrap().as_str(), "ada");
/// ```
pub trait MakeIdentity<B> {
    /// The user id to record with `req`, if any.
    fn identity(&self, req: &mut Request<B>) -> Option<UserId>;
}

impl<B, F> MakeIdentity<B> for F
where
    F: Fn(&mut Request<B>) -> Option<UserId>,
{
    fn identity(&self, req: &mut Request<B>) -> Option<UserId> {
        self(req)
    }
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
/// admin guard see the same user.
///
/// # Which headers count
///
/// Each of the three headers must be either absent or present exactly once
/// with one usable value: 1 to [`TrustedProxyHeaders::MAX_USER_LEN`] bytes
/// of visible ASCII (tokens: [`TrustedProxyHeaders::MAX_TOKEN_LEN`]), no
/// comma. Anything else gives the request **no identity at all** (the API
/// answers 401), never the first, the last or the next header's value:
///
/// - a header sent twice is what a proxy that *appends* to a client's
///   header produces, so neither value can be trusted to be the proxy's;
/// - a comma is how HTTP joins two values of one header into one line
///   (RFC 9110, section 5.3), and no e-mail address, user name or token a
///   proxy sends contains one unquoted, so a comma is read as two values;
/// - a present but unusable value (too long, a space, a control character,
///   non-ASCII) is a header the proxy did not write: falling back to the
///   next header would trust one the client may have set.
///
/// ```
/// use http::Request;
/// use metrics_core::Identity;
/// use metrics_tower::{identity::MakeIdentity, identity::TrustedProxyHeaders};
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
///
/// // The client's value followed by the proxy's: nobody.
/// let mut req = Request::builder()
///     .header("x-forwarded-email", "admin@example.com")
///     .header("x-forwarded-email", "mallory@example.com")
///     .body(())
///     .unwrap();
/// assert_eq!(TrustedProxyHeaders.identity(&mut req), None);
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

    /// The identity the headers describe, if any (see [which headers
    /// count](Self#which-headers-count)).
    pub fn from_headers(headers: &HeaderMap) -> Option<Identity> {
        let email = trusted(headers, &Self::EMAIL, Self::MAX_USER_LEN)?;
        let user = trusted(headers, &Self::USER, Self::MAX_USER_LEN)?;
        let token = trusted(headers, &Self::TOKEN, Self::MAX_TOKEN_LEN)?;
        let identity = Identity::new(email.or(user)?);
        Some(match token {
            Some(token) => identity.with_access_token(AccessToken::new(token)),
            None => identity,
        })
    }
}

/// Why an identity header makes the whole request anonymous.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unusable {
    /// Sent more than once, or one line holding a comma-joined list.
    Repeated,
    /// Empty, too long, or not visible ASCII.
    Invalid,
}

/// [`single`], with a refusal logged (at debug: any client can send these
/// headers, so a warning per request would let it flood the log) and turned
/// into "no identity" (the outer `None`).
fn trusted<'h>(headers: &'h HeaderMap, name: &HeaderName, max: usize) -> Option<Option<&'h str>> {
    single(headers, name, max)
        .inspect_err(|why| {
            tracing::debug!(header = %name, ?why, "identity header not trusted: the request has no identity");
        })
        .ok()
}

/// The one usable value of `name`: `Ok(None)` when absent, `Err` when it
/// cannot be trusted (see [`TrustedProxyHeaders`]).
fn single<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
    max: usize,
) -> Result<Option<&'h str>, Unusable> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Unusable::Repeated);
    }
    let value = value.as_bytes();
    if value.contains(&b',') {
        return Err(Unusable::Repeated);
    }
    if value.is_empty() || value.len() > max || !value.iter().all(u8::is_ascii_graphic) {
        return Err(Unusable::Invalid);
    }
    // Visible ASCII is always UTF-8.
    std::str::from_utf8(value)
        .map(Some)
        .map_err(|_| Unusable::Invalid)
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

/// `user` as a store can keep it: NUL (U+0000), which PostgreSQL refuses in
/// text, replaced by U+FFFD. No header source yields one (header values
/// cannot hold NUL), but an app's own source may (a JWT claim can encode
/// `\u0000`), and a record with it would be lost as rejected. Allocates only
/// then.
pub(crate) fn storable_user(user: UserId) -> UserId {
    if user.as_str().as_bytes().contains(&0) {
        UserId::from(user.as_str().replace('\0', "\u{fffd}"))
    } else {
        user
    }
}

// ===== IdentityLayer =====

/// Makes sure the [`Identity`] extension is set, from a [`MakeIdentity`],
/// for services that are not behind a [`MetricsLayer`](crate::MetricsLayer)
/// configured with the same source.
///
/// A request that already carries an [`Identity`] passes untouched (the
/// metrics layer or the app's auth ran first). Otherwise `make_identity`
/// runs; when it finds a user and left no [`Identity`] itself, one is
/// inserted with that user id. The dashboard API and page routers use it
/// (`MetricsApi::identity_with`), so they answer the same wherever they are
/// mounted.
///
/// ```
/// use http::Request;
/// use metrics_core::Identity;
/// use metrics_tower::identity::{IdentityLayer, TrustedProxyHeaders};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let service = ServiceBuilder::new()
///     .layer(IdentityLayer::new(TrustedProxyHeaders))
///     .service(service_fn(|req: Request<()>| async move {
///         let user = req.extensions().get::<Identity>().map(|i| i.user_id().to_string());
///         Ok::<_, std::convert::Infallible>(user)
///     }));
/// let req = Request::builder().header("x-forwarded-email", "ada@example.com").body(()).unwrap();
/// assert_eq!(service.oneshot(req).await.unwrap().as_deref(), Some("ada@example.com"));
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct IdentityLayer<I> {
    make_identity: I,
}

impl<I> IdentityLayer<I> {
    /// A layer finding the identity with `make_identity`.
    pub fn new(make_identity: I) -> Self {
        Self { make_identity }
    }
}

impl<S, I: Clone> Layer<S> for IdentityLayer<I> {
    type Service = IdentityService<S, I>;

    fn layer(&self, inner: S) -> Self::Service {
        IdentityService {
            inner,
            make_identity: self.make_identity.clone(),
        }
    }
}

/// The service made by [`IdentityLayer`]. Its future is the inner one.
#[derive(Debug, Clone, Copy)]
pub struct IdentityService<S, I> {
    inner: S,
    make_identity: I,
}

impl<S, I> IdentityService<S, I> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, I, B> Service<Request<B>> for IdentityService<S, I>
where
    S: Service<Request<B>>,
    I: MakeIdentity<B>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        ensure_identity(&self.make_identity, &mut req);
        self.inner.call(req)
    }
}

/// The rule of [`IdentityLayer`]: an existing [`Identity`] wins; otherwise
/// the one `make_identity` left, or one built from the user it returned.
pub(crate) fn ensure_identity<B>(make_identity: &impl MakeIdentity<B>, req: &mut Request<B>) {
    if req.extensions().get::<Identity>().is_some() {
        return;
    }
    if let Some(user) = make_identity.identity(req) {
        if req.extensions().get::<Identity>().is_none() {
            req.extensions_mut().insert(Identity::new(user));
        }
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
    fn proxy_headers_prefer_email() {
        let mut r = req(&[
            ("x-forwarded-user", b"ada"),
            ("x-forwarded-email", b"ada@example.com"),
        ]);
        assert_eq!(
            TrustedProxyHeaders.identity(&mut r).unwrap().as_str(),
            "ada@example.com"
        );
        let mut r = req(&[("x-forwarded-user", b"bob")]);
        assert_eq!(
            TrustedProxyHeaders.identity(&mut r).unwrap().as_str(),
            "bob"
        );
    }

    #[test]
    fn junk_in_a_present_header_means_no_identity_not_the_next_header() {
        let long_user = vec![b'a'; TrustedProxyHeaders::MAX_USER_LEN + 1];
        let long_token = vec![b't'; TrustedProxyHeaders::MAX_TOKEN_LEN + 1];
        let cases: [&[(&str, &[u8])]; 6] = [
            &[
                ("x-forwarded-email", b"has space"),
                ("x-forwarded-user", b"bob"),
            ],
            &[("x-forwarded-email", b""), ("x-forwarded-user", b"bob")],
            &[("x-forwarded-user", &long_user)],
            &[("x-forwarded-user", b"caf\xc3\xa9")],
            &[("x-forwarded-user", b"tab\there")],
            &[
                ("x-forwarded-user", b"bob"),
                ("x-forwarded-access-token", &long_token),
            ],
        ];
        for headers in cases {
            let mut r = req(headers);
            assert_eq!(TrustedProxyHeaders.identity(&mut r), None, "{headers:?}");
            assert!(r.extensions().get::<Identity>().is_none());
        }
    }

    #[test]
    fn a_repeated_identity_header_means_no_identity() {
        // The client's value first, the appending proxy's last, and the
        // other way round: neither order may pick one.
        let cases: [&[(&str, &[u8])]; 6] = [
            &[
                ("x-forwarded-email", b"admin@example.com"),
                ("x-forwarded-email", b"mallory@example.com"),
            ],
            &[
                ("x-forwarded-email", b"mallory@example.com"),
                ("x-forwarded-email", b"admin@example.com"),
            ],
            // Repeated even with the same value: the source is still unclear.
            &[("x-forwarded-user", b"ada"), ("x-forwarded-user", b"ada")],
            // A repeated header the user is not taken from still voids it.
            &[
                ("x-forwarded-email", b"ada@example.com"),
                ("x-forwarded-user", b"ada"),
                ("x-forwarded-user", b"admin"),
            ],
            &[
                ("x-forwarded-email", b"ada@example.com"),
                ("x-forwarded-access-token", b"client"),
                ("x-forwarded-access-token", b"proxy"),
            ],
            // One line holding a comma-joined list is two values.
            &[(
                "x-forwarded-email",
                b"admin@example.com,mallory@example.com",
            )],
        ];
        for headers in cases {
            let mut r = req(headers);
            assert_eq!(TrustedProxyHeaders.identity(&mut r), None, "{headers:?}");
            assert!(r.extensions().get::<Identity>().is_none(), "{headers:?}");
            assert!(TrustedProxyHeaders::from_headers(r.headers()).is_none());
        }
        let mut r = req(&[("x-forwarded-email", b"a@x,")]);
        assert_eq!(TrustedProxyHeaders.identity(&mut r), None);
    }

    #[test]
    fn single_tells_absent_repeated_and_invalid_apart() {
        let name = HeaderName::from_static("x-forwarded-user");
        let r = req(&[]);
        assert_eq!(single(r.headers(), &name, 10), Ok(None));
        let r = req(&[("x-forwarded-user", b"ada")]);
        assert_eq!(single(r.headers(), &name, 10), Ok(Some("ada")));
        let r = req(&[("x-forwarded-user", b"a,b")]);
        assert_eq!(single(r.headers(), &name, 10), Err(Unusable::Repeated));
        let r = req(&[("x-forwarded-user", b"a"), ("x-forwarded-user", b"b")]);
        assert_eq!(single(r.headers(), &name, 10), Err(Unusable::Repeated));
        let r = req(&[("x-forwarded-user", b"a b")]);
        assert_eq!(single(r.headers(), &name, 10), Err(Unusable::Invalid));
        let r = req(&[("x-forwarded-user", b"abcdefghijk")]);
        assert_eq!(single(r.headers(), &name, 10), Err(Unusable::Invalid));
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
    fn closures_are_identities() {
        let fixed = |_: &mut Request<()>| Some(UserId::from("jwt-user"));
        let mut r = req(&[]);
        assert_eq!(fixed.identity(&mut r).unwrap().as_str(), "jwt-user");
        assert!(
            r.extensions().get::<Identity>().is_none(),
            "the closure inserts nothing"
        );
    }

    #[test]
    fn ensure_identity_inserts_the_returned_user_and_keeps_an_existing_one() {
        let fixed = |_: &mut Request<()>| Some(UserId::from("jwt-user"));
        let mut r = req(&[]);
        ensure_identity(&fixed, &mut r);
        assert_eq!(
            r.extensions().get::<Identity>().unwrap().user_id().as_str(),
            "jwt-user"
        );

        let mut r = req(&[]);
        r.extensions_mut().insert(Identity::new("ada"));
        ensure_identity(&fixed, &mut r);
        assert_eq!(
            r.extensions().get::<Identity>().unwrap().user_id().as_str(),
            "ada"
        );

        // The proxy's own identity (with its token) is kept, not rebuilt.
        let mut r = req(&[
            ("x-forwarded-user", b"bob"),
            ("x-forwarded-access-token", b"t"),
        ]);
        ensure_identity(&TrustedProxyHeaders, &mut r);
        let identity = r.extensions().get::<Identity>().unwrap();
        assert_eq!(identity.access_token().unwrap().expose(), "t");

        let mut r = req(&[]);
        ensure_identity(&NoIdentity, &mut r);
        assert!(r.extensions().get::<Identity>().is_none());
    }

    #[test]
    fn stored_users_never_hold_nul() {
        let ada = UserId::from("ada");
        assert_eq!(storable_user(ada.clone()), ada);
        assert_eq!(
            storable_user(UserId::from("a\0d\0")).as_str(),
            "a\u{fffd}d\u{fffd}"
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
