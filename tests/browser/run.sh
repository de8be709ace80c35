#!/usr/bin/env bash
# Browser test of the chat page (chat.test.mjs) in Debian's headless Chromium.
#
# On a fresh Debian machine: installs chromium (apt) when /usr/bin/chromium is missing, installs
# playwright-core from package-lock.json (npm ci; Playwright never downloads a browser here),
# builds the server, starts it on a free loopback port, runs the test and stops the server.
# Output goes to <repo>/target/browser: chat.png (the screenshot), server.log (with the server's
# wire trace, which the test reads), failure-*.png.
#
# Environment: WSCHAT_BROWSER_TIMEOUT  seconds before the test is killed (default 200).
#              WSCHAT_BROWSER_TLS=1    the same test over https:// and wss://, with a certificate
#                                      made for the run (examples/tls_certs); output in
#                                      <repo>/target/browser-tls.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
[[ "$TARGET" = /* ]] || TARGET="$ROOT/$TARGET"
OUT="$ROOT/target/browser"
[[ "${WSCHAT_BROWSER_TLS:-0}" == 1 ]] && OUT="$ROOT/target/browser-tls"
TIMEOUT="${WSCHAT_BROWSER_TIMEOUT:-200}"

log() { echo "browser: $*"; }
die() { echo "browser: ERROR: $*" >&2; exit 1; }

# Debian's apt wants root; use sudo when not root and it is there.
as_root() { if [[ $EUID -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

if [[ ! -x /usr/bin/chromium ]]; then
    log "installing Debian's chromium"
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
fi
if ! command -v npm >/dev/null; then
    log "installing nodejs and npm"
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y nodejs npm
fi

log "npm ci"
(cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error)

log "cargo build --release"
(cd "$ROOT" && cargo build --release --bin wschat)
BIN="$TARGET/release/wschat"

mkdir -p "$OUT"
TLS_ENV=()
if [[ "${WSCHAT_BROWSER_TLS:-0}" == 1 ]]; then
    log "cargo build --release --example tls_certs (a certificate for this run)"
    (cd "$ROOT" && cargo build --release --example tls_certs)
    rm -rf "$OUT/pki"
    "$TARGET/release/examples/tls_certs" "$OUT/pki" server
    TLS_ENV=(WSCHAT_TLS_CERT="$OUT/pki/server.pem" WSCHAT_TLS_KEY="$OUT/pki/server-key.pem")
fi
rm -f "$OUT"/failure-*.png
PIDFILE="$OUT/server.pid"
SERVER_LOG="$OUT/server.log"
: >"$SERVER_LOG"

# A free port: the kernel picks one, and it is handed to the server right after.
PORT="$(node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })')"
ADDR="127.0.0.1:$PORT"

# Stops whichever server is running: the test kills the first one and writes the pid of the one it
# restarts to $PIDFILE.
stop_server() {
    [[ -f "$PIDFILE" ]] || return 0
    local pid i
    pid="$(cat "$PIDFILE")"
    rm -f "$PIDFILE"
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 30); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}
trap stop_server EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A fresh message store for this run, kept across the test's restarts of the server. --trace: the
# test reads the wire trace from the log (permessage-deflate both ways). A welcome shows the newest
# HISTORY_SIZE messages of a room (100 by default): a few make "Load older messages" quick to test.
# Every page comes from 127.0.0.1: the per-address limits are lifted, since the test is not about
# them (the per-session rate limit it tests stays). The test restarts the server with the same flags.
DB="$OUT/chat.db"
HISTORY_SIZE=5
FLAGS=(--trace --history-size "$HISTORY_SIZE"
    --max-connections-per-ip 1000000 --ip-rate-limit 1000000 --ip-rate-burst 1000000)
rm -f "$DB" "$DB-wal" "$DB-shm"
TLS_ARGS=()
[[ ${#TLS_ENV[@]} -gt 0 ]] && TLS_ARGS=(--tls-cert "$OUT/pki/server.pem" --tls-key "$OUT/pki/server-key.pem")
"$BIN" --listen "$ADDR" --db "$DB" "${FLAGS[@]}" "${TLS_ARGS[@]}" >>"$SERVER_LOG" 2>&1 </dev/null &
echo $! >"$PIDFILE"
disown  # The test kills it on purpose: no "Killed" job notice.

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }
for _ in $(seq 100); do
    port_open && break
    kill -0 "$(cat "$PIDFILE")" 2>/dev/null || { tail -n 20 "$SERVER_LOG" >&2; die "server exited at start"; }
    sleep 0.1
done
port_open || die "server not listening on $ADDR after 10 s"
log "server on $ADDR (log: $SERVER_LOG)"

status=0
(cd "$HERE" && env "${TLS_ENV[@]}" WSCHAT_BIN="$BIN" WSCHAT_ADDR="$ADDR" WSCHAT_PIDFILE="$PIDFILE" \
    WSCHAT_LOG="$SERVER_LOG" WSCHAT_OUT="$OUT" WSCHAT_DB="$DB" WSCHAT_HISTORY_SIZE="$HISTORY_SIZE" \
    WSCHAT_FLAGS="${FLAGS[*]}" \
    timeout "$TIMEOUT" node --test --test-reporter=spec chat.test.mjs) || status=$?
if [[ $status -ne 0 ]]; then
    [[ $status -eq 124 ]] && log "timed out after ${TIMEOUT}s"
    log "last lines of $SERVER_LOG:"
    tail -n 20 "$SERVER_LOG" >&2 || true
    exit "$status"
fi
log "screenshot: $OUT/chat.png"
