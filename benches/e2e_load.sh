#!/usr/bin/env bash
# End-to-end throughput of a hello-world axum server (examples/e2e_hello.rs, one
# Tokio worker) with MetricsLayer, and with each peer layer, against the same
# server without any layer, under wrk, on 127.0.0.1 only.
#
# Method: simultaneous A/B at equal CPU. Alternating runs are too noisy on a
# shared 2-core machine, so both servers run at the same time pinned to the same
# core (SERVER_CPU) and share it; one `wrk -t1 -cCONNECTIONS` per server runs
# pinned to the other core (CLIENT_CPU). Whatever disturbs the machine during a
# round disturbs both servers alike, and the throughput ratio is the ratio of
# CPU cost per request. Ports (and with them which wrk starts first) are swapped
# every round. An A/A pair (bare against bare, same method) runs beside every
# A/B round and shows the method's own noise.
#
# Variants (each against its bare twin in the same rounds, each with its own
# A/A pair right after): metrics (our layer, defaults), metrics_noid (ours,
# correlation ids off), trace (tower-http TraceLayer), reqid (tower-http
# SetRequestId + PropagateRequestId), trace_reqid (both) and axum_prometheus.
# Prints per-round figures, then one line per variant:
#   RESULT e2e_load variant=<v> throughput_ratio=<median with/without> aa_ratio=<median A/A>
# and, for the `metrics` variant, the older line without a variant:
#   RESULT e2e_load throughput_ratio=<median> aa_ratio=<median>
#
# Knobs (environment): VARIANTS (space-separated, default all six, in the
# order above), SINK of the metrics variants, `memory` (MemorySink,
# bounded; the default) or `noop` (discards batches), ROUNDS (5, minimum 5),
# DURATION seconds per round (10),
# CONNECTIONS per wrk (32), SERVER_CPU (0), CLIENT_CPU (1), PORT_A (18081),
# PORT_B (18082), E2E_HELLO_BIN (a prebuilt e2e_hello to run instead of
# building this checkout's, for a before/after run on the same machine). Needs taskset (util-linux); installs wrk with apt-get if
# missing.
set -euo pipefail

SINK=${SINK:-memory}
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-32}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
PORT_A=${PORT_A:-18081}
PORT_B=${PORT_B:-18082}
HOST=127.0.0.1

VARIANTS=${VARIANTS:-metrics metrics_noid trace reqid trace_reqid axum_prometheus}

case "$SINK" in
memory | noop) ;;
*)
    echo "e2e_load: SINK must be memory or noop (got $SINK)" >&2
    exit 2
    ;;
esac

# The server flag of a variant.
variant_flag() {
    case "$1" in
    metrics) if [[ $SINK == noop ]]; then echo --with-metrics-noop-sink; else echo --with-metrics; fi ;;
    metrics_noid) echo --with-metrics-noid ;;
    trace) echo --trace ;;
    reqid) echo --reqid ;;
    trace_reqid) echo --trace-reqid ;;
    axum_prometheus) echo --axum-prometheus ;;
    *) return 1 ;;
    esac
}
for v in $VARIANTS; do
    if ! variant_flag "$v" >/dev/null; then
        echo "e2e_load: unknown variant $v (known: metrics metrics_noid trace reqid trace_reqid axum_prometheus)" >&2
        exit 2
    fi
done
if ((ROUNDS < 5)); then
    echo "e2e_load: ROUNDS must be at least 5 (got $ROUNDS)" >&2
    exit 2
fi

cd "$(dirname "$0")/.."

# shellcheck source=lib/apt.sh
source benches/lib/apt.sh
ensure_command wrk wrk e2e_load
command -v taskset >/dev/null 2>&1 || {
    echo "e2e_load: taskset (util-linux) is required" >&2
    exit 1
}

if [[ -n ${E2E_HELLO_BIN:-} ]]; then
    BIN=$E2E_HELLO_BIN
else
    echo "e2e_load: building examples/e2e_hello (release)" >&2
    BIN=$(cargo build --release --example e2e_hello --message-format=json-render-diagnostics |
        sed -n 's/.*"executable":"\([^"]*e2e_hello\)".*/\1/p' | tail -n 1)
fi
if [[ -z "$BIN" || ! -x "$BIN" ]]; then
    echo "e2e_load: could not find the e2e_hello binary" >&2
    exit 1
fi

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

CLK_TCK=$(getconf CLK_TCK)

# CPU time (user + system, in clock ticks) a process has used so far.
cpu_ticks() {
    # Fields 14 and 15 of /proc/<pid>/stat, counted after the ")" that ends
    # the command name (which may contain spaces).
    local stat
    stat=$(<"/proc/$1/stat")
    stat=${stat##*) }
    awk '{ print $12 + $13 }' <<<"$stat"
}

wait_for_port() {
    local port=$1
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/$HOST/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.05
    done
    echo "e2e_load: server on port $port did not start" >&2
    return 1
}

start_server() { # mode port log -> sets SERVER_PID
    taskset -c "$SERVER_CPU" "$BIN" "$1" "$2" 2>"$3" &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
}

stop_server() {
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

requests_per_sec() {
    local rps
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$1")
    if [[ -z "$rps" ]]; then
        echo "e2e_load: no Requests/sec in wrk output:" >&2
        cat "$1" >&2
        return 1
    fi
    if grep -q -E 'Non-2xx|Socket errors' "$1"; then
        echo "e2e_load: warning: wrk reported errors:" >&2
        grep -E 'Non-2xx|Socket errors' "$1" >&2
    fi
    echo "$rps"
}

# Starts one wrk per server on CLIENT_CPU, the one for PORT_A first, and
# waits for both. $1: duration in seconds, $2: output prefix (or empty).
run_wrk_pair() {
    local secs=$1 out=$2 port pids=()
    for port in "$PORT_A" "$PORT_B"; do
        taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNECTIONS" -d"${secs}s" "http://$HOST:$port/" \
            >"${out:-/dev/null}${out:+.$port.wrk}" &
        pids+=($!)
        PIDS+=($!)
    done
    wait "${pids[@]}"
}

# One simultaneous pair: mode_x on port_x and mode_y on port_y, both servers
# on SERVER_CPU. Runs in this shell (not a subshell) so the EXIT trap knows
# every process it started. Sets RPS_X RPS_Y (requests/s) and CPU_X CPU_Y
# (share of a CPU each server used while measured).
run_pair() {
    local mode_x=$1 port_x=$2 mode_y=$3 port_y=$4 tag=$5
    local pid_x pid_y cpu_x0 cpu_y0 cpu_x1 cpu_y1
    start_server "$mode_x" "$port_x" "$WORK/$tag.x.log"
    pid_x=$SERVER_PID
    start_server "$mode_y" "$port_y" "$WORK/$tag.y.log"
    pid_y=$SERVER_PID
    wait_for_port "$port_x"
    wait_for_port "$port_y"

    # Short simultaneous warm-up: connections, allocator, caches.
    run_wrk_pair 1 ""
    cpu_x0=$(cpu_ticks "$pid_x")
    cpu_y0=$(cpu_ticks "$pid_y")
    run_wrk_pair "$DURATION" "$WORK/$tag"
    cpu_x1=$(cpu_ticks "$pid_x")
    cpu_y1=$(cpu_ticks "$pid_y")

    stop_server "$pid_x"
    stop_server "$pid_y"
    PIDS=()

    RPS_X=$(requests_per_sec "$WORK/$tag.$port_x.wrk")
    RPS_Y=$(requests_per_sec "$WORK/$tag.$port_y.wrk")
    CPU_X=$(awk -v t=$((cpu_x1 - cpu_x0)) -v hz="$CLK_TCK" -v d="$DURATION" 'BEGIN { printf "%.3f", t / hz / d }')
    CPU_Y=$(awk -v t=$((cpu_y1 - cpu_y0)) -v hz="$CLK_TCK" -v d="$DURATION" 'BEGIN { printf "%.3f", t / hz / d }')
}

# CPU time per request of server x over that of server y in the last pair
# (1.0 = same cost; above 1, x costs more). Equal to 1 / throughput ratio
# when the two servers got equal CPU, which is what pinning them together
# aims at; printed so a round where they did not can be spotted.
cpu_per_req_ratio() {
    awk -v cx="$CPU_X" -v cy="$CPU_Y" -v rx="$RPS_X" -v ry="$RPS_Y" \
        'BEGIN { if (cy > 0 && rx > 0) printf "%.3f", (cx / rx) / (cy / ry); else print "n/a" }'
}

median() {
    sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo "e2e_load: variants: $VARIANTS; $SINK sink; $ROUNDS rounds x ${DURATION}s per pair, servers on CPU $SERVER_CPU, wrk -t1 -c$CONNECTIONS on CPU $CLIENT_CPU" >&2
declare -A AB_RATIOS AA_RATIOS
for round in $(seq 1 "$ROUNDS"); do
    if ((round % 2)); then
        p1=$PORT_A p2=$PORT_B
    else
        p1=$PORT_B p2=$PORT_A
    fi
    for v in $VARIANTS; do
        run_pair "$(variant_flag "$v")" "$p1" --bare "$p2" "ab$round.$v"
        ratio=$(awk -v a="$RPS_X" -v b="$RPS_Y" 'BEGIN { printf "%.4f", a / b }')
        AB_RATIOS[$v]+="$ratio "
        received=$(sed -n 's/.*received: \([0-9]*\).*/\1/p' "$WORK/ab$round.$v.x.log")
        printf 'round %d %s A/B: with=%s req/s (port %s, cpu %s) without=%s req/s (port %s, cpu %s) ratio=%s cpu_per_req_ratio=%s collector_received=%s\n' \
            "$round" "$v" "$RPS_X" "$p1" "$CPU_X" "$RPS_Y" "$p2" "$CPU_Y" "$ratio" "$(cpu_per_req_ratio)" "${received:--}"

        run_pair --bare "$p1" --bare "$p2" "aa$round.$v"
        ratio=$(awk -v a="$RPS_X" -v b="$RPS_Y" 'BEGIN { printf "%.4f", a / b }')
        AA_RATIOS[$v]+="$ratio "
        printf 'round %d %s A/A: first=%s req/s (port %s, cpu %s) second=%s req/s (port %s, cpu %s) ratio=%s cpu_per_req_ratio=%s\n' \
            "$round" "$v" "$RPS_X" "$p1" "$CPU_X" "$RPS_Y" "$p2" "$CPU_Y" "$ratio" "$(cpu_per_req_ratio)"
    done
done

for v in $VARIANTS; do
    # shellcheck disable=SC2086 # the lists are space-separated numbers
    throughput_ratio=$(printf '%s\n' ${AB_RATIOS[$v]} | median)
    # shellcheck disable=SC2086
    aa_ratio=$(printf '%s\n' ${AA_RATIOS[$v]} | median)
    printf 'RESULT e2e_load variant=%s throughput_ratio=%.3f aa_ratio=%.3f\n' "$v" "$throughput_ratio" "$aa_ratio"
    if [[ $v == metrics ]]; then
        printf 'RESULT e2e_load throughput_ratio=%.3f aa_ratio=%.3f\n' "$throughput_ratio" "$aa_ratio"
    fi
done
