//! A deterministic driver for counting the instructions the layer costs per
//! request with `valgrind --tool=callgrind` (wall-clock benches are noisy on
//! shared machines; instruction counts are not).
//!
//! It sends `<n>` requests, one at a time, through one of the variants below
//! on a current-thread Tokio runtime, reads every response body to its end,
//! and flushes the collector every 1,000 requests, so the collector's worker
//! and the sink run on the same thread as the requests (as in the one-worker
//! server of `benches/e2e_load.sh`) and their cost is counted too.
//!
//! ```text
//! cargo build --release -p metrics-tower --all-features --example hot_path
//! valgrind --tool=callgrind --callgrind-out-file=cg.%p \
//!     target/release/examples/hot_path metrics_fn 4000
//! ```
//!
//! `YIELD=1` yields to the runtime after every request, as a server's
//! connection tasks do, so the worker runs whenever it was woken (per-wake
//! costs show up) instead of only at the flushes.
//!
//! `WITH_STATE=1` calls `Router::with_state(())` on the finished router, as
//! `axum::serve` does once per connection: without it a `Router<()>` called
//! directly (as here and in the criterion bench) turns its handler into a
//! route, layers included, on every request, so heavier layers pay that
//! construction per request.
//!
//! Per-request cost without setup: run `n` and `2n` and divide the difference
//! by `n`. `SINK=noop` swaps the memory sink for one that discards batches.
//! Note that valgrind runs `clock_gettime` as a system call (no vDSO), so
//! clock reads are cheaper in the counts than they are in reality.
//!
//! Variants: `fn_bare`, `fn_metrics`, `fn_metrics_nocorr` (a `service_fn`,
//! `GET /users/42`), `router_bare`, `router_noop_layer`, `router_metrics`,
//! `router_metrics_nocorr`, `router_trace` (tower-http `TraceLayer`),
//! `router_reqid` (tower-http `SetRequestId` + `PropagateRequestId`),
//! `router_trace_reqid` (the two together) (a one-route axum `Router`,
//! `GET /`).

use std::convert::Infallible;
use std::hint::black_box;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use metrics_core::{
    Batch, Collector, CollectorHandle, MemorySink, MetricsSink, SinkError, WriteAttempt,
    WriteSummary,
};
use metrics_tower::MetricsLayer;
use tower::{Layer, Service, ServiceExt};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

/// Discards every batch.
#[derive(Debug)]
struct NoopSink;

#[metrics_core::async_trait]
impl MetricsSink for NoopSink {
    async fn write(
        &self,
        _batch: &Batch,
        _attempt: WriteAttempt,
    ) -> Result<WriteSummary, SinkError> {
        Ok(WriteSummary::all_written())
    }
}

const FLUSH_EVERY: u64 = 1_000;

async fn hello() -> &'static str {
    "Hello, World!"
}

async fn hello_fn(_req: Request<Empty<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(
        b"Hello, World!",
    ))))
}

fn router() -> Router {
    Router::new().route("/", get(hello))
}

/// `router` as `axum::serve` runs it when `WITH_STATE` is set (see the
/// module docs).
fn served(router: Router) -> Router {
    if std::env::var_os("WITH_STATE").is_some() {
        router.with_state(())
    } else {
        router
    }
}

async fn drive<S, ReqB, ResB>(
    mut svc: S,
    collector: Option<&CollectorHandle>,
    n: u64,
    request: fn() -> Request<ReqB>,
) where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: std::fmt::Debug,
    ResB: http_body::Body,
    ResB::Error: std::fmt::Debug,
{
    let yield_each = std::env::var_os("YIELD").is_some();
    for i in 0..n {
        let res = svc.ready().await.unwrap().call(request()).await.unwrap();
        black_box(res.into_body().collect().await.unwrap().to_bytes());
        if yield_each {
            tokio::task::yield_now().await;
        }
        if (i + 1) % FLUSH_EVERY == 0 {
            if let Some(c) = collector {
                c.flush().await.unwrap();
            }
        }
    }
    if let Some(c) = collector {
        c.flush().await.unwrap();
    }
}

fn fn_request() -> Request<Empty<Bytes>> {
    Request::get("/users/42").body(Empty::new()).unwrap()
}

fn router_request() -> Request<Body> {
    Request::get("/").body(Body::empty()).unwrap()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: hot_path <variant> <n>";
    let variant = args.next().expect(usage);
    let n: u64 = args.next().expect(usage).parse().expect(usage);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let collector = if variant.contains("metrics") {
            Some(match std::env::var("SINK").as_deref() {
                Ok("noop") => Collector::builder(NoopSink).spawn().unwrap(),
                _ => Collector::builder(MemorySink::new()).spawn().unwrap(),
            })
        } else {
            None
        };
        let layer = || {
            MetricsLayer::new(collector.clone().unwrap())
                .correlation_id(!variant.ends_with("nocorr"))
        };
        let c = collector.as_ref();
        match variant.as_str() {
            "fn_bare" => drive(tower::service_fn(hello_fn), c, n, fn_request).await,
            "fn_metrics" | "fn_metrics_nocorr" => {
                drive(layer().layer(tower::service_fn(hello_fn)), c, n, fn_request).await
            }
            "router_bare" => drive(served(router()), c, n, router_request).await,
            "router_noop_layer" => {
                drive(
                    served(router().layer(tower::layer::util::Identity::new())),
                    c,
                    n,
                    router_request,
                )
                .await
            }
            "router_metrics" | "router_metrics_nocorr" => {
                drive(served(router().layer(layer())), c, n, router_request).await
            }
            "router_trace" => {
                drive(
                    served(router().layer(tower_http::trace::TraceLayer::new_for_http())),
                    c,
                    n,
                    router_request,
                )
                .await
            }
            "router_reqid" => {
                let app = router().layer(
                    tower::ServiceBuilder::new()
                        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                        .layer(PropagateRequestIdLayer::x_request_id()),
                );
                drive(served(app), c, n, router_request).await
            }
            "router_trace_reqid" => {
                let app = router().layer(
                    tower::ServiceBuilder::new()
                        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                        .layer(tower_http::trace::TraceLayer::new_for_http())
                        .layer(PropagateRequestIdLayer::x_request_id()),
                );
                drive(served(app), c, n, router_request).await
            }
            other => panic!("unknown variant {other}; {usage}"),
        }
        if let Some(c) = collector {
            let stats = c.shutdown(std::time::Duration::from_secs(5)).await.unwrap();
            assert_eq!(stats.written, n, "{stats:?}");
        }
    });
}
