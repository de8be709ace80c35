#!/usr/bin/env bash
# The chat over WebSocket, Server-Sent Events and long-polling, side by side (wschat-bench
# transports): send → receipt latency, the server's CPU per message, bytes on the wire per message
# and per idle minute. Prints a Markdown table (progress on stderr).
#
#   bench/transports.sh [wschat-bench transports flags...]
#   bench/transports.sh -n 100 --interval-ms 100 --rounds 5 --idle 60     # the published figures
#
# Builds the release binaries, starts wschat on a loopback port the kernel picks (cpu0) with the
# load on cpu1 when the machine has two CPUs or more, and stops the server on exit. Every client is
# 127.0.0.1 and one sender says a line every interval: the per-session and per-address limits are
# lifted. The store is `:memory:` (the benchmarks' usual), so a message's cost includes its commit
# to SQLite but no disk.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --bin wschat --bin wschat-bench >&2

# Pinned apart where there are two CPUs, as in the other benchmarks.
pin_server=() pin_load=()
if [[ "$(nproc)" -ge 2 ]] && command -v taskset >/dev/null; then
    pin_server=(taskset -c 0) pin_load=(taskset -c 1)
fi

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
mkdir -p target/transports
"${pin_server[@]}" target/release/wschat --listen "127.0.0.1:$port" --db :memory: \
    --rate-limit 1000000 --rate-burst 1000000 \
    --ip-rate-limit 1000000 --ip-rate-burst 1000000 --max-connections-per-ip 1000000 \
    >target/transports/server.log 2>&1 </dev/null &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    kill -0 "$server" 2>/dev/null || { cat target/transports/server.log >&2; exit 1; }
    sleep 0.1
done

"${pin_load[@]}" target/release/wschat-bench --addr "127.0.0.1:$port" --server-pid "$server" \
    transports "$@"
