-- Bookkeeping of the rollup and retention jobs: one row per (raw table, hour)
-- that was rolled up into aggregated_metrics, with the number of raw rows the
-- rollup read. A later count of that hour's raw rows that differs means late
-- rows arrived: the hour is rolled again (while its raw rows still exist).
-- raw_dropped marks hours whose day partition the retention job dropped; they
-- are never rolled again (their raw rows are gone).

CREATE TABLE rollup_hours (
    metric_type text        NOT NULL,
    hour        timestamptz NOT NULL,
    raw_count   bigint      NOT NULL,
    raw_dropped boolean     NOT NULL DEFAULT false,
    rolled_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (metric_type, hour),
    CONSTRAINT rollup_hours_metric_type_valid
        CHECK (metric_type IN ('performance', 'usage')),
    CONSTRAINT rollup_hours_on_the_hour CHECK (extract(epoch FROM hour) % 3600 = 0),
    CONSTRAINT rollup_hours_raw_count_non_negative CHECK (raw_count >= 0)
);

COMMENT ON TABLE rollup_hours IS
    'app-metrics: hours rolled up into aggregated_metrics and the raw row count each rollup read';
