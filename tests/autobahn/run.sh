#!/usr/bin/env bash
# Autobahn|Testsuite conformance run for wschat.
#
# wstest runs in "fuzzingclient" mode (it is the WebSocket client, wschat is
# the server under test, echoing on /echo). Inputs beside this script:
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
# Environment:
#   AUTOBAHN_PORT        port to test on (default 9001, always 127.0.0.1)
#   AUTOBAHN_SERVER_CMD  shell command that starts the echo server instead of
#                        wschat (no cargo build then); it must serve
#                        ws://127.0.0.1:$AUTOBAHN_PORT/echo and stay in the
#                        foreground. AUTOBAHN_PORT is exported to it.
#   AUTOBAHN_CASES       comma-separated case patterns replacing the spec's
#                        "cases" (e.g. "1.*,5.*") for a quick partial run
#   AUTOBAHN_TIMEOUT     seconds before wstest is killed (default 1800)
#   AUTOBAHN_VERBOSE=1   stream wstest's output instead of only logging it
#   AUTOBAHN_PYTHON27    path to a CPython 2.7 interpreter (default: pyenv's 2.7.18)
#
# Exit status: 0 only if every selected case passed (see check.py).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
WORK="$ROOT/target/autobahn"
VENV="$WORK/venv"
BOOT="$WORK/bootstrap"
REPORTS="$WORK/reports"
SPEC="$WORK/fuzzingclient.json"
EXPECTED="$WORK/expected-cases.json"
PORT="${AUTOBAHN_PORT:-9001}"
TIMEOUT="${AUTOBAHN_TIMEOUT:-1800}"
export AUTOBAHN_PORT="$PORT"

# Quiet the Python 2 end-of-life noise from pip/cryptography.
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_PYTHON_VERSION_WARNING=1

log() { echo "autobahn: $*"; }
die() { echo "autobahn: ERROR: $*" >&2; exit 1; }

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
fmt_ms() { printf '%d.%01ds' $(( $1 / 1000 )) $(( ($1 % 1000) / 100 )); }

[[ "$PORT" =~ ^[0-9]+$ ]] || die "AUTOBAHN_PORT must be a number, got '$PORT'"
command -v python3 >/dev/null || die "python3 not found (needed for the spec and check.py)"
mkdir -p "$WORK"

# ---------------------------------------------------------------- venv ----

find_python27() {
    local cands=()
    [[ -n "${AUTOBAHN_PYTHON27:-}" ]] && cands+=("$AUTOBAHN_PYTHON27")
    if command -v pyenv >/dev/null 2>&1; then
        cands+=("$(pyenv root)/versions/2.7.18/bin/python")
    fi
    cands+=("$HOME/.pyenv/versions/2.7.18/bin/python")
    local c
    for c in "${cands[@]}"; do
        if [[ -x "$c" ]] && "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (2, 7))' 2>/dev/null; then
            echo "$c"
            return 0
        fi
    done
    return 1
}

venv_ok() {
    [[ -x "$VENV/bin/wstest" && -f "$VENV/.requirements.sha256" ]] || return 1
    [[ "$(cat "$VENV/.requirements.sha256")" == "$1" ]] || return 1
    PYTHONWARNINGS=ignore "$VENV/bin/wstest" -a >/dev/null 2>&1
}

install_venv() {
    local want
    want="$(cat "$HERE/requirements.txt" "$HERE/bootstrap-requirements.txt" \
        "$HERE/build-constraints.txt" | sha256sum | cut -d' ' -f1)"
    if venv_ok "$want"; then
        log "reusing $VENV ($(PYTHONWARNINGS=ignore "$VENV/bin/wstest" -a 2>/dev/null | paste -sd" "))"
        return 0
    fi

    local t0 py27
    t0="$(now_ms)"
    py27="$(find_python27)" || die "CPython 2.7 not found (looked for pyenv's 2.7.18; set AUTOBAHN_PYTHON27)"
    log "installing Autobahn|Testsuite into $VENV using $py27"
    rm -rf "$VENV" "$BOOT"

    local ilog="$WORK/install.log"
    : >"$ilog"
    # Each step logs to install.log (pip's Python 2 warnings are noise); on
    # failure show its tail.
    step() {
        if ! "$@" >>"$ilog" 2>&1; then
            tail -n 30 "$ilog" >&2
            die "install step failed: $* (full log: $ilog)"
        fi
    }
    if ! "$py27" -m pip --version >/dev/null 2>&1; then
        step "$py27" -m ensurepip --user
    fi
    step "$py27" -m pip install --no-deps --target "$BOOT" -r "$HERE/bootstrap-requirements.txt"
    step env PYTHONPATH="$BOOT" VIRTUALENV_OVERRIDE_APP_DATA="$WORK/virtualenv-appdata" \
        "$py27" -m virtualenv --no-download "$VENV"
    # Exact pins, no resolution: requirements.txt lists the whole closure.
    # PIP_CONSTRAINT reaches the isolated build environments of sdists.
    step env PIP_CONSTRAINT="$HERE/build-constraints.txt" \
        "$VENV/bin/pip" install --no-deps -r "$HERE/requirements.txt"
    step "$VENV/bin/pip" check
    step env PYTHONWARNINGS=ignore "$VENV/bin/wstest" -a
    echo "$want" > "$VENV/.requirements.sha256"
    log "installed $(PYTHONWARNINGS=ignore "$VENV/bin/wstest" -a 2>/dev/null | paste -sd" ") in $(fmt_ms $(( $(now_ms) - t0 )))"
}

install_venv

# ---------------------------------------------------------------- spec ----

python3 - "$HERE/fuzzingclient.json" "$SPEC" "$ROOT" "$PORT" "${AUTOBAHN_CASES:-}" <<'PY'
import json, os, sys
from urllib.parse import urlsplit, urlunsplit
template, out, root, port, cases = sys.argv[1:]
with open(template) as f:
    spec = json.load(f)
spec["outdir"] = os.path.join(root, spec["outdir"])
for server in spec["servers"]:
    u = urlsplit(server["url"])
    server["url"] = urlunsplit(u._replace(netloc="%s:%s" % (u.hostname, port)))
if cases.strip():
    spec["cases"] = [c.strip() for c in cases.split(",") if c.strip()]
with open(out, "w") as f:
    json.dump(spec, f, indent=3)
PY

# The exact case ids this spec selects, computed by the testsuite's own case
# registry, so check.py can flag selected cases that produced no result.
PYTHONWARNINGS=ignore "$VENV/bin/python" - "$SPEC" "$EXPECTED" <<'PY'
import json, sys
from autobahntestsuite.case import Cases, CaseCategories, CaseSubCategories, CaseSetname, CaseBasename
from autobahntestsuite.caseset import CaseSet
spec = json.load(open(sys.argv[1]))
cs = CaseSet(CaseSetname, CaseBasename, Cases, CaseCategories, CaseSubCategories)
cases = cs.parseSpecCases(spec)
unknown = [c for c in cases if c not in cs.CasesById]
if unknown:
    sys.exit("unknown case ids in spec: %s" % ", ".join(unknown))
json.dump({"total_known": len(cs.Cases), "selected": cases}, open(sys.argv[2], "w"), indent=1)
PY
AGENT="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["servers"][0]["agent"])' "$SPEC")"
URL="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["servers"][0]["url"])' "$SPEC")"
log "$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%d of %d cases selected" % (len(d["selected"]), d["total_known"]))' "$EXPECTED")"

# -------------------------------------------------------------- server ----

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

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
    SERVER_CMD="$(printf '%q' "$target_dir/release/wschat") --listen 127.0.0.1:$PORT --echo"
    SERVER_CMD+=" --max-message-size 16777216 --max-frame-size 16777216 --max-fragments 1000000"
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
    [[ -n "$SERVER_PID" ]] || return 0
    local pid="$SERVER_PID" i
    SERVER_PID=""
    # The server runs in its own session/process group: signal the group so
    # wrapper shells and their children go too.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "starting server: $SERVER_CMD"
if command -v setsid >/dev/null; then
    setsid bash -c "$SERVER_CMD" >"$WORK/server.log" 2>&1 </dev/null &
else
    bash -c "$SERVER_CMD" >"$WORK/server.log" 2>&1 </dev/null &
fi
SERVER_PID=$!

for i in $(seq 100); do
    port_open && break
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        tail -n 20 "$WORK/server.log" >&2 || true
        die "server exited before accepting connections"
    fi
    sleep 0.1
done
port_open || { tail -n 20 "$WORK/server.log" >&2 || true; die "server not accepting on 127.0.0.1:$PORT after 10 s"; }
log "server is up (pid $SERVER_PID), testing $URL as agent '$AGENT'"

# -------------------------------------------------------------- wstest ----

rm -rf "$REPORTS"
t0="$(now_ms)"
wstest_rc=0
# In the background so that INT/TERM traps fire at once (bash defers traps
# while a foreground child runs); `timeout` passes TERM on to wstest.
(cd "$WORK" && PYTHONWARNINGS=ignore exec timeout "$TIMEOUT" \
    "$VENV/bin/wstest" -m fuzzingclient -s "$SPEC") >"$WORK/wstest.log" 2>&1 </dev/null &
WSTEST_PID=$!
if [[ "${AUTOBAHN_VERBOSE:-0}" == 1 ]]; then
    tail -n +1 -f --pid="$WSTEST_PID" "$WORK/wstest.log" &
fi
wait "$WSTEST_PID" || wstest_rc=$?
WSTEST_PID=""
log "wstest wall time: $(fmt_ms $(( $(now_ms) - t0 ))) (log: $WORK/wstest.log)"
if [[ $wstest_rc -ne 0 ]]; then
    tail -n 20 "$WORK/wstest.log" >&2 || true
    [[ $wstest_rc -eq 124 ]] && log "wstest timed out after ${TIMEOUT}s"
    log "wstest exited with status $wstest_rc"
fi
if grep -q "^Connection to .* failed" "$WORK/wstest.log" 2>/dev/null; then
    grep "^Connection to .* failed" "$WORK/wstest.log" | head -n 3 >&2
fi
if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    log "server died during the run; last lines of $WORK/server.log:"
    tail -n 20 "$WORK/server.log" >&2 || true
fi
stop_server

# --------------------------------------------------------------- check ----

check_rc=0
python3 "$HERE/check.py" --index "$REPORTS/index.json" --agent "$AGENT" --expected "$EXPECTED" || check_rc=$?
[[ -f "$REPORTS/index.html" ]] && log "HTML report: $REPORTS/index.html"

if [[ $check_rc -ne 0 || $wstest_rc -ne 0 ]]; then
    exit 1
fi
