//! Record-count governance: a WARN with the count in thousands separators at
//! the warning threshold, an ERROR starting with `ALERT:` at the alert
//! threshold, after rollup and retention runs; the defaults fire at the
//! design's 800,000 and 1,000,000.

mod job_support;

use std::sync::{Arc, Mutex};

use job_support::{DAY0, migrated_db, pool, rollup_job, t};
use metrics_pg::{Clock, Governance, RetentionJob, RollupJob};
use test_support::tokio_postgres::Client;
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

/// Sets the catalog's row estimate of the default request partition, as
/// `ANALYZE` would after that many rows (needs a superuser, which the test
/// harness's throwaway cluster gives; inserting a million rows per case
/// would cost seconds of a shared machine for the same check).
async fn set_estimate(client: &Client, schema: &str, rows: u32) {
    let updated = client
        .execute(
            "UPDATE pg_class SET reltuples = $1 \
             WHERE oid = (quote_ident($2) || '.performance_metrics_default')::regclass",
            &[&(rows as f32), &schema],
        )
        .await
        .expect("updating pg_class needs a superuser role (the harness's cluster has one)");
    assert_eq!(updated, 1);
}

#[tokio::test]
async fn default_governance_warns_at_800000_and_alerts_at_1000000() {
    let captured = Captured::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(captured.clone()));
    let (db, schema) = migrated_db().await;
    let client = db.connect().await;
    // No `.governance(..)`: the defaults a user gets.
    let rollup = rollup_job(&db, &schema, DAY0);
    let retention = RetentionJob::new(pool(&db), &schema)
        .unwrap()
        .clock(Clock::fixed(t(DAY0)));

    set_estimate(&client, &schema, 799_999).await;
    let r = rollup.run_once().await.unwrap();
    assert_eq!(r.raw_rows_estimate, Some(799_999));
    assert_eq!(governance_lines(&captured.take()), vec![]);

    for (n, text) in [(800_000, "800,000"), (999_999, "999,999")] {
        set_estimate(&client, &schema, n).await;
        let r = rollup.run_once().await.unwrap();
        assert_eq!(r.raw_rows_estimate, Some(u64::from(n)));
        let lines = governance_lines(&captured.take());
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0].0, Level::WARN, "{lines:?}");
        assert!(
            lines[0].1.starts_with(&format!(
                "{text} raw metric rows stored (warning threshold 800,000)"
            )),
            "{lines:?}"
        );
    }

    for (n, text) in [(1_000_000, "1,000,000"), (1_234_567, "1,234,567")] {
        set_estimate(&client, &schema, n).await;
        for job in ["rollup", "retention"] {
            let report = if job == "rollup" {
                rollup.run_once().await.unwrap()
            } else {
                retention.run_once().await.unwrap()
            };
            assert_eq!(report.raw_rows_estimate, Some(u64::from(n)), "{report:?}");
            let lines = governance_lines(&captured.take());
            assert_eq!(lines.len(), 1, "{}: {lines:?}", report.job);
            assert_eq!(lines[0].0, Level::ERROR, "{lines:?}");
            assert!(
                lines[0].1.starts_with(&format!(
                    "ALERT: {text} raw metric rows stored (alert threshold 1,000,000)"
                )),
                "{lines:?}"
            );
        }
    }
}
