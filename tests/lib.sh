# Shared by the test scripts that need programs from outside Rust (nginx, Squid, Python packages):
# logging, installing Debian packages, and pinned Python virtualenvs. Sourced, not run:
#
#   NAME=nginx; source "$ROOT/tests/lib.sh"
#
# NAME prefixes every line the script logs. Every install is for a fresh Debian machine: the
# scripts install what they need themselves, and a program still missing afterwards is a failure,
# never a skip.

log() { echo "$NAME: $*"; }
die() { echo "$NAME: ERROR: $*" >&2; exit 1; }

as_root() { if [[ $EUID -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

APT_UPDATED=""
# apt_install PACKAGE...: Debian's packages, the index updated once per script. Packages such as
# nginx and squid start the system's own service (ports 80, 3128) when installed unless
# policy-rc.d forbids it: it is forbidden for the install if nothing else does (container images
# usually have one already).
apt_install() {
    log "installing $* (apt)"
    [[ -n "$APT_UPDATED" ]] || { as_root apt-get update; APT_UPDATED=1; }
    local policy=/usr/sbin/policy-rc.d made_policy=""
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
        as_root chmod 755 "$policy"
        made_policy=1
    fi
    local status=0
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" || status=$?
    [[ -z "$made_policy" ]] || as_root rm -f "$policy"
    return "$status"
}

# python_venv VENV REQUIREMENTS: a virtualenv at VENV with exactly the pinned REQUIREMENTS (no
# dependencies pulled beyond them), made again only when the pins or the interpreter change.
python_venv() {
    local venv="$1" requirements="$2" stamp
    command -v python3 >/dev/null || apt_install python3 python3-venv
    stamp="$( (cat "$requirements"; python3 --version) | sha256sum | cut -d' ' -f1)"
    if [[ -x "$venv/bin/python" && "$(cat "$venv/.stamp" 2>/dev/null)" == "$stamp" ]]; then
        log "reusing $venv"
        return 0
    fi
    log "creating $venv"
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv" 2>/dev/null || { rm -rf "$venv"; apt_install python3-venv; python3 -m venv "$venv"; }
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$requirements"
    echo "$stamp" >"$venv/.stamp"
}

# nginx_conf PREFIX HTTP_BODY: writes PREFIX/nginx.conf for an nginx run in the foreground (`-p
# PREFIX`) with every file it writes (pid, logs, temp paths) under PREFIX, and HTTP_BODY inside its
# http block. PREFIX/tmp is made writable by nginx's workers (`nobody`, when run as root).
nginx_conf() {
    local prefix="$1" body="$2"
    mkdir -p "$prefix/tmp"
    chmod 755 "$prefix"
    chmod 1777 "$prefix/tmp"
    cat >"$prefix/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $prefix/nginx.pid;
error_log $prefix/error.log info;
events { worker_connections 64; }
http {
    access_log $prefix/access.log;
    client_body_temp_path $prefix/tmp/body;
    proxy_temp_path $prefix/tmp/proxy;
    fastcgi_temp_path $prefix/tmp/fastcgi;
    uwsgi_temp_path $prefix/tmp/uwsgi;
    scgi_temp_path $prefix/tmp/scgi;
$body
}
CONF
}
