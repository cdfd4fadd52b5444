//! Tower middleware that records every request of a tower, hyper or axum
//! service: [`MetricsLayer`].
//!
//! Each request becomes one [`RequestRecord`](metrics_core::RequestRecord)
//! (route template, method, status, duration to the end of the response body,
//! user, correlation id, error type), pushed into a
//! [`CollectorHandle`](metrics_core::CollectorHandle) without waiting. The
//! collector batches records and writes them to a sink off the request path.
//!
//! Every public item has one path: the layer and its service at the root,
//! the rest in the module of its concern.
//!
//! - [`route`]: route labels, normalisation and the label cap.
//! - [`identity`]: the user of a request ([`MakeIdentity`](identity::MakeIdentity),
//!   [`IdentityLayer`](identity::IdentityLayer)).
//! - [`correlation`]: the correlation id.
//! - [`exclude`]: requests that are not recorded.
//! - [`admin`]: the admin guard (a tower layer; its extractor with `axum`).
//! - [`future`] and [`body`]: the layer's named response future and body.
//! - `axum` (feature `axum`): the dashboard API and page routers and
//!   `MatchedPath` labels.
//!
//! ```
//! use axum::{Router, routing::get};
//! use metrics_core::{Collector, MemorySink};
//! use metrics_tower::MetricsLayer;
//! use metrics_tower::identity::TrustedProxyHeaders;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let collector = Collector::builder(MemorySink::new()).spawn().unwrap();
//! let app: Router = Router::new()
//!     .route("/orders/{id}", get(|| async { "order" }))
//!     .layer(
//!         MetricsLayer::new(collector)
//!             .identity_with(TrustedProxyHeaders)
//!             .exclude_prefix("/debug/"),
//!     );
//! # }
//! ```
//!
//! # The layer
//!
//! ## When to use it
//!
//! Put the layer around everything you want measured, so the recorded
//! latency covers your handlers and inner middleware. With axum, add it with
//! `Router::layer` *after* the routes (axum then runs it after routing, so the
//! route template is known, nested routers included). Put your authentication
//! outside it (a later `.layer(..)` call) if you want `user_id` filled from the
//! `Identity` extension, and put timeout / panic-catching layers inside it so
//! their responses are recorded as what they are.
//!
//! ## What it records, and when
//!
//! One record per request, enqueued on the collector without waiting:
//!
//! - **End of the body.** The duration runs until the response body is done:
//!   when the body reports end-of-stream after a frame (so a body with an
//!   exact `Content-Length` that is never polled to `None` is recorded too),
//!   when it returns `None`, or when it is dropped after being consumed.
//!   Responses that carry no body (`HEAD`, `204`, `304`, `1xx`, or an empty
//!   body) are recorded when the response is produced.
//! - **Client abort.** A response future or body dropped before completion is
//!   recorded once as `499` with error type `ClientClosed`.
//! - **Errors.** An inner `Err` is recorded as `500 ServiceError`, or
//!   `504 Timeout` when it is a tower/tokio timeout error. A response whose
//!   status is one of the configured timeout statuses (by default `408` from
//!   tower-http's `TimeoutLayer` and `504`) is recorded as `504 Timeout`. A
//!   body error is recorded as `500 ServiceError`.
//! - **Panics.** A panic while polling the inner service is recorded as
//!   `500 Panic` and then resumed unchanged (the layer catches it only to
//!   record it, and only while a record is pending). Alternatively put
//!   tower-http's `CatchPanicLayer` inside this layer: the panic becomes a 500
//!   response, recorded as `HTTP_500`.
//!
//! `error_type` is empty below 400 and otherwise names the class (`HTTP_404`,
//! `Timeout`, `ClientClosed`, `ServiceError`, `Panic`).
//!
//! ## What it never does
//!
//! It never changes the inner service's error type or readiness
//! (`poll_ready` is passed through), never boxes the response future, never
//! clones the inner service, and never lets the collector (a full queue, a
//! failing or hanging sink) change a response: metrics failures exist only in
//! the collector's stats.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod admin;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;
pub mod correlation;
pub mod exclude;
pub mod identity;
mod metrics;
pub mod route;

pub use metrics::{MetricsLayer, MetricsService};

/// The response future of [`MetricsService`] (named, unboxed).
pub mod future {
    pub use crate::metrics::ResponseFuture;
}

/// The response body wrapper of [`MetricsService`].
pub mod body {
    pub use crate::metrics::ResponseBody;
}
