//! Tower middleware that records every request of a tower, hyper or axum
//! service: [`MetricsLayer`].
//!
//! Each request becomes one [`RequestRecord`](metrics_core::RequestRecord)
//! (route template, method, status, duration to the end of the response body,
//! user, correlation id, error type), pushed into a
//! [`CollectorHandle`](metrics_core::CollectorHandle) without waiting. The
//! collector batches records and writes them to a sink off the request path.
//!
//! - [`metrics`] explains what is recorded and when (body end, aborts, errors,
//!   timeouts, panics).
//! - [`route`] explains route labels, normalisation and the label cap.
//! - [`correlation`] and [`identity`] cover the correlation id and the user.
//! - [`exclude`] covers requests that are not recorded.
//! - `axum` (feature `axum`) adds `MatchedPath` labels.
//!
//! ```
//! use axum::{Router, routing::get};
//! use metrics_core::{Collector, MemorySink};
//! use metrics_tower::{MetricsLayer, TrustedProxyHeaders};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let collector = Collector::builder(MemorySink::new()).spawn().unwrap();
//! let app: Router = Router::new()
//!     .route("/orders/{id}", get(|| async { "order" }))
//!     .layer(
//!         MetricsLayer::new(collector)
//!             .identity_with(TrustedProxyHeaders)
//!             .exclude_prefixes(["/internal/"]),
//!     );
//! # }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;
pub mod correlation;
pub mod exclude;
pub mod identity;
pub mod metrics;
pub mod route;

pub use correlation::X_CORRELATION_ID;
pub use exclude::{DEFAULT_EXCLUDED_PATHS, DEFAULT_EXCLUDED_PREFIXES, RequestHead};
pub use identity::{ExtensionIdentity, MakeIdentity, NoIdentity, TrustedProxyHeaders};
pub use metrics::{MetricsLayer, MetricsService};
pub use route::{
    DefaultRoute, MAX_LABEL_LEN, MakeRoute, NormalizedPath, RouteLabel, RouteStats, normalize_path,
};

/// The response future and body types (named, unboxed).
pub mod future {
    pub use crate::metrics::ResponseFuture;
}

/// The response body wrapper.
pub mod body {
    pub use crate::metrics::ResponseBody;
}

// Re-exported for convenience: the types handlers and auth layers touch.
pub use metrics_core::{CorrelationId, Identity};
