#!/usr/bin/env bash
# Side-by-side benchmark: wschat against echo servers on fastwebsockets, tokio-tungstenite and
# Node's ws (bench/peers/), driven by wschat-bench. See BENCHMARKS.md.
#
# Every server runs pinned to cpu0, the load generator to cpu1, on 127.0.0.1 only. Each run gets
# a fresh server process, which is stopped afterwards. The server order alternates every round.
#
# Scenarios: four echo runs and the idle-connection hold for every server; a chat broadcast (one
# room, BROADCAST_RECEIVERS receivers, one sender at BROADCAST_RATE messages/s) for the wschat
# servers only, since the peers have no chat.
#
# permessage-deflate (RFC 7692), for wschat and ws (the Rust peers have no permessage-deflate), each
# against its twin without it: `hold-deflate` (the idle connections, all having negotiated the
# extension; vs `hold`) and `echo-deflate` (100 connections echoing 1 KiB blocks of chat text,
# compressed; vs `echo-chat`, the same blocks uncompressed); ws runs with `perMessageDeflate: true`
# in those two. For wschat only, `broadcast-deflate` (BROADCAST_RECEIVERS receivers, one sender of
# chat lines at DEFLATE_RATE messages/s, compressed; vs `broadcast-chat`, the same uncompressed).
#
# Before and after: BASELINE=<git rev> (e.g. BASELINE=e4efc6e) also builds that revision's wschat
# (release, --locked) from a temporary `git worktree` under target/bench-baseline/, with its own
# CARGO_TARGET_DIR there (target/bench-baseline/target, so it neither fights nor invalidates the
# main build), copies the binary to target/bench-baseline/wschat-<commit> and removes the worktree.
# It runs as the server `wschat-base` on its own port, with the same command-line flags as `wschat`
# in every scenario, and takes its place in SERVERS (right after wschat) and so in the alternating
# order. aggregate.py then adds a table of the same-round ratios wschat ÷ wschat-base.
#
# Environment:
#   ROUNDS=3              rounds (each: every scenario against every server)
#   SECONDS_PER_RUN=10    measured seconds per echo and broadcast run (plus WARMUP=2 unmeasured seconds)
#   IDLE_CONNECTIONS=10000, HOLD_SECONDS=5   the idle-connection (RSS) scenario
#   BROADCAST_RECEIVERS=1000, BROADCAST_RATE=3000   the broadcast scenario (messages/s of the sender)
#   BROADCAST_DRAIN=10    most seconds the broadcast waits, after the sender stops, for every receiver
#                         to catch up (one still behind then counts as short: not all in order)
#   DEFLATE_RATE=1000     messages/s of the sender in broadcast-chat and broadcast-deflate: a rate the
#                         server sustains, so that both deliver the same messages/s
#   TEXT_CORPUS=FILE      chat lines (one message per line) for the chat-text scenarios (echo-chat,
#                         echo-deflate, broadcast-chat, broadcast-deflate) instead of wschat-bench's
#                         built-in bench/chat-lines.txt (110 lines, 7.5 KB: ws, which keeps its
#                         compression context, finds every line again within its 32 KiB window)
#   SCENARIOS="..."       a subset of the scenarios, by id (default: all; see `scenarios` below), e.g.
#                         SCENARIOS="hold hold-deflate echo-chat echo-deflate broadcast-chat broadcast-deflate"
#   QUICK=1               smoke test: ROUNDS=1, SECONDS_PER_RUN=3, IDLE_CONNECTIONS=2000, HOLD_SECONDS=2
#                         (explicit values of those variables still win)
#   BASELINE=<rev>        also run that revision's wschat as wschat-base (see above)
#   SERVERS="wschat fastwebsockets tokio-tungstenite ws"   a subset, for debugging; with BASELINE the
#                         default is "wschat wschat-base fastwebsockets tokio-tungstenite ws", and
#                         wschat-base may be listed only with BASELINE. Only the peers SERVERS names are built.
#   BASE_PORT=9400        servers listen on BASE_PORT..BASE_PORT+4 (wschat-base on BASE_PORT+4)
#   SKIP_BUILD=1          use the binaries and node_modules already built (with BASELINE: the copy
#                         target/bench-baseline/wschat-<commit> of an earlier run)
#
# Output: target/bench/<timestamp>/{raw.txt,table.md,meta.txt,bench.log,server-*.log}
set -euo pipefail

die() {
    echo "compare.sh: $*" >&2
    exit 1
}

if [[ ${QUICK:-0} == 1 ]]; then
    ROUNDS=${ROUNDS:-1}
    SECONDS_PER_RUN=${SECONDS_PER_RUN:-3}
    IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-2000}
    HOLD_SECONDS=${HOLD_SECONDS:-2}
fi
ROUNDS=${ROUNDS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
WARMUP=${WARMUP:-2}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-10000}
HOLD_SECONDS=${HOLD_SECONDS:-5}
BROADCAST_RECEIVERS=${BROADCAST_RECEIVERS:-1000}
BROADCAST_RATE=${BROADCAST_RATE:-3000}
BROADCAST_DRAIN=${BROADCAST_DRAIN:-10}
DEFLATE_RATE=${DEFLATE_RATE:-1000}
TEXT_CORPUS=${TEXT_CORPUS:-}
BASELINE=${BASELINE:-}
if [[ -n $BASELINE ]]; then
    SERVERS=${SERVERS:-"wschat wschat-base fastwebsockets tokio-tungstenite ws"}
else
    SERVERS=${SERVERS:-"wschat fastwebsockets tokio-tungstenite ws"}
fi
BASE_PORT=${BASE_PORT:-9400}

[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer, not '$ROUNDS'"
[[ $IDLE_CONNECTIONS =~ ^[1-9][0-9]*$ ]] || die "IDLE_CONNECTIONS must be a positive integer"
[[ $SECONDS_PER_RUN =~ ^[0-9]+([.][0-9]+)?$ ]] || die "SECONDS_PER_RUN must be a number of seconds"
[[ $HOLD_SECONDS =~ ^[0-9]+([.][0-9]+)?$ ]] || die "HOLD_SECONDS must be a number of seconds"
[[ $WARMUP =~ ^[0-9]+([.][0-9]+)?$ ]] || die "WARMUP must be a number of seconds"
[[ $BROADCAST_RECEIVERS =~ ^[1-9][0-9]*$ ]] || die "BROADCAST_RECEIVERS must be a positive integer"
[[ $BROADCAST_RATE =~ ^[0-9]+([.][0-9]+)?$ ]] || die "BROADCAST_RATE must be a number of messages per second"
[[ $BROADCAST_DRAIN =~ ^[0-9]+([.][0-9]+)?$ ]] || die "BROADCAST_DRAIN must be a number of seconds"
[[ $DEFLATE_RATE =~ ^[0-9]+([.][0-9]+)?$ ]] || die "DEFLATE_RATE must be a number of messages per second"
if [[ -n $TEXT_CORPUS ]]; then
    [[ -f $TEXT_CORPUS && -r $TEXT_CORPUS ]] || die "TEXT_CORPUS=$TEXT_CORPUS is not a readable file"
    TEXT_CORPUS=$(cd "$(dirname "$TEXT_CORPUS")" && pwd)/$(basename "$TEXT_CORPUS")
    [[ $TEXT_CORPUS != *[[:space:]]* ]] || die "TEXT_CORPUS may not contain spaces: $TEXT_CORPUS"
fi

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
# Build outputs go to the usual places, whatever the caller's CARGO_TARGET_DIR.
unset CARGO_TARGET_DIR RUST_LOG
cd "$root"

known_servers="wschat wschat-base fastwebsockets tokio-tungstenite ws"
read -r -a order <<<"$SERVERS"
((${#order[@]} > 0)) || die "SERVERS is empty"
for name in "${order[@]}"; do
    [[ " $known_servers " == *" $name "* ]] || die "unknown server '$name' (known: $known_servers)"
done
# True if SERVERS names server $1.
wanted() {
    local name
    for name in "${order[@]}"; do [[ $name == "$1" ]] && return 0; done
    return 1
}
if wanted wschat-base; then
    [[ -n $BASELINE ]] || die "SERVERS names wschat-base but BASELINE is not set (e.g. BASELINE=e4efc6e)"
elif [[ -n $BASELINE ]]; then
    die "BASELINE=$BASELINE is set but SERVERS ('$SERVERS') has no wschat-base"
fi

tools=(cargo python3 taskset ss timeout git)
wanted ws && tools+=(node npm)
for tool in "${tools[@]}"; do
    command -v "$tool" >/dev/null || die "needs '$tool' on PATH"
done
cpus=$(nproc)
((cpus >= 2)) || die "needs 2 CPUs (server on cpu0, load on cpu1); this machine has $cpus"

# Open files: every idle connection is one descriptor in the server and one in the load generator.
need_files=$((IDLE_CONNECTIONS + 1024))
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
files=$(ulimit -n)
if [[ $files != unlimited ]] && ((files < need_files)); then
    die "needs ulimit -n >= $need_files for $IDLE_CONNECTIONS idle connections, but can raise it only to $files (hard limit $(ulimit -Hn)); raise the hard limit or lower IDLE_CONNECTIONS"
fi

# --- Build -------------------------------------------------------------------------------------
baseline_dir=$root/target/bench-baseline
baseline_sha=
baseline_bin=
if [[ -n $BASELINE ]]; then
    baseline_sha=$(git -C "$root" rev-parse --verify --quiet "$BASELINE^{commit}") ||
        die "BASELINE=$BASELINE is not a commit of this repository"
    baseline_bin=$baseline_dir/wschat-$baseline_sha
fi

# Removes the worktree at $1 (and git's entry for it, also when only the entry is left, as after a
# `cargo clean`).
remove_worktree() {
    git -C "$root" worktree remove --force "$1" 2>/dev/null || rm -rf "$1"
    git -C "$root" worktree prune
}

# The baseline's worktree while it exists, for cleanup_build to remove should the build fail.
baseline_src=
cleanup_build() {
    [[ -z $baseline_src ]] || remove_worktree "$baseline_src"
    baseline_src=
}
trap cleanup_build EXIT

# Builds BASELINE's wschat in a temporary worktree and copies it to $baseline_bin. The worktree is
# made afresh (after removing what an interrupted run may have left) and removed afterwards; the
# dependencies stay built in the baseline's own target directory for the next run.
build_baseline() {
    echo "compare.sh: building wschat at BASELINE=$BASELINE ($baseline_sha, release)" >&2
    mkdir -p "$baseline_dir"
    baseline_src=$baseline_dir/src-$baseline_sha
    remove_worktree "$baseline_src"
    git -C "$root" worktree add --quiet --detach "$baseline_src" "$baseline_sha"
    (cd "$baseline_src" && CARGO_TARGET_DIR=$baseline_dir/target cargo build --release --locked --bin wschat)
    cp "$baseline_dir/target/release/wschat" "$baseline_bin.tmp"
    mv "$baseline_bin.tmp" "$baseline_bin"
    cleanup_build
}

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    echo "compare.sh: building wschat (release)" >&2
    cargo build --release --bin wschat --bin wschat-bench
    wanted wschat-base && build_baseline
    if wanted fastwebsockets || wanted tokio-tungstenite; then
        echo "compare.sh: building the Rust peers (release)" >&2
        (cd "$here/peers" && cargo build --release --locked)
    fi
    if wanted ws; then
        echo "compare.sh: installing the Node peer (npm ci)" >&2
        (cd "$here/peers/node" && npm ci --no-audit --no-fund --loglevel=error)
    fi
fi
wschat_bin=$root/target/release/wschat
bench_bin=$root/target/release/wschat-bench
peers_bin=$here/peers/target/release
needed=("$wschat_bin" "$bench_bin")
wanted wschat-base && needed+=("$baseline_bin")
wanted fastwebsockets && needed+=("$peers_bin/fastwebsockets-echo")
wanted tokio-tungstenite && needed+=("$peers_bin/tungstenite-echo")
for bin in "${needed[@]}"; do
    [[ -x $bin ]] || die "missing $bin (run without SKIP_BUILD=1)"
done
if wanted ws; then
    [[ -d $here/peers/node/node_modules/ws ]] || die "missing bench/peers/node/node_modules (run without SKIP_BUILD=1)"
fi

out=$root/target/bench/$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
raw=$out/raw.txt
: >"$raw"

# --- Servers -----------------------------------------------------------------------------------
server_port() {
    case $1 in
        wschat) echo $((BASE_PORT)) ;;
        fastwebsockets) echo $((BASE_PORT + 1)) ;;
        tokio-tungstenite) echo $((BASE_PORT + 2)) ;;
        ws) echo $((BASE_PORT + 3)) ;;
        wschat-base) echo $((BASE_PORT + 4)) ;;
        *) die "unknown server '$1' (known: $known_servers)" ;;
    esac
}

# True for the two builds of wschat (this tree's and BASELINE's).
is_wschat() {
    [[ $1 == wschat || $1 == wschat-base ]]
}

# True if server $1 takes part in scenario $2: the broadcasts need the chat, which only wschat has;
# the permessage-deflate scenarios and their uncompressed twins need the extension, which of the
# peers only ws has.
takes_part() {
    case $2 in
        broadcast*) is_wschat "$1" ;;
        *-deflate | echo-chat) is_wschat "$1" || [[ $1 == ws ]] ;;
        *) true ;;
    esac
}

# True for the scenarios run with permessage-deflate offered (ws then runs with it on).
is_deflate() {
    [[ $1 == *-deflate ]]
}

# The endpoint of server $1 for bench mode $2: wschat's chat is at /, its echo at /echo; the
# peers echo on any path.
server_path() {
    if is_wschat "$1" && [[ $2 != broadcast ]]; then echo /echo; else echo /; fi
}

# wschat's flags for scenario $2 on port $1: one command line for both builds, so that the baseline
# and this tree run under exactly the same configuration.
wschat_flags() {
    local port=$1 scenario=$2 flags connections=0
    case $scenario in
        broadcast*)
            # The chat at /, no echo. A single sender at thousands of messages/s is far beyond the
            # chat's per-client rate limit, and a receiver may fall megabytes behind at moments.
            flags="--listen 127.0.0.1:$port --rate-limit 100000 --rate-burst 100000 --max-queued-output 16777216"
            connections=$((BROADCAST_RECEIVERS + 1))
            ;;
        hold*)
            flags="--echo --listen 127.0.0.1:$port"
            connections=$IDLE_CONNECTIONS
            ;;
        *) flags="--echo --listen 127.0.0.1:$port" ;;
    esac
    # Its default --max-connections is 10000; above that the scenario needs more.
    if ((connections > 10000)); then flags+=" --max-connections $((connections + 100))"; fi
    echo "$flags"
}

# Every benchmark client is 127.0.0.1, which the per-address limits (--max-connections-per-ip since
# the operations change, --ip-rate-* a little before) would refuse: lifted in any build $1 that has
# them, so that a baseline from before them runs the same scenario.
per_address_flags() {
    local help flag flags=""
    help=$("$1" --help)
    for flag in --max-connections-per-ip --ip-rate-limit --ip-rate-burst; do
        if grep -q -- "$flag" <<<"$help"; then flags+=" $flag 1000000"; fi
    done
    echo "$flags"
}

# The command line of server $1 for scenario $2.
server_command() {
    local port
    port=$(server_port "$1")
    case $1 in
        # The store (since the durable-chat change) keeps nothing across runs here.
        wschat) echo "$wschat_bin --db :memory: $(wschat_flags "$port" "$2")$(per_address_flags "$wschat_bin")" ;;
        wschat-base) echo "$baseline_bin $(wschat_flags "$port" "$2")$(per_address_flags "$baseline_bin")" ;;
        fastwebsockets) echo "$peers_bin/fastwebsockets-echo $port" ;;
        tokio-tungstenite) echo "$peers_bin/tungstenite-echo $port" ;;
        ws)
            if is_deflate "$2"; then
                echo "node $here/peers/node/server.js $port deflate"
            else
                echo "node $here/peers/node/server.js $port"
            fi
            ;;
    esac
}

# True while process $1 runs (a zombie, exited but not yet reaped, does not count).
alive() {
    local state
    state=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z ]]
}

listening() {
    [[ -n $(ss -Hltn "sport = :$1") ]]
}

# Waits (bounded) until nothing listens on port $1.
wait_port_free() {
    local port=$1 tries=0
    while listening "$port"; do
        ((++tries <= 100)) || die "port $port still in use after 10 s"
        sleep 0.1
    done
}

server_pid=
# Starts server $1 for scenario $2 pinned to cpu0; sets server_pid once it listens.
start_server() {
    local name=$1 scenario=$2 port tries=0
    port=$(server_port "$name")
    wait_port_free "$port"
    # shellcheck disable=SC2046 # the command is split into words on purpose
    taskset -c 0 $(server_command "$name" "$scenario") >>"$out/server-$name.log" 2>&1 &
    server_pid=$!
    until listening "$port"; do
        alive "$server_pid" || die "$name exited at start (see $out/server-$name.log)"
        ((++tries <= 100)) || die "$name does not listen on $port after 10 s"
        sleep 0.1
    done
}

# Stops the server started last (SIGTERM, then SIGKILL after 10 s) and waits for its port.
stop_server() {
    local name=$1 tries=0
    [[ -n $server_pid ]] || return 0
    kill -TERM "$server_pid" 2>/dev/null || true
    while alive "$server_pid"; do
        if ((++tries > 100)); then
            echo "compare.sh: $name ignores SIGTERM; killing it" >&2
            kill -KILL "$server_pid" 2>/dev/null || true
        fi
        sleep 0.1
    done
    wait "$server_pid" 2>/dev/null || true
    server_pid=
    wait_port_free "$(server_port "$name")"
}

cleanup() {
    if [[ -n ${server_pid:-} ]]; then
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    cleanup_build
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Appends one JSON line to raw.txt: the bench report $4 (or, with $5, an error) tagged with the
# server $1, round $2 and scenario $3.
record() {
    python3 - "$@" >>"$raw" <<'EOF'
import json, sys
server, round_, scenario, report = sys.argv[1:5]
line = {"server": server, "round": int(round_), "scenario": scenario}
if len(sys.argv) > 5:
    line["error"] = sys.argv[5]
else:
    line.update(json.loads(report))
print(json.dumps(line))
EOF
}

# --- Scenarios ---------------------------------------------------------------------------------
# id and wschat-bench arguments (after the mode's --path). An id ending in -deflate offers
# permessage-deflate (`--deflate`); its uncompressed twin sends the same messages without it.
chat_text="--chat-text${TEXT_CORPUS:+ --text-corpus $TEXT_CORPUS}"
scenarios=(
    "echo-100c-16B-k1|echo -c 100 -k 1 -s 16"
    "echo-100c-1KiB-k1|echo -c 100 -k 1 -s 1024"
    "echo-1000c-16B-k1|echo -c 1000 -k 1 -s 16"
    "echo-100c-16B-k8|echo -c 100 -k 8 -s 16"
    "broadcast|broadcast -c $BROADCAST_RECEIVERS -r $BROADCAST_RATE --drain $BROADCAST_DRAIN"
    "hold|hold -c $IDLE_CONNECTIONS"
    "hold-deflate|hold -c $IDLE_CONNECTIONS --deflate"
    "echo-chat|echo -c 100 -k 1 -s 1024 $chat_text"
    "echo-deflate|echo -c 100 -k 1 -s 1024 $chat_text --deflate"
    "broadcast-chat|broadcast -c $BROADCAST_RECEIVERS -r $DEFLATE_RATE --drain $BROADCAST_DRAIN $chat_text"
    "broadcast-deflate|broadcast -c $BROADCAST_RECEIVERS -r $DEFLATE_RATE --drain $BROADCAST_DRAIN $chat_text --deflate"
)
known_scenarios=$(for spec in "${scenarios[@]}"; do echo -n "${spec%%|*} "; done)
if [[ -n ${SCENARIOS:-} ]]; then
    read -r -a chosen <<<"$SCENARIOS"
    for id in "${chosen[@]}"; do
        [[ " $known_scenarios" == *" $id "* ]] || die "unknown scenario '$id' (known: $known_scenarios)"
    done
    kept=()
    for spec in "${scenarios[@]}"; do
        [[ " ${chosen[*]} " == *" ${spec%%|*} "* ]] && kept+=("$spec")
    done
    scenarios=("${kept[@]}")
fi

# Seconds wschat-bench may need to open $1 connections: 250 at a time, each batch bounded by
# 30 s in wschat-bench.
open_seconds() {
    python3 -c "import math; print(math.ceil($1 / 250) * 30)"
}

# Runs scenario $2 against server $1 in round $3.
run_one() {
    local name=$1 spec=$2 round=$3 id mode args limit port path report status
    id=${spec%%|*}
    args=${spec#*|}
    mode=${args%% *}
    args=${args#* }
    port=$(server_port "$name")
    path=$(server_path "$name" "$mode")
    case $mode in
        hold)
            args="$args -t $HOLD_SECONDS"
            limit=$(python3 -c "print(int($HOLD_SECONDS + 60 + $(open_seconds "$IDLE_CONNECTIONS")))")
            ;;
        broadcast)
            args="$args -t $SECONDS_PER_RUN --warmup $WARMUP"
            # Also: 0.5 s of settling after the opening, and the drain.
            limit=$(python3 -c "print(int($SECONDS_PER_RUN + $WARMUP + $BROADCAST_DRAIN + 61 + $(open_seconds $((BROADCAST_RECEIVERS + 1)))))")
            ;;
        *)
            args="$args -t $SECONDS_PER_RUN --warmup $WARMUP"
            limit=$(python3 -c "print(int($SECONDS_PER_RUN + $WARMUP + 120))")
            ;;
    esac
    start_server "$name" "$id"
    echo "compare.sh: round $round/$ROUNDS  $id  $name" >&2
    echo "== round $round $id $name" >>"$out/bench.log"
    status=0
    # shellcheck disable=SC2086 # $args is split into words on purpose
    report=$(timeout --kill-after=5 "$limit" taskset -c 1 "$bench_bin" --json \
        --addr "127.0.0.1:$port" --server-pid "$server_pid" \
        $mode --path "$path" $args 2>>"$out/bench.log") || status=$?
    if ! alive "$server_pid"; then
        record "$name" "$round" "$id" "" "server exited during the run (bench exit $status)"
        wait "$server_pid" 2>/dev/null || true
        server_pid=
        return
    fi
    if ((status != 0)); then
        local why
        why=$(tail -n 1 "$out/bench.log")
        ((status == 124)) && why="timed out after ${limit}s; $why"
        record "$name" "$round" "$id" "" "wschat-bench exit $status: $why"
    else
        record "$name" "$round" "$id" "$report"
    fi
    stop_server "$name"
}

# --- Metadata ----------------------------------------------------------------------------------
peer_versions=$(python3 - "$here" <<'EOF'
import json, re, sys
here = sys.argv[1]
with open(f"{here}/peers/Cargo.lock") as f:
    lock = dict(re.findall(r'name = "([^"]+)"\nversion = "([^"]+)"', f.read()))
with open(f"{here}/peers/node/package-lock.json") as f:
    ws = json.load(f)["packages"]["node_modules/ws"]["version"]
print(f"fastwebsockets {lock['fastwebsockets']} (hyper {lock['hyper']}), "
      f"tokio-tungstenite {lock['tokio-tungstenite']} (tungstenite {lock['tungstenite']}), "
      f"tokio {lock['tokio']}, ws {ws}")
EOF
)
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "wschat: $(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)"
    if [[ -n $BASELINE ]]; then
        echo "wschat-base: $(git -C "$root" describe --always "$baseline_sha") (BASELINE=$BASELINE, commit $baseline_sha)"
    fi
    echo "peers: $peer_versions; node $(node --version 2>/dev/null || echo none); $(rustc --version)"
    echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -sr)"
    echo "settings: ROUNDS=$ROUNDS SECONDS_PER_RUN=$SECONDS_PER_RUN WARMUP=$WARMUP IDLE_CONNECTIONS=$IDLE_CONNECTIONS HOLD_SECONDS=$HOLD_SECONDS BROADCAST_RECEIVERS=$BROADCAST_RECEIVERS BROADCAST_RATE=$BROADCAST_RATE BROADCAST_DRAIN=$BROADCAST_DRAIN DEFLATE_RATE=$DEFLATE_RATE TEXT_CORPUS=${TEXT_CORPUS:-built-in}"
    echo "scenarios: $(for spec in "${scenarios[@]}"; do echo -n "${spec%%|*} "; done)"
    echo "servers: ${order[*]}"
    echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$out/meta.txt"

busy=$(pgrep -f 'libfuzzer|fuzz/target' || true)
[[ -z $busy ]] || echo "compare.sh: warning: fuzzers are running (pids $(echo $busy)); they steal CPU from the runs" >&2

# --- Rounds ------------------------------------------------------------------------------------
started=$(date +%s)
for ((round = 1; round <= ROUNDS; round++)); do
    if ((round % 2 == 1)); then
        this_round=("${order[@]}")
    else
        this_round=()
        for ((i = ${#order[@]} - 1; i >= 0; i--)); do this_round+=("${order[i]}"); done
    fi
    for spec in "${scenarios[@]}"; do
        for name in "${this_round[@]}"; do
            if takes_part "$name" "${spec%%|*}"; then run_one "$name" "$spec" "$round"; fi
        done
    done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg); runs took $(($(date +%s) - started)) s" >>"$out/meta.txt"

python3 "$here/aggregate.py" "$out" | tee "$out/table.md"
echo >&2
echo "compare.sh: raw figures in $raw, table in $out/table.md" >&2
