//! The usage report: events per type, page views, totals and the users
//! of requests and events, from rolled rows, raw pieces and raw events.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use deadpool_postgres::Transaction;
use metrics_core::aggregate::DistinctUsers;
use metrics_core::query::{PAGE_VIEW, UsageMetrics, UsageQuery, UsageReport};
use tokio_postgres::types::ToSql;

use super::buckets::{RolledBuckets, star_users};
use super::decode::{merge_users, times, to_u64};
use super::rolled::plan;
use super::scan;
use super::sql::prepare_all;
use super::store::PgMetricsQuery;
use crate::error::Error;
use crate::tables::{ALL, Kind};
use crate::units::{HOUR, floor_time, from_unix_secs};

pub(super) async fn usage(
    tx: &Transaction<'_>,
    this: &PgMetricsQuery,
    query: &UsageQuery,
) -> Result<UsageReport, Error> {
    use futures_util::future::{try_join, try_join4};

    let sql = &*this.sql;
    let (start, end) = (query.range.start(), query.range.end());
    let event_type = query.event_type.as_deref();
    let ((uplan, urolled), (pplan, prolled)) = try_join(
        plan(tx, sql, Kind::Usage, start, end, HOUR),
        plan(tx, sql, Kind::Performance, start, end, HOUR),
    )
    .await?;
    let (udays, uhours) = uplan.days_and_hours(&urolled, true);
    let (pdays, phours) = pplan.days_and_hours(&prolled, true);
    let has_usage_rollups = !udays.is_empty() || !uhours.is_empty();
    let hour_start = from_unix_secs(floor_time(query.now, HOUR));

    let [s_rolled, s_pages] = prepare_all(tx, [&sql.usage_rolled, &sql.usage_pages]).await?;
    let (udays_t, uhours_t) = (times(&udays), times(&uhours));
    // Every statement below is independent: they go out together and the
    // driver pipelines them on the connection.
    let rolled = async {
        if !has_usage_rollups {
            return Ok(None);
        }
        let params: [&(dyn ToSql + Sync); 3] = [&udays_t, &uhours_t, &event_type];
        try_join(tx.query(&s_rolled, &params), tx.query(&s_pages, &params))
            .await
            .map(Some)
            .map_err(|e| Error::db("reading usage rollups", e))
    };
    let (perf_rolled, usage_rolled) = (
        RolledBuckets {
            rolled: &prolled,
            days: &pdays,
            hours: &phours,
        },
        RolledBuckets {
            rolled: &urolled,
            days: &udays,
            hours: &uhours,
        },
    );
    let star = star_users(tx, this, &perf_rolled, &usage_rolled);
    // Raw rows of both tables over their raw spans and the current hour
    // `[hour_start, now]`: the union of both, cut where either starts or
    // ends, so each part lies wholly inside or outside each.
    let window = (hour_start, query.now + Duration::from_micros(1));
    let request_parts = cut_spans(&pplan.raw, window);
    let request_spans: Vec<(SystemTime, SystemTime)> =
        request_parts.iter().map(|p| (p.0, p.1)).collect();
    let event_parts = cut_spans(&uplan.raw, window);
    let event_spans: Vec<(SystemTime, SystemTime)> =
        event_parts.iter().map(|p| (p.0, p.1)).collect();
    let (rolled, (perf_users, usage_users), events, pieces) = try_join4(
        rolled,
        star,
        async {
            beside!(this, tx, |t| scan::stream_events(
                t,
                &this.schema,
                &event_spans,
                event_type
            )
            .await?)
        },
        this.raw_pieces(tx, &request_spans, &prolled),
    )
    .await?;

    let mut report = UsageReport::default();
    let mut total = 0u64;
    let mut unique = DistinctUsers::new();
    let mut active = DistinctUsers::new();
    let mut current_users = DistinctUsers::new();
    if let Some((rows, pages)) = &rolled {
        for row in rows {
            let t: &str = row.get(0);
            let n = to_u64(row.get(1));
            if t == ALL {
                total += n;
            } else {
                add_to(&mut report.event_distribution, t, n);
                if event_type.is_some() {
                    total += n;
                    merge_users(&mut unique, row.get(2), t)?;
                }
            }
        }
        for row in pages {
            add_to(&mut report.page_views, row.get(0), to_u64(row.get(1)));
        }
    }
    // The `*` users of both tables: active users, and (without a type
    // filter) the unique users of the events.
    active.merge(&perf_users);
    active.merge(&usage_users);
    if event_type.is_none() {
        unique.merge(&usage_users);
    }
    for (part, &(_, _, in_range, in_hour)) in events.iter().zip(&event_parts) {
        if in_range {
            for ((t, page), &n) in &part.counts {
                total += n;
                add_to(&mut report.event_distribution, t, n);
                if let (PAGE_VIEW, Some(page)) = (t.as_str(), page) {
                    add_to(&mut report.page_views, page, n);
                }
            }
            active.merge(&part.users);
            unique.merge(&part.users_of_type);
        }
        if in_hour {
            current_users.merge(&part.users);
        }
    }
    for piece in &pieces {
        let (_, _, in_range, in_hour) = request_parts[piece.span];
        if let Some(users) = &piece.bucket.users {
            if in_range {
                active.merge(users);
            }
            if in_hour {
                current_users.merge(users);
            }
        }
    }

    report.metrics = UsageMetrics::new(
        total,
        unique.estimate().value,
        active.estimate().value,
        current_users.estimate().value,
    );
    Ok(report)
}

/// The union of the disjoint, ascending `spans` and `window`, cut at every
/// bound of either: `(lo, hi, inside spans, inside window)`, ascending.
pub(super) fn cut_spans(
    spans: &[(SystemTime, SystemTime)],
    window: (SystemTime, SystemTime),
) -> Vec<(SystemTime, SystemTime, bool, bool)> {
    let mut cuts: Vec<SystemTime> = spans.iter().flat_map(|&(lo, hi)| [lo, hi]).collect();
    if window.0 < window.1 {
        cuts.extend([window.0, window.1]);
    }
    cuts.sort();
    cuts.dedup();
    cuts.windows(2)
        .filter_map(|w| {
            let (lo, hi) = (w[0], w[1]);
            let in_spans = spans.iter().any(|&(a, b)| a <= lo && hi <= b);
            let in_window = window.0 <= lo && hi <= window.1;
            (in_spans || in_window).then_some((lo, hi, in_spans, in_window))
        })
        .collect()
}

pub(super) fn add_to(map: &mut BTreeMap<String, u64>, key: &str, n: u64) {
    match map.get_mut(key) {
        Some(v) => *v += n,
        None => {
            let _ = map.insert(key.to_owned(), n);
        }
    }
}
