#!/usr/bin/env bash
# Starts or stops the private PostgreSQL cluster and Redis under var/.
# Usage: services.sh start|stop|status|running. Services pointed elsewhere by
# DATABASE_URL / CELERY_BROKER_URL are left alone.
source "$(dirname "$0")/common.sh"

# Runs a PostgreSQL binary as an unprivileged user: initdb and postgres refuse root.
pg_run() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u "$PG_OS_USER" -- "$@"
  else
    "$@"
  fi
}

# The cluster's owner must be able to reach var/pg through every parent folder.
prepare_pg_owner() {
  [ "$(id -u)" = 0 ] || return 0
  id -u "$PG_OS_USER" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_OS_USER"
  local dir="$VAR"
  while [ "$dir" != "/" ]; do
    if ! runuser -u "$PG_OS_USER" -- test -x "$dir" 2>/dev/null; then chmod o+x "$dir"; fi
    dir="$(dirname "$dir")"
  done
  chown -R "$PG_OS_USER" "$PG_DIR"
}

pg_running() { [ -f "$PG_DIR/data/postmaster.pid" ] && pg_run "$BIN/pg_ctl" -D "$PG_DIR/data" status >/dev/null 2>&1; }

pg_start() {
  BIN="$(pg_bindir)" || { say "PostgreSQL binaries not found: run scripts/bootstrap.sh"; exit 1; }
  mkdir -p "$PG_DIR/run" "$PG_DIR/log"
  prepare_pg_owner
  if [ ! -f "$PG_DIR/data/PG_VERSION" ]; then
    say "initdb $PG_DIR/data"
    pg_run "$BIN/initdb" -D "$PG_DIR/data" -U "$PG_USER" --auth=trust -E UTF8 --locale=C.UTF-8 >"$PG_DIR/log/initdb.log"
  fi
  if ! pg_running; then
    say "starting PostgreSQL on 127.0.0.1:$PG_PORT"
    pg_run "$BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log/postgres.log" -w -t 60 \
      -o "-p $PG_PORT -k $PG_DIR/run -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
  fi
  local exists
  exists="$(psql -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$PG_DB'")"
  [ "$exists" = 1 ] || psql -q -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres -c "CREATE DATABASE \"$PG_DB\""
}

pg_stop() {
  BIN="$(pg_bindir)" || return 0
  if pg_running; then
    say "stopping PostgreSQL"
    pg_run "$BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null
  fi
}

redis_cli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }

redis_start() {
  mkdir -p "$REDIS_DIR"
  if redis_cli ping >/dev/null 2>&1; then return; fi
  say "starting Redis on 127.0.0.1:$REDIS_PORT"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$REDIS_DIR" --daemonize yes \
    --pidfile "$REDIS_DIR/redis.pid" --logfile "$REDIS_DIR/redis.log" --appendonly yes --save ""
  for _ in $(seq 50); do redis_cli ping >/dev/null 2>&1 && return; sleep 0.1; done
  say "Redis did not start: see $REDIS_DIR/redis.log"; exit 1
}

redis_stop() {
  if redis_cli ping >/dev/null 2>&1; then
    say "stopping Redis"
    redis_cli shutdown >/dev/null 2>&1 || true
  fi
}

case "${1:-}" in
  start)
    if uses_private_pg; then pg_start; fi
    if uses_private_redis; then redis_start; fi
    ;;
  stop)
    if uses_private_redis; then redis_stop; fi
    if uses_private_pg; then pg_stop; fi
    ;;
  status)
    BIN="$(pg_bindir)" && pg_running && say "PostgreSQL: running" || say "PostgreSQL: stopped"
    redis_cli ping >/dev/null 2>&1 && say "Redis: running" || say "Redis: stopped"
    ;;
  running)
    # Exit status 0 when every private service this configuration uses is already up.
    if uses_private_pg; then BIN="$(pg_bindir)" && pg_running || exit 1; fi
    if uses_private_redis; then redis_cli ping >/dev/null 2>&1 || exit 1; fi
    ;;
  *) echo "usage: $0 start|stop|status|running" >&2; exit 2 ;;
esac
