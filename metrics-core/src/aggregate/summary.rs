//! Summary math for performance records and usage events: fold records into a
//! mergeable summary, merge summaries of many buckets, and render the
//! `aggregated_values` keys of the hourly rollups.
//!
//! An *error* is a request with status ≥ 400 (the API's rule), so the error count is
//! derived from the status distribution and never stored twice.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{DistinctUsers, LatencySketch};
use crate::{RequestRecord, UsageEvent};

/// The `aggregated_values` of a performance rollup row, with exactly the keys
/// of the original design. Quantities are milliseconds; every field is `0`
/// for an empty summary ("empty data is zeros").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PerformanceValues {
    /// Mean response time.
    pub avg: f64,
    /// Fastest response time.
    pub min: f64,
    /// Slowest response time.
    pub max: f64,
    /// Sum of response times.
    pub sum: f64,
    /// Number of requests.
    pub count: u64,
    /// Median (`percentile_cont(0.5)`; see [`LatencySketch::quantile`]).
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Requests with status ≥ 400.
    pub error_count: u64,
    /// `error_count / count` (0..=1).
    pub error_rate: f64,
    /// Requests per status code (JSON object keys are the codes as text).
    pub status_code_distribution: BTreeMap<u16, u64>,
}

/// The `aggregated_values` of a usage rollup row, with exactly the keys of
/// the original design.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct UsageValues {
    /// Number of events.
    pub total_events: u64,
    /// Distinct users (see [`DistinctUsers::estimate`] for the bound).
    pub unique_users: u64,
    /// Events per page name (events without a page are not listed).
    pub event_count_by_page: BTreeMap<String, u64>,
    /// Events with `success: true`.
    pub success_count: u64,
    /// Events with `success: false`.
    pub failure_count: u64,
    /// `success_count / (success_count + failure_count)`; events that carry
    /// no success flag count in neither; `0` when none does.
    pub success_rate: f64,
}

/// Mergeable performance summary of one bucket or of a whole window.
///
/// # Example
///
/// ```
/// use metrics_core::aggregate::PerformanceSummary;
///
/// let mut s = PerformanceSummary::new();
/// s.add_sample(200, 12.0);
/// s.add_sample(200, 18.0);
/// s.add_sample(503, 100.0);
/// let v = s.values();
/// assert_eq!(v.count, 3);
/// assert_eq!(v.error_count, 1);
/// assert_eq!(v.p50, 18.0);
/// let json = serde_json::to_value(&v).unwrap();
/// assert_eq!(json["status_code_distribution"]["200"], 2);
/// ```
///
/// It is the one accumulator of request statistics: the in-memory store
/// folds records into it, the PostgreSQL rollups fold raw rows into it and
/// store its parts, and the PostgreSQL reports merge stored parts into it.
/// A summary either tallies status codes (every constructor but
/// [`without_status_codes`](Self::without_status_codes) and
/// [`from_counts`](Self::from_counts)) or keeps only the request and error
/// counts, which is all a report needs.
#[derive(Clone, Debug, PartialEq)]
pub struct PerformanceSummary {
    latency: LatencySketch,
    count: u64,
    errors: u64,
    /// Requests per status code; `None` when not tallied. Invariant: when
    /// present, it sums to `count` and its codes ≥ 400 sum to `errors`, so
    /// a merge with an untallied summary drops it rather than keep a
    /// partial distribution.
    status: Option<BTreeMap<u16, u64>>,
}

impl Default for PerformanceSummary {
    fn default() -> Self {
        Self::with_sketch(LatencySketch::default())
    }
}

/// Mergeable usage summary of one bucket or of a whole window.
///
/// # Example
///
/// ```
/// use std::time::SystemTime;
/// use metrics_core::{UsageEvent, UserId, aggregate::UsageSummary};
///
/// let mut s = UsageSummary::new();
/// let e = UsageEvent::new("page_view", UserId::new("ada"), SystemTime::now())
///     .with_page_name(Some("/home".into()))
///     .with_success(Some(true));
/// s.add(&e);
/// s.add(&e);
/// let v = s.values();
/// assert_eq!((v.total_events, v.unique_users, v.success_rate), (2, 1, 1.0));
/// assert_eq!(s.event_count_by_type()["page_view"], 2);
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UsageSummary {
    total: u64,
    by_type: BTreeMap<String, u64>,
    by_page: BTreeMap<String, u64>,
    success: u64,
    failure: u64,
    users: DistinctUsers,
}

// ===== impl PerformanceSummary =====

impl PerformanceSummary {
    /// An empty summary with a default [`LatencySketch`], tallying status
    /// codes.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty summary around `sketch` (for a non-default exact limit),
    /// tallying status codes.
    pub fn with_sketch(sketch: LatencySketch) -> Self {
        Self {
            latency: sketch,
            count: 0,
            errors: 0,
            status: Some(BTreeMap::new()),
        }
    }

    /// An empty summary around `sketch` that counts requests and errors but
    /// keeps no per-status distribution (cheaper per request, for answers
    /// that do not show it).
    pub fn without_status_codes(sketch: LatencySketch) -> Self {
        Self {
            latency: sketch,
            count: 0,
            errors: 0,
            status: None,
        }
    }

    /// Rebuilds a stored summary from its rollup row: the decoded sketch and
    /// the row's `status_code_distribution`.
    pub fn from_parts(sketch: LatencySketch, status_code_distribution: BTreeMap<u16, u64>) -> Self {
        Self {
            latency: sketch,
            count: status_code_distribution.values().sum(),
            errors: errors_of(&status_code_distribution),
            status: Some(status_code_distribution),
        }
    }

    /// Rebuilds a stored summary of which only the counts are known: the
    /// decoded sketch, the number of requests and those with status ≥ 400
    /// (no status distribution).
    pub fn from_counts(sketch: LatencySketch, count: u64, error_count: u64) -> Self {
        Self {
            latency: sketch,
            count,
            errors: error_count,
            status: None,
        }
    }

    /// Folds one request record in.
    pub fn add(&mut self, record: &RequestRecord) {
        self.add_sample(record.status, record.response_time_ms);
    }

    /// Folds one request in from its columns (for streaming raw rows).
    /// Latencies that are not finite and non-negative still count in the
    /// request and status counts but not in the latency statistics.
    #[inline]
    pub fn add_sample(&mut self, status: u16, response_time_ms: f64) {
        self.latency.add(response_time_ms);
        self.count += 1;
        self.errors += u64::from(status >= 400);
        if let Some(codes) = &mut self.status {
            *codes.entry(status).or_insert(0) += 1;
        }
    }

    /// Merges another bucket's summary in. The status distribution is kept
    /// only when both summaries tally it.
    pub fn merge(&mut self, other: &Self) {
        self.count += other.count;
        self.errors += other.errors;
        self.latency.merge(&other.latency);
        match (&mut self.status, &other.status) {
            (Some(codes), Some(theirs)) => {
                for (&code, &n) in theirs {
                    *codes.entry(code).or_insert(0) += n;
                }
            }
            (Some(_), None) => self.status = None,
            (None, _) => {}
        }
    }

    /// Merges in the parts of a stored summary without building one: its
    /// request and error counts and its sketch. The status distribution,
    /// unknown for those requests, is dropped.
    pub fn merge_counts(&mut self, count: u64, error_count: u64, latency: &LatencySketch) {
        self.count += count;
        self.errors += error_count;
        self.latency.merge(latency);
        self.status = None;
    }

    /// Number of requests (including any with an unusable latency).
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Requests with status ≥ 400.
    pub fn error_count(&self) -> u64 {
        self.errors
    }

    /// `error_count / count` (0 for no requests).
    pub fn error_rate(&self) -> f64 {
        ratio(self.errors, self.count)
    }

    /// The latency sketch (for quantiles with their error bounds, and for
    /// storage via [`LatencySketch::to_bytes`]).
    pub fn latency(&self) -> &LatencySketch {
        &self.latency
    }

    /// The latency sketch, taken out (to store or cache it without a copy).
    pub fn into_latency(self) -> LatencySketch {
        self.latency
    }

    /// The `q` quantile of the latencies in milliseconds, `0` when there are
    /// none (see [`LatencySketch::quantile`] for its error bound).
    pub fn quantile(&self, q: f64) -> f64 {
        self.latency.quantile(q).map_or(0.0, |e| e.value)
    }

    /// Sorts the sketch's exact samples once, so that later quantiles and
    /// [`LatencySketch::to_bytes`] do not each sort a copy.
    pub fn sort_samples(&mut self) {
        self.latency.sort_samples();
    }

    /// Requests per status code, when this summary tallies them.
    pub fn status_code_distribution(&self) -> Option<&BTreeMap<u16, u64>> {
        self.status.as_ref()
    }

    /// The `aggregated_values` of this summary (an empty
    /// `status_code_distribution` when it tallies none).
    pub fn values(&self) -> PerformanceValues {
        PerformanceValues {
            avg: self.latency.mean().unwrap_or(0.0),
            min: self.latency.min().unwrap_or(0.0),
            max: self.latency.max().unwrap_or(0.0),
            sum: self.latency.sum(),
            count: self.count,
            p50: self.quantile(0.5),
            p95: self.quantile(0.95),
            p99: self.quantile(0.99),
            error_count: self.errors,
            error_rate: self.error_rate(),
            status_code_distribution: self.status.clone().unwrap_or_default(),
        }
    }
}

/// Requests with status ≥ 400 in a distribution (the API's error rule).
fn errors_of(codes: &BTreeMap<u16, u64>) -> u64 {
    codes.range(400..).map(|(_, n)| n).sum()
}

// ===== impl UsageSummary =====

impl UsageSummary {
    /// An empty summary.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds a stored summary from its rollup row: the row's values, its
    /// event type (`None` for an all-types row, whose per-type split then
    /// stays empty) and the decoded distinct-users state.
    pub fn from_parts(
        values: &UsageValues,
        event_type: Option<&str>,
        users: DistinctUsers,
    ) -> Self {
        let mut by_type = BTreeMap::new();
        if let Some(t) = event_type {
            let _ = by_type.insert(t.to_owned(), values.total_events);
        }
        Self {
            total: values.total_events,
            by_type,
            by_page: values.event_count_by_page.clone(),
            success: values.success_count,
            failure: values.failure_count,
            users,
        }
    }

    /// Folds one usage event in.
    pub fn add(&mut self, event: &UsageEvent) {
        self.add_event(
            &event.event_type,
            event.user_id.as_str(),
            event.page_name.as_deref(),
            event.success,
        );
    }

    /// Folds one event in from its columns (for streaming raw rows).
    pub fn add_event(
        &mut self,
        event_type: &str,
        user_id: &str,
        page_name: Option<&str>,
        success: Option<bool>,
    ) {
        self.total += 1;
        bump(&mut self.by_type, event_type);
        if let Some(page) = page_name {
            bump(&mut self.by_page, page);
        }
        match success {
            Some(true) => self.success += 1,
            Some(false) => self.failure += 1,
            None => {}
        }
        self.users.add(user_id);
    }

    /// Merges another bucket's summary in.
    pub fn merge(&mut self, other: &Self) {
        self.total += other.total;
        for (k, &n) in &other.by_type {
            add_to(&mut self.by_type, k, n);
        }
        for (k, &n) in &other.by_page {
            add_to(&mut self.by_page, k, n);
        }
        self.success += other.success;
        self.failure += other.failure;
        self.users.merge(&other.users);
    }

    /// Events per event type.
    pub fn event_count_by_type(&self) -> &BTreeMap<String, u64> {
        &self.by_type
    }

    /// The distinct-users state (for its estimate's bound, and for storage).
    pub fn users(&self) -> &DistinctUsers {
        &self.users
    }

    /// The `aggregated_values` of this summary.
    pub fn values(&self) -> UsageValues {
        UsageValues {
            total_events: self.total,
            unique_users: self.users.estimate().value,
            event_count_by_page: self.by_page.clone(),
            success_count: self.success,
            failure_count: self.failure,
            success_rate: ratio(self.success, self.success + self.failure),
        }
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn bump(map: &mut BTreeMap<String, u64>, key: &str) {
    // Look up by &str first so repeated keys do not allocate.
    match map.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            let _ = map.insert(key.to_owned(), 1);
        }
    }
}

fn add_to(map: &mut BTreeMap<String, u64>, key: &str, n: u64) {
    match map.get_mut(key) {
        Some(v) => *v += n,
        None => {
            let _ = map.insert(key.to_owned(), n);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::{Method, Route, UserId};

    #[test]
    fn performance_values_from_records() {
        let mut s = PerformanceSummary::new();
        let lat = [
            10.0, 20.0, 30.0, 40.0, 50.0, 100.0, 150.0, 200.0, 300.0, 500.0, 800.0, 1000.0,
        ];
        let statuses = [200, 200, 201, 200, 404, 200, 500, 200, 200, 200, 503, 200];
        for (&ms, &status) in lat.iter().zip(&statuses) {
            let r = RequestRecord::new(
                SystemTime::UNIX_EPOCH,
                Route::from_static("/x"),
                Method::GET,
                status,
                Duration::from_secs_f64(ms / 1000.0),
            );
            s.add(&r);
        }
        let v = s.values();
        assert_eq!(v.count, 12);
        assert_eq!(v.error_count, 3);
        assert_eq!(v.error_rate, 0.25);
        assert!((v.sum - 3200.0).abs() < 1e-9);
        assert!((v.avg - 3200.0 / 12.0).abs() < 1e-9);
        assert!((v.min - 10.0).abs() < 1e-9 && (v.max - 1000.0).abs() < 1e-9);
        // percentile_cont by hand: positions 5.5, 10.45, 10.89.
        assert!((v.p50 - 125.0).abs() < 1e-9);
        assert!((v.p95 - 890.0).abs() < 1e-9);
        assert!((v.p99 - 978.0).abs() < 1e-9);
        assert_eq!(v.status_code_distribution[&200], 8);
        assert_eq!(v.status_code_distribution[&201], 1);
    }

    #[test]
    fn performance_json_has_exactly_the_design_keys() {
        let mut s = PerformanceSummary::new();
        s.add_sample(200, 5.0);
        let json = serde_json::to_value(s.values()).unwrap();
        let mut keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "avg",
                "count",
                "error_count",
                "error_rate",
                "max",
                "min",
                "p50",
                "p95",
                "p99",
                "status_code_distribution",
                "sum"
            ]
        );
        let back: PerformanceValues = serde_json::from_value(json).unwrap();
        assert_eq!(back, s.values());
    }

    #[test]
    fn empty_summaries_are_zeros() {
        let v = PerformanceSummary::new().values();
        assert_eq!((v.count, v.avg, v.p99, v.error_rate), (0, 0.0, 0.0, 0.0));
        let u = UsageSummary::new().values();
        assert_eq!(
            (u.total_events, u.unique_users, u.success_rate),
            (0, 0, 0.0)
        );
    }

    #[test]
    fn performance_merge_matches_single_pass_and_round_trips() {
        let mut a = PerformanceSummary::new();
        let mut b = PerformanceSummary::new();
        let mut all = PerformanceSummary::new();
        for i in 0..50u16 {
            let status = if i % 7 == 0 { 500 } else { 200 };
            let ms = f64::from(i) * 1.5;
            if i % 2 == 0 { &mut a } else { &mut b }.add_sample(status, ms);
            all.add_sample(status, ms);
        }
        let stored = b.values();
        let b_back = PerformanceSummary::from_parts(
            LatencySketch::from_bytes(&b.latency().to_bytes()).unwrap(),
            stored.status_code_distribution,
        );
        a.merge(&b_back);
        assert_eq!(a.values(), all.values());
    }

    #[test]
    fn a_summary_of_counts_answers_like_a_tallied_one_without_its_distribution() {
        let mut tallied = PerformanceSummary::new();
        let mut counted = PerformanceSummary::without_status_codes(LatencySketch::default());
        for (status, ms) in [(200, 10.0), (404, 20.0), (503, 30.0), (200, f64::NAN)] {
            tallied.add_sample(status, ms);
            counted.add_sample(status, ms);
        }
        assert_eq!((counted.count(), counted.error_count()), (4, 2));
        assert_eq!(counted.status_code_distribution(), None);
        assert_eq!(tallied.status_code_distribution().unwrap()[&200], 2);
        let (mut t, c) = (tallied.values(), counted.values());
        assert!(c.status_code_distribution.is_empty());
        t.status_code_distribution.clear();
        assert_eq!(t, c);

        // Stored counts merge in without a copy of their sketch; the merged
        // distribution would be partial, so it is dropped.
        let stored = PerformanceSummary::from_counts(tallied.latency().clone(), 4, 2);
        let mut merged = tallied.clone();
        merged.merge(&stored);
        assert_eq!((merged.count(), merged.error_count()), (8, 4));
        assert_eq!(merged.status_code_distribution(), None);
        let mut by_parts = PerformanceSummary::without_status_codes(LatencySketch::default());
        by_parts.merge_counts(4, 2, tallied.latency());
        by_parts.merge_counts(4, 2, stored.latency());
        assert_eq!(by_parts, merged);
        assert!((merged.error_rate() - 0.5).abs() < 1e-12);
        assert_eq!(merged.quantile(0.5), 20.0);
        assert_eq!(PerformanceSummary::new().quantile(0.5), 0.0);
    }

    #[test]
    fn usage_values_and_merge() {
        let mut a = UsageSummary::new();
        a.add_event("page_view", "ada", Some("/home"), None);
        a.add_event("button_click", "ada", Some("/home"), Some(true));
        a.add_event("button_click", "bob", None, Some(false));
        let mut b = UsageSummary::new();
        b.add(
            &UsageEvent::new("page_view", UserId::new("cy"), SystemTime::UNIX_EPOCH)
                .with_page_name(Some("/about".into()))
                .with_success(Some(true)),
        );
        a.merge(&b);
        let v = a.values();
        assert_eq!(v.total_events, 4);
        assert_eq!(v.unique_users, 3);
        assert_eq!(v.event_count_by_page["/home"], 2);
        assert_eq!(v.event_count_by_page["/about"], 1);
        assert_eq!((v.success_count, v.failure_count), (2, 1));
        assert!((v.success_rate - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(a.event_count_by_type()["button_click"], 2);
        assert_eq!(a.event_count_by_type()["page_view"], 2);
        let json = serde_json::to_value(&v).unwrap();
        let mut keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "event_count_by_page",
                "failure_count",
                "success_count",
                "success_rate",
                "total_events",
                "unique_users"
            ]
        );
    }

    #[test]
    fn usage_from_parts_restores_a_row() {
        let mut s = UsageSummary::new();
        s.add_event("search", "ada", Some("/s"), Some(true));
        s.add_event("search", "bob", Some("/s"), Some(false));
        let back = UsageSummary::from_parts(
            &s.values(),
            Some("search"),
            DistinctUsers::from_bytes(&s.users().to_bytes()).unwrap(),
        );
        assert_eq!(back, s);
    }
}
