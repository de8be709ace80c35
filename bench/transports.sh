#!/usr/bin/env bash
# The chat over WebSocket, Server-Sent Events and long-polling, side by side (wschat-bench
# transports): send → receipt latency, the server's CPU per message, bytes on the wire per message
# and per idle minute. Prints a Markdown table (progress on stderr).
#
#   bench/transports.sh [wschat-bench transports flags...]
#   bench/transports.sh -n 100 --interval-ms 100 --rounds 5 --idle 60     # the published figures
#
# Builds the release binaries, starts wschat on cpu0 (bench/lib.sh's launch) with the load on
# cpu1, and stops the server on exit. Every client is 127.0.0.1 and one sender says a line every
# interval: the per-session rate limit and the per-address limits are lifted. The store is
# `:memory:` (the benchmarks' usual), so a message's cost includes its SQLite commit but no disk.
#
# Environment: PORT (default 9430, beside the other bench scripts' 9400-9420) the server's port.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
here=$root/bench
# shellcheck source=bench/lib.sh
source "$here/lib.sh"
cd "$root"

port=${PORT:-9430}
out=$root/target/transports
wschat_bin=$root/target/release/wschat

cargo build --release --bin wschat --bin wschat-bench >&2
mkdir -p "$out"
: >"$out/server.log"
warn_if_fuzzing
echo "${0##*/}: load average $(load_average)" >&2

trap kill_server EXIT
read -ra per_address <<<"$(per_address_flags "$wschat_bin")"
launch wschat "$port" "$out/server.log" "$wschat_bin" --listen "127.0.0.1:$port" --db :memory: \
    --rate-limit 1000000 --rate-burst 1000000 "${per_address[@]}"

taskset -c 1 "$root/target/release/wschat-bench" --addr "127.0.0.1:$port" --server-pid "$server_pid" \
    transports "$@"
terminate wschat "$port"
