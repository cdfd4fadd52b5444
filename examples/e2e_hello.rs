//! The hello-world server `benches/e2e_load.sh` puts under `wrk`: one route,
//! `GET /` → `Hello, World!`, on a current-thread Tokio runtime (one worker,
//! so the collector's worker task shares the thread, and its cost, with the
//! requests), listening on 127.0.0.1 only.
//!
//! ```text
//! cargo run --release --example e2e_hello -- --bare 8081
//! cargo run --release --example e2e_hello -- --with-metrics 8082
//! cargo run --release --example e2e_hello -- --with-metrics-noop-sink 8083
//! cargo run --release --example e2e_hello -- --with-metrics-noid 8084
//! cargo run --release --example e2e_hello -- --trace 8085     # and --reqid, --trace-reqid, --axum-prometheus
//! ```
//!
//! With `--with-metrics` the router carries `MetricsLayer` (defaults:
//! correlation ids on, duration to the end of the body) feeding a collector
//! with default settings that writes into a `MemorySink` (bounded: it keeps
//! the newest 100,000 records and evicts older ones, so memory stays flat
//! however long `wrk` runs). The request path, the collector's batching and a
//! sink that stores every record are measured; a database is not.
//! `--with-metrics-noop-sink` swaps in a sink that discards every batch, to
//! tell the layer and collector apart from the sink's own work;
//! `--with-metrics-noid` turns correlation ids off. The peers, each as one
//! `Router::layer` like ours: `--trace` (tower-http `TraceLayer`, no
//! subscriber), `--reqid` (tower-http `SetRequestId` + `PropagateRequestId`,
//! UUIDv4 ids), `--trace-reqid` (the two together, tower-http's recipe) and
//! `--axum-prometheus` (its layer and recorder). On SIGTERM
//! or Ctrl-C the server shuts down gracefully and prints the collector's final
//! statistics to stderr, so the script can check that the layer saw the
//! requests.

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use metrics_core::{
    Batch, Collector, CollectorHandle, MemorySink, MetricsSink, SinkError, WriteAttempt,
    WriteSummary,
};
use metrics_tower::MetricsLayer;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

/// A sink that accepts and discards every batch.
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

/// What the server puts in front of the route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Bare,
    MemorySink,
    NoopSink,
    NoCorrelationId,
    Trace,
    RequestId,
    TraceRequestId,
    AxumPrometheus,
}

impl Mode {
    fn from_flag(flag: &str) -> Option<Self> {
        Some(match flag {
            "--bare" => Self::Bare,
            "--with-metrics" => Self::MemorySink,
            "--with-metrics-noop-sink" => Self::NoopSink,
            "--with-metrics-noid" => Self::NoCorrelationId,
            "--trace" => Self::Trace,
            "--reqid" => Self::RequestId,
            "--trace-reqid" => Self::TraceRequestId,
            "--axum-prometheus" => Self::AxumPrometheus,
            _ => return None,
        })
    }
}

async fn hello() -> &'static str {
    "Hello, World!"
}

const USAGE: &str = "usage: e2e_hello (--bare | --with-metrics | --with-metrics-noop-sink \
     | --with-metrics-noid | --trace | --reqid | --trace-reqid | --axum-prometheus) <port>";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut mode = None;
    let mut port = None;
    for arg in std::env::args().skip(1) {
        match Mode::from_flag(&arg) {
            Some(m) => mode = Some(m),
            None => port = Some(arg.parse::<u16>().map_err(|_| USAGE)?),
        }
    }
    let (Some(mode), Some(port)) = (mode, port) else {
        return Err(USAGE.into());
    };

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve(mode, port))
}

async fn serve(mode: Mode, port: u16) -> Result<(), Box<dyn std::error::Error>> {
    let collector: Option<CollectorHandle> = match mode {
        Mode::MemorySink | Mode::NoCorrelationId => {
            Some(Collector::builder(MemorySink::new()).spawn()?)
        }
        Mode::NoopSink => Some(Collector::builder(NoopSink).spawn()?),
        _ => None,
    };
    let app = Router::new().route("/", get(hello));
    let app = match (mode, &collector) {
        (Mode::NoCorrelationId, Some(handle)) => {
            app.layer(MetricsLayer::new(handle.clone()).correlation_id(false))
        }
        (_, Some(handle)) => app.layer(MetricsLayer::new(handle.clone())),
        (Mode::Trace, None) => app.layer(TraceLayer::new_for_http()),
        (Mode::RequestId, None) => app.layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(PropagateRequestIdLayer::x_request_id()),
        ),
        (Mode::TraceRequestId, None) => app.layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(TraceLayer::new_for_http())
                .layer(PropagateRequestIdLayer::x_request_id()),
        ),
        (Mode::AxumPrometheus, None) => {
            // As an application does: the recorder installed once, its
            // upkeep task on this runtime.
            let (layer, _handle) = axum_prometheus::PrometheusMetricLayer::pair();
            app.layer(layer)
        }
        (_, None) => app,
    };

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    eprintln!("e2e_hello: listening on 127.0.0.1:{port} ({mode:?})");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;

    if let Some(handle) = collector {
        let stats = handle.shutdown(Duration::from_secs(5)).await?;
        eprintln!("e2e_hello: collector stats {stats:?}");
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        // Without a SIGTERM handler Ctrl-C still stops the server.
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
