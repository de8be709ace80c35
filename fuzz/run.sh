#!/usr/bin/env bash
# Fuzz smoke: installs cargo-fuzz if needed and runs every target for FUZZ_SECONDS (default 60)
# from the committed seed corpus with the protocol dictionary. Any crash fails the script; the
# reproducer lands in fuzz/artifacts/<target>/.
#
#   fuzz/run.sh                 # every target, 60 s each
#   FUZZ_SECONDS=600 fuzz/run.sh connection
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_PER_TARGET="${FUZZ_SECONDS:-60}"
TARGETS=("$@")
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=(frame handshake connection connection_deflate extensions utf8 http stack)

if ! command -v cargo-fuzz >/dev/null; then
    echo "fuzz: installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi
# cargo-fuzz passes nightly-only flags (sanitizers); stable accepts them with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1

mkdir -p target/fuzz-logs
for target in "${TARGETS[@]}"; do
    # A scratch corpus seeded from the committed one, so CI leaves the tree as it found it.
    work="target/fuzz-corpus/$target"
    mkdir -p "$work"
    cp corpus/"$target"/seed_* "$work"/
    log="target/fuzz-logs/$target.log"
    echo "fuzz: $target for ${SECONDS_PER_TARGET}s"
    if ! cargo fuzz run "$target" "$work" -- -max_total_time="$SECONDS_PER_TARGET" \
        -dict=dict/websocket.dict -print_final_stats=1 >"$log" 2>&1; then
        tail -n 40 "$log"
        echo "fuzz: $target FAILED (see $log and fuzz/artifacts/$target/)"
        exit 1
    fi
    runs="$(grep -o 'number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')"
    rate="$(grep -o 'average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')"
    echo "fuzz: $target ok: $runs runs, $rate runs/s"
done
