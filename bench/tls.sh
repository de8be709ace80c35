#!/usr/bin/env bash
# TLS against plain TCP, same server, same load: what `--tls-cert`/`--tls-key` cost.
#
#   echo        100 connections x 1 message of 16 bytes in flight: server CPU per echoed message
#               (target: TLS within 1.5x of plain)
#   hold        10,000 idle connections: server RSS, whole process and per connection above the
#               fresh server's own (target: under 16 KiB per TLS connection)
#   handshake   50 connections at a time, each opened (TCP, TLS, the WebSocket upgrade) and closed:
#               connections per second and server CPU per connection (TLS adds a full handshake:
#               X25519 and an ECDSA P-256 signature)
#
# Each run gets a fresh server (`wschat --echo --db :memory:`, RUST_LOG=warn so that per-connection
# log lines cost nothing) pinned to cpu0, the load generator to cpu1, on 127.0.0.1; plain and TLS
# alternate in order every round. The certificate is made for the run (examples/tls_certs, ECDSA
# P-256). Prints one key=value line per run (with variant=plain|tls), then the medians and ratios.
#
# Environment: ROUNDS=3, SECONDS_PER_RUN=10, IDLE_CONNECTIONS=10000, PORT=9450, SKIP_BUILD=1.
# Output: target/bench/tls-<timestamp>/{raw.txt,summary.txt,server-*.log}
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
[[ "$TARGET" = /* ]] || TARGET="$ROOT/$TARGET"
ROUNDS="${ROUNDS:-3}"
SECONDS_PER_RUN="${SECONDS_PER_RUN:-10}"
IDLE_CONNECTIONS="${IDLE_CONNECTIONS:-10000}"
PORT="${PORT:-9450}"
OUT="$ROOT/target/bench/tls-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    (cd "$ROOT" && cargo build --release --bin wschat --bin wschat-bench --example tls_certs)
fi
SERVER="$TARGET/release/wschat"
BENCH="$TARGET/release/wschat-bench"
"$TARGET/release/examples/tls_certs" "$OUT/pki" server
# 10,000 connections need as many descriptors on each side.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
(( $(ulimit -n) > IDLE_CONNECTIONS + 100 )) || echo "tls.sh: ulimit -n is $(ulimit -n): hold may fail" >&2

SERVER_PID=""
stop_server() {
    [[ -n "$SERVER_PID" ]] || return 0
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}
trap stop_server EXIT

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# run VARIANT SCENARIO: one fresh server, one bench run, one line in raw.txt.
run() {
    local variant="$1" scenario="$2" tls_server=() tls_bench=() i
    if [[ "$variant" == tls ]]; then
        tls_server=(--tls-cert "$OUT/pki/server.pem" --tls-key "$OUT/pki/server-key.pem")
        tls_bench=(--tls --ca "$OUT/pki/ca.pem")
    fi
    # Every client is 127.0.0.1: the per-address limit (64 by default) is lifted with the total.
    RUST_LOG=warn taskset -c 0 "$SERVER" --listen "127.0.0.1:$PORT" --echo --db :memory: \
        --max-connections $((IDLE_CONNECTIONS + 100)) --max-connections-per-ip $((IDLE_CONNECTIONS + 100)) \
        "${tls_server[@]}" \
        >>"$OUT/server-$variant.log" 2>&1 </dev/null &
    SERVER_PID=$!
    for i in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
        sleep 0.05
    done
    local fresh
    fresh="$(rss_kib "$SERVER_PID")"
    local args=()
    case "$scenario" in
        echo) args=(echo -c 100 -k 1 -s 16 -t "$SECONDS_PER_RUN") ;;
        hold) args=(hold -c "$IDLE_CONNECTIONS" -t 5) ;;
        handshake) args=(handshake -c 50 -t "$SECONDS_PER_RUN") ;;
    esac
    local line
    line="$(taskset -c 1 "$BENCH" --addr "127.0.0.1:$PORT" --server-pid "$SERVER_PID" "${tls_bench[@]}" \
        "${args[@]}" 2>>"$OUT/bench.log")"
    local rss
    rss="$(echo "$line" | tr ' ' '\n' | sed -n 's/^server_rss_kib=//p')"
    stop_server
    line="variant=$variant scenario=$scenario server_fresh_rss_kib=$fresh $line"
    if [[ "$scenario" == hold && -n "$rss" ]]; then
        line+=" server_rss_bytes_per_conn_above_fresh=$(( (rss - fresh) * 1024 / IDLE_CONNECTIONS ))"
    fi
    echo "$line" | tee -a "$OUT/raw.txt"
}

for round in $(seq "$ROUNDS"); do
    order=(plain tls)
    (( round % 2 == 0 )) && order=(tls plain)
    for scenario in echo hold handshake; do
        for variant in "${order[@]}"; do
            run "$variant" "$scenario"
        done
    done
done

python3 - "$OUT/raw.txt" <<'PY' | tee "$OUT/summary.txt"
import statistics, sys
runs = [dict(kv.split("=", 1) for kv in line.split()) for line in open(sys.argv[1]) if line.strip()]
def median(variant, scenario, key):
    values = [float(r[key]) for r in runs if r["variant"] == variant and r["scenario"] == scenario and key in r]
    return statistics.median(values) if values else float("nan")
rows = [
    ("echo", "server_cpu_us_per_msg", "server CPU per echoed message (us)"),
    ("echo", "server_user_us_per_msg", "  of which user space (us)"),
    ("echo", "msgs_per_sec", "echoed messages per second"),
    ("hold", "server_rss_kib", "RSS with the idle connections (KiB)"),
    ("hold", "server_rss_bytes_per_conn", "RSS per idle connection, whole process (bytes)"),
    ("hold", "server_rss_bytes_per_conn_above_fresh", "RSS per idle connection above a fresh server (bytes)"),
    ("handshake", "handshakes_per_sec", "connections opened and closed per second"),
    ("handshake", "server_cpu_us_per_handshake", "server CPU per connection (us)"),
]
print(f"{'median of %d rounds' % (len(runs) // 6):58} {'plain':>10} {'tls':>10} {'tls/plain':>10}")
for scenario, key, label in rows:
    plain, tls = median("plain", scenario, key), median("tls", scenario, key)
    print(f"{label:58} {plain:10.1f} {tls:10.1f} {tls / plain if plain else float('nan'):10.2f}")
PY
echo "tls.sh: $OUT"
