//! Cost of answering a dashboard percentile query from stored hourly
//! [`LatencySketch`]es: decode `n` serialised hourly sketches, merge them and
//! read p50/p95/p99, for n = 24 (one day) and 2,160 (90 days).
//!
//! Baseline, measured in the same run: the same query over the equivalent raw
//! values (copy the window's samples and sort them, then read the three
//! percentiles), i.e. what the query costs without rollups. A third variant
//! merges already-decoded sketches to show the share of decoding.
//!
//! Each hour holds 2,000 log-normal latencies (median 40 ms), past the exact
//! limit, so the hourly sketches are in histogram mode as on a busy endpoint.
//!
//! Prints `RESULT sketch_merge sketches=<n> us=<median> baseline_sort_us=<median>
//! ratio_to_baseline=<x> decoded_merge_us=<median> bytes_per_sketch=<avg>`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use metrics_core::aggregate::LatencySketch;

const PER_HOUR: usize = 2_000;
const WINDOWS: [usize; 2] = [24, 2_160];

fn log_normal(rng: &mut fastrand::Rng, n: usize, median: f64) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let u1 = 1.0 - rng.f64();
            let u2 = rng.f64();
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            median * z.exp()
        })
        .collect()
}

struct Data {
    raw: Vec<f64>,
    stored: Vec<Vec<u8>>,
    decoded: Vec<LatencySketch>,
}

fn data(hours: usize) -> Data {
    let mut rng = fastrand::Rng::with_seed(42);
    let mut raw = Vec::with_capacity(hours * PER_HOUR);
    let mut stored = Vec::with_capacity(hours);
    let mut decoded = Vec::with_capacity(hours);
    for _ in 0..hours {
        let values = log_normal(&mut rng, PER_HOUR, 40.0);
        let mut s = LatencySketch::new();
        for &v in &values {
            s.add(v);
        }
        stored.push(s.to_bytes());
        decoded.push(s);
        raw.extend_from_slice(&values);
    }
    Data {
        raw,
        stored,
        decoded,
    }
}

fn sketch_query(stored: &[Vec<u8>]) -> [f64; 3] {
    let mut acc = LatencySketch::new();
    for bytes in stored {
        acc.merge(&LatencySketch::from_bytes(bytes).expect("valid sketch"));
    }
    [0.5, 0.95, 0.99].map(|q| acc.quantile(q).map_or(0.0, |e| e.value))
}

fn decoded_query(sketches: &[LatencySketch]) -> [f64; 3] {
    let mut acc = LatencySketch::new();
    for s in sketches {
        acc.merge(s);
    }
    [0.5, 0.95, 0.99].map(|q| acc.quantile(q).map_or(0.0, |e| e.value))
}

fn sort_query(raw: &[f64]) -> [f64; 3] {
    let mut v = raw.to_vec();
    v.sort_unstable_by(f64::total_cmp);
    [0.5, 0.95, 0.99].map(|q| {
        let pos = q * (v.len() - 1) as f64;
        let lo = pos.floor() as usize;
        let hi = pos.ceil() as usize;
        v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
    })
}

/// Median of per-iteration times of `f` over `samples` runs, in µs.
fn median_us(samples: usize, mut f: impl FnMut()) -> f64 {
    let mut times: Vec<Duration> = (0..samples)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2].as_secs_f64() * 1e6
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("sketch_merge");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(2));
    group.warm_up_time(Duration::from_secs(1));
    let mut lines = Vec::new();
    for hours in WINDOWS {
        let d = data(hours);
        // Sanity: the sketch answer is within its bound of the sorted one.
        let (est, truth) = (sketch_query(&d.stored), sort_query(&d.raw));
        for (e, t) in est.iter().zip(&truth) {
            assert!((e - t).abs() <= 0.01 * t * (1.0 + 1e-9), "{e} vs {t}");
        }
        group.bench_with_input(BenchmarkId::new("decode_merge", hours), &d, |b, d| {
            b.iter(|| black_box(sketch_query(black_box(&d.stored))));
        });
        group.bench_with_input(BenchmarkId::new("merge_decoded", hours), &d, |b, d| {
            b.iter(|| black_box(decoded_query(black_box(&d.decoded))));
        });
        group.bench_with_input(BenchmarkId::new("baseline_sort_raw", hours), &d, |b, d| {
            b.iter(|| black_box(sort_query(black_box(&d.raw))));
        });

        // The RESULT numbers: interleaved runs of the variants so machine
        // noise hits them alike, medians compared.
        let samples = if hours > 100 { 21 } else { 201 };
        let mut ours = Vec::new();
        let mut decoded = Vec::new();
        let mut base = Vec::new();
        for _ in 0..3 {
            ours.push(median_us(samples / 3, || {
                let _ = black_box(sketch_query(black_box(&d.stored)));
            }));
            decoded.push(median_us(samples / 3, || {
                let _ = black_box(decoded_query(black_box(&d.decoded)));
            }));
            base.push(median_us(samples / 3, || {
                let _ = black_box(sort_query(black_box(&d.raw)));
            }));
        }
        let med = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (ours, decoded, base) = (med(ours), med(decoded), med(base));
        let bytes = d.stored.iter().map(Vec::len).sum::<usize>() / d.stored.len();
        lines.push(format!(
            "RESULT sketch_merge sketches={hours} us={ours:.1} baseline_sort_us={base:.1} \
             ratio_to_baseline={:.4} decoded_merge_us={decoded:.1} bytes_per_sketch={bytes}",
            ours / base
        ));
    }
    group.finish();
    for line in lines {
        println!("{line}");
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
