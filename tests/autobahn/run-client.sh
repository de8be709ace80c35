#!/usr/bin/env bash
# Autobahn|Testsuite conformance run for wschat as a client.
#
# wstest runs in "fuzzingserver" mode (it is the WebSocket server) and
# examples/autobahn_client.rs is the client under test: it asks for the case
# count, runs every case echoing each message (offering permessage-deflate, so
# the compression cases 12.* and 13.* run too; they take most of the time),
# then asks for the reports. run.sh is the server side; both share common.sh
# (the pinned venv, the spec and the verdict).
# Inputs beside this script:
#   fuzzingserver.json  spec template (all cases); check.py judges the report
# Generated under <repo>/target/autobahn:
#   venv/ (shared with run.sh), fuzzingserver.json (spec actually used),
#   expected-client-cases.json, client-reports/ (index.json, index.html, ...),
#   wstest-server.log, client.log
#
# Environment (besides the shared AUTOBAHN_PORT, here 9011 by default,
# AUTOBAHN_CASES, AUTOBAHN_TIMEOUT, AUTOBAHN_VERBOSE, AUTOBAHN_PYTHON27
# described in common.sh):
#   AUTOBAHN_CLIENT_CMD  shell command that runs the client under test instead
#                        of the example (no cargo build then); it gets the
#                        server's URL (ws://127.0.0.1:$AUTOBAHN_PORT) as its
#                        argument and must use the agent name "wschat".
#
# Exit status: 0 only if every selected case passed (see check.py).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_PREFIX=autobahn-client
# Not run.sh's 9001, so that both sides can run at once.
export AUTOBAHN_PORT="${AUTOBAHN_PORT:-9011}"
# shellcheck source=common.sh
source "$HERE/common.sh"

REPORTS="$WORK/client-reports"
SPEC="$WORK/fuzzingserver.json"
EXPECTED="$WORK/expected-client-cases.json"
AGENT=wschat

install_venv
write_spec "$HERE/fuzzingserver.json" "$SPEC"
write_expected "$SPEC" "$EXPECTED"
URL="$(json_get "$SPEC" 'd["url"]')"

# -------------------------------------------------------------- client ----

if [[ -n "${AUTOBAHN_CLIENT_CMD:-}" ]]; then
    CLIENT_CMD="$AUTOBAHN_CLIENT_CMD $(printf '%q' "$URL")"
else
    log "building the client (cargo build --release --example autobahn_client)"
    (cd "$ROOT" && cargo build --release --example autobahn_client)
    target_dir="${CARGO_TARGET_DIR:-target}"
    [[ "$target_dir" = /* ]] || target_dir="$ROOT/$target_dir"
    CLIENT_CMD="$(printf '%q' "$target_dir/release/examples/autobahn_client") $(printf '%q' "$URL")"
fi

# ------------------------------------------------------- wstest server ----

if port_open; then
    die "something is already listening on 127.0.0.1:$PORT; stop it or set AUTOBAHN_PORT"
fi

WSTEST_PID=""
CLIENT_PID=""
cleanup() {
    if [[ -n "$CLIENT_PID" ]]; then
        kill -TERM "$CLIENT_PID" 2>/dev/null || true
        wait "$CLIENT_PID" 2>/dev/null || true
    fi
    stop_wstest
}
stop_wstest() {
    local pid="$WSTEST_PID"
    WSTEST_PID=""
    stop_bg "$pid"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

rm -rf "$REPORTS"
# --webport 0: no embedded web server (its default port is wschat's too).
start_bg "$WORK/wstest-server.log" "cd $(printf '%q' "$WORK") && PYTHONWARNINGS=ignore exec \
$(printf '%q' "$VENV/bin/wstest") -m fuzzingserver -s $(printf '%q' "$SPEC") --webport 0"
WSTEST_PID="$BG_PID"
wait_for_port "$WSTEST_PID" "$WORK/wstest-server.log" "wstest fuzzingserver"
log "wstest fuzzingserver is up (pid $WSTEST_PID) at $URL; running: $CLIENT_CMD"

# -------------------------------------------------------------- client ----

t0="$(now_ms)"
client_rc=0
# In the background so that INT/TERM traps fire at once; `timeout` bounds the run.
(cd "$ROOT" && exec timeout "$TIMEOUT" bash -c "$CLIENT_CMD") >"$WORK/client.log" 2>&1 </dev/null &
CLIENT_PID=$!
if [[ "${AUTOBAHN_VERBOSE:-0}" == 1 ]]; then
    tail -n +1 -f --pid="$CLIENT_PID" "$WORK/client.log" &
fi
wait "$CLIENT_PID" || client_rc=$?
CLIENT_PID=""
log "client wall time: $(fmt_ms $(( $(now_ms) - t0 ))) (log: $WORK/client.log)"
if [[ $client_rc -ne 0 ]]; then
    tail -n 20 "$WORK/client.log" >&2 || true
    [[ $client_rc -eq 124 ]] && log "client timed out after ${TIMEOUT}s"
    log "client exited with status $client_rc"
fi
if ! kill -0 "$WSTEST_PID" 2>/dev/null; then
    log "wstest died during the run; last lines of $WORK/wstest-server.log:"
    tail -n 20 "$WORK/wstest-server.log" >&2 || true
fi
stop_wstest

# --------------------------------------------------------------- check ----

check_rc=0
run_check "$REPORTS/index.json" "$AGENT" "$EXPECTED" || check_rc=$?

if [[ $check_rc -ne 0 || $client_rc -ne 0 ]]; then
    exit 1
fi
