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

NAME=metrics
# shellcheck source=../lib.sh
source "$ROOT/tests/lib.sh"

python_venv "$VENV" "$HERE/requirements.txt"
log "$("$VENV/bin/python" -c 'import sys; from importlib.metadata import version; print("Python", sys.version.split()[0] + ", prometheus-client", version("prometheus-client"))')"

cd "$ROOT"
WSCHAT_METRICS_PYTHON="$VENV/bin/python" \
    cargo test --lib metrics::tests::python_prometheus_client_parses_the_rendering_back -- --ignored --exact
WSCHAT_METRICS_PYTHON="$VENV/bin/python" \
    cargo test --test ops a_live_scrape_is_read_by_prometheus_client_and_moves_with_traffic -- --ignored --exact
