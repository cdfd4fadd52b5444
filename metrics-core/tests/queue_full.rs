//! A full queue drops and counts, `record()` never waits, and the first drop
//! logs one warning.

mod support;

use std::time::Duration;

use metrics_core::test_util::{GateMode, GatedSink};
use metrics_core::{Collector, CollectorHandle, ShutdownError};
use support::{capture, req, settle};

/// A queue of ten and batches of five, for a sink that may hang: nothing
/// lingers or times out on its own.
fn hung_collector(sink: &GatedSink) -> CollectorHandle {
    Collector::builder(sink.clone())
        .queue_capacity(10)
        .max_batch(5)
        .linger(Duration::from_secs(3600))
        .export_timeout(Duration::from_secs(3600))
        .spawn()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn records_beyond_the_queue_capacity_are_dropped_and_counted() {
    let sink = GatedSink::with_mode(GateMode::Never);
    let handle = hung_collector(&sink);
    // One batch goes to the (hanging) sink...
    for i in 0..5 {
        assert!(handle.record(req(i)));
    }
    settle().await;
    assert_eq!(sink.calls(), 1);
    // ...then the queue holds 10 more and refuses the rest.
    let accepted: Vec<bool> = (0..20).map(|i| handle.record(req(i))).collect();
    assert_eq!(accepted.iter().filter(|a| **a).count(), 10);
    assert!(accepted[..10].iter().all(|a| *a));
    let s = handle.stats();
    assert_eq!(
        (s.received, s.dropped_queue_full, s.pending, s.written),
        (25, 10, 15, 0)
    );
    assert!(s.is_consistent());

    // The hung write is still in flight at the deadline: everything pending is
    // dropped and the final stats say so.
    let err = handle.shutdown(Duration::from_secs(5)).await.unwrap_err();
    let ShutdownError::DeadlineExceeded(stats) = err else {
        panic!("expected DeadlineExceeded, got {err:?}");
    };
    assert_eq!(
        (
            stats.dropped_shutdown,
            stats.dropped_queue_full,
            stats.pending
        ),
        (15, 10, 0)
    );
    assert_eq!(stats.received, stats.written + stats.dropped());
}

#[tokio::test(start_paused = true)]
async fn queue_has_room_again_once_the_sink_catches_up() {
    let sink = GatedSink::with_mode(GateMode::Slow(Duration::from_secs(1)));
    let handle = Collector::builder(sink.clone())
        .queue_capacity(4)
        .max_batch(4)
        .spawn()
        .unwrap();
    for i in 0..4 {
        assert!(handle.record(req(i)));
    }
    settle().await; // the worker took all 4; the queue is empty again
    for i in 0..4 {
        assert!(handle.record(req(i)));
    }
    assert!(!handle.record(req(99)));
    handle.flush().await.unwrap();
    let s = handle.stats();
    assert_eq!((s.written, s.dropped_queue_full, s.pending), (8, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn queue_full_drops_warn_once() {
    let (captured, _guard) = capture();
    let sink = GatedSink::with_mode(GateMode::Never);
    let handle = hung_collector(&sink);
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
