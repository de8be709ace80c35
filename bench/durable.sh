#!/usr/bin/env bash
# What durability costs the chat: wschat with its message store in a file (`--db FILE`, every
# commit fsync'd) against the same store in memory (`--db :memory:`), under `wschat-bench chat`:
# SENDERS senders, each in a room of its own, each sending its next keyed message once the `ack` of
# the last came back. See BENCHMARKS.md, "Durable chat".
#
# The server runs pinned to cpu0, the load generator to cpu1, on 127.0.0.1 only, with rate limits
# no sender reaches (--rate-limit 100000 --rate-burst 100000, and the per-address limits lifted by
# per_address_flags in bench/lib.sh, since every sender has the same address). Each run gets a fresh server and, for
# the file, a fresh database under DB_DIR, removed afterwards. Every round runs both stores; odd
# rounds file first, even rounds memory first, so that a drift of the machine does not always
# favour the same one (an even ROUNDS gives each order as many rounds).
#
# Messages per commit come from the line the server logs when it stops (SIGTERM):
# "message store: M messages in C commits (X per commit, at most Y), ...". They count the server's
# whole life: connecting, the warm-up, the measured window and the messages still in flight when
# the load generator left. The load is the same throughout, so this is the window's figure too; the
# table checks that M lies between the messages acknowledged and those plus the ones in flight.
#
# The store's commit latency as the event loop sees it (from handing a message to the store to its
# answer: the ack's wait beyond the loop's own work) comes from the server's /metrics histogram
# wschat_store_commit_seconds (on --metrics-listen 127.0.0.1:PORT+1), read as the run ends. It too
# counts the whole life; its buckets are coarse (…, 5, 10, 25, 50 ms, …): the table gives the mean
# and the share within 10 ms.
#
# Environment:
#   ROUNDS=6              rounds (each: file and memory)
#   SECONDS_PER_RUN=10    measured seconds per run (plus WARMUP=2 unmeasured seconds)
#   SENDERS=100           chat senders, one message in flight each
#   CHARS=16              characters of text per message
#   DB_DIR=target/durable/db   where the file store is made: it must be on the disk to measure
#                         (not a tmpfs); the script prints its file system into meta.txt
#   PORT=9410             the server's port
#   QUICK=1               smoke test: ROUNDS=2, SECONDS_PER_RUN=3, WARMUP=1 (explicit values win)
#   SKIP_BUILD=1          use the binaries already built
#
# Output: target/durable/<timestamp>/{raw.txt,table.md,meta.txt,bench.log,server-*.log}
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=bench/lib.sh
source "$here/lib.sh"

if [[ ${QUICK:-0} == 1 ]]; then
    ROUNDS=${ROUNDS:-2}
    SECONDS_PER_RUN=${SECONDS_PER_RUN:-3}
    WARMUP=${WARMUP:-1}
fi
ROUNDS=${ROUNDS:-6}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
WARMUP=${WARMUP:-2}
SENDERS=${SENDERS:-100}
CHARS=${CHARS:-16}
DB_DIR=${DB_DIR:-$root/target/durable/db}
PORT=${PORT:-9410}

[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer, not '$ROUNDS'"
[[ $SENDERS =~ ^[1-9][0-9]*$ ]] || die "SENDERS must be a positive integer"
[[ $CHARS =~ ^[1-9][0-9]*$ ]] || die "CHARS must be a positive integer"
[[ $SECONDS_PER_RUN =~ ^[0-9]+([.][0-9]+)?$ ]] || die "SECONDS_PER_RUN must be a number of seconds"
[[ $WARMUP =~ ^[0-9]+([.][0-9]+)?$ ]] || die "WARMUP must be a number of seconds"
[[ $PORT =~ ^[1-9][0-9]*$ ]] || die "PORT must be a port number"

# Build outputs go to the usual places, whatever the caller's CARGO_TARGET_DIR.
unset CARGO_TARGET_DIR RUST_LOG
cd "$root"

for tool in cargo python3 taskset ss timeout git; do
    command -v "$tool" >/dev/null || die "needs '$tool' on PATH"
done
(($(nproc) >= 2)) || die "needs 2 CPUs (server on cpu0, load on cpu1); this machine has $(nproc)"
raise_open_files $((SENDERS + 1024)) "$SENDERS senders (SENDERS)"

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    echo "durable.sh: building wschat (release)" >&2
    cargo build --release --bin wschat --bin wschat-bench
fi
wschat_bin=$root/target/release/wschat
bench_bin=$root/target/release/wschat-bench
for bin in "$wschat_bin" "$bench_bin"; do
    [[ -x $bin ]] || die "missing $bin (run without SKIP_BUILD=1)"
done

# All senders come from 127.0.0.1: the per-address limits are lifted like the per-client ones.
read -ra per_address <<<"$(per_address_flags "$wschat_bin")"
metrics_port=$((PORT + 1))
metrics=()
if grep -q -- --metrics-listen <<<"$("$wschat_bin" --help)"; then
    metrics=(--metrics-listen "127.0.0.1:$metrics_port")
fi

mkdir -p "$DB_DIR"
DB_DIR=$(cd "$DB_DIR" && pwd)
out=$root/target/durable/$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
raw=$out/raw.txt
: >"$raw"

# The database of the file run under way.
db=
cleanup() {
    kill_server
    [[ -z $db ]] || remove_db_files "$db"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Appends one JSON line to raw.txt: the bench report $4 (or, with $5, an error) tagged with the
# store $1, round $2, the figures of the server's shutdown line in its log $3 and those of the
# commit-latency histogram in the /metrics text $metrics_file (when there is one).
record() {
    METRICS_FILE=$metrics_file python3 - "$@" >>"$raw" <<'EOF'
import json, os, re, sys
store, round_, log, report = sys.argv[1:5]
line = {"server": store, "round": int(round_), "scenario": "chat"}
if len(sys.argv) > 5:
    line["error"] = sys.argv[5]
else:
    line.update(json.loads(report))
metrics = os.environ.get("METRICS_FILE")
if metrics and os.path.exists(metrics):
    text = open(metrics, errors="replace").read()
    series = {m[0]: float(m[1]) for m in re.findall(r"^(wschat_store_commit_seconds\S*) (\S+)$", text, re.M)}
    count = series.get("wschat_store_commit_seconds_count", 0)
    if count > 0:
        line["commit_count"] = int(count)
        line["commit_mean_us"] = round(series["wschat_store_commit_seconds_sum"] / count * 1e6)
        within = series.get('wschat_store_commit_seconds_bucket{le="0.01"}')
        if within is not None:
            line["commit_within_10ms"] = round(within / count, 4)
stats = re.findall(
    r"message store: (\d+) messages in (\d+) commits \(([\d.]+) per commit, at most (\d+)\), (\d+) failed commits",
    open(log, errors="replace").read(),
)
if stats:
    messages, commits, _, largest, failed = stats[-1]
    line.update(store_messages=int(messages), store_commits=int(commits),
                store_largest_commit=int(largest), store_failed_commits=int(failed))
    if int(commits) > 0:
        line["msgs_per_commit"] = round(int(messages) / int(commits), 2)
elif "error" not in line:
    line["error"] = f"no 'message store:' line in {log}"
print(json.dumps(line))
EOF
}

# Runs the chat load against wschat with store $1 (file or memory) in round $2.
run_one() {
    local store=$1 round=$2 log report status=0 limit metrics_file
    log=$out/server-$store-r$round.log
    metrics_file=$out/metrics-$store-r$round.txt
    db=
    if [[ $store == file ]]; then
        db=$DB_DIR/wschat-r$round.db
        # Whatever an interrupted run left there.
        remove_db_files "$db"
    fi
    echo "durable.sh: round $round/$ROUNDS  $store" >&2
    echo "== round $round $store" >>"$out/bench.log"
    launch "wschat ($store)" "$PORT" "$log" "$wschat_bin" --db "${db:-:memory:}" \
        --listen "127.0.0.1:$PORT" --rate-limit 100000 --rate-burst 100000 "${per_address[@]}" "${metrics[@]}"
    # Opening is bounded by wschat-bench itself (30 s per 250 connections).
    limit=$(python3 -c "import math; print(int($SECONDS_PER_RUN + $WARMUP + 60 + math.ceil($SENDERS / 250) * 30))")
    report=$(timeout --kill-after=5 "$limit" taskset -c 1 "$bench_bin" --json \
        --addr "127.0.0.1:$PORT" --server-pid "$server_pid" \
        chat -c "$SENDERS" --chars "$CHARS" -t "$SECONDS_PER_RUN" --warmup "$WARMUP" \
        2>>"$out/bench.log") || status=$?
    if ! alive "$server_pid"; then
        wait "$server_pid" 2>/dev/null || true
        server_pid=
        record "$store" "$round" "$log" "" "server exited during the run (bench exit $status)"
    else
        if ((${#metrics[@]})); then
            python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' \
                "http://127.0.0.1:$metrics_port/metrics" >"$metrics_file" || echo "durable.sh: no /metrics" >&2
        fi
        # The store's figures are logged as the server stops.
        terminate "wschat ($store)" "$PORT"
        if ((status != 0)); then
            local why
            why=$(tail -n 1 "$out/bench.log")
            ((status == 124)) && why="timed out after ${limit}s; $why"
            record "$store" "$round" "$log" "" "wschat-bench exit $status: $why"
        else
            record "$store" "$round" "$log" "$report"
        fi
    fi
    [[ -z $db ]] || remove_db_files "$db"
    db=
}

# The disk's own pace: what one fsync of a small append costs on DB_DIR (SQLite's commit fsyncs the
# log; an ack waits for the commit under way, if any, and then its own). A p99 ack latency cannot
# go far below this p99.
fsync_latency() {
    python3 - "$DB_DIR" <<'EOF'
import os, sys, time
path = os.path.join(sys.argv[1], "fsync-probe")
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
times = []
try:
    for _ in range(200):
        os.write(fd, b"x" * 4096)
        start = time.perf_counter()
        os.fsync(fd)
        times.append((time.perf_counter() - start) * 1e6)
finally:
    os.close(fd)
    os.remove(path)
times.sort()
pick = lambda p: times[round((len(times) - 1) * p)]
print(f"fsync of a 4 KiB append, 200 times: p50 {pick(0.5):,.0f} µs, p99 {pick(0.99):,.0f} µs, max {times[-1]:,.0f} µs")
EOF
}

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "wschat: $(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown); $(rustc --version)"
    echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -sr)"
    echo "database directory: $DB_DIR on $(df -T "$DB_DIR" | awk 'NR == 2 { print $1 " (" $2 ")" }')"
    echo "disk before: $(fsync_latency)"
    echo "settings: ROUNDS=$ROUNDS SECONDS_PER_RUN=$SECONDS_PER_RUN WARMUP=$WARMUP SENDERS=$SENDERS CHARS=$CHARS"
    echo "server flags: --db FILE|:memory: --listen 127.0.0.1:$PORT --rate-limit 100000 --rate-burst 100000 ${per_address[*]} ${metrics[*]}"
    echo "load before: $(load_average)"
} >"$out/meta.txt"
warn_if_fuzzing

started=$(date +%s)
for ((round = 1; round <= ROUNDS; round++)); do
    if ((round % 2 == 1)); then stores=(file memory); else stores=(memory file); fi
    for store in "${stores[@]}"; do run_one "$store" "$round"; done
done
{
    echo "disk after: $(fsync_latency)"
    echo "load after: $(load_average); runs took $(($(date +%s) - started)) s"
} >>"$out/meta.txt"

python3 "$here/durable.py" "$out" | tee "$out/table.md"
echo >&2
echo "durable.sh: raw figures in $raw, table in $out/table.md" >&2
