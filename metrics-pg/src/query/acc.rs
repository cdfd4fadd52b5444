//! The accumulator of request counts, errors and latencies of one key.

use metrics_core::aggregate::LatencySketch;

use super::decode::ratio;

/// Count, error count and merged latency sketch of one key.
#[derive(Debug, Default)]
pub(super) struct PerfAcc {
    pub(super) count: u64,
    pub(super) errors: u64,
    pub(super) sketch: LatencySketch,
}

impl PerfAcc {
    pub(super) fn merge(&mut self, other: &Self) {
        self.count += other.count;
        self.errors += other.errors;
        self.sketch.merge(&other.sketch);
    }

    pub(super) fn quantile(&self, q: f64) -> f64 {
        self.sketch.quantile(q).map_or(0.0, |e| e.value)
    }

    pub(super) fn error_rate(&self) -> f64 {
        ratio(self.errors, self.count)
    }
}
