# Shared settings for the scripts in this folder. Sourced, not run.
# Every value can be overridden from the environment, so the same scripts drive
# an external PostgreSQL / Redis (set DATABASE_URL / CELERY_BROKER_URL) or the
# private ones under var/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VAR="$ROOT/var"
VENV="${VENV:-$ROOT/.venv}"
PYTHON_BIN="${PYTHON_BIN:-python3.11}"

PG_PORT="${CONCORD_PG_PORT:-55432}"
PG_USER="${CONCORD_PG_USER:-concord}"
PG_DB="${CONCORD_PG_DB:-concord}"
PG_DIR="$VAR/pg"
REDIS_PORT="${CONCORD_REDIS_PORT:-56379}"
REDIS_DIR="$VAR/redis"
# PostgreSQL refuses to run as root, so a root shell runs it as this system user.
PG_OS_USER="${CONCORD_PG_OS_USER:-concord-pg}"

export DATABASE_URL="${DATABASE_URL:-postgres://$PG_USER@127.0.0.1:$PG_PORT/$PG_DB}"
export CELERY_BROKER_URL="${CELERY_BROKER_URL:-redis://127.0.0.1:$REDIS_PORT/0}"
export CACHE_URL="${CACHE_URL:-redis://127.0.0.1:$REDIS_PORT/1}"

say() { printf '\033[1m[concord]\033[0m %s\n' "$*"; }

# True when DATABASE_URL points at the private cluster this project manages.
uses_private_pg() { [[ "$DATABASE_URL" == *"127.0.0.1:$PG_PORT/"* ]]; }
uses_private_redis() { [[ "$CELERY_BROKER_URL" == *"127.0.0.1:$REDIS_PORT"* ]]; }

pg_bindir() {
  if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then
    pg_config --bindir
    return
  fi
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  if [ -n "$dir" ] && [ -x "$dir/initdb" ]; then echo "$dir"; return; fi
  if command -v initdb >/dev/null 2>&1; then dirname "$(readlink -f "$(command -v initdb)")"; return; fi
  return 1
}
