//! Cost of `CollectorHandle::record()` on the request path, from 1 and from 2
//! producer threads, against baselines measured in the same run:
//!
//! - `try_send_*`: a bare `try_send` into a tokio mpsc channel of the same
//!   capacity, drained by a task parked on `recv_many` (the naive collector,
//!   woken for every record while it keeps up);
//! - `atomic_*`: one shared atomic increment (the floor for "count the record").
//!
//! Both the collector's worker and the baseline drainer are wrapped in a
//! poll counter, so the run also reports how often each consumer was woken
//! per 1,000 records (the collector should not be woken per record).
//!
//! Prints `RESULT collector_record variant=<v> ns_per_record=<median>
//! ratio_to_baseline=<x>` lines at the end (baseline = `try_send` with the
//! same number of producer threads).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use metrics_core::{
    Batch, Collector, CollectorHandle, Method, MetricsSink, Record, RequestRecord, Route,
    SinkError, WriteSummary, async_trait,
};

const QUEUE_CAPACITY: usize = 100_000;

/// A sink that drops every batch (measures the collector, not storage).
#[derive(Debug)]
struct DiscardSink;

#[async_trait]
impl MetricsSink for DiscardSink {
    async fn write(&self, _batch: &Batch) -> Result<WriteSummary, SinkError> {
        Ok(WriteSummary::all_written())
    }
}

/// Counts how often the wrapped consumer future is polled (= woken).
struct PollCounter<F> {
    inner: Pin<Box<F>>,
    polls: Arc<AtomicU64>,
}

impl<F: Future> Future for PollCounter<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _ = self.polls.fetch_add(1, Ordering::Relaxed);
        self.inner.as_mut().poll(cx)
    }
}

fn record() -> RequestRecord {
    RequestRecord::new(
        SystemTime::now(),
        Route::from_static("/users/{id}"),
        Method::GET,
        200,
        Duration::from_micros(750),
    )
}

/// Runs `op` `iters` times on each of `threads` threads started together;
/// returns the mean per-thread elapsed time.
fn run_threads(threads: usize, iters: u64, op: &(dyn Fn() + Sync)) -> Duration {
    let barrier = Barrier::new(threads);
    let total: Duration = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        op();
                    }
                    start.elapsed()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    total / threads as u32
}

/// Per-sample ns/record of every variant; the last `SAMPLES` entries are
/// criterion's measurement samples (earlier ones are warm-up).
type Samples = Arc<Mutex<Vec<(String, f64)>>>;

const SAMPLES: usize = 20;

struct Setup {
    rt: tokio::runtime::Runtime,
    handle: CollectorHandle,
    worker_polls: Arc<AtomicU64>,
    chan: tokio::sync::mpsc::Sender<Record>,
    chan_polls: Arc<AtomicU64>,
    chan_received: Arc<AtomicU64>,
    counter: AtomicU64,
}

fn setup() -> Setup {
    // One runtime thread for the consumers, as a web app's runtime would run
    // the worker next to its handlers.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (handle, worker) = Collector::builder(DiscardSink)
        .queue_capacity(QUEUE_CAPACITY)
        .build()
        .unwrap();
    let worker_polls = Arc::new(AtomicU64::new(0));
    drop(rt.spawn(PollCounter {
        inner: Box::pin(worker),
        polls: Arc::clone(&worker_polls),
    }));

    let (chan, mut rx) = tokio::sync::mpsc::channel::<Record>(QUEUE_CAPACITY);
    let chan_polls = Arc::new(AtomicU64::new(0));
    let chan_received = Arc::new(AtomicU64::new(0));
    let received = Arc::clone(&chan_received);
    let drain = async move {
        let mut buf = Vec::with_capacity(1_000);
        while rx.recv_many(&mut buf, 1_000).await > 0 {
            let _ = received.fetch_add(buf.len() as u64, Ordering::Relaxed);
            buf.clear();
        }
    };
    drop(rt.spawn(PollCounter {
        inner: Box::pin(drain),
        polls: Arc::clone(&chan_polls),
    }));
    Setup {
        rt,
        handle,
        worker_polls,
        chan,
        chan_polls,
        chan_received,
        counter: AtomicU64::new(0),
    }
}

fn bench(c: &mut Criterion, env: &Setup, samples: &Samples) {
    let mut group = c.benchmark_group("collector_record");
    group
        .sample_size(SAMPLES)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    let rec = record();

    for threads in [1usize, 2] {
        let variants: [(&str, &(dyn Fn() + Sync)); 3] = [
            ("atomic", &|| {
                let _ = std::hint::black_box(env.counter.fetch_add(1, Ordering::Relaxed));
            }),
            ("try_send", &|| {
                let _ = std::hint::black_box(env.chan.try_send(Record::from(rec.clone())));
            }),
            ("record", &|| {
                let _ = std::hint::black_box(env.handle.record(rec.clone()));
            }),
        ];
        for (name, op) in variants {
            let id = format!("{name}_{threads}t");
            let samples = Arc::clone(samples);
            group.bench_function(&id, |b| {
                b.iter_custom(|iters| {
                    let d = run_threads(threads, iters, op);
                    let ns = d.as_nanos() as f64 / iters as f64;
                    samples.lock().unwrap().push((id.clone(), ns));
                    d
                });
            });
        }
    }
    group.finish();
}

fn median_of_last(samples: &[(String, f64)], id: &str) -> f64 {
    let mut v: Vec<f64> = samples
        .iter()
        .filter(|(i, _)| i == id)
        .map(|(_, ns)| *ns)
        .collect();
    let keep = v.len().min(SAMPLES);
    let mut v = v.split_off(v.len() - keep);
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn collector_record(c: &mut Criterion) {
    let env = setup();
    let samples: Samples = Arc::default();
    bench(c, &env, &samples);

    // Let both consumers catch up before reading their counters.
    env.rt.block_on(async {
        env.handle.flush().await.unwrap();
    });
    let stats = env.handle.stats();
    let samples = samples.lock().unwrap();
    for threads in [1, 2] {
        let base = median_of_last(&samples, &format!("try_send_{threads}t"));
        for name in ["atomic", "try_send", "record"] {
            let id = format!("{name}_{threads}t");
            let ns = median_of_last(&samples, &id);
            println!(
                "RESULT collector_record variant={id} ns_per_record={ns:.1} ratio_to_baseline={:.2}",
                ns / base
            );
        }
    }
    let per_k = |polls: u64, records: u64| polls as f64 * 1_000.0 / records.max(1) as f64;
    let chan_received = env.chan_received.load(Ordering::Relaxed);
    println!(
        "INFO collector_record consumer=collector_worker records={} polls_per_1k_records={:.2} batches={} dropped_queue_full={}",
        stats.written,
        per_k(env.worker_polls.load(Ordering::Relaxed), stats.written),
        stats.batches,
        stats.dropped_queue_full,
    );
    println!(
        "INFO collector_record consumer=naive_recv_many records={} polls_per_1k_records={:.2}",
        chan_received,
        per_k(env.chan_polls.load(Ordering::Relaxed), chan_received),
    );
    drop(samples);
    env.rt.block_on(async {
        let _ = env.handle.shutdown(Duration::from_secs(5)).await;
    });
}

criterion_group!(benches, collector_record);
criterion_main!(benches);
