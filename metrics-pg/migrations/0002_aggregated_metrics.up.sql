-- Hourly rollups, kept 90 days. One row per (hour, metric type, endpoint +
-- method | event type). The sketch columns hold mergeable state so that any
-- window's percentiles and distinct users come from merging, never averaging.

CREATE TABLE aggregated_metrics (
    id                uuid        NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
    time_bucket       timestamptz NOT NULL,
    metric_type       text        NOT NULL,
    endpoint_path     text,
    method            text,
    event_type        text,
    aggregated_values jsonb       NOT NULL DEFAULT '{}'::jsonb,
    sample_count      bigint      NOT NULL DEFAULT 0,
    -- Relative-error quantile sketch of response_time_ms (performance rows).
    latency_sketch    bytea,
    -- Distinct-users sketch or exact set (both metric types).
    users_sketch      bytea,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT aggregated_metrics_metric_type_valid
        CHECK (metric_type IN ('performance', 'usage')),
    CONSTRAINT aggregated_metrics_key_matches_type CHECK (
        (metric_type = 'performance' AND endpoint_path IS NOT NULL AND method IS NOT NULL
            AND event_type IS NULL)
        OR (metric_type = 'usage' AND event_type IS NOT NULL
            AND endpoint_path IS NULL AND method IS NULL)
    ),
    CONSTRAINT aggregated_metrics_time_bucket_on_the_hour
        CHECK (extract(epoch FROM time_bucket) % 3600 = 0),
    CONSTRAINT aggregated_metrics_sample_count_non_negative CHECK (sample_count >= 0),
    CONSTRAINT aggregated_metrics_values_object
        CHECK (jsonb_typeof(aggregated_values) = 'object')
);

COMMENT ON TABLE aggregated_metrics IS
    'app-metrics: hourly rollups of performance_metrics and usage_events, kept 90 days';

-- The bucket key: rollup jobs upsert on it, which makes them idempotent.
-- NULLS NOT DISTINCT (PostgreSQL 15) because half of the key columns are NULL
-- for each metric type; with plain NULL semantics duplicates would slip in.
-- Leading on time_bucket also serves the dashboard's range scans.
CREATE UNIQUE INDEX aggregated_metrics_bucket_key
    ON aggregated_metrics (time_bucket, metric_type, endpoint_path, method, event_type)
    NULLS NOT DISTINCT;
