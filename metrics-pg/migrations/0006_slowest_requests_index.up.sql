-- The drill-down into one endpoint (GET /requests, GET /time-series?endpoint=), two indexes on
-- every partition of performance_metrics (present and future):
--
-- * (endpoint, response_time_ms DESC), new: the slowest requests of an endpoint. Without it the
--   top N of a busy endpoint over 7 days sorts all its rows (~140,000 heap fetches at 1 M
--   requests/day over 50 endpoints: 1.2-1.4 s); with it each day partition's index is read from
--   its slowest entry, about N entries per partition (< 2 ms).
-- * (endpoint, "timestamp") INCLUDE (method, status_code, response_time_ms), replacing the plain
--   (endpoint, "timestamp") btree of migration 1: one endpoint's raw buckets (5-minute buckets of
--   the last 24 h: ~20,000 rows) become an index-only scan of ~150 index pages instead of
--   ~12,800 heap pages (on vacuumed pages; autovacuum sets them as inserts accumulate).
--
-- Costs (docs/decisions.md, "Drill-down: ..."): the new btree's inserts land all over each
-- endpoint's key range, which costs ~45 % of the peak COPY rate measured by benches/pg_ingest.sh;
-- the wider covering entries cost nothing measurable beside it. On an existing database this
-- builds both on the partitions present, holding a SHARE lock on performance_metrics meanwhile
-- (inserts wait, reads do not): a few seconds per million rows.
CREATE INDEX performance_metrics_endpoint_response_time
    ON performance_metrics (endpoint, response_time_ms DESC);
DROP INDEX performance_metrics_endpoint_timestamp;
CREATE INDEX performance_metrics_endpoint_timestamp
    ON performance_metrics (endpoint, "timestamp") INCLUDE (method, status_code, response_time_ms);
