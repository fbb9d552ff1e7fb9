#!/usr/bin/env bash
# A private PostgreSQL cluster for tests and local trials, in a directory of its own.
#
#   scripts/postgres.sh start DIR   initdb (first time) and start on a free port of 127.0.0.1;
#                                   prints the superuser URL postgres://postgres:PASSWORD@127.0.0.1:PORT/postgres
#   scripts/postgres.sh stop DIR    stop it (fast shutdown); DIR is kept, `start DIR` starts it again
#   scripts/postgres.sh url DIR     print the URL of a cluster made by `start`
#
# The server listens on 127.0.0.1 only, and its socket is in DIR/socket. As root it runs as the
# `postgres` user (PostgreSQL refuses root), so DIR must be reachable by that user. With
# STIGMER_POSTGRES_THROWAWAY=1 (scripts/with-postgres.sh) the cluster does not fsync: fast, and
# lost on a crash. Installs Debian's postgresql package when no PostgreSQL is found.
set -euo pipefail

die() { echo "postgres.sh: $*" >&2; exit 1; }

[ $# -eq 2 ] || die "usage: $0 start|stop|url DIR"
cmd=$1
dir=$2

sudo_cmd() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

bindir() {
  local found
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$found" ] && command -v pg_ctl >/dev/null 2>&1; then
    found=$(dirname "$(command -v pg_ctl)")
  fi
  echo "$found"
}

install_postgres() {
  echo "postgres.sh: installing PostgreSQL (Debian package postgresql)" >&2
  sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
}

# Runs a PostgreSQL program as the cluster's owner: `postgres` when we are root.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

free_port() {
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
    return
  fi
  local port
  for _ in $(seq 1 100); do
    port=$((20000 + RANDOM % 40000))
    if ! ss -ltnH "sport = :$port" | grep -q .; then
      echo "$port"
      return
    fi
  done
  die "no free port found"
}

start() {
  local bin
  bin=$(bindir)
  if [ -z "$bin" ]; then
    install_postgres
    bin=$(bindir)
    [ -n "$bin" ] || die "PostgreSQL is still missing after installing the postgresql package"
  fi
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || die "no postgres user to run the server as (install the postgresql package)"
    chown postgres "$dir"
    runuser -u postgres -- test -w "$dir" ||
      die "$dir is not reachable by the postgres user: pick a directory under /tmp, for example"
  fi
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    local password port
    password=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
    port=$(free_port)
    mkdir -p "$dir/socket"
    printf '%s\n' "$password" >"$dir/password"
    chmod 600 "$dir/password"
    if [ "$(id -u)" = 0 ]; then chown postgres "$dir/socket" "$dir/password"; fi
    as_owner "$bin/initdb" -D "$dir/data" -U postgres -E UTF8 --locale=C \
      --auth-local=trust --auth-host=scram-sha-256 --pwfile="$dir/password" >"$dir/initdb.log" 2>&1 ||
      die "initdb failed: $(cat "$dir/initdb.log")"
    {
      echo "listen_addresses = '127.0.0.1'"
      echo "port = $port"
      echo "unix_socket_directories = '$dir/socket'"
      echo "max_connections = 300"
      if [ "${STIGMER_POSTGRES_THROWAWAY:-}" = 1 ]; then
        echo "fsync = off"
        echo "full_page_writes = off"
      fi
    } >>"$dir/data/postgresql.conf"
    printf 'postgres://postgres:%s@127.0.0.1:%s/postgres\n' "$password" "$port" >"$dir/url"
    chmod 600 "$dir/url"
  fi
  as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 30 start >/dev/null ||
    die "the server did not start: $(tail -n 20 "$dir/postgres.log" 2>/dev/null)"
  cat "$dir/url"
}

stop() {
  local bin
  bin=$(bindir)
  [ -n "$bin" ] || die "PostgreSQL is not installed"
  [ -f "$dir/data/PG_VERSION" ] || die "$dir holds no cluster"
  as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null
}

case $cmd in
  start) start ;;
  stop) stop ;;
  url) cat "$dir/url" ;;
  *) die "usage: $0 start|stop|url DIR" ;;
esac
