-- Sketch columns are stored without compression: exact samples (8-byte floats) and user-id hashes
-- are incompressible, so pglz only spent CPU on every rollup write (7 % of the server's time in
-- the rollup benchmark) to keep the bytes as they were. Large values still move out of line
-- (TOAST); only the compression attempt is skipped. Existing rows are not rewritten.
ALTER TABLE aggregated_metrics
    ALTER COLUMN latency_sketch SET STORAGE EXTERNAL,
    ALTER COLUMN users_sketch SET STORAGE EXTERNAL;
ALTER TABLE aggregated_metrics_5min
    ALTER COLUMN latency_sketch SET STORAGE EXTERNAL,
    ALTER COLUMN users_sketch SET STORAGE EXTERNAL;
ALTER TABLE aggregated_metrics_daily
    ALTER COLUMN latency_sketch SET STORAGE EXTERNAL,
    ALTER COLUMN users_sketch SET STORAGE EXTERNAL;
