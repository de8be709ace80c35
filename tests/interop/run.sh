#!/usr/bin/env bash
# permessage-deflate (RFC 7692) interop: wschat and wschat-client against two independent
# implementations, Python `websockets` and Node `ws`, each with compression on, in both roles.
#
#   python-client   websockets client -> wschat --echo: every fixture echoed exactly
#   node-client     ws client (perMessageDeflate: true) -> wschat --echo: the same
#   python-server   wschat-client -> websockets echo server: every text fixture echoed exactly
#   node-server     wschat-client -> ws echo server (perMessageDeflate: true): the same
#   chat            a websockets client and a ws client chat through wschat's `/`
#
# "Compression on" is asserted, not assumed: each peer library must report the extension in effect,
# and check_trace.py holds wschat's --trace (the server's, or wschat-client's) against what should
# have crossed the wire: the 101 accepts permessage-deflate, and every data message went each way
# with its exact length, compressed (RSV1) exactly when it reaches its sender's threshold, at least
# one of them each way. The fixtures are in messages.json.
#
# On a fresh Debian machine it installs what it needs: python3-venv, nodejs and npm when missing
# (apt), the pinned websockets (requirements.txt) into a venv under target/interop/venv, the pinned
# ws (package-lock.json) with npm ci; then builds the release binaries. Everything listens on
# 127.0.0.1 on ports the kernel picks; every process it starts is stopped on exit. A missing
# program is a failure, never a skip. Logs and traces: target/interop/<case>/.
#
# Environment: WSCHAT_INTEROP_TIMEOUT  seconds any one client may run (default 60).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
[[ "$TARGET" = /* ]] || TARGET="$ROOT/$TARGET"
OUT="$ROOT/target/interop"
VENV="$OUT/venv"
MESSAGES="$HERE/messages.json"
TIMEOUT="${WSCHAT_INTEROP_TIMEOUT:-60}"
# Where each side starts compressing. wschat: the --deflate-threshold we pass (wschat-client always
# uses the same default, deflate::DEFAULT_THRESHOLD). websockets compresses every message. ws
# compresses every message too: its `threshold` (1024) applies only where its own context takeover
# is off, and neither wschat nor wschat-client asks for that.
WSCHAT_THRESHOLD=256
WS_THRESHOLD=0
WEBSOCKETS_THRESHOLD=0

log() { echo "interop: $*"; }
die() { echo "interop: ERROR: $*" >&2; exit 1; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
fmt_ms() { printf '%d.%01ds' $(( $1 / 1000 )) $(( ($1 % 1000) / 100 )); }

# Debian's apt wants root; use sudo when not root and it is there.
as_root() { if [[ $EUID -eq 0 ]]; then "$@"; else sudo "$@"; fi; }
APT_UPDATED=""
apt_install() {
    log "installing $* (apt)"
    [[ -n "$APT_UPDATED" ]] || { as_root apt-get update; APT_UPDATED=1; }
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"
}

# ------------------------------------------------------------- setup ----

T0="$(now_ms)"
mkdir -p "$OUT"
for program in timeout mkfifo cmp sed sha256sum; do
    command -v "$program" >/dev/null || die "$program not found (coreutils, sed, diffutils)"
done
command -v cargo >/dev/null || die "cargo not found"
command -v python3 >/dev/null || apt_install python3 python3-venv
command -v node >/dev/null && command -v npm >/dev/null || apt_install nodejs npm

# The venv is rebuilt when the pins or the interpreter change.
venv_stamp="$( (cat "$HERE/requirements.txt"; python3 --version) | sha256sum | cut -d' ' -f1)"
if [[ -x "$VENV/bin/python" && "$(cat "$VENV/.stamp" 2>/dev/null)" == "$venv_stamp" ]]; then
    log "reusing $VENV"
else
    log "creating $VENV"
    rm -rf "$VENV"
    # Debian's python3 has no ensurepip until python3-venv is installed.
    python3 -m venv "$VENV" 2>/dev/null || { rm -rf "$VENV"; apt_install python3-venv; python3 -m venv "$VENV"; }
    "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$HERE/requirements.txt"
    echo "$venv_stamp" >"$VENV/.stamp"
fi
PY="$VENV/bin/python"
log "$("$PY" -c 'import sys, websockets; print(f"Python {sys.version.split()[0]}, websockets {websockets.__version__}")')"

log "npm ci"
(cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error)
log "Node $(node --version), ws $(node -p 'require("'"$HERE"'/node_modules/ws/package.json").version')"

log "cargo build --release"
(cd "$ROOT" && cargo build --release --bin wschat --bin wschat-client)
WSCHAT="$TARGET/release/wschat"
CLIENT="$TARGET/release/wschat-client"
log "setup took $(fmt_ms $(( $(now_ms) - T0 )))"

# --------------------------------------------------------- processes ----

# Each process a case starts has a file here while it runs, so that the cleanup stops it whatever
# happened (one file per process: the chat's two clients come and go at the same time).
PIDS="$OUT/pids"
rm -rf "$PIDS"
mkdir -p "$PIDS"
CASE_PID=""

track() { : >"$PIDS/$1"; }
untrack() { rm -f "$PIDS/$1"; }
# stop_pid PID: TERM, then KILL after 3 s.
stop_pid() {
    local pid="$1" i
    untrack "$pid"
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 30); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}
stop_all() {
    local file
    for file in "$PIDS"/*; do
        if [[ -e "$file" ]]; then stop_pid "$(basename "$file")"; fi
    done
}
cleanup() {
    [[ -z "$CASE_PID" ]] || stop_pid "$CASE_PID"
    stop_all
    rm -rf "$PIDS"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The cases below run in a subshell with -e: $CASE is their directory.

# start_bg NAME CMD...: CMD in the background, output to $CASE/NAME.log; sets BG_PID.
start_bg() {
    local name="$1"
    shift
    "$@" >"$CASE/$name.log" 2>&1 </dev/null &
    BG_PID=$!
    track "$BG_PID"
}

# await_line PID LOG REGEX WHAT: prints REGEX's group from the first line of LOG that matches it,
# waiting at most 10 s, and failing early if PID exits.
await_line() {
    local pid="$1" file="$2" regex="$3" what="$4" i value
    for i in $(seq 100); do
        value="$(sed -nE "s|$regex|\\1|p" "$file" | head -n 1)"
        [[ -n "$value" ]] && { echo "$value"; return 0; }
        kill -0 "$pid" 2>/dev/null || { tail -n 20 "$file" >&2; die "$what exited"; }
        sleep 0.1
    done
    die "$what: nothing matching /$regex/ in $file after 10 s"
}

# start_wschat ARGS...: wschat --trace on a free port with ARGS; sets ADDR and WSCHAT_PID.
start_wschat() {
    start_bg wschat "$WSCHAT" --listen 127.0.0.1:0 --trace --deflate-threshold "$WSCHAT_THRESHOLD" "$@"
    WSCHAT_PID=$BG_PID
    ADDR="127.0.0.1:$(await_line "$WSCHAT_PID" "$CASE/wschat.log" '.*listening on http://127\.0\.0\.1:([0-9]+).*' wschat)"
}

# client NAME CMD...: runs CMD (bounded), output to $CASE/NAME.log; fails with its status.
client() {
    local name="$1" pid status=0
    shift
    timeout "$TIMEOUT" "$@" >"$CASE/$name.log" 2>&1 </dev/null &
    pid=$!
    track "$pid"
    wait "$pid" || status=$?
    untrack "$pid"
    cat "$CASE/$name.log"
    [[ $status -ne 124 ]] || die "$name: still running after ${TIMEOUT}s"
    return "$status"
}

# our_client URL: wschat-client --trace sends each text fixture as a line, and its input ends once
# as many lines came back (a server may drop echoes still owed when the Close arrives); its output
# must be its input. Trace: $CASE/trace.log.
our_client() {
    local url="$1" n i fd pid status=0
    "$PY" -c 'import json, sys
for m in json.load(open(sys.argv[1]))["echo"]:
    if "unit" in m:
        print(m["unit"] * m["repeat"])' "$MESSAGES" >"$CASE/lines"
    n="$(wc -l <"$CASE/lines")"
    mkfifo "$CASE/stdin"
    timeout "$TIMEOUT" "$CLIENT" --trace "$url" <"$CASE/stdin" >"$CASE/stdout" 2>"$CASE/trace.log" &
    pid=$!
    track "$pid"
    exec {fd}>"$CASE/stdin"
    # A client that died early is reported below, not as a broken pipe here.
    cat "$CASE/lines" >&"$fd" || true
    for i in $(seq $(( TIMEOUT * 10 ))); do
        [[ "$(wc -l <"$CASE/stdout")" -lt "$n" ]] || break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    exec {fd}>&-
    wait "$pid" || status=$?
    untrack "$pid"
    [[ $status -eq 0 ]] || { tail -n 5 "$CASE/trace.log" >&2; die "wschat-client exited with $status"; }
    cmp "$CASE/lines" "$CASE/stdout" || die "wschat-client's output is not its input (lines, stdout)"
    log "wschat-client: all $n lines echoed exactly"
}

check_trace() { "$PY" "$HERE/check_trace.py" "$@"; }

# ------------------------------------------------------------- cases ----

case_python_client() {
    start_wschat --echo
    client python "$PY" "$HERE/py_peer.py" echo-client "ws://$ADDR/echo" "$MESSAGES" "$CASE/report.json"
    stop_pid "$WSCHAT_PID"
    check_trace echo "$CASE/wschat.log" --messages "$MESSAGES" \
        --ours "$WSCHAT_THRESHOLD" --peer "$WEBSOCKETS_THRESHOLD"
}

case_node_client() {
    start_wschat --echo
    client node node "$HERE/node_peer.mjs" echo-client "ws://$ADDR/echo" "$MESSAGES" "$CASE/report.json"
    stop_pid "$WSCHAT_PID"
    check_trace echo "$CASE/wschat.log" --messages "$MESSAGES" \
        --ours "$WSCHAT_THRESHOLD" --peer "$WS_THRESHOLD"
}

case_python_server() {
    start_bg server "$PY" "$HERE/py_peer.py" echo-server
    local port
    port="$(await_line "$BG_PID" "$CASE/server.log" '.*listening on ([0-9]+).*' 'websockets server')"
    our_client "ws://127.0.0.1:$port/"
    cat "$CASE/server.log"
    grep -q '^py_peer: connection, permessage-deflate on' "$CASE/server.log" ||
        die "websockets did not put permessage-deflate in effect"
    check_trace echo "$CASE/trace.log" --messages "$MESSAGES" --text-only \
        --ours "$WSCHAT_THRESHOLD" --peer "$WEBSOCKETS_THRESHOLD"
}

case_node_server() {
    start_bg server node "$HERE/node_peer.mjs" echo-server
    local port
    port="$(await_line "$BG_PID" "$CASE/server.log" '.*listening on ([0-9]+).*' 'ws server')"
    our_client "ws://127.0.0.1:$port/"
    cat "$CASE/server.log"
    grep -q '^node_peer: connection, extensions in effect: permessage-deflate ' "$CASE/server.log" ||
        die "ws did not put permessage-deflate in effect"
    check_trace echo "$CASE/trace.log" --messages "$MESSAGES" --text-only \
        --ours "$WSCHAT_THRESHOLD" --peer "$WS_THRESHOLD"
}

case_chat() {
    start_wschat
    # Both at once: each waits until the other is online before it speaks.
    client python "$PY" "$HERE/py_peer.py" chat-client "ws://$ADDR/" "$MESSAGES" "$CASE/py.json" &
    local py=$!
    client node node "$HERE/node_peer.mjs" chat-client "ws://$ADDR/" "$MESSAGES" "$CASE/node.json" &
    local nd=$! status=0
    wait "$py" || status=$?
    wait "$nd" || status=$?
    [[ $status -eq 0 ]] || die "a chat client failed"
    stop_pid "$WSCHAT_PID"
    check_trace chat "$CASE/wschat.log" --ours "$WSCHAT_THRESHOLD" \
        --client py "$CASE/py.json" "$WEBSOCKETS_THRESHOLD" --client node "$CASE/node.json" "$WS_THRESHOLD"
}

# ------------------------------------------------------------ runner ----

passed=0
failed=0
failures=()
run_case() {
    local name="$1" fn="$2" t0 status=0
    CASE="$OUT/$name"
    rm -rf "$CASE"
    mkdir -p "$CASE"
    echo
    log "=== $name"
    t0="$(now_ms)"
    # The case stops what it started itself: its children are reaped at once (an orphan's zombie
    # would wait for init, and look alive to kill -0).
    ( set -euo pipefail; trap stop_all EXIT; "$fn" ) &
    CASE_PID=$!
    wait "$CASE_PID" || status=$?
    CASE_PID=""
    stop_all
    if [[ $status -eq 0 ]]; then
        passed=$(( passed + 1 ))
        log "ok: $name ($(fmt_ms $(( $(now_ms) - t0 ))))"
    else
        failed=$(( failed + 1 ))
        failures+=("$name")
        log "FAILED: $name ($(fmt_ms $(( $(now_ms) - t0 )))); logs in $CASE"
    fi
}

run_case python-client case_python_client
run_case node-client case_node_client
run_case python-server case_python_server
run_case node-server case_node_server
run_case chat case_chat

echo
[[ $failed -eq 0 ]] || log "failed: ${failures[*]}"
log "total $(fmt_ms $(( $(now_ms) - T0 )))"
echo "interop: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
