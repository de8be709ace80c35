#!/usr/bin/env bash
# The Redis layer against a real Redis: starts a throw-away redis-server on a free loopback port
# (its own temporary directory, no persistence), runs the ignored tests of tests/redis_link.rs
# against it, and stops it by its pid whatever happens; then the multi-process scenarios of
# tests/redis_cluster.rs, which start redis-servers of their own.
#
# Installs Debian's redis-server if it is missing (apt-get; needs root, as on the CI machine).
# A redis-server still missing after that is a failure, never a skip.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v redis-server >/dev/null 2>&1; then
    echo "redis: installing Debian's redis-server"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # The package's maintainer scripts try to start a system service; there is none to start here
    # (no init in a container), and we want none: policy-rc.d answers 101, "action forbidden".
    policy=/usr/sbin/policy-rc.d
    made_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod +x "$policy"
        made_policy=1
    fi
    apt-get install -y -qq redis-server >/dev/null
    [ "$made_policy" = 1 ] && rm -f "$policy"
fi
if ! command -v redis-server >/dev/null 2>&1; then
    echo "redis: redis-server is not installed and could not be installed" >&2
    exit 1
fi

dir=$(mktemp -d)
pid=""
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        # A clean shutdown takes milliseconds; do not leave it behind.
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -rf "$dir"
}
trap cleanup EXIT

# A free port: bind port 0, read what the kernel chose, release it. Another process could take
# it before redis-server binds; then redis-server fails to start and we retry with a new one.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

for attempt in 1 2 3; do
    port=$(free_port)
    redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --save '' --appendonly no \
        --daemonize no --logfile "$dir/redis.log" --databases 4 &
    pid=$!
    # Ready when it answers PING (redis-cli comes with the package).
    for _ in $(seq 50); do
        if redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; then break; fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; then break; fi
    echo "redis: attempt $attempt on port $port failed:" >&2
    tail -5 "$dir/redis.log" >&2 || true
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=""
done
if [ -z "$pid" ]; then
    echo "redis: redis-server did not start" >&2
    exit 1
fi
echo "redis: $(redis-server --version | cut -d' ' -f3) on 127.0.0.1:$port (pid $pid)"

WSCHAT_REDIS_URL="redis://127.0.0.1:$port" \
    cargo test --test redis_link -- --ignored --test-threads=1
# The HTTP transports (Server-Sent Events, long-polling) and WebSocket, each on its own node.
WSCHAT_REDIS_URL="redis://127.0.0.1:$port" \
    cargo test --test fallback -- --ignored

# Several wschat processes, one chat: each test starts its own redis-server (on a free port, in a
# temporary directory, killed by its pid) and its own nodes, so they need only the binary here.
cargo test --test redis_cluster -- --ignored
