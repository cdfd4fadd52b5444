//! The accounting invariant `received = written + dropped + pending` under
//! concurrent producers, a misbehaving sink and a shutdown racing the
//! producers, on both runtime flavours; with heavy usage events among the
//! records, the bytes held never pass the memory budget.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use metrics_core::test_util::{GateMode, GatedSink};
use metrics_core::{Collector, RetryPolicy, UsageEvent, UserId};
use support::req;

const PRODUCERS: usize = 4;
/// Sink calls to wait for before shutting down (so every mode has been hit).
const CALLS_BEFORE_SHUTDOWN: u64 = 120;
/// Small enough for heavy events to reach it while the sink misbehaves.
const MEMORY_BUDGET: usize = 512 * 1024;

/// A usage event with 2 KiB of metadata.
fn heavy(i: u16) -> UsageEvent {
    UsageEvent::new(
        "page_view",
        UserId::new("ada"),
        std::time::SystemTime::UNIX_EPOCH,
    )
    .with_element_id(Some(i.to_string()))
    .with_metadata(Some(serde_json::json!({ "note": "x".repeat(2048) })))
}

async fn stress() {
    let sink = GatedSink::new();
    // A sink that fails in every way, over and over; panics are rare because
    // each prints a message.
    let cycle = [
        GateMode::Ok,
        GateMode::Unavailable,
        GateMode::PartialReject(3),
        GateMode::Ok,
        GateMode::Reject,
        GateMode::Slow(Duration::from_micros(200)),
        GateMode::Unavailable,
        GateMode::Ok,
    ];
    for _ in 0..5 {
        sink.script(cycle);
    }
    sink.script([GateMode::Panic]);
    for _ in 0..100 {
        sink.script(cycle);
    }

    let handle = Collector::builder(sink.clone())
        .queue_capacity(2_000)
        .memory_budget(MEMORY_BUDGET)
        .max_batch(256)
        .linger(Duration::from_millis(2))
        .export_timeout(Duration::from_millis(50))
        .retry(
            RetryPolicy::default()
                .with_max_attempts(3)
                .with_initial(Duration::from_micros(100))
                .with_max(Duration::from_millis(1))
                .with_jitter(0.5),
        )
        .spawn()
        .unwrap();

    let stop_checking = Arc::new(AtomicBool::new(false));
    let checker = {
        let handle = handle.clone();
        let stop = Arc::clone(&stop_checking);
        std::thread::spawn(move || {
            let mut samples = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let s = handle.stats();
                // A busy snapshot may miss a record in transit, never count
                // one twice.
                assert!(
                    s.received >= s.written + s.dropped() + s.pending,
                    "snapshot over-counts: {s:?}"
                );
                // Each shard's charge stays within its share, so any sum of
                // them read one after another does too.
                assert!(
                    s.pending_bytes <= MEMORY_BUDGET as u64,
                    "over the budget: {s:?}"
                );
                samples += 1;
                // Sampling rate, not a wait for behaviour: leave CPU to the
                // producers and the worker on this 2-core box.
                std::thread::sleep(Duration::from_micros(100));
            }
            samples
        })
    };

    let stop_producing = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|_| {
            let handle = handle.clone();
            let stop = Arc::clone(&stop_producing);
            std::thread::spawn(move || {
                let (mut attempted, mut queued) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    for i in 0..256u16 {
                        attempted += 1;
                        // One heavy event in 16 records.
                        let accepted = if i % 16 == 0 {
                            handle.record(heavy(i))
                        } else {
                            handle.record(req(i))
                        };
                        if accepted {
                            queued += 1;
                        }
                    }
                    std::thread::yield_now();
                }
                (attempted, queued)
            })
        })
        .collect();

    // Let the sink go through every mode, then shut down while the producers
    // keep recording, so records also race the closing of intake.
    let wait = async {
        while sink.calls() < CALLS_BEFORE_SHUTDOWN {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .expect("the worker made progress");
    let final_stats = handle
        .shutdown(Duration::from_secs(30))
        .await
        .expect("drained within the deadline");
    let closed = async {
        while handle.stats().dropped_closed == 0 {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), closed)
        .await
        .expect("producers hit the closed collector");
    stop_producing.store(true, Ordering::Relaxed);
    let (attempted, queued) = producers
        .into_iter()
        .map(|p| p.join().unwrap())
        .fold((0, 0), |(a, q), (pa, pq)| (a + pa, q + pq));
    stop_checking.store(true, Ordering::Relaxed);
    assert!(checker.join().unwrap() > 0);

    assert_eq!(final_stats.dropped_shutdown, 0);
    let s = handle.stats();
    assert_eq!(s.received, attempted, "{s:?}");
    assert_eq!((s.pending, s.pending_bytes), (0, 0), "{s:?}");
    assert_eq!(s.received, s.written + s.dropped(), "{s:?}");
    // Every record `record()` accepted was resolved by the worker.
    assert_eq!(
        queued,
        s.received - s.dropped_queue_full - s.dropped_memory_budget - s.dropped_closed
    );
    // What the collector calls written is what the sink stored.
    assert_eq!(s.written, sink.written());
    assert!(
        s.dropped_rejected > 0 && s.retries > 0 && s.dropped_retries_exhausted > 0,
        "every failure mode was exercised: {s:?}"
    );
    assert_eq!(s.batches + s.retries, sink.calls());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant_holds_under_stress_multi_thread() {
    stress().await;
}

#[tokio::test(flavor = "current_thread")]
async fn invariant_holds_under_stress_current_thread() {
    stress().await;
}
