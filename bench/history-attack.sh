#!/usr/bin/env bash
# The room-filling attack of the durable-chat issue, before and after: CONNECTIONS connections from
# one address (127.0.0.1), each joins a room of its own and posts MESSAGES messages of CHARS emoji
# (😀, four bytes of UTF-8 each: 2,000 of them are the longest text --max-text-chars allows by
# default), and the server's memory is read from /proc/PID/status: VmRSS (resident now) and VmHWM
# (the peak of VmRSS over the process's life). See BENCHMARKS.md, "Memory under the
# history-filling attack".
#
#   before  BEFORE=305632e: the last revision before the durable chat, which keeps each room's last
#           100 messages in memory with no byte budget. Built like compare.sh's BASELINE (a
#           temporary git worktree under target/bench-baseline/, the binary kept there).
#   after   this tree's wschat with its default --history-memory (16 MiB) and a fresh database
#           (--db) under DB_DIR, removed afterwards.
#
# As a new user would: both servers keep their default limits per client (5 messages/s, burst 20,
# closed after 20 refusals in a row; the per-address limits of the after build are lifted, as if
# the 300 came from 300 addresses), and each connection keeps to them: `wschat-bench chat --rate 5
# --burst 20` sends at most what such a token bucket allows (the join counts too) and waits for each
# ack, so 100 messages take about 17 s after the burst. FAST=1 instead runs both servers with
# --rate-limit 100000 --rate-burst 100000 and sends each message as soon as the last is acknowledged.
# Messages are plain string payloads (no key), which both builds accept.
#
# For each build: start it pinned to cpu0; read its RSS idle; run the attack pinned to cpu1 (the
# bench reports VmRSS and VmHWM at the end, the connections still open); read VmRSS and VmHWM again
# SETTLE seconds after the bench left (connections closed, the rooms and their history remain);
# stop it (the after build logs its store's figures). Rounds alternate the order of the builds.
#
# Environment:
#   BEFORE=305632e        the "before" revision
#   CONNECTIONS=300       attackers, one room each (the default --max-rooms, 1000, counts the lobby: 999 at most)
#   MESSAGES=100          messages per attacker (the old build kept 100 per room)
#   CHARS=2000            characters per message
#   FILL=😀               the character they are made of
#   FAST=1                raise both servers' rate limits and send unpaced (see above)
#   AFTER_FLAGS=          more flags for the after build only, e.g. "--history-memory 4194304"
#   ROUNDS=1              rounds (each: both builds)
#   SETTLE=1              seconds between the bench's exit and the last reading
#   DB_DIR=target/history-attack/db   where the after build's database is made
#   PORT=9420             the servers' port
#   SKIP_BUILD=1          use the binaries already built (the before build: target/bench-baseline/wschat-<commit>)
#
# Output: target/history-attack/<timestamp>/{raw.txt,table.md,meta.txt,bench.log,server-*.log}
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=bench/lib.sh
source "$here/lib.sh"

BEFORE=${BEFORE:-305632e}
CONNECTIONS=${CONNECTIONS:-300}
MESSAGES=${MESSAGES:-100}
CHARS=${CHARS:-2000}
FILL=${FILL:-😀}
FAST=${FAST:-0}
ROUNDS=${ROUNDS:-1}
SETTLE=${SETTLE:-1}
DB_DIR=${DB_DIR:-$root/target/history-attack/db}
PORT=${PORT:-9420}
AFTER_FLAGS=${AFTER_FLAGS:-}

[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer, not '$ROUNDS'"
[[ $CONNECTIONS =~ ^[1-9][0-9]*$ ]] || die "CONNECTIONS must be a positive integer"
[[ $MESSAGES =~ ^[1-9][0-9]*$ ]] || die "MESSAGES must be a positive integer"
[[ $CHARS =~ ^[1-9][0-9]*$ ]] || die "CHARS must be a positive integer"
[[ $SETTLE =~ ^[0-9]+([.][0-9]+)?$ ]] || die "SETTLE must be a number of seconds"
[[ $PORT =~ ^[1-9][0-9]*$ ]] || die "PORT must be a port number"
[[ $FAST == 0 || $FAST == 1 ]] || die "FAST must be 0 or 1"

# Build outputs go to the usual places, whatever the caller's CARGO_TARGET_DIR.
unset CARGO_TARGET_DIR RUST_LOG
cd "$root"

for tool in cargo python3 taskset ss timeout git; do
    command -v "$tool" >/dev/null || die "needs '$tool' on PATH"
done
(($(nproc) >= 2)) || die "needs 2 CPUs (server on cpu0, load on cpu1); this machine has $(nproc)"
raise_open_files $((CONNECTIONS + 1024)) "$CONNECTIONS connections (CONNECTIONS)"

before_sha=$(rev_commit BEFORE "$BEFORE")
before_bin=$(rev_binary "$before_sha")
trap cleanup_build EXIT
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    echo "history-attack.sh: building wschat (release)" >&2
    cargo build --release --bin wschat --bin wschat-bench
    build_rev "$before_sha"
fi
wschat_bin=$root/target/release/wschat
bench_bin=$root/target/release/wschat-bench
for bin in "$wschat_bin" "$bench_bin" "$before_bin"; do
    [[ -x $bin ]] || die "missing $bin (run without SKIP_BUILD=1)"
done

# The attack comes from one address, 127.0.0.1: the per-address limits of a build that has them
# (--max-connections-per-ip would let 64 of the 300 connections in) are lifted, so that what is
# measured is the history's memory, as from 300 addresses.
read -ra before_per_address <<<"$(per_address_flags "$before_bin")"
read -ra after_per_address <<<"$(per_address_flags "$wschat_bin")"

mkdir -p "$DB_DIR"
DB_DIR=$(cd "$DB_DIR" && pwd)
out=$root/target/history-attack/$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
raw=$out/raw.txt
: >"$raw"

# The after build's database while a run has one.
db=
cleanup() {
    kill_server
    [[ -z $db ]] || remove_db_files "$db"
    cleanup_build
}
trap cleanup EXIT
trap 'exit 130' INT TERM

limits=()
pace=(--rate 5 --burst 20)
if ((FAST)); then
    limits=(--rate-limit 100000 --rate-burst 100000)
    pace=()
fi

# Appends one JSON line to raw.txt: build $1, round $2, the server's log $3, the bench report $4 (or,
# with $5, an error), and the memory readings of run_one (rss_idle, rss_after, hwm_after).
record() {
    RSS_IDLE=$rss_idle RSS_AFTER=$rss_after HWM_AFTER=$hwm_after python3 - "$@" >>"$raw" <<'EOF'
import json, os, re, sys
build, round_, log, report = sys.argv[1:5]
line = {"server": build, "round": int(round_), "scenario": "attack"}
if len(sys.argv) > 5:
    line["error"] = sys.argv[5]
else:
    line.update(json.loads(report))
for name, variable in (("rss_idle_kib", "RSS_IDLE"), ("rss_after_close_kib", "RSS_AFTER"),
                       ("hwm_after_close_kib", "HWM_AFTER")):
    if os.environ.get(variable):
        line[name] = int(os.environ[variable])
stats = re.findall(r"message store: (\d+) messages in (\d+) commits", open(log, errors="replace").read())
if stats:
    line["store_messages"], line["store_commits"] = map(int, stats[-1])
print(json.dumps(line))
EOF
}

# Runs the attack against build $1 (before or after) in round $2.
run_one() {
    local build=$1 round=$2 log report status=0 limit bin
    local rss_idle='' rss_after='' hwm_after=''
    log=$out/server-$build-r$round.log
    db=
    if [[ $build == after ]]; then
        db=$DB_DIR/wschat-r$round.db
        # Whatever an interrupted run left there.
        remove_db_files "$db"
        # shellcheck disable=SC2206 # AFTER_FLAGS is split into words on purpose
        bin=("$wschat_bin" --db "$db" $AFTER_FLAGS "${after_per_address[@]}")
    else
        bin=("$before_bin" "${before_per_address[@]}")
    fi
    echo "history-attack.sh: round $round/$ROUNDS  $build" >&2
    echo "== round $round $build" >>"$out/bench.log"
    launch "wschat ($build)" "$PORT" "$log" "${bin[@]}" --listen "127.0.0.1:$PORT" "${limits[@]}"
    sleep 0.5
    rss_idle=$(proc_kib "$server_pid" VmRSS)
    # Paced, the fill takes (MESSAGES + 1 - 20) / 5 s after the burst; the bound leaves room for a
    # slow machine, and for opening the connections (30 s per 250 at most).
    limit=$(python3 -c "import math; print(int(3 * ($MESSAGES + 1) / 5 + 60 + math.ceil($CONNECTIONS / 250) * 30))")
    report=$(timeout --kill-after=5 $((limit + 30)) taskset -c 1 "$bench_bin" --json \
        --addr "127.0.0.1:$PORT" --server-pid "$server_pid" \
        chat -c "$CONNECTIONS" --messages "$MESSAGES" --chars "$CHARS" --fill "$FILL" --plain \
        "${pace[@]}" -t "$limit" 2>>"$out/bench.log") || status=$?
    if ! alive "$server_pid"; then
        wait "$server_pid" 2>/dev/null || true
        server_pid=
        record "$build" "$round" "$log" "" "server exited during the run (bench exit $status)"
    else
        sleep "$SETTLE"
        rss_after=$(proc_kib "$server_pid" VmRSS)
        hwm_after=$(proc_kib "$server_pid" VmHWM)
        terminate "wschat ($build)" "$PORT"
        if ((status != 0)); then
            local why
            why=$(tail -n 1 "$out/bench.log")
            ((status == 124)) && why="timed out; $why"
            record "$build" "$round" "$log" "" "wschat-bench exit $status: $why"
        else
            record "$build" "$round" "$log" "$report"
        fi
    fi
    [[ -z $db ]] || remove_db_files "$db"
    db=
}

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "after: wschat $(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown); before: $(git -C "$root" describe --always "$before_sha") (BEFORE=$BEFORE, commit $before_sha); $(rustc --version)"
    echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -sr)"
    echo "settings: CONNECTIONS=$CONNECTIONS MESSAGES=$MESSAGES CHARS=$CHARS FILL=$FILL FAST=$FAST ROUNDS=$ROUNDS SETTLE=$SETTLE"
    echo "server flags beyond --listen: ${limits[*]:-(none: default per-client limits)}; before only: ${before_per_address[*]:-(none)}; after only: --db FILE $AFTER_FLAGS ${after_per_address[*]}; bench pacing: ${pace[*]:-(none)}"
    echo "load before: $(load_average)"
} >"$out/meta.txt"
warn_if_fuzzing

started=$(date +%s)
for ((round = 1; round <= ROUNDS; round++)); do
    if ((round % 2 == 1)); then builds=(before after); else builds=(after before); fi
    for build in "${builds[@]}"; do run_one "$build" "$round"; done
done
echo "load after: $(load_average); runs took $(($(date +%s) - started)) s" >>"$out/meta.txt"

python3 - "$out" <<'EOF' | tee "$out/table.md"
import json, statistics, sys
from pathlib import Path

out = Path(sys.argv[1])
runs = [json.loads(line) for line in (out / "raw.txt").read_text().splitlines() if line.strip()]


def med(rows, name, fmt="{:,.0f}"):
    values = [float(r[name]) for r in rows if name in r]
    if not values:
        return "—"
    text = fmt.format(statistics.median(values))
    return text if len(values) == 1 else f"{text} ({fmt.format(min(values))}–{fmt.format(max(values))})"


print("```")
print((out / "meta.txt").read_text().strip())
print("```")
print()
print("| build | runs | fill s | messages acked | refused (rate limit) | RSS idle KiB | RSS filled KiB "
      "(connections open) | VmHWM KiB | RSS KiB after the connections closed | stored (store's count) |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for build in ("before", "after"):
    ok = [r for r in runs if r["server"] == build and "error" not in r]
    bad = [r for r in runs if r["server"] == build and "error" in r]
    if not ok and not bad:
        continue
    cells = [med(ok, "seconds", "{:.1f}"), med(ok, "acked_total"), med(ok, "rate_limited"),
             med(ok, "rss_idle_kib"), med(ok, "server_rss_kib"), med(ok, "hwm_after_close_kib"),
             med(ok, "rss_after_close_kib"), med(ok, "store_messages")]
    runs_cell = f"{len(ok)}" + (f" ({len(bad)} failed)" if bad else "")
    print(f"| {build} | {runs_cell} | {' | '.join(cells)} |")
ratios = []
for round_ in sorted({r["round"] for r in runs}):
    pair = {r["server"]: r for r in runs if r["round"] == round_ and "error" not in r}
    if "before" in pair and "after" in pair and "server_rss_kib" in pair["before"]:
        ratios.append(float(pair["after"]["server_rss_kib"]) / float(pair["before"]["server_rss_kib"]))
if ratios:
    print(f"\nRSS filled, after ÷ before, per round: {', '.join(f'{v:.3f}×' for v in ratios)}")
for r in runs:
    if "error" in r:
        print(f"\n- round {r['round']}, {r['server']}: {r['error']}")
EOF
echo >&2
echo "history-attack.sh: raw figures in $raw, table in $out/table.md" >&2
