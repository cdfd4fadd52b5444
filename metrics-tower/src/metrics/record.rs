//! The once-only record of one request: built in `call`, carried by the
//! response future and then by the response body, written exactly once
//! (explicitly on completion, or from `Drop` when the request is abandoned).

use std::any::Any;
use std::error::Error;
use std::sync::Arc;
use std::time::SystemTime;

// Tokio's `Instant` is `std::time::Instant` unless `test-util` pauses the clock,
// which lets tests measure durations without sleeping.
use tokio::time::Instant;

use metrics_core::{CorrelationId, ErrorType, RequestRecord, Route, UserId};

use super::Core;

/// Status recorded when the client went away before the response was done
/// (nginx's "client closed request").
pub(crate) const CLIENT_CLOSED: u16 = 499;
const INTERNAL_ERROR: u16 = 500;
const GATEWAY_TIMEOUT: u16 = 504;
const NOT_FOUND: u16 = 404;

/// What the pending record's route is, as known when the request arrived.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum RouteKind {
    /// A template or fixed label: final.
    Label,
    /// A normalised path already in the label set. Still subject to the
    /// 404 rule: a guess that ends in `404` is `<unmatched>`.
    Known,
    /// A normalised path not seen before (the route holds it, not interned);
    /// admitted at completion (so a scan of random 404 paths never fills the
    /// label set).
    New,
    /// A path too long to label, or a new label while the label set is full
    /// (decided without allocating); the route is a placeholder.
    Overflow,
}

/// Everything the record needs besides the outcome.
pub(crate) struct Pending {
    pub(crate) core: Arc<Core>,
    pub(crate) start: Instant,
    pub(crate) timestamp: SystemTime,
    pub(crate) route: Route,
    // A kind beside a plain `Route` rather than an enum holding one: the
    // pending record stays 8 bytes smaller, and it is moved several times.
    pub(crate) route_kind: RouteKind,
    /// See [`Core::method_code`].
    pub(crate) method: u8,
    pub(crate) user: Option<UserId>,
    pub(crate) correlation_id: Option<CorrelationId>,
}

/// Owns the pending record. Moves from the future to the body; whichever
/// holds it last writes it. Dropping it unfinished records a client abort.
pub(crate) struct RecordGuard {
    pending: Option<Pending>,
}

impl RecordGuard {
    pub(crate) fn new(pending: Pending) -> Self {
        Self {
            pending: Some(pending),
        }
    }

    /// The request's correlation id, while the record is pending.
    pub(crate) fn correlation_id(&self) -> Option<&CorrelationId> {
        self.pending.as_ref()?.correlation_id.as_ref()
    }

    /// Where the pending record keeps the id (made current around polls).
    pub(crate) fn correlation_id_slot(&mut self) -> Option<&mut Option<CorrelationId>> {
        self.pending.as_mut().map(|p| &mut p.correlation_id)
    }

    /// Records a response with `status` (the body is complete, or there is
    /// none). Statuses configured as timeouts become 504 `Timeout`.
    pub(crate) fn finish_response(&mut self, status: u16) {
        let Some(p) = self.pending.take() else { return };
        let (recorded, error_type) = if p.core.timeout_statuses.contains(&status) {
            (GATEWAY_TIMEOUT, Some(ErrorType::Timeout))
        } else {
            (status, ErrorType::for_status(status))
        };
        write(p, status, recorded, error_type);
    }

    /// Records an outcome without a (complete) response.
    pub(crate) fn finish_error(&mut self, status: u16, error_type: ErrorType) {
        if let Some(p) = self.pending.take() {
            write(p, status, status, Some(error_type));
        }
    }

    /// Records an inner service error: 504 `Timeout` for the timeout errors of
    /// tower and tokio (also inside a `BoxError` or `io::Error`), otherwise
    /// 500 `ServiceError`.
    pub(crate) fn finish_service_error<E: 'static>(&mut self, err: &E) {
        if is_timeout(err) {
            self.finish_error(GATEWAY_TIMEOUT, ErrorType::Timeout);
        } else {
            self.finish_error(INTERNAL_ERROR, ErrorType::ServiceError);
        }
    }

    /// Records a panic seen while polling the inner service.
    pub(crate) fn finish_panic(&mut self) {
        self.finish_error(INTERNAL_ERROR, ErrorType::Panic);
    }
}

impl Drop for RecordGuard {
    fn drop(&mut self) {
        if self.pending.is_some() {
            // Dropped during unwinding means the request died with a panic,
            // not by the client's choice.
            if std::thread::panicking() {
                self.finish_panic();
            } else {
                self.finish_error(CLIENT_CLOSED, ErrorType::ClientClosed);
            }
        }
    }
}

/// Builds and enqueues the record. `response_status` is what the service
/// answered (for the 404 rule), `recorded` what the record says.
fn write(p: Pending, response_status: u16, recorded: u16, error_type: Option<ErrorType>) {
    let elapsed = p.start.elapsed();
    let route = match p.route_kind {
        RouteKind::Label => p.route,
        _ if response_status == NOT_FOUND => Route::UNMATCHED,
        RouteKind::Known => p.route,
        RouteKind::New => p.core.labels.intern(p.route.as_str()),
        RouteKind::Overflow => p.core.labels.overflowed(),
    };
    // Fields set in place rather than through the `with_*` builders: each
    // builder step moves the 160-byte record (a `memcpy` call) again.
    let mut record = RequestRecord::new(
        p.timestamp,
        route,
        p.core.method(p.method),
        recorded,
        elapsed,
    );
    record.user_id = p.user;
    record.correlation_id = p.correlation_id;
    record.error_type = error_type;
    // `record` never blocks; a full queue or a stopped collector drops the
    // record and counts it in the collector's stats, never in the response.
    let _accepted = p.core.collector.record(record);
}

fn is_timeout<E: 'static>(err: &E) -> bool {
    let any: &dyn Any = err;
    if let Some(boxed) = any.downcast_ref::<metrics_core::BoxError>() {
        return chain_has_timeout(&**boxed);
    }
    if let Some(io) = any.downcast_ref::<std::io::Error>() {
        return io.kind() == std::io::ErrorKind::TimedOut || chain_has_timeout(io);
    }
    any.is::<tower::timeout::error::Elapsed>() || any.is::<tokio::time::error::Elapsed>()
}

fn chain_has_timeout(err: &(dyn Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if e.is::<tower::timeout::error::Elapsed>()
            || e.is::<tokio::time::error::Elapsed>()
            || e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        cur = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_recognised_through_wrappers() {
        let elapsed: metrics_core::BoxError = Box::new(tower::timeout::error::Elapsed::new());
        assert!(is_timeout(&elapsed));
        assert!(is_timeout(&tower::timeout::error::Elapsed::new()));
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "slow");
        assert!(is_timeout(&io));
        let other: metrics_core::BoxError = "boom".into();
        assert!(!is_timeout(&other));
        assert!(!is_timeout(&std::io::Error::other("boom")));
        assert!(!is_timeout(&"plain"));
    }
}
