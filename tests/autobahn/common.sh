# Shared by run.sh (wschat as the server, wstest -m fuzzingclient) and
# run-client.sh (wschat as the client, wstest -m fuzzingserver); sourced, not
# run. The caller sets HERE (this directory) and LOG_PREFIX before sourcing.
#
# Provides: the pinned Python 2.7 venv with wstest (install_venv), the spec
# actually used (write_spec), the case ids it selects (write_expected), process
# helpers (port_open, start_bg, stop_bg, wait_for_port) and the verdict
# (run_check). Everything generated lives under <repo>/target/autobahn.
#
# Environment shared by both scripts:
#   AUTOBAHN_PORT        port to test on (default 9001, always 127.0.0.1)
#   AUTOBAHN_CASES       comma-separated case patterns replacing the spec's
#                        "cases" (e.g. "1.*,5.*") for a quick partial run
#   AUTOBAHN_TIMEOUT     seconds before the run is stopped (default 1800)
#   AUTOBAHN_VERBOSE=1   stream wstest's output instead of only logging it
#   AUTOBAHN_PYTHON27    path to a CPython 2.7 interpreter (default: pyenv's 2.7.18)

ROOT="$(cd "$HERE/../.." && pwd)"
WORK="$ROOT/target/autobahn"
VENV="$WORK/venv"
BOOT="$WORK/bootstrap"
PORT="${AUTOBAHN_PORT:-9001}"
TIMEOUT="${AUTOBAHN_TIMEOUT:-1800}"
export AUTOBAHN_PORT="$PORT"

# Quiet the Python 2 end-of-life noise from pip/cryptography.
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_PYTHON_VERSION_WARNING=1

log() { echo "${LOG_PREFIX:-autobahn}: $*"; }
die() { echo "${LOG_PREFIX:-autobahn}: ERROR: $*" >&2; exit 1; }

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

# ---------------------------------------------------------------- spec ----

# write_spec TEMPLATE OUT: the spec with its outdir under the repo, its URL(s)
# on $PORT (a fuzzingclient spec lists "servers", a fuzzingserver spec has one
# "url") and AUTOBAHN_CASES applied.
write_spec() {
    python3 - "$1" "$2" "$ROOT" "$PORT" "${AUTOBAHN_CASES:-}" <<'PY'
import json, os, sys
from urllib.parse import urlsplit, urlunsplit
template, out, root, port, cases = sys.argv[1:]
with open(template) as f:
    spec = json.load(f)
spec["outdir"] = os.path.join(root, spec["outdir"])
def on_port(url):
    u = urlsplit(url)
    return urlunsplit(u._replace(netloc="%s:%s" % (u.hostname, port)))
for server in spec.get("servers", []):
    server["url"] = on_port(server["url"])
if "url" in spec:
    spec["url"] = on_port(spec["url"])
if cases.strip():
    spec["cases"] = [c.strip() for c in cases.split(",") if c.strip()]
with open(out, "w") as f:
    json.dump(spec, f, indent=3)
PY
}

# write_expected SPEC OUT: the exact case ids the spec selects, computed by the
# testsuite's own case registry, so check.py can flag selected cases that
# produced no result.
write_expected() {
    PYTHONWARNINGS=ignore "$VENV/bin/python" - "$1" "$2" <<'PY'
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
    log "$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%d of %d cases selected" % (len(d["selected"]), d["total_known"]))' "$2")"
}

# json_get FILE EXPR: a value from a JSON file (EXPR indexes `d`).
json_get() {
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}

# ----------------------------------------------------------- processes ----

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

# start_bg LOGFILE COMMAND: runs COMMAND (a shell string) in the background in
# its own session, so stop_bg can signal it with its children; sets BG_PID (not
# printed: a command substitution would make it some subshell's child).
start_bg() {
    local logfile="$1" cmd="$2"
    if command -v setsid >/dev/null; then
        setsid bash -c "$cmd" >"$logfile" 2>&1 </dev/null &
    else
        bash -c "$cmd" >"$logfile" 2>&1 </dev/null &
    fi
    BG_PID=$!
}

# stop_bg PID: TERM to the process group, KILL after 5 s.
stop_bg() {
    local pid="$1" i
    [[ -n "$pid" ]] || return 0
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# wait_for_port PID LOGFILE WHAT: waits up to 10 s for 127.0.0.1:$PORT to
# accept, failing early if PID exits.
wait_for_port() {
    local pid="$1" logfile="$2" what="$3" i
    for i in $(seq 100); do
        port_open && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$logfile" >&2 || true
            die "$what exited before accepting connections"
        fi
        sleep 0.1
    done
    tail -n 20 "$logfile" >&2 || true
    die "$what not accepting on 127.0.0.1:$PORT after 10 s"
}

# --------------------------------------------------------------- check ----

# run_check INDEX AGENT EXPECTED: check.py's verdict; returns its status.
run_check() {
    local rc=0
    python3 "$HERE/check.py" --index "$1" --agent "$2" --expected "$3" || rc=$?
    [[ -f "$(dirname "$1")/index.html" ]] && log "HTML report: $(dirname "$1")/index.html"
    return $rc
}
