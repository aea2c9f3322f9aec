#!/usr/bin/env bash
# Starts (or reuses) a throwaway PostgreSQL 15 cluster bound to 127.0.0.1 for tests and
# benchmarks, and prints its URL. Usage: scripts/postgres.sh [start|stop|url]
# Environment: PGTEST_PORT (default 55432), PGTEST_DIR (default /tmp/kassa-pg-$PORT).
set -euo pipefail
PORT=${PGTEST_PORT:-55432}
DIR=${PGTEST_DIR:-/tmp/kassa-pg-$PORT}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
URL="postgres://postgres@127.0.0.1:$PORT/postgres"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

case "${1:-start}" in
  url) echo "$URL" ;;
  stop)
    if [ -f "$DIR/data/postmaster.pid" ]; then as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null; fi
    ;;
  start)
    if [ ! -x "$PGBIN/initdb" ]; then
      echo "PostgreSQL 15 is not installed ($PGBIN/initdb missing): apt-get install postgresql-15" >&2
      exit 1
    fi
    if as_pg "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" 2>/dev/null; then echo "$URL"; exit 0; fi
    if [ ! -f "$DIR/data/PG_VERSION" ]; then
      mkdir -p "$DIR"
      [ "$(id -u)" = 0 ] && chown postgres: "$DIR"
      as_pg "$PGBIN/initdb" -D "$DIR/data" -U postgres -A trust -E UTF8 --no-sync >"$DIR/initdb.log" 2>&1 \
        || { cat "$DIR/initdb.log" >&2; exit 1; }
    fi
    # fsync and synchronous_commit stay on: benchmarks measure durable commits.
    as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/log" -w start \
      -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR -c max_connections=300 -c shared_buffers=256MB" >/dev/null \
      || { tail -20 "$DIR/log" >&2; exit 1; }
    echo "$URL"
    ;;
  *) echo "usage: $0 [start|stop|url]" >&2; exit 2 ;;
esac
