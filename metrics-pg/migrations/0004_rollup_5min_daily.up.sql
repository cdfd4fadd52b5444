-- Coarser and finer rollups for the dashboard's long and short ranges, written by the rollup job
-- (see docs/operations.md, "Rollups"):
--
-- * aggregated_metrics_5min: 5-minute buckets of the all-endpoints / all-types key only (the 24 h
--   time series). Written in the same transaction as the hour's hourly rows; an empty slot has no
--   row. Kept as long as the hourly rollups.
-- * aggregated_metrics_daily: one row per (UTC day, key) = the merge of that day's hourly rows,
--   same key columns and `*` rows as aggregated_metrics. Only for complete days (rollup_days).
-- * rollup_days: the days whose daily rows are complete and equal the merge of their 24 hourly
--   rows. A re-rolled hour deletes its day's row here (in the hour's transaction); the job
--   rebuilds the day and the row by the end of its run.

CREATE TABLE aggregated_metrics_5min (
    time_bucket       timestamptz NOT NULL,
    metric_type       text        NOT NULL,
    aggregated_values jsonb       NOT NULL,
    sample_count      bigint      NOT NULL,
    latency_sketch    bytea,
    users_sketch      bytea,
    PRIMARY KEY (metric_type, time_bucket),
    CONSTRAINT aggregated_metrics_5min_metric_type_valid
        CHECK (metric_type IN ('performance', 'usage')),
    CONSTRAINT aggregated_metrics_5min_time_bucket_on_5min
        CHECK (extract(epoch FROM time_bucket) % 300 = 0),
    CONSTRAINT aggregated_metrics_5min_sample_count_non_negative CHECK (sample_count >= 0),
    CONSTRAINT aggregated_metrics_5min_values_object
        CHECK (jsonb_typeof(aggregated_values) = 'object')
);

COMMENT ON TABLE aggregated_metrics_5min IS
    'app-metrics: 5-minute rollups of the all-endpoints / all-types key, kept as long as hourly rollups';

CREATE TABLE aggregated_metrics_daily (
    time_bucket       timestamptz NOT NULL,
    metric_type       text        NOT NULL,
    endpoint_path     text,
    method            text,
    event_type        text,
    aggregated_values jsonb       NOT NULL,
    sample_count      bigint      NOT NULL,
    latency_sketch    bytea,
    users_sketch      bytea,
    built_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT aggregated_metrics_daily_metric_type_valid
        CHECK (metric_type IN ('performance', 'usage')),
    CONSTRAINT aggregated_metrics_daily_key_matches_type CHECK (
        (metric_type = 'performance' AND endpoint_path IS NOT NULL AND method IS NOT NULL
            AND event_type IS NULL)
        OR (metric_type = 'usage' AND event_type IS NOT NULL
            AND endpoint_path IS NULL AND method IS NULL)
    ),
    CONSTRAINT aggregated_metrics_daily_time_bucket_on_the_day
        CHECK (extract(epoch FROM time_bucket) % 86400 = 0),
    CONSTRAINT aggregated_metrics_daily_sample_count_non_negative CHECK (sample_count >= 0),
    CONSTRAINT aggregated_metrics_daily_values_object
        CHECK (jsonb_typeof(aggregated_values) = 'object')
);

COMMENT ON TABLE aggregated_metrics_daily IS
    'app-metrics: daily merges of the hourly rollups of complete days (see rollup_days)';

-- NULLS NOT DISTINCT for the same reason as aggregated_metrics_bucket_key.
CREATE UNIQUE INDEX aggregated_metrics_daily_bucket_key
    ON aggregated_metrics_daily (time_bucket, metric_type, endpoint_path, method, event_type)
    NULLS NOT DISTINCT;

CREATE TABLE rollup_days (
    metric_type text        NOT NULL,
    day         timestamptz NOT NULL,
    built_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (metric_type, day),
    CONSTRAINT rollup_days_metric_type_valid CHECK (metric_type IN ('performance', 'usage')),
    CONSTRAINT rollup_days_on_the_day CHECK (extract(epoch FROM day) % 86400 = 0)
);

COMMENT ON TABLE rollup_days IS
    'app-metrics: days whose aggregated_metrics_daily rows equal the merge of their 24 hourly rollups';
