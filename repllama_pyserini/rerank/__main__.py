"""Rerank a TREC run (or rank_llm candidates) with RankLLaMA. Progress is saved per chunk of pairs in ``OUTPUT.job/``:
a rerun continues it, reports a finished job, or refuses other settings or inputs (``--overwrite``)::

    python -m repllama_pyserini.rerank --model rankllama --run run.bm25.trec --topics topics.tsv \\
        --corpus collection.tsv.gz|corpus.jsonl|BEIR_FOLDER|LUCENE_INDEX --output run.rankllama.trec
    python -m repllama_pyserini.rerank --model rankllama --candidates retrieve_results_BM25_dl19.json.gz --output ...
"""
from __future__ import annotations

import argparse

from ..cli import InputError, add_job_args, add_model_args, log, positive, run_cli
from ..formats import load_docs, read_candidates, read_run, read_topics, require_file, top_hits


def add_input_args(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("input: --run + --topics + --corpus, or --candidates")
    src.add_argument("--run", help="first-stage TREC run")
    src.add_argument("--topics", help="qid<TAB>query file (.tsv/.txt[.gz]) or queries.jsonl")
    src.add_argument("--corpus", help="any corpus layout, or a Lucene index with stored raw documents")
    src.add_argument("--candidates", help="rank_llm retrieve_results JSON(.gz): queries, hits and text in one file")
    p.add_argument("--on-missing", choices=("drop", "fail"), default="drop",
                   help="candidates absent from the corpus / run queries without topic: drop and count, or fail")


def read_inputs(args, depth: int, progress: bool = True):
    """``(topics, run, docs)`` from ``--candidates`` or ``--run``/``--topics``/``--corpus``; only the documents of
    each query's top ``depth`` are read."""
    if args.candidates:
        if args.run or args.corpus:
            raise InputError("--candidates carries the run and the text: do not pass --run/--corpus with it")
        c = read_candidates(args.candidates)
        return (read_topics(args.topics) if args.topics else c.topics), c.run, c.docs
    if not (args.run and args.topics and args.corpus):
        raise InputError("pass --run, --topics and --corpus (or --candidates)")
    require_file(args.corpus, "corpus")
    topics, run = read_topics(args.topics), read_run(args.run)
    needed = {d for q, s in run.items() if q in topics for d, _ in top_hits(s, depth)}
    log(f"reading {len(needed)} candidate documents from {args.corpus}")
    return topics, run, load_docs(args.corpus, needed, progress=progress)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m repllama_pyserini.rerank", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a reranker preset (rankllama...), a hub id or a local directory")
    p.add_argument("--preset", help="take the settings of this reranker preset (default: --model's own)")
    p.add_argument("--granularity", choices=("passage", "document"),
                   help="defaults for a model without preset: passage (512 tokens, depth 200) or document (2048, "
                        "depth 100, URL first)")
    add_input_args(p)
    p.add_argument("--output", required=True, help="the reranked TREC run")
    p.add_argument("--depth", type=int, help="candidates reranked per query (default: the preset's)")
    p.add_argument("--max-length", type=int, help="tokens of a (query, document) pair (default: the preset's)")
    p.add_argument("--padding-side", choices=("left", "right"))
    p.add_argument("--tag", default="rankllama")
    p.add_argument("--chunk-pairs", type=int, default=1024,
                   help="pairs per saved chunk: a killed job loses at most one chunk of work (default 1024)")
    p.add_argument("--allow-untrained-head", action="store_true",
                   help="rerank with a model whose score head was never trained (random scores): on purpose only")
    add_model_args(p)
    add_job_args(p)
    args = p.parse_args(argv)
    for n in ("depth", "max_length", "batch_size", "max_batch_tokens", "chunk_pairs"):
        positive(n, getattr(args, n))
    from .base import rerank_job
    from .rankllama import RankLLaMAReranker, identity, resolve_preset
    preset = resolve_preset(args.model, args.preset, args.granularity, base_model=args.base_model,
                            tokenizer=args.tokenizer, max_length=args.max_length, depth=args.depth,
                            padding_side=args.padding_side)
    topics, run, docs = read_inputs(args, preset.depth, args.progress)

    def make():
        return RankLLaMAReranker.from_pretrained(
            args.model, args.preset, args.base_model, args.tokenizer, args.granularity, args.dtype, args.device,
            args.attn_implementation, args.batch_size, args.max_batch_tokens, args.allow_untrained_head,
            max_length=args.max_length,
            depth=args.depth, padding_side=args.padding_side)

    stats = rerank_job(make, identity(preset, args.dtype, args.device), topics, run, docs, preset.depth,
                       [args.output], [args.tag], on_missing=args.on_missing, overwrite=args.overwrite,
                       progress=args.progress, chunk_pairs=args.chunk_pairs)
    if stats is not None:
        log(f"wrote {args.output}: {stats.summary()}")


if __name__ == "__main__":
    run_cli(main)
