//! Heap allocations the layer adds per request, counted with a counting
//! global allocator (its own test binary, so no other test allocates
//! concurrently; one `#[test]` for the same reason).
//!
//! Each scenario runs the same requests through the same service with and
//! without the layer and prints the difference per request. Run with
//! `cargo test -p metrics-tower --all-features --test allocations -- --nocapture`
//! to see the numbers.

mod support;

use std::alloc::System;
use std::convert::Infallible;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use metrics_core::{Collector, CollectorHandle, MemorySink};
use metrics_tower::MetricsLayer;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::{Service, ServiceExt, service_fn};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const BATCHES: usize = 20;
const PER_BATCH: usize = 50;

fn request(path: &str, with_id: bool) -> Request<Body> {
    let mut b = Request::get(path);
    if with_id {
        // Static, so cloning it is free, like a slice of hyper's read buffer.
        b = b.header(
            "x-correlation-id",
            HeaderValue::from_static("req-0123456789"),
        );
    }
    b.body(Body::empty()).unwrap()
}

/// Average allocations per request (call, response, reading the whole body),
/// after a warm-up; the collector is flushed between batches, outside the
/// counted regions.
async fn allocs_per_request<S, B>(
    svc: S,
    collector: &CollectorHandle,
    path: &str,
    with_id: bool,
) -> f64
where
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible> + Clone,
    B: http_body::Body + Unpin,
    B::Error: std::fmt::Debug,
{
    let mut total = 0usize;
    for batch in 0..=BATCHES {
        let reqs: Vec<_> = (0..PER_BATCH).map(|_| request(path, with_id)).collect();
        let mut svc = svc.clone();
        for req in reqs {
            svc.ready().await.unwrap();
            let region = Region::new(GLOBAL);
            let res = svc.call(req).await.unwrap();
            let mut body = res.into_body();
            while let Some(frame) = body.frame().await {
                drop(frame.unwrap());
            }
            drop(body);
            let allocations = region.change().allocations;
            // Batch 0 is the warm-up (first label, first id slab, ...).
            if batch > 0 {
                total += allocations;
            }
        }
        collector.flush().await.unwrap();
    }
    total as f64 / (BATCHES * PER_BATCH) as f64
}

fn hello_service()
-> impl Service<Request<Body>, Response = Response<Full<Bytes>>, Error = Infallible, Future = impl Send>
+ Clone {
    service_fn(|_req: Request<Body>| async {
        let mut res = Response::new(Full::new(Bytes::from_static(b"hello")));
        res.headers_mut()
            .insert("content-type", HeaderValue::from_static("text/plain"));
        Ok::<_, Infallible>(res)
    })
}

fn router(layer: Option<MetricsLayer>) -> Router {
    let r = Router::new().route("/users/{id}", get(|| async { "hello" }));
    match layer {
        Some(layer) => r.layer(layer),
        // Any `Router::layer` makes axum box the layered service and its
        // future; the baseline pays the same with a pass-through layer, so the
        // difference is the metrics layer's own cost.
        None => r.layer(tower::util::MapResponseLayer::new(|res| res)),
    }
}

#[test]
fn allocations_added_per_request() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sink = MemorySink::with_capacity(100);
        let collector = Collector::builder(sink.clone()).spawn().unwrap();
        let mut report = Vec::new();
        // (scenario, added allocations per request)
        let mut added = Vec::new();

        for correlation in [true, false] {
            let layer = MetricsLayer::new(collector.clone()).correlation_id(correlation);
            for with_id in [false, true] {
                if with_id && !correlation {
                    continue;
                }
                let id = match (correlation, with_id) {
                    (false, _) => "correlation off",
                    (true, false) => "generated id",
                    (true, true) => "caller's id",
                };
                let path = "/users/42";
                let base = allocs_per_request(hello_service(), &collector, path, with_id).await;
                let with = allocs_per_request(
                    layer.clone().layer_service(hello_service()),
                    &collector,
                    path,
                    with_id,
                )
                .await;
                report.push(format!(
                    "service_fn, {id}: {base:.2} -> {with:.2} (+{:.2})",
                    with - base
                ));
                added.push((("service_fn", correlation), with - base));

                let base = allocs_per_request(router(None), &collector, path, with_id).await;
                let with =
                    allocs_per_request(router(Some(layer.clone())), &collector, path, with_id)
                        .await;
                report.push(format!(
                    "axum Router, {id}: {base:.2} -> {with:.2} (+{:.2})",
                    with - base
                ));
                added.push((("axum", correlation), with - base));
            }
        }
        for line in &report {
            println!("allocations per request: {line}");
        }
        let worst = |scenario: (&str, bool)| {
            added
                .iter()
                .filter(|(s, _)| *s == scenario)
                .map(|(_, n)| *n)
                .fold(0.0f64, f64::max)
        };

        let stats = collector.stats();
        assert_eq!(stats.dropped_queue_full, 0, "every request was recorded");
        assert!(stats.received >= (6 * (BATCHES + 1) * PER_BATCH) as u64);
        // The layer itself (route, identity, id, record, future, body)
        // allocates nothing per request: generated and copied ids share one
        // buffer per 64, and the id reaches handlers as the current id, not
        // through the request extensions.
        assert!(worst(("service_fn", false)) < 0.05, "{report:#?}");
        assert!(worst(("service_fn", true)) < 0.05, "{report:#?}");
        // Behind axum: axum boxes our body wrapper again (`IntoResponse`), and
        // one more allocation appears in axum's call path; ids add nothing.
        assert!(worst(("axum", false)) < 2.05, "{report:#?}");
        assert!(worst(("axum", true)) < 2.05, "{report:#?}");

        // Opting into the extension costs what it always did: boxing the
        // value, plus creating the map (box + table) on a request without
        // extensions.
        let layer = MetricsLayer::new(collector.clone()).correlation_id_extension(true);
        let path = "/users/42";
        let base = allocs_per_request(hello_service(), &collector, path, false).await;
        let with =
            allocs_per_request(layer.layer_service(hello_service()), &collector, path, false)
                .await;
        println!(
            "allocations per request: service_fn, generated id, extension on: {base:.2} -> {with:.2} (+{:.2})",
            with - base
        );
        assert!(with - base > 2.95 && with - base < 3.05, "{with} vs {base}");
    });
}

/// `Layer::layer` without importing the trait at every call site.
trait LayerService {
    fn layer_service<S: Clone>(self, inner: S) -> metrics_tower::MetricsService<S>;
}

impl LayerService for MetricsLayer {
    fn layer_service<S: Clone>(self, inner: S) -> metrics_tower::MetricsService<S> {
        tower::Layer::layer(&self, inner)
    }
}
