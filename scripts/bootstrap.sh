#!/usr/bin/env bash
# Installs what is missing: system packages through apt, Python packages into .venv.
# Idempotent and quick when nothing changed. Usage: bootstrap.sh [--dev]
source "$(dirname "$0")/common.sh"

DEV=0
[ "${1:-}" = "--dev" ] && DEV=1

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
    say "need root to run: $*"; return 1
  fi
}

APT_UPDATED=0
apt_install() {
  if [ "$APT_UPDATED" = 0 ]; then
    say "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    APT_UPDATED=1
  fi
  say "apt-get install $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

system_packages() {
  local missing=()
  command -v "$PYTHON_BIN" >/dev/null 2>&1 || missing+=(python3 python3-venv)
  if uses_private_pg; then
    pg_bindir >/dev/null 2>&1 || missing+=(postgresql)
  fi
  command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
  if uses_private_redis; then
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  fi
  if [ "$DEV" = 1 ]; then
    [ -x /usr/bin/chromium ] || missing+=(chromium)
    [ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
    fc-list 2>/dev/null | grep -qi dejavu || missing+=(fonts-dejavu-core)
  fi
  if [ "${#missing[@]}" -gt 0 ]; then apt_install "${missing[@]}"; fi
}

python_packages() {
  local reqs="$ROOT/requirements.txt"
  [ "$DEV" = 1 ] && reqs="$ROOT/requirements-dev.txt"
  if [ ! -x "$VENV/bin/python" ]; then
    command -v "$PYTHON_BIN" >/dev/null 2>&1 || PYTHON_BIN=python3
    say "creating $VENV"
    "$PYTHON_BIN" -m venv "$VENV"
  fi
  # Reinstall only when the pinned requirements changed since the last install.
  local stamp="$VENV/.concord-$(basename "$reqs").sha256"
  local want
  want="$(cat "$ROOT"/requirements*.txt | sha256sum | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    say "installing Python packages from $(basename "$reqs")"
    # (pip warns about extra index folders some machines configure but lack; that noise is dropped.)
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$reqs" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
    echo "$want" >"$stamp"
  fi
}

system_packages
python_packages
