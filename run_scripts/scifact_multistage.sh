#!/usr/bin/env bash
# The paper's multi-stage claim at CPU scale (issue 14; docs/multistage-scifact.md): a RepLLaMA-style retriever and a
# RankLLaMA-style reranker trained here from SmolLM2-135M + LoRA on BEIR SciFact train, every choice made on a dev
# split carved from the training claims, then the test table.
#
#   bash run_scripts/scifact_multistage.sh [--data DIR] [STAGE ...]
#
# Stages (default: all, in order; each is cached under $WORK and resumes after a kill):
#   split mine bm25 retriever-<V> dev-retriever-<V> ...   (V in $RETRIEVERS; bm25: the index and the dev run)
#   mine-reranker reranker                              (the reranker, trained on BM25 top-30 negatives)
#   reranker-2 rerank-dev tune-rerank                   (more training; the dev check; first stage + reranker weight)
#   tune-hybrid export test-first-stage test-hybrid rerank-test report   (the chosen models, shipped to models/;
#   export = export-retriever + export-reranker)
# Knobs (environment): WORK (runs/scifact-multistage), THREADS (1), RETRIEVERS ("a d e": the variants run for
# docs/multistage-scifact.md; b and c were not), RETRIEVER (e: the one chosen on dev), RERANKER ($WORK/reranker-2),
# DEPTH (20: candidates reranked per query), MODELS (models/: where `export` writes the adapters the test uses).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

WORK="${WORK:-$ROOT/runs/scifact-multistage}" THREADS="${THREADS:-1}" RETRIEVERS="${RETRIEVERS:-a d e}"
RETRIEVER="${RETRIEVER:-e}" DEPTH="${DEPTH:-20}"
MODELS="${MODELS:-$ROOT/models}"  # where the export stage writes (a retrain regression points it elsewhere)
SHIPPED_RETRIEVER="$MODELS/smollm2-135m-repllama-scifact" SHIPPED_RERANKER="$MODELS/smollm2-135m-rankllama-scifact"
T="$WORK/test" TR="$WORK/test-shipped"  # BM25's test runs; the shipped (exported, fp16) models'
FUSION_CHOICE="$WORK/fusion-choice-$RETRIEVER.json"
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
    e) echo "${common[@]@Q} --lora_alpha 64 --train_group_size 2 --learning_rate 3e-4 --num_train_epochs 2" \
         "--lora_name_or_path $(printf %q "$WORK/retriever-d")" ;;  # d trained 2 more epochs (3 in all)
    *) echo "unknown retriever variant $1" >&2; exit 2 ;;
  esac
}

# the reranker: LoRA r=8 / alpha 64 on the 7 projections plus the one-logit head, groups of 1 positive + 3 BM25
# negatives, 8 claims (32 pairs) per update
RERANKER_FLAGS=(--model_name_or_path "$MODEL" --dataset_name "$WORK/train.bm25-top30-negatives.jsonl.gz" --lora
  --lora_r 8 --lora_alpha 64 --lora_dropout 0.1 --lora_target_modules q_proj,k_proj,v_proj,o_proj,down_proj,up_proj,gate_proj
  --pair_format tevatron --append_eos_token --query_prefix "query: " --passage_prefix "document: " --rerank_max_len 128
  --train_group_size 4 --per_device_train_batch_size 8 --gradient_accumulation_steps 1 --learning_rate 3e-4
  --lr_scheduler_type constant_with_warmup --warmup_steps 3 --bf16 False --gradient_checkpointing False
  --pad_to_multiple_of 8 --save_steps 10 --save_total_limit 1 --logging_steps 10 --disable_tqdm True
  --resume_from_checkpoint auto)

STAGES=("${ARGS[@]+"${ARGS[@]}"}")
if [ ${#STAGES[@]} -eq 0 ]; then
  STAGES=(split mine bm25)
  for v in $RETRIEVERS; do STAGES+=("retriever-$v" "dev-retriever-$v"); done
  STAGES+=(mine-reranker reranker reranker-2 rerank-dev tune-rerank tune-hybrid export test-first-stage test-hybrid rerank-test report)
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
    bm25)  # Pyserini BM25 flat over the corpus; the dev claims' run (the baseline every choice is compared with)
      [ -f "$WORK/bm25/dev.trec" ] && { log "bm25: cached"; continue; }
      "$PY" -m repllama_pyserini.bm25 index --corpus "$SCIFACT/corpus.jsonl.gz" --index "$WORK/bm25/index"
      "$PY" -m repllama_pyserini.bm25 search --index "$WORK/bm25/index" --topics "$WORK/split/dev.topics.tsv" \
        --output "$WORK/bm25/dev.trec" --remove-query --no-progress ;;
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
    mine-reranker)  # the reranker sees BM25 / hybrid candidates at test time: negatives from BM25's top 30
      [ -f "$WORK/train.bm25-top30-negatives.jsonl.gz" ] && { log "mine-reranker: cached"; continue; }
      timed mine-reranker "$PY" -m repllama_pyserini.train.negatives --corpus "$SCIFACT/corpus.jsonl.gz" \
        --input "$WORK/split/train.jsonl.gz" --qrels "$SCIFACT/qrels.scifact.train.txt" --depth 30 \
        --num-negatives 15 --seed 42 --output "$WORK/train.bm25-top30-negatives.jsonl.gz" ;;
    reranker)  # Tevatron's RankLLaMA flags: one string 'query: {q} document: {title} {text}' + EOS, 128 tokens
      out="$WORK/reranker"
      [ -f "$out/preset.yaml" ] && { log "reranker: cached"; continue; }
      timed reranker "$PY" -m repllama_pyserini.train.reranker --output_dir "$out" "${RERANKER_FLAGS[@]}" \
        --seed 42 --num_train_epochs 1 ;;
    reranker-2)  # 48 more updates from the first epoch's adapter and head (the shipped run was stopped there by a
      # time limit; --max_steps reproduces the stop), another seed for another order of the training claims
      out="$WORK/reranker-2"
      [ -f "$out/preset.yaml" ] && { log "reranker-2: cached"; continue; }
      timed reranker-2 "$PY" -m repllama_pyserini.train.reranker --output_dir "$out" "${RERANKER_FLAGS[@]}" \
        --lora_name_or_path "$WORK/reranker" --seed 43 --num_train_epochs 1 --max_steps 48 ;;
    export|export-retriever|export-reranker)  # the chosen models into $MODELS (fp16), each with its weight chosen on dev
      pairs=()
      if [ "$stage" != export-reranker ]; then
        "$PY" -m repllama_pyserini.train.export --input "$WORK/retriever-$RETRIEVER" --output "$SHIPPED_RETRIEVER" \
          --base-name smollm2-135m-instruct --overwrite
        pairs+=("$FUSION_CHOICE" "$SHIPPED_RETRIEVER/fusion.scifact-dev.json")
      fi
      if [ "$stage" != export-retriever ]; then
        "$PY" -m repllama_pyserini.train.export --input "${RERANKER_DIR:-$WORK/reranker-2}" --output "$SHIPPED_RERANKER" \
          --base-name smollm2-135m-instruct --overwrite
        pairs+=("$WORK/fusion-choice-rerank.json" "$SHIPPED_RERANKER/fusion.scifact-dev.json")
      fi
      "$PY" - "$ROOT" "${pairs[@]}" <<'PY'
import json, os, sys
for src, dst in zip(sys.argv[2::2], sys.argv[3::2]):
    choice = json.load(open(src))  # paths relative to the repository: the shipped file names no machine
    choice["runs"] = [os.path.relpath(r, sys.argv[1]) for r in choice["runs"]]
    choice["qrels"] = os.path.relpath(choice["qrels"], sys.argv[1])
    json.dump(choice, open(dst, "w"), indent=1)
PY
      ;;
    test-first-stage)  # BM25 as Pyserini's 2CR (flat, --remove-query); the shipped retriever through pyserini.search.faiss
      mkdir -p "$T" "$TR"
      [ -f "$T/topics.tsv" ] || gzip -dc "$DATA/topics-and-qrels/topics.beir-v1.0.0-scifact.test.tsv.gz" > "$T/topics.tsv"
      [ -f "$T/bm25.trec" ] || "$PY" -m repllama_pyserini.bm25 search --index "$WORK/bm25/index" \
        --topics "$T/topics.tsv" --output "$T/bm25.trec" --remove-query --no-progress
      timed test-encode "$PY" -m repllama_pyserini.dense encode --corpus "$SCIFACT/corpus.jsonl.gz" \
        --encoder "$SHIPPED_RETRIEVER" --output "$TR/index" --no-progress
      [ -f "$TR/dense.trec" ] || timed test-dense "$PY" -m pyserini.search.faiss --index "$TR/index" \
        --topics "$T/topics.tsv" --encoder-class repllama --encoder "$SHIPPED_RETRIEVER" --output "$TR/dense.trec" \
        --hits 1000 --batch-size 32 --threads "$THREADS" --remove-query ;;
    tune-rerank)  # the reranker alone was below BM25 on dev: its score interpolated with the first stage's, weight on dev
      [ -f "$WORK/fusion-choice-rerank.json" ] && { log "tune-rerank: cached"; continue; }
      "$PY" -m repllama_pyserini.fusion.tune --runs "$WORK/bm25/dev.trec" \
        "$WORK/dev/bm25.rerank-top$DEPTH.$(basename "${RERANKER_DIR:-$WORK/reranker-2}").trec" \
        --qrels "$WORK/split/dev.qrels.txt" --output "$WORK/fusion-choice-rerank.json" ;;
    tune-hybrid)  # Pyserini's hybrid at several weights and RRF, chosen on the dev claims only
      [ -f "$FUSION_CHOICE" ] && { log "tune-hybrid: cached"; continue; }
      "$PY" -m repllama_pyserini.fusion.tune --runs "$WORK/bm25/dev.trec" "$WORK/eval-retriever-$RETRIEVER/run.trec" \
        --qrels "$WORK/split/dev.qrels.txt" --output "$FUSION_CHOICE" ;;
    test-hybrid)
      [ -f "$TR/hybrid.trec" ] && { log "test-hybrid: cached"; continue; }
      "$PY" -m repllama_pyserini.fusion --runs "$T/bm25.trec" "$TR/dense.trec" --choice "$SHIPPED_RETRIEVER/fusion.scifact-dev.json" \
        --output "$TR/hybrid.trec" ;;
    rerank-dev)  # does the reranker ($RERANKER) help? BM25's top $DEPTH of the dev claims
      RERANKER="${RERANKER:-$WORK/reranker-2}"
      out="$WORK/dev/bm25.rerank-top$DEPTH.$(basename "$RERANKER").trec"
      [ -f "$out" ] && { log "rerank-dev: cached $out"; continue; }
      mkdir -p "$WORK/dev"
      timed "rerank-dev-$(basename "$RERANKER")" "$PY" -m repllama_pyserini.rerank --model "$RERANKER" \
        --run "$WORK/bm25/dev.trec" --topics "$WORK/split/dev.topics.tsv" --corpus "$SCIFACT/corpus.jsonl.gz" \
        --depth "$DEPTH" --output "$out" --no-progress ;;
    rerank-test)  # the union of BM25's and the hybrid's test top $DEPTH reranked once (a pair's score does not
      # depend on the other candidates), then each first stage's top $DEPTH with those scores
      [ -f "$TR/hybrid.rerank-top$DEPTH.trec" ] && { log "rerank-test: cached"; continue; }
      "$PY" - "$DEPTH" "$TR/union.trec" "$T/bm25.trec" "$TR/hybrid.trec" <<'PY'
import sys
from repllama_pyserini.formats.runs import read_run, truncate_run, write_run
depth, out, runs = int(sys.argv[1]), sys.argv[2], [truncate_run(read_run(p), int(sys.argv[1])) for p in sys.argv[3:]]
union = {}
for run in runs:
    for qid, hits in run.items():
        union.setdefault(qid, set()).update(hits)
write_run({q: {d: -i for i, d in enumerate(sorted(h))} for q, h in union.items()}, out)
PY
      timed rerank-test "$PY" -m repllama_pyserini.rerank --model "$SHIPPED_RERANKER" --run "$TR/union.trec" \
        --topics "$T/topics.tsv" --corpus "$SCIFACT/corpus.jsonl.gz" --depth $((2 * DEPTH)) \
        --output "$TR/union.rerank.trec" --no-progress
      "$PY" - "$DEPTH" "$TR/union.rerank.trec" "$T/bm25.trec" "$T/bm25.rerank-top$DEPTH.trec" \
        "$TR/hybrid.trec" "$TR/hybrid.rerank-top$DEPTH.trec" <<'PY'
import sys
from repllama_pyserini.formats.runs import read_run, truncate_run, write_run
depth, scores = int(sys.argv[1]), read_run(sys.argv[2])
for first, out in zip(sys.argv[3::2], sys.argv[4::2]):
    run = truncate_run(read_run(first), depth)
    write_run({q: {d: scores[q][d] for d in hits} for q, hits in run.items()}, out, tag="rankllama")
PY
      ;;
    report)  # nDCG@10, R@100; paired t-tests of every run against BM25, and against the hybrid
      for first in "$T/bm25" "$TR/hybrid"; do  # the reranker's score interpolated with the first stage's (dev weight)
        "$PY" -m repllama_pyserini.fusion --runs "$first.trec" "$first.rerank-top$DEPTH.trec" \
          --choice "$SHIPPED_RERANKER/fusion.scifact-dev.json" --output "$first.rerank-top$DEPTH.interpolated.trec"
      done
      RUNS=("$T/bm25.trec" "$TR/dense.trec" "$TR/hybrid.trec" "$T/bm25.rerank-top$DEPTH.trec"
            "$T/bm25.rerank-top$DEPTH.interpolated.trec" "$TR/hybrid.rerank-top$DEPTH.trec"
            "$TR/hybrid.rerank-top$DEPTH.interpolated.trec")
      "$PY" -m repllama_pyserini.eval --run "$WORK/bm25/dev.trec" "$WORK"/dev/bm25.rerank-top$DEPTH.*.trec \
        --qrels "$WORK/split/dev.qrels.txt" --metrics nDCG@10 --significance t --json "$WORK/report.dev.json"
      "$PY" -m repllama_pyserini.eval --run "${RUNS[@]}" --qrels beir-v1.0.0-scifact --metrics nDCG@10 R@100 \
        --significance t --json "$TR/report.vs-bm25.json"
      "$PY" -m repllama_pyserini.eval --run "${RUNS[@]:2}" --qrels beir-v1.0.0-scifact --metrics nDCG@10 R@100 \
        --significance t --json "$TR/report.vs-hybrid.json" ;;
    *) echo "unknown stage $stage" >&2; exit 2 ;;
  esac
done
