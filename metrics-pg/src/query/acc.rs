//! The accumulator of request counts, errors and latencies of one key.

use metrics_core::aggregate::LatencySketch;
use metrics_core::query::PerformancePoint;

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

    /// The time-series point of these requests (zeros when there are none).
    pub(super) fn point(&self) -> PerformancePoint {
        PerformancePoint {
            total_requests: self.count,
            avg_response_time_ms: self.sketch.mean().unwrap_or(0.0),
            p50_response_time_ms: self.quantile(0.5),
            p95_response_time_ms: self.quantile(0.95),
            p99_response_time_ms: self.quantile(0.99),
            error_count: self.errors,
            error_rate: self.error_rate(),
        }
    }
}
