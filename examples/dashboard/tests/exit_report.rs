//! What the app reports at exit when the collector cannot write everything
//! in time: the shutdown error still comes with every counter, in the same
//! line as a clean exit.

use std::time::{Duration, SystemTime};

use app_metrics::AppMetrics;
use app_metrics::sink::{
    Batch, Method, MetricsSink, RequestRecord, Route, SinkError, WriteAttempt, WriteSummary,
    async_trait,
};
use example_dashboard::counters::{exit_line, shutdown_and_count};

/// A store that never answers (a database that accepted the connection and
/// went silent).
struct SilentSink;

#[async_trait]
impl MetricsSink for SilentSink {
    async fn write(&self, _: &Batch, _: WriteAttempt) -> Result<WriteSummary, SinkError> {
        std::future::pending().await
    }
}

fn record() -> RequestRecord {
    RequestRecord::new(
        SystemTime::now(),
        Route::from_static("/api/demo/items/{id}"),
        Method::GET,
        200,
        Duration::from_millis(1),
    )
}

#[tokio::test]
async fn a_shutdown_past_its_deadline_still_reports_every_record() {
    let metrics = AppMetrics::with_sink(SilentSink)
        .configure_collector(|c| c.linger(Duration::ZERO))
        .start()
        .await
        .unwrap();
    for _ in 0..5 {
        assert!(metrics.collector().record(record()));
    }
    let (stats, outcome) = shutdown_and_count(
        &metrics,
        Duration::from_millis(200),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(outcome, "deadline_exceeded");
    assert_eq!(
        (
            stats.received,
            stats.written,
            stats.dropped_shutdown,
            stats.pending
        ),
        (5, 0, 5, 0),
        "{stats:?}"
    );
    let line = exit_line(&stats, outcome);
    assert!(
        line.starts_with("collector flushed: received=5 written=0 pending=0 dropped=5 ")
            && line.contains(" dropped_shutdown=5 ")
            && line.ends_with(" outcome=deadline_exceeded"),
        "{line}"
    );
}

#[tokio::test]
async fn a_clean_shutdown_reports_flushed() {
    let metrics = AppMetrics::memory().start().await.unwrap();
    for _ in 0..3 {
        assert!(metrics.collector().record(record()));
    }
    let (stats, outcome) =
        shutdown_and_count(&metrics, Duration::from_secs(5), Duration::from_secs(5)).await;
    assert_eq!(outcome, "flushed");
    assert_eq!((stats.received, stats.written, stats.dropped()), (3, 3, 0));
    // A second shutdown (the collector is gone) still knows the counters.
    let (again, outcome) =
        shutdown_and_count(&metrics, Duration::from_secs(5), Duration::from_secs(5)).await;
    assert_eq!(again.written, 3);
    assert_ne!(outcome, "timed_out");
}
