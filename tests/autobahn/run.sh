#!/usr/bin/env bash
# Autobahn|Testsuite conformance run for wschat as a server.
#
# wstest runs in "fuzzingclient" mode (it is the WebSocket client, wschat is
# the server under test, echoing on /echo). run-client.sh is the other side.
# Inputs beside this script:
#   common.sh                  the pinned venv, spec and check logic both share
#   requirements.txt           wstest and its whole dependency closure, pinned
#   bootstrap-requirements.txt virtualenv==20.15.1 and its deps, pinned
#   build-constraints.txt      pins for sdist build environments (Cython, ...)
#   fuzzingclient.json         spec template; check.py judges the report
# Everything generated lives under
# <repo>/target/autobahn:
#   bootstrap/         virtualenv==20.15.1 (pip --target), only to make venv/
#   venv/              Python 2.7 venv with wstest (cached; rebuilt only when
#                      requirements change or wstest stops working)
#   fuzzingclient.json spec actually used (from tests/autobahn/fuzzingclient.json)
#   expected-cases.json case ids the spec selects, from the testsuite's registry
#   reports/           wstest output: index.json (+ index.html, per-case files)
#   wstest.log, server.log
#
# Environment (besides the shared AUTOBAHN_PORT, AUTOBAHN_CASES,
# AUTOBAHN_TIMEOUT, AUTOBAHN_VERBOSE, AUTOBAHN_PYTHON27 described in common.sh):
#   AUTOBAHN_TLS=1       the same run over wss://: wschat serves TLS with a
#                        certificate made for the run (examples/tls_certs), and
#                        wstest connects to wss://127.0.0.1:$AUTOBAHN_PORT/echo
#                        itself (Twisted over pyOpenSSL; its fuzzingclient does
#                        not check the certificate, so no hop is needed and
#                        nothing but wstest stands between it and wschat's TLS).
#                        Its files are the same with a -tls suffix (reports-tls/,
#                        server-tls.log, ...), so it can run beside a plain run
#                        on another AUTOBAHN_PORT.
#   AUTOBAHN_SERVER_CMD  shell command that starts the echo server instead of
#                        wschat (no cargo build then); it must serve
#                        ws://127.0.0.1:$AUTOBAHN_PORT/echo and stay in the
#                        foreground. AUTOBAHN_PORT is exported to it.
#
# Exit status: 0 only if every selected case passed (see check.py).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_PREFIX=autobahn
# shellcheck source=common.sh
source "$HERE/common.sh"

TLS="${AUTOBAHN_TLS:-0}"
SUFFIX=""
[[ "$TLS" == 1 ]] && SUFFIX="-tls"
REPORTS="$WORK/reports$SUFFIX"
SPEC="$WORK/fuzzingclient$SUFFIX.json"
EXPECTED="$WORK/expected-cases$SUFFIX.json"

install_venv
write_spec "$HERE/fuzzingclient.json" "$SPEC"
if [[ "$TLS" == 1 ]]; then
    # The same spec over wss://, reporting to its own directory.
    python3 - "$SPEC" "$REPORTS" <<'PY'
import json, sys
spec_path, reports = sys.argv[1:]
spec = json.load(open(spec_path))
spec["outdir"] = reports
for server in spec["servers"]:
    server["url"] = "wss://" + server["url"].split("://", 1)[1]
json.dump(spec, open(spec_path, "w"), indent=3)
PY
fi
write_expected "$SPEC" "$EXPECTED"
AGENT="$(json_get "$SPEC" 'd["servers"][0]["agent"]')"
URL="$(json_get "$SPEC" 'd["servers"][0]["url"]')"

# -------------------------------------------------------------- server ----

if port_open; then
    die "something is already listening on 127.0.0.1:$PORT; stop it or set AUTOBAHN_PORT"
fi

if [[ -n "${AUTOBAHN_SERVER_CMD:-}" ]]; then
    SERVER_CMD="$AUTOBAHN_SERVER_CMD"
else
    log "building wschat (cargo build --release --bin wschat)"
    (cd "$ROOT" && cargo build --release --bin wschat)
    target_dir="${CARGO_TARGET_DIR:-target}"
    [[ "$target_dir" = /* ]] || target_dir="$ROOT/$target_dir"
    SERVER_CMD="$(printf '%q' "$target_dir/release/wschat") --listen 127.0.0.1:$PORT --echo --db :memory:"
    SERVER_CMD+=" --max-message-size 16777216 --max-frame-size 16777216 --max-fragments 1000000"
    if [[ "$TLS" == 1 ]]; then
        (cd "$ROOT" && cargo build --release --example tls_certs)
        rm -rf "$WORK/pki"
        "$target_dir/release/examples/tls_certs" "$WORK/pki" server
        SERVER_CMD+=" --tls-cert $(printf '%q' "$WORK/pki/server.pem") --tls-key $(printf '%q' "$WORK/pki/server-key.pem")"
    fi
fi

SERVER_PID=""
WSTEST_PID=""
cleanup() {
    if [[ -n "$WSTEST_PID" ]]; then
        kill -TERM "$WSTEST_PID" 2>/dev/null || true
        wait "$WSTEST_PID" 2>/dev/null || true
    fi
    stop_server
}
stop_server() {
    local pid="$SERVER_PID"
    SERVER_PID=""
    stop_bg "$pid"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "starting server: $SERVER_CMD"
start_bg "$WORK/server$SUFFIX.log" "$SERVER_CMD"
SERVER_PID="$BG_PID"
wait_for_port "$SERVER_PID" "$WORK/server$SUFFIX.log" "server"
log "server is up (pid $SERVER_PID), testing $URL as agent '$AGENT'"

# -------------------------------------------------------------- wstest ----

rm -rf "$REPORTS"
t0="$(now_ms)"
wstest_rc=0
# In the background so that INT/TERM traps fire at once (bash defers traps
# while a foreground child runs); `timeout` passes TERM on to wstest.
(cd "$WORK" && PYTHONWARNINGS=ignore exec timeout "$TIMEOUT" \
    "$VENV/bin/wstest" -m fuzzingclient -s "$SPEC") >"$WORK/wstest$SUFFIX.log" 2>&1 </dev/null &
WSTEST_PID=$!
if [[ "${AUTOBAHN_VERBOSE:-0}" == 1 ]]; then
    tail -n +1 -f --pid="$WSTEST_PID" "$WORK/wstest$SUFFIX.log" &
fi
wait "$WSTEST_PID" || wstest_rc=$?
WSTEST_PID=""
log "wstest wall time: $(fmt_ms $(( $(now_ms) - t0 ))) (log: $WORK/wstest$SUFFIX.log)"
if [[ $wstest_rc -ne 0 ]]; then
    tail -n 20 "$WORK/wstest$SUFFIX.log" >&2 || true
    [[ $wstest_rc -eq 124 ]] && log "wstest timed out after ${TIMEOUT}s"
    log "wstest exited with status $wstest_rc"
fi
if grep -q "^Connection to .* failed" "$WORK/wstest$SUFFIX.log" 2>/dev/null; then
    grep "^Connection to .* failed" "$WORK/wstest$SUFFIX.log" | head -n 3 >&2
fi
if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    log "server died during the run; last lines of $WORK/server$SUFFIX.log:"
    tail -n 20 "$WORK/server$SUFFIX.log" >&2 || true
fi
stop_server

# --------------------------------------------------------------- check ----

check_rc=0
run_check "$REPORTS/index.json" "$AGENT" "$EXPECTED" || check_rc=$?

if [[ $check_rc -ne 0 || $wstest_rc -ne 0 ]]; then
    exit 1
fi
