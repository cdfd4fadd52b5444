//! [`MetricsQuery`] for the in-memory store: every answer is computed from
//! the stored raw records (there are no rollups to merge), so it is exact up
//! to the store's eviction of old records.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::{
    DataPoint, EndpointMetrics, MetricsQuery, PAGE_VIEW, PerformanceMetrics, PerformancePoint,
    PerformanceQuery, PerformanceReport, QueryError, SlowRequest, SlowRequests, SlowRequestsQuery,
    TimeSeries, TimeSeriesQuery, UsageMetrics, UsagePoint, UsageQuery, UsageReport,
    sort_slowest_first, sort_slowest_requests,
};
use crate::aggregate::{DistinctUsers, PerformanceSummary, Resolution, TimeRange, UsageSummary};
use crate::memory::MemorySink;
use crate::record::Record;

#[async_trait]
impl MetricsQuery for MemorySink {
    async fn performance(&self, query: &PerformanceQuery) -> Result<PerformanceReport, QueryError> {
        let endpoint = query.endpoint.as_deref();
        Ok(self.with_records(|records| {
            let mut total = PerformanceSummary::new();
            let mut users = DistinctUsers::new();
            let mut per_key: BTreeMap<(&str, &str), PerformanceSummary> = BTreeMap::new();
            for r in records.iter().filter_map(as_request) {
                if !query.range.contains(r.timestamp)
                    || endpoint.is_some_and(|e| e != r.route.as_str())
                {
                    continue;
                }
                total.add(r);
                if let Some(u) = &r.user_id {
                    users.add(u.as_str());
                }
                per_key
                    .entry((r.route.as_str(), r.method.as_str()))
                    .or_default()
                    .add(r);
            }
            let mut endpoints: Vec<EndpointMetrics> = per_key
                .iter()
                .map(|(&(e, m), s)| EndpointMetrics::from_summary(e, m, s))
                .collect();
            sort_slowest_first(&mut endpoints);
            PerformanceReport {
                metrics: PerformanceMetrics::from_summary(&total, users.estimate().value),
                endpoints,
            }
        }))
    }

    async fn usage(&self, query: &UsageQuery) -> Result<UsageReport, QueryError> {
        let event_type = query.event_type.as_deref();
        let hour = TimeRange::custom(
            Resolution::Hour.floor(query.now),
            query.now + NUDGE,
            query.now + NUDGE,
        )
        .ok();
        Ok(self.with_records(|records| {
            let mut summary = UsageSummary::new();
            let mut page_views = BTreeMap::new();
            let mut active = DistinctUsers::new();
            let mut current_hour = DistinctUsers::new();
            for rec in records {
                let (t, user) = match rec {
                    Record::Request(r) => match &r.user_id {
                        Some(u) => (r.timestamp, u.as_str()),
                        None => continue,
                    },
                    Record::Usage(e) => {
                        if query.range.contains(e.timestamp)
                            && event_type.is_none_or(|t| t == e.event_type)
                        {
                            summary.add(e);
                            if let (PAGE_VIEW, Some(page)) =
                                (e.event_type.as_str(), e.page_name.as_deref())
                            {
                                *page_views.entry(page.to_owned()).or_default() += 1;
                            }
                        }
                        (e.timestamp, e.user_id.as_str())
                    }
                };
                if query.range.contains(t) {
                    active.add(user);
                }
                if hour.is_some_and(|h| h.contains(t)) {
                    current_hour.add(user);
                }
            }
            let values = summary.values();
            UsageReport {
                metrics: UsageMetrics {
                    total_events: values.total_events,
                    unique_users: values.unique_users,
                    active_users: active.estimate().value,
                    active_users_current_hour: current_hour.estimate().value,
                },
                event_distribution: summary.event_count_by_type().clone(),
                page_views,
            }
        }))
    }

    async fn time_series(&self, query: &TimeSeriesQuery) -> Result<TimeSeries, QueryError> {
        query.check()?;
        let starts: Vec<SystemTime> = query.range.buckets(query.resolution).collect();
        let width = query.resolution.duration();
        let kind = query.metric_type;
        let (endpoint, method) = (query.endpoint.as_deref(), query.method.as_deref());
        Ok(self.with_records(|records| {
            let mut perf = vec![PerformanceSummary::new(); starts.len()];
            let mut usage = vec![(0u64, DistinctUsers::new()); starts.len()];
            let mut any = false;
            let first = starts.first().copied();
            // Whole buckets: the first one starts at the bucket boundary
            // before the range start, like the rollups the stores read.
            let index = |t: SystemTime| -> Option<usize> {
                if t >= query.range.end() {
                    return None;
                }
                let offset = t.duration_since(first?).ok()?;
                usize::try_from(offset.as_secs() / width.as_secs()).ok()
            };
            for rec in records {
                match rec {
                    Record::Request(r)
                        if kind.includes_performance()
                            && endpoint.is_none_or(|e| e == r.route.as_str())
                            && method.is_none_or(|m| m == r.method.as_str()) =>
                    {
                        if let Some(i) = index(r.timestamp) {
                            perf[i].add(r);
                            any = true;
                        }
                    }
                    Record::Usage(e) if kind.includes_usage() => {
                        if let Some(i) = index(e.timestamp) {
                            usage[i].0 += 1;
                            usage[i].1.add(e.user_id.as_str());
                            any = true;
                        }
                    }
                    _ => {}
                }
            }
            if !any {
                return TimeSeries::default();
            }
            let data_points = starts
                .iter()
                .zip(perf.iter().zip(&usage))
                .map(|(&timestamp, (p, (n, users)))| DataPoint {
                    timestamp,
                    performance: kind
                        .includes_performance()
                        .then(|| PerformancePoint::from_summary(p)),
                    usage: kind.includes_usage().then(|| UsagePoint {
                        total_events: *n,
                        unique_users: users.estimate().value,
                    }),
                })
                .collect();
            TimeSeries { data_points }
        }))
    }

    async fn user_event_count(&self, user_id: &str, range: &TimeRange) -> Result<u64, QueryError> {
        Ok(self.with_records(|records| {
            records
                .iter()
                .filter(|rec| match rec {
                    Record::Usage(e) => {
                        e.user_id.as_str() == user_id && range.contains(e.timestamp)
                    }
                    Record::Request(_) => false,
                })
                .count() as u64
        }))
    }

    async fn slowest_requests(
        &self,
        query: &SlowRequestsQuery,
    ) -> Result<SlowRequests, QueryError> {
        let (start, end) = query.window();
        let method = query.method.as_deref();
        Ok(self.with_records(|records| {
            let mut status_codes = BTreeMap::new();
            let mut requests = Vec::new();
            for r in records.iter().filter_map(as_request) {
                if r.timestamp < start
                    || r.timestamp >= end
                    || r.route.as_str() != query.endpoint
                    || method.is_some_and(|m| m != r.method.as_str())
                {
                    continue;
                }
                *status_codes.entry(r.status).or_insert(0) += 1;
                requests.push(SlowRequest {
                    timestamp: whole_micros(r.timestamp),
                    method: r.method.as_str().to_owned(),
                    status_code: r.status,
                    response_time_ms: r.response_time_ms,
                    user_id: r.user_id.as_ref().map(|u| u.as_str().to_owned()),
                    correlation_id: r.correlation_id.as_ref().map(|c| c.as_str().to_owned()),
                });
            }
            sort_slowest_requests(&mut requests);
            requests.truncate(query.limit);
            SlowRequests {
                requests,
                status_codes,
            }
        }))
    }
}

/// `t` truncated to whole microseconds (towards the past), as PostgreSQL
/// stores timestamps: both stores then report and order requests alike.
fn whole_micros(t: SystemTime) -> SystemTime {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => SystemTime::UNIX_EPOCH + Duration::new(d.as_secs(), d.subsec_micros() * 1_000),
        // Before 1970: whole microseconds already in practice; leave it.
        Err(_) => t,
    }
}

/// The current hour runs to `now` inclusive: a record stamped exactly `now`
/// belongs to it.
const NUDGE: Duration = Duration::from_nanos(1);

fn as_request(rec: &Record) -> Option<&crate::record::RequestRecord> {
    match rec {
        Record::Request(r) => Some(r),
        Record::Usage(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::aggregate::Preset;
    use crate::query::{RAW_RETENTION, SeriesKind};
    use crate::record::{Method, RequestRecord, Route, UsageEvent, UserId};

    const T0: u64 = 1_717_236_000; // 2024-06-01T10:00:00Z

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn req(
        secs: u64,
        route: &'static str,
        status: u16,
        ms: u64,
        user: Option<&str>,
    ) -> RequestRecord {
        let mut r = RequestRecord::new(
            at(secs),
            Route::from_static(route),
            Method::GET,
            status,
            Duration::from_millis(ms),
        );
        r.user_id = user.map(UserId::new);
        r
    }

    fn ev(secs: u64, kind: &str, user: &str, page: Option<&str>) -> UsageEvent {
        UsageEvent::new(kind, UserId::new(user), at(secs)).with_page_name(page.map(str::to_owned))
    }

    #[tokio::test]
    async fn empty_store_answers_zeros_and_empty_lists() {
        let store = MemorySink::new();
        let now = at(T0);
        let range = TimeRange::preset(Preset::Last24Hours, now);
        let p = store
            .performance(&PerformanceQuery::new(range, now))
            .await
            .unwrap();
        assert_eq!(p, PerformanceReport::default());
        let u = store.usage(&UsageQuery::new(range, now)).await.unwrap();
        assert_eq!(u, UsageReport::default());
        let s = store
            .time_series(&TimeSeriesQuery::new(range, SeriesKind::Both, now))
            .await
            .unwrap();
        assert!(s.data_points.is_empty());
        assert_eq!(store.user_event_count("ada", &range).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn performance_filters_range_and_endpoint_and_sorts_slowest_first() {
        let store = MemorySink::new();
        let now = at(T0 + 1800);
        store.insert(req(T0, "/fast", 200, 10, Some("ada")));
        store.insert(req(T0 + 1, "/fast", 404, 30, Some("bob")));
        store.insert(req(T0 + 2, "/slow", 200, 500, Some("ada")));
        store.insert(req(T0 - 2 * 86_400, "/slow", 200, 9_000, None)); // out of range
        let range = TimeRange::preset(Preset::Last24Hours, now);
        let p = store
            .performance(&PerformanceQuery::new(range, now))
            .await
            .unwrap();
        assert_eq!(p.metrics.total_requests, 3);
        assert_eq!(p.metrics.active_users, 2);
        assert_eq!(p.metrics.p50_response_time_ms, 30.0);
        assert!((p.metrics.error_rate - 1.0 / 3.0).abs() < 1e-12);
        let names: Vec<_> = p.endpoints.iter().map(|e| e.endpoint.as_str()).collect();
        assert_eq!(names, ["/slow", "/fast"]);
        assert_eq!(
            (p.endpoints[1].request_count, p.endpoints[1].error_count),
            (2, 1)
        );
        let only = store
            .performance(&PerformanceQuery::new(range, now).endpoint("/fast"))
            .await
            .unwrap();
        assert_eq!(only.metrics.total_requests, 2);
        assert_eq!(only.endpoints.len(), 1);
    }

    #[tokio::test]
    async fn usage_counts_types_pages_and_users_across_requests_and_events() {
        let store = MemorySink::new();
        let now = at(T0 + 1800);
        store.insert(ev(T0 + 10, "page_view", "ada", Some("/home")));
        store.insert(ev(T0 - 7200, "page_view", "bob", Some("/home")));
        store.insert(ev(T0 + 20, "button_click", "ada", Some("/about")));
        store.insert(req(T0 + 30, "/x", 200, 5, Some("cy"))); // active, no event
        let range = TimeRange::preset(Preset::Last24Hours, now);
        let u = store.usage(&UsageQuery::new(range, now)).await.unwrap();
        assert_eq!(u.metrics.total_events, 3);
        assert_eq!(u.metrics.unique_users, 2);
        assert_eq!(u.metrics.active_users, 3);
        // The current hour (10:00..10:30) holds ada and cy.
        assert_eq!(u.metrics.active_users_current_hour, 2);
        assert_eq!(u.event_distribution["page_view"], 2);
        // Only page views count by page: the click on /about is not one.
        assert_eq!(u.page_views, BTreeMap::from([("/home".to_owned(), 2)]));
        let clicks = store
            .usage(&UsageQuery::new(range, now).event_type("button_click"))
            .await
            .unwrap();
        assert_eq!(clicks.metrics.total_events, 1);
        assert_eq!(store.user_event_count("ada", &range).await.unwrap(), 2);
        assert_eq!(store.user_event_count("bob", &range).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn time_series_fills_every_bucket_once_there_is_data() {
        let store = MemorySink::new();
        let now = at(T0 + 3600);
        let range = TimeRange::custom(at(T0), now, now).unwrap();
        store.insert(req(T0 + 10, "/x", 200, 10, None));
        store.insert(req(T0 + 20, "/x", 500, 30, None));
        store.insert(req(T0 + 610, "/x", 200, 50, None));
        store.insert(ev(T0 + 620, "page_view", "ada", None));
        let s = store
            .time_series(&TimeSeriesQuery::new(range, SeriesKind::Both, now))
            .await
            .unwrap();
        assert_eq!(s.data_points.len(), 12);
        assert_eq!(s.data_points[0].timestamp, at(T0));
        let p0 = s.data_points[0].performance.as_ref().unwrap();
        assert_eq!((p0.total_requests, p0.error_count), (2, 1));
        let b2 = &s.data_points[2];
        assert_eq!(b2.performance.as_ref().unwrap().total_requests, 1);
        assert_eq!(b2.usage.as_ref().unwrap().total_events, 1);
        assert_eq!(
            s.data_points[5]
                .performance
                .as_ref()
                .unwrap()
                .total_requests,
            0
        );
        let hourly = store
            .time_series(
                &TimeSeriesQuery::new(range, SeriesKind::Performance, now)
                    .resolution(Resolution::Hour),
            )
            .await
            .unwrap();
        assert_eq!(hourly.data_points.len(), 1);
        assert_eq!(
            hourly.data_points[0]
                .performance
                .as_ref()
                .unwrap()
                .total_requests,
            3
        );
        assert!(hourly.data_points[0].usage.is_none());
    }

    fn req_m(
        secs: u64,
        route: &'static str,
        method: Method,
        status: u16,
        ms: u64,
    ) -> RequestRecord {
        RequestRecord::new(
            at(secs),
            Route::from_static(route),
            method,
            status,
            Duration::from_millis(ms),
        )
    }

    #[tokio::test]
    async fn time_series_filters_requests_by_endpoint_and_method_but_never_usage() {
        let store = MemorySink::new();
        let now = at(T0 + 3600);
        let range = TimeRange::custom(at(T0), now, now).unwrap();
        store.insert(req_m(T0 + 10, "/a", Method::GET, 200, 10));
        store.insert(req_m(T0 + 20, "/a", Method::POST, 500, 30));
        store.insert(req_m(T0 + 30, "/b", Method::GET, 200, 50));
        store.insert(ev(T0 + 40, "page_view", "ada", None));
        let series = |q: TimeSeriesQuery| {
            let store = store.clone();
            async move { store.time_series(&q).await.unwrap() }
        };
        let first = |s: &TimeSeries| s.data_points[0].performance.clone().unwrap();
        let base = TimeSeriesQuery::new(range, SeriesKind::Both, now);
        let a = series(base.clone().endpoint("/a")).await;
        assert_eq!((first(&a).total_requests, first(&a).error_count), (2, 1));
        assert_eq!(a.data_points[0].usage.as_ref().unwrap().total_events, 1);
        let a_get = series(base.clone().endpoint("/a").method("GET")).await;
        assert_eq!(first(&a_get).total_requests, 1);
        assert_eq!(first(&a_get).p50_response_time_ms, 10.0);
        let gets = series(base.clone().method("GET")).await;
        assert_eq!(first(&gets).total_requests, 2);
        // No such endpoint: zeros where usage has data, nothing at all without.
        let none = series(base.clone().endpoint("/nowhere")).await;
        assert_eq!(first(&none).total_requests, 0);
        let perf_only =
            TimeSeriesQuery::new(range, SeriesKind::Performance, now).endpoint("/nowhere");
        assert!(series(perf_only).await.data_points.is_empty());
        // `*` is no route template.
        let star = TimeSeriesQuery::new(range, SeriesKind::Performance, now).endpoint("*");
        assert!(series(star).await.data_points.is_empty());
    }

    #[tokio::test]
    async fn filtered_five_minute_series_must_start_within_the_raw_retention() {
        let store = MemorySink::new();
        let now = at(T0 + 30 * 86_400);
        let day = Duration::from_secs(86_400);
        let week = TimeRange::custom(now - 7 * day, now, now).unwrap();
        let older = TimeRange::custom(now - 7 * day - Duration::from_secs(1), now, now).unwrap();
        let five = |r| {
            TimeSeriesQuery::new(r, SeriesKind::Performance, now)
                .resolution(Resolution::FiveMinutes)
        };
        assert!(five(week).endpoint("/a").check().is_ok());
        assert!(five(older).check().is_ok(), "unfiltered: 5-minute rollups");
        assert!(
            five(older)
                .resolution(Resolution::Hour)
                .endpoint("/a")
                .check()
                .is_ok()
        );
        for q in [five(older).endpoint("/a"), five(older).method("GET")] {
            let err = store.time_series(&q).await.unwrap_err();
            assert!(matches!(err, QueryError::Unsupported(_)), "{err:?}");
            assert_eq!(
                err.to_string(),
                "5-minute buckets of one endpoint are read from raw requests, which are kept for \
                 7 days: use interval=hourly, or a range that starts within the last 7 days"
            );
        }
    }

    #[tokio::test]
    async fn slowest_requests_are_ordered_limited_and_clipped_to_the_raw_retention() {
        use crate::id::CorrelationId;
        let store = MemorySink::new();
        let now = at(T0 + 10 * 86_400);
        let corr = |s: &str| CorrelationId::from_header(&http::HeaderValue::from_str(s).unwrap());
        let add = |secs: u64, method: Method, status: u16, ms: u64, id: Option<&str>| {
            let r = req_m(secs, "/a", method, status, ms)
                .with_correlation_id(id.and_then(corr))
                .with_user(id.map(|_| UserId::new("ada")));
            store.insert(r);
        };
        let t = T0 + 9 * 86_400;
        add(t, Method::GET, 200, 50, Some("c-2"));
        add(t, Method::GET, 200, 50, Some("c-1")); // same time and ms: by correlation id
        add(t + 1, Method::GET, 500, 50, None); // same ms, newer: first
        add(t, Method::GET, 200, 50, None); // no id: after the ids
        add(t + 5, Method::POST, 201, 90, Some("p"));
        add(t + 6, Method::GET, 404, 5, Some("fast"));
        add(T0 + 2 * 86_400, Method::GET, 200, 9_000, Some("old")); // 8 days ago: outside
        store.insert(req_m(t + 7, "/b", Method::GET, 200, 7_000));
        let week = TimeRange::preset(Preset::Last30Days, now);
        let q = SlowRequestsQuery::new(week, "/a", now);
        assert_eq!(q.window(), (now - RAW_RETENTION, now));
        let r = store.slowest_requests(&q).await.unwrap();
        let order: Vec<(u64, Option<&str>)> = r
            .requests
            .iter()
            .map(|r| (r.response_time_ms as u64, r.correlation_id.as_deref()))
            .collect();
        assert_eq!(
            order,
            [
                (90, Some("p")),
                (50, None),
                (50, Some("c-1")),
                (50, Some("c-2")),
                (50, None),
                (5, Some("fast"))
            ]
        );
        assert_eq!(r.requests[1].timestamp, at(t + 1));
        assert_eq!(r.requests[1].status_code, 500);
        assert_eq!(r.requests[0].user_id.as_deref(), Some("ada"));
        assert_eq!(
            r.status_codes,
            BTreeMap::from([(200, 3), (201, 1), (404, 1), (500, 1)])
        );
        let two = store.slowest_requests(&q.clone().limit(2)).await.unwrap();
        assert_eq!(two.requests, r.requests[..2]);
        assert_eq!(
            two.status_codes, r.status_codes,
            "over the window, not the list"
        );
        let posts = store
            .slowest_requests(&q.clone().method("POST"))
            .await
            .unwrap();
        assert_eq!(posts.requests.len(), 1);
        assert_eq!(posts.status_codes, BTreeMap::from([(201, 1)]));
        // A range that ends before the retention: an empty window.
        let old = TimeRange::custom(at(T0), at(T0 + 86_400), now).unwrap();
        let q = SlowRequestsQuery::new(old, "/a", now);
        let (start, end) = q.window();
        assert_eq!((start, end), (now - RAW_RETENTION, now - RAW_RETENTION));
        assert_eq!(
            store.slowest_requests(&q).await.unwrap(),
            SlowRequests::default()
        );
        assert_eq!(SlowRequestsQuery::new(old, "/a", now).limit(0).limit, 1);
        assert_eq!(
            SlowRequestsQuery::new(old, "/a", now).limit(1000).limit,
            100
        );
    }

    #[test]
    fn request_timestamps_are_whole_microseconds() {
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_717_236_000, 123_456_789);
        assert_eq!(
            whole_micros(t),
            SystemTime::UNIX_EPOCH + Duration::new(1_717_236_000, 123_456_000)
        );
    }
}
