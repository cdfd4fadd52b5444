ALTER TABLE aggregated_metrics_daily
    ALTER COLUMN latency_sketch SET STORAGE EXTENDED,
    ALTER COLUMN users_sketch SET STORAGE EXTENDED;
ALTER TABLE aggregated_metrics_5min
    ALTER COLUMN latency_sketch SET STORAGE EXTENDED,
    ALTER COLUMN users_sketch SET STORAGE EXTENDED;
ALTER TABLE aggregated_metrics
    ALTER COLUMN latency_sketch SET STORAGE EXTENDED,
    ALTER COLUMN users_sketch SET STORAGE EXTENDED;
