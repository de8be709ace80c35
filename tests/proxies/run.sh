#!/usr/bin/env bash
# The chat page through real proxies that let no WebSocket through, in Debian's headless Chromium
# (proxies.test.mjs): the page falls back to Server-Sent Events or long-polling, says so in its
# status bar, and chats with a page on a direct WebSocket.
#
#   nginx         the one-line default reverse proxy, `location / { proxy_pass http://wschat; }`:
#                 HTTP/1.0 upstream, Upgrade dropped, responses buffered unless the upstream says
#                 `X-Accel-Buffering: no` (which wschat's event stream does)
#   nginx-buffer  the same with `proxy_ignore_headers X-Accel-Buffering`: the event stream is held
#                 back too, and only long-polling works
#   squid         Debian's default squid.conf as a forward proxy (Chromium's --proxy-server): CONNECT
#                 to ports other than 443 refused, which is how Chromium sends a WebSocket through
#                 an HTTP proxy
#
# On a fresh Debian machine it installs what it needs: nginx, squid, chromium, nodejs and npm (apt;
# the services are kept from starting on install), playwright-core (npm ci in tests/browser, whose
# setup this test shares); then builds the release binary. A missing program after that is a
# failure, never a skip. nginx and squid run in the foreground on loopback ports the kernel picks,
# with their own directories under /tmp (readable by the users they drop to, wherever the checkout
# is); squid drops to its `proxy` user, so its directory belongs to that user, and the script runs
# as root (it says so and stops otherwise). Every process it starts is stopped on exit. Output:
# target/proxies/ (logs, failure-*.png).
#
# Environment: WSCHAT_PROXIES_TIMEOUT  seconds before the test is killed (default 200).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
BROWSER_DIR="$ROOT/tests/browser"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
[[ "$TARGET" = /* ]] || TARGET="$ROOT/$TARGET"
OUT="$ROOT/target/proxies"
TIMEOUT="${WSCHAT_PROXIES_TIMEOUT:-200}"

NAME=proxies
# shellcheck source=../lib.sh
source "$ROOT/tests/lib.sh"
# find_program NAME: its path (nginx and squid live in /usr/sbin, which a non-root PATH may lack).
find_program() { PATH="$PATH:/usr/sbin:/sbin" command -v "$1" || true; }

# ------------------------------------------------------------- setup ----

# Squid as root drops to `proxy` (cache_effective_user); started by anyone else it runs as them.
[[ $EUID -eq 0 ]] || die "run as root: squid must start as root to run as its 'proxy' user"

missing=()
[[ -n "$(find_program nginx)" ]] || missing+=(nginx)
[[ -n "$(find_program squid)" ]] || missing+=(squid)
[[ -x /usr/bin/chromium ]] || missing+=(chromium)
command -v npm >/dev/null || missing+=(nodejs npm)
[[ ${#missing[@]} -eq 0 ]] || apt_install "${missing[@]}"
NGINX="$(find_program nginx)"
SQUID="$(find_program squid)"
[[ -n "$NGINX" ]] || die "nginx is still missing after installing Debian's package"
[[ -n "$SQUID" ]] || die "squid is still missing after installing Debian's package"
[[ -x /usr/bin/chromium ]] || die "chromium is still missing after installing Debian's package"
[[ -r /etc/squid/squid.conf ]] || die "Debian's default /etc/squid/squid.conf is missing"
id proxy >/dev/null 2>&1 || die "squid's user 'proxy' does not exist"
log "$("$NGINX" -v 2>&1); $("$SQUID" -v | head -n 1)"

log "npm ci (tests/browser)"
(cd "$BROWSER_DIR" && npm ci --no-audit --no-fund --loglevel=error)

log "cargo build --release --bin wschat"
(cd "$ROOT" && cargo build --release --bin wschat)
WSCHAT="$TARGET/release/wschat"

rm -rf "$OUT"
mkdir -p "$OUT"
# The proxies' files: nginx's workers (`nobody`) and squid (`proxy`) must reach them, which a
# checkout under /root would not let them.
SCRATCH="$(mktemp -d /tmp/wschat-proxies.XXXXXX)"
chmod 755 "$SCRATCH"

# --------------------------------------------------------- processes ----

# Pid files of everything started: the test restarts nginx, which then writes its new pid there.
PIDFILES=()
stop_all() {
    local file pid i
    for file in "${PIDFILES[@]}"; do
        pid="$(cat "$file" 2>/dev/null)" || continue
        kill -TERM "$pid" 2>/dev/null || continue
        for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    # The proxies' logs (and configs) are kept in target/proxies/NAME/.
    local dir
    for dir in "$SCRATCH"/*/; do
        [[ -d "$dir" ]] || continue
        mkdir -p "$OUT/$(basename "$dir")"
        cp "$dir"*.log "$dir"*.conf "$OUT/$(basename "$dir")/" 2>/dev/null || true
    done
    rm -rf "$SCRATCH"
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })'
}

# wait_port PID PORT WHAT LOG: waits up to 10 s for PORT to accept connections while PID lives.
wait_port() {
    local pid="$1" port="$2" what="$3" file="$4" i
    for i in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || { tail -n 20 "$file" >&2; die "$what exited at start"; }
        sleep 0.1
    done
    die "$what is not listening on $port after 10 s"
}

# wschat with --trace (the test reads which transport each request used) on a fresh store, with
# its default per-address limits (a handful of pages fit in them). The proxies are trusted to name
# the client in X-Forwarded-For: nginx (127.0.0.1), whose default proxy_pass sends none, and Squid,
# which does, and which connects from 127.0.0.2 (tcp_outgoing_address below) so that the log can
# tell the client (127.0.0.1) from the proxy: "127.0.0.1 via 127.0.0.2:port".
SQUID_OUTGOING=127.0.0.2
WSCHAT_PORT="$(free_port)"
WSCHAT_LOG="$OUT/wschat.log"
"$WSCHAT" --listen "127.0.0.1:$WSCHAT_PORT" --db "$OUT/chat.db" --trace \
    --trusted-proxy 127.0.0.1 --trusted-proxy "$SQUID_OUTGOING" >"$WSCHAT_LOG" 2>&1 </dev/null &
echo $! >"$OUT/wschat.pid"
PIDFILES+=("$OUT/wschat.pid")
wait_port $! "$WSCHAT_PORT" wschat "$WSCHAT_LOG"
log "wschat on 127.0.0.1:$WSCHAT_PORT"

# start_nginx NAME PORT EXTRA: nginx in the foreground with a prefix of its own and one server
# block, `location / { proxy_pass http://127.0.0.1:WSCHAT_PORT; EXTRA }`.
start_nginx() {
    local name="$1" port="$2" extra="$3" prefix="$SCRATCH/$1"
    nginx_conf "$prefix" "    server {
        listen 127.0.0.1:$port;
        location / { proxy_pass http://127.0.0.1:$WSCHAT_PORT; $extra}
    }"
    "$NGINX" -t -q -p "$prefix" -c "$prefix/nginx.conf" -e "$prefix/error.log" ||
        { cat "$prefix/error.log" >&2; die "nginx -t refused the config of $name"; }
    "$NGINX" -p "$prefix" -c "$prefix/nginx.conf" -e "$prefix/error.log" >>"$prefix/stdout.log" 2>&1 </dev/null &
    PIDFILES+=("$prefix/nginx.pid")
    wait_port $! "$port" "nginx ($name)" "$prefix/error.log"
    log "nginx ($name) on 127.0.0.1:$port"
}
NGINX_PORT="$(free_port)"
start_nginx nginx "$NGINX_PORT" ""
NGINX_BUFFER_PORT="$(free_port)"
start_nginx nginx-buffer "$NGINX_BUFFER_PORT" "proxy_ignore_headers X-Accel-Buffering; "

# Squid: Debian's squid.conf as shipped (its ACLs: CONNECT only to 443, requests from localhost
# only), with the port, file locations, outgoing address and a short shutdown adapted to a test,
# and one rule added. It starts as root and drops to `proxy`, which must be able to write its
# directory.
SQUID_PORT="$(free_port)"
SQUID_DIR="$SCRATCH/squid"
mkdir -p "$SQUID_DIR"
# One rule comes first: only wschat's host may be asked for (by name, so Squid looks nothing up),
# so that Chromium's own background requests end at Squid instead of going on to the network.
sed -e "s|^http_port 3128$|http_port 127.0.0.1:$SQUID_PORT|" \
    -e "s|^coredump_dir .*|coredump_dir $SQUID_DIR|" \
    -e "0,/^http_access /s|^http_access |acl wschat_test dstdomain 127.0.0.1\nhttp_access deny !wschat_test\nhttp_access |" \
    /etc/squid/squid.conf >"$SQUID_DIR/squid.conf"
grep -q "^http_port 127.0.0.1:$SQUID_PORT$" "$SQUID_DIR/squid.conf" || die "no 'http_port 3128' in /etc/squid/squid.conf"
grep -q '^http_access deny CONNECT !SSL_ports' "$SQUID_DIR/squid.conf" || die "squid.conf does not refuse CONNECT to other ports"
grep -q '^http_access deny !wschat_test' "$SQUID_DIR/squid.conf" || die "sed did not find an http_access rule in squid.conf"
cat >>"$SQUID_DIR/squid.conf" <<CONF
# wschat's proxy test: files in a directory of its own, and no 30 s wait for clients on shutdown.
pid_filename $SQUID_DIR/squid.pid
access_log stdio:$SQUID_DIR/access.log
cache_log $SQUID_DIR/cache.log
netdb_filename none
cache_effective_user proxy
tcp_outgoing_address $SQUID_OUTGOING
shutdown_lifetime 1 seconds
CONF
chown -R proxy:proxy "$SQUID_DIR"
"$SQUID" -k parse -f "$SQUID_DIR/squid.conf" >"$OUT/squid-parse.log" 2>&1 ||
    { cat "$OUT/squid-parse.log" >&2; die "squid refused its config"; }
"$SQUID" -N -f "$SQUID_DIR/squid.conf" >"$OUT/squid.log" 2>&1 </dev/null &
echo $! >"$OUT/squid.pid"
PIDFILES+=("$OUT/squid.pid")
wait_port $! "$SQUID_PORT" squid "$SQUID_DIR/cache.log"
# (From /proc: a minimal Debian has no `ps`. The effective uid is the third field of Uid:.)
SQUID_UID="$(awk '/^Uid:/ { print $3 }' "/proc/$(cat "$OUT/squid.pid")/status")"
SQUID_USER="$(getent passwd "$SQUID_UID" | cut -d: -f1)"
[[ "$SQUID_USER" == proxy ]] || die "squid runs as '$SQUID_USER', not as its 'proxy' user"
log "squid on 127.0.0.1:$SQUID_PORT (as $SQUID_USER)"

# ------------------------------------------------------------- the test ----

status=0
(cd "$HERE" && WSCHAT_ADDR="127.0.0.1:$WSCHAT_PORT" WSCHAT_LOG="$WSCHAT_LOG" WSCHAT_OUT="$OUT" \
    NGINX_BIN="$NGINX" NGINX_PREFIX="$SCRATCH/nginx" NGINX_PORT="$NGINX_PORT" NGINX_BUFFER_PORT="$NGINX_BUFFER_PORT" \
    SQUID_PORT="$SQUID_PORT" SQUID_ACCESS_LOG="$SQUID_DIR/access.log" SQUID_OUTGOING="$SQUID_OUTGOING" \
    timeout "$TIMEOUT" node --test --test-reporter=spec proxies.test.mjs) || status=$?
if [[ $status -ne 0 ]]; then
    [[ $status -eq 124 ]] && log "timed out after ${TIMEOUT}s"
    log "last lines of $WSCHAT_LOG:"
    tail -n 20 "$WSCHAT_LOG" >&2 || true
    exit "$status"
fi
