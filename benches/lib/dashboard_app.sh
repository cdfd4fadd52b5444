# shellcheck shell=bash
# Shared by the dashboard benchmarks (after benches/lib/pg.sh's `pg_bench_setup NAME
# dashboard_seed`): `dashboard_seed` fills `$url` with the 1 M requests/day bench data of
# metrics-pg/examples/dashboard_seed.rs (PER_DAY, EVENTS_PER_DAY, HISTORY_DAYS, SCHEMA), and
# `dashboard_app_start` runs the example app (release) on it, on a free port (`$base`), with
# ADMIN as its admin; `dashboard_app_stop` stops it (also on exit).

app_pid=
dashboard_app_stop() {
    if [ -n "$app_pid" ]; then
        kill "$app_pid" 2>/dev/null || true
        wait "$app_pid" 2>/dev/null || true
        app_pid=
    fi
}

dashboard_seed() {
    echo "seeding: $PER_DAY requests/day and $EVENTS_PER_DAY events/day raw over 7 days, $HISTORY_DAYS days rolled up..." >&2
    "$driver" seed --url "$url" --schema "$SCHEMA" --per-day "$PER_DAY" \
        --events-per-day "$EVENTS_PER_DAY" --history-days "$HISTORY_DAYS"
}

# Returns 1 (with the reason on stderr) when the app does not build or start.
dashboard_app_start() {
    local target_dir=${CARGO_TARGET_DIR:-target} port
    trap 'dashboard_app_stop; pg_bench_cleanup' EXIT
    echo "building the example app (release)..." >&2
    if ! cargo build -q --release -p example-dashboard 2>"$work/app-build.err"; then
        tail -5 "$work/app-build.err" >&2
        return 1
    fi
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    base="http://127.0.0.1:$port"
    DATABASE_URL="$url" BIND="127.0.0.1:$port" ADMIN_USERS="$ADMIN" RUST_LOG=warn \
        "$target_dir/release/example-dashboard" >"$work/app.log" 2>&1 &
    app_pid=$!
    for _ in $(seq 1 300); do
        curl -s -o /dev/null "$base/health" && return 0
        sleep 0.1
    done
    cat "$work/app.log" >&2
    return 1
}
