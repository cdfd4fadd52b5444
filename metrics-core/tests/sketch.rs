//! The latency sketch through the public API: exact (equal to
//! `percentile_cont`, merged halves included) up to its *default* limit of
//! 1,000 samples, and within its reported error bound after.

use metrics_core::aggregate::{DEFAULT_EXACT_LIMIT, LatencySketch};

/// percentile_cont over sorted values (linear interpolation).
fn percentile_cont(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor();
    let a = sorted[lo as usize];
    if pos == lo {
        a
    } else {
        a + (sorted[lo as usize + 1] - a) * (pos - lo)
    }
}

fn latencies(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n).map(|_| 1.0 + rng.f64() * 2_000.0).collect()
}

#[test]
fn default_sketch_is_exact_up_to_1000_samples_then_within_one_percent() {
    assert_eq!(DEFAULT_EXACT_LIMIT, 1_000);
    let values = latencies(1_001, 42);

    // 1,000 samples, and two halves merged: exactly percentile_cont.
    let mut exact = LatencySketch::new();
    let (mut left, mut right) = (LatencySketch::new(), LatencySketch::new());
    for (i, &v) in values[..1_000].iter().enumerate() {
        exact.add(v);
        if i % 2 == 0 { &mut left } else { &mut right }.add(v);
    }
    left.merge(&right);
    let mut sorted = values[..1_000].to_vec();
    sorted.sort_by(f64::total_cmp);
    for s in [&exact, &left] {
        assert!(s.is_exact());
        for q in [0.5, 0.95, 0.99] {
            let e = s.quantile(q).unwrap();
            assert_eq!(e.value, percentile_cont(&sorted, q), "q {q}");
            assert_eq!(e.rel_error_bound, 0.0);
        }
    }

    // One sample more: binned, with the bound reported and respected.
    exact.add(values[1_000]);
    assert!(!exact.is_exact());
    let mut sorted = values;
    sorted.sort_by(f64::total_cmp);
    for q in [0.5, 0.95, 0.99] {
        let e = exact.quantile(q).unwrap();
        let truth = percentile_cont(&sorted, q);
        assert!(e.rel_error_bound > 0.0 && e.rel_error_bound <= 0.01);
        assert!(
            (e.value - truth).abs() / truth <= e.rel_error_bound * (1.0 + 1e-9),
            "q {q}: {} vs {truth}",
            e.value
        );
    }
}
