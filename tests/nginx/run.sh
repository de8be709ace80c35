#!/usr/bin/env bash
# wschat behind nginx, configured by contrib/nginx/wschat.conf, and the systemd unit's syntax.
#
#   unit      systemd-analyze verify contrib/systemd/wschat.service says nothing (when the machine
#             has systemd-analyze; optional)
#   timeouts  the config's proxy_read_timeout is above wschat's default --ping-interval
#   page      GET / through nginx is 200 with the chat page; /metrics is not served to the public
#   chat      two WebSocket clients through nginx see each other's message; wschat received
#             X-Forwarded-For from nginx, never the clients' forged one, and counts connections per
#             the client nginx names (--trusted-proxy 127.0.0.1, one slot: the second gets 429)
#   idle      the same config scaled down (proxy_read_timeout 5 s, wschat pinging every 2 s): a
#             client silent for 8 s is still connected; with wschat's pings off, nginx cuts it
#             (the control: the test can fail)
#
# The config is used as shipped, adapted by sed to the test's ports: nginx runs in the foreground
# (`daemon off`) with a prefix and an http block of its own under target/nginx/, on 127.0.0.1 ports
# the kernel picks. On a fresh Debian machine it installs what it needs: nginx, python3-venv (apt),
# the pinned websockets into a venv under target/nginx/venv; then builds the release binary. A
# missing program after that is a failure, never a skip. Every process it starts is stopped on exit.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
[[ "$TARGET" = /* ]] || TARGET="$ROOT/$TARGET"
OUT="$ROOT/target/nginx"
VENV="$OUT/venv"
CONF="$ROOT/contrib/nginx/wschat.conf"
UNIT="$ROOT/contrib/systemd/wschat.service"
# The scaled-down idle case: nginx's timeout, wschat's ping interval, the client's silence.
IDLE_READ_TIMEOUT=5
IDLE_PING=2
IDLE_SILENCE=8

NAME=nginx
# shellcheck source=../lib.sh
source "$ROOT/tests/lib.sh"
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
fmt_ms() { printf '%d.%01ds' $(( $1 / 1000 )) $(( ($1 % 1000) / 100 )); }

# ------------------------------------------------------------- setup ----

T0="$(now_ms)"
mkdir -p "$OUT"
for program in curl sed grep sha256sum timeout; do
    command -v "$program" >/dev/null || apt_install curl sed grep coreutils
done
command -v cargo >/dev/null || die "cargo not found"
# nginx lives in /usr/sbin, which a non-root PATH may lack.
NGINX="$(PATH="$PATH:/usr/sbin" command -v nginx || true)"
if [[ -z "$NGINX" ]]; then
    apt_install nginx
    NGINX="$(PATH="$PATH:/usr/sbin" command -v nginx || true)"
fi
[[ -n "$NGINX" ]] || die "nginx is still missing after installing Debian's package"
log "$("$NGINX" -v 2>&1)"
python_venv "$VENV" "$HERE/requirements.txt"
PY="$VENV/bin/python"

log "cargo build --release --bin wschat"
(cd "$ROOT" && cargo build --release --bin wschat)
WSCHAT="$TARGET/release/wschat"
log "setup took $(fmt_ms $(( $(now_ms) - T0 )))"

# --------------------------------------------------------- processes ----

PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# await_line PID LOG REGEX WHAT: prints REGEX's group from the first line of LOG that matches,
# waiting at most 10 s, failing early if PID exits.
await_line() {
    local pid="$1" file="$2" regex="$3" what="$4" i value
    for i in $(seq 100); do
        value="$(sed -nE "s|$regex|\\1|p" "$file" 2>/dev/null | head -n 1)"
        [[ -n "$value" ]] && { echo "$value"; return 0; }
        kill -0 "$pid" 2>/dev/null || { tail -n 20 "$file" >&2; die "$what exited"; }
        sleep 0.1
    done
    die "$what: nothing matching /$regex/ in $file after 10 s"
}

# start_wschat NAME ARGS...: wschat --trace on a free port; sets WSCHAT_PORT.
start_wschat() {
    local name="$1"
    shift
    "$WSCHAT" --listen 127.0.0.1:0 --db :memory: --trace "$@" >"$OUT/$name.log" 2>&1 </dev/null &
    PIDS+=($!)
    WSCHAT_PORT="$(await_line $! "$OUT/$name.log" '.*listening on http://127\.0\.0\.1:([0-9]+).*' "wschat ($name)")"
}

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_nginx NAME UPSTREAM_PORT [READ_TIMEOUT]: nginx in the foreground with the shipped server
# block, pointed at wschat on UPSTREAM_PORT and listening on a free port; sets NGINX_PORT.
start_nginx() {
    local name="$1" upstream="$2" read_timeout="${3:-}" prefix="$OUT/$1" i
    rm -rf "$prefix"
    mkdir -p "$prefix"
    NGINX_PORT="$(free_port)"
    local sed_args=(
        -e "s|server 127\.0\.0\.1:8080;|server 127.0.0.1:$upstream;|"
        -e "s|^\([[:space:]]*\)listen 80;|\1listen 127.0.0.1:$NGINX_PORT;|"
        -e "/listen \[::\]:80;/d"
    )
    [[ -z "$read_timeout" ]] || sed_args+=(-e "s|proxy_read_timeout [0-9]*s;|proxy_read_timeout ${read_timeout}s;|")
    sed "${sed_args[@]}" "$CONF" >"$prefix/wschat.conf"
    grep -q "server 127.0.0.1:$upstream;" "$prefix/wschat.conf" || die "sed did not find the upstream in $CONF"
    grep -q "listen 127.0.0.1:$NGINX_PORT;" "$prefix/wschat.conf" || die "sed did not find 'listen 80;' in $CONF"
    if [[ -n "$read_timeout" ]]; then
        grep -q "proxy_read_timeout ${read_timeout}s;" "$prefix/wschat.conf" || die "sed did not find proxy_read_timeout"
    fi
    nginx_conf "$prefix" "    include $prefix/wschat.conf;"
    "$NGINX" -t -q -p "$prefix" -c "$prefix/nginx.conf" -e "$prefix/error.log" ||
        { cat "$prefix/error.log" >&2; die "nginx -t refused the config"; }
    "$NGINX" -p "$prefix" -c "$prefix/nginx.conf" -e "$prefix/error.log" >"$prefix/stdout.log" 2>&1 </dev/null &
    PIDS+=($!)
    local pid=$!
    for i in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$NGINX_PORT") 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || { cat "$prefix/error.log" >&2; die "nginx ($name) exited"; }
        sleep 0.1
    done
    die "nginx ($name) is not listening on $NGINX_PORT after 10 s"
}

# ------------------------------------------------------------- cases ----

passed=0
failed=0
failures=()
check() {
    local name="$1" t0 status=0
    shift
    t0="$(now_ms)"
    echo
    log "=== $name"
    ( set -euo pipefail; "$@" ) || status=$?
    if [[ $status -eq 0 ]]; then
        passed=$(( passed + 1 ))
        log "ok: $name ($(fmt_ms $(( $(now_ms) - t0 ))))"
    else
        failed=$(( failed + 1 ))
        failures+=("$name")
        log "FAILED: $name; logs in $OUT"
    fi
}

case_unit() {
    local verify
    verify="$(PATH="$PATH:/usr/bin:/bin" command -v systemd-analyze || true)"
    if [[ -z "$verify" ]]; then
        log "systemd-analyze not on this machine: the unit is not verified (optional)"
        return 0
    fi
    # The unit as shipped, with ExecStart pointed at the binary just built: verify checks it exists.
    local unit="$OUT/wschat.service" report
    sed "s|/usr/local/bin/wschat|$WSCHAT|" "$UNIT" >"$unit"
    # Unknown or misspelt keys are only warnings, with exit status 0: any output is a failure.
    report="$("$verify" verify "$unit" 2>&1)" || { echo "$report"; die "systemd-analyze verify failed"; }
    [[ -z "$report" ]] || { echo "$report"; die "systemd-analyze verify had something to say"; }
    log "systemd-analyze verify: clean"
}

case_timeouts() {
    local read_timeout ping
    read_timeout="$(sed -nE 's/^[[:space:]]*proxy_read_timeout ([0-9]+)s;.*/\1/p' "$CONF")"
    ping="$("$WSCHAT" --help | sed -nE '/--ping-interval/,/default/ s/.*\[default: ([0-9]+)\].*/\1/p' | head -n 1)"
    [[ -n "$read_timeout" && -n "$ping" ]] || die "could not read proxy_read_timeout ($read_timeout) or --ping-interval ($ping)"
    log "proxy_read_timeout ${read_timeout}s, wschat pings every ${ping}s"
    # Twice the interval: one lost ping must not be enough for nginx to cut the connection.
    (( read_timeout > 2 * ping )) || die "proxy_read_timeout ${read_timeout}s is not above twice the ping interval"
}

case_page() {
    local body="$OUT/page.html" status
    status="$(curl -sS -o "$body" -w '%{http_code}' --max-time 10 "http://127.0.0.1:$MAIN_PORT/")"
    [[ "$status" == 200 ]] || die "GET / through nginx: $status"
    grep -qi '<html' "$body" || die "GET / through nginx did not return the chat page"
    log "GET / through nginx: 200, $(wc -c <"$body") bytes of page"
    status="$(curl -sS -o /dev/null -w '%{http_code}' --max-time 10 "http://127.0.0.1:$MAIN_PORT/metrics")"
    [[ "$status" == 404 ]] || die "GET /metrics through nginx: $status, not 404"
}

case_chat() {
    timeout 30 "$PY" "$HERE/client.py" chat "ws://127.0.0.1:$MAIN_PORT/"
    # nginx passed the client's address on (the wire trace shows wschat's request heads).
    grep -qiE '^#[0-9]+ <- X-Forwarded-For: 127\.0\.0\.1$' "$OUT/wschat-main.log" ||
        die "wschat's trace shows no X-Forwarded-For from nginx"
    # The clients' own forged X-Forwarded-For never reached wschat: nginx replaced it.
    ! grep -q '203\.0\.113\.66' "$OUT/wschat-main.log" || die "a client's forged X-Forwarded-For reached wschat"
    # wschat counted the connections under the client nginx named (--trusted-proxy 127.0.0.1):
    # with one slot per address, a second client is refused with 429 through nginx.
    local status
    status="$(timeout 30 "$PY" "$HERE/client.py" status "ws://127.0.0.1:$LIMITED_PORT/")"
    [[ "$status" == "101 429" ]] || die "two clients through nginx with one slot per address: $status, not '101 429'"
    grep -qiE '^#[0-9]+ <- Upgrade: websocket$' "$OUT/wschat-main.log" || die "wschat's trace shows no upgrade request"
    log "wschat received X-Forwarded-For and the upgrade through nginx"
}

case_idle() {
    local open_status=0 cut_status=0
    timeout 30 "$PY" "$HERE/client.py" idle "ws://127.0.0.1:$IDLE_PORT/" "$IDLE_SILENCE" open >"$OUT/idle-open.log" 2>&1 &
    local open_pid=$!
    timeout 30 "$PY" "$HERE/client.py" idle "ws://127.0.0.1:$SILENT_PORT/" "$IDLE_SILENCE" cut >"$OUT/idle-cut.log" 2>&1 &
    local cut_pid=$!
    wait "$open_pid" || open_status=$?
    wait "$cut_pid" || cut_status=$?
    cat "$OUT/idle-open.log" "$OUT/idle-cut.log"
    [[ $open_status -eq 0 ]] || die "with pings every ${IDLE_PING}s, nginx cut a silent client"
    [[ $cut_status -eq 0 ]] || die "control: without pings, nginx did not cut a silent client"
}

# --------------------------------------------------------------- run ----

check unit case_unit
check timeouts case_timeouts

# The shipped config in front of wschat with its defaults; and the scaled-down pair for the idle
# case, one pinging faster than nginx's timeout, one not pinging at all.
start_wschat wschat-main --trusted-proxy 127.0.0.1
start_nginx main "$WSCHAT_PORT"
MAIN_PORT="$NGINX_PORT"
start_wschat wschat-limited --trusted-proxy 127.0.0.1 --max-connections-per-ip 1
start_nginx limited "$WSCHAT_PORT"
LIMITED_PORT="$NGINX_PORT"
start_wschat wschat-idle --ping-interval "$IDLE_PING" --idle-timeout 0
start_nginx idle "$WSCHAT_PORT" "$IDLE_READ_TIMEOUT"
IDLE_PORT="$NGINX_PORT"
start_wschat wschat-silent --ping-interval 0 --idle-timeout 0
start_nginx silent "$WSCHAT_PORT" "$IDLE_READ_TIMEOUT"
SILENT_PORT="$NGINX_PORT"
log "nginx on $MAIN_PORT (shipped), $IDLE_PORT and $SILENT_PORT (proxy_read_timeout ${IDLE_READ_TIMEOUT}s)"

check page case_page
check chat case_chat
check idle case_idle

echo
[[ $failed -eq 0 ]] || log "failed: ${failures[*]}"
log "total $(fmt_ms $(( $(now_ms) - T0 )))"
echo "nginx: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
