//! The collector settings read from the environment reach the collector
//! (`CollectorSettings::apply` through `configure_collector`, as `main.rs`
//! does).

use std::time::{Duration, SystemTime};

use app_metrics::AppMetrics;
use app_metrics::sink::{Method, RequestRecord, Route};
use example_dashboard::settings::Settings;

fn settings(vars: &[(&str, &str)]) -> Settings {
    Settings::from_lookup(|name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    })
    .unwrap()
}

fn record() -> RequestRecord {
    RequestRecord::new(
        SystemTime::now(),
        Route::from_static("/api/demo/items/{id}"),
        Method::GET,
        200,
        Duration::from_millis(1),
    )
}

#[tokio::test]
async fn a_memory_budget_smaller_than_any_record_refuses_them_all_counted() {
    let collector = settings(&[("METRICS_MEMORY_BUDGET", "1")]).collector;
    let metrics = AppMetrics::memory()
        .configure_collector(move |c| collector.apply(c))
        .start()
        .await
        .unwrap();
    assert!(!metrics.collector().record(record()));
    assert!(!metrics.collector().record(record()));
    let stats = metrics.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        (stats.received, stats.written, stats.dropped_memory_budget),
        (2, 0, 2),
        "{stats:?}"
    );
}

#[tokio::test]
async fn queue_capacity_and_batch_size_are_applied() {
    let collector = settings(&[
        ("METRICS_QUEUE_CAPACITY", "64"),
        ("METRICS_MAX_BATCH", "5"),
        ("METRICS_LINGER_MS", "0"),
    ])
    .collector;
    let metrics = AppMetrics::memory()
        .configure_collector(move |c| collector.apply(c))
        .start()
        .await
        .unwrap();
    let handle = format!("{:?}", metrics.collector());
    assert!(
        handle.contains("max_batch: 5") && handle.contains("queue_capacity: 64"),
        "{handle}"
    );
    for _ in 0..12 {
        assert!(metrics.collector().record(record()));
    }
    let stats = metrics.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(stats.written, 12);
    assert!(stats.batches >= 3, "batches of at most 5: {stats:?}");
}

#[tokio::test]
async fn without_settings_the_collector_keeps_its_defaults() {
    let collector = settings(&[]).collector;
    let metrics = AppMetrics::memory()
        .configure_collector(move |c| collector.apply(c))
        .start()
        .await
        .unwrap();
    let handle = format!("{:?}", metrics.collector());
    assert!(
        handle.contains("max_batch: 1000") && handle.contains("queue_capacity: 100000"),
        "{handle}"
    );
    assert!(
        metrics.collector().record(record()),
        "a 64 MiB budget by default"
    );
    metrics.shutdown(Duration::from_secs(5)).await.unwrap();
}
