//! [`RequireAdminLayer`]: the guard as a tower layer for whole routers.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::response::{IntoResponse, Response};
use http::Request;
use metrics_core::{Identity, SharedAdminCheck};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::{AdminRejection, VerifiedAdmin, verify};

/// Lets only administrators through to the wrapped service; everyone else
/// gets an [`AdminRejection`] (401 / 403 / 503) and the inner service is
/// never called.
///
/// Requests that pass carry the [`SharedAdminCheck`] and a private "verified"
/// mark in their extensions, so a [`RequireAdmin`](super::RequireAdmin)
/// extractor below answers at once. Responses of the inner service go
/// through unchanged (converted with `IntoResponse`), and its error type is
/// kept.
///
/// # Example
///
/// ```
/// use axum::{Router, body::Body, routing::get};
/// use http::Request;
/// use metrics_core::{CachedAdminCheck, Identity, SharedAdminCheck, StaticAdmins};
/// use metrics_tower::axum::RequireAdminLayer;
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

impl<S, B> Service<Request<B>> for RequireAdminService<S>
where
    S: Service<Request<B>> + Clone,
    S::Response: IntoResponse,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
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
        req.extensions_mut().insert(self.check.clone());
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

impl<S, B> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
    S::Response: IntoResponse,
{
    type Output = Result<Response, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            match this.state.as_mut().project() {
                StateProj::Checking { check, pending } => {
                    let identity = match ready!(check.as_mut().poll(cx)) {
                        Ok(identity) => identity,
                        Err(rejection) => return Poll::Ready(Ok(rejection.into_response())),
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
                    return future.poll(cx).map_ok(IntoResponse::into_response);
                }
                StateProj::Rejected { rejection } => {
                    let rejection = rejection
                        .take()
                        .expect("ResponseFuture polled after completion");
                    return Poll::Ready(Ok(rejection.into_response()));
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
