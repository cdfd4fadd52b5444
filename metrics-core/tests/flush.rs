//! When batches are written: by size, by linger time, on `flush()`.

mod support;

use std::time::Duration;

use metrics_core::Collector;
use metrics_core::test_util::GatedSink;
use support::{ms, req, settle};
use tokio::time::Instant;

fn lens(sink: &GatedSink) -> Vec<usize> {
    sink.call_log().iter().map(|c| c.len).collect()
}

#[tokio::test(start_paused = true)]
async fn full_batches_are_written_without_waiting_for_linger() {
    let sink = GatedSink::new();
    let handle = Collector::builder(sink.clone())
        .max_batch(10)
        .linger(Duration::from_secs(3600))
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    for i in 0..25 {
        assert!(handle.record(req(i)));
    }
    settle().await;
    assert_eq!(lens(&sink), [10, 10]);
    assert!(sink.call_log().iter().all(|c| c.at == t0));
    let s = handle.stats();
    assert_eq!((s.written, s.pending, s.batches), (20, 5, 2));
    assert!(s.is_consistent());
}

#[tokio::test(start_paused = true)]
async fn producer_nudges_a_lingering_worker_when_the_batch_fills() {
    let sink = GatedSink::new();
    let handle = Collector::builder(sink.clone())
        .max_batch(10)
        .linger(Duration::from_secs(3600))
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    // The first record wakes the idle worker, which then lingers (it is no
    // longer parked on the queue).
    handle.record(req(0));
    settle().await;
    for i in 1..9 {
        handle.record(req(i));
    }
    settle().await;
    assert_eq!(sink.calls(), 0, "9 of 10 records must keep lingering");
    handle.record(req(9));
    settle().await;
    assert_eq!(lens(&sink), [10]);
    assert_eq!(sink.call_log()[0].at, t0);
}

#[tokio::test(start_paused = true)]
async fn partial_batch_is_written_when_linger_expires() {
    let sink = GatedSink::new();
    let handle = Collector::builder(sink.clone())
        .max_batch(100)
        .linger(Duration::from_secs(1))
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    for i in 0..3 {
        handle.record(req(i));
    }
    settle().await;
    tokio::time::advance(ms(999)).await;
    settle().await;
    assert_eq!(sink.calls(), 0, "written before the linger time");
    tokio::time::advance(ms(1)).await;
    settle().await;
    assert_eq!(lens(&sink), [3]);
    assert_eq!(sink.call_log()[0].at, t0 + ms(1_000));

    // The next batch's linger is armed by its own first record.
    tokio::time::advance(Duration::from_secs(5)).await;
    let t1 = Instant::now();
    handle.record(req(3));
    settle().await;
    tokio::time::advance(ms(500)).await;
    handle.record(req(4));
    settle().await;
    tokio::time::advance(ms(499)).await;
    settle().await;
    assert_eq!(sink.calls(), 1);
    tokio::time::advance(ms(1)).await;
    settle().await;
    assert_eq!(lens(&sink), [3, 2]);
    assert_eq!(sink.call_log()[1].at, t1 + ms(1_000));
}

#[tokio::test(start_paused = true)]
async fn flush_writes_a_partial_batch_at_once() {
    let sink = GatedSink::new();
    let handle = Collector::builder(sink.clone())
        .max_batch(100)
        .linger(Duration::from_secs(3600))
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    for i in 0..7 {
        handle.record(req(i));
    }
    handle.flush().await.unwrap();
    assert_eq!(Instant::now(), t0, "flush must not wait for the linger");
    let statuses: Vec<u16> = sink
        .memory()
        .snapshot()
        .requests()
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, (0..7).collect::<Vec<_>>());
    let s = handle.stats();
    assert_eq!((s.received, s.written, s.pending), (7, 7, 0));
    // Nothing queued: flush returns at once.
    handle.flush().await.unwrap();
    assert_eq!(sink.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn flush_covers_everything_queued_beyond_one_batch() {
    let sink = GatedSink::new();
    let handle = Collector::builder(sink.clone())
        .max_batch(4)
        .queue_capacity(100)
        .linger(Duration::from_secs(3600))
        .spawn()
        .unwrap();
    for i in 0..10 {
        handle.record(req(i));
    }
    handle.flush().await.unwrap();
    assert_eq!(lens(&sink), [4, 4, 2]);
    assert_eq!(handle.stats().written, 10);
}
