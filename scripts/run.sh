#!/usr/bin/env bash
# `make run`: install what is missing, start PostgreSQL and Redis, migrate, seed the demo,
# then run the web server, the Celery workers and beat until Ctrl-C, which stops everything.
source "$(dirname "$0")/common.sh"
cd "$ROOT"
export DJANGO_SETTINGS_MODULE="${DJANGO_SETTINGS_MODULE:-concord.settings.local}"

"$ROOT/scripts/bootstrap.sh"
"$ROOT/scripts/services.sh" start
trap '"$ROOT/scripts/services.sh" stop' EXIT

"$VENV/bin/python" manage.py migrate --noinput
"$VENV/bin/python" manage.py seed_demo

say "Concord is at http://${CONCORD_HOST:-127.0.0.1}:${CONCORD_PORT:-8000}/  (Ctrl-C stops it)"
# honcho starts the Procfile's web, workers and beat, and stops them all when one ends or on Ctrl-C.
"$VENV/bin/honcho" start -f Procfile
