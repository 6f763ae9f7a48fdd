#!/usr/bin/env bash
# `make run`: install what is missing, start PostgreSQL and Redis, migrate, seed the demo,
# then run the web server, the Celery workers and beat until Ctrl-C, which stops everything.
# `run.sh stop` (`make stop`) stops this checkout's `make run`, found by its pid file, and nothing else.
source "$(dirname "$0")/common.sh"

# The pid of the honcho that runs the Procfile, so that `make stop` stops this checkout's processes and never
# another checkout's (their command lines are the same).
HONCHO_PID="$VAR/honcho.pid"
# How long `make stop` waits for honcho to stop its processes (it kills them itself after 5 s) before SIGKILL.
STOP_WAIT_S="${CONCORD_STOP_WAIT_S:-30}"

# True while the process exists and is not a zombie.
alive() { local state; state="$(ps -o stat= -p "$1" 2>/dev/null)" && [[ "$state" != Z* ]]; }

# Waits up to $2 seconds for process $1 to end; status 1 if it is still there.
wait_gone() {
  local tenths=$(($2 * 10))
  while alive "$1"; do
    [ "$tenths" -gt 0 ] || return 1
    tenths=$((tenths - 1))
    sleep 0.1
  done
}

command_line() { tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline"; }

# True when process $1 is this checkout's honcho: honcho's command line, run in this folder. A stale pid file
# (the process gone, or its pid taken since by another process) names no such process.
is_our_honcho() {
  [[ "$(command_line "$1")" == *"honcho start -f Procfile"* ]] || return 1
  [ "$(readlink "/proc/$1/cwd" 2>/dev/null)" = "$(cd "$ROOT" && pwd -P)" ]
}

# Prints the pid of this checkout's running honcho; status 1 when there is none.
honcho_pid() {
  local pid
  pid="$(cat "$HONCHO_PID" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] && is_our_honcho "$pid" || return 1
  echo "$pid"
}

descendants() {
  local child
  for child in $(pgrep -P "$1"); do
    echo "$child"
    descendants "$child"
  done
}

# SIGKILL to process $1 and every process below it, each with the process group it leads: honcho starts each
# Procfile process in a session of its own, so killing honcho's group alone would leave them running.
kill_tree() {
  local pid
  for pid in "$1" $(descendants "$1"); do
    if [ "$(ps -o pgid= -p "$pid" | tr -d ' ')" = "$pid" ]; then kill -KILL -- "-$pid" 2>/dev/null || true; fi
    kill -KILL "$pid" 2>/dev/null || true
  done
}

# SIGTERM to this checkout's honcho, which stops web, workers and beat and exits; SIGKILL if it hangs.
stop_honcho() {
  local pid parent
  if ! pid="$(honcho_pid)"; then
    rm -f "$HONCHO_PID"
    return 0
  fi
  parent="$(ps -o ppid= -p "$pid" | tr -d ' ')" || true
  say "stopping web, workers and beat (honcho, pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_gone "$pid" "$STOP_WAIT_S"; then
    say "honcho did not stop within ${STOP_WAIT_S}s: killing it and its processes"
    kill_tree "$pid"
    wait_gone "$pid" 10 || say "honcho (pid $pid) is still running"
  fi
  # Once honcho has ended, the run.sh that started it stops the services: let it finish first.
  if [[ "$(command_line "$parent")" == *run.sh* ]]; then wait_gone "$parent" "$STOP_WAIT_S" || true; fi
  rm -f "$HONCHO_PID"
}

# honcho starts the Procfile's web, workers and beat, and stops them all when one ends or on SIGTERM. It runs in
# a process group of its own (set -m) with its pid in var/honcho.pid; a Ctrl-C here reaches it as SIGTERM.
run_honcho() {
  set -m
  "$VENV/bin/honcho" start -f Procfile &
  HONCHO=$!
  set +m
  echo "$HONCHO" >"$HONCHO_PID"
  trap 'rm -f "$HONCHO_PID"; "$ROOT/scripts/services.sh" stop' EXIT
  trap 'kill -TERM "$HONCHO" 2>/dev/null || true' INT TERM HUP
  local rc
  while :; do
    rc=0
    wait "$HONCHO" || rc=$?
    if ! alive "$HONCHO"; then
      # Stopped on request (SIGTERM from Ctrl-C here or from `make stop`): a clean end, not an error.
      [ "$rc" = 143 ] && rc=0
      return "$rc"
    fi
  done
}

if [ "${1:-}" = stop ]; then
  stop_honcho
  exit 0
fi

cd "$ROOT"
export DJANGO_SETTINGS_MODULE="${DJANGO_SETTINGS_MODULE:-concord.settings.local}"
if pid="$(honcho_pid)"; then
  say "Concord already runs from this checkout (honcho, pid $pid): \`make stop\` stops it"
  exit 1
fi

"$ROOT/scripts/bootstrap.sh"
"$ROOT/scripts/services.sh" start
trap '"$ROOT/scripts/services.sh" stop' EXIT

"$VENV/bin/python" manage.py migrate --noinput
"$VENV/bin/python" manage.py seed_demo

say "Concord is at http://${CONCORD_HOST:-127.0.0.1}:${CONCORD_PORT:-8000}/  (Ctrl-C stops it)"
run_honcho
