//! Driver of `benches/rollup.sh`.
//!
//! ```text
//! rollup_bench load     --url URL [--schema bench] [--rows 1000000] [--endpoints 50]
//! rollup_bench time     --url URL [--schema bench] [--rounds 3] [--concurrency N]
//! rollup_bench accuracy [--rows 10000000] [--days 30]
//! ```
//!
//! * `load` migrates `--schema`, creates the partitions of one UTC day and
//!   binary-COPYs `--rows` request rows spread over that day (50 endpoints,
//!   log-normal latencies, ~2 % errors, 1,000 users), from a seeded
//!   generator.
//! * `time` alternates, `--rounds` times, (a) our `RollupJob` over the whole
//!   day from scratch (bookkeeping and rollups emptied first; the job writes
//!   the hourly, 5-minute and daily rollups, as it does in production) and (b) the
//!   equivalent single SQL `GROUP BY date_trunc('hour'), endpoint, method`
//!   with count/sum/min/max/avg and three `percentile_cont`s, fetched by the
//!   client; prints the median seconds of each and checks that every bucket's
//!   p50/p95/p99 agree. With `ROLLUP_BENCH_OURS_ONLY` set it times only our
//!   job (for profiling it alone).
//! * `accuracy` is pure Rust (no database): `--rows` log-normal latencies
//!   over `--days` days whose median drifts with the time of day, hourly
//!   `LatencySketch`es as the rollup builds them (serialised and decoded, as
//!   stored), and for windows of 1 h, 24 h, 7 d and 30 d (the most recent
//!   ones) the relative error of the merged sketch's p50/p95/p99 against
//!   `percentile_cont` computed exactly over the sorted raw values, and the
//!   error of the original design (the mean of the hourly percentiles).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::pin_mut;
use metrics_core::aggregate::LatencySketch;
use metrics_pg::tokio_postgres::binary_copy::BinaryCopyInWriter;
use metrics_pg::tokio_postgres::types::{ToSql, Type};
use metrics_pg::{Clock, RollupJob};

/// 2026-01-01 00:00:00 UTC: the loaded day.
const DAY_START: u64 = 1_767_225_600;
const HOUR: u64 = 3_600;
const DAY: u64 = 86_400;
const SEED: u64 = 0x0D15_EA5E;

#[derive(Debug)]
struct Args {
    cmd: String,
    url: String,
    schema: String,
    rows: u64,
    endpoints: u64,
    rounds: usize,
    days: u64,
    concurrency: Option<usize>,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let cmd = it.next().ok_or("missing command: load | time | accuracy")?;
    let mut a = Args {
        cmd,
        url: String::new(),
        schema: "bench".into(),
        rows: 0,
        endpoints: 50,
        rounds: 3,
        days: 30,
        concurrency: None,
    };
    while let Some(flag) = it.next() {
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: not a number"))
        };
        match flag.as_str() {
            "--url" => a.url = v,
            "--schema" => a.schema = v,
            "--rows" => a.rows = num(&v)?,
            "--endpoints" => a.endpoints = num(&v)?,
            "--rounds" => a.rounds = usize::try_from(num(&v)?).unwrap_or(3),
            "--days" => a.days = num(&v)?,
            "--concurrency" => a.concurrency = Some(usize::try_from(num(&v)?).unwrap_or(2)),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(a)
}

/// Standard normal from a seeded generator (Box-Muller).
fn normal(rng: &mut fastrand::Rng) -> f64 {
    let u1 = rng.f64().max(f64::MIN_POSITIVE);
    let u2 = rng.f64();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // RUST_LOG=metrics_pg=trace shows where each hour's time goes.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let args = parse_args()?;
    match args.cmd.as_str() {
        "load" => load(&args).await,
        "time" => time_modes(&args).await,
        "accuracy" => {
            accuracy(&args);
            Ok(())
        }
        other => Err(format!("unknown command {other}").into()),
    }
}

async fn load(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let rows = if args.rows == 0 { 1_000_000 } else { args.rows };
    let pool = metrics_pg::create_pool(&args.url, 2)?;
    let mut client = pool.get().await?;
    let _ = metrics_pg::migrate(&mut client, &args.schema).await?;
    let day = time::OffsetDateTime::from_unix_timestamp(DAY_START as i64)?.date();
    let _ = metrics_pg::create_partitions(&mut client, &args.schema, [day]).await?;
    let sink = client
        .copy_in(&format!(
            "COPY \"{}\".performance_metrics (id, \"timestamp\", endpoint, method, status_code, \
             response_time_ms, user_id) FROM STDIN (FORMAT binary)",
            args.schema
        ))
        .await?;
    let writer = BinaryCopyInWriter::new(
        sink,
        &[
            Type::UUID,
            Type::TIMESTAMPTZ,
            Type::TEXT,
            Type::TEXT,
            Type::INT4,
            Type::FLOAT8,
            Type::TEXT,
        ],
    );
    pin_mut!(writer);
    let mut rng = fastrand::Rng::with_seed(SEED);
    let endpoints: Vec<(String, &str, f64)> = (0..args.endpoints)
        .map(|i| {
            let method = ["GET", "POST", "PUT", "DELETE"][(i % 4) as usize];
            (
                format!("/api/v1/r{i}/{{id}}"),
                method,
                10.0 + (i * 37 % 400) as f64,
            )
        })
        .collect();
    let started = Instant::now();
    for i in 0..rows {
        // Evenly spread over the day, in time order like real traffic.
        let at =
            UNIX_EPOCH + Duration::from_micros(DAY_START * 1_000_000 + i * DAY * 1_000_000 / rows);
        let (endpoint, method, median) = &endpoints[rng.usize(..endpoints.len())];
        let ms = (median.ln() + 0.8 * normal(&mut rng)).exp();
        let status: i32 = match rng.u32(..100) {
            0 => 500,
            1 => 404,
            _ => 200,
        };
        let user = format!("user{}", rng.u32(..1_000));
        let id = uuid::Uuid::now_v7();
        let values: [&(dyn ToSql + Sync); 7] = [&id, &at, endpoint, method, &status, &ms, &user];
        writer.as_mut().write(&values).await?;
    }
    let n = writer.finish().await?;
    client
        .batch_execute(&format!(
            "VACUUM ANALYZE \"{}\".performance_metrics",
            args.schema
        ))
        .await?;
    eprintln!(
        "info loaded {n} rows over one day in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn time_modes(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let pool = metrics_pg::create_pool(&args.url, 2 + args.concurrency.unwrap_or(2))?;
    let client = pool.get().await?;
    let s = &args.schema;
    let now = UNIX_EPOCH + Duration::from_secs(DAY_START + DAY + HOUR);
    let mut job = RollupJob::new(pool.clone(), s)?
        .clock(Clock::fixed(now))
        .governance(metrics_pg::Governance::disabled());
    if let Some(n) = args.concurrency {
        job = job.concurrency(n);
    }
    let sql = format!(
        "SELECT date_trunc('hour', \"timestamp\") AS hour, endpoint, method, count(*), \
                sum(response_time_ms), min(response_time_ms), max(response_time_ms), avg(response_time_ms), \
                percentile_cont(0.5) WITHIN GROUP (ORDER BY response_time_ms), \
                percentile_cont(0.95) WITHIN GROUP (ORDER BY response_time_ms), \
                percentile_cont(0.99) WITHIN GROUP (ORDER BY response_time_ms) \
         FROM \"{s}\".performance_metrics GROUP BY 1, 2, 3"
    );
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut sql_rows = Vec::new();
    for round in 0..args.rounds.max(1) {
        client
            .batch_execute(&format!(
                "TRUNCATE \"{s}\".aggregated_metrics, \"{s}\".rollup_hours, \
                 \"{s}\".aggregated_metrics_5min, \"{s}\".aggregated_metrics_daily, \
                 \"{s}\".rollup_days; CHECKPOINT"
            ))
            .await?;
        let t0 = Instant::now();
        let report = job.run_at(now).await?;
        ours.push(t0.elapsed().as_secs_f64());
        eprintln!("info round {round} ours: {report}");

        if std::env::var_os("ROLLUP_BENCH_OURS_ONLY").is_some() {
            continue; // profiling our side alone
        }
        let t0 = Instant::now();
        sql_rows = client.query(&sql, &[]).await?;
        theirs.push(t0.elapsed().as_secs_f64());
        eprintln!(
            "info round {round} sql_percentile_cont: {} buckets in {:.3}s",
            sql_rows.len(),
            theirs[round]
        );
    }
    // Every bucket agrees with percentile_cont (buckets of < 1,000 samples are
    // exact; bigger ones within 1 %).
    let mut checked = 0;
    let mut worst: f64 = 0.0;
    for r in &sql_rows {
        let hour: SystemTime = r.get(0);
        let endpoint: &str = r.get(1);
        let method: &str = r.get(2);
        let stored = client
            .query_one(
                &format!(
                    "SELECT (aggregated_values->>'p50')::float8, (aggregated_values->>'p95')::float8, \
                            (aggregated_values->>'p99')::float8, sample_count \
                     FROM \"{s}\".aggregated_metrics WHERE time_bucket = $1 AND metric_type = 'performance' \
                       AND endpoint_path = $2 AND method = $3"
                ),
                &[&hour, &endpoint, &method],
            )
            .await?;
        assert_eq!(stored.get::<_, i64>(3), r.get::<_, i64>(3));
        for (i, col) in [(0, 8), (1, 9), (2, 10)] {
            let (a, b): (f64, f64) = (stored.get(i), r.get(col));
            worst = worst.max(((a - b) / b).abs());
        }
        checked += 1;
    }
    eprintln!(
        "info checked {checked} buckets against percentile_cont: worst relative difference {worst:.2e}"
    );
    println!("ours_secs={:.3}", median(ours));
    if !theirs.is_empty() {
        println!("sql_secs={:.3}", median(theirs));
    }
    Ok(())
}

/// percentile_cont over sorted values.
fn percentile_cont(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let first = pos.floor();
    let lo = sorted[first as usize];
    if pos == first {
        lo
    } else {
        lo + (sorted[first as usize + 1] - lo) * (pos - first)
    }
}

fn accuracy(args: &Args) {
    let rows = if args.rows == 0 {
        10_000_000
    } else {
        args.rows
    };
    let hours = usize::try_from(args.days * 24).unwrap_or(720);
    let mut rng = fastrand::Rng::with_seed(SEED ^ 0xACC);
    let mut per_hour: Vec<Vec<f64>> = vec![Vec::new(); hours];
    let started = Instant::now();
    for _ in 0..rows {
        let h = rng.usize(..hours);
        // Diurnal load: the median swings between ~30 and ~80 ms over the day,
        // so hourly percentiles differ and averaging them is visibly biased.
        let phase = (h % 24) as f64 / 24.0 * 2.0 * std::f64::consts::PI;
        let mu = (50.0f64).ln() + 0.5 * phase.sin();
        per_hour[h].push((mu + 0.9 * normal(&mut rng)).exp());
    }
    // Hourly sketches as the rollup stores them.
    let stored: Vec<Vec<u8>> = per_hour
        .iter()
        .map(|vals| {
            let mut s = LatencySketch::new();
            for &v in vals {
                s.add(v);
            }
            s.to_bytes()
        })
        .collect();
    for v in &mut per_hour {
        v.sort_by(f64::total_cmp);
    }
    eprintln!(
        "info accuracy: {rows} samples over {hours} hours generated and sketched in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    for (name, n) in [("1h", 1), ("24h", 24), ("7d", 168), ("30d", hours)] {
        let window = &per_hour[hours - n..];
        let mut merged = LatencySketch::new();
        for bytes in &stored[hours - n..] {
            merged.merge(&LatencySketch::from_bytes(bytes).expect("stored sketch decodes"));
        }
        let mut all: Vec<f64> = window.iter().flatten().copied().collect();
        all.sort_by(f64::total_cmp);
        for (qname, q) in [("p50", 0.5), ("p95", 0.95), ("p99", 0.99)] {
            let truth = percentile_cont(&all, q);
            let ours = merged.quantile(q).expect("non-empty").value;
            let original =
                window.iter().map(|v| percentile_cont(v, q)).sum::<f64>() / window.len() as f64;
            println!(
                "RESULT rollup_accuracy window={name} quantile={qname} rel_err={:.6} original_rel_err={:.6}",
                ((ours - truth) / truth).abs(),
                ((original - truth) / truth).abs()
            );
        }
    }
}
