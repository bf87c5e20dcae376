"""The README demo: the multi-stage pipeline on real data.

1. a BEIR dataset (default SciFact): Pyserini BM25, the shipped SmolLM2 RepLLaMA retriever (``models/``) through
   ``pyserini.search.faiss``, their hybrid (the weight chosen on SciFact train claims, never on test) and the shipped
   RankLLaMA reranker on the hybrid's top 20 (alone, and interpolated with the hybrid as chosen on the train claims),
   evaluated next to Pyserini's published 2CR BM25 numbers. The whole
   corpus is encoded; the queries are a seeded sample (``--sample-queries``, 0: all 300; the full-set numbers are in
   ``docs/multistage-scifact.md`` and the regressions). ``--encoder`` / ``--reranker`` take other models,
   ``--bm25-only`` skips the LLM stages;
2. TREC DL19 / DL20 passage, when the published first-stage runs are in the data dir: BM25 and RepLLaMA-7B runs
   (castorini/rank_llm) fused with RRF through ``pyserini.fusion``, and reranked with ``--reranker`` if given.
"""
from __future__ import annotations

import argparse
import contextlib
import os

from ..cli import run_cli
from ..formats.collections import REPO_ROOT, collection_files, data_dir
from .pipeline import main as pipeline

SHIPPED_ENCODER = os.path.join(REPO_ROOT, "models", "smollm2-135m-repllama-scifact")
SHIPPED_RERANKER = os.path.join(REPO_ROOT, "models", "smollm2-135m-rankllama-scifact")
FUSION_CHOICE = "fusion.scifact-dev.json"  # fusion weights chosen on SciFact dev claims, shipped with each model


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m repllama_pyserini.workflows.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="scifact", help="BEIR name (under --data) or a BEIR folder")
    p.add_argument("--data", default=None)
    p.add_argument("--encoder", help="RepLLaMA encoder (preset, hub id or dir; default: the shipped SmolLM2 one)")
    p.add_argument("--reranker", help="RankLLaMA reranker (preset, hub id or dir; default: the shipped SmolLM2 one)")
    p.add_argument("--bm25-only", action="store_true", help="no LLM stage")
    p.add_argument("--sample-queries", type=int, default=50, help="seeded sample of the BEIR queries (0: all)")
    p.add_argument("--depth", type=int, default=20, help="candidates reranked per query")
    p.add_argument("--work", default=os.path.join(REPO_ROOT, "runs", "demo"))
    args = p.parse_args(argv)
    data = data_dir(args.data)
    dl_reranker = None if args.bm25_only else args.reranker  # the shipped SciFact reranker is not run on DL
    if not args.bm25_only:
        args.encoder = args.encoder or (SHIPPED_ENCODER if os.path.isdir(SHIPPED_ENCODER) else None)
        args.reranker = args.reranker or (SHIPPED_RERANKER if os.path.isdir(SHIPPED_RERANKER) else None)
    else:
        args.encoder = args.reranker = None
    extra = ["--reranker", args.reranker, "--depth", str(args.depth)] if args.reranker else []
    if args.reranker and os.path.isfile(os.path.join(args.reranker, FUSION_CHOICE)):
        extra += ["--rerank-fusion-choice", os.path.join(args.reranker, FUSION_CHOICE)]
    if args.encoder:
        choice = os.path.join(args.encoder, FUSION_CHOICE)
        extra += ["--encoder", args.encoder] + (["--fusion-choice", choice] if os.path.isfile(choice) else [])
    if args.sample_queries:
        extra += ["--sample-queries", str(args.sample_queries)]
    stages = ["bm25"] + (["dense", "hybrid"] if args.encoder else [])
    name = os.path.basename(os.path.normpath(args.dataset))
    pipeline(["--dataset", args.dataset, "--data", data, "--first-stage", *stages, "--work",
              os.path.join(args.work, name)] + extra)
    if args.dataset == "scifact" or os.path.isdir(os.path.join(data, "pyserini-2cr")):
        from ..cli import InputError
        from ..formats.collections import twocr_beir_scores
        with contextlib.suppress(InputError):
            print(f"Pyserini 2CR bm25-flat (published): {twocr_beir_scores('bm25-flat', name, data)}")
    cands = os.path.join(data, "msmarco-passage", "rank_llm_candidates")
    for dl, topics_name in (("dl19", "dl19-passage"), ("dl20", "dl20-passage")):
        bm25 = os.path.join(cands, f"trec_results_BM25_{dl}.txt")
        rep = os.path.join(cands, f"retrieve_results_REP_LLAMA_{dl}.json.gz")
        if not (os.path.isfile(bm25) and os.path.isfile(rep)):
            continue
        topics, qrels, _ = collection_files(topics_name, data)
        dl_extra = []
        if dl_reranker:
            collection = os.path.join(data, "msmarco-passage", "collection.dl19-dl20-candidates.tsv.gz")
            dl_extra = ["--reranker", dl_reranker, "--rerank-input", "repllama-7b", "--corpus", collection]
        pipeline(["--name", f"{dl}-passage", "--topics", topics, "--qrels", qrels, "--run", f"bm25={bm25}",
                  "--run", f"repllama-7b={rep}", "--fuse", "bm25", "repllama-7b", "--work",
                  os.path.join(args.work, f"{dl}-passage")] + dl_extra)


if __name__ == "__main__":
    run_cli(main)
