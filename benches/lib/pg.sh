# shellcheck shell=bash
# Shared by the PostgreSQL benchmark scripts. Source it, then call
# `pg_bench_setup NAME EXAMPLE`: it makes a work directory `$work` (removed on exit), builds
# the metrics-pg example EXAMPLE in release mode (`$driver`), and starts a throwaway PostgreSQL
# server for the run (`$url`, also exported as DATABASE_URL). The server runs with fsync on (a
# benchmark without durability would flatter every mode that commits often) and is stopped on
# exit, or by itself if this shell dies.

server_pid=
work=
pg_bench_cleanup() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    [ -z "$work" ] || rm -rf "$work"
}

pg_bench_setup() {
    local name=$1 example=$2 target_dir=${CARGO_TARGET_DIR:-target}
    work=$(mktemp -d "/tmp/$name.XXXXXX")
    chmod 755 "$work"
    trap pg_bench_cleanup EXIT

    echo "building (release)..." >&2
    cargo build -q --release -p metrics-pg --example "$example"
    cargo build -q --release -p app-metrics-test-support --bin pg-throwaway
    # shellcheck disable=SC2034 # used by the sourcing script
    driver="$target_dir/release/examples/$example"

    "$target_dir/release/pg-throwaway" --fsync on --parent-pid $$ --env-file "$work/env" \
        >"$work/server.out" 2>&1 &
    server_pid=$!
    for _ in $(seq 1 600); do [ -s "$work/env" ] && break; sleep 0.1; done
    [ -s "$work/env" ] || { cat "$work/server.out" >&2; echo "server did not start" >&2; return 1; }
    # shellcheck disable=SC1091
    . "$work/env"
    export DATABASE_URL
    url=$DATABASE_URL
    psql "$url" -X -q -t -c "SHOW fsync" | grep -q on || { echo "fsync is not on" >&2; return 1; }
}
