//! Shared helpers for the integration tests: a real collector writing into a
//! `MemorySink`, and small test bodies.
#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use metrics_core::{Collector, CollectorHandle, MemorySink, RequestRecord};

/// A collector on a real worker, writing into a `MemorySink` we can read.
pub struct Recorded {
    pub collector: CollectorHandle,
    pub sink: MemorySink,
}

impl Recorded {
    pub fn new() -> Self {
        let sink = MemorySink::new();
        let collector = Collector::builder(sink.clone())
            .spawn()
            .expect("tests run inside a Tokio runtime");
        Self { collector, sink }
    }

    /// Every request record written so far, after a flush.
    pub async fn records(&self) -> Vec<RequestRecord> {
        self.collector.flush().await.expect("collector running");
        self.sink.snapshot().into_requests()
    }

    /// The only record; fails if there is not exactly one.
    pub async fn single(&self) -> RequestRecord {
        let mut records = self.records().await;
        assert_eq!(
            records.len(),
            1,
            "expected exactly one record: {records:#?}"
        );
        records.remove(0)
    }
}

/// A body yielding the given chunks one per poll, without a known length
/// (like a streamed response). It reports its end only once empty.
#[derive(Debug, Default)]
pub struct Chunks {
    chunks: VecDeque<Bytes>,
}

impl Chunks {
    pub fn new<I: IntoIterator<Item = &'static str>>(chunks: I) -> Self {
        Self {
            chunks: chunks
                .into_iter()
                .map(|c| Bytes::from_static(c.as_bytes()))
                .collect(),
        }
    }
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.chunks.pop_front().map(|c| Ok(Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// A body that fails on its first poll.
#[derive(Debug, Default)]
pub struct Failing;

impl Body for Failing {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Poll::Ready(Some(Err(std::io::Error::other("body broke"))))
    }
}

pub fn get(uri: &str) -> Request<http_body_util::Empty<Bytes>> {
    Request::get(uri)
        .body(http_body_util::Empty::new())
        .unwrap()
}

pub fn response<B>(status: u16, body: B) -> Response<B> {
    let mut r = Response::new(body);
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
    r
}
