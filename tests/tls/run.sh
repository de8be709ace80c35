#!/usr/bin/env bash
# wschat over TLS from Python: the `websockets` library over wss:// and the ssl module over
# https://, trusting a CA made for this run (check.py holds the checks: echo, the page, plaintext to
# the TLS port, the handshake timeout, SIGHUP reload, the metrics' transport label and socket
# bytes, bad files).
#
# On a fresh Debian machine it installs what it needs: python3-venv when missing (apt), the pinned
# websockets (requirements.txt) into a venv under target/tls/venv; builds the release server and
# examples/tls_certs, which writes the CA and certificates to target/tls/pki. The server listens on
# 127.0.0.1 on a port the kernel picks and is stopped on exit. Log: target/tls/server.log.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
[[ "$TARGET" = /* ]] || TARGET="$ROOT/$TARGET"
OUT="$ROOT/target/tls"
VENV="$OUT/venv"
PKI="$OUT/pki"

NAME=tls
# shellcheck source=../lib.sh
source "$ROOT/tests/lib.sh"

mkdir -p "$OUT"
python_venv "$VENV" "$HERE/requirements.txt"

log "cargo build --release (wschat, examples/tls_certs)"
(cd "$ROOT" && cargo build --release --bin wschat --example tls_certs)
BIN="$TARGET/release/wschat"

rm -rf "$PKI"
"$TARGET/release/examples/tls_certs" "$PKI" server renewed stray
LIVE_CERT="$OUT/live-cert.pem"
LIVE_KEY="$OUT/live-key.pem"
cp "$PKI/server.pem" "$LIVE_CERT"
cp "$PKI/server-key.pem" "$LIVE_KEY"

PORT="$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
ADDR="127.0.0.1:$PORT"
SERVER_LOG="$OUT/server.log"
RUST_LOG=info,wschat::conn=debug "$BIN" --listen "$ADDR" --echo --db :memory: --handshake-timeout 2 \
    --tls-cert "$LIVE_CERT" --tls-key "$LIVE_KEY" >"$SERVER_LOG" 2>&1 </dev/null &
SERVER_PID=$!
trap 'kill $SERVER_PID 2>/dev/null || true; wait $SERVER_PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    grep -q "listening on https://" "$SERVER_LOG" && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$SERVER_LOG" >&2; die "server exited at start"; }
    sleep 0.1
done
grep -q "listening on https://" "$SERVER_LOG" || die "server not listening after 10 s"
log "server on https://$ADDR (log: $SERVER_LOG)"

timeout 120 "$VENV/bin/python" "$HERE/check.py" "$ADDR" "$PKI" "$LIVE_CERT" "$LIVE_KEY" \
    "$SERVER_LOG" "$SERVER_PID" "$BIN"
