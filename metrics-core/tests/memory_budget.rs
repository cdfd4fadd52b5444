//! The memory budget (issue 13 F2): bytes, not records. Heavy usage events are
//! refused once the bytes the collector holds (queued records and the batch
//! being retried) would pass the budget, each counted as
//! `dropped_memory_budget`, never waiting; the room comes back once the sink
//! catches up; light records under the same budget are refused by the record
//! cap first.

mod support;

use std::time::{Duration, SystemTime};

use metrics_core::test_util::{GateMode, GatedSink};
use metrics_core::{Collector, CollectorHandle, Record, UsageEvent, UserId};
use support::{capture, req, settle};

/// A usage event with `kib` KiB of metadata (16 KiB is the ingest API's
/// limit), told apart by its element id.
fn heavy(i: u32, kib: usize) -> UsageEvent {
    UsageEvent::new(
        "page_view",
        UserId::new("ada@example.com"),
        SystemTime::UNIX_EPOCH,
    )
    .with_element_id(Some(format!("el-{i:06}")))
    .with_metadata(Some(serde_json::json!({
        "note": "x".repeat(kib * 1024),
        "tags": ["a", "b", "c"],
    })))
}

/// The size of every `heavy(_, kib)` event (same lengths, same estimate).
fn heavy_size(kib: usize) -> usize {
    Record::from(heavy(0, kib)).approx_size()
}

/// Room for exactly `records` records of `size` bytes whatever the shard
/// count: the budget is split evenly over the shards (a power of two, at
/// most 64), so a multiple of 64 records divides evenly.
fn budget_for(records: usize, size: usize) -> usize {
    assert_eq!(records % 64, 0);
    records * size
}

fn collector(sink: &GatedSink, budget: usize) -> CollectorHandle {
    Collector::builder(sink.clone())
        .queue_capacity(100_000)
        .memory_budget(budget)
        .max_batch(16)
        .linger(Duration::from_millis(100))
        .spawn()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn heavy_events_beyond_the_budget_are_dropped_exactly_and_counted() {
    let size = heavy_size(16);
    assert!(size > 16 * 1024, "{size}");
    let sink = GatedSink::with_mode(GateMode::Unavailable);
    let handle = collector(&sink, budget_for(128, size));

    // The database is down: the worker takes a batch and retries it.
    let accepted = (0..300).filter(|i| handle.record(heavy(*i, 16))).count();
    assert_eq!(accepted, 128);
    let s = handle.stats();
    assert_eq!(
        (
            s.received,
            s.dropped_memory_budget,
            s.dropped_queue_full,
            s.pending
        ),
        (300, 172, 0, 128),
        "{s:?}"
    );
    assert_eq!(s.pending_bytes, (128 * size) as u64);
    assert!(s.is_consistent(), "{s:?}");

    // The worker has a batch in hand and is retrying it: those records are
    // out of the queue but still held, so the budget is still used up.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(sink.calls() >= 2, "retrying: {}", sink.calls());
    let s = handle.stats();
    assert_eq!((s.pending, s.pending_bytes), (128, (128 * size) as u64));
    assert!(!handle.record(heavy(1_000, 16)));
    assert_eq!(handle.stats().dropped_memory_budget, 173);

    // The database is back: everything held is written once, the bytes are
    // given back, and records are accepted again.
    sink.set_mode(GateMode::Ok);
    handle.flush().await.unwrap();
    let s = handle.stats();
    assert_eq!(
        (s.written, s.pending, s.pending_bytes),
        (128, 0, 0),
        "{s:?}"
    );
    assert_eq!(sink.written(), 128);
    let stored: std::collections::BTreeSet<_> = sink
        .memory()
        .snapshot()
        .usage_events()
        .iter()
        .map(|e| e.element_id.clone().unwrap())
        .collect();
    assert_eq!(stored.len(), 128, "each stored once");
    assert!(handle.record(heavy(2_000, 16)));

    let stats = handle.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        (stats.received, stats.written, stats.dropped_memory_budget),
        (302, 129, 173)
    );
    assert_eq!((stats.pending, stats.pending_bytes), (0, 0));
    assert!(stats.is_consistent(), "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn the_batch_being_written_counts_against_the_budget() {
    // A slow sink (no failure): while it writes a batch of 64, the queue may
    // take only what the budget has left.
    let size = heavy_size(4);
    let sink = GatedSink::with_mode(GateMode::Slow(Duration::from_secs(10)));
    let handle = Collector::builder(sink.clone())
        .memory_budget(budget_for(128, size))
        .max_batch(64)
        .linger(Duration::ZERO)
        .spawn()
        .unwrap();
    for i in 0..64 {
        assert!(handle.record(heavy(i, 4)));
    }
    settle().await;
    assert_eq!(sink.calls(), 1, "the first batch is being written");
    let accepted = (64..300).filter(|i| handle.record(heavy(*i, 4))).count();
    assert_eq!(accepted, 64, "64 in the batch, 64 queued");
    let stats = handle.shutdown(Duration::from_secs(60)).await.unwrap();
    assert_eq!(
        (stats.written, stats.dropped_memory_budget, stats.dropped()),
        (128, 172, 172)
    );
    assert!(stats.is_consistent(), "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn light_records_hit_the_record_cap_not_the_budget() {
    // The default budget (64 MiB) holds far more than 1,000 request records.
    let handle = Collector::builder(GatedSink::with_mode(GateMode::Never))
        .queue_capacity(1_000)
        .spawn()
        .unwrap();
    let accepted = (0..1_500u16).filter(|i| handle.record(req(*i))).count();
    let s = handle.stats();
    assert_eq!(accepted, 1_000);
    assert_eq!((s.dropped_queue_full, s.dropped_memory_budget), (500, 0));
    assert!(s.pending_bytes >= 1_000 * std::mem::size_of::<Record>() as u64);
}

#[tokio::test(start_paused = true)]
async fn budget_drops_warn_once() {
    let (captured, _guard) = capture();
    let size = heavy_size(1);
    let sink = GatedSink::with_mode(GateMode::Never);
    let handle = collector(&sink, budget_for(64, size));
    for i in 0..200 {
        let _ = handle.record(heavy(i, 1));
    }
    assert_eq!(handle.stats().dropped_memory_budget, 136);
    let w = captured.warnings("memory budget");
    assert_eq!(w.len(), 1, "one warning for 136 drops: {w:?}");
    // The hung write is cut by the deadline.
    let _ = handle.shutdown(Duration::from_secs(1)).await.unwrap_err();
    // The final totals line names the reason.
    let totals = captured.warnings("totals by reason");
    assert!(
        totals
            .iter()
            .any(|t| t.contains("dropped_memory_budget=136")),
        "{totals:?}"
    );
}
