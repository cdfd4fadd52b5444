#!/usr/bin/env bash
# Dashboard page benchmark (issue 11 target), on the 1 M requests/day data of
# benches/dashboard_queries.sh (seeded the same way, on a throwaway server with fsync on):
#
#   RESULT dashboard_page range=<24h|90d> render_ms=<median> bytes=<n> api_bytes=<n> target_ms=<t> ratio_to_target=<r> page_bytes_target=60000
#
#   render_ms  navigation start to every widget rendered (refresh over, cards filled, endpoint
#              table and the three charts drawn), median of RUNS loads in fresh tabs of headless
#              Chromium after one warm-up, the example app (release) serving page and API.
#   bytes      the page and its scripts and styles on the wire (transferSize); api_bytes the
#              three JSON answers.
#   Targets: render_ms <= 1000 (24h) and <= 1500 (90d); bytes <= 60000.
#
# Usage: benches/dashboard_page.sh   (PER_DAY=1000000 EVENTS_PER_DAY=100000 HISTORY_DAYS=30
#                                     RUNS=7 RANGES="24h 90d")
set -euo pipefail
cd "$(dirname "$0")/.."

PER_DAY=${PER_DAY:-1000000}
EVENTS_PER_DAY=${EVENTS_PER_DAY:-100000}
HISTORY_DAYS=${HISTORY_DAYS:-30}
RUNS=${RUNS:-7}
RANGES=${RANGES:-"24h 90d"}
SCHEMA=app_metrics
ADMIN=bench@example.com

# shellcheck source=benches/lib/pg.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/pg.sh"
# shellcheck source=benches/lib/dashboard_app.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/dashboard_app.sh"
# shellcheck source=scripts/lib/prereq.sh
. scripts/lib/prereq.sh
ensure_chromium

pg_bench_setup dashboard_page dashboard_seed
dashboard_seed
dashboard_app_start || { echo "the example app did not start" >&2; exit 1; }
cargo build -q --release -p example-dashboard --example dashboard_page
"${CARGO_TARGET_DIR:-target}/release/examples/dashboard_page" timing --base "$base" \
    --admin "$ADMIN" --ranges "$RANGES" --runs "$RUNS"
echo "info load average: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
