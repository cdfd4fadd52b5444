//! Cost of `CollectorHandle::record()` on the request path, from 1 and from 2
//! producer threads, against baselines measured in the same run:
//!
//! - `old_record_*`: a replica of the collector's previous record path (the
//!   baseline of the `RESULT` ratios): two counter increments (`received`,
//!   `pending`), a `try_send` into a bounded tokio mpsc channel and the "batch
//!   is full" nudge, with a consumer that works like the previous worker
//!   (parked on the channel only while idle, lingering otherwise, nudged once
//!   per full batch);
//! - `try_send_*`: a bare `try_send` into a tokio mpsc channel of the same
//!   capacity, drained by a task parked on `recv_many` (the naive collector,
//!   woken for every record while it keeps up);
//! - `atomic_*`: one shared atomic increment (the floor for "count the record").
//!
//! Every consumer is wrapped in a poll counter, so the run also reports how
//! often each one was woken per 1,000 records (the collector must not be woken
//! per record).
//!
//! Method: the producer threads live for the whole run (as a server's worker
//! threads do). Each round runs every variant for `CHUNK` records per thread,
//! in an order that rotates every round, so slow phases of a busy machine hit
//! every variant alike; between chunks, outside the timed region, it waits
//! until the consumers have caught up, so every chunk measures the normal path
//! (the `dropped` counts printed at the end show it did). Time is the CPU time
//! of each producer thread (`COLLECTOR_RECORD_CLOCK=wall` switches to wall
//! time), averaged over the threads of a chunk; the figure is the median over
//! the rounds. `COLLECTOR_RECORD_ROUNDS` (default 41) sets the rounds;
//! `COLLECTOR_RECORD_THREADS=1` or `=2` runs one thread count only and
//! `COLLECTOR_RECORD_VARIANTS=record,old_record` only those variants (for
//! profiling; ratios then need `old_record` in the list).
//!
//! Prints `RESULT collector_record variant=<v> ns_per_record=<median>
//! ratio_to_baseline=<x>` lines at the end (baseline = `old_record` with the
//! same number of producer threads).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, mpsc as std_mpsc};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use cpu_time::ThreadTime;
use metrics_core::{
    Batch, Collector, CollectorHandle, Method, MetricsSink, Record, RequestRecord, Route,
    SinkError, WriteAttempt, WriteSummary, async_trait,
};
use tokio::sync::{Notify, mpsc};

const QUEUE_CAPACITY: usize = 100_000;
const MAX_BATCH: usize = 1_000;
const LINGER: Duration = Duration::from_secs(1);
/// Records per producer thread per chunk (two threads stay below the queue
/// capacity even if the consumer made no progress during the chunk).
const CHUNK: u64 = 40_000;

/// A sink that drops every batch (measures the collector, not storage).
#[derive(Debug)]
struct DiscardSink;

#[async_trait]
impl MetricsSink for DiscardSink {
    async fn write(
        &self,
        _batch: &Batch,
        _attempt: WriteAttempt,
    ) -> Result<WriteSummary, SinkError> {
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

fn counted<F>(fut: F, polls: &Arc<AtomicU64>) -> PollCounter<F> {
    PollCounter {
        inner: Box::pin(fut),
        polls: Arc::clone(polls),
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

// ===== replica of the previous collector's record path =====

/// Keeps a value on its own cache lines, as the previous collector did.
#[repr(align(128))]
#[derive(Default)]
struct Padded<T>(T);

/// The previous collector's producer counters (one padded block).
#[derive(Default)]
struct OldProducerCounters {
    received: AtomicU64,
    pending: AtomicU64,
    dropped_queue_full: AtomicU64,
}

struct OldDesign {
    tx: mpsc::Sender<Record>,
    counters: Padded<OldProducerCounters>,
    notify: Notify,
    poked: Padded<AtomicBool>,
    written: Padded<AtomicU64>,
}

impl OldDesign {
    /// What `CollectorHandle::record` did before the sharded queue.
    #[inline]
    fn record(&self, rec: RequestRecord) -> bool {
        let c = &self.counters.0;
        let _ = c.received.fetch_add(1, Ordering::Relaxed);
        let pending_before = c.pending.fetch_add(1, Ordering::Release);
        match self.tx.try_send(Record::from(rec)) {
            Ok(()) => {
                if pending_before + 1 >= MAX_BATCH as u64
                    && !self.poked.0.load(Ordering::Relaxed)
                    && !self.poked.0.swap(true, Ordering::SeqCst)
                {
                    self.notify.notify_one();
                }
                true
            }
            Err(_) => {
                let _ = c.pending.fetch_sub(1, Ordering::Relaxed);
                let _ = c.dropped_queue_full.fetch_add(1, Ordering::Release);
                false
            }
        }
    }

    fn pending(&self) -> u64 {
        self.counters.0.pending.load(Ordering::Acquire)
    }
}

/// The previous worker's loop, minus the sink and the control channel.
async fn old_worker(old: Arc<OldDesign>, mut rx: mpsc::Receiver<Record>) {
    let mut batch: Vec<Record> = Vec::with_capacity(MAX_BATCH);
    let mut deadline = tokio::time::Instant::now();
    loop {
        old.poked.0.store(false, Ordering::SeqCst);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(rec) => {
                    if batch.is_empty() {
                        deadline = tokio::time::Instant::now() + LINGER;
                    }
                    batch.push(rec);
                }
                Err(_) => break,
            }
        }
        let due = batch.len() >= MAX_BATCH
            || (!batch.is_empty() && tokio::time::Instant::now() >= deadline);
        if due {
            let n = batch.len() as u64;
            batch.clear();
            let _ = old.counters.0.pending.fetch_sub(n, Ordering::Relaxed);
            let _ = old.written.0.fetch_add(n, Ordering::Release);
            continue;
        }
        if batch.is_empty() {
            match rx.recv().await {
                Some(rec) => {
                    deadline = tokio::time::Instant::now() + LINGER;
                    batch.push(rec);
                }
                None => return,
            }
        } else {
            tokio::select! {
                biased;
                () = old.notify.notified() => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
}

// ===== the run =====

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Atomic,
    TrySend,
    OldRecord,
    Record,
}

impl Variant {
    const ALL: [Self; 4] = [Self::Atomic, Self::TrySend, Self::OldRecord, Self::Record];

    fn name(self) -> &'static str {
        match self {
            Self::Atomic => "atomic",
            Self::TrySend => "try_send",
            Self::OldRecord => "old_record",
            Self::Record => "record",
        }
    }
}

struct Env {
    rt: tokio::runtime::Runtime,
    handle: CollectorHandle,
    worker_polls: Arc<AtomicU64>,
    old: Arc<OldDesign>,
    old_polls: Arc<AtomicU64>,
    chan: mpsc::Sender<Record>,
    chan_polls: Arc<AtomicU64>,
    chan_received: Arc<AtomicU64>,
    counter: Padded<AtomicU64>,
}

fn setup() -> Env {
    // One runtime thread for the consumers, as a web app's runtime would run
    // the worker next to its handlers.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();

    let (handle, worker) = Collector::builder(DiscardSink)
        .queue_capacity(QUEUE_CAPACITY)
        .max_batch(MAX_BATCH)
        .linger(LINGER)
        .build()
        .unwrap();
    let worker_polls = Arc::new(AtomicU64::new(0));
    drop(rt.spawn(counted(worker, &worker_polls)));

    let (old_tx, old_rx) = mpsc::channel(QUEUE_CAPACITY);
    let old = Arc::new(OldDesign {
        tx: old_tx,
        counters: Padded::default(),
        notify: Notify::new(),
        poked: Padded::default(),
        written: Padded::default(),
    });
    let old_polls = Arc::new(AtomicU64::new(0));
    drop(rt.spawn(counted(old_worker(Arc::clone(&old), old_rx), &old_polls)));

    let (chan, mut rx) = mpsc::channel::<Record>(QUEUE_CAPACITY);
    let chan_polls = Arc::new(AtomicU64::new(0));
    let chan_received = Arc::new(AtomicU64::new(0));
    let received = Arc::clone(&chan_received);
    let drain = async move {
        let mut buf = Vec::with_capacity(MAX_BATCH);
        while rx.recv_many(&mut buf, MAX_BATCH).await > 0 {
            let _ = received.fetch_add(buf.len() as u64, Ordering::Relaxed);
            buf.clear();
        }
    };
    drop(rt.spawn(counted(drain, &chan_polls)));
    Env {
        rt,
        handle,
        worker_polls,
        old,
        old_polls,
        chan,
        chan_polls,
        chan_received,
        counter: Padded::default(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Clock {
    ThreadCpu,
    Wall,
}

impl Clock {
    fn from_env() -> Self {
        match std::env::var("COLLECTOR_RECORD_CLOCK").as_deref() {
            Ok("wall") => Self::Wall,
            Ok("cpu") | Err(_) => Self::ThreadCpu,
            Ok(other) => panic!("COLLECTOR_RECORD_CLOCK must be `cpu` or `wall`, not {other:?}"),
        }
    }
}

/// What one producer thread measured over a chunk.
#[derive(Debug, Clone, Copy)]
struct Took {
    cpu: Duration,
    wall: Duration,
}

/// The timed loop of one producer thread.
fn produce(env: &Env, variant: Variant, iters: u64) -> Took {
    let rec = record();
    let cpu = ThreadTime::now();
    let wall = Instant::now();
    match variant {
        Variant::Atomic => {
            for _ in 0..iters {
                let _ = std::hint::black_box(env.counter.0.fetch_add(1, Ordering::Relaxed));
            }
        }
        Variant::TrySend => {
            for _ in 0..iters {
                let _ = std::hint::black_box(env.chan.try_send(Record::from(rec.clone())));
            }
        }
        Variant::OldRecord => {
            for _ in 0..iters {
                let _ = std::hint::black_box(env.old.record(rec.clone()));
            }
        }
        Variant::Record => {
            for _ in 0..iters {
                let _ = std::hint::black_box(env.handle.record(rec.clone()));
            }
        }
    }
    Took {
        cpu: cpu.elapsed(),
        wall: wall.elapsed(),
    }
}

/// Waits (outside the timed region) until every consumer has caught up, so
/// the next chunk starts with empty queues.
fn wait_for_consumers(env: &Env) {
    let backlog = MAX_BATCH as u64;
    let start = Instant::now();
    loop {
        let caught_up = env.handle.stats().pending <= backlog
            && env.old.pending() <= backlog
            && env.chan.capacity() + MAX_BATCH >= QUEUE_CAPACITY;
        if caught_up || start.elapsed() > Duration::from_secs(10) {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

struct Job {
    variant: Variant,
    iters: u64,
    barrier: Arc<Barrier>,
}

/// What to run, from the command line and the environment.
struct Config {
    rounds: usize,
    /// Records per producer thread per chunk.
    chunk: u64,
    clock: Clock,
    variants: Vec<Variant>,
    thread_counts: Vec<usize>,
}

impl Config {
    fn from_env() -> Self {
        // `cargo test --benches` runs this with `--test`: one short round.
        let test_mode = std::env::args().any(|a| a == "--test");
        let rounds: usize = match std::env::var("COLLECTOR_RECORD_ROUNDS") {
            Ok(v) => v.parse().expect("COLLECTOR_RECORD_ROUNDS must be a number"),
            Err(_) if test_mode => 1,
            Err(_) => 41,
        };
        let chunk = if test_mode { 1_000 } else { CHUNK };
        let clock = Clock::from_env();
        let variants: Vec<Variant> = match std::env::var("COLLECTOR_RECORD_VARIANTS") {
            Ok(list) => Variant::ALL
                .into_iter()
                .filter(|v| list.split(',').any(|name| name == v.name()))
                .collect(),
            Err(_) => Variant::ALL.to_vec(),
        };
        let thread_counts: Vec<usize> = match std::env::var("COLLECTOR_RECORD_THREADS") {
            Ok(n) => vec![n.parse().expect("COLLECTOR_RECORD_THREADS must be 1 or 2")],
            Err(_) => vec![1, 2],
        };
        Self {
            rounds,
            chunk,
            clock,
            variants,
            thread_counts,
        }
    }
}

/// The two long-lived producer threads: each runs the jobs sent to it and
/// reports what it measured on the shared `done` channel.
struct Producers {
    workers: Vec<std_mpsc::Sender<Job>>,
    done: std_mpsc::Receiver<Took>,
}

impl Producers {
    fn spawn(env: &Arc<Env>) -> Self {
        let (done_tx, done) = std_mpsc::channel::<Took>();
        let workers = (0..2)
            .map(|_| {
                let (tx, rx) = std_mpsc::channel::<Job>();
                let env = Arc::clone(env);
                let done = done_tx.clone();
                std::thread::spawn(move || {
                    while let Ok(job) = rx.recv() {
                        let _ = job.barrier.wait();
                        let d = produce(&env, job.variant, job.iters);
                        done.send(d).unwrap();
                    }
                });
                tx
            })
            .collect();
        Self { workers, done }
    }

    /// Runs `variant` for `iters` records on `threads` producers at once
    /// and returns what each of them measured.
    fn run(&self, threads: usize, variant: Variant, iters: u64) -> Vec<Took> {
        let barrier = Arc::new(Barrier::new(threads));
        for w in &self.workers[..threads] {
            w.send(Job {
                variant,
                iters,
                barrier: Arc::clone(&barrier),
            })
            .unwrap();
        }
        (0..threads).map(|_| self.done.recv().unwrap()).collect()
    }
}

/// Everything the rounds measured.
struct Measurements {
    /// ns/record per (threads, variant), one entry per round.
    results: Vec<((usize, Variant), Vec<f64>)>,
    /// Per 2-thread chunk: producer CPU time / wall time, summed over both
    /// threads. Close to 1.0 means both really ran at once on the 2 cores;
    /// on a loaded machine they often take turns, and then they do not
    /// contend.
    on_cpu_2t: Vec<f64>,
}

impl Measurements {
    fn new(config: &Config) -> Self {
        let mut results = Vec::new();
        for &threads in &config.thread_counts {
            for &v in &config.variants {
                results.push(((threads, v), Vec::new()));
            }
        }
        Self {
            results,
            on_cpu_2t: Vec::new(),
        }
    }

    /// Adds one chunk's measurements of `variant` on `threads` producers.
    fn add(&mut self, config: &Config, threads: usize, variant: Variant, took: &[Took]) {
        let total: Duration = took
            .iter()
            .map(|t| match config.clock {
                Clock::ThreadCpu => t.cpu,
                Clock::Wall => t.wall,
            })
            .sum();
        if threads == 2 {
            let cpu: Duration = took.iter().map(|t| t.cpu).sum();
            let wall: Duration = took.iter().map(|t| t.wall).sum();
            self.on_cpu_2t.push(cpu.as_secs_f64() / wall.as_secs_f64());
        }
        let ns = total.as_nanos() as f64 / (threads as u64 * config.chunk) as f64;
        let slot = self
            .results
            .iter_mut()
            .find(|(key, _)| *key == (threads, variant))
            .unwrap();
        slot.1.push(ns);
    }

    /// The per-round samples of `variant` on `threads` producers.
    fn of(&self, threads: usize, variant: Variant) -> &[f64] {
        let (_, s) = self
            .results
            .iter()
            .find(|(k, _)| *k == (threads, variant))
            .unwrap();
        s
    }
}

/// Every round runs every variant once per thread count, in an order that
/// rotates every round, each chunk starting with caught-up consumers.
fn run_rounds(env: &Env, producers: &Producers, config: &Config) -> Measurements {
    let mut measured = Measurements::new(config);
    let variants = &config.variants;
    for round in 0..config.rounds {
        for &threads in &config.thread_counts {
            for k in 0..variants.len() {
                let variant = variants[(k + round) % variants.len()];
                wait_for_consumers(env);
                let took = producers.run(threads, variant, config.chunk);
                measured.add(config, threads, variant, &took);
            }
        }
    }
    measured
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The INFO lines of the run and every variant's spread, then the RESULT
/// lines (ratios to `old_record` with the same number of threads).
fn print_results(config: &Config, measured: &Measurements) {
    let Config {
        rounds,
        chunk,
        clock,
        ..
    } = config;
    println!(
        "INFO collector_record clock={clock:?} rounds={rounds} records_per_thread_per_chunk={chunk} available_parallelism={}",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "INFO collector_record two_thread_chunks_on_cpu_fraction median={:.2} (1.00 = both producers ran simultaneously throughout)",
        median(&measured.on_cpu_2t)
    );
    let variants = &config.variants;
    for &threads in &config.thread_counts {
        let of = |v: Variant| measured.of(threads, v);
        let base = if variants.contains(&Variant::OldRecord) {
            median(of(Variant::OldRecord))
        } else {
            f64::NAN
        };
        for &v in variants {
            let samples = of(v);
            let mut sorted = samples.to_vec();
            sorted.sort_by(f64::total_cmp);
            let ns = median(samples);
            println!(
                "INFO collector_record variant={}_{threads}t min={:.1} median={ns:.1} max={:.1}",
                v.name(),
                sorted[0],
                sorted[sorted.len() - 1],
            );
        }
        for &v in variants {
            let ns = median(of(v));
            println!(
                "RESULT collector_record variant={}_{threads}t ns_per_record={ns:.1} ratio_to_baseline={:.2}",
                v.name(),
                ns / base
            );
        }
    }
}

/// How often each consumer was woken per 1,000 records, and what it dropped.
fn print_consumers(env: &Env) {
    let per_k = |polls: u64, records: u64| polls as f64 * 1_000.0 / records.max(1) as f64;
    let stats = env.handle.stats();
    println!(
        "INFO collector_record consumer=collector_worker records={} polls_per_1k_records={:.2} batches={} dropped_queue_full={}",
        stats.written,
        per_k(env.worker_polls.load(Ordering::Relaxed), stats.written),
        stats.batches,
        stats.dropped_queue_full,
    );
    let old_written = env.old.written.0.load(Ordering::Relaxed);
    println!(
        "INFO collector_record consumer=old_worker_replica records={} polls_per_1k_records={:.2} dropped_queue_full={}",
        old_written,
        per_k(env.old_polls.load(Ordering::Relaxed), old_written),
        env.old
            .counters
            .0
            .dropped_queue_full
            .load(Ordering::Relaxed),
    );
    let chan_received = env.chan_received.load(Ordering::Relaxed);
    println!(
        "INFO collector_record consumer=naive_recv_many records={} polls_per_1k_records={:.2}",
        chan_received,
        per_k(env.chan_polls.load(Ordering::Relaxed), chan_received),
    );
}

fn main() {
    let config = Config::from_env();
    let env = Arc::new(setup());
    let producers = Producers::spawn(&env);
    let measured = run_rounds(&env, &producers, &config);
    drop(producers);

    // Let the consumers catch up before reading their counters.
    env.rt.block_on(async {
        env.handle.flush().await.unwrap();
    });
    wait_for_consumers(&env);

    print_results(&config, &measured);
    print_consumers(&env);
    env.rt.block_on(async {
        let _ = env.handle.shutdown(Duration::from_secs(5)).await;
    });
}
