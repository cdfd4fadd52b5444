//! [`RequireAdminLayer`]: the guard as a tower layer for whole routers.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use metrics_core::{Identity, SharedAdminCheck};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::{AdminRejection, VerifiedAdmin, verify};

/// Lets only administrators through to the wrapped service; everyone else
/// gets an [`AdminRejection`] (401 / 403 / 503) and the inner service is
/// never called.
///
/// Needs only tower and http: it wraps any `Service<Request<B>>` answering
/// `Response<ResBody>` with `Bytes` frames (hyper, tower, axum). Requests
/// that pass carry a private "verified" mark in their extensions, so a `RequireAdmin` extractor below answers at
/// once. Responses of the inner service go through unchanged (their body
/// wrapped in [`ResponseBody`]), and its error type is kept.
///
/// # Example
///
/// ```
/// use axum::{Router, body::Body, routing::get};
/// use http::Request;
/// use metrics_core::{CachedAdminCheck, Identity, SharedAdminCheck, StaticAdmins};
/// use metrics_tower::admin::RequireAdminLayer;
/// use tower::ServiceExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let admins = SharedAdminCheck::new(CachedAdminCheck::new(StaticAdmins::parse("ada@example.com")));
/// let admin_only: Router = Router::new()
///     .route("/performance", get(|| async { "numbers" }))
///     .route("/usage", get(|| async { "more numbers" }))
///     .layer(RequireAdminLayer::new(admins));
///
/// let res = admin_only
///     .oneshot(Request::get("/usage").body(Body::empty()).unwrap())
///     .await
///     .unwrap();
/// assert_eq!(res.status(), 401, "no identity");
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RequireAdminLayer {
    check: SharedAdminCheck,
}

impl RequireAdminLayer {
    /// A guard asking `check`.
    pub fn new(check: SharedAdminCheck) -> Self {
        Self { check }
    }
}

impl<S> Layer<S> for RequireAdminLayer {
    type Service = RequireAdminService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireAdminService {
            inner,
            check: self.check.clone(),
        }
    }
}

/// The service made by [`RequireAdminLayer`].
#[derive(Debug, Clone)]
pub struct RequireAdminService<S> {
    inner: S,
    check: SharedAdminCheck,
}

impl<S> RequireAdminService<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B, ResBody> Service<Request<B>> for RequireAdminService<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone,
    ResBody: http_body::Body<Data = Bytes>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let Some(identity) = req.extensions().get::<Identity>().cloned() else {
            return ResponseFuture {
                state: State::Rejected {
                    rejection: Some(AdminRejection::Unauthenticated),
                },
            };
        };
        // The service that was polled ready goes into the future; a fresh
        // clone stays here for the next poll_ready (tower's usual swap).
        let fresh = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, fresh);
        let check = self.check.clone();
        ResponseFuture {
            state: State::Checking {
                check: Box::pin(async move { verify(&check, &identity).await.map(|()| identity) }),
                pending: Some((ready, req)),
            },
        }
    }
}

pin_project! {
    /// Response future of [`RequireAdminService`]: first the admin check,
    /// then the inner service's future.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, S::Future, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, F, B> {
        Checking {
            // Boxed: `AdminCheck` is an async-trait object, whose futures
            // borrow the check and the identity.
            check: Pin<Box<dyn Future<Output = Result<Identity, AdminRejection>> + Send>>,
            pending: Option<(S, Request<B>)>,
        },
        Calling {
            #[pin]
            future: F,
        },
        Rejected {
            rejection: Option<AdminRejection>,
        },
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            match this.state.as_mut().project() {
                StateProj::Checking { check, pending } => {
                    let identity = match ready!(check.as_mut().poll(cx)) {
                        Ok(identity) => identity,
                        Err(rejection) => {
                            return Poll::Ready(Ok(ResponseBody::rejection(&rejection)));
                        }
                    };
                    let (mut service, mut req) = pending
                        .take()
                        .expect("ResponseFuture polled after completion");
                    req.extensions_mut()
                        .insert(VerifiedAdmin(identity.user_id().clone()));
                    let future = service.call(req);
                    this.state.set(State::Calling { future });
                }
                StateProj::Calling { future } => {
                    return future.poll(cx).map_ok(|res| res.map(ResponseBody::inner));
                }
                StateProj::Rejected { rejection } => {
                    let rejection = rejection
                        .take()
                        .expect("ResponseFuture polled after completion");
                    return Poll::Ready(Ok(ResponseBody::rejection(&rejection)));
                }
            }
        }
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Checking { .. } => "checking",
            State::Calling { .. } => "calling",
            State::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

pin_project! {
    /// Response body of [`RequireAdminService`]: the inner service's body, or
    /// the fixed JSON text of a rejection. Frames, size hint and end of
    /// stream are the inner body's.
    #[derive(Debug)]
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<B> {
        Inner {
            #[pin]
            inner: B,
        },
        // The text is taken by the first poll.
        Rejected {
            text: Option<Bytes>,
        },
    }
}

impl<B> ResponseBody<B> {
    fn inner(inner: B) -> Self {
        Self {
            kind: Kind::Inner { inner },
        }
    }

    fn rejection(rejection: &AdminRejection) -> Response<Self> {
        rejection.response(Self {
            kind: Kind::Rejected {
                text: Some(Bytes::from_static(rejection.body().as_bytes())),
            },
        })
    }
}

impl<B> http_body::Body for ResponseBody<B>
where
    B: http_body::Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { inner } => inner.poll_frame(cx),
            KindProj::Rejected { text } => Poll::Ready(text.take().map(|t| Ok(Frame::data(t)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { inner } => inner.is_end_stream(),
            Kind::Rejected { text } => text.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { inner } => inner.size_hint(),
            Kind::Rejected { text } => {
                SizeHint::with_exact(text.as_ref().map_or(0, |t| t.len() as u64))
            }
        }
    }
}
