//! The request-metrics middleware: [`MetricsLayer`] and [`MetricsService`].
//!
//! # When to use it
//!
//! Put the layer around everything you want measured, so the recorded
//! latency covers your handlers and inner middleware. With axum, add it with
//! `Router::layer` *after* the routes (axum then runs it after routing, so the
//! route template is known, nested routers included). Put your authentication
//! outside it (a later `.layer(..)` call) if you want `user_id` filled from the
//! `Identity` extension, and put timeout / panic-catching layers inside it so
//! their responses are recorded as what they are.
//!
//! # What it records, and when
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
//! # What it never does
//!
//! It never changes the inner service's error type or readiness
//! (`poll_ready` is passed through), never boxes the response future, never
//! clones the inner service, and never lets the collector (a full queue, a
//! failing or hanging sink) change a response: metrics failures exist only in
//! the collector's stats.

mod body;
mod clock;
mod future;
mod layer;
mod record;
mod service;

use std::fmt;
use std::sync::Arc;

use metrics_core::{CollectorHandle, Method};

pub use body::ResponseBody;
pub use future::ResponseFuture;
pub use layer::MetricsLayer;
pub use service::MetricsService;

use crate::exclude::Exclusions;
use crate::route::RouteLabels;

/// The methods recorded as they are, indexed by [`Core::method_code`].
const STANDARD_METHODS: [Method; 9] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::HEAD,
    Method::OPTIONS,
    Method::PATCH,
    Method::CONNECT,
    Method::TRACE,
];

/// Configuration and shared state of one layer, shared (one `Arc`) by every
/// service it builds and every in-flight record.
#[derive(Clone)]
pub(crate) struct Core {
    pub(crate) collector: CollectorHandle,
    pub(crate) labels: Arc<RouteLabels>,
    pub(crate) exclusions: Exclusions,
    pub(crate) correlation_id: bool,
    pub(crate) timeout_statuses: Box<[u16]>,
    /// Recorded instead of non-standard methods, so odd methods cannot
    /// create unbounded labels. Seven bytes: stored inline, never allocated.
    pub(crate) other_method: Method,
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Core")
            .field("labels", &self.labels)
            .field("exclusions", &self.exclusions)
            .field("correlation_id", &self.correlation_id)
            .field("timeout_statuses", &self.timeout_statuses)
            .finish_non_exhaustive()
    }
}

impl Core {
    /// The method as recorded, as a one-byte code carried by the pending
    /// record (a `Method` is 24 bytes, moved with the record several times):
    /// the standard methods by position in [`STANDARD_METHODS`], others
    /// (recorded as `OTHER`) as `u8::MAX`.
    pub(crate) fn method_code(method: &Method) -> u8 {
        match *method {
            Method::GET => 0,
            Method::POST => 1,
            Method::PUT => 2,
            Method::DELETE => 3,
            Method::HEAD => 4,
            Method::OPTIONS => 5,
            Method::PATCH => 6,
            Method::CONNECT => 7,
            Method::TRACE => 8,
            _ => u8::MAX,
        }
    }

    /// The method a [`Self::method_code`] stands for.
    pub(crate) fn method(&self, code: u8) -> Method {
        STANDARD_METHODS
            .get(usize::from(code))
            .cloned()
            .unwrap_or_else(|| self.other_method.clone())
    }
}
