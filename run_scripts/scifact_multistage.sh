#!/usr/bin/env bash
# The paper's multi-stage claim at CPU scale (issue 14; docs/multistage-scifact.md): a RepLLaMA-style retriever and a
# RankLLaMA-style reranker trained here from SmolLM2-135M + LoRA on BEIR SciFact train, every choice made on a dev
# split carved from the training claims, then the test table.
#
#   bash run_scripts/scifact_multistage.sh [--data DIR] [STAGE ...]
#
# Stages (default: all, in order; each is cached under $WORK and resumes after a kill):
#   split mine retriever-<V> dev-retriever-<V> ...   (V in $RETRIEVERS)
# Knobs (environment): WORK (runs/scifact-multistage), THREADS (1), RETRIEVERS ("a b c").
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

WORK="${WORK:-$ROOT/runs/scifact-multistage}" THREADS="${THREADS:-1}" RETRIEVERS="${RETRIEVERS:-a b c}"
export OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS"
DATA="$("$PY" -c 'from repllama_pyserini.formats import data_dir; print(data_dir())')"
SCIFACT="$DATA/beir/scifact"
MODEL="$("$PY" -m repllama_pyserini.smollm)"
mkdir -p "$WORK"
log() { echo "[scifact_multistage $(date +%H:%M:%S)] $*" >&2; }
timed() {  # timed NAME CMD...: run, record the wall time in $WORK/times.jsonl
  local name="$1" start; shift; start=$(date +%s)
  "$@"
  echo "{\"stage\": \"$name\", \"seconds\": $(( $(date +%s) - start )), \"threads\": $THREADS}" >> "$WORK/times.jsonl"
}

# retriever variants: LoRA r=8 on the 7 projections (the adapter must ship under 8 MB in fp16), passages 64 tokens
# (what the demo can encode in minutes), 1 positive + (group - 1) BM25 negatives, in-batch negatives, temperature 0.01
retriever_flags() {
  local common=(--lora --lora_r 8 --lora_alpha 16 --lora_dropout 0.1
    --lora_target_modules q_proj,k_proj,v_proj,o_proj,down_proj,up_proj,gate_proj --pooling eos --normalize
    --temperature 0.01 --append_eos_token --query_prefix "query: " --passage_prefix "passage: " --query_max_len 32
    --passage_max_len 64 --per_device_train_batch_size 8 --gradient_accumulation_steps 1
    --lr_scheduler_type constant_with_warmup --warmup_steps 3 --bf16 False --gradient_checkpointing False
    --pad_to_multiple_of 8 --save_steps 10 --save_total_limit 1 --logging_steps 10 --seed 42 --disable_tqdm True
    --resume_from_checkpoint auto)
  case "$1" in
    a) echo "${common[@]@Q} --train_group_size 2 --learning_rate 3e-4 --num_train_epochs 1" ;;  # the CPU recipe
    b) echo "${common[@]@Q} --train_group_size 2 --learning_rate 3e-4 --num_train_epochs 3" ;;  # more epochs
    c) echo "${common[@]@Q} --train_group_size 4 --learning_rate 3e-4 --num_train_epochs 1" ;;  # more negatives
    # alpha held at the r=32 recipe's 64: the update BA*alpha/r then has about the r=32 recipe's size at r=8
    d) echo "${common[@]@Q} --lora_alpha 64 --train_group_size 2 --learning_rate 3e-4 --num_train_epochs 1" ;;
    *) echo "unknown retriever variant $1" >&2; exit 2 ;;
  esac
}

STAGES=("${ARGS[@]+"${ARGS[@]}"}")
if [ ${#STAGES[@]} -eq 0 ]; then
  STAGES=(split mine)
  for v in $RETRIEVERS; do STAGES+=("retriever-$v" "dev-retriever-$v"); done
fi

for stage in "${STAGES[@]}"; do
  case "$stage" in
    split)  # 100 of the 809 train claims held out for every choice
      [ -f "$WORK/split/split.json" ] && { log "split: cached"; continue; }
      "$PY" -m repllama_pyserini.train.split --input "$SCIFACT/train.tevatron.jsonl.gz" \
        --corpus "$SCIFACT/corpus.jsonl.gz" --dev 100 --seed 13 --output "$WORK/split" ;;
    mine)  # BM25 top-200 of the 709 training claims, judged positives removed, 30 negatives sampled
      [ -f "$WORK/train.bm25-negatives.jsonl.gz" ] && { log "mine: cached"; continue; }
      timed mine "$PY" -m repllama_pyserini.train.negatives --corpus "$SCIFACT/corpus.jsonl.gz" \
        --input "$WORK/split/train.jsonl.gz" --qrels "$SCIFACT/qrels.scifact.train.txt" --depth 200 \
        --num-negatives 30 --seed 42 --output "$WORK/train.bm25-negatives.jsonl.gz" ;;
    retriever-*)
      v="${stage#retriever-}" out="$WORK/retriever-${stage#retriever-}"
      [ -f "$out/preset.yaml" ] && { log "$stage: cached"; continue; }
      eval "flags=($(retriever_flags "$v"))"
      timed "$stage" "$PY" -m repllama_pyserini.train.retriever --output_dir "$out" --model_name_or_path "$MODEL" \
        --dataset_name "$WORK/train.bm25-negatives.jsonl.gz" "${flags[@]}" ;;
    dev-retriever-*)  # the whole corpus encoded (the index is reused for the test runs), the dev claims searched
      v="${stage#dev-retriever-}"
      [ -f "$WORK/dev.retriever-$v.json" ] && { log "$stage: cached"; continue; }
      timed "$stage" "$PY" -m repllama_pyserini.dense evaluate --encoder "$WORK/retriever-$v" \
        --dataset "$WORK/split/dev" --work "$WORK/eval-retriever-$v" --json "$WORK/dev.retriever-$v.json" \
        --no-progress ;;
    *) echo "unknown stage $stage" >&2; exit 2 ;;
  esac
done
