//! The SQL text of every dashboard statement, qualified with the schema
//! once, and preparing it.

use deadpool_postgres::Transaction;

use crate::error::Error;
use crate::schema::SchemaName;

/// The SQL text of every statement, qualified with the schema once.
#[derive(Debug)]
pub(super) struct Sql {
    pub(super) rolled_hours: String,
    pub(super) rolled_days: String,
    pub(super) perf_buckets: String,
    pub(super) perf_rolled: String,
    pub(super) perf_raw: String,
    pub(super) usage_rolled: String,
    pub(super) usage_pages: String,
    pub(super) star_users: String,
    pub(super) series_hourly_perf: String,
    pub(super) series_hourly_usage: String,
    pub(super) series_5min_perf: String,
    pub(super) series_5min_usage: String,
    pub(super) raw_slot_counts: String,
    pub(super) series_raw_usage: String,
    pub(super) user_event_count: String,
    pub(super) drill: DrillSql,
}

impl Sql {
    pub(super) fn new(schema: &SchemaName) -> Self {
        let hourly = schema.qualify("aggregated_metrics");
        let daily = schema.qualify("aggregated_metrics_daily");
        let five = schema.qualify("aggregated_metrics_5min");
        let pm = schema.qualify("performance_metrics");
        let ue = schema.qualify("usage_events");
        // Rolled rows of one metric type: whole days from the daily table
        // ($1), other hours from the hourly one ($2).
        let rolled_rows = |cols: &str, metric_type: &str, cond: &str| {
            format!(
                "SELECT {cols} FROM {daily} WHERE time_bucket = ANY($1::timestamptz[]) \
                   AND metric_type = '{metric_type}' AND {cond} \
                 UNION ALL \
                 SELECT {cols} FROM {hourly} WHERE time_bucket = ANY($2::timestamptz[]) \
                   AND metric_type = '{metric_type}' AND {cond}"
            )
        };
        let star_perf = "endpoint_path = '*' AND method = '*' AND event_type IS NULL";
        let star_usage = "endpoint_path IS NULL AND method IS NULL AND event_type = '*'";
        let series_values = "extract(epoch FROM time_bucket)::int8, sample_count, \
             (aggregated_values->>'error_count')::int8, (aggregated_values->>'avg')::float8, \
             (aggregated_values->>'p50')::float8, (aggregated_values->>'p95')::float8, \
             (aggregated_values->>'p99')::float8";
        let series_usage_values = "extract(epoch FROM time_bucket)::int8, sample_count, \
             (aggregated_values->>'unique_users')::int8";
        Self {
            rolled_hours: format!(
                "SELECT extract(epoch FROM hour)::int8, raw_dropped, \
                        (extract(epoch FROM rolled_at) * 1000000)::int8 FROM {} \
                 WHERE metric_type = $1 AND hour >= $2 AND hour < $3",
                schema.qualify("rollup_hours")
            ),
            rolled_days: format!(
                "SELECT extract(epoch FROM day)::int8, \
                        (extract(epoch FROM built_at) * 1000000)::int8 FROM {} \
                 WHERE metric_type = $1 AND day >= $2 AND day < $3",
                schema.qualify("rollup_days")
            ),
            perf_buckets: format!(
                "SELECT false, extract(epoch FROM time_bucket)::int8, endpoint_path, method, sample_count, \
                        (aggregated_values->>'error_count')::int8, latency_sketch, \
                        CASE WHEN endpoint_path = '*' THEN users_sketch END \
                 FROM {daily} WHERE time_bucket = ANY($1::timestamptz[]) AND metric_type = 'performance' \
                 UNION ALL \
                 SELECT true, extract(epoch FROM time_bucket)::int8, endpoint_path, method, sample_count, \
                        (aggregated_values->>'error_count')::int8, latency_sketch, \
                        CASE WHEN endpoint_path = '*' THEN users_sketch END \
                 FROM {hourly} WHERE time_bucket = ANY($2::timestamptz[]) AND metric_type = 'performance'"
            ),
            perf_rolled: format!(
                "SELECT endpoint_path, method, sum(sample_count)::int8, \
                        sum((aggregated_values->>'error_count')::int8)::int8, \
                        array_agg(latency_sketch), \
                        array_agg(users_sketch) FILTER (WHERE endpoint_path = '*' OR $3::text IS NOT NULL) \
                 FROM ({}) r GROUP BY endpoint_path, method",
                rolled_rows(
                    "endpoint_path, method, sample_count, aggregated_values, latency_sketch, users_sketch",
                    "performance",
                    "($3::text IS NULL OR endpoint_path = $3::text)"
                )
            ),
            perf_raw: format!(
                "SELECT endpoint, method, count(*)::int8, \
                        count(*) FILTER (WHERE status_code >= 400)::int8, array_agg(response_time_ms), \
                        array_agg(user_id) FILTER (WHERE user_id IS NOT NULL) \
                 FROM {pm} WHERE \"timestamp\" >= $1 AND \"timestamp\" < $2 \
                   AND ($3::text IS NULL OR endpoint = $3::text) \
                 GROUP BY endpoint, method"
            ),
            usage_rolled: format!(
                "SELECT event_type, sum(sample_count)::int8, \
                        array_agg(users_sketch) FILTER (WHERE $3::text IS NOT NULL) \
                 FROM ({}) r GROUP BY event_type",
                rolled_rows(
                    "event_type, sample_count, users_sketch",
                    "usage",
                    "endpoint_path IS NULL AND method IS NULL \
                     AND ($3::text IS NULL OR event_type = $3::text)"
                )
            ),
            usage_pages: format!(
                "SELECT p.key, sum(p.value::int8)::int8 FROM ({}) r \
                 CROSS JOIN LATERAL jsonb_each_text(r.aggregated_values->'event_count_by_page') p \
                 GROUP BY p.key",
                // `page_views` counts page views only: the pages of the
                // `page_view` row, and none when another type is asked for.
                rolled_rows(
                    "aggregated_values",
                    "usage",
                    "endpoint_path IS NULL AND method IS NULL AND event_type = 'page_view' \
                     AND coalesce($3::text, 'page_view') = 'page_view'"
                )
            ),
            star_users: format!(
                "SELECT false, false, extract(epoch FROM time_bucket)::int8, users_sketch FROM {daily} \
                   WHERE time_bucket = ANY($1::timestamptz[]) AND metric_type = 'performance' AND {star_perf} \
                 UNION ALL \
                 SELECT false, true, extract(epoch FROM time_bucket)::int8, users_sketch FROM {hourly} \
                   WHERE time_bucket = ANY($2::timestamptz[]) AND metric_type = 'performance' AND {star_perf} \
                 UNION ALL \
                 SELECT true, false, extract(epoch FROM time_bucket)::int8, users_sketch FROM {daily} \
                   WHERE time_bucket = ANY($3::timestamptz[]) AND metric_type = 'usage' AND {star_usage} \
                 UNION ALL \
                 SELECT true, true, extract(epoch FROM time_bucket)::int8, users_sketch FROM {hourly} \
                   WHERE time_bucket = ANY($4::timestamptz[]) AND metric_type = 'usage' AND {star_usage}"
            ),
            series_hourly_perf: format!(
                "SELECT {series_values} FROM {hourly} WHERE time_bucket = ANY($1::timestamptz[]) \
                   AND metric_type = 'performance' AND {star_perf}"
            ),
            series_hourly_usage: format!(
                "SELECT {series_usage_values} FROM {hourly} WHERE time_bucket = ANY($1::timestamptz[]) \
                   AND metric_type = 'usage' AND {star_usage}"
            ),
            series_5min_perf: format!(
                "SELECT {series_values} FROM {five} \
                 WHERE metric_type = 'performance' AND time_bucket >= $1 AND time_bucket < $2"
            ),
            series_5min_usage: format!(
                "SELECT {series_usage_values} FROM {five} \
                 WHERE metric_type = 'usage' AND time_bucket >= $1 AND time_bucket < $2"
            ),
            // Bins with date_bin, the epoch taken per group only.
            raw_slot_counts: format!(
                "SELECT extract(epoch FROM slot)::int8, n FROM ( \
                   SELECT date_bin('300 seconds', \"timestamp\", timestamptz '1970-01-01 00:00:00+00') AS slot, \
                          count(*)::int8 AS n \
                   FROM {pm} WHERE \"timestamp\" >= $1 AND \"timestamp\" < $2 GROUP BY 1) s"
            ),
            series_raw_usage: format!(
                "SELECT floor(extract(epoch FROM \"timestamp\") / $3::int8)::int8 * $3::int8, \
                        count(*)::int8, count(DISTINCT user_id)::int8 \
                 FROM {ue} WHERE \"timestamp\" >= $1 AND \"timestamp\" < $2 GROUP BY 1"
            ),
            user_event_count: format!(
                "SELECT count(*)::int8 FROM {ue} \
                 WHERE user_id = $1 AND \"timestamp\" >= $2 AND \"timestamp\" < $3"
            ),
            drill: DrillSql::new(schema),
        }
    }
}

pub(super) async fn prepare(
    tx: &Transaction<'_>,
    sql: &str,
) -> Result<tokio_postgres::Statement, Error> {
    tx.prepare_cached(sql)
        .await
        .map_err(|e| Error::db("preparing a dashboard query", e))
}

/// Prepares (or finds in the connection's cache) every statement at once.
pub(super) async fn prepare_all<const N: usize>(
    tx: &Transaction<'_>,
    sql: [&String; N],
) -> Result<[tokio_postgres::Statement; N], Error> {
    let statements =
        futures_util::future::try_join_all(sql.iter().map(|s| tx.prepare_cached(s.as_str())))
            .await
            .map_err(|e| Error::db("preparing a dashboard query", e))?;
    statements.try_into().map_err(|_| Error::InvalidSetting {
        setting: "statements",
        reason: "prepared a different number of statements than asked",
    })
}

/// The SQL of the drill-down statements, qualified with the schema once.
#[derive(Debug)]
pub(super) struct DrillSql {
    pub(super) series_rolled: String,
    pub(super) series_raw_endpoint: String,
    pub(super) series_raw_method: String,
    pub(super) slowest: String,
    pub(super) status_rolled: String,
    pub(super) status_raw: String,
}

impl DrillSql {
    pub(super) fn new(schema: &SchemaName) -> Self {
        let hourly = schema.qualify("aggregated_metrics");
        let daily = schema.qualify("aggregated_metrics_daily");
        let pm = schema.qualify("performance_metrics");
        // Rollup rows of real keys matching the filter (parameters `$e`
        // endpoint and `$m` method; either may be NULL): never the
        // all-endpoints `*` row, even when `*` is asked for (no route
        // template is `*`).
        let key = |e: u8, m: u8| {
            format!(
                "endpoint_path <> '*' AND method <> '*' \
                 AND (${e}::text IS NULL OR endpoint_path = ${e}::text) \
                 AND (${m}::text IS NULL OR method = ${m}::text)"
            )
        };
        let key_34 = key(3, 4);
        // Raw buckets of width $5 over [$1, $2). With an endpoint the
        // (endpoint, "timestamp") index finds the rows; without one (a
        // method over every endpoint) the time range does.
        let series_raw = |cond: &str| {
            format!(
                "SELECT floor(extract(epoch FROM \"timestamp\") / $5::int8)::int8 * $5::int8, \
                        count(*)::int8, count(*) FILTER (WHERE status_code >= 400)::int8, \
                        array_agg(response_time_ms) \
                 FROM {pm} WHERE \"timestamp\" >= $1 AND \"timestamp\" < $2 AND {cond} \
                 GROUP BY 1"
            )
        };
        Self {
            series_rolled: format!(
                "SELECT extract(epoch FROM time_bucket)::int8, sample_count, \
                        (aggregated_values->>'error_count')::int8, \
                        (aggregated_values->>'avg')::float8, (aggregated_values->>'p50')::float8, \
                        (aggregated_values->>'p95')::float8, (aggregated_values->>'p99')::float8, \
                        CASE WHEN count(*) OVER (PARTITION BY time_bucket) > 1 \
                             THEN latency_sketch END \
                 FROM {hourly} WHERE time_bucket >= $1 AND time_bucket < $2 \
                   AND metric_type = 'performance' AND {key_34}"
            ),
            series_raw_endpoint: series_raw(
                "endpoint = $3::text AND ($4::text IS NULL OR method = $4::text)",
            ),
            series_raw_method: series_raw("$3::text IS NULL AND method = $4::text"),
            slowest: format!(
                "SELECT \"timestamp\", method, status_code, response_time_ms, user_id, \
                        correlation_id \
                 FROM {pm} WHERE endpoint = $1::text AND ($2::text IS NULL OR method = $2::text) \
                   AND \"timestamp\" >= $3 AND \"timestamp\" < $4 \
                 ORDER BY response_time_ms DESC, \"timestamp\" DESC, \
                          correlation_id COLLATE \"C\" NULLS LAST, method COLLATE \"C\", \
                          status_code, user_id COLLATE \"C\" NULLS LAST \
                 LIMIT $5"
            ),
            status_rolled: format!(
                "SELECT s.key::int4, sum(s.value::int8)::int8 FROM ( \
                   SELECT aggregated_values FROM {daily} WHERE time_bucket = ANY($1::timestamptz[]) \
                     AND metric_type = 'performance' AND {key_34} \
                   UNION ALL \
                   SELECT aggregated_values FROM {hourly} WHERE time_bucket = ANY($2::timestamptz[]) \
                     AND metric_type = 'performance' AND {key_34}) r \
                 CROSS JOIN LATERAL jsonb_each_text(r.aggregated_values->'status_code_distribution') s \
                 GROUP BY 1"
            ),
            status_raw: format!(
                "SELECT status_code, count(*)::int8 FROM {pm} \
                 WHERE endpoint = $3::text AND ($4::text IS NULL OR method = $4::text) \
                   AND \"timestamp\" >= $1 AND \"timestamp\" < $2 \
                 GROUP BY 1"
            ),
        }
    }
}
