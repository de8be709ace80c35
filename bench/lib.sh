# Shell functions shared by the bench scripts (compare.sh, durable.sh, history-attack.sh); sourced,
# not run. The caller sets `root` (the repository) before sourcing and uses `set -euo pipefail`.
#
# One server at a time: launch sets `server_pid`, terminate stops that process.

die() {
    echo "${0##*/}: $*" >&2
    exit 1
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

# Figure $2 (VmRSS, VmHWM, ...) of process $1's /proc status, in KiB; empty if the process is gone.
proc_kib() {
    awk -v name="$2:" '$1 == name { print $2 }' "/proc/$1/status" 2>/dev/null || true
}

server_pid=
# launch NAME PORT LOG COMMAND...: starts COMMAND pinned to cpu0, its output appended to LOG, and
# returns once it listens on PORT, with its process id in server_pid.
launch() {
    local name=$1 port=$2 log=$3 tries=0
    shift 3
    wait_port_free "$port"
    taskset -c 0 "$@" >>"$log" 2>&1 &
    server_pid=$!
    until listening "$port"; do
        alive "$server_pid" || die "$name exited at start (see $log)"
        ((++tries <= 100)) || die "$name does not listen on $port after 10 s"
        sleep 0.1
    done
}

# terminate NAME PORT: stops the server launched last (SIGTERM, then SIGKILL after 10 s) and waits
# for its port.
terminate() {
    local name=$1 port=$2 tries=0
    [[ -n $server_pid ]] || return 0
    kill -TERM "$server_pid" 2>/dev/null || true
    while alive "$server_pid"; do
        if ((++tries > 100)); then
            echo "${0##*/}: $name ignores SIGTERM; killing it" >&2
            kill -KILL "$server_pid" 2>/dev/null || true
        fi
        sleep 0.1
    done
    wait "$server_pid" 2>/dev/null || true
    server_pid=
    wait_port_free "$port"
}

# Kills the server launched last, if any: for an EXIT trap.
kill_server() {
    if [[ -n ${server_pid:-} ]]; then
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=
    fi
}

# Every benchmark client is 127.0.0.1, which the per-address limits (--max-connections-per-ip since
# the operations change, --ip-rate-* a little before) would refuse: lifted in any build $1 that has
# them, so that a baseline from before them runs the same scenario. Prints the flags (each preceded
# by a space) for a command line built as a string; `read -ra` makes an array of them.
per_address_flags() {
    local help flag flags=""
    help=$("$1" --help)
    for flag in --max-connections-per-ip --ip-rate-limit --ip-rate-burst; do
        if grep -q -- "$flag" <<<"$help"; then flags+=" $flag 1000000"; fi
    done
    echo "$flags"
}

# Raises the open-file limit for $1 descriptors (to 65536 where the hard limit allows, else to the
# hard limit), or stops, naming what needs them ($2).
raise_open_files() {
    local need=$1 files
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    files=$(ulimit -n)
    if [[ $files != unlimited ]] && ((files < need)); then
        die "needs ulimit -n >= $need for $2, but can raise it only to $files (hard limit $(ulimit -Hn)); raise the hard limit or ask for fewer"
    fi
}

# The load average (1, 5, 15 min).
load_average() {
    cut -d' ' -f1-3 /proc/loadavg
}

# Warns when a fuzzer is running: it steals CPU from the runs.
warn_if_fuzzing() {
    local busy
    busy=$(pgrep -f 'libfuzzer|fuzz/target' || true)
    [[ -z $busy ]] || echo "${0##*/}: warning: fuzzers are running (pids $(echo $busy)); they steal CPU from the runs" >&2
}

# --- Another revision's wschat -----------------------------------------------------------------
# Built in a temporary `git worktree` under target/bench-baseline/, with its own CARGO_TARGET_DIR
# there (target/bench-baseline/target, so it neither fights nor invalidates the main build); the
# binary is copied to target/bench-baseline/wschat-<commit> and the worktree removed.

# The full commit id of revision $2 (the value of setting $1, for the message), or stop.
rev_commit() {
    git -C "$root" rev-parse --verify --quiet "$2^{commit}" || die "$1=$2 is not a commit of this repository"
}

# Where the wschat of commit $1 is kept.
rev_binary() {
    echo "$root/target/bench-baseline/wschat-$1"
}

# Removes the worktree at $1 (and git's entry for it, also when only the entry is left, as after a
# `cargo clean`).
remove_worktree() {
    git -C "$root" worktree remove --force "$1" 2>/dev/null || rm -rf "$1"
    git -C "$root" worktree prune
}

# The revision's worktree while it exists, for cleanup_build to remove should the build fail.
rev_src=
cleanup_build() {
    [[ -z $rev_src ]] || remove_worktree "$rev_src"
    rev_src=
}

# Builds the wschat of commit $1 (release, --locked) into $(rev_binary $1). The worktree is made
# afresh (after removing what an interrupted run may have left) and removed afterwards; the
# dependencies stay built in the revision's own target directory for the next run.
build_rev() {
    local sha=$1 dir=$root/target/bench-baseline bin
    bin=$(rev_binary "$sha")
    echo "${0##*/}: building wschat at $sha (release)" >&2
    mkdir -p "$dir"
    rev_src=$dir/src-$sha
    remove_worktree "$rev_src"
    git -C "$root" worktree add --quiet --detach "$rev_src" "$sha"
    (cd "$rev_src" && CARGO_TARGET_DIR=$dir/target cargo build --release --locked --bin wschat)
    cp "$dir/target/release/wschat" "$bin.tmp"
    mv "$bin.tmp" "$bin"
    cleanup_build
}

# Removes database $1 and the files SQLite keeps beside it.
remove_db_files() {
    rm -f "$1" "$1-wal" "$1-shm" "$1-journal"
}
