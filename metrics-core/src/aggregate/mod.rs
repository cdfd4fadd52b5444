//! Pure aggregation functions behind rollups and dashboard queries: no I/O,
//! no clocks of their own, no async.
//!
//! # When to use what
//!
//! * [`LatencySketch`]: percentiles that stay right over any window. Build
//!   one per (hour, endpoint) while streaming raw rows, store
//!   [`to_bytes`](LatencySketch::to_bytes), and for a window merge the stored
//!   hours. Never average per-hour percentiles (the original design's error).
//!   Small buckets stay exact (equal to PostgreSQL `percentile_cont`); large
//!   ones keep a hard 1 % relative error bound through any number of merges.
//!   Every [`Estimate`] carries its bound: `0.0` exact, `0.01` otherwise.
//! * [`DistinctUsers`]: unique users that merge across buckets. Exact sets of
//!   user-id hashes up to 2,048 users, HyperLogLog (≈ 0.8 % standard error,
//!   2 % stated bound) beyond.
//! * [`PerformanceSummary`] / [`UsageSummary`]: fold records (or raw
//!   columns) into mergeable summaries and render the `aggregated_values`
//!   JSON keys ([`PerformanceValues`], [`UsageValues`]).
//! * [`TimeRange`] / [`Resolution`]: the API's `time_range`, `start_date`,
//!   `end_date` and `interval` parameters with their validation messages, and
//!   UTC bucketing.
//!
//! # Accuracy guarantee
//!
//! For any window assembled by merging stored buckets, p50/p95/p99 are
//! within 1 % (relative) of `percentile_cont` over the raw rows of that
//! window, and exactly equal to it while the window holds at most 1,000
//! samples. The argument is in the [`LatencySketch`] docs.
//!
//! # Example: a 24-hour p95 from hourly sketches
//!
//! ```
//! use metrics_core::aggregate::LatencySketch;
//!
//! // What a rollup job stores per hour...
//! let stored: Vec<Vec<u8>> = (0..24)
//!     .map(|h| {
//!         let mut s = LatencySketch::new();
//!         for i in 0..100 {
//!             s.add(f64::from(h * 100 + i));
//!         }
//!         s.to_bytes()
//!     })
//!     .collect();
//! // ...and what a dashboard query does with it.
//! let mut day = LatencySketch::new();
//! for bytes in &stored {
//!     day.merge(&LatencySketch::from_bytes(bytes)?);
//! }
//! let p95 = day.quantile(0.95).unwrap();
//! let truth = 0.95 * 2_399.0; // percentile_cont over 0..2400
//! assert!((p95.value - truth).abs() <= p95.rel_error_bound * truth);
//! # Ok::<(), metrics_core::aggregate::DecodeError>(())
//! ```

mod distinct;
mod range;
mod sketch;
mod summary;

pub use distinct::{
    DEFAULT_DISTINCT_EXACT_LIMIT, DISTINCT_FORMAT_VERSION, DistinctEstimate, DistinctUsers,
    HLL_REL_ERROR_BOUND,
};
pub use range::{Buckets, MAX_RANGE, Preset, Resolution, TimeRange, TimeRangeError};
pub use sketch::{
    DEFAULT_EXACT_LIMIT, DecodeError, Estimate, LatencySketch, MIN_TRACKED_VALUE,
    RELATIVE_ACCURACY, SKETCH_FORMAT_VERSION,
};
pub use summary::{PerformanceSummary, PerformanceValues, UsageSummary, UsageValues};
