//! Per-request cost of `MetricsLayer`, in process, each variant against a bare
//! baseline of its own group measured in the same run, with the peers that do
//! (parts of) the same job: tower-http's `TraceLayer`, its request-id layers
//! alone and together with `TraceLayer`, and axum-prometheus.
//!
//! Run: `cargo bench --bench layer_overhead` (see docs/benchmarks.md). After
//! criterion's report it prints one line per variant:
//!
//! ```text
//! RESULT layer_overhead variant=<v> ns_per_req=<median> added_ns=<median - bare> ratio_to_bare=<x>
//! ```
//!
//! and `TARGET` lines comparing our added cost with the peers' (see
//! `print_targets`). Every iteration builds the request, drives a ready service with `call`
//! and collects the response body to its end (our layer records when the body
//! ends), identically in every variant, so the differences are the layers.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Debug;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::routing::get;
use cpu_time::ThreadTime;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion};
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use metrics_core::{
    Batch, Collector, CollectorHandle, CollectorStats, MemorySink, MetricsSink, SinkError,
    WriteAttempt, WriteSummary,
};
use metrics_tower::MetricsLayer;
use tokio::runtime::Runtime;
use tower::layer::util::Identity;
use tower::{Layer, Service, ServiceExt};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

// ===== variant names =====

const ROUTER: &str = "router";
const BARE_ROUTER: &str = "bare_router";
const NOOP_LAYER_ROUTER: &str = "noop_layer_router";
const METRICS_ROUTER: &str = "metrics_router";
const METRICS_NOOP_SINK_ROUTER: &str = "metrics_noop_sink_router";
const METRICS_NOID_ROUTER: &str = "metrics_noid_router";
const TRACE_LAYER_ROUTER: &str = "trace_layer_router";
const REQID_ROUTER: &str = "reqid_router";
const TRACE_REQID_ROUTER: &str = "trace_reqid_router";
const AXUM_PROMETHEUS_ROUTER: &str = "axum_prometheus_router";

const SERVICE_FN: &str = "service_fn";
const BARE_SERVICE_FN: &str = "bare_service_fn";
const METRICS_SERVICE_FN: &str = "metrics_service_fn";

/// Each group with its variants; the first variant is the group's bare
/// baseline that `added_ns` and `ratio_to_bare` refer to.
const GROUPS: &[(&str, &[&str])] = &[
    (
        ROUTER,
        &[
            BARE_ROUTER,
            NOOP_LAYER_ROUTER,
            METRICS_ROUTER,
            METRICS_NOOP_SINK_ROUTER,
            METRICS_NOID_ROUTER,
            TRACE_LAYER_ROUTER,
            REQID_ROUTER,
            TRACE_REQID_ROUTER,
            AXUM_PROMETHEUS_ROUTER,
        ],
    ),
    (SERVICE_FN, &[BARE_SERVICE_FN, METRICS_SERVICE_FN]),
];

// ===== services under test =====

async fn hello() -> &'static str {
    "Hello, World!"
}

fn router() -> Router {
    Router::new().route("/", get(hello))
}

fn router_request() -> Request<Body> {
    Request::get("/")
        .body(Body::empty())
        .expect("valid request")
}

fn service_fn_request() -> Request<Empty<Bytes>> {
    Request::get("/users/42")
        .body(Empty::new())
        .expect("valid request")
}

async fn hello_fn(_req: Request<Empty<Bytes>>) -> Result<Response<Full<Bytes>>, http::Error> {
    Ok(Response::new(Full::new(Bytes::from_static(
        b"Hello, World!",
    ))))
}

/// A sink that accepts and discards every batch: the layer and the
/// collector without any storage work.
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

/// A collector on the current runtime: the defaults an application gets
/// (bounded queue, batches of 1,000 or 1 s).
fn collector(sink: impl MetricsSink) -> CollectorHandle {
    Collector::builder(sink).spawn().expect("collector spawns")
}

/// `MetricsLayer` as an application sets it up: defaults, which record the
/// duration at the end of the body and read or generate the correlation id.
fn metrics_layer(collector: &CollectorHandle) -> MetricsLayer {
    MetricsLayer::new(collector.clone())
}

/// The peers that generate, propagate and echo a request id: tower-http's
/// `SetRequestId` (a UUIDv4 from `uuid`'s fast RNG when the request has no
/// `x-request-id`) and `PropagateRequestId` (echoes it), as one layer.
fn request_id_router() -> Router {
    router().layer(
        tower::ServiceBuilder::new()
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
            .layer(PropagateRequestIdLayer::x_request_id()),
    )
}

/// The usual "traces with request ids" recipe (tower-http's request-id docs):
/// the id set first, `TraceLayer` inside it (so its span can show the id),
/// the id echoed on the way out; one `Router::layer`, like ours.
fn trace_request_id_router() -> Router {
    router().layer(
        tower::ServiceBuilder::new()
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
            .layer(TraceLayer::new_for_http())
            .layer(PropagateRequestIdLayer::x_request_id()),
    )
}

// ===== driver =====

/// Requests per chunk: the variant and its bare baseline alternate every
/// `CHUNK` requests, short enough (about 0.1 ms) that both see the same
/// machine, long enough that reading the clock costs nothing measurable.
const CHUNK: u64 = 128;

/// One measured sample of a variant: the variant's and its interleaved bare
/// baseline's time for `iters` requests each.
#[derive(Debug, Clone, Copy)]
struct PairedSample {
    iters: u64,
    variant: Duration,
    bare: Duration,
}

/// Every sample taken of every variant (warm-up included; the measured ones
/// are the last, matched against criterion's `sample.json`).
type Samples = HashMap<&'static str, Vec<PairedSample>>;

/// What a sample's time is measured with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Clock {
    /// CPU time of the thread driving the requests (the default). Wall time
    /// on a shared machine also counts the time slices other processes get
    /// while ours waits; CPU time does not, yet it still counts everything
    /// the request path does on this thread, system calls (such as waking
    /// the collector's worker) included. On an idle machine both agree.
    ThreadCpu,
    /// Wall-clock time (`LAYER_OVERHEAD_CLOCK=wall`).
    Wall,
}

impl Clock {
    fn from_env() -> Self {
        match std::env::var("LAYER_OVERHEAD_CLOCK").as_deref() {
            Ok("wall") => Self::Wall,
            Ok("cpu") | Err(_) => Self::ThreadCpu,
            Ok(other) => panic!("LAYER_OVERHEAD_CLOCK must be `cpu` or `wall`, not {other:?}"),
        }
    }

    fn start(self) -> Stopwatch {
        match self {
            Self::ThreadCpu => Stopwatch::ThreadCpu(ThreadTime::now()),
            Self::Wall => Stopwatch::Wall(Instant::now()),
        }
    }
}

enum Stopwatch {
    ThreadCpu(ThreadTime),
    Wall(Instant),
}

impl Stopwatch {
    fn elapsed(&self) -> Duration {
        match self {
            Self::ThreadCpu(start) => start.elapsed(),
            Self::Wall(start) => start.elapsed(),
        }
    }
}

/// Sends `n` requests through `service` one at a time, each on a ready
/// service and each response body collected to its end.
async fn drive<S, ReqB, ResB>(
    clock: Clock,
    service: &mut S,
    n: u64,
    request: fn() -> Request<ReqB>,
) -> Duration
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Debug,
    ResB: HttpBody,
    ResB::Error: Debug,
{
    let start = clock.start();
    for _ in 0..n {
        let response = service
            .ready()
            .await
            .expect("service ready")
            .call(request())
            .await
            .expect("response");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        black_box(body);
    }
    start.elapsed()
}

/// Benchmarks variant `id`: criterion times only the variant, and every
/// sample interleaves it, chunk by chunk and in alternating order, with a
/// fresh instance of the group's bare baseline whose time goes to `samples`.
/// Machine noise (other jobs on a shared 2-core box) then hits the variant and
/// its baseline alike, which sequential benchmarks cannot promise.
///
/// `make` and `make_bare` build fresh services for every sample, outside the
/// timed region, inside the runtime's context (the collector spawns its
/// worker there); `finish` runs after each sample, outside the timing too.
#[allow(clippy::too_many_arguments)]
fn bench_variant<S, B, T, ReqB, ResB, BareResB>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &Runtime,
    samples: &mut Samples,
    id: &'static str,
    make: impl Fn() -> (S, T),
    finish: impl Fn(T),
    make_bare: impl Fn() -> B,
    request: fn() -> Request<ReqB>,
) where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Debug,
    ResB: HttpBody,
    ResB::Error: Debug,
    B: Service<Request<ReqB>, Response = Response<BareResB>>,
    B::Error: Debug,
    BareResB: HttpBody,
    BareResB::Error: Debug,
{
    let clock = Clock::from_env();
    let taken = samples.entry(id).or_default();
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let ((mut service, teardown), mut bare) = {
                let _context = rt.enter();
                (make(), make_bare())
            };
            let (variant, bare) = rt.block_on(async {
                let mut variant = Duration::ZERO;
                let mut bare_time = Duration::ZERO;
                let mut left = iters;
                let mut chunk_index = 0u64;
                while left > 0 {
                    let n = left.min(CHUNK);
                    if chunk_index % 2 == 0 {
                        bare_time += drive(clock, &mut bare, n, request).await;
                        variant += drive(clock, &mut service, n, request).await;
                    } else {
                        variant += drive(clock, &mut service, n, request).await;
                        bare_time += drive(clock, &mut bare, n, request).await;
                    }
                    left -= n;
                    chunk_index += 1;
                }
                (variant, bare_time)
            });
            finish(teardown);
            taken.push(PairedSample {
                iters,
                variant,
                bare,
            });
            variant
        });
    });
}

/// `finish` for variants with nothing to tear down.
fn nothing(_: ()) {}

/// Collector figures summed over a variant's samples.
type CollectorTotals = HashMap<&'static str, CollectorStats>;

/// `finish` for metrics variants: shuts the sample's collector down (every
/// record written) and adds its figures to `totals`, so the report can show
/// that the requests were recorded, not dropped.
fn shut_down<'a>(
    rt: &'a Runtime,
    totals: &'a RefCell<CollectorTotals>,
    id: &'static str,
) -> impl Fn(CollectorHandle) + 'a {
    move |collector| {
        let stats = rt
            .block_on(collector.shutdown(Duration::from_secs(30)))
            .expect("collector shuts down within the deadline");
        let mut totals = totals.borrow_mut();
        let total = totals.entry(id).or_default();
        total.received += stats.received;
        total.written += stats.written;
        total.dropped_queue_full += stats.dropped_queue_full;
        total.dropped_shutdown += stats.dropped_shutdown;
        total.batches += stats.batches;
    }
}

fn router_group(
    c: &mut Criterion,
    rt: &Runtime,
    samples: &mut Samples,
    totals: &RefCell<CollectorTotals>,
) {
    let mut group = c.benchmark_group(ROUTER);
    // The baseline against a twin of itself: the method's own noise (A/A).
    bench_variant(
        &mut group,
        rt,
        samples,
        BARE_ROUTER,
        || (router(), ()),
        nothing,
        router,
        router_request,
    );
    bench_variant(
        &mut group,
        rt,
        samples,
        NOOP_LAYER_ROUTER,
        || (router().layer(Identity::new()), ()),
        nothing,
        router,
        router_request,
    );
    bench_variant(
        &mut group,
        rt,
        samples,
        METRICS_ROUTER,
        || {
            let collector = collector(MemorySink::new());
            (router().layer(metrics_layer(&collector)), collector)
        },
        shut_down(rt, totals, METRICS_ROUTER),
        router,
        router_request,
    );
    bench_variant(
        &mut group,
        rt,
        samples,
        METRICS_NOOP_SINK_ROUTER,
        || {
            let collector = collector(NoopSink);
            (router().layer(metrics_layer(&collector)), collector)
        },
        shut_down(rt, totals, METRICS_NOOP_SINK_ROUTER),
        router,
        router_request,
    );
    bench_variant(
        &mut group,
        rt,
        samples,
        METRICS_NOID_ROUTER,
        || {
            let collector = collector(MemorySink::new());
            let layer = metrics_layer(&collector).correlation_id(false);
            (router().layer(layer), collector)
        },
        shut_down(rt, totals, METRICS_NOID_ROUTER),
        router,
        router_request,
    );
    // No tracing subscriber is installed: this is TraceLayer's floor.
    bench_variant(
        &mut group,
        rt,
        samples,
        TRACE_LAYER_ROUTER,
        || (router().layer(TraceLayer::new_for_http()), ()),
        nothing,
        router,
        router_request,
    );
    bench_variant(
        &mut group,
        rt,
        samples,
        REQID_ROUTER,
        || (request_id_router(), ()),
        nothing,
        router,
        router_request,
    );
    bench_variant(
        &mut group,
        rt,
        samples,
        TRACE_REQID_ROUTER,
        || (trace_request_id_router(), ()),
        nothing,
        router,
        router_request,
    );
    // `pair()` installs the process-wide recorder (and spawns its upkeep
    // task), as an application using axum-prometheus does; once per process.
    let prometheus_layer = {
        let _context = rt.enter();
        let (layer, _handle) = axum_prometheus::PrometheusMetricLayer::pair();
        layer
    };
    bench_variant(
        &mut group,
        rt,
        samples,
        AXUM_PROMETHEUS_ROUTER,
        || (router().layer(prometheus_layer.clone()), ()),
        nothing,
        router,
        router_request,
    );
    group.finish();
}

fn service_fn_group(
    c: &mut Criterion,
    rt: &Runtime,
    samples: &mut Samples,
    totals: &RefCell<CollectorTotals>,
) {
    let mut group = c.benchmark_group(SERVICE_FN);
    bench_variant(
        &mut group,
        rt,
        samples,
        BARE_SERVICE_FN,
        || (tower::service_fn(hello_fn), ()),
        nothing,
        || tower::service_fn(hello_fn),
        service_fn_request,
    );
    bench_variant(
        &mut group,
        rt,
        samples,
        METRICS_SERVICE_FN,
        || {
            let collector = collector(MemorySink::new());
            let service = metrics_layer(&collector).layer(tower::service_fn(hello_fn));
            (service, collector)
        },
        shut_down(rt, totals, METRICS_SERVICE_FN),
        || tower::service_fn(hello_fn),
        service_fn_request,
    );
    group.finish();
}

// ===== results =====

/// Where criterion writes its estimates, resolved as criterion does
/// (`CRITERION_HOME`, then `$CARGO_TARGET_DIR/criterion`) and handed to it
/// explicitly so both sides agree. Cargo runs benches from the package root,
/// so the relative fallback is this package's `target/`.
fn criterion_home() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        PathBuf::from(home)
    } else if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        PathBuf::from(target).join("criterion")
    } else {
        PathBuf::from("target/criterion")
    }
}

/// Reads `<home>/<group>/<id>/new/<file>` if criterion wrote it in this run
/// (a stale file from an earlier run, for a variant filtered out now or run
/// with `--test`, is never reported).
fn fresh_json(
    home: &Path,
    group: &str,
    id: &str,
    file: &str,
    run_start: SystemTime,
) -> Option<serde_json::Value> {
    let path = home.join(group).join(id).join("new").join(file);
    let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok()?;
    if modified < run_start {
        return None;
    }
    serde_json::from_str(&std::fs::read_to_string(&path).ok()?).ok()
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// One variant's figures: criterion's median and the median of the bare
/// baseline over the same samples.
#[derive(Debug, Clone, Copy)]
struct Figures {
    median_ns: f64,
    bare_ns: f64,
}

fn figures(
    home: &Path,
    group: &str,
    id: &str,
    run_start: SystemTime,
    samples: &Samples,
) -> Option<Figures> {
    let estimates = fresh_json(home, group, id, "estimates.json", run_start)?;
    let median_ns = estimates["median"]["point_estimate"].as_f64()?;
    // Criterion calls the routine once per measured sample after the
    // warm-up calls, so the measured samples are the last ones taken; their
    // iteration counts must match criterion's record of them.
    let sample = fresh_json(home, group, id, "sample.json", run_start)?;
    let iters: Vec<u64> = sample["iters"]
        .as_array()?
        .iter()
        .map(|v| v.as_f64().map(|f| f as u64))
        .collect::<Option<_>>()?;
    let taken = samples.get(id)?;
    let measured = taken.get(taken.len().checked_sub(iters.len())?..)?;
    if measured.iter().map(|s| s.iters).ne(iters.iter().copied()) {
        eprintln!("layer_overhead: samples of {group}/{id} do not match criterion's");
        return None;
    }
    let per_iter = |d: Duration, s: &PairedSample| d.as_nanos() as f64 / s.iters as f64;
    let bare_ns = median(measured.iter().map(|s| per_iter(s.bare, s)).collect())?;
    // Criterion's median is the median of these very samples; a mismatch
    // would mean the pairing is off.
    let own_ns = median(measured.iter().map(|s| per_iter(s.variant, s)).collect())?;
    if (own_ns - median_ns).abs() > 0.01 * median_ns {
        eprintln!(
            "layer_overhead: {group}/{id}: criterion median {median_ns:.1} ns, samples {own_ns:.1} ns"
        );
        return None;
    }
    Some(Figures { median_ns, bare_ns })
}

fn print_collector_totals(totals: &CollectorTotals) {
    for (_, variants) in GROUPS {
        for variant in *variants {
            let Some(t) = totals.get(variant) else {
                continue;
            };
            println!(
                "COLLECTOR layer_overhead variant={variant} received={} written={} dropped_queue_full={} dropped_shutdown={} batches={}",
                t.received, t.written, t.dropped_queue_full, t.dropped_shutdown, t.batches
            );
            if t.received == 0 || t.written < t.received {
                eprintln!(
                    "layer_overhead: WARNING {variant}: the collector did not write every request; its figures do not measure the normal path"
                );
            }
        }
    }
}

fn print_results(home: &Path, run_start: SystemTime, samples: &Samples) {
    let mut all = HashMap::new();
    for (group, variants) in GROUPS {
        for variant in *variants {
            match figures(home, group, variant, run_start, samples) {
                Some(f) => {
                    all.insert(*variant, f);
                }
                None => eprintln!("layer_overhead: no figures for {group}/{variant} in this run"),
            }
        }
    }
    // The method's own noise: each bare baseline against its twin.
    for (group, variants) in GROUPS {
        if let Some(f) = all.get(variants[0]) {
            println!(
                "NOISE layer_overhead group={group} aa_added_ns={:.1} aa_ratio={:.3}",
                f.median_ns - f.bare_ns,
                f.median_ns / f.bare_ns
            );
        }
    }
    for (_, variants) in GROUPS {
        for variant in *variants {
            if let Some(f) = all.get(variant) {
                println!(
                    "PAIRED layer_overhead variant={variant} bare_ns_same_samples={:.1}",
                    f.bare_ns
                );
            }
        }
    }
    for (_, variants) in GROUPS {
        for (i, variant) in variants.iter().enumerate() {
            let Some(f) = all.get(variant) else { continue };
            // The bare variant is its own baseline.
            let (added, ratio) = if i == 0 {
                (0.0, 1.0)
            } else {
                (f.median_ns - f.bare_ns, f.median_ns / f.bare_ns)
            };
            println!(
                "RESULT layer_overhead variant={variant} ns_per_req={:.1} added_ns={added:.1} ratio_to_bare={ratio:.3}",
                f.median_ns
            );
        }
    }
    print_targets(&all);
}

/// The targets (issue 14), measured, never asserted: a busy machine must not
/// fail a build, and the numbers are the point.
///
/// Comparisons between variants use each variant's excess over its own
/// interleaved baseline (`ratio_to_bare - 1`): when both saw the same
/// baseline it equals the ratio of `added_ns`, and when the machine's load
/// changed between the two variants (inflating every nanosecond of one pair)
/// it does not drift with it.
fn print_targets(all: &HashMap<&str, Figures>) {
    let excess = |v: &str| all.get(v).map(|f| f.median_ns / f.bare_ns - 1.0);
    let verdict = |met: bool| if met { "met" } else { "missed" };
    let Some(ours) = excess(METRICS_ROUTER) else {
        return;
    };
    if let Some(trace) = excess(TRACE_LAYER_ROUTER).filter(|t| *t > 0.0) {
        println!(
            "TARGET layer_overhead metrics_router_added_over_trace_layer_added={:.2} limit=1.00 {}",
            ours / trace,
            verdict(ours <= trace)
        );
    }
    if let Some(stack) = excess(TRACE_REQID_ROUTER).filter(|t| *t > 0.0) {
        println!(
            "TARGET layer_overhead metrics_router_added_over_trace_reqid_added={:.2} limit=0.50 {}",
            ours / stack,
            verdict(ours <= 0.5 * stack)
        );
    }
}

fn main() {
    let run_start = SystemTime::now();
    let home = criterion_home();
    // Sub-microsecond work on a shared 2-core machine: a longer measurement
    // and many samples keep the median steady; plots are not needed.
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5))
        .sample_size(60)
        .without_plots()
        .output_directory(&home)
        .configure_from_args();
    // The timed loop runs in `block_on` on this thread; spawned tasks (the
    // collector's worker, axum-prometheus' upkeep) run on the one worker
    // thread, as they would beside request handling in a server.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");

    let mut samples = Samples::new();
    let totals = RefCell::new(CollectorTotals::new());
    router_group(&mut criterion, &rt, &mut samples, &totals);
    service_fn_group(&mut criterion, &rt, &mut samples, &totals);
    criterion.final_summary();
    print_collector_totals(&totals.borrow());
    print_results(&home, run_start, &samples);
}
