#!/usr/bin/env bash
# Ingest benchmark: how fast the same realistic request rows get into PostgreSQL
#   per_row_insert  one INSERT per row, autocommit, into the original design's
#                   table (uuid v4 PK + btrees on timestamp, endpoint, user_id);
#                   measured on PER_ROW_ROWS rows (it is slow)
#   psql_copy       psql \copy of the rows as CSV into that same table layout:
#                   the reference
#   pg_sink         our PgSink behind the Collector (binary COPY, daily
#                   partitions, BRIN + one btree, UUIDv7, 2 COPY streams)
# on a throwaway server of its own with fsync ON, and prints
#   RESULT pg_ingest mode=<m> rows_per_s=<n> ratio_to_psql=<x>
#
# Usage: benches/pg_ingest.sh            (ROWS=1000000 PER_ROW_ROWS=20000 STREAMS=2 BATCH=20000)
set -euo pipefail
cd "$(dirname "$0")/.."

ROWS=${ROWS:-1000000}
PER_ROW_ROWS=${PER_ROW_ROWS:-20000}
STREAMS=${STREAMS:-2}
BATCH=${BATCH:-20000}

# shellcheck source=benches/lib/pg.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/pg.sh"
pg_bench_setup pg_ingest pg_ingest
psql_() { psql "$url" -X -q -v ON_ERROR_STOP=1 "$@"; }

original_table() { # the seed plan's layout: uuid PK + three btrees
    psql_ <<SQL
DROP TABLE IF EXISTS $1;
CREATE TABLE $1 (
    id uuid PRIMARY KEY,
    "timestamp" timestamptz NOT NULL,
    endpoint text NOT NULL,
    method text NOT NULL,
    status_code integer NOT NULL,
    response_time_ms double precision NOT NULL,
    user_id text,
    error_type text
);
CREATE INDEX ON $1 ("timestamp");
CREATE INDEX ON $1 (endpoint);
CREATE INDEX ON $1 (user_id);
SQL
}

now() { date +%s.%N; }

echo "generating $ROWS rows as CSV..." >&2
"$driver" csv --rows "$ROWS" --out "$work/rows.csv"
chmod 644 "$work/rows.csv"

# (c) the reference: psql \copy of the CSV.
original_table orig_copy
psql_ -c "CHECKPOINT"
t0=$(now)
psql_ -c "\\copy orig_copy (id, \"timestamp\", endpoint, method, status_code, response_time_ms, user_id, error_type) FROM '$work/rows.csv' WITH (FORMAT csv)"
t1=$(now)
copied=$(psql_ -t -A -c "SELECT count(*) FROM orig_copy")
[ "$copied" = "$ROWS" ] || { echo "psql copied $copied of $ROWS rows" >&2; exit 1; }
psql_rate=$(awk -v n="$ROWS" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }')

# (a) the original design: one INSERT per request.
original_table orig_per_row
psql_ -c "CHECKPOINT"
per_row_rate=$("$driver" per-row --url "$url" --rows "$PER_ROW_ROWS" --table orig_per_row | sed -n 's/^rows_per_s=//p')

# (b) PgSink through the collector.
psql_ -c "CHECKPOINT"
sink_out=$("$driver" sink --url "$url" --rows "$ROWS" --streams "$STREAMS" --batch "$BATCH")
echo "$sink_out" | grep '^info' >&2 || true
sink_rate=$(echo "$sink_out" | sed -n 's/^rows_per_s=//p')
stored=$(psql_ -t -A -c "SELECT count(*) FROM bench.performance_metrics")
[ "$stored" = "$ROWS" ] || { echo "PgSink stored $stored of $ROWS rows" >&2; exit 1; }

ratio() { awk -v x="$1" -v r="$psql_rate" 'BEGIN { printf "%.2f", x / r }'; }
echo "RESULT pg_ingest mode=per_row_insert rows_per_s=$per_row_rate ratio_to_psql=$(ratio "$per_row_rate")"
echo "RESULT pg_ingest mode=psql_copy rows_per_s=$psql_rate ratio_to_psql=1.00"
echo "RESULT pg_ingest mode=pg_sink rows_per_s=$sink_rate ratio_to_psql=$(ratio "$sink_rate")"
awk -v s="$sink_rate" -v p="$per_row_rate" 'BEGIN { printf "info pg_sink/per_row_insert=%.1fx (goal >= 30x); pg_sink/psql_copy goal >= 1.5x\n", s / p }' >&2
