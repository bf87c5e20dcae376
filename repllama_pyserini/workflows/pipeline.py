"""Multi-stage retrieval in one command: first stage (BM25, RepLLaMA, hybrid) -> RankLLaMA rerank -> evaluation.

    # a BEIR dataset (name found under --data, or a BEIR folder path)
    python -m repllama_pyserini.workflows.pipeline --dataset scifact --first-stage bm25 dense hybrid \\
        --encoder castorini/repllama-v1-7b-lora-passage-beir --reranker castorini/rankllama-v1-7b-lora-passage

    # any collection: corpus + topics + qrels, plus existing runs (TREC files or rank_llm candidate JSON)
    python -m repllama_pyserini.workflows.pipeline --name dl19 --topics topics.dl19-passage.txt \\
        --qrels qrels.dl19-passage.txt --run bm25=trec_results_BM25_dl19.txt \\
        --run repllama-7b=retrieve_results_REP_LLAMA_dl19.json.gz --fuse bm25 repllama-7b

Every stage is one toolkit (or Pyserini) command writing one output under ``--work``; a rerun skips the stages whose
outputs are complete and still valid (:mod:`.stages`). ``--dry-run`` prints the commands. At the end the runs are
evaluated side by side with the collection's 2CR conventions (``repllama_pyserini.eval``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List, Optional

from ..bm25 import INDEX_DONE
from ..cli import InputError, run_cli
from ..dense.index import METADATA as DENSE_DONE
from ..formats import candidates_to_trec, is_candidates, read_qrels, read_topics
from ..formats.files import atomic_write, write_json
from ..templates import BATCH_SIZE
from .stages import Step, run_steps

FIRST_STAGES = ("bm25", "dense", "hybrid")


def _py(module: str, *args: str) -> List[str]:
    return [sys.executable, "-m", module, *[str(a) for a in args]]


def _write_topics(topics: Dict[str, str], path: str) -> str:
    """Plain ``qid<TAB>text`` (what Pyserini's CLIs read), judged topics only; rewritten when they changed."""
    text = "".join(f"{qid}\t{' '.join(t.split())}\n" for qid, t in topics.items())
    if not os.path.isfile(path) or open(path, encoding="utf-8").read() != text:
        with atomic_write(path) as f:
            f.write(text)
    return path


def _as_trec(name: str, path: str, work: str) -> str:
    """Existing runs enter as TREC files; rank_llm candidate JSON is converted once."""
    if not os.path.isfile(path):
        raise InputError(f"run {name}: file not found: {path}")
    if not is_candidates(path):
        return path
    out = os.path.join(work, f"run.{name}.trec")
    if not os.path.isfile(out):
        candidates_to_trec(path, out, tag=name)
    return out


def build_steps(args, topics_file: str, corpus: Optional[str], runs: Dict[str, str]) -> List[Step]:
    """The stages to run; ``runs`` (name -> TREC path) is filled with every run the stages will produce."""
    w, steps = args.work, []
    rm = ["--remove-query"] if args.remove_query else []
    stages = list(args.first_stage or [])
    if ("dense" in stages or "hybrid" in stages) and not args.encoder:
        raise InputError("--first-stage dense/hybrid needs --encoder (a RepLLaMA preset, hub id or directory)")
    if stages and not corpus:
        raise InputError("--first-stage needs a corpus (--dataset or --corpus)")
    if "bm25" in stages or "hybrid" in stages:
        index = os.path.join(w, "index.lucene")
        steps.append(Step("bm25-index", _py("repllama_pyserini.bm25", "index", "--corpus", corpus, "--index", index,
                                            "--threads", args.threads), index, INDEX_DONE))
        runs["bm25"] = os.path.join(w, "run.bm25.trec")
        steps.append(Step("bm25", _py("repllama_pyserini.bm25", "search", "--index", index, "--topics", topics_file,
                                      "--output", runs["bm25"], "--hits", args.hits, "--threads", args.threads,
                                      *rm), runs["bm25"]))
    if "dense" in stages or "hybrid" in stages:
        index = os.path.join(w, "index.faiss")
        enc = ["--encoder", args.encoder] + (["--max-docs", args.max_docs] if args.max_docs else []) + \
            (["--max-length", args.passage_max_length] if args.passage_max_length else [])
        steps.append(Step("dense-index", _py("repllama_pyserini.dense", "encode", "--corpus", corpus, "--output", index,
                                             "--batch-size", args.batch_size, *enc), index, DENSE_DONE))
        runs["dense"] = os.path.join(w, "run.dense.trec")
        steps.append(Step("dense", _py("pyserini.search.faiss", "--encoder-class", "repllama", "--encoder",
                                       args.encoder, "--index", index, "--topics", topics_file, "--output",
                                       runs["dense"], "--hits", args.hits, "--batch-size", args.batch_size,
                                       "--threads", args.threads, *rm), runs["dense"]))
    fuse = args.fuse or (["bm25", "dense"] if "hybrid" in stages else [])
    if fuse:
        missing = [n for n in fuse if n not in runs]
        if missing:
            raise InputError(f"--fuse names unknown runs {missing}; known: {sorted(runs)}")
        name = "hybrid" if "hybrid" not in runs else "hybrid2"
        runs[name] = os.path.join(w, f"run.{name}.trec")
        how = ["--choice", args.fusion_choice] if args.fusion_choice else ["--method", args.fusion] + \
            (["--alpha", args.alpha] if args.alpha is not None else []) + \
            (["--normalization"] if args.fusion_normalization else [])
        steps.append(Step(name, _py("repllama_pyserini.fusion", "--runs", *[runs[n] for n in fuse], *how,
                                    "--depth", args.hits, "--k", args.hits, "--output", runs[name]), runs[name]))
    if args.reranker:
        source = args.rerank_input or next(n for n in ("hybrid", "dense", "bm25", *runs) if n in runs)
        if source not in runs:
            raise InputError(f"--rerank-input {source!r} is not a run of this pipeline; known: {sorted(runs)}")
        if not corpus:
            raise InputError("--reranker needs the documents' text: --dataset or --corpus")
        runs["rerank"] = os.path.join(w, f"run.rerank.{source}.trec")
        extra = ["--depth", args.depth] if args.depth else []
        extra += ["--batch-size", args.batch_size] + (["--max-length", args.rerank_max_length]
                                                      if args.rerank_max_length else [])
        steps.append(Step("rerank", _py("repllama_pyserini.rerank", "--model", args.reranker, "--run", runs[source],
                                        "--topics", topics_file, "--corpus", corpus, "--output", runs["rerank"],
                                        *extra), runs["rerank"]))
        if args.rerank_fusion_choice:  # the reranker's score interpolated with its input's
            runs["rerank+first"] = os.path.join(w, f"run.rerank.{source}.interpolated.trec")
            steps.append(Step("rerank+first", _py("repllama_pyserini.fusion", "--runs", runs[source], runs["rerank"],
                                                  "--choice", args.rerank_fusion_choice, "--output",
                                                  runs["rerank+first"]), runs["rerank+first"]))
    return steps


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m repllama_pyserini.workflows.pipeline", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("collection: --dataset, or --corpus/--topics/--qrels")
    src.add_argument("--dataset", help="a BEIR dataset name (under --data) or a BEIR folder")
    src.add_argument("--data", default=None, help="data dir (default: $REPLLAMA_PYSERINI_DATA or ../shared/ir-data)")
    src.add_argument("--corpus", help="corpus (BEIR folder, JSONL(.gz), JsonCollection, MS MARCO TSV)")
    src.add_argument("--topics")
    src.add_argument("--qrels")
    src.add_argument("--name", help="label of this collection (default: dataset name)")
    src.add_argument("--run", action="append", default=[], metavar="NAME=PATH",
                     help="an existing first-stage run (TREC or rank_llm JSON), repeatable")
    p.add_argument("--first-stage", nargs="*", choices=FIRST_STAGES, default=None,
                   help="first stages to compute (default: bm25 for a --dataset, none otherwise)")
    p.add_argument("--encoder", help="RepLLaMA encoder: preset name, hub id or directory")
    p.add_argument("--reranker", help="RankLLaMA reranker: preset name, hub id or directory")
    p.add_argument("--rerank-input", help="which run to rerank (default: hybrid, else dense, else bm25)")
    p.add_argument("--fuse", nargs="+", help="runs to fuse into 'hybrid' (default with --first-stage hybrid: bm25 dense)")
    p.add_argument("--fusion", default="rrf", choices=("rrf", "interpolation", "hybrid", "average"))
    p.add_argument("--alpha", type=float, default=None)
    p.add_argument("--fusion-normalization", action="store_true", help="hybrid: Pyserini's score normalisation")
    p.add_argument("--fusion-choice", help="a fusion setting chosen on held-out queries by "
                                           "repllama_pyserini.fusion.tune (overrides --fusion/--alpha)")
    p.add_argument("--hits", type=int, default=1000)
    p.add_argument("--depth", type=int, default=None, help="rerank depth (default: the reranker preset's)")
    p.add_argument("--rerank-max-length", type=int, default=None,
                   help="reranker: max tokens of a query-document pair (default: the reranker preset's)")
    p.add_argument("--passage-max-length", type=int, default=None,
                   help="dense encoder: max passage tokens (default: the encoder preset's; 156 for a model without "
                        "one, the MS MARCO setting: BEIR corpora with long documents may want 512)")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    p.add_argument("--max-docs", type=int, default=None, help="encode only the first N docs (smoke tests)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--remove-query", action=argparse.BooleanOptionalAction, default=None,
                   help="drop hits whose docid is the query id (default: on for BEIR, as Pyserini's 2CR)")
    p.add_argument("--conventions", default=None, help="evaluation conventions (default: inferred from the qrels)")
    p.add_argument("--work", default=None, help="outputs (default: ./runs/pipeline/NAME, under the current directory)")
    p.add_argument("--json", default=None, help="also write the metrics table as JSON")
    p.add_argument("--rerank-fusion-choice", help="also interpolate the reranked run with its input, as chosen on "
                                                   "held-out queries by repllama_pyserini.fusion.tune")
    p.add_argument("--sample-queries", type=int, default=None,
                   help="run and evaluate a seeded random sample of N judged queries (demos; say so when reporting)")
    p.add_argument("--seed", type=int, default=13, help="seed of --sample-queries")
    p.add_argument("--dry-run", action="store_true")
    args = p.parse_args(argv)

    from ..eval import evaluate, format_table
    from ..formats import beir_dataset, conventions_of_qrels
    corpus, topics_path, qrels_path = args.corpus, args.topics, args.qrels
    conv = args.conventions
    if args.dataset:
        ds = beir_dataset(args.dataset, args.data)
        corpus, topics_path, qrels_path = corpus or ds.corpus, topics_path or ds.topics_path, qrels_path or ds.qrels
        name = args.name or ds.name
        conv = conv or "beir"
        topics = ds.topics() if not args.topics else read_topics(args.topics)
        args.remove_query = True if args.remove_query is None else args.remove_query
        args.first_stage = ["bm25"] if args.first_stage is None else args.first_stage
    else:
        if not (topics_path and qrels_path):
            raise InputError("give --dataset, or --topics and --qrels (and --corpus to compute first stages)")
        name = args.name or os.path.splitext(os.path.basename(qrels_path))[0]
        topics = read_topics(topics_path)
    qrels = read_qrels(qrels_path)
    missing = [q for q in qrels if q not in topics]
    if missing:
        raise InputError(f"{len(missing)} judged topics (e.g. {missing[0]!r}) are absent from {topics_path}")
    topics = {q: t for q, t in topics.items() if q in qrels}
    if args.sample_queries:
        import random
        keep = set(random.Random(args.seed).sample(sorted(topics), min(args.sample_queries, len(topics))))
        topics = {q: t for q, t in topics.items() if q in keep}
        qrels = {q: j for q, j in qrels.items() if q in keep}
    args.work = os.path.abspath(args.work or os.path.join("runs", "pipeline", name))
    os.makedirs(args.work, exist_ok=True)
    topics_file = _write_topics(topics, os.path.join(args.work, "topics.tsv"))

    runs: Dict[str, str] = {}
    for spec in args.run:
        rname, sep, path = spec.partition("=")
        if not sep or not rname:
            raise InputError(f"--run expects NAME=PATH, got {spec!r}")
        runs[rname] = _as_trec(rname, path, args.work)
    from ..presets import resolve
    if args.encoder:  # a misspelled model is reported before any stage runs
        resolve(args.encoder, "encoder")
    if args.reranker:
        resolve(args.reranker, "reranker")
    steps = build_steps(args, topics_file, corpus, runs)
    run_steps(steps, name, dry_run=args.dry_run)
    if args.dry_run:
        return
    conv = conv or conventions_of_qrels(qrels_path)
    rows = {rname: evaluate(path, qrels, conventions=conv) for rname, path in runs.items()}
    sample = f" (a seeded sample: --sample-queries {args.sample_queries} --seed {args.seed})" \
        if args.sample_queries else ""
    print(f"\n{name}: {len(topics)} judged topics{sample}, conventions {conv or '(default metrics)'}")
    print(format_table(rows))
    if args.json:
        write_json(args.json, {"collection": name, "conventions": conv, "runs": runs, "metrics": rows})


if __name__ == "__main__":
    run_cli(main)
