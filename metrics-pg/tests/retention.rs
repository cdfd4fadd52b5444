//! The retention job on a real PostgreSQL: expired day partitions are rolled
//! up before they are dropped (never losing an hour), the boundary day and
//! hour are exact, expired rollups go, and the scheduler runs the jobs.

mod job_support;

use std::time::Duration;

use job_support::{
    DAY, DAY0, HOUR, count, day, insert_requests, migrated_db, perf_row, pool, req, rollup_dump, t,
};
use metrics_pg::{Clock, RetentionJob, RollupJob, Scheduler, SchedulerConfig};
use test_support::tokio_postgres::Client;

/// "Now" in these tests: midnight UTC of day 10, so the 7-day horizon falls
/// exactly on the end of day 2 (days count from DAY0).
const NOW: u64 = DAY0 + 10 * DAY;

fn pname(n: u64) -> String {
    let d = day(n);
    format!(
        "performance_metrics_p{:04}{:02}{:02}",
        d.year(),
        u8::from(d.month()),
        d.day()
    )
}

async fn partitions(client: &Client, schema: &str) -> Vec<String> {
    client
        .query(
            "SELECT c.relname FROM pg_inherits i \
             JOIN pg_class c ON c.oid = i.inhrelid \
             JOIN pg_class p ON p.oid = i.inhparent \
             JOIN pg_namespace n ON n.oid = p.relnamespace \
             WHERE n.nspname = $1 AND p.relname = 'performance_metrics' ORDER BY 1",
            &[&schema],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn setup() -> (test_support::TestDb, String, Client) {
    let (db, schema) = migrated_db().await;
    let mut client = db.connect().await;
    metrics_pg::create_partitions(&mut client, &schema, (1..=9).map(day))
        .await
        .unwrap();
    insert_requests(
        &client,
        &schema,
        &[
            req(t(DAY0 + DAY + 10 * HOUR), "/old", 200, 1.0),
            req(t(DAY0 + DAY + 10 * HOUR + 5), "/old", 200, 2.0),
            // The last hour before the horizon, in the last expired day.
            req(t(DAY0 + 3 * DAY - 1), "/edge", 200, 3.0),
            // The first hour after it: its day is kept.
            req(t(DAY0 + 3 * DAY), "/edge", 200, 4.0),
            req(t(DAY0 + 9 * DAY + HOUR), "/new", 200, 5.0),
        ],
    )
    .await;
    (db, schema, client)
}

/// The performance partitions among those a report dropped (the usage
/// partitions of the same days go too).
fn perf_dropped(report: &metrics_pg::JobReport) -> Vec<String> {
    report
        .partitions_dropped
        .iter()
        .filter(|p| p.starts_with("performance_metrics_"))
        .cloned()
        .collect()
}

fn retention(db: &test_support::TestDb, schema: &str) -> RetentionJob {
    RetentionJob::new(pool(db), schema)
        .unwrap()
        .clock(Clock::fixed(t(NOW)))
}

#[tokio::test]
async fn expired_partitions_are_rolled_up_then_dropped_and_the_boundary_day_is_kept() {
    let (db, schema, client) = setup().await;
    // Nothing was rolled before: retention rolls every hour first.
    let report = retention(&db, &schema).run_once().await.unwrap();
    assert_eq!(
        perf_dropped(&report),
        vec![pname(1), pname(2)],
        "{report:?}"
    );
    assert_eq!(report.partitions_dropped.len(), 4, "usage partitions too");
    assert_eq!(report.raw_rows_dropped, 3);
    let left = partitions(&client, &schema).await;
    assert!(
        !left.contains(&pname(1)) && !left.contains(&pname(2)),
        "{left:?}"
    );
    assert!(
        left.contains(&pname(3)),
        "the day ending after the horizon stays: {left:?}"
    );
    assert_eq!(
        count(
            &client,
            &format!("SELECT count(*) FROM \"{schema}\".performance_metrics")
        )
        .await,
        2
    );
    // Every dropped row lives on in a rollup.
    let (old, n, _) = perf_row(&client, &schema, t(DAY0 + DAY + 10 * HOUR), "/old", "GET")
        .await
        .unwrap();
    assert_eq!((n, old["max"].as_f64()), (2, Some(2.0)));
    let (_, n, _) = perf_row(&client, &schema, t(DAY0 + 3 * DAY - HOUR), "/edge", "GET")
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert!(
        perf_row(&client, &schema, t(DAY0 + 3 * DAY), "/edge", "GET")
            .await
            .is_some()
    );

    // Running again changes nothing.
    let before = rollup_dump(&client, &schema).await;
    let again = retention(&db, &schema).run_once().await.unwrap();
    assert!(again.partitions_dropped.is_empty(), "{again:?}");
    assert_eq!(again.hours_rolled, 0);
    assert_eq!(rollup_dump(&client, &schema).await, before);
}

#[tokio::test]
async fn a_late_row_in_an_expired_partition_is_rolled_in_before_the_drop() {
    let (db, schema, client) = setup().await;
    let rolled = RollupJob::new(pool(&db), &schema)
        .unwrap()
        .clock(Clock::fixed(t(NOW)))
        .run_once()
        .await
        .unwrap();
    assert_eq!(rolled.hours_rolled, 4);
    // Eight days late: outside the rollup job's 24 h recheck window, so only
    // retention's own check before the drop can see it.
    insert_requests(
        &client,
        &schema,
        &[req(t(DAY0 + DAY + 10 * HOUR + 9), "/old", 500, 99.0)],
    )
    .await;
    let rollup_again = RollupJob::new(pool(&db), &schema)
        .unwrap()
        .clock(Clock::fixed(t(NOW + 60)))
        .run_once()
        .await
        .unwrap();
    assert_eq!(rollup_again.hours_rolled, 0);

    let report = retention(&db, &schema).run_once().await.unwrap();
    assert_eq!(report.hours_rolled, 1, "{report:?}");
    assert_eq!(report.raw_rows_dropped, 4);
    let (old, n, _) = perf_row(&client, &schema, t(DAY0 + DAY + 10 * HOUR), "/old", "GET")
        .await
        .unwrap();
    assert_eq!((n, old["max"].as_f64()), (3, Some(99.0)));
    assert_eq!(old["error_count"], 1);
}

#[tokio::test]
async fn a_partition_is_never_dropped_while_an_hour_in_it_cannot_be_rolled() {
    let (db, schema, client) = setup().await;
    insert_requests(
        &client,
        &schema,
        &[req(t(DAY0 + DAY + 11 * HOUR), "/boom", 200, 1.0)],
    )
    .await;
    client
        .batch_execute(&format!(
            "ALTER TABLE \"{schema}\".aggregated_metrics ADD CONSTRAINT no_boom \
             CHECK (endpoint_path IS DISTINCT FROM '/boom')"
        ))
        .await
        .unwrap();
    let err = retention(&db, &schema).run_once().await.unwrap_err();
    assert!(err.to_string().contains("no_boom"), "{err}");
    assert!(partitions(&client, &schema).await.contains(&pname(1)));
    assert_eq!(
        count(
            &client,
            &format!("SELECT count(*) FROM \"{schema}\".{}", pname(1))
        )
        .await,
        3
    );

    client
        .batch_execute(&format!(
            "ALTER TABLE \"{schema}\".aggregated_metrics DROP CONSTRAINT no_boom"
        ))
        .await
        .unwrap();
    let report = retention(&db, &schema).run_once().await.unwrap();
    assert_eq!(perf_dropped(&report), vec![pname(1), pname(2)]);
    assert!(
        perf_row(&client, &schema, t(DAY0 + DAY + 11 * HOUR), "/boom", "GET")
            .await
            .is_some()
    );
}

async fn insert_rollup(client: &Client, schema: &str, hour: u64) {
    client
        .execute(
            &format!(
                "INSERT INTO \"{schema}\".aggregated_metrics \
                   (time_bucket, metric_type, endpoint_path, method) VALUES ($1, 'performance', '/r', 'GET')"
            ),
            &[&t(hour)],
        )
        .await
        .unwrap();
}

async fn rollup_hours(client: &Client, schema: &str) -> Vec<i64> {
    client
        .query(
            &format!(
                "SELECT extract(epoch FROM time_bucket)::bigint FROM \"{schema}\".aggregated_metrics ORDER BY 1"
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn rollups_past_the_horizon_are_deleted_to_the_exact_hour() {
    let (db, schema) = migrated_db().await;
    let client = db.connect().await;
    let cutoff = DAY0 + 10 * DAY; // now − 90 days
    let now = cutoff + 90 * DAY;
    for h in [cutoff - 2 * HOUR, cutoff - HOUR, cutoff, cutoff + HOUR] {
        insert_rollup(&client, &schema, h).await;
    }
    let job = RetentionJob::new(pool(&db), &schema).unwrap();
    let report = job.run_at(t(now)).await.unwrap();
    assert_eq!(report.rollup_rows_deleted, 2, "{report:?}");
    // [cutoff − 1 h, cutoff) ended exactly at the horizon: gone.
    let kept: Vec<i64> = [cutoff, cutoff + HOUR].iter().map(|&h| h as i64).collect();
    assert_eq!(rollup_hours(&client, &schema).await, kept);

    // Half an hour later the hour starting at the horizon is still partly
    // inside it; one second before its end it stays, at its end it goes.
    let _ = job.run_at(t(now + HOUR - 1)).await.unwrap();
    assert_eq!(rollup_hours(&client, &schema).await, kept);
    let r = job.run_at(t(now + HOUR)).await.unwrap();
    assert_eq!(r.rollup_rows_deleted, 1);
    assert_eq!(
        rollup_hours(&client, &schema).await,
        vec![(cutoff + HOUR) as i64]
    );
}

#[tokio::test]
async fn horizons_are_configurable() {
    let (db, schema, client) = setup().await;
    let report = retention(&db, &schema)
        .raw_retention(Duration::from_secs(2 * DAY))
        .run_once()
        .await
        .unwrap();
    // Days 1..=7 end at or before day 8 = NOW − 2 days.
    assert_eq!(perf_dropped(&report).len(), 7, "{report:?}");
    let left = partitions(&client, &schema).await;
    assert!(
        left.contains(&pname(8)) && !left.contains(&pname(7)),
        "{left:?}"
    );
}

#[tokio::test]
async fn the_scheduler_runs_the_rollup_and_stops() {
    let (db, schema, client) = setup().await;
    let rollup = RollupJob::new(pool(&db), &schema)
        .unwrap()
        .clock(Clock::fixed(t(NOW)));
    let retention = retention(&db, &schema);
    let handle = Scheduler::spawn_jobs(rollup, retention, &SchedulerConfig::default());
    let mut reports = handle.reports();
    // The first rollup tick fires at once; wait for its report (bounded).
    tokio::time::timeout(Duration::from_secs(60), reports.changed())
        .await
        .expect("a report within a minute")
        .unwrap();
    let report = reports.borrow().clone().unwrap();
    assert_eq!(
        (report.job, report.hours_rolled),
        ("rollup", 4),
        "{report:?}"
    );
    handle.stop().await;
    assert_eq!(rollup_dump(&client, &schema).await.len(), 4 * 2);
}

#[tokio::test]
async fn the_scheduler_runs_retention_at_its_daily_slot_on_the_jobs_clock() {
    let (db, schema, client) = setup().await;
    // The retention job's clock reads 01:59:59.5 UTC of day 10 when the
    // scheduler starts and then runs in real time, so the default 02:00 slot
    // comes half a second later.
    let started = std::time::Instant::now();
    let base = t(NOW + 2 * HOUR) - Duration::from_millis(500);
    let retention = retention(&db, &schema).clock(Clock::from_fn(move || base + started.elapsed()));
    let rollup = RollupJob::new(pool(&db), &schema)
        .unwrap()
        .clock(Clock::fixed(t(NOW)));
    let mut config = SchedulerConfig::default();
    config.rollup_every = Duration::from_secs(3600);
    let handle = Scheduler::spawn_jobs(rollup, retention, &config);
    let mut reports = handle.reports();
    let mut jobs = Vec::new();
    let report = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            reports.changed().await.unwrap();
            let report = reports.borrow_and_update().clone().unwrap();
            jobs.push(report.job);
            if report.job == "retention" {
                return report;
            }
        }
    })
    .await
    .expect("retention ran within a minute");
    // The slot, not the start: the first rollup tick came first, and
    // retention waited for 02:00 on its clock.
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(jobs, ["rollup", "retention"]);
    assert_eq!(perf_dropped(&report), [pname(1), pname(2)], "{report:?}");
    handle.stop().await;
    assert!(!partitions(&client, &schema).await.contains(&pname(2)));
}

async fn first_and_count(client: &Client, sql: &str) -> (Option<i64>, i64) {
    let r = client.query_one(sql, &[]).await.unwrap();
    (r.get(0), r.get(1))
}

#[tokio::test]
async fn five_minute_and_daily_rollups_expire_with_their_hours() {
    let (db, schema) = migrated_db().await;
    let client = db.connect().await;
    // Every 5-minute slot of days 0 and 1 has a request.
    let rows: Vec<_> = (0..2 * 24 * 12u64)
        .map(|i| req(t(DAY0 + i * 300 + 7), "/e", 200, (i % 50) as f64))
        .collect();
    insert_requests(&client, &schema, &rows).await;
    let now = DAY0 + 2 * DAY + 120;
    let _ = RollupJob::new(pool(&db), &schema)
        .unwrap()
        .run_at(t(now))
        .await
        .unwrap();
    let slots = format!(
        "SELECT extract(epoch FROM min(time_bucket))::bigint, count(*) FROM \"{schema}\".aggregated_metrics_5min"
    );
    let days = format!(
        "SELECT extract(epoch FROM min(day))::bigint, count(*) FROM \"{schema}\".rollup_days"
    );
    let daily = format!(
        "SELECT extract(epoch FROM min(time_bucket))::bigint, count(*) FROM \"{schema}\".aggregated_metrics_daily"
    );
    assert_eq!(
        first_and_count(&client, &slots).await,
        (Some(DAY0 as i64), 576)
    );
    assert_eq!(
        first_and_count(&client, &days).await,
        (Some(DAY0 as i64), 2)
    );
    assert_eq!(
        first_and_count(&client, &daily).await,
        (Some(DAY0 as i64), 4)
    );

    // Rollups kept 2 days: hour 0 of day 0 expires at day 2, 01:00.
    let now = DAY0 + 2 * DAY;
    let job = RetentionJob::new(pool(&db), &schema)
        .unwrap()
        .raw_retention(Duration::from_secs(DAY))
        .rollup_retention(Duration::from_secs(2 * DAY));
    let _ = job.run_at(t(now + HOUR - 1)).await.unwrap();
    assert_eq!(
        first_and_count(&client, &slots).await,
        (Some(DAY0 as i64), 576)
    );
    assert_eq!(first_and_count(&client, &days).await.1, 2);
    let _ = job.run_at(t(now + HOUR)).await.unwrap();
    // Its slots go with it, and its day's daily rows and rollup_days row
    // (the day is no longer whole), and day 0 is not rebuilt from 23 hours.
    assert_eq!(
        first_and_count(&client, &slots).await,
        (Some((DAY0 + HOUR) as i64), 576 - 12)
    );
    assert_eq!(
        first_and_count(&client, &days).await,
        (Some((DAY0 + DAY) as i64), 1)
    );
    assert_eq!(
        first_and_count(&client, &daily).await,
        (Some((DAY0 + DAY) as i64), 2)
    );
    let _ = job.run_at(t(now + 2 * HOUR)).await.unwrap();
    assert_eq!(
        first_and_count(&client, &slots).await,
        (Some((DAY0 + 2 * HOUR) as i64), 576 - 24)
    );
}

#[tokio::test]
async fn the_scheduler_maintains_partitions_for_the_day_of_the_jobs_clock() {
    let (db, schema, client) = setup().await;
    // Days 1..=9 have partitions; the clock reads day 10, so maintenance
    // creates days 10 (and 9, kept) to 13.
    assert!(!partitions(&client, &schema).await.contains(&pname(13)));
    let rollup = RollupJob::new(pool(&db), &schema)
        .unwrap()
        .clock(Clock::fixed(t(NOW)));
    let mut config = SchedulerConfig::default();
    config.rollup_every = Duration::from_secs(3600);
    config.partitions_every = Duration::from_millis(100);
    let handle = Scheduler::spawn_jobs(rollup, retention(&db, &schema), &config);
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let names = partitions(&client, &schema).await;
            if names.contains(&pname(13)) {
                return names;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("partitions within a minute");
    handle.stop().await;
    for n in 10..=13 {
        assert!(found.contains(&pname(n)), "{n}: {found:?}");
    }
    assert!(!found.contains(&pname(14)), "{found:?}");
}
