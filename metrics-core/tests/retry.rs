//! Failed writes: backoff schedule, giving up, non-retryable errors, partial
//! rejection, timeouts and panicking sinks; the retry contract (a retry is the
//! same batch under the same id, a new batch gets a new id); one warning for
//! the first batch given up and for the first rejected records. The default
//! policy retries past any outage (issue 13 F8) and shutdown still ends by
//! its deadline; the export timeout is kept above the sink's own bound on a
//! write (F4).

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics_core::test_util::{GateMode, GatedSink};
use metrics_core::{
    Batch, BatchId, Collector, CollectorHandle, MetricsSink, RetryPolicy, ShutdownError, SinkError,
    WriteAttempt, WriteSummary, async_trait,
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

// ===== the default policy: retry while the collector's bounds hold (F8) =====

#[tokio::test(start_paused = true)]
async fn the_default_policy_retries_past_the_old_deadline_then_writes() {
    // The database is down for ten minutes, five times the old 120 s
    // deadline; the batch is retried with backoff capped at 30 s, then
    // written once, under its one id.
    let sink = Recording::default();
    sink.gate.set_mode(GateMode::Unavailable);
    let handle = Collector::builder(sink.clone())
        .max_batch(3)
        .linger(Duration::from_secs(3600))
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    for i in 0..3 {
        assert!(handle.record(req(i)));
    }
    tokio::time::sleep(Duration::from_secs(600)).await;
    // Records keep queueing while the batch is retried.
    for i in 3..5 {
        assert!(handle.record(req(i)));
    }
    let s = handle.stats();
    assert_eq!((s.written, s.dropped(), s.pending), (0, 0, 5), "{s:?}");
    let calls = sink.gate.call_log();
    assert!(calls.last().unwrap().at - t0 > Duration::from_secs(120));
    // 1, 2, 4, 8, 16 s (each shortened by up to 10% jitter), then ≤ 30 s.
    let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(
        gaps.iter().all(|g| *g <= Duration::from_secs(30)),
        "{gaps:?}"
    );
    assert!(
        gaps[5..].iter().all(|g| *g >= Duration::from_secs(27)),
        "{gaps:?}"
    );
    assert!(calls.len() >= 20, "{}", calls.len());

    sink.gate.set_mode(GateMode::Ok);
    handle.flush().await.unwrap();
    let s = handle.stats();
    assert_eq!((s.written, s.dropped(), s.pending), (5, 0, 0), "{s:?}");
    assert_eq!(
        s.retries,
        calls.len() as u64,
        "every failed call was retried"
    );
    let seen = sink.seen();
    let first = seen[0].0.batch_id();
    let of_first: Vec<_> = seen.iter().filter(|(a, _)| a.batch_id() == first).collect();
    assert_eq!(of_first.len(), calls.len() + 1, "one batch id throughout");
    assert_eq!(sink.gate.written(), 5, "written once");
}

#[tokio::test(start_paused = true)]
async fn shutdown_during_endless_retries_ends_by_its_deadline_and_counts() {
    let sink = GatedSink::with_mode(GateMode::Unavailable);
    let handle = Collector::builder(sink.clone())
        .max_batch(10)
        .linger(Duration::from_millis(100))
        .spawn()
        .unwrap();
    for i in 0..10 {
        handle.record(req(i));
    }
    tokio::time::sleep(Duration::from_secs(300)).await;
    for i in 10..25 {
        assert!(handle.record(req(i)), "queued while a batch is retried");
    }
    let calls_before = sink.calls();
    let t0 = Instant::now();
    let err = handle.shutdown(Duration::from_secs(5)).await.unwrap_err();
    let elapsed = Instant::now() - t0;
    // The worker answered at the deadline (not the handle's grace after it).
    assert!(
        elapsed >= Duration::from_secs(5) && elapsed < Duration::from_secs(6),
        "{elapsed:?}"
    );
    let ShutdownError::DeadlineExceeded(stats) = err else {
        panic!("expected DeadlineExceeded, got {err:?}");
    };
    assert_eq!(
        (
            stats.received,
            stats.written,
            stats.dropped_shutdown,
            stats.pending
        ),
        (25, 0, 25, 0),
        "{stats:?}"
    );
    assert_eq!(stats.dropped_retries_exhausted, 0);
    assert!(stats.is_consistent(), "{stats:?}");
    assert!(sink.calls() >= calls_before);
}

#[tokio::test(start_paused = true)]
async fn a_bounded_policy_still_gives_up_as_the_old_default_did() {
    let sink = GatedSink::with_mode(GateMode::Unavailable);
    let handle = collector(
        &sink,
        RetryPolicy::bounded(8, Duration::from_secs(120)).with_jitter(0.0),
    );
    let t0 = Instant::now();
    handle.record(req(1));
    handle.flush().await.unwrap();
    let s = |n| Duration::from_secs(n);
    // 8 attempts: 1, 2, 4, 8, 16, 30, 30 s apart; the 8th at 91 s.
    assert_eq!(
        offsets(&sink, t0),
        [s(0), s(1), s(3), s(7), s(15), s(31), s(61), s(91)]
    );
    let st = handle.stats();
    assert_eq!((st.dropped_retries_exhausted, st.retries), (1, 7));
}

// ===== the export timeout stays above the sink's own bound (F4) =====

/// A sink that bounds its writes (as `PgSink` does) and is slow: each write
/// takes `GatedSink`'s time, below the bound it declares.
#[derive(Debug, Clone)]
struct Bounded {
    gate: GatedSink,
    bound: Option<Duration>,
}

#[async_trait]
impl MetricsSink for Bounded {
    async fn write(&self, batch: &Batch, attempt: WriteAttempt) -> Result<WriteSummary, SinkError> {
        self.gate.write(batch, attempt).await
    }

    fn max_write_duration(&self) -> Option<Duration> {
        self.bound
    }
}

fn slow_bounded_collector(bound: Option<Duration>) -> (GatedSink, CollectorHandle) {
    // Writes take 15 s: more than the 10 s export timeout, less than the
    // sink's declared 20 s.
    let gate = GatedSink::new();
    gate.script([GateMode::Slow(Duration::from_secs(15))]);
    let handle = Collector::builder(Bounded {
        gate: gate.clone(),
        bound,
    })
    .max_batch(3)
    .linger(Duration::from_secs(3600))
    .export_timeout(Duration::from_secs(10))
    .retry(test_policy(5))
    .spawn()
    .unwrap();
    (gate, handle)
}

#[tokio::test(start_paused = true)]
async fn a_write_within_the_sinks_bound_is_not_cut_short() {
    let (gate, handle) = slow_bounded_collector(Some(Duration::from_secs(20)));
    for i in 0..3 {
        handle.record(req(i));
    }
    handle.flush().await.unwrap();
    let s = handle.stats();
    assert_eq!(
        (s.written, s.retries, s.batches, s.dropped()),
        (3, 0, 1, 0),
        "{s:?}"
    );
    assert_eq!((gate.calls(), gate.written()), (1, 3), "written once");
    assert_eq!(handle.last_error(), None);
}

#[tokio::test(start_paused = true)]
async fn without_a_declared_bound_the_export_timeout_applies() {
    // The same slow write from a sink that declares nothing is cut at 10 s
    // and retried (the case the rule above avoids for bounded sinks).
    let (gate, handle) = slow_bounded_collector(None);
    let t0 = Instant::now();
    for i in 0..3 {
        handle.record(req(i));
    }
    handle.flush().await.unwrap();
    assert_eq!(offsets(&gate, t0), [ms(0), ms(10_100)]);
    let s = handle.stats();
    assert_eq!((s.written, s.retries), (3, 1), "{s:?}");
    assert!(handle.last_error().unwrap().contains("timed out"));
}
