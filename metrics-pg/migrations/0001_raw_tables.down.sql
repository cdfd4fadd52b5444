DROP TABLE IF EXISTS usage_events;
DROP TABLE IF EXISTS performance_metrics;
