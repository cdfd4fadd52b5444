DROP TABLE IF EXISTS aggregated_metrics;
