//! `faults`: the fault/load harness of issue 13.
//!
//! Starts `example-dashboard` as real processes against throwaway
//! PostgreSQL clusters on 127.0.0.1, drives open-loop load with its own
//! HTTP client (a unique `X-Correlation-ID` per request, a unique
//! `element_id` per usage event), injects faults (its TCP proxy, signals
//! to PostgreSQL and to the app, hostile bytes) and reconciles, id by id,
//! what the clients were told against what the database holds.
//!
//! ```text
//! faults [--app PATH] [--ci | SCENARIO...]   run (default: every scenario)
//! faults --list                              print the scenario names
//! ```
//!
//! Each scenario prints `RESULT faults scenario=<name> <figures>
//! verdict=pass|FAIL`, the run ends with `RESULT faults total_s=<x>
//! scenarios=<n> failed=<n>`; the exit code is 1 when a scenario failed.
//! `baseline` always runs first (the others' p99 budget is relative to it).
//! `benches/faults.sh` builds and runs it; docs/operations.md ("Failure
//! behaviour") explains the scenarios.
//!
//! Environment: `FAULTS_APP` (the app binary, as `--app`), `FAULTS_APP_LOG`
//! (the apps' `RUST_LOG`, default `warn`), `FAULTS_ECHO_APP` (echo the
//! apps' output to stderr), and test-support's `APP_METRICS_PG_BIN` etc.

mod app;
mod counters;
mod error;
mod hostile;
mod http;
mod ledger;
mod load;
mod pg;
mod proxy;
mod reconcile;
mod report;
mod scenarios;
mod slow;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use crate::scenarios::Ctx;

const USAGE: &str = "usage: faults [--app PATH] [--ci | SCENARIO...] | --list";

#[tokio::main]
async fn main() -> ExitCode {
    let mut app = std::env::var_os("FAULTS_APP").map(PathBuf::from);
    let mut names: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--app" => app = args.next().map(PathBuf::from),
            "--ci" => names.extend(scenarios::CI.iter().map(|s| (*s).to_owned())),
            "--list" => {
                for s in scenarios::ALL {
                    let ci = if scenarios::CI.contains(s) {
                        " (ci)"
                    } else {
                        ""
                    };
                    println!("{s}{ci}");
                }
                return ExitCode::SUCCESS;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            s if s.starts_with('-') => {
                eprintln!("faults: unknown option {s}\n{USAGE}");
                return ExitCode::from(2);
            }
            s => names.push(s.to_owned()),
        }
    }
    let app_bin = app.unwrap_or_else(default_app);
    if !app_bin.is_file() {
        eprintln!(
            "faults: error: the app binary {} does not exist: build it with \
             `cargo build --release -p example-dashboard --bin example-dashboard` \
             (or pass --app / FAULTS_APP)",
            app_bin.display()
        );
        return ExitCode::from(2);
    }
    if names.is_empty() {
        names = scenarios::ALL.iter().map(|s| (*s).to_owned()).collect();
    }
    // The p99 budgets need the baseline: it runs first, once.
    names.retain(|n| n != "baseline");
    names.insert(0, "baseline".to_owned());

    let mut ctx = Ctx {
        app_bin,
        baseline_p99: None,
    };
    let t0 = Instant::now();
    let mut outcomes = Vec::new();
    for name in &names {
        eprintln!("faults: running {name}");
        let started = Instant::now();
        let mut outcome = scenarios::run(name, &mut ctx).await;
        outcome.figure("took_s", format!("{:.1}", started.elapsed().as_secs_f64()));
        println!("{}", outcome.line());
        for note in outcome.notes() {
            println!("  note ({}): {note}", outcome.name());
        }
        outcomes.push(outcome);
    }
    println!(
        "{}",
        report::total_line(t0.elapsed().as_secs_f64(), &outcomes)
    );
    if outcomes.iter().all(report::Outcome::passed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `$CARGO_TARGET_DIR/release/example-dashboard`, else `target/release/..`.
fn default_app() -> PathBuf {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    target.join("release").join("example-dashboard")
}
