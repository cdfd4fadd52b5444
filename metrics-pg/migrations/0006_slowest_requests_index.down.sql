DROP INDEX IF EXISTS performance_metrics_endpoint_timestamp;
CREATE INDEX performance_metrics_endpoint_timestamp
    ON performance_metrics (endpoint, "timestamp");
DROP INDEX IF EXISTS performance_metrics_endpoint_response_time;
