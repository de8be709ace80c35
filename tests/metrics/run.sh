#!/usr/bin/env bash
# The Prometheus exposition (src/metrics.rs) read back by Python's prometheus_client parser and a
# strict grammar (parse.py): makes a venv with the pinned client under target/metrics/venv, then
# runs the two Rust tests that need it (ignored by a plain `cargo test`): a rendering with hostile
# label values and special floats, and live scrapes of a running server whose figures must move
# as connections open, messages flow and closes happen (tests/ops.rs).
#
# On a fresh Debian machine it installs python3 and python3-venv when missing (apt). A missing
# program is a failure, never a skip.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="$ROOT/target/metrics/venv"

log() { echo "metrics: $*"; }
as_root() { if [[ $EUID -eq 0 ]]; then "$@"; else sudo "$@"; fi; }
apt_install() {
    log "installing $* (apt)"
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"
}

command -v python3 >/dev/null || apt_install python3 python3-venv
# The venv is rebuilt when the pins or the interpreter change.
stamp="$( (cat "$HERE/requirements.txt"; python3 --version) | sha256sum | cut -d' ' -f1)"
if [[ -x "$VENV/bin/python" && "$(cat "$VENV/.stamp" 2>/dev/null)" == "$stamp" ]]; then
    log "reusing $VENV"
else
    log "creating $VENV"
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV" 2>/dev/null || { rm -rf "$VENV"; apt_install python3-venv; python3 -m venv "$VENV"; }
    "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$HERE/requirements.txt"
    echo "$stamp" >"$VENV/.stamp"
fi
log "$("$VENV/bin/python" -c 'import sys; from importlib.metadata import version; print("Python", sys.version.split()[0] + ", prometheus-client", version("prometheus-client"))')"

cd "$ROOT"
WSCHAT_METRICS_PYTHON="$VENV/bin/python" \
    cargo test --lib metrics::tests::python_prometheus_client_parses_the_rendering_back -- --ignored --exact
WSCHAT_METRICS_PYTHON="$VENV/bin/python" \
    cargo test --test ops a_live_scrape_is_read_by_prometheus_client_and_moves_with_traffic -- --ignored --exact
