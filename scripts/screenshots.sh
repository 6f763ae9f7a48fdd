#!/usr/bin/env bash
# `make screenshots`: renew the pages' screenshots in docs/screens/ (the README's and docs/tour.md's) by running the
# screen tests (tests/**/test_*screens.py, tests/screens.py) with CONCORD_SCREENSHOT_DIR set: each page at a desk
# (1440 px) and a phone (390 px) width, asserted as the tests assert it.
source "$(dirname "$0")/common.sh"
cd "$ROOT"

rm -f "$VAR/.services-started"
trap '"$ROOT/scripts/services.sh" stop-started' EXIT
"$ROOT/scripts/services.sh" start
mkdir -p "$ROOT/docs/screens"
CONCORD_SCREENSHOT_DIR="$ROOT/docs/screens" "$VENV/bin/pytest" -q -p no:cacheprovider \
  $(find tests -name 'test_*screens.py' | sort) "$@"
