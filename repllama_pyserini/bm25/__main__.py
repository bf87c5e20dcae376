"""Pyserini BM25 from the command line::

    python -m repllama_pyserini.bm25 index  --corpus CORPUS --index DIR [--fields flat|multifield]
    python -m repllama_pyserini.bm25 search --index DIR --topics FILE --output RUN [--hits 1000] [--remove-query]
    python -m repllama_pyserini.bm25 beir   --dataset scifact [--data DIR] [--work DIR] [--report FILE]
"""
from __future__ import annotations

import argparse
import os
from typing import Dict, Optional

from ..cli import InputError, positive, run_cli
from ..formats import beir_dataset, read_qrels, read_topics, write_run
from ..formats.files import atomic_write
from . import FIELDS, build_index, search


def _cmd_index(args) -> None:
    build_index(args.corpus, args.index, args.fields, args.threads, args.overwrite)
    print(f"index ready: {args.index}")


def _cmd_search(args) -> None:
    run = search(args.index, read_topics(args.topics), args.hits, args.k1, args.b, args.fields, args.remove_query,
                 args.threads, progress=args.progress)
    write_run(run, args.output, tag=args.tag)
    print(f"wrote {args.output} ({len(run)} queries)")


def _published(condition: str, dataset: str, data: Optional[str]) -> Dict[str, float]:
    from ..formats.collections import twocr_beir_scores
    try:
        return twocr_beir_scores(condition, dataset, data)
    except InputError:
        return {}


def _cmd_beir(args) -> None:
    from ..eval import evaluate, format_table
    ds = beir_dataset(args.dataset, args.data)
    work = os.path.abspath(args.work)
    topics, qrels = ds.topics(), read_qrels(ds.qrels)
    rows, compare = {}, []
    for fields in args.fields_list:
        index_dir = os.path.join(work, "indexes", f"beir-v1.0.0-{ds.name}.{fields}")
        build_index(ds.corpus, index_dir, fields, args.threads)
        run = search(index_dir, topics, args.hits, fields=fields, remove_query=True, threads=args.threads)
        write_run(run, os.path.join(work, "runs", f"run.beir-v1.0.0-{ds.name}.bm25-{fields}.trec"), tag=f"bm25-{fields}")
        rows[f"BM25 {fields}"] = got = evaluate(run, qrels, conventions="beir")
        compare.append((fields, got, _published(f"bm25-{fields}", ds.name, args.data)))
        if compare[-1][2]:
            rows[f"  Pyserini 2CR bm25-{fields} (published)"] = compare[-1][2]
    print(f"\nBEIR {ds.name} ({len(topics)} test queries)")
    print(format_table(rows))
    if args.report:
        _write_report(args.report, ds.name, compare)


def _write_report(path: str, dataset: str, compare) -> None:
    """A markdown table: our BM25 next to Pyserini's published 2CR scores, to 4 decimals."""
    from importlib.metadata import version
    lines = ["# BM25 on BEIR: this toolkit vs Pyserini's published 2CR scores", "",
             f"Made with `python -m repllama_pyserini.bm25 beir --dataset {dataset} --fields "
             f"{' '.join(c[0] for c in compare)} --report {path}` (Pyserini {version('pyserini')}). "
             "The other BEIR BM25 regressions are in `docs/regressions/` and need their corpora.", "",
             "| dataset | index | metric | Pyserini 2CR | ours | match |", "|---|---|---|---|---|---|"]
    for fields, got, expected in compare:
        for metric in ("nDCG@10", "R@100", "R@1000"):
            exp = expected.get(metric)
            ok = "" if exp is None else ("yes" if round(got[metric], 4) == exp else "NO")
            lines.append(f"| {dataset} | {fields} | {metric} | {'' if exp is None else f'{exp:.4f}'} | "
                         f"{got[metric]:.4f} | {ok} |")
    with atomic_write(path) as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {path}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m repllama_pyserini.bm25", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    pi = sub.add_parser("index", help="build a Lucene index from a corpus")
    pi.add_argument("--corpus", required=True, help="any corpus layout (BEIR, JSONL, JsonCollection, TSV; .gz)")
    pi.add_argument("--index", required=True)
    pi.add_argument("--fields", choices=FIELDS, default="flat")
    pi.add_argument("--threads", type=int, default=2)
    pi.add_argument("--overwrite", action="store_true", help="rebuild a complete index (kept until the new one is done)")
    pi.set_defaults(fn=_cmd_index)
    ps = sub.add_parser("search", help="BM25 search, TREC run out")
    ps.add_argument("--index", required=True)
    ps.add_argument("--topics", required=True, help="qid<TAB>text file (.tsv/.txt, optionally .gz) or queries.jsonl")
    ps.add_argument("--output", required=True)
    ps.add_argument("--hits", type=int, default=1000)
    ps.add_argument("--k1", type=float, default=0.9)
    ps.add_argument("--b", type=float, default=0.4)
    ps.add_argument("--fields", choices=FIELDS, default="flat")
    ps.add_argument("--remove-query", action="store_true", help="drop hits whose docid equals the query id")
    ps.add_argument("--threads", type=int, default=2)
    ps.add_argument("--tag", default="bm25")
    ps.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    ps.set_defaults(fn=_cmd_search)
    pb = sub.add_parser("beir", help="index + search + evaluate a BEIR dataset (Pyserini 2CR settings)")
    pb.add_argument("--dataset", default="scifact", help="a BEIR name (found in --data) or a BEIR folder path")
    pb.add_argument("--data", help="data folder (default: $REPLLAMA_PYSERINI_DATA or ../shared/ir-data)")
    pb.add_argument("--work", default="runs", help="where indexes and runs go")
    pb.add_argument("--fields", dest="fields_list", nargs="+", choices=FIELDS, default=["flat"])
    pb.add_argument("--hits", type=int, default=1000)
    pb.add_argument("--threads", type=int, default=2)
    pb.add_argument("--report", help="write a markdown table next to Pyserini's published scores")
    pb.set_defaults(fn=_cmd_beir)
    args = p.parse_args(argv)
    for n in ("hits", "threads"):
        positive(n, getattr(args, n, None))
    args.fn(args)


if __name__ == "__main__":
    run_cli(main)
