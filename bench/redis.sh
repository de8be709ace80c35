#!/usr/bin/env bash
# Chat broadcast through Redis: the same `wschat-bench broadcast` against (1) one standalone node
# (SQLite), (2) a node on Redis with sender and receivers on it, (3) two nodes on one Redis, the
# receivers on one and the sender on the other (cross-node), (4) a node that sends Redis one request
# at a time (`--redis-no-pipeline`). Redis runs with the settings the
# README's guarantees assume (appendonly yes, appendfsync always). Everything on loopback, on this
# machine; every process started here is stopped by its pid.
#
# Usage: bench/redis.sh [RECEIVERS] [RATE] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
receivers=${1:-100}
rate=${2:-1000}
seconds=${3:-10}
bin=target/release
dir=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on $1" >&2
    return 1
}
generous=(--rate-limit 1000000 --rate-burst 1000000 --ip-rate-limit 1000000 --ip-rate-burst 1000000
    --max-connections-per-ip 1000000 --flood-limit 1000000)

redis_port=$(free_port)
redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$dir" --save '' --appendonly yes \
    --appendfsync always --daemonize no --logfile "$dir/redis.log" &
pids+=($!)
wait_port "$redis_port"

node() { # port, then extra flags
    local port=$1
    shift
    "$bin/wschat" --listen "127.0.0.1:$port" "${generous[@]}" "$@" 2>"$dir/wschat-$port.log" &
    pids+=($!)
    wait_port "$port"
}

run() { # label, then wschat-bench arguments
    local label=$1
    shift
    echo "== $label"
    "$bin/wschat-bench" "$@" broadcast -c "$receivers" -r "$rate" -t "$seconds" --warmup 1 \
        ${sender:+--sender-addr "$sender"} | tr ' ' '\n' \
        | grep -E '^(deliveries_per_sec|all_in_order|p50_us|p99_us|max_us|sent|receivers_short|receivers_out_of_order|server_cpu)' \
        | tr '\n' ' '
    echo
}

a=$(free_port)
node "$a" --db "$dir/standalone.db"
sender="" run "standalone (SQLite, synchronous=FULL)" --addr "127.0.0.1:$a" --server-pid "${pids[-1]}"

b=$(free_port)
c=$(free_port)
node "$b" --redis "redis://127.0.0.1:$redis_port" --node b
pid_b=${pids[-1]}
node "$c" --redis "redis://127.0.0.1:$redis_port" --node c
sender="" run "redis, one node" --addr "127.0.0.1:$b" --server-pid "$pid_b"
sender="127.0.0.1:$c" run "redis, cross-node (sender on the other node)" --addr "127.0.0.1:$b" \
    --server-pid "$pid_b"

# The same node, one request to Redis at a time (no pipelining): what pipelining buys.
d=$(free_port)
node "$d" --redis "redis://127.0.0.1:$redis_port" --node d --redis-no-pipeline
sender="" run "redis, one node, no pipelining" --addr "127.0.0.1:$d" --server-pid "${pids[-1]}"
