#!/usr/bin/env bash
# Line coverage of src/ reached by each target's corpus (cargo fuzz coverage + llvm-cov).
# Needs LLVM tools matching rustc's LLVM major version or newer (Debian: apt-get install llvm-22).
#
#   fuzz/coverage.sh                       # committed seeds + whatever fuzz/corpus/<t> holds
#   CORPUS_ROOT=fuzz/target/long-corpus fuzz/coverage.sh
set -euo pipefail
# CORPUS_ROOT is relative to where the script is called from.
CORPUS_ROOT="$(realpath "${CORPUS_ROOT:-$(dirname "$0")/corpus}")"
cd "$(dirname "$0")"
LLVM="${LLVM_PATH:-/usr/lib/llvm-22/bin}"
export RUSTC_BOOTSTRAP=1
TARGETS=(frame handshake connection connection_deflate extensions utf8)
objects=()
for target in "${TARGETS[@]}"; do
    echo "coverage: $target over $CORPUS_ROOT/$target"
    cargo fuzz coverage --llvm-path "$LLVM" "$target" "$CORPUS_ROOT/$target" >"target/coverage-$target.log" 2>&1
    objects+=(-object "target/x86_64-unknown-linux-gnu/coverage/x86_64-unknown-linux-gnu/release/$target")
done
"$LLVM/llvm-profdata" merge -sparse coverage/*/coverage.profdata -o target/all.profdata
"$LLVM/llvm-cov" report "${objects[@]}" -instr-profile=target/all.profdata \
    --ignore-filename-regex='(\.cargo|rustc|fuzz_targets|/tests\.rs$)' | sed 's/ \{2,\}/  /g'
