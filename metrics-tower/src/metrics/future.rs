use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use http_body::Body;
use metrics_core::CorrelationId;
use pin_project_lite::pin_project;

use super::ResponseBody;
use super::record::RecordGuard;
use crate::correlation::X_CORRELATION_ID;

pin_project! {
    /// The response future of [`MetricsService`](crate::MetricsService).
    ///
    /// Holds the pending record until the response arrives, then hands it to
    /// the [`ResponseBody`]. Dropped before that, it records a client abort.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        guard: Option<RecordGuard>,
        // The id to echo when no record is pending (excluded requests); with
        // a record, the id lives in it and is echoed from there.
        correlation_id: Option<CorrelationId>,
        head: bool,
    }
}

impl<F> ResponseFuture<F> {
    /// Calls the inner service (`call`) with the request's id current, and
    /// wraps its future. The id is in `guard` when a record is pending,
    /// otherwise in `correlation_id`.
    #[inline]
    pub(super) fn call(
        call: impl FnOnce() -> F,
        mut guard: Option<RecordGuard>,
        mut correlation_id: Option<CorrelationId>,
        head: bool,
    ) -> Self {
        // Built in one expression, the inner future straight into its field
        // (a future can be large; a detour through a local is a `memcpy`).
        Self {
            inner: match guard.as_mut().and_then(RecordGuard::correlation_id_slot) {
                Some(slot) => CorrelationId::scope(slot, call),
                None => CorrelationId::scope(&mut correlation_id, call),
            },
            guard,
            correlation_id,
            head,
        }
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("pending_record", &self.guard.is_some())
            .field("correlation_id", &self.correlation_id)
            .finish_non_exhaustive()
    }
}

/// Statuses whose responses never carry a body (RFC 9110), so nobody polls it.
fn bodiless(status: u16) -> bool {
    status < 200 || status == 204 || status == 304
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
    E: 'static,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let inner = this.inner;
        let polled = if let Some(guard) = this.guard.as_mut() {
            // Catching only to record the panic; it is resumed unchanged right
            // away, so no state broken by the panic is ever observed. With no
            // pending record there is nothing to do and no reason to catch.
            // The id is current while the inner future runs (and back in the
            // record, also after a panic, before the panic is recorded).
            let poll = AssertUnwindSafe(|| match guard.correlation_id_slot() {
                Some(slot) => CorrelationId::scope(slot, || inner.poll(cx)),
                None => inner.poll(cx),
            });
            match catch_unwind(poll) {
                Ok(polled) => polled,
                Err(panic) => {
                    if let Some(mut guard) = this.guard.take() {
                        guard.finish_panic();
                    }
                    resume_unwind(panic)
                }
            }
        } else {
            CorrelationId::scope(this.correlation_id, || inner.poll(cx))
        };

        let mut response = match polled {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(err)) => {
                if let Some(mut guard) = this.guard.take() {
                    guard.finish_service_error(&err);
                }
                return Poll::Ready(Err(err));
            }
            Poll::Ready(Ok(response)) => response,
        };

        let mut guard = this.guard.take();
        let echo = match &guard {
            Some(g) => g.correlation_id().map(|id| id.header_value().clone()),
            None => this
                .correlation_id
                .take()
                .map(CorrelationId::into_header_value),
        };
        if let Some(value) = echo {
            let _previous = response.headers_mut().insert(X_CORRELATION_ID, value);
        }
        let status = response.status().as_u16();
        if *this.head || bodiless(status) || response.body().is_end_stream() {
            // Nothing more will be sent (hyper does not even poll such a
            // body), so the request is complete now.
            if let Some(mut g) = guard.take() {
                g.finish_response(status);
            }
        }
        Poll::Ready(Ok(
            response.map(|body| ResponseBody::new(body, guard, status))
        ))
    }
}
