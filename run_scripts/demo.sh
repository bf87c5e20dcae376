#!/usr/bin/env bash
# README command (1): install everything (idempotent), then run the multi-stage pipeline on real data and print
# metrics tables (see repllama_pyserini/demo.py).
#   bash run_scripts/demo.sh [--data DIR] [--dataset scifact|/path/to/beir/folder] [--encoder E] [--reranker R]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
exec "$PY" -m repllama_pyserini.workflows.demo --work "${REPLLAMA_PYSERINI_WORK:-$ROOT/runs/demo}" "${ARGS[@]+"${ARGS[@]}"}"
