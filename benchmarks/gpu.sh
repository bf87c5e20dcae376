#!/usr/bin/env bash
# GPU check (issue 15): the real-model benchmark (benchmarks/bench_real.py) on one CUDA GPU, bf16, flash-attention 2
# when installed, writing the same JSON/markdown/plots as the CPU run. Not part of CI.
#
#   bash benchmarks/gpu.sh prepare     # here (CPU, the project's .venv): SmolLM2's config + tokenizer and the SciFact
#                                      # texts into .gpu-bench/ (git-ignored, ~8 MB) so they travel to a GPU machine
#   bash benchmarks/gpu.sh [OUT_DIR]   # there: runs in a few minutes; needs python3 with torch (CUDA), transformers,
#                                      # tqdm, pyyaml (sentence-transformers / onnxruntime compared when installed)
#
# The GPU machine reaches no hub and the checkpoint is too large to carry, so the model is SmolLM2-135M's exact
# architecture with seeded random weights: throughput and MFU are the real model's; outputs are compared between
# methods (same weights), not with trained scores.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=.gpu-bench
if [[ "${1:-}" == "prepare" ]]; then
  PY=.venv/bin/python
  mkdir -p "$DIR/model"
  SRC=$($PY -m repllama_pyserini.smollm)
  for f in config.json tokenizer.json tokenizer_config.json special_tokens_map.json generation_config.json; do
    [[ -f "$SRC/$f" ]] && cp "$SRC/$f" "$DIR/model/"
  done
  $PY benchmarks/bench_real.py --save-texts "$DIR/texts.json"
  du -sh "$DIR"
  exit 0
fi
OUT_DIR=${1:-${OUT:-docs}}
PY=${PYTHON:-python3}
[[ -f "$DIR/texts.json" ]] || { echo "error: run 'bash benchmarks/gpu.sh prepare' first (and carry $DIR)" >&2; exit 2; }
$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'; print(torch.cuda.get_device_name())"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv || true
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
timeout 540 $PY benchmarks/bench_real.py --model "$DIR/model" --random-weights --texts "$DIR/texts.json" \
  --device cuda --dtype bf16 --threads 1 --rounds 3 --scale 8 --no-competitors --json "$OUT_DIR/benchmark-real-gpu.json"
