//! What the handlers share: the router's state, built from the
//! [`MetricsApi`](super::MetricsApi) settings when its router is built. Its
//! own module so that the handlers depend on it and not on the builder that
//! mounts them.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use metrics_core::CollectorHandle;
use metrics_core::query::SharedMetricsQuery;

/// Where the API's "now" comes from.
pub(super) type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// What the handlers share: the settings, frozen when the router is built.
pub(super) struct ApiState {
    pub(super) query: SharedMetricsQuery,
    pub(super) collector: CollectorHandle,
    pub(super) event_types: BTreeSet<String>,
    /// `event_types` joined for error messages, built once.
    pub(super) event_types_list: String,
    pub(super) max_body_bytes: usize,
    pub(super) skew_future: Duration,
    pub(super) skew_past: Duration,
    pub(super) clock: Clock,
    /// The served OpenAPI document, built once.
    pub(super) openapi: bytes::Bytes,
}

impl ApiState {
    pub(super) fn now(&self) -> SystemTime {
        (self.clock)()
    }
}
