#!/usr/bin/env bash
# Instructions per request of every hot_path variant (metrics-tower/examples/
# hot_path.rs), counted by valgrind's callgrind: immune to the machine's load,
# so before/after comparisons of the request path do not need a quiet machine.
#
# Each variant runs with N and 2N requests on a current-thread runtime (the
# collector's worker and the sink on the same thread, so they are counted);
# instructions per request = (count at 2N - count at N) / N, which removes
# setup. Prints, per variant:
#   RESULT instructions variant=<v> per_req=<n> added=<n - its bare twin>
# (fn_* against fn_bare, router_* against router_bare).
#
# Knobs (environment): VARIANTS (space-separated; default all), N (2000),
# SINK (memory or noop, passed to hot_path), HOT_PATH_BIN (a prebuilt hot_path
# to count instead of building this checkout's, for before/after), KEEP (a
# directory to keep the callgrind.out files in, for callgrind_annotate).
# Installs valgrind with apt-get if missing.
set -euo pipefail

VARIANTS=${VARIANTS:-fn_bare fn_metrics fn_metrics_nocorr router_bare router_noop_layer router_metrics router_metrics_nocorr router_trace router_reqid router_trace_reqid}
N=${N:-2000}

cd "$(dirname "$0")/.."

# shellcheck source=lib/apt.sh
source benches/lib/apt.sh
ensure_command valgrind valgrind instructions

if [[ -n ${HOT_PATH_BIN:-} ]]; then
    BIN=$HOT_PATH_BIN
else
    echo "instructions: building metrics-tower/examples/hot_path (release, line tables)" >&2
    BIN=$(cargo build -p metrics-tower --all-features --example hot_path \
        --config 'profile.callgrind.inherits="release"' \
        --config 'profile.callgrind.debug="line-tables-only"' --profile callgrind \
        --message-format=json-render-diagnostics |
        sed -n 's/.*"executable":"\([^"]*hot_path\)".*/\1/p' | tail -n 1)
fi
if [[ -z "$BIN" || ! -x "$BIN" ]]; then
    echo "instructions: could not find the hot_path binary" >&2
    exit 1
fi

OUT=${KEEP:-$(mktemp -d)}
mkdir -p "$OUT"
[[ -n ${KEEP:-} ]] || trap 'rm -rf "$OUT"' EXIT

# Total instructions of one run: `hot_path <variant> <n>`.
count() {
    local file="$OUT/callgrind.$1.$2"
    valgrind --tool=callgrind --callgrind-out-file="$file" "$BIN" "$1" "$2" 2>"$file.log" || {
        echo "instructions: hot_path $1 $2 failed:" >&2
        cat "$file.log" >&2
        return 1
    }
    sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$file"
}

declare -A PER_REQ
for v in $VARIANTS; do
    one=$(count "$v" "$N")
    two=$(count "$v" $((2 * N)))
    PER_REQ[$v]=$(((two - one) / N))
done
for v in $VARIANTS; do
    bare=${v%%_*}_bare
    if [[ -n ${PER_REQ[$bare]:-} ]]; then
        added=$((PER_REQ[$v] - PER_REQ[$bare]))
    else
        added=n/a
    fi
    printf 'RESULT instructions variant=%s per_req=%d added=%s\n' "$v" "${PER_REQ[$v]}" "$added"
done
