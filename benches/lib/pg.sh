# shellcheck shell=bash
# Shared by the benchmark scripts: start a throwaway PostgreSQL server for one run.
# Source it, then call `pg_start WORKDIR`; it sets `server_pid` (for the caller's cleanup trap)
# and exports DATABASE_URL. The server runs with fsync on (a benchmark without durability would
# flatter every mode that commits often) and stops by itself when this shell exits.

pg_start() {
    local work=$1 target_dir=${CARGO_TARGET_DIR:-target}
    cargo build -q --release -p app-metrics-test-support --bin pg-throwaway
    "$target_dir/release/pg-throwaway" --fsync on --parent-pid $$ --env-file "$work/env" \
        >"$work/server.out" 2>&1 &
    # shellcheck disable=SC2034 # read by the sourcing script's cleanup trap
    server_pid=$!
    for _ in $(seq 1 600); do [ -s "$work/env" ] && break; sleep 0.1; done
    [ -s "$work/env" ] || { cat "$work/server.out" >&2; echo "server did not start" >&2; return 1; }
    # shellcheck disable=SC1091
    . "$work/env"
    export DATABASE_URL
    psql "$DATABASE_URL" -X -q -t -c "SHOW fsync" | grep -q on || { echo "fsync is not on" >&2; return 1; }
}
