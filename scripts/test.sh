#!/usr/bin/env bash
# `make test`: install what is missing (browser included), start the services, then lint, type-check,
# check migrations and run the test suite against the real PostgreSQL and Redis.
source "$(dirname "$0")/common.sh"
cd "$ROOT"

"$ROOT/scripts/bootstrap.sh" --dev
# Services that were already up (a `make run` in another terminal) stay up; ones started here stop at the end.
rm -f "$VAR/.services-started"
trap '"$ROOT/scripts/services.sh" stop-started' EXIT
"$ROOT/scripts/services.sh" start

say "ruff"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
say "mypy"
"$VENV/bin/mypy" .
say "migrations"
DJANGO_SETTINGS_MODULE=concord.settings.test "$VENV/bin/python" manage.py makemigrations --check --dry-run
say "deploy checks"
DJANGO_SETTINGS_MODULE=concord.settings.production SECRET_KEY="$(head -c 48 /dev/urandom | base64)" \
  ALLOWED_HOSTS=concord.example.org "$VENV/bin/python" manage.py check --deploy --fail-level WARNING
say "openapi"
DJANGO_SETTINGS_MODULE=concord.settings.test "$VENV/bin/python" manage.py spectacular --validate --fail-on-warn \
  --file /dev/null
say "pytest"
"$VENV/bin/pytest" "$@"
