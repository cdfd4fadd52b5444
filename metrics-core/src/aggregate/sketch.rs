//! [`LatencySketch`]: a mergeable latency quantile sketch that is exact for
//! small buckets and a relative-error (DDSketch-style) histogram above that.
//!
//! The design and accuracy argument are documented on [`LatencySketch`].

use std::borrow::Cow;

// ===== constants =====

/// Default number of samples a sketch keeps verbatim before switching to the
/// relative-error representation.
pub const DEFAULT_EXACT_LIMIT: u32 = 1_000;

/// Relative accuracy `α` of the sketch mode: every estimate is within `α` of
/// the true `percentile_cont` value, relative to that value.
pub const RELATIVE_ACCURACY: f64 = 0.01;

/// Smallest value that gets its own logarithmic bin; smaller non-negative
/// values share the zero bin. With values in milliseconds this is 1 ns.
pub const MIN_TRACKED_VALUE: f64 = 1e-6;

/// Serialisation format version written by [`LatencySketch::to_bytes`].
pub const SKETCH_FORMAT_VERSION: u8 = 1;

const GAMMA: f64 = (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY);
const MODE_EXACT: u8 = 0;
const MODE_BINS: u8 = 1;

/// `ln γ`. LLVM folds `ln` of a constant, so this costs nothing at run time.
#[inline]
fn ln_gamma() -> f64 {
    GAMMA.ln()
}

/// The bin of a value `>= MIN_TRACKED_VALUE`.
#[inline]
fn key_of(value: f64) -> i32 {
    // `as` saturates; the domain (1e-6 ..= f64::MAX) maps to about -691..=35_492.
    (value.ln() / ln_gamma()).ceil() as i32
}

/// The representative of a bin: within `α` of every value the bin holds.
#[inline]
fn value_of(key: i32) -> f64 {
    (f64::from(key) * ln_gamma()).exp() * (2.0 / (1.0 + GAMMA))
}

fn min_key() -> i32 {
    key_of(MIN_TRACKED_VALUE)
}

fn max_key() -> i32 {
    key_of(f64::MAX)
}

// ===== types =====

/// A quantile estimate and the guaranteed bound on its relative error.
///
/// `rel_error_bound` is `0.0` when the sketch is in exact mode (the value *is*
/// PostgreSQL's `percentile_cont` over the same samples) and
/// [`RELATIVE_ACCURACY`] in sketch mode: the true `percentile_cont` lies within
/// `value / (1 ± rel_error_bound)`, i.e. `|value − true| ≤ rel_error_bound ·
/// true`. This is a hard bound, not a confidence interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    /// The estimated quantile.
    pub value: f64,
    /// Upper bound of `|value − true| / true` (0 when exact).
    pub rel_error_bound: f64,
}

/// Why bytes could not be decoded into a [`LatencySketch`] or
/// [`DistinctUsers`](super::DistinctUsers).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Zero bytes were given.
    #[error("sketch bytes are empty (expected at least a version byte)")]
    Empty,
    /// The version byte is not one this build can read.
    #[error(
        "sketch format version {found} is not supported (this build reads version {supported}); \
         upgrade app-metrics or re-run the rollup"
    )]
    UnsupportedVersion {
        /// The version byte found.
        found: u8,
        /// The version this build reads.
        supported: u8,
    },
    /// The bytes end before the encoded structure does.
    #[error("sketch bytes are truncated")]
    Truncated,
    /// Bytes remain after the encoded structure.
    #[error("sketch bytes have {0} unexpected trailing bytes")]
    TrailingBytes(usize),
    /// The structure is decodable but inconsistent (corrupt or hand-made).
    #[error("sketch bytes are corrupt: {0}")]
    Corrupt(&'static str),
}

/// A mergeable latency quantile sketch.
///
/// * While it holds at most [`exact_limit`](Self::exact_limit) samples it
///   keeps them verbatim and [`quantile`](Self::quantile) equals PostgreSQL's
///   `percentile_cont` exactly (error bound 0).
/// * Beyond that it is a logarithmic histogram whose estimates are within
///   [`RELATIVE_ACCURACY`] (1 %) of `percentile_cont`.
/// * [`merge`](Self::merge) is associative and commutative: the state after
///   any sequence of adds and merges depends only on the multiset of samples
///   and the smallest exact limit involved (two exact sketches whose total
///   exceeds the limit merge into the histogram representation). Only the
///   floating-point `sum` can differ in its last bits with the merge order.
/// * [`to_bytes`](Self::to_bytes) / [`from_bytes`](Self::from_bytes) give a
///   compact, versioned binary form.
///
/// Samples must be finite and non-negative (latencies are durations); other
/// values are ignored by [`add`](Self::add).
///
/// # Why two modes
///
/// Hourly buckets of a quiet endpoint hold a handful of samples. A plain
/// DDSketch picks one order statistic and returns its bin's representative,
/// which on small buckets is far from PostgreSQL's `percentile_cont`, because `percentile_cont`
/// interpolates between two neighbouring order statistics. So a sketch keeps
/// the raw values while it holds at most `exact_limit` of them (default
/// [`DEFAULT_EXACT_LIMIT`]) and then answers *exactly* what `percentile_cont`
/// answers. Beyond the limit it switches, once and for good, to a logarithmic
/// histogram with relative accuracy [`RELATIVE_ACCURACY`] (1 %).
///
/// # Why the sketch mode stays within 1 % of `percentile_cont`
///
/// Every value `x` lands in bin `k = ceil(ln x / ln γ)` with
/// `γ = (1 + α) / (1 − α)`, whose representative `2γᵏ / (1 + γ)` is within `α`
/// relative of every value of the bin. So the estimate of *each order
/// statistic* is within `α`. The sketch then interpolates between the
/// estimates of ranks `⌊q(n−1)⌋` and `⌊q(n−1)⌋ + 1` with `percentile_cont`'s
/// own weights; a convex combination of positive estimates that are each
/// within `α` of their targets is within `α` of the combined target. Hence the
/// bound holds for every quantile, every bucket size and after any number of
/// merges (merging only adds bin counts; it never moves a value to another
/// bin). The store is never collapsed (collapsing would void the bound for the
/// lowest quantiles); the key domain is bounded instead (see
/// [`MIN_TRACKED_VALUE`]), so even pathological input needs at most ~36,000
/// bins, and real latencies need a few hundred.
///
/// Values below [`MIN_TRACKED_VALUE`] share a zero bin whose representative is
/// `0`: for them the error is absolute (< 1e-6, a nanosecond when values are
/// milliseconds) rather than relative, so the complete statement is
/// `|estimate − true| ≤ α · true + MIN_TRACKED_VALUE`.
///
/// # Example
///
/// ```
/// use metrics_core::aggregate::LatencySketch;
///
/// let mut hour_1 = LatencySketch::new();
/// for ms in [10.0, 20.0, 30.0, 40.0] {
///     hour_1.add(ms);
/// }
/// let mut hour_2 = LatencySketch::new();
/// hour_2.add(50.0);
///
/// // Stored per hour, merged per query.
/// let bytes = hour_2.to_bytes();
/// hour_1.merge(&LatencySketch::from_bytes(&bytes)?);
///
/// let p50 = hour_1.quantile(0.5).unwrap();
/// assert_eq!(p50.value, 30.0); // percentile_cont(0.5) of 10..=50
/// assert_eq!(p50.rel_error_bound, 0.0); // exact mode
/// assert_eq!(hour_1.count(), 5);
/// # Ok::<(), metrics_core::aggregate::DecodeError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct LatencySketch {
    exact_limit: u32,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    repr: Repr,
}

#[derive(Clone, Debug, PartialEq)]
enum Repr {
    /// Every sample; `sorted` tells whether `values` is ascending.
    Exact {
        values: Vec<f64>,
        sorted: bool,
    },
    Bins(Bins),
}

/// Dense logarithmic bins: `counts[i]` is the count of key `offset + i`.
#[derive(Clone, Debug, PartialEq, Default)]
struct Bins {
    zero_count: u64,
    offset: i32,
    counts: Vec<u64>,
}

// ===== impl Bins =====

impl Bins {
    #[inline]
    fn add_value(&mut self, value: f64, n: u64) {
        if value < MIN_TRACKED_VALUE {
            self.zero_count += n;
        } else {
            self.add_key(key_of(value), n);
        }
    }

    #[inline]
    fn add_key(&mut self, key: i32, n: u64) {
        self.cover(key, key);
        self.counts[(key - self.offset) as usize] += n;
    }

    /// Grows the dense range so it covers `lo..=hi`.
    fn cover(&mut self, lo: i32, hi: i32) {
        if self.counts.is_empty() {
            self.offset = lo;
            self.counts.resize((hi - lo + 1) as usize, 0);
            return;
        }
        let cur_hi = self.offset + self.counts.len() as i32 - 1;
        if lo < self.offset {
            let extra = (self.offset - lo) as usize;
            // One shift per extension; ranges stabilise after a few samples.
            let _ = self.counts.splice(0..0, std::iter::repeat_n(0, extra));
            self.offset = lo;
        }
        if hi > cur_hi {
            let new_len = (hi - self.offset + 1) as usize;
            self.counts.resize(new_len, 0);
        }
    }

    fn merge(&mut self, other: &Self) {
        self.zero_count += other.zero_count;
        if other.counts.is_empty() {
            return;
        }
        let other_hi = other.offset + other.counts.len() as i32 - 1;
        self.cover(other.offset, other_hi);
        let start = (other.offset - self.offset) as usize;
        for (dst, src) in self.counts[start..].iter_mut().zip(&other.counts) {
            *dst += *src;
        }
    }

    /// Representatives of ranks `lo` and `lo + 1` (0-based, ascending).
    fn values_at_ranks(&self, lo: u64) -> (f64, f64) {
        let hi = lo + 1;
        let mut lo_val = None;
        let mut cum = self.zero_count;
        if lo < cum {
            lo_val = Some(0.0);
            if hi < cum {
                return (0.0, 0.0);
            }
        }
        for (i, &c) in self.counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            cum += c;
            if lo_val.is_none() && lo < cum {
                lo_val = Some(value_of(self.offset + i as i32));
            }
            if hi < cum {
                let v = value_of(self.offset + i as i32);
                return (lo_val.unwrap_or(v), v);
            }
        }
        // `hi` beyond the last rank: callers clamp; return the top bin twice.
        let top = self
            .counts
            .iter()
            .rposition(|&c| c > 0)
            .map_or(0.0, |i| value_of(self.offset + i as i32));
        (lo_val.unwrap_or(top), top)
    }

    fn total(&self) -> u64 {
        self.zero_count + self.counts.iter().sum::<u64>()
    }
}

// ===== impl LatencySketch =====

impl Default for LatencySketch {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencySketch {
    /// An empty sketch that stays exact up to [`DEFAULT_EXACT_LIMIT`] samples.
    pub fn new() -> Self {
        Self::with_exact_limit(DEFAULT_EXACT_LIMIT)
    }

    /// An empty sketch that stays exact up to `exact_limit` samples (0 makes
    /// it a pure relative-error sketch).
    pub fn with_exact_limit(exact_limit: u32) -> Self {
        Self {
            exact_limit,
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            repr: Repr::Exact {
                values: Vec::new(),
                sorted: true,
            },
        }
    }

    /// Adds one sample. NaN, infinite and negative values are ignored
    /// (latencies are durations); `-0.0` counts as `0.0`.
    pub fn add(&mut self, value: f64) {
        if !(value.is_finite() && value >= 0.0) {
            return;
        }
        let value = value + 0.0; // normalises -0.0
        self.count += 1;
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        match &mut self.repr {
            Repr::Exact { values, sorted } => {
                if *sorted && values.last().is_some_and(|&last| last > value) {
                    *sorted = false;
                }
                values.push(value);
                if values.len() as u64 > u64::from(self.exact_limit) {
                    self.convert_to_bins();
                }
            }
            Repr::Bins(bins) => bins.add_value(value, 1),
        }
    }

    /// Merges `other` into `self` (`other` is unchanged). The merged exact
    /// limit is the smaller of the two, which keeps merging commutative.
    pub fn merge(&mut self, other: &Self) {
        self.exact_limit = self.exact_limit.min(other.exact_limit);
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        match (&mut self.repr, &other.repr) {
            (Repr::Bins(mine), Repr::Bins(theirs)) => mine.merge(theirs),
            (Repr::Bins(mine), Repr::Exact { values, .. }) => {
                for &v in values {
                    mine.add_value(v, 1);
                }
            }
            (Repr::Exact { values, .. }, Repr::Bins(theirs)) => {
                let mut bins = theirs.clone();
                for &v in values.iter() {
                    bins.add_value(v, 1);
                }
                self.repr = Repr::Bins(bins);
            }
            (
                Repr::Exact { values, sorted },
                Repr::Exact {
                    values: theirs,
                    sorted: theirs_sorted,
                },
            ) => {
                if *sorted && *theirs_sorted {
                    *values = merge_sorted(values, theirs);
                } else {
                    values.extend_from_slice(theirs);
                    *sorted = false;
                }
            }
        }
        if matches!(&self.repr, Repr::Exact { values, .. } if values.len() as u64 > u64::from(self.exact_limit))
        {
            self.convert_to_bins();
        }
    }

    /// The quantile `q` (0 ≤ q ≤ 1) with its error bound, as PostgreSQL's
    /// `percentile_cont(q)` defines it: linear interpolation at position
    /// `q · (n − 1)` of the sorted samples. `None` when the sketch is empty
    /// or `q` is outside `0..=1` (or NaN).
    ///
    /// In exact mode an unsorted buffer (samples added out of order since the
    /// last merge or decode) is sorted in a copy, at most `exact_limit` values.
    pub fn quantile(&self, q: f64) -> Option<Estimate> {
        if self.count == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        // Same arithmetic as PostgreSQL's percentile_cont_final_common, so
        // exact mode reproduces it bit for bit.
        let pos = q * (self.count - 1) as f64;
        let first = pos.floor();
        let proportion = pos - first;
        let first = first as u64;
        match &self.repr {
            Repr::Exact { values, sorted } => {
                let values: Cow<'_, [f64]> = if *sorted {
                    Cow::Borrowed(values)
                } else {
                    let mut v = values.clone();
                    v.sort_unstable_by(f64::total_cmp);
                    Cow::Owned(v)
                };
                let lo = values[first as usize];
                let value = if proportion == 0.0 {
                    lo
                } else {
                    let hi = values[first as usize + 1];
                    lo + (hi - lo) * proportion
                };
                Some(Estimate {
                    value,
                    rel_error_bound: 0.0,
                })
            }
            Repr::Bins(bins) => {
                let (lo, hi) = bins.values_at_ranks(first);
                // Ranks 0 and n-1 are known exactly; clamping to [min, max]
                // can only move an estimate closer to the truth.
                let clamp = |rank: u64, v: f64| {
                    if rank == 0 {
                        self.min
                    } else if rank >= self.count - 1 {
                        self.max
                    } else {
                        v.clamp(self.min, self.max)
                    }
                };
                let lo = clamp(first, lo);
                let value = if proportion == 0.0 {
                    lo
                } else {
                    let hi = clamp(first + 1, hi);
                    lo + (hi - lo) * proportion
                };
                Some(Estimate {
                    value,
                    rel_error_bound: RELATIVE_ACCURACY,
                })
            }
        }
    }

    /// Sorts the samples an exact sketch keeps, in place (a no-op when they
    /// are sorted or the sketch is binned). Samples added out of order make
    /// [`quantile`](Self::quantile) and [`to_bytes`](Self::to_bytes) sort a
    /// copy on every call; call this once before several of them. Quantiles,
    /// bytes and merges are unchanged; only the buffer's order is (which the
    /// derived [`PartialEq`] sees).
    pub fn sort_samples(&mut self) {
        if let Repr::Exact { values, sorted } = &mut self.repr {
            if !*sorted {
                values.sort_unstable_by(f64::total_cmp);
                *sorted = true;
            }
        }
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of the samples (exact up to floating-point rounding).
    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// Smallest sample, exact in both modes; `None` when empty.
    pub fn min(&self) -> Option<f64> {
        (self.count > 0).then_some(self.min)
    }

    /// Largest sample, exact in both modes; `None` when empty.
    pub fn max(&self) -> Option<f64> {
        (self.count > 0).then_some(self.max)
    }

    /// Mean of the samples; `None` when empty.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }

    /// Whether quantiles are exact (the sketch still holds every sample).
    pub fn is_exact(&self) -> bool {
        matches!(self.repr, Repr::Exact { .. })
    }

    /// The number of samples kept verbatim before switching to bins.
    pub fn exact_limit(&self) -> u32 {
        self.exact_limit
    }

    fn convert_to_bins(&mut self) {
        if let Repr::Exact { values, .. } = &mut self.repr {
            let mut bins = Bins::default();
            for &v in values.iter() {
                bins.add_value(v, 1);
            }
            self.repr = Repr::Bins(bins);
        }
    }

    // ----- serialisation -----

    /// The compact binary form (format version [`SKETCH_FORMAT_VERSION`]).
    ///
    /// Layout (integers are LEB128 varints, floats little-endian `f64`):
    /// `version u8 | mode u8 (0 exact, 1 bins) | exact_limit | count |`
    /// then, when `count > 0`, `sum | min | max |` and either the sorted
    /// samples (exact) or `zero_count | zigzag(first_key) | n_bins |
    /// n_bins × count` (bins, trimmed to the first and last non-empty bin).
    /// A typical one-hour histogram of log-normal latencies is 0.3–1 KB; an
    /// exact sketch is 8 bytes per sample. Equal states give equal bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.push(SKETCH_FORMAT_VERSION);
        out.push(match self.repr {
            Repr::Exact { .. } => MODE_EXACT,
            Repr::Bins(_) => MODE_BINS,
        });
        put_varint(&mut out, u64::from(self.exact_limit));
        put_varint(&mut out, self.count);
        if self.count == 0 {
            return out;
        }
        for f in [self.sum, self.min, self.max] {
            out.extend_from_slice(&f.to_le_bytes());
        }
        match &self.repr {
            Repr::Exact { values, sorted } => {
                let values: Cow<'_, [f64]> = if *sorted {
                    Cow::Borrowed(values)
                } else {
                    let mut v = values.clone();
                    v.sort_unstable_by(f64::total_cmp);
                    Cow::Owned(v)
                };
                out.reserve(values.len() * 8);
                for v in values.iter() {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
            Repr::Bins(bins) => {
                put_varint(&mut out, bins.zero_count);
                let first = bins.counts.iter().position(|&c| c > 0);
                let last = bins.counts.iter().rposition(|&c| c > 0);
                match (first, last) {
                    (Some(first), Some(last)) => {
                        put_varint(&mut out, zigzag(bins.offset + first as i32));
                        put_varint(&mut out, (last - first + 1) as u64);
                        for &c in &bins.counts[first..=last] {
                            put_varint(&mut out, c);
                        }
                    }
                    _ => {
                        put_varint(&mut out, 0);
                        put_varint(&mut out, 0);
                    }
                }
            }
        }
        out
    }

    /// Decodes [`to_bytes`](Self::to_bytes) output, validating it fully (a
    /// corrupt row yields an error, never a panic or a huge allocation).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8().map_err(|_| DecodeError::Empty)?;
        if version != SKETCH_FORMAT_VERSION {
            return Err(DecodeError::UnsupportedVersion {
                found: version,
                supported: SKETCH_FORMAT_VERSION,
            });
        }
        let mode = r.u8()?;
        let exact_limit = u32::try_from(r.varint()?)
            .map_err(|_| DecodeError::Corrupt("exact limit out of range"))?;
        let count = r.varint()?;
        let mut sketch = Self::with_exact_limit(exact_limit);
        match mode {
            MODE_EXACT if count > u64::from(exact_limit) => {
                return Err(DecodeError::Corrupt(
                    "exact sketch holds more than its limit",
                ));
            }
            MODE_BINS if count <= u64::from(exact_limit) => {
                return Err(DecodeError::Corrupt("binned sketch within its exact limit"));
            }
            MODE_EXACT | MODE_BINS => {}
            _ => return Err(DecodeError::Corrupt("unknown mode byte")),
        }
        if count == 0 {
            r.finish()?;
            return Ok(sketch);
        }
        let (sum, min, max) = (r.f64()?, r.f64()?, r.f64()?);
        if !(min.is_finite() && max.is_finite() && sum.is_finite() && min >= 0.0 && min <= max) {
            return Err(DecodeError::Corrupt("sum, min or max invalid"));
        }
        sketch.count = count;
        sketch.sum = sum;
        sketch.min = min;
        sketch.max = max;
        if mode == MODE_EXACT {
            // `count <= exact_limit` and each value needs 8 bytes.
            if r.remaining() < count as usize * 8 {
                return Err(DecodeError::Truncated);
            }
            let mut values = Vec::with_capacity(count as usize);
            let mut prev = min;
            for _ in 0..count {
                let v = r.f64()?;
                if !(v.is_finite() && v >= prev) {
                    return Err(DecodeError::Corrupt(
                        "exact samples not sorted or not finite",
                    ));
                }
                prev = v;
                values.push(v);
            }
            if values.first() != Some(&min) || values.last() != Some(&max) {
                return Err(DecodeError::Corrupt("min/max disagree with the samples"));
            }
            sketch.repr = Repr::Exact {
                values,
                sorted: true,
            };
        } else {
            let zero_count = r.varint()?;
            let first_key = unzigzag(r.varint()?)?;
            let n_bins = r.varint()?;
            let mut bins = Bins {
                zero_count,
                offset: first_key,
                counts: Vec::new(),
            };
            if n_bins > 0 {
                let last_key = i64::from(first_key) + n_bins as i64 - 1;
                if first_key < min_key() || last_key > i64::from(max_key()) {
                    return Err(DecodeError::Corrupt("bin keys outside the value domain"));
                }
                // Each count takes at least one byte: bounds the allocation.
                if (r.remaining() as u64) < n_bins {
                    return Err(DecodeError::Truncated);
                }
                bins.counts.reserve_exact(n_bins as usize);
                for _ in 0..n_bins {
                    bins.counts.push(r.varint()?);
                }
            }
            if bins.total() != count {
                return Err(DecodeError::Corrupt(
                    "bin counts do not add up to the count",
                ));
            }
            sketch.repr = Repr::Bins(bins);
        }
        r.finish()?;
        Ok(sketch)
    }
}

fn merge_sorted(a: &[f64], b: &[f64]) -> Vec<f64> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i] <= b[j] {
            out.push(a[i]);
            i += 1;
        } else {
            out.push(b[j]);
            j += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

// ===== encoding helpers (shared with distinct.rs) =====

pub(super) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i32) -> u64 {
    u64::from(((v << 1) ^ (v >> 31)) as u32)
}

fn unzigzag(v: u64) -> Result<i32, DecodeError> {
    let v = u32::try_from(v).map_err(|_| DecodeError::Corrupt("bin key out of range"))?;
    Ok(((v >> 1) as i32) ^ -((v & 1) as i32))
}

/// A bounds-checked cursor over encoded bytes.
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    pub(super) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub(super) fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self.bytes.get(self.pos).ok_or(DecodeError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated);
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(super) fn f64(&mut self) -> Result<f64, DecodeError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(f64::from_le_bytes(b))
    }

    pub(super) fn u64_le(&mut self) -> Result<u64, DecodeError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    #[inline]
    pub(super) fn varint(&mut self) -> Result<u64, DecodeError> {
        // Fast path: most bin counts fit in one byte.
        match self.bytes.get(self.pos) {
            Some(&b) if b < 0x80 => {
                self.pos += 1;
                Ok(u64::from(b))
            }
            _ => self.varint_slow(),
        }
    }

    fn varint_slow(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                if shift == 63 && b > 1 {
                    break;
                }
                return Ok(v);
            }
        }
        Err(DecodeError::Corrupt("varint longer than 64 bits"))
    }

    pub(super) fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// `percentile_cont` straight from its definition, over a copy.
    fn percentile_cont(values: &[f64], q: f64) -> f64 {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let pos = q * (v.len() - 1) as f64;
        let lo = pos.floor() as usize;
        let hi = pos.ceil() as usize;
        v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
    }

    /// Log-normal samples (median ~`median` ms, sigma 1) from a seeded RNG.
    fn log_normal(rng: &mut fastrand::Rng, n: usize, median: f64) -> Vec<f64> {
        (0..n)
            .map(|_| {
                let u1 = 1.0 - rng.f64(); // (0, 1]
                let u2 = rng.f64();
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                median * z.exp()
            })
            .collect()
    }

    fn build(values: &[f64], limit: u32) -> LatencySketch {
        let mut s = LatencySketch::with_exact_limit(limit);
        for &v in values {
            s.add(v);
        }
        s
    }

    fn rel_err(est: f64, truth: f64) -> f64 {
        if truth == 0.0 {
            est.abs()
        } else {
            (est - truth).abs() / truth
        }
    }

    #[test]
    fn known_small_data_equals_percentile_cont() {
        let data = [
            10.0, 20.0, 30.0, 40.0, 50.0, 100.0, 150.0, 200.0, 300.0, 500.0, 800.0, 1000.0,
        ];
        // Deliberately out of order: the sketch must sort.
        let mut s = LatencySketch::new();
        for &v in data.iter().rev() {
            s.add(v);
        }
        // By hand: n = 12, position = q * 11 over the sorted data.
        // p50: pos 5.5  -> 100 + 0.5 * (150 - 100) = 125
        // p95: pos 10.45 -> 800 + 0.45 * (1000 - 800) = 890
        // p99: pos 10.89 -> 800 + 0.89 * (1000 - 800) = 978
        let p50 = s.quantile(0.5).unwrap();
        let p95 = s.quantile(0.95).unwrap();
        let p99 = s.quantile(0.99).unwrap();
        assert_eq!(p50.value, 125.0);
        assert!((p95.value - 890.0).abs() < 1e-9, "{p95:?}");
        assert!((p99.value - 978.0).abs() < 1e-9, "{p99:?}");
        assert_eq!(p50.rel_error_bound, 0.0);
        assert!(p50.value < p95.value && p95.value < p99.value);
        assert_eq!(s.quantile(0.0).unwrap().value, 10.0);
        assert_eq!(s.quantile(1.0).unwrap().value, 1000.0);
        assert_eq!(s.count(), 12);
        assert_eq!(s.sum(), 3200.0);
        assert_eq!(s.mean(), Some(3200.0 / 12.0));
        assert_eq!((s.min(), s.max()), (Some(10.0), Some(1000.0)));
    }

    #[test]
    fn empty_and_invalid_inputs() {
        let mut s = LatencySketch::new();
        assert_eq!(s.quantile(0.5), None);
        assert_eq!(s.min(), None);
        assert_eq!(s.mean(), None);
        for bad in [f64::NAN, f64::INFINITY, -1.0, f64::NEG_INFINITY] {
            s.add(bad);
        }
        assert_eq!(s.count(), 0);
        s.add(-0.0);
        s.add(5.0);
        assert_eq!(s.count(), 2);
        assert_eq!(s.quantile(1.5), None);
        assert_eq!(s.quantile(f64::NAN), None);
        assert_eq!(s.quantile(0.0).unwrap().value, 0.0);
        assert!(s.quantile(0.0).unwrap().value.is_sign_positive());
    }

    #[test]
    fn switches_to_bins_past_the_limit_and_reports_the_bound() {
        let mut s = LatencySketch::with_exact_limit(10);
        for i in 1..=10 {
            s.add(f64::from(i));
        }
        assert!(s.is_exact());
        s.add(11.0);
        assert!(!s.is_exact());
        let e = s.quantile(0.5).unwrap();
        assert_eq!(e.rel_error_bound, RELATIVE_ACCURACY);
        assert!(rel_err(e.value, 6.0) <= RELATIVE_ACCURACY);
        // Extremes stay exact in bin mode.
        assert_eq!(s.quantile(0.0).unwrap().value, 1.0);
        assert_eq!(s.quantile(1.0).unwrap().value, 11.0);
    }

    #[test]
    fn merging_two_exact_sketches_past_the_limit_converts() {
        let mut a = build(&[1.0, 2.0, 3.0], 4);
        let b = build(&[4.0, 5.0], 4);
        a.merge(&b);
        assert!(!a.is_exact());
        assert_eq!(a.count(), 5);
        let mut c = build(&[1.0, 2.0], 4);
        c.merge(&build(&[3.0, 4.0], 4));
        assert!(c.is_exact());
        assert_eq!(c.quantile(0.5).unwrap().value, 2.5);
    }

    #[test]
    fn smaller_limit_wins_on_merge() {
        let mut a = build(&[1.0, 2.0, 3.0], 1000);
        a.merge(&LatencySketch::with_exact_limit(2));
        assert_eq!(a.exact_limit(), 2);
        assert!(!a.is_exact());
    }

    #[test]
    fn zero_bin_and_tiny_values() {
        let values: Vec<f64> = (0..2000)
            .map(|i| if i % 2 == 0 { 0.0 } else { 1e-9 })
            .collect();
        let s = build(&values, 10);
        let e = s.quantile(0.5).unwrap();
        assert!(e.value.abs() < MIN_TRACKED_VALUE);
    }

    #[test]
    fn hourly_merges_stay_within_one_percent_over_windows() {
        // 200 "hours" of log-normal latencies with a shifting median, merged
        // into windows like the dashboard does.
        let mut rng = fastrand::Rng::with_seed(7);
        let hours: Vec<Vec<f64>> = (0..200)
            .map(|h| {
                let n = 50 + (h * 37) % 3000;
                log_normal(&mut rng, n, 20.0 + (h % 24) as f64 * 3.0)
            })
            .collect();
        let stored: Vec<Vec<u8>> = hours
            .iter()
            .map(|h| build(h, DEFAULT_EXACT_LIMIT).to_bytes())
            .collect();
        for window in [1, 24, 168, 200] {
            let mut merged = LatencySketch::new();
            let mut raw = Vec::new();
            for (bytes, values) in stored.iter().zip(&hours).take(window) {
                merged.merge(&LatencySketch::from_bytes(bytes).unwrap());
                raw.extend_from_slice(values);
            }
            for q in [0.5, 0.95, 0.99] {
                let truth = percentile_cont(&raw, q);
                let e = merged.quantile(q).unwrap();
                assert!(
                    rel_err(e.value, truth) <= e.rel_error_bound * (1.0 + 1e-9),
                    "window {window} q {q}: {} vs {truth}",
                    e.value
                );
            }
        }
    }

    #[test]
    fn decode_rejects_bad_bytes() {
        assert_eq!(LatencySketch::from_bytes(&[]), Err(DecodeError::Empty));
        assert!(matches!(
            LatencySketch::from_bytes(&[9, 0]),
            Err(DecodeError::UnsupportedVersion { found: 9, .. })
        ));
        let good = build(&[1.0, 2.0, 3.0], 2).to_bytes();
        for cut in 1..good.len() {
            assert!(
                LatencySketch::from_bytes(&good[..cut]).is_err(),
                "cut {cut}"
            );
        }
        let mut trailing = good;
        trailing.push(0);
        assert_eq!(
            LatencySketch::from_bytes(&trailing),
            Err(DecodeError::TrailingBytes(1))
        );
        // A huge bin count must not allocate.
        let mut bomb = vec![SKETCH_FORMAT_VERSION, MODE_BINS];
        put_varint(&mut bomb, 0);
        put_varint(&mut bomb, 5);
        for f in [5.0f64, 1.0, 1.0] {
            bomb.extend_from_slice(&f.to_le_bytes());
        }
        put_varint(&mut bomb, 0);
        put_varint(&mut bomb, zigzag(0));
        put_varint(&mut bomb, u64::MAX >> 1);
        assert!(LatencySketch::from_bytes(&bomb).is_err());
        // Counts that do not add up.
        let mut s = build(&[1.0, 2.0, 3.0], 2).to_bytes();
        let last = s.len() - 1;
        s[last] = 5;
        assert_eq!(
            LatencySketch::from_bytes(&s),
            Err(DecodeError::Corrupt(
                "bin counts do not add up to the count"
            ))
        );
    }

    #[test]
    fn encoding_is_compact() {
        let mut rng = fastrand::Rng::with_seed(1);
        let s = build(&log_normal(&mut rng, 10_000, 30.0), DEFAULT_EXACT_LIMIT);
        let len = s.to_bytes().len();
        assert!(len < 2_000, "{len} bytes");
    }

    fn sample_values() -> impl Strategy<Value = Vec<f64>> {
        prop::collection::vec(
            prop_oneof![
                8 => 0.01f64..60_000.0,
                1 => Just(0.0),
                1 => 0.0f64..1e-6,
            ],
            0..400,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn merge_is_commutative_and_associative(
            a in sample_values(), b in sample_values(), c in sample_values(), limit in 0u32..600,
        ) {
            let (sa, sb, sc) = (build(&a, limit), build(&b, limit), build(&c, limit));
            let mut ab_c = sa.clone();
            ab_c.merge(&sb);
            ab_c.merge(&sc);
            let mut bc = sb.clone();
            bc.merge(&sc);
            let mut a_bc = sa.clone();
            a_bc.merge(&bc);
            let mut cba = sc.clone();
            cba.merge(&sb);
            cba.merge(&sa);
            let all: Vec<f64> = a.iter().chain(&b).chain(&c).copied().collect();
            let single = build(&all, limit);
            for s in [&a_bc, &cba, &single] {
                prop_assert_eq!(s.count(), ab_c.count());
                prop_assert_eq!(s.is_exact(), ab_c.is_exact());
                prop_assert_eq!(s.min(), ab_c.min());
                prop_assert_eq!(s.max(), ab_c.max());
                for q in [0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 1.0] {
                    // Same multiset -> same bins/values -> identical estimates.
                    prop_assert_eq!(s.quantile(q), ab_c.quantile(q));
                }
            }
            if !all.is_empty() {
                for q in [0.0, 0.5, 0.95, 0.99, 1.0] {
                    let truth = percentile_cont(&all, q);
                    let e = ab_c.quantile(q).unwrap();
                    if e.rel_error_bound == 0.0 {
                        prop_assert_eq!(e.value, truth);
                    } else {
                        // The documented bound: relative, plus the zero bin's
                        // absolute MIN_TRACKED_VALUE for sub-threshold samples.
                        prop_assert!((e.value - truth).abs()
                            <= RELATIVE_ACCURACY * truth * (1.0 + 1e-9) + MIN_TRACKED_VALUE,
                            "q {} est {} truth {}", q, e.value, truth);
                    }
                }
            }
        }

        #[test]
        fn relative_error_beyond_the_exact_limit(seed in any::<u64>(), n in 1_001usize..20_000, median in 1.0f64..500.0) {
            let mut rng = fastrand::Rng::with_seed(seed);
            let values = log_normal(&mut rng, n, median);
            let s = build(&values, DEFAULT_EXACT_LIMIT);
            prop_assert!(!s.is_exact());
            for q in [0.001, 0.1, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999] {
                let truth = percentile_cont(&values, q);
                let e = s.quantile(q).unwrap();
                prop_assert!(rel_err(e.value, truth) <= RELATIVE_ACCURACY * (1.0 + 1e-9),
                    "q {} est {} truth {}", q, e.value, truth);
            }
        }

        #[test]
        fn serialisation_round_trips(values in sample_values(), limit in 0u32..600) {
            let mut s = build(&values, limit);
            let bytes = s.to_bytes();
            let back = LatencySketch::from_bytes(&bytes).unwrap();
            prop_assert_eq!(back.to_bytes(), bytes);
            prop_assert_eq!(back.count(), s.count());
            for q in [0.0, 0.5, 0.99, 1.0] {
                prop_assert_eq!(back.quantile(q), s.quantile(q));
            }
            // The decoded sketch keeps working: add and merge after a round trip.
            s.add(42.0);
            let mut back = back;
            back.add(42.0);
            prop_assert_eq!(back.quantile(0.5), s.quantile(0.5));
        }
    }
}
