//! [`MetricsQuery`] for the in-memory store: every answer is computed from
//! the stored raw records (there are no rollups to merge), so it is exact up
//! to the store's eviction of old records.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::{
    DataPoint, EndpointMetrics, MetricsQuery, PAGE_VIEW, PerformanceMetrics, PerformancePoint,
    PerformanceQuery, PerformanceReport, QueryError, TimeSeries, TimeSeriesQuery, UsageMetrics,
    UsagePoint, UsageQuery, UsageReport, sort_slowest_first,
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
        let starts: Vec<SystemTime> = query.range.buckets(query.resolution).collect();
        let width = query.resolution.duration();
        let kind = query.metric_type;
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
                    Record::Request(r) if kind.includes_performance() => {
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
    use crate::query::SeriesKind;
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
}
