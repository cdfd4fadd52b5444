use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

// Tokio's `Instant` is `std::time::Instant` unless `test-util` pauses the clock,
// which lets tests measure durations without sleeping.
use tokio::time::Instant;

use http::{Request, Response};
use http_body::Body;
use metrics_core::Route;
use tower_service::Service;

use super::record::{Pending, RecordGuard, RouteKind};
use super::{Core, ResponseFuture};
use crate::correlation;
use crate::identity::{ExtensionIdentity, MakeIdentity};
use crate::route::{DefaultRoute, MAX_LABEL_LEN, MakeRoute, RouteLabel, normalize_path_bytes};

/// The service built by [`MetricsLayer`](crate::MetricsLayer): records every
/// request it serves.
///
/// `poll_ready` is passed straight to the inner service and the error type is
/// the inner one.
#[derive(Debug, Clone)]
pub struct MetricsService<S, R = DefaultRoute, I = ExtensionIdentity> {
    pub(super) inner: S,
    pub(super) core: Arc<Core>,
    pub(super) make_route: R,
    pub(super) make_identity: I,
}

impl<S, R, I> MetricsService<S, R, I> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, R, I, ReqBody, ResBody> Service<Request<ReqBody>> for MetricsService<S, R, I>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: 'static,
    R: MakeRoute<ReqBody>,
    I: MakeIdentity<ReqBody>,
    ResBody: Body,
{
    type Response = Response<super::ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let start = Instant::now();
        // Derived from `start` (no second clock read): the record's timestamp
        // and a generated id's time.
        let since_epoch = super::clock::since_epoch_at(start);
        let timestamp = SystemTime::UNIX_EPOCH + since_epoch;
        let core = &self.core;

        let correlation_id = core.correlation_id.then(|| {
            let id = correlation::from_headers_or_generate(req.headers(), since_epoch);
            if core.correlation_id_extension {
                req.extensions_mut().insert(id.clone());
            }
            id
        });
        // Identity runs for excluded requests too: an implementation may put
        // the `Identity` into the extensions for handlers and the admin guard.
        let user = self
            .make_identity
            .identity(&mut req)
            .map(crate::identity::storable_user);

        let head = req.method() == http::Method::HEAD;
        if core.exclusions.matches(&req) {
            // Not recorded: the future only echoes the id. The id is current
            // during the inner `call` (and each poll of its future).
            let inner = &mut self.inner;
            return ResponseFuture::call(|| inner.call(req), None, correlation_id, head);
        }

        let (route, route_kind) = match self.make_route.make_route(&req) {
            RouteLabel::Template(t) => (core.labels.intern(t), RouteKind::Label),
            RouteLabel::Fixed(route) => (route, RouteKind::Label),
            RouteLabel::Unknown => {
                let mut buf = [0u8; MAX_LABEL_LEN];
                match normalize_path_bytes(req.uri().path(), &mut buf) {
                    None => (Route::OVERFLOW, RouteKind::Overflow),
                    Some(label) => match core.labels.get_bytes(label) {
                        Some(route) => (route, RouteKind::Known),
                        None if core.labels.is_full() => (Route::OVERFLOW, RouteKind::Overflow),
                        // First sight of this label: allocated here, and
                        // interned (a second allocation, once per label) if
                        // the request does not end in 404. Whole segments of
                        // a `str` are UTF-8, so the fallback is unreachable.
                        None => match std::str::from_utf8(label) {
                            Ok(label) => (Route::from(Arc::<str>::from(label)), RouteKind::New),
                            Err(_) => (Route::OVERFLOW, RouteKind::Overflow),
                        },
                    },
                }
            }
        };
        // The record owns the id from here; the future echoes it from there,
        // so the id is not cloned (an atomic increment) once more for it.
        let guard = RecordGuard::new(Pending {
            core: Arc::clone(core),
            start,
            timestamp,
            route,
            route_kind,
            method: Core::method_code(req.method()),
            user,
            correlation_id,
        });
        let inner = &mut self.inner;
        ResponseFuture::call(|| inner.call(req), Some(guard), None, head)
    }
}
