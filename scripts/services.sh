#!/usr/bin/env bash
# Starts or stops the private PostgreSQL cluster and Redis under var/.
# Usage: services.sh start|stop|stop-started|status|running. Services pointed elsewhere by
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
    if port_taken "$PG_PORT"; then
      say "port $PG_PORT is taken by another server (another checkout's?): set CONCORD_PG_PORT to a free port"
      exit 1
    fi
    say "starting PostgreSQL on 127.0.0.1:$PG_PORT"
    # Beyond the defaults: more shared buffers and WAL between checkpoints for imports and freezes of a million
    # rows, and no JIT, which costs seconds compiling set-based statements that run in milliseconds without it.
    pg_run "$BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log/postgres.log" -w -t 60 \
      -o "-p $PG_PORT -k $PG_DIR/run -c listen_addresses=127.0.0.1 -c max_connections=200 \
      -c shared_buffers=256MB -c max_wal_size=4GB -c jit=off" start >/dev/null
    echo pg >>"$STARTED"
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

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

redis_cli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }

redis_start() {
  mkdir -p "$REDIS_DIR"
  if redis_cli ping >/dev/null 2>&1; then
    # Answering, but is it ours? A Redis started by another checkout keeps its pid file elsewhere.
    [ -f "$REDIS_DIR/redis.pid" ] || say "using the Redis already on port $REDIS_PORT (not started from this checkout)"
    return
  fi
  say "starting Redis on 127.0.0.1:$REDIS_PORT"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$REDIS_DIR" --daemonize yes \
    --pidfile "$REDIS_DIR/redis.pid" --logfile "$REDIS_DIR/redis.log" --appendonly yes --save ""
  for _ in $(seq 50); do redis_cli ping >/dev/null 2>&1 && echo redis >>"$STARTED" && return; sleep 0.1; done
  say "Redis did not start: see $REDIS_DIR/redis.log"; exit 1
}

redis_stop() {
  # Only a Redis this checkout started (its pid file is here) is ours to stop.
  if [ -f "$REDIS_DIR/redis.pid" ] && redis_cli ping >/dev/null 2>&1; then
    say "stopping Redis"
    redis_cli shutdown >/dev/null 2>&1 || true
  fi
}

# Which services `start` started, for `stop-started` (make test stops only what it started).
STARTED="$VAR/.services-started"
mkdir -p "$VAR"

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
  stop-started)
    if grep -qx redis "$STARTED" 2>/dev/null; then redis_stop; fi
    if grep -qx pg "$STARTED" 2>/dev/null; then pg_stop; fi
    rm -f "$STARTED"
    ;;
  running)
    # Exit status 0 when every private service this configuration uses is already up.
    if uses_private_pg; then BIN="$(pg_bindir)" && pg_running || exit 1; fi
    if uses_private_redis; then redis_cli ping >/dev/null 2>&1 || exit 1; fi
    ;;
  *) echo "usage: $0 start|stop|stop-started|status|running" >&2; exit 2 ;;
esac
