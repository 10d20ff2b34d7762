#!/usr/bin/env bash
# A private, throwaway PostgreSQL server for tests (Debian's postgresql).
#   scripts/postgres-server.sh start DIR   # prints postgres://octavia@127.0.0.1:PORT/octavia
#   scripts/postgres-server.sh stop DIR    # safe to call twice
#   scripts/postgres-server.sh url DIR     # the URL of a running server
# start initialises DIR/data once (initdb, trust auth, fsync off), starts the
# server on 127.0.0.1 at a free port and on a unix socket in DIR, and creates
# the superuser role `octavia` (so it may CREATE DATABASE) and its database
# `octavia`. Started again on an existing DIR it reuses the data (and prints
# the URL at once when the server is already up). As root the server runs as
# the `postgres` OS user, which then owns DIR: DIR's parents must let it in
# (/tmp does). Logs go to DIR/postgres.log and stderr; only the URL to stdout.
set -euo pipefail

usage() {
    echo "usage: $0 start|stop|url DIR" >&2
    exit 2
}
[ $# -eq 2 ] || usage
cmd=$1
dir=$2
case "$dir" in /*) ;; *) dir="$PWD/$dir" ;; esac
data="$dir/data"

bindir() {
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

ensure_installed() {
    [ -n "$(bindir)" ] && [ -x "$(bindir)/initdb" ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "PostgreSQL is not installed; run as root to install it" >&2
        exit 1
    fi
    echo "postgres-server: installing postgresql" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends postgresql >&2 || {
        apt-get update -qq >&2
        apt-get install -y --no-install-recommends postgresql >&2
    }
    [ -x "$(bindir)/initdb" ] || { echo "initdb not found after install" >&2; exit 1; }
}

# Runs a command as the server's OS user, from DIR (postgres may not be
# allowed into the caller's working directory).
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        (cd "$dir" && runuser -u postgres -- "$@")
    else
        (cd "$dir" && "$@")
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Up and answering: a postmaster killed with -9 may linger as a zombie (no
# init to reap it), which pg_ctl status alone takes for a live server.
running() {
    [ -f "$data/postmaster.pid" ] && [ -f "$dir/port" ] \
        && as_pg "$(bindir)/pg_ctl" -D "$data" status >/dev/null 2>&1 \
        && as_pg "$(bindir)/pg_isready" -q -h "$dir" -p "$(cat "$dir/port")" -t 5
}

url() {
    echo "postgres://octavia@127.0.0.1:$(cat "$dir/port")/octavia"
}

psql_admin() { # SQL...
    as_pg "$(bindir)/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$(cat "$dir/port")" \
        -U postgres -d postgres "$@"
}

start() {
    ensure_installed
    local bin
    bin=$(bindir)
    (umask 022 && mkdir -p "$dir")
    if [ "$(id -u)" -eq 0 ]; then
        id postgres >/dev/null 2>&1 || { echo "no postgres OS user" >&2; exit 1; }
        chown postgres: "$dir"
        [ -d "$data" ] && chown -R postgres: "$data"
        if ! runuser -u postgres -- test -w "$dir"; then
            echo "the postgres user cannot enter $dir (check its parents' modes)" >&2
            exit 1
        fi
    fi
    if running; then
        url
        return
    fi
    if [ ! -f "$data/PG_VERSION" ]; then
        rm -rf "$data"
        echo "postgres-server: initdb $data" >&2
        as_pg "$bin/initdb" -D "$data" -U postgres -A trust -E UTF8 --locale=C \
            --no-sync >&2
        cat >>"$data/postgresql.conf" <<EOF
# Added by scripts/postgres-server.sh: a throwaway test server.
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
EOF
    fi
    rm -f "$data/postmaster.pid"
    local port tries=0
    while :; do
        port=$(free_port)
        if as_pg "$bin/pg_ctl" -D "$data" -l "$dir/postgres.log" -w -t 60 \
            -o "-p $port" start >&2; then
            break
        fi
        tries=$((tries + 1))
        if [ $tries -ge 5 ]; then
            echo "postgres-server: could not start; see $dir/postgres.log" >&2
            tail -n 20 "$dir/postgres.log" >&2 || true
            exit 1
        fi
    done
    echo "$port" >"$dir/port"
    psql_admin <<'EOF'
SELECT 'CREATE ROLE octavia LOGIN SUPERUSER CREATEDB'
    WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'octavia')\gexec
SELECT 'CREATE DATABASE octavia OWNER octavia'
    WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'octavia')\gexec
EOF
    url
}

stop() {
    [ -f "$data/postmaster.pid" ] || return 0
    local bin
    bin=$(bindir)
    [ -n "$bin" ] || return 0
    if ! as_pg "$bin/pg_ctl" -D "$data" -m fast -w -t 60 stop >&2 && running; then
        echo "postgres-server: the server in $data did not stop" >&2
        exit 1
    fi
    return 0
}

case "$cmd" in
    start) start ;;
    stop) stop ;;
    url)
        running || { echo "no server running in $dir" >&2; exit 1; }
        url
        ;;
    *) usage ;;
esac
