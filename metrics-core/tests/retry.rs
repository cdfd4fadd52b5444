//! Failed writes: backoff schedule, giving up, non-retryable errors, partial
//! rejection, timeouts and panicking sinks; the retry contract (a retry is the
//! same batch under the same id, a new batch gets a new id); one warning for
//! the first batch given up and for the first rejected records.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics_core::test_util::{GateMode, GatedSink};
use metrics_core::{
    Batch, BatchId, Collector, CollectorHandle, MetricsSink, RetryPolicy, SinkError, WriteAttempt,
    WriteSummary, async_trait,
};
use support::{capture, ms, req, test_policy};
use tokio::time::Instant;

fn collector(sink: &GatedSink, retry: RetryPolicy) -> CollectorHandle {
    Collector::builder(sink.clone())
        .max_batch(5)
        .linger(Duration::from_secs(3600))
        .export_timeout(Duration::from_secs(1))
        .retry(retry)
        .spawn()
        .unwrap()
}

fn offsets(sink: &GatedSink, t0: Instant) -> Vec<Duration> {
    sink.call_log().iter().map(|c| c.at - t0).collect()
}

#[tokio::test(start_paused = true)]
async fn retries_follow_the_capped_exponential_schedule() {
    let sink = GatedSink::new();
    sink.script([GateMode::Unavailable; 5]);
    let handle = collector(&sink, test_policy(10));
    let t0 = Instant::now();
    for i in 0..5 {
        handle.record(req(i));
    }
    handle.flush().await.unwrap();
    // 100, 200, 400, 800, then the cap (1 s).
    assert_eq!(
        offsets(&sink, t0),
        [ms(0), ms(100), ms(300), ms(700), ms(1_500), ms(2_500)]
    );
    let s = handle.stats();
    assert_eq!((s.written, s.retries, s.batches, s.dropped()), (5, 5, 1, 0));
    assert!(handle.last_error().unwrap().contains("unavailable"));
}

#[tokio::test(start_paused = true)]
async fn batch_is_dropped_after_max_attempts() {
    let sink = GatedSink::with_mode(GateMode::Unavailable);
    let handle = collector(&sink, test_policy(3));
    for i in 0..5 {
        handle.record(req(i));
    }
    handle.flush().await.unwrap();
    assert_eq!(sink.calls(), 3);
    let s = handle.stats();
    assert_eq!(
        (s.dropped_retries_exhausted, s.retries, s.written, s.pending),
        (5, 2, 0, 0)
    );
    assert!(s.is_consistent());

    // The sink recovers: later batches are written.
    sink.set_mode(GateMode::Ok);
    for i in 0..5 {
        handle.record(req(i));
    }
    handle.flush().await.unwrap();
    assert_eq!(handle.stats().written, 5);
}

#[tokio::test(start_paused = true)]
async fn overall_deadline_stops_retries_early() {
    let sink = GatedSink::with_mode(GateMode::Unavailable);
    let handle = collector(&sink, test_policy(10).with_deadline(ms(250)));
    let t0 = Instant::now();
    handle.record(req(1));
    handle.flush().await.unwrap();
    // A third attempt would start at 300 ms, past the 250 ms budget.
    assert_eq!(offsets(&sink, t0), [ms(0), ms(100)]);
    assert_eq!(handle.stats().dropped_retries_exhausted, 1);
}

#[tokio::test(start_paused = true)]
async fn non_retryable_errors_are_not_retried() {
    let sink = GatedSink::with_mode(GateMode::Reject);
    let handle = collector(&sink, test_policy(10));
    for i in 0..3 {
        handle.record(req(i));
    }
    handle.flush().await.unwrap();
    assert_eq!(sink.calls(), 1);
    let s = handle.stats();
    assert_eq!((s.dropped_rejected, s.retries, s.pending), (3, 0, 0));
    assert!(handle.last_error().unwrap().contains("rejected"));
}

#[tokio::test(start_paused = true)]
async fn partially_rejected_batch_counts_both_parts() {
    let sink = GatedSink::with_mode(GateMode::PartialReject(2));
    let handle = collector(&sink, test_policy(10));
    for i in 0..5 {
        handle.record(req(i));
    }
    handle.flush().await.unwrap();
    let s = handle.stats();
    assert_eq!((s.written, s.dropped_rejected, s.pending), (3, 2, 0));
    assert_eq!(sink.written(), 3);
    assert!(s.is_consistent());
}

#[tokio::test(start_paused = true)]
async fn hung_write_times_out_and_is_retried() {
    let sink = GatedSink::new();
    sink.script([GateMode::Never]);
    let handle = collector(&sink, test_policy(3));
    let t0 = Instant::now();
    handle.record(req(1));
    handle.flush().await.unwrap();
    // Export timeout (1 s), then the first backoff (100 ms).
    assert_eq!(offsets(&sink, t0), [ms(0), ms(1_100)]);
    let s = handle.stats();
    assert_eq!((s.written, s.retries), (1, 1));
    assert!(handle.last_error().unwrap().contains("timed out"));
}

#[tokio::test(start_paused = true)]
async fn sink_that_always_hangs_ends_as_dropped() {
    let sink = GatedSink::with_mode(GateMode::Never);
    let handle = collector(&sink, RetryPolicy::none());
    handle.record(req(1));
    handle.flush().await.unwrap();
    let s = handle.stats();
    assert_eq!((s.dropped_retries_exhausted, s.pending), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn panicking_sink_does_not_kill_the_worker() {
    let sink = GatedSink::new();
    sink.script([GateMode::Panic]);
    let handle = collector(&sink, test_policy(5));
    for i in 0..5 {
        assert!(handle.record(req(i)));
    }
    handle.flush().await.unwrap();
    let s = handle.stats();
    // The panicking batch is not retried and counts as a sink failure.
    assert_eq!(
        (s.dropped_retries_exhausted, s.retries, s.pending),
        (5, 0, 0)
    );
    assert!(handle.last_error().unwrap().contains("panicked"));

    // The worker is still there.
    for i in 0..5 {
        assert!(handle.record(req(i)));
    }
    handle.flush().await.unwrap();
    assert_eq!(handle.stats().written, 5);
    let stats = handle.shutdown(Duration::from_secs(1)).await.unwrap();
    assert_eq!((stats.received, stats.written, stats.dropped()), (10, 5, 5));
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

/// Every call's attempt and the statuses of its batch, in order; the writes
/// themselves are the wrapped `GatedSink`'s (so it can be scripted to fail).
#[derive(Debug, Clone, Default)]
struct Recording {
    gate: GatedSink,
    seen: Arc<Mutex<Vec<(WriteAttempt, Vec<u16>)>>>,
}

#[async_trait]
impl MetricsSink for Recording {
    async fn write(&self, batch: &Batch, attempt: WriteAttempt) -> Result<WriteSummary, SinkError> {
        let statuses = batch.requests().iter().map(|r| r.status).collect();
        self.seen.lock().unwrap().push((attempt, statuses));
        self.gate.write(batch, attempt).await
    }
}

impl Recording {
    fn seen(&self) -> Vec<(WriteAttempt, Vec<u16>)> {
        self.seen.lock().unwrap().clone()
    }
}

fn recording_collector(sink: &Recording, retry: RetryPolicy) -> CollectorHandle {
    Collector::builder(sink.clone())
        .max_batch(3)
        .linger(Duration::from_secs(3600))
        .export_timeout(Duration::from_secs(1))
        .retry(retry)
        .spawn()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_retry_is_the_same_batch_under_the_same_id() {
    let sink = Recording::default();
    // A refusal, a hung attempt cut by the export timeout, then success.
    sink.gate.script([GateMode::Unavailable, GateMode::Never]);
    let handle = recording_collector(&sink, test_policy(10));
    for i in [7, 3, 5] {
        handle.record(req(i));
    }
    handle.flush().await.unwrap();
    for i in [1, 2, 3] {
        handle.record(req(i));
    }
    handle.flush().await.unwrap();

    let seen = sink.seen();
    assert_eq!(seen.len(), 4, "{seen:?}");
    let first = seen[0].0.batch_id();
    for (n, (attempt, statuses)) in seen[..3].iter().enumerate() {
        assert_eq!(attempt.batch_id(), first, "attempt {n} of the first batch");
        assert_eq!(attempt.number() as usize, n + 1);
        assert_eq!(attempt.is_retry(), n > 0);
        assert_eq!(statuses, &[7, 3, 5], "same records, same order");
    }
    let (next, statuses) = &seen[3];
    assert_ne!(next.batch_id(), first, "a new batch gets a new id");
    assert_eq!((next.number(), statuses.as_slice()), (1, &[1, 2, 3][..]));
    assert_eq!(handle.stats().retries, 2);
}

#[tokio::test(start_paused = true)]
async fn an_id_given_up_on_is_never_passed_again() {
    let sink = Recording::default();
    // Batch 1: retries exhausted. Batch 2: rejected. Batch 3: written.
    sink.gate.script([
        GateMode::Unavailable,
        GateMode::Unavailable,
        GateMode::Reject,
    ]);
    let handle = recording_collector(&sink, test_policy(2));
    for batch in 0..3u16 {
        for i in 0..3 {
            handle.record(req(batch * 10 + i));
        }
        handle.flush().await.unwrap();
    }
    let seen = sink.seen();
    let ids: Vec<BatchId> = seen.iter().map(|(a, _)| a.batch_id()).collect();
    let numbers: Vec<u32> = seen.iter().map(|(a, _)| a.number()).collect();
    assert_eq!(numbers, [1, 2, 1, 1], "{seen:?}");
    assert_eq!(ids[0], ids[1]);
    assert!(ids[1] != ids[2] && ids[2] != ids[3] && ids[1] != ids[3]);
    let s = handle.stats();
    assert_eq!(
        (s.dropped_retries_exhausted, s.dropped_rejected, s.written),
        (3, 3, 3)
    );
}
