//! Shutdown: closes intake, drains within the deadline, answers with final
//! stats; dropping every handle drains and stops the worker. Records dropped
//! at the deadline, and records refused after it, log one warning each; the
//! worker's end logs one line with the drop totals; a clean run logs none.

mod support;

use std::time::Duration;

use metrics_core::test_util::{GateMode, GatedSink};
use metrics_core::{Collector, CollectorHandle, RetryPolicy, ShutdownError};
use support::{capture, ms, req, settle};
use tokio::time::Instant;

/// Thirty records queued in batches of ten for a sink taking a second per
/// write: a 1.5 s shutdown deadline catches the second batch in flight.
fn thirty_records_for_a_slow_sink() -> (GatedSink, CollectorHandle) {
    let sink = GatedSink::with_mode(GateMode::Slow(Duration::from_secs(1)));
    let handle = Collector::builder(sink.clone())
        .max_batch(10)
        .linger(Duration::from_secs(3600))
        .spawn()
        .unwrap();
    for i in 0..30 {
        handle.record(req(i));
    }
    (sink, handle)
}

#[tokio::test(start_paused = true)]
async fn shutdown_drains_everything_within_the_deadline() {
    let sink = GatedSink::with_mode(GateMode::Slow(ms(100)));
    let (handle, worker) = Collector::builder(sink.clone())
        .max_batch(10)
        .linger(Duration::from_secs(3600))
        .build()
        .unwrap();
    let task = tokio::spawn(worker);
    for i in 0..25 {
        handle.record(req(i));
    }
    let t0 = Instant::now();
    let stats = handle.shutdown(Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        (stats.received, stats.written, stats.pending, stats.batches),
        (25, 25, 0, 3)
    );
    assert_eq!(stats.dropped(), 0);
    // Three writes of 100 ms, no linger wait.
    assert_eq!(Instant::now() - t0, ms(300));
    assert_eq!(sink.written(), 25);
    task.await.unwrap(); // the worker has ended

    // Intake is closed: later records are refused and counted.
    assert!(!handle.record(req(99)));
    let after = handle.stats();
    assert_eq!(
        (after.dropped_closed, after.received, after.pending),
        (1, 26, 0)
    );
    assert!(after.is_consistent());
}

#[tokio::test(start_paused = true)]
async fn shutdown_deadline_drops_and_reports_what_is_left() {
    let (sink, handle) = thirty_records_for_a_slow_sink();
    let t0 = Instant::now();
    let err = handle.shutdown(ms(1_500)).await.unwrap_err();
    assert_eq!(Instant::now() - t0, ms(1_500));
    let ShutdownError::DeadlineExceeded(stats) = err else {
        panic!("expected DeadlineExceeded, got {err:?}");
    };
    // First batch written at 1 s; the second was in flight at 1.5 s.
    assert_eq!(
        (stats.written, stats.dropped_shutdown, stats.pending),
        (10, 20, 0)
    );
    assert_eq!(stats.received, stats.written + stats.dropped());
    assert_eq!(sink.written(), 10);
}

#[tokio::test(start_paused = true)]
async fn shutdown_interrupts_retry_backoff_at_the_deadline() {
    let sink = GatedSink::with_mode(GateMode::Unavailable);
    let handle = Collector::builder(sink.clone())
        .max_batch(10)
        .retry(
            support::test_policy(100)
                .with_initial(Duration::from_secs(10))
                .with_max(Duration::from_secs(10)),
        )
        .spawn()
        .unwrap();
    for i in 0..3 {
        handle.record(req(i));
    }
    handle.record(req(3));
    settle().await;
    let err = handle.shutdown(Duration::from_secs(2)).await.unwrap_err();
    let ShutdownError::DeadlineExceeded(stats) = err else {
        panic!("expected DeadlineExceeded, got {err:?}");
    };
    assert_eq!((stats.dropped_shutdown, stats.pending), (4, 0));
}

#[tokio::test(start_paused = true)]
async fn shutdown_is_idempotent_and_a_later_flush_is_refused() {
    let handle = Collector::builder(GatedSink::new()).spawn().unwrap();
    let other = handle.clone();
    for i in 0..3 {
        handle.record(req(i));
    }
    let first = handle.shutdown(Duration::from_secs(1)).await.unwrap();
    assert_eq!((first.received, first.written, first.pending), (3, 3, 0));
    // A record after shutdown is counted, yet a later shutdown still reports
    // the final stats of the first one.
    assert!(!other.record(req(9)));
    let again = other.shutdown(Duration::from_secs(1)).await.unwrap();
    assert_eq!(again, first);
    assert!(matches!(
        other.flush().await,
        Err(ShutdownError::AlreadyShutdown)
    ));
}

#[tokio::test(start_paused = true)]
async fn concurrent_shutdowns_share_one_drain() {
    let sink = GatedSink::new();
    let handle = Collector::builder(sink.clone()).spawn().unwrap();
    let other = handle.clone();
    for i in 0..5 {
        handle.record(req(i));
    }
    let (a, b) = tokio::join!(
        handle.shutdown(Duration::from_secs(1)),
        other.shutdown(Duration::from_secs(30))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a, b);
    assert_eq!((a.written, a.dropped_shutdown, a.pending), (5, 0, 0));
    assert!(matches!(
        other.flush().await,
        Err(ShutdownError::AlreadyShutdown)
    ));
}

#[tokio::test(start_paused = true)]
async fn dropping_every_handle_drains_and_stops_the_worker() {
    let sink = GatedSink::new();
    let (handle, worker) = Collector::builder(sink.clone())
        .max_batch(100)
        .linger(Duration::from_secs(3600))
        .build()
        .unwrap();
    let task = tokio::spawn(worker);
    let clone = handle.clone();
    for i in 0..7 {
        clone.record(req(i));
    }
    drop(clone);
    settle().await;
    assert_eq!(sink.calls(), 0, "a live handle keeps the batch lingering");
    let t0 = Instant::now();
    drop(handle);
    task.await.unwrap();
    assert_eq!(Instant::now(), t0, "the drain must not wait for the linger");
    assert_eq!(sink.written(), 7);
}

#[tokio::test(start_paused = true)]
async fn worker_never_spawned_is_reported_and_dropping_it_counts_records() {
    let (handle, worker) = Collector::builder(GatedSink::new()).build().unwrap();
    for i in 0..3 {
        handle.record(req(i));
    }
    assert!(matches!(
        handle.shutdown(Duration::from_secs(1)).await,
        Err(ShutdownError::WorkerGone)
    ));
    drop(worker);
    let s = handle.stats();
    assert_eq!((s.dropped_shutdown, s.pending), (3, 0));
    assert!(!handle.record(req(4)));
    assert_eq!(handle.stats().dropped_closed, 1);
    assert!(handle.stats().is_consistent());
}

#[tokio::test(start_paused = true)]
async fn a_flush_in_progress_is_answered_by_shutdown() {
    let sink = GatedSink::with_mode(GateMode::Never);
    let handle = Collector::builder(sink.clone())
        .export_timeout(Duration::from_secs(3600))
        .spawn()
        .unwrap();
    handle.record(req(1));
    let flusher = {
        let h = handle.clone();
        tokio::spawn(async move { h.flush().await })
    };
    settle().await;
    let err = handle.shutdown(ms(500)).await.unwrap_err();
    assert!(matches!(err, ShutdownError::DeadlineExceeded(s) if s.dropped_shutdown == 1));
    flusher.await.unwrap().unwrap();
}

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
async fn shutdown_deadline_drops_warn_once_and_later_records_warn_once() {
    let (captured, _guard) = capture();
    let (_sink, handle) = thirty_records_for_a_slow_sink();
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

#[tokio::test(start_paused = true)]
async fn shutdown_logs_one_line_with_the_drop_totals_by_reason() {
    let (captured, _guard) = capture();
    // One record rejected by the sink and two refused by a full queue: every
    // reason appears with its own count, zeros included.
    let sink = GatedSink::with_mode(GateMode::Reject);
    let handle = Collector::builder(sink.clone())
        .queue_capacity(2)
        .max_batch(1)
        .spawn()
        .unwrap();
    assert!(handle.record(req(1)));
    handle.flush().await.unwrap();
    assert!(handle.record(req(2)));
    assert!(handle.record(req(3)));
    assert!(!handle.record(req(4)));
    assert!(!handle.record(req(5)));
    sink.set_mode(GateMode::Ok);
    assert!(
        captured.warnings("totals by reason").is_empty(),
        "only at shutdown"
    );
    let stats = handle.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        (
            stats.written,
            stats.dropped_rejected,
            stats.dropped_queue_full
        ),
        (2, 1, 2),
        "{stats:?}"
    );

    let lines = captured.warnings("totals by reason");
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    for field in [
        "dropped=3",
        "dropped_queue_full=2",
        "dropped_memory_budget=0",
        "dropped_retries_exhausted=0",
        "dropped_rejected=1",
        "dropped_shutdown=0",
        "dropped_closed=0",
        "received=5",
        "written=2",
    ] {
        assert!(line.contains(field), "{field} missing from {line:?}");
    }
    // Shutting down again logs nothing more.
    let _ = handle.shutdown(Duration::from_secs(5)).await;
    assert_eq!(captured.warnings("totals by reason").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn dropping_every_handle_logs_the_totals_too() {
    let (captured, _guard) = capture();
    let sink = GatedSink::with_mode(GateMode::Unavailable);
    let (handle, worker) = Collector::builder(sink.clone())
        .retry(RetryPolicy::none())
        .build()
        .unwrap();
    let task = tokio::spawn(worker);
    assert!(handle.record(req(1)));
    drop(handle);
    task.await.unwrap();
    let lines = captured.warnings("totals by reason");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("dropped_retries_exhausted=1"),
        "{lines:?}"
    );
}
