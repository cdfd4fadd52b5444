use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http_body::{Body, Frame, SizeHint};
use metrics_core::ErrorType;
use pin_project_lite::pin_project;

use super::record::RecordGuard;

pin_project! {
    /// The response body of [`MetricsService`](crate::MetricsService).
    ///
    /// Forwards everything (frames, `is_end_stream`, `size_hint`, so a
    /// `Content-Length` is kept) and writes the record when the body ends:
    /// as soon as `is_end_stream()` turns true after a frame, or on `None`.
    /// (A body already at its end when the response is produced was recorded
    /// by the future.) Dropped before the end, it records a client abort.
    pub struct ResponseBody<B> {
        #[pin]
        inner: B,
        guard: Option<RecordGuard>,
        status: u16,
    }

}

impl<B> ResponseBody<B> {
    pub(super) fn new(inner: B, guard: Option<RecordGuard>, status: u16) -> Self {
        Self {
            inner,
            guard,
            status,
        }
    }
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("status", &self.status)
            .field("pending_record", &self.guard.is_some())
            .finish_non_exhaustive()
    }
}

impl<B: Body> Body for ResponseBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        if let Some(guard) = this.guard.as_mut() {
            match &frame {
                Some(Ok(_)) if !this.inner.is_end_stream() => {}
                Some(Ok(_)) | None => guard.finish_response(*this.status),
                Some(Err(_)) => guard.finish_error(500, ErrorType::ServiceError),
            }
            // A finished guard is empty: later polls and the drop are no-ops.
        }
        Poll::Ready(frame)
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
