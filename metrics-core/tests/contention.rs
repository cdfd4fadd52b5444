//! Many more producer threads than queue shards, a tiny queue and a slow
//! sink: producers collide on shards, spill into other shards, find every
//! shard full, and race the shutdown. Every record must still be counted
//! exactly once and every accepted one written exactly once.

mod support;

use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use metrics_core::test_util::{GateMode, GatedSink};
use metrics_core::{Collector, Method, RequestRecord, Route};

/// Far above the shard count of any machine this runs on (at most 64
/// shards, 2 per core), so threads share shards.
const PRODUCERS: usize = 24;
const PER_PRODUCER: u64 = 2_000;

/// A record that says who sent it: thread in the status, sequence number
/// in the latency.
fn tagged(thread: usize, seq: u64) -> RequestRecord {
    RequestRecord::new(
        std::time::SystemTime::UNIX_EPOCH,
        Route::from_static("/t"),
        Method::POST,
        thread as u16,
        Duration::from_micros(seq),
    )
}

async fn contend() {
    let sink = GatedSink::with_mode(GateMode::Slow(Duration::from_micros(300)));
    let handle = Collector::builder(sink.clone())
        .queue_capacity(97)
        .max_batch(16)
        .linger(Duration::from_millis(1))
        .spawn()
        .unwrap();

    let start = Arc::new(Barrier::new(PRODUCERS));
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|t| {
            let handle = handle.clone();
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                let _ = start.wait();
                let mut accepted = Vec::new();
                for seq in 0..PER_PRODUCER {
                    if handle.record(tagged(t, seq)) {
                        accepted.push(seq);
                    }
                    if seq % 64 == 0 {
                        std::thread::yield_now();
                    }
                }
                accepted
            })
        })
        .collect();
    let accepted: Vec<Vec<u64>> = tokio::task::spawn_blocking(move || {
        producers.into_iter().map(|p| p.join().unwrap()).collect()
    })
    .await
    .unwrap();
    let stats = handle.shutdown(Duration::from_secs(60)).await.unwrap();

    let total_accepted: u64 = accepted.iter().map(|a| a.len() as u64).sum();
    assert_eq!(stats.received, PRODUCERS as u64 * PER_PRODUCER, "{stats:?}");
    assert_eq!(stats.pending, 0, "{stats:?}");
    assert!(stats.is_consistent(), "{stats:?}");
    assert!(
        stats.dropped_queue_full > 0,
        "the tiny queue overflowed: {stats:?}"
    );
    assert_eq!(
        total_accepted,
        stats.received - stats.dropped_queue_full - stats.dropped_closed
    );
    assert_eq!(stats.written, total_accepted, "{stats:?}");

    // Exactly the accepted records reached the sink, each once.
    let snap = sink.memory().snapshot();
    let seen: Vec<(u16, u64)> = snap
        .requests()
        .iter()
        .map(|r| (r.status, (r.response_time_ms * 1_000.0).round() as u64))
        .collect();
    let unique: HashSet<(u16, u64)> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "a record was written twice");
    let expected: HashSet<(u16, u64)> = accepted
        .iter()
        .enumerate()
        .flat_map(|(t, seqs)| seqs.iter().map(move |s| (t as u16, *s)))
        .collect();
    assert_eq!(unique, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_is_counted_once_under_contention_multi_thread() {
    contend().await;
}

#[tokio::test(flavor = "current_thread")]
async fn every_record_is_counted_once_under_contention_current_thread() {
    contend().await;
}
