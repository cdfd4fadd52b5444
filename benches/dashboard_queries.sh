#!/usr/bin/env bash
# Dashboard query benchmark (issue 5 target), on a throwaway server of its own with fsync ON:
#
#   RESULT dashboard_queries endpoint=<performance|usage|time-series> range=<24h|7d|30d|90d> ms=<median> original_ms=<median>
#
#   ms           our dashboard API over HTTP (the example app, `cargo build --release -p
#                example-dashboard`, on the seeded database): median of RUNS requests after 3
#                warm-ups, `curl -w %{time_total}`, header X-Forwarded-Email of an admin.
#                time-series asks for metric_type=both at the range's default interval.
#   original_ms  the original design's SQL over the raw rows of the same range (percentile_cont
#                + avg/count/error rate, summary and GROUP BY endpoint, method; counts and
#                GROUP BY event_type / page; date_trunc / date_bin buckets), median of
#                ORIGINAL_RUNS runs after 1 warm-up, through the driver.
#   Target: ms <= 50 for all 12 lines.
#
# and the drill-down into one busy endpoint (DRILL_ENDPOINT, 1/50 of the traffic, one method):
#
#   RESULT dashboard_queries endpoint=requests range=7d ms=<median> limit=20
#   RESULT dashboard_queries endpoint=time-series-endpoint range=<24h|7d|30d|90d> ms=<median>
#
#   requests              GET /requests?endpoint=..&time_range=7d: its 20 slowest raw requests of
#                         the last 7 days and its status codes (target: ms <= 50).
#   time-series-endpoint  GET /time-series?metric_type=performance&endpoint=..&time_range=<r> at
#                         the range's default interval (5-minute buckets for 24h, from raw rows;
#                         hourly beyond, from the per-endpoint hourly rollups).
#   Timed like `ms` above (over HTTP, or directly with via=direct).
# Data (seeded by metrics-pg/examples/dashboard_seed.rs): raw rows from the UTC midnight 7 days
# ago up to now at PER_DAY requests/day (50 endpoints, log-normal latencies, ~2 % errors, 3,000
# users) and EVENTS_PER_DAY usage events/day, rolled up with RollupJob (hourly, 5-minute, daily),
# then HISTORY_DAYS of rolled history made by copying the rolled week back in time.
#
# When the example app does not serve the dashboard API (yet), `ms` is measured by calling
# PgMetricsQuery directly in the driver, and the lines are printed as `info dashboard_queries
# ... via=direct` instead of RESULT.
#
# Usage: benches/dashboard_queries.sh   (PER_DAY=1000000 EVENTS_PER_DAY=100000 HISTORY_DAYS=30
#                                        RUNS=20 ORIGINAL_RUNS=5)
set -euo pipefail
cd "$(dirname "$0")/.."

PER_DAY=${PER_DAY:-1000000}
EVENTS_PER_DAY=${EVENTS_PER_DAY:-100000}
HISTORY_DAYS=${HISTORY_DAYS:-30}
RUNS=${RUNS:-20}
ORIGINAL_RUNS=${ORIGINAL_RUNS:-5}
SCHEMA=app_metrics
ADMIN=bench@example.com
ranges="24h 7d 30d 90d"
DRILL_ENDPOINT=/api/v1/r0/%7Bid%7D # /api/v1/r0/{id}, as dashboard_seed.rs names it

# shellcheck source=benches/lib/pg.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/pg.sh"
# shellcheck source=benches/lib/dashboard_app.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/dashboard_app.sh"
pg_bench_setup dashboard_queries dashboard_seed
dashboard_seed

# ----- ours: over HTTP through the example app when it serves the API -----
via=direct
if dashboard_app_start; then
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "X-Forwarded-Email: $ADMIN" \
        "$base/api/v1/metrics/performance?time_range=24h" || true)
    if [ "$code" = 200 ]; then
        via=http
    else
        echo "info the example app answered $code on /api/v1/metrics/performance: timing PgMetricsQuery directly" >&2
        dashboard_app_stop
    fi
else
    echo "info the example app did not start (above): timing PgMetricsQuery directly" >&2
fi

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# `time_get NAME RANGE PATH`: RUNS timed GETs of PATH as the admin after 3 warm-ups; appends
# `ours endpoint=NAME range=RANGE ms=<median>` to $ours. Any answer but 200 stops the bench.
time_get() {
    local samples="$work/samples" out i
    : >"$samples"
    for i in $(seq 1 $((RUNS + 3))); do
        out=$(curl -s -o "$work/body" -w '%{http_code} %{time_total}' \
            -H "X-Forwarded-Email: $ADMIN" "$base$3")
        [ "${out%% *}" = 200 ] || { echo "GET $3 answered ${out%% *}: $(head -c 300 "$work/body")" >&2; exit 1; }
        [ "$i" -gt 3 ] && echo "${out#* }" >>"$samples"
    done
    echo "ours endpoint=$1 range=$2 ms=$(median <"$samples" | awk '{ printf "%.2f", $1 * 1000 }')" >>"$ours"
}

drill_lines="requests:7d time-series-endpoint:24h time-series-endpoint:7d time-series-endpoint:30d time-series-endpoint:90d"
ours="$work/ours.txt"
: >"$ours"
if [ "$via" = http ]; then
    for endpoint in performance usage time-series; do
        for range in $ranges; do
            path="/api/v1/metrics/$endpoint?time_range=$range"
            [ "$endpoint" = time-series ] && path="$path&metric_type=both"
            time_get "$endpoint" "$range" "$path"
        done
    done
    for line in $drill_lines; do
        endpoint=${line%%:*} range=${line#*:}
        if [ "$endpoint" = requests ]; then
            path="/api/v1/metrics/requests?endpoint=$DRILL_ENDPOINT&time_range=$range"
        else
            path="/api/v1/metrics/time-series?metric_type=performance&endpoint=$DRILL_ENDPOINT&time_range=$range"
        fi
        time_get "$endpoint" "$range" "$path"
    done
    dashboard_app_stop
else
    "$driver" ours --url "$url" --schema "$SCHEMA" --runs "$RUNS" >"$ours"
fi

echo "timing the original design's SQL over the raw rows..." >&2
original="$work/original.txt"
"$driver" original --url "$url" --schema "$SCHEMA" --runs "$ORIGINAL_RUNS" >"$original"

for endpoint in performance usage time-series; do
    for range in $ranges; do
        ms=$(sed -n "s/^ours endpoint=$endpoint range=$range ms=//p" "$ours")
        orig=$(sed -n "s/^original endpoint=$endpoint range=$range ms=//p" "$original")
        if [ "$via" = http ]; then
            echo "RESULT dashboard_queries endpoint=$endpoint range=$range ms=$ms original_ms=$orig"
        else
            echo "info dashboard_queries endpoint=$endpoint range=$range ms=$ms original_ms=$orig via=direct"
        fi
    done
done
for line in $drill_lines; do
    endpoint=${line%%:*} range=${line#*:}
    ms=$(sed -n "s/^ours endpoint=$endpoint range=$range ms=//p" "$ours")
    extra=
    [ "$endpoint" = requests ] && extra=" limit=20"
    if [ "$via" = http ]; then
        echo "RESULT dashboard_queries endpoint=$endpoint range=$range ms=$ms$extra"
    else
        echo "info dashboard_queries endpoint=$endpoint range=$range ms=$ms$extra via=direct"
    fi
done
echo "info load average: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
