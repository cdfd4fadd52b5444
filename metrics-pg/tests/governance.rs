//! Record-count governance: a WARN with the count in thousands separators at
//! the warning threshold, an ERROR starting with `ALERT:` at the alert
//! threshold, after rollup and retention runs.

mod job_support;

use std::sync::{Arc, Mutex};

use job_support::{DAY0, migrated_db, pool, t};
use metrics_pg::{Clock, Governance, RetentionJob, RollupJob};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// Every event's level and message.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<(Level, String)>>>);

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: Subscriber> Layer<S> for Captured {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut m = Message(String::new());
        event.record(&mut m);
        self.0
            .lock()
            .unwrap()
            .push((*event.metadata().level(), m.0));
    }
}

impl Captured {
    fn take(&self) -> Vec<(Level, String)> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

fn governance_lines(events: &[(Level, String)]) -> Vec<(Level, String)> {
    events
        .iter()
        .filter(|(l, m)| (*l == Level::WARN || *l == Level::ERROR) && m.contains("raw metric rows"))
        .cloned()
        .collect()
}

#[tokio::test]
async fn warning_and_alert_lines_at_their_thresholds() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::registry().with(captured.clone());
    // The test runs on one thread (current-thread runtime), so the
    // thread-local default sees every event of the jobs.
    let _guard = tracing::subscriber::set_default(subscriber);

    let (db, schema) = migrated_db().await;
    let client = db.connect().await;
    // 1,500 raw rows (in the default partition), then fresh statistics, as
    // autovacuum would leave them.
    client
        .batch_execute(&format!(
            "INSERT INTO \"{schema}\".performance_metrics \
               (id, \"timestamp\", endpoint, method, status_code, response_time_ms) \
             SELECT gen_random_uuid(), now(), '/g', 'GET', 200, i FROM generate_series(1, 1500) i; \
             ANALYZE \"{schema}\".performance_metrics_default;"
        ))
        .await
        .unwrap();
    let now = Clock::fixed(t(DAY0));

    // Below both thresholds: nothing.
    let quiet = RollupJob::new(pool(&db), &schema)
        .unwrap()
        .clock(now.clone())
        .governance(Governance::new(1_501, 2_000))
        .run_once()
        .await
        .unwrap();
    assert_eq!(quiet.raw_rows_estimate, Some(1_500));
    assert!(governance_lines(&captured.take()).is_empty());

    // At the warning threshold.
    let _ = RollupJob::new(pool(&db), &schema)
        .unwrap()
        .clock(now.clone())
        .governance(Governance::new(1_500, 2_000))
        .run_once()
        .await
        .unwrap();
    let lines = governance_lines(&captured.take());
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0].0, Level::WARN);
    assert!(
        lines[0]
            .1
            .starts_with("1,500 raw metric rows stored (warning threshold 1,500)"),
        "{lines:?}"
    );

    // At the alert threshold, after a retention run.
    let _ = RetentionJob::new(pool(&db), &schema)
        .unwrap()
        .clock(now.clone())
        .governance(Governance::new(1_000, 1_500))
        .run_once()
        .await
        .unwrap();
    let lines = governance_lines(&captured.take());
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0].0, Level::ERROR);
    assert!(
        lines[0]
            .1
            .starts_with("ALERT: 1,500 raw metric rows stored (alert threshold 1,500)"),
        "{lines:?}"
    );
}

#[test]
fn default_thresholds_are_the_designs() {
    let g = Governance::default();
    assert_eq!((g.warn_at, g.alert_at), (800_000, 1_000_000));
}
