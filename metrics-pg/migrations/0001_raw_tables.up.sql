-- Raw request and usage tables, partitioned by day (UTC) on "timestamp".
-- Runs with search_path set to the target schema, so names stay unqualified
-- and the checksum of this file does not depend on the schema chosen.

CREATE TABLE performance_metrics (
    id               uuid             NOT NULL,
    "timestamp"      timestamptz      NOT NULL,
    endpoint         text             NOT NULL,
    method           text             NOT NULL,
    status_code      integer          NOT NULL,
    response_time_ms double precision NOT NULL,
    user_id          text,
    error_type       text,
    correlation_id   text,
    CONSTRAINT performance_metrics_status_code_range CHECK (status_code BETWEEN 100 AND 599),
    -- NaN sorts above Infinity in PostgreSQL, so `< 'Infinity'` keeps both out.
    CONSTRAINT performance_metrics_response_time_valid
        CHECK (response_time_ms >= 0 AND response_time_ms < 'Infinity'::double precision)
) PARTITION BY RANGE ("timestamp");

COMMENT ON TABLE performance_metrics IS
    'app-metrics: one row per HTTP request; daily partitions, kept 7 days';

-- Dashboard queries filter on a time range (BRIN: tiny, cheap to maintain on
-- time-ordered appends) and drill into one endpoint over a range (btree).
-- No primary key on purpose: ids are client-generated UUIDv7s, and every extra
-- btree is paid on every COPY; see docs/decisions.md.
CREATE INDEX performance_metrics_timestamp_brin
    ON performance_metrics USING brin ("timestamp") WITH (pages_per_range = 32);
CREATE INDEX performance_metrics_endpoint_timestamp
    ON performance_metrics (endpoint, "timestamp");

CREATE TABLE performance_metrics_default PARTITION OF performance_metrics DEFAULT;

CREATE TABLE usage_events (
    id          uuid        NOT NULL,
    "timestamp" timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    event_type  text        NOT NULL,
    user_id     text        NOT NULL,
    page_name   text,
    element_id  text,
    success     boolean,
    metadata    jsonb,
    CONSTRAINT usage_events_event_type_not_empty CHECK (event_type <> ''),
    CONSTRAINT usage_events_metadata_object
        CHECK (metadata IS NULL OR jsonb_typeof(metadata) = 'object')
) PARTITION BY RANGE ("timestamp");

COMMENT ON TABLE usage_events IS
    'app-metrics: one row per product-usage event; daily partitions, kept 7 days';

CREATE INDEX usage_events_timestamp_brin
    ON usage_events USING brin ("timestamp") WITH (pages_per_range = 32);
-- "How many events did I send" (any authenticated user) and per-user drill-down.
CREATE INDEX usage_events_user_timestamp
    ON usage_events (user_id, "timestamp");

CREATE TABLE usage_events_default PARTITION OF usage_events DEFAULT;
