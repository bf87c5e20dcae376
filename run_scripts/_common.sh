# Sourced by run_scripts/*.sh: parses --data DIR (else $REPLLAMA_PYSERINI_DATA, else ../shared/ir-data), installs.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${REPLLAMA_PYSERINI_VENV:-$ROOT/.venv}"
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --data) export REPLLAMA_PYSERINI_DATA="$(cd "$2" && pwd)"; shift 2 ;;
    --data=*) export REPLLAMA_PYSERINI_DATA="$(cd "${1#--data=}" && pwd)"; shift ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
bash "$ROOT/run_scripts/install.sh"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" TOKENIZERS_PARALLELISM=false
PY="$VENV/bin/python"
cd "$ROOT"
