//! `metrics-aggregate`: the rollup, retention and migration jobs for cron and
//! job runners.
//!
//! ```text
//! metrics-aggregate <migrate|rollup|retention|run> [--database-url URL] [--schema NAME]
//!                   [--grace-secs N] [--recheck-hours N] [--raw-days N] [--rollup-days N]
//! ```
//!
//! One summary line per step on stdout; logs (governance warnings and
//! alerts included) and errors on stderr, errors tagged with a correlation id
//! generated per invocation. Exit codes: 0 success (and `--help`), 1 the
//! database cannot be reached (none given, a malformed URL, or the server
//! does not answer), 2 a job (or the arguments) failed.

use std::process::ExitCode;
use std::time::Duration;

use metrics_pg::{Error, Migrator, RetentionJob, RollupJob};

const USAGE: &str = "usage: metrics-aggregate <migrate|rollup|retention|run> [--database-url URL] \
[--schema NAME] [--grace-secs N] [--recheck-hours N] [--raw-days N] [--rollup-days N]

  migrate     apply pending schema migrations, then create the raw tables' day partitions
              (yesterday to 3 days ahead; rows of default partitions moved to theirs)
  rollup      roll every closed hour up into aggregated_metrics
  retention   drop raw partitions past --raw-days (7) once rolled up, delete rollups past --rollup-days (90)
  run         migrate (with partitions), rollup, retention, in that order: run it from cron at
              least daily when the application does not run the facade's scheduler

  --database-url defaults to $DATABASE_URL; --schema to app_metrics.
Exit codes: 0 success, 1 database not given, malformed URL or unreachable, 2 a job or the arguments failed.";

/// The `Err` of `parse_args` that asks for the usage on stdout and exit 0.
const HELP: &str = "--help";

#[derive(Debug)]
struct Args {
    command: String,
    url: Option<String>,
    schema: String,
    grace: Duration,
    recheck: Duration,
    raw_days: u64,
    rollup_days: u64,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        command: String::new(),
        url: None,
        schema: metrics_pg::DEFAULT_SCHEMA.to_owned(),
        grace: RollupJob::DEFAULT_GRACE,
        recheck: RollupJob::DEFAULT_RECHECK_WINDOW,
        raw_days: 7,
        rollup_days: 90,
    };
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        let number = |name: &str, v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{name}: not a whole number: {v:?}"))
        };
        match arg.as_str() {
            "--database-url" => args.url = Some(value("--database-url")?),
            "--schema" => args.schema = value("--schema")?,
            "--grace-secs" => {
                args.grace = Duration::from_secs(number("--grace-secs", value("--grace-secs")?)?);
            }
            "--recheck-hours" => {
                let h = number("--recheck-hours", value("--recheck-hours")?)?;
                args.recheck = Duration::from_secs(h.saturating_mul(3600));
            }
            "--raw-days" => args.raw_days = number("--raw-days", value("--raw-days")?)?,
            "--rollup-days" => args.rollup_days = number("--rollup-days", value("--rollup-days")?)?,
            "-h" | "--help" => return Err(HELP.into()),
            "migrate" | "rollup" | "retention" | "run" if args.command.is_empty() => {
                args.command = arg;
            }
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    if args.command.is_empty() {
        return Err("missing command".into());
    }
    Ok(args)
}

/// A step's failure, classified for the exit code.
struct Failure {
    step: &'static str,
    error: Error,
}

/// Whether the error means "cannot reach the database" (exit 1) rather than
/// "the job failed" (exit 2): pool and client timeouts, and connection-level
/// driver errors (no SQLSTATE, or class 08 / 57P0x: the server is gone,
/// starting or shutting down).
fn is_unreachable(e: &Error) -> bool {
    match e {
        Error::Pool(_) | Error::PoolTimeout(_) | Error::Timeout(_) | Error::InvalidUrl(_) => true,
        Error::Db { source, .. } => match source.code() {
            None => true,
            Some(code) => code.code().starts_with("08") || code.code().starts_with("57P"),
        },
        _ => false,
    }
}

fn hint(step: &str, e: &Error) -> &'static str {
    if matches!(e, Error::InvalidUrl(_)) {
        "the connection string: postgres://USER:PASSWORD@HOST:PORT/DBNAME (or key=value pairs such as \
         'host=localhost dbname=app user=app')"
    } else if is_unreachable(e) {
        "that PostgreSQL is running and reachable at --database-url / DATABASE_URL (host, port, \
         credentials, pg_hba.conf, connect_timeout)"
    } else if step == "migrate" {
        "that the role may create tables in the schema, and the migration error above"
    } else {
        "that `metrics-aggregate migrate` ran for this --schema, that the role may read, write and \
         drop partitions in it, and the PostgreSQL error above (its server log has the details)"
    }
}

async fn run(args: &Args, url: &str) -> Result<(), Failure> {
    let fail = |step| move |error| Failure { step, error };
    let pool = metrics_pg::create_pool(url, 4).map_err(fail("connect"))?;
    // Reach the server once before any step, so "unreachable" is told apart
    // from a failing job.
    let mut client = pool
        .get()
        .await
        .map_err(|e| fail("connect")(Error::Pool(e)))?;
    let steps: &[&'static str] = match args.command.as_str() {
        // Partitions after the migration: without the facade's daily timer,
        // cron running `run` (or `migrate`) is what creates the coming days'
        // partitions (rows of a day without one land in the default
        // partition, which retention never drops).
        "run" => &["migrate", "partitions", "rollup", "retention"],
        "migrate" => &["migrate", "partitions"],
        "rollup" => &["rollup"],
        _ => &["retention"],
    };
    for &step in steps {
        println!("{step}: starting (schema {})", args.schema);
        let line = match step {
            "migrate" => {
                let r = Migrator::new(&args.schema)
                    .map_err(fail(step))?
                    .run(&mut client)
                    .await
                    .map_err(fail(step))?;
                format!(
                    "migrate: schema at version {}, applied {:?}",
                    r.current_version, r.applied
                )
            }
            "partitions" => {
                let today = time::OffsetDateTime::now_utc().date();
                let r = metrics_pg::maintain_partitions(&mut client, &args.schema, today)
                    .await
                    .map_err(fail(step))?;
                format!(
                    "partitions: {} created, {} rows moved out of the default partitions",
                    r.created.len(),
                    r.rows_moved
                )
            }
            "rollup" => RollupJob::new(pool.clone(), &args.schema)
                .map_err(fail(step))?
                .grace(args.grace)
                .recheck_window(args.recheck)
                .run_once()
                .await
                .map_err(fail(step))?
                .to_string(),
            _ => RetentionJob::new(pool.clone(), &args.schema)
                .map_err(fail(step))?
                .grace(args.grace)
                .raw_retention(Duration::from_secs(args.raw_days.saturating_mul(86_400)))
                .rollup_retention(Duration::from_secs(args.rollup_days.saturating_mul(86_400)))
                .run_once()
                .await
                .map_err(fail(step))?
                .to_string(),
        };
        println!("{line}");
    }
    Ok(())
}

/// The error and every cause below it that adds something (pool and driver
/// errors wrap the server's actual message a level or two down).
fn with_causes(error: &Error) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(c) = cause {
        let more = c.to_string();
        if !more.is_empty() && !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

fn main() -> ExitCode {
    let run_id = uuid::Uuid::new_v4();
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(msg) if msg == HELP => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!(
                "metrics-aggregate: error [run {run_id}]: {msg}\n  check: the command line (usage below)"
            );
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let Some(url) = args
        .url
        .clone()
        .or_else(|| std::env::var("DATABASE_URL").ok())
    else {
        eprintln!(
            "metrics-aggregate: error [run {run_id}]: no database given\n  check: pass --database-url or set DATABASE_URL"
        );
        return ExitCode::from(1);
    };
    // Two worker threads: the rollup builds the sketches of two hours at once
    // (the rest of the work is in PostgreSQL).
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("metrics-aggregate: error [run {run_id}]: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(&args, &url)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { step, error }) => {
            eprintln!(
                "metrics-aggregate: error [run {run_id}]: {step} failed: {}\n  check: {}",
                with_causes(&error),
                hint(step, &error)
            );
            if is_unreachable(&error) {
                ExitCode::from(1)
            } else {
                ExitCode::from(2)
            }
        }
    }
}
