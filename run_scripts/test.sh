#!/usr/bin/env bash
# README command (2): install everything (idempotent), then run the test suite.
#   bash run_scripts/test.sh [--data DIR] [pytest args...]     e.g.  -m slow   for the long tests
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
exec "$PY" -m pytest "${ARGS[@]+"${ARGS[@]}"}"
