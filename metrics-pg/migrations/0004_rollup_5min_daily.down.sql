DROP TABLE IF EXISTS rollup_days;
DROP TABLE IF EXISTS aggregated_metrics_daily;
DROP TABLE IF EXISTS aggregated_metrics_5min;
