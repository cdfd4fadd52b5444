//! The request-metrics middleware: [`MetricsLayer`] and [`MetricsService`]
//! (what they record, and when, is in the crate docs).

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
    /// Also insert the id into the request extensions.
    pub(crate) correlation_id_extension: bool,
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
            .field("correlation_id_extension", &self.correlation_id_extension)
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
