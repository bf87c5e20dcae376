#!/usr/bin/env bash
# README command (1): install everything (idempotent), then run the main pipeline on real data and print metrics.
#   bash run_scripts/demo.sh [--data DIR] [--dataset scifact|/path/to/beir/folder]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
exec "$PY" -m repllama_pyserini.bm25 beir --work "${REPLLAMA_PYSERINI_WORK:-$ROOT/runs}" "${ARGS[@]+"${ARGS[@]}"}"
