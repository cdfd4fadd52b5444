#!/usr/bin/env bash
# The fault/load harness of issue 13 (the `faults` crate): builds examples/dashboard and the
# harness in release mode, then starts the app as real processes against throwaway PostgreSQL
# clusters on 127.0.0.1, drives open-loop load, injects faults (its TCP proxy, signals to
# PostgreSQL and to the app, hostile bytes) and reconciles id by id what clients were told
# against what the database holds. docs/operations.md ("Failure behaviour") explains each
# scenario.
#
# Prints one line per scenario and a summary:
#   RESULT faults scenario=<name> <key=value figures> verdict=pass|FAIL
#   RESULT faults total_s=<x> scenarios=<n> failed=<n>
# Exits 1 when a scenario failed.
#
# Usage: benches/faults.sh [--ci | --no-build | SCENARIO...]
#   (no scenario)  every scenario (target: 12 minutes on a 2-core machine)
#   --ci           the short subset scripts/test runs (about 3 minutes)
#   --no-build     use the binaries already built (scripts/test builds them first)
#   --list         print the scenario names
# Environment: FAULTS_SEED (the hostile generator's seed, 13), FAULTS_APP_LOG (the apps'
# RUST_LOG, warn), FAULTS_ECHO_APP=1 (echo the apps' output), CARGO_TARGET_DIR,
# APP_METRICS_PG_BIN (the PostgreSQL binaries, as for the tests). Installs nothing: a missing
# PostgreSQL fails with a message naming what to install.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

install=0
# shellcheck source=scripts/lib/prereq.sh
. scripts/lib/prereq.sh

build=1
args=()
for arg in "$@"; do
    case "$arg" in
        --no-build) build=0 ;;
        -h | --help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) args+=("$arg") ;;
    esac
done

command -v cargo >/dev/null 2>&1 || die "cargo not found: install the Rust toolchain first"
command -v kill >/dev/null 2>&1 || die "kill not found (procps): the harness signals processes with it"
# Fails (never skips) without PostgreSQL 15+; this script installs nothing.
[ -n "$(pg_bin_dir)" ] ||
    die "PostgreSQL server binaries (initdb, pg_ctl) not found: install them (scripts/test does, or apt-get install postgresql) or set APP_METRICS_PG_BIN"
ensure_postgres
export APP_METRICS_PG_BIN="${APP_METRICS_PG_BIN:-$pg_bin}"

target=${CARGO_TARGET_DIR:-target}
locked=()
if [ "${CI:-}" = "true" ]; then
    locked=(--locked)
fi
if [ "$build" -eq 1 ]; then
    run cargo build "${locked[@]}" --release -p example-dashboard --bin example-dashboard \
        -p app-metrics-faults --bin faults
fi
for bin in "$target/release/example-dashboard" "$target/release/faults"; do
    [ -x "$bin" ] || die "$bin is missing: run without --no-build"
done

exec "$target/release/faults" --app "$target/release/example-dashboard" "${args[@]}"
