//! Audit of issue 2 ("first drop of each kind logs a warning") and issue 4
//! (the sketch is exact up to its *default* limit of 1,000 samples), checked
//! through the public API only.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics_core::aggregate::{DEFAULT_EXACT_LIMIT, LatencySketch};
use metrics_core::test_util::{GateMode, GatedSink};
use metrics_core::{Collector, RetryPolicy};
use support::{ms, req, settle};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

// ===== a minimal capturing subscriber =====
//
// metrics-core has no tracing-subscriber dev-dependency, so the few methods a
// `Subscriber` needs are written out here. The tests run on a current-thread
// runtime, so the thread-local default sees the worker task's events too.

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<(Level, String)>>>);

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl Subscriber for Captured {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut m = Message(String::new());
        event.record(&mut m);
        self.0
            .lock()
            .unwrap()
            .push((*event.metadata().level(), m.0));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

impl Captured {
    /// The WARN-level messages containing `needle`.
    fn warnings(&self, needle: &str) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(l, m)| *l == Level::WARN && m.contains(needle))
            .map(|(_, m)| m.clone())
            .collect()
    }

    fn all_warnings(&self) -> Vec<String> {
        self.warnings("")
    }
}

fn capture() -> (Captured, tracing::subscriber::DefaultGuard) {
    let c = Captured::default();
    let guard = tracing::subscriber::set_default(c.clone());
    (c, guard)
}

// ===== first drop of each kind: one warning, later drops silent =====

#[tokio::test(start_paused = true)]
async fn nothing_dropped_means_no_warning() {
    let (captured, _guard) = capture();
    let sink = GatedSink::new();
    let handle = Collector::builder(sink.clone()).spawn().unwrap();
    for i in 0..50 {
        assert!(handle.record(req(i)));
    }
    let stats = handle.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!((stats.written, stats.dropped()), (50, 0));
    assert!(
        captured.all_warnings().is_empty(),
        "{:?}",
        captured.all_warnings()
    );
}

#[tokio::test(start_paused = true)]
async fn queue_full_drops_warn_once() {
    let (captured, _guard) = capture();
    let sink = GatedSink::with_mode(GateMode::Never);
    let handle = Collector::builder(sink.clone())
        .queue_capacity(10)
        .max_batch(5)
        .linger(Duration::from_secs(3600))
        .export_timeout(Duration::from_secs(3600))
        .spawn()
        .unwrap();
    for i in 0..5 {
        handle.record(req(i));
    }
    settle().await; // the first batch hangs in the sink
    assert!(captured.all_warnings().is_empty(), "no drop yet");
    for i in 0..30 {
        handle.record(req(i));
    }
    let s = handle.stats();
    assert_eq!(s.dropped_queue_full, 20, "{s:?}");
    let w = captured.warnings("queue is full");
    assert_eq!(w.len(), 1, "one warning for 20 drops: {w:?}");
}

#[tokio::test(start_paused = true)]
async fn retries_exhausted_drops_warn_once() {
    let (captured, _guard) = capture();
    let sink = GatedSink::with_mode(GateMode::Unavailable);
    let handle = Collector::builder(sink.clone())
        .max_batch(1)
        .retry(RetryPolicy::none())
        .spawn()
        .unwrap();
    for i in 0..4 {
        handle.record(req(i));
    }
    handle.flush().await.unwrap();
    let s = handle.stats();
    assert_eq!(s.dropped_retries_exhausted, 4, "{s:?}");
    let w = captured.warnings("kept failing");
    assert_eq!(w.len(), 1, "one warning for four dropped batches: {w:?}");
}

#[tokio::test(start_paused = true)]
async fn rejected_records_warn_once() {
    let (captured, _guard) = capture();
    let sink = GatedSink::with_mode(GateMode::PartialReject(1));
    let handle = Collector::builder(sink.clone())
        .max_batch(2)
        .spawn()
        .unwrap();
    for i in 0..6 {
        handle.record(req(i));
    }
    handle.flush().await.unwrap();
    let s = handle.stats();
    assert_eq!((s.written, s.dropped_rejected), (3, 3), "{s:?}");
    let w = captured.warnings("rejected records");
    assert_eq!(w.len(), 1, "one warning for three rejections: {w:?}");
}

#[tokio::test(start_paused = true)]
async fn shutdown_deadline_drops_warn_once_and_later_records_warn_once() {
    let (captured, _guard) = capture();
    let sink = GatedSink::with_mode(GateMode::Slow(Duration::from_secs(1)));
    let handle = Collector::builder(sink.clone())
        .max_batch(10)
        .linger(Duration::from_secs(3600))
        .spawn()
        .unwrap();
    for i in 0..30 {
        handle.record(req(i));
    }
    let stats = handle.shutdown(ms(1_500)).await.unwrap_err();
    let stats = match stats {
        metrics_core::ShutdownError::DeadlineExceeded(s) => s,
        other => panic!("expected DeadlineExceeded, got {other:?}"),
    };
    assert!(stats.dropped_shutdown > 0, "{stats:?}");
    assert_eq!(captured.warnings("shutdown deadline").len(), 1);

    // Records after shutdown are refused: also one warning, however many.
    for i in 0..5 {
        assert!(!handle.record(req(i)));
    }
    assert_eq!(handle.stats().dropped_closed, 5);
    assert_eq!(captured.warnings("is shut down").len(), 1);
}

// ===== the default exact limit of the latency sketch =====

/// percentile_cont over sorted values (linear interpolation).
fn percentile_cont(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor();
    let a = sorted[lo as usize];
    if pos == lo {
        a
    } else {
        a + (sorted[lo as usize + 1] - a) * (pos - lo)
    }
}

fn latencies(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n).map(|_| 1.0 + rng.f64() * 2_000.0).collect()
}

#[test]
fn default_sketch_is_exact_up_to_1000_samples_then_within_one_percent() {
    assert_eq!(DEFAULT_EXACT_LIMIT, 1_000);
    let values = latencies(1_001, 42);

    // 1,000 samples, and two halves merged: exactly percentile_cont.
    let mut exact = LatencySketch::new();
    let (mut left, mut right) = (LatencySketch::new(), LatencySketch::new());
    for (i, &v) in values[..1_000].iter().enumerate() {
        exact.add(v);
        if i % 2 == 0 { &mut left } else { &mut right }.add(v);
    }
    left.merge(&right);
    let mut sorted = values[..1_000].to_vec();
    sorted.sort_by(f64::total_cmp);
    for s in [&exact, &left] {
        assert!(s.is_exact());
        for q in [0.5, 0.95, 0.99] {
            let e = s.quantile(q).unwrap();
            assert_eq!(e.value, percentile_cont(&sorted, q), "q {q}");
            assert_eq!(e.rel_error_bound, 0.0);
        }
    }

    // One sample more: binned, with the bound reported and respected.
    exact.add(values[1_000]);
    assert!(!exact.is_exact());
    let mut sorted = values;
    sorted.sort_by(f64::total_cmp);
    for q in [0.5, 0.95, 0.99] {
        let e = exact.quantile(q).unwrap();
        let truth = percentile_cont(&sorted, q);
        assert!(e.rel_error_bound > 0.0 && e.rel_error_bound <= 0.01);
        assert!(
            (e.value - truth).abs() / truth <= e.rel_error_bound * (1.0 + 1e-9),
            "q {q}: {} vs {truth}",
            e.value
        );
    }
}
