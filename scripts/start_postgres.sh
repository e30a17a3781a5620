#!/usr/bin/env bash
# Start a throwaway PostgreSQL server for the pipeline tests and print the variables
# that point the tests at it:
#
#   eval "$(bash scripts/start_postgres.sh)"      # starts it, exports PG* variables
#   bash scripts/start_postgres.sh stop "$TAP_STRIPE_CONNECT_TEST_PGDATA"
#
# The data directory lives under a new temporary directory; the server listens on
# 127.0.0.1 on a free port with trust authentication. As root (CI) it runs as the
# `postgres` system user, created if missing. Debian's PostgreSQL is installed with apt
# when no server binaries are found.
set -euo pipefail

log() { echo "start_postgres: $*" >&2; }

pg_bindir() {
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  if [ -z "$dir" ] && command -v pg_config >/dev/null 2>&1; then
    dir="$(pg_config --bindir)"
  fi
  echo "$dir"
}

as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# The file that marks a folder this script created: `stop` deletes no other folder.
MARKER=.created-by-start_postgres

if [ "${1:-}" = stop ]; then
  data="${2:?usage: start_postgres.sh stop DATADIR}"
  base="$(dirname "$data")"
  if [ "$(basename "$data")" != data ] || [ ! -f "$base/$MARKER" ]; then
    log "not stopping: $(printf %q "$data") is not a data folder this script created (no $MARKER beside it)"
    exit 1
  fi
  bindir="$(pg_bindir)"
  as_owner "$bindir/pg_ctl" -D "$data" -m fast -w stop >&2 || true
  rm -rf "$base"
  exit 0
fi

bindir="$(pg_bindir)"
if [ ! -x "$bindir/initdb" ]; then
  log "no PostgreSQL server found; installing Debian's postgresql"
  if [ "$(id -u)" != 0 ]; then
    log "need root to install postgresql (apt-get install postgresql)"
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
  bindir="$(pg_bindir)"
fi

if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
  useradd --system --no-create-home --shell /usr/sbin/nologin postgres
fi

base="$(mktemp -d "${TMPDIR:-/tmp}/pg-tests.XXXXXX")"
chmod 755 "$base"
touch "$base/$MARKER"
data="$base/data"
[ "$(id -u)" = 0 ] && chown postgres "$base"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
as_owner "$bindir/initdb" -D "$data" -U postgres -A trust -E UTF8 --no-locale >"$base/initdb.log" 2>&1 \
  || { cat "$base/initdb.log" >&2; exit 1; }
# Throwaway data: no fsync. Sockets in the base directory, not /var/run/postgresql.
as_owner "$bindir/pg_ctl" -D "$data" -l "$base/server.log" -w -t 60 \
  -o "-h 127.0.0.1 -p $port -k '$base' -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
  start >&2 || { cat "$base/server.log" >&2; exit 1; }
for _ in $(seq 100); do
  "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" && break
  sleep 0.1
done
"$bindir/pg_isready" -h 127.0.0.1 -p "$port" >&2
log "PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (data $(printf %q "$data"))"
# Shell-quoted: the output is meant for `eval`, and TMPDIR may hold spaces or quotes.
printf 'export PGHOST=127.0.0.1\n'
printf 'export PGPORT=%q\n' "$port"
printf 'export PGUSER=postgres\n'
printf 'export PGDATABASE=postgres\n'
printf 'export TAP_STRIPE_CONNECT_TEST_PGDATA=%q\n' "$data"
