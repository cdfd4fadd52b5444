#!/usr/bin/env bash
# Rollup benchmark (issue 4 targets), on a throwaway server of its own with fsync ON:
#
#   RESULT rollup mode=ours secs=<s>                 our RollupJob over one day of raw rows
#   RESULT rollup mode=sql_percentile_cont secs=<s>  the single SQL GROUP BY date_trunc('hour'),
#                                                    endpoint, method with percentile_cont(0.5/0.95/0.99)
#   (median of ROUNDS alternating rounds each, same data, same server; target: ours <= 0.5x)
#
#   RESULT rollup_accuracy window=<1h|24h|7d|30d> quantile=<p50|p95|p99> rel_err=<x> original_rel_err=<y>
#     ACC_ROWS log-normal latencies over 30 days, hourly LatencySketches merged per window,
#     compared with percentile_cont computed exactly in Rust over the sorted raw values (the
#     10 M rows are not inserted into PostgreSQL: the sketches are the same code the rollup
#     runs, and the exact reference is the same formula as percentile_cont); original_rel_err
#     is the original design's estimate, the mean of the hourly percentiles. Target: rel_err <= 0.01.
#
# Usage: benches/rollup.sh     (ROWS=1000000 ENDPOINTS=50 ROUNDS=3 ACC_ROWS=10000000)
set -euo pipefail
cd "$(dirname "$0")/.."

ROWS=${ROWS:-1000000}
ENDPOINTS=${ENDPOINTS:-50}
ROUNDS=${ROUNDS:-3}
ACC_ROWS=${ACC_ROWS:-10000000}

# shellcheck source=benches/lib/pg.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/pg.sh"
pg_bench_setup rollup_bench rollup_bench

echo "loading $ROWS rows over one day, $ENDPOINTS endpoints..." >&2
"$driver" load --url "$url" --rows "$ROWS" --endpoints "$ENDPOINTS"
out=$("$driver" time --url "$url" --rounds "$ROUNDS")
ours=$(echo "$out" | sed -n 's/^ours_secs=//p')
sql=$(echo "$out" | sed -n 's/^sql_secs=//p')
echo "RESULT rollup mode=ours secs=$ours"
echo "RESULT rollup mode=sql_percentile_cont secs=$sql"
awk -v o="$ours" -v s="$sql" 'BEGIN { printf "info ours/sql_percentile_cont=%.2f (target <= 0.50)\n", o / s }' >&2

echo "accuracy: $ACC_ROWS latencies over 30 days (in Rust, no database)..." >&2
"$driver" accuracy --rows "$ACC_ROWS" --days 30
