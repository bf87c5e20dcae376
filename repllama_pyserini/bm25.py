"""Pyserini BM25 baselines: index a corpus the way Pyserini's ``beir-v1.0.0-*.flat`` / ``.multifield`` indexes are
built, search it, write a TREC run.

    python -m repllama_pyserini.bm25 index  --corpus DIR_OR_JSONL --index DIR [--fields flat|multifield]
    python -m repllama_pyserini.bm25 search --index DIR --topics FILE --output RUN [--hits 1000] [--remove-query]
    python -m repllama_pyserini.bm25 beir   --dataset scifact [--data DIR] [--work DIR]   # index + search + eval

Indexing and search are Pyserini's (Anserini's ``IndexCollection``, ``LuceneSearcher``); this module only lays
the corpus out as a JsonCollection (flat: ``contents = title + " " + text``; multifield: ``title`` and
``contents = text`` as separate fields).
"""
from __future__ import annotations

import argparse
import json
import glob
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Dict, Optional

from tqdm import tqdm

from .io import InputError, Run, iter_corpus, make_temp_dir, read_topics, run_cli, write_run

FIELDS = ("flat", "multifield")
MULTIFIELD_WEIGHTS = {"contents": 1.0, "title": 1.0}
INDEX_DONE = "repllama_pyserini.index.json"


def flat_contents(title: str, text: str) -> str:
    """Pyserini's BEIR flat layout: title and text in one field."""
    return f"{title} {text}" if title else text


def write_json_collection(corpus: str, out_dir: str, fields: str = "flat") -> int:
    """Stream ``corpus`` (any supported layout) into a Pyserini JsonCollection file; returns the doc count."""
    if fields not in FIELDS:
        raise InputError(f"--fields must be one of {FIELDS}, got {fields!r}")
    os.makedirs(out_dir, exist_ok=True)
    n, seen = 0, set()
    with open(os.path.join(out_dir, "docs.jsonl"), "w", encoding="utf-8") as f:
        for docid, title, text in tqdm(iter_corpus(corpus), desc="preparing collection", unit="doc"):
            if docid in seen:
                raise InputError(f"duplicate docid {docid!r} in {corpus}")
            seen.add(docid)
            if fields == "flat":
                rec = {"id": docid, "contents": flat_contents(title, text)}
            else:
                rec = {"id": docid, "title": title, "contents": text}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    return n


def index_is_complete(index_dir: str) -> bool:
    return os.path.isfile(os.path.join(index_dir, INDEX_DONE))


def build_index(corpus: str, index_dir: str, fields: str = "flat", threads: int = 2, overwrite: bool = False) -> str:
    """Build a Lucene index with Pyserini's indexer (positions, docvectors and raw docs stored).

    The index is built under a temporary name and renamed when complete; an existing complete index is reused."""
    if index_is_complete(index_dir) and not overwrite:
        print(f"reusing complete index {index_dir}", file=sys.stderr)
        return index_dir
    parent = os.path.dirname(os.path.abspath(index_dir))
    os.makedirs(parent, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent, prefix=".collection-") as coll:
        n = write_json_collection(corpus, coll, fields)
        tmp_index = make_temp_dir(index_dir)
        cmd = [sys.executable, "-m", "pyserini.index.lucene", "--collection", "JsonCollection", "--input", coll,
               "--index", tmp_index, "--generator", "DefaultLuceneDocumentGenerator", "--threads", str(threads),
               "--storePositions", "--storeDocvectors", "--storeRaw"]
        if fields == "multifield":
            cmd += ["--fields", "title"]
        print("indexing:", " ".join(cmd), file=sys.stderr)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=_java_env())
        if proc.returncode != 0:
            shutil.rmtree(tmp_index, ignore_errors=True)
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise InputError(f"Pyserini indexing failed (exit {proc.returncode}): {tail[0]}")
        with open(os.path.join(tmp_index, INDEX_DONE), "w") as f:
            json.dump({"corpus": os.path.abspath(corpus), "fields": fields, "documents": n}, f)
    if os.path.exists(index_dir):
        shutil.rmtree(index_dir)
    os.replace(tmp_index, index_dir)
    return index_dir


def _java_env() -> dict:
    """Environment for a Pyserini subprocess: JAVA_HOME of the Java we picked (the .pth hook also does this)."""
    from .java import find_java
    env = dict(os.environ)
    env["JAVA_HOME"] = find_java().home
    return env


def search(index_dir: str, topics: Dict[str, str], hits: int = 1000, k1: float = 0.9, b: float = 0.4,
           fields: Optional[str] = None, remove_query: bool = False, threads: int = 2,
           batch_size: int = 256) -> Run:
    """BM25 top-``hits`` for every topic, exactly as ``python -m pyserini.search.lucene --bm25`` ranks them.

    ``fields='multifield'`` searches ``contents`` and ``title`` with weight 1.0 each (Pyserini's BEIR multifield);
    ``remove_query`` drops a hit whose docid equals the query id (Pyserini's ``--remove-query``)."""
    if not os.path.isdir(index_dir):
        raise InputError(f"index not found: {index_dir}")
    if not glob.glob(os.path.join(index_dir, "segments_*")):
        raise InputError(f"{index_dir} is not a Lucene index (no segments_* file); build one with "
                         f"`python -m repllama_pyserini.bm25 index`")
    from pyserini.search.lucene import LuceneSearcher
    searcher = LuceneSearcher(index_dir)
    searcher.set_bm25(k1, b)
    weights = MULTIFIELD_WEIGHTS if fields == "multifield" else {}
    qids = list(topics)
    run: Run = {}
    with tqdm(total=len(qids), desc="BM25 search", unit="q") as bar:
        for start in range(0, len(qids), batch_size):
            batch = qids[start:start + batch_size]
            results = searcher.batch_search([topics[q] for q in batch], batch, k=hits, threads=threads,
                                            fields=weights)
            for qid in batch:
                run[qid] = {h.docid: float(h.score) for h in results.get(qid, [])
                            if not (remove_query and h.docid == qid)}
            bar.update(len(batch))
    return run


def _cmd_index(args) -> None:
    build_index(args.corpus, args.index, args.fields, args.threads, args.overwrite)
    print(f"index ready: {args.index}")


def _cmd_search(args) -> None:
    topics = read_topics(args.topics)
    run = search(args.index, topics, args.hits, args.k1, args.b, args.fields, args.remove_query, args.threads)
    write_run(run, args.output, tag=args.tag)
    print(f"wrote {args.output} ({len(run)} queries)")


def _cmd_beir(args) -> None:
    from .data import beir_dataset
    from .eval import evaluate, format_table
    from .io import read_qrels
    ds = beir_dataset(args.dataset, args.data)
    work = os.path.abspath(args.work)
    topics = ds.topics()
    qrels = read_qrels(ds.qrels)
    rows, compare = {}, []
    for fields in args.fields_list:
        index_dir = os.path.join(work, "indexes", f"beir-v1.0.0-{ds.name}.{fields}")
        build_index(ds.corpus, index_dir, fields, args.threads)
        run_path = os.path.join(work, "runs", f"run.beir-v1.0.0-{ds.name}.bm25-{fields}.trec")
        run = search(index_dir, topics, args.hits, fields=fields, remove_query=True, threads=args.threads)
        write_run(run, run_path, tag=f"bm25-{fields}")
        rows[f"BM25 {fields}"] = got = evaluate(run, qrels, preset="beir")
        compare.append((fields, got, _published(f"bm25-{fields}", ds.name, args.data)))
        if compare[-1][2]:
            rows[f"  Pyserini 2CR bm25-{fields} (published)"] = compare[-1][2]
    print(f"\nBEIR {ds.name} ({len(topics)} test queries)")
    print(format_table(rows))
    if args.report:
        _write_report(args.report, ds.name, compare)


def _published(condition: str, dataset: str, data: Optional[str]) -> Dict[str, float]:
    from .twocr import beir_scores
    try:
        return beir_scores(condition, dataset, data)
    except InputError:
        return {}


def _write_report(path: str, dataset: str, compare) -> None:
    """A markdown table: our BM25 vs Pyserini's published 2CR scores, to 4 decimals."""
    from .io import atomic_write
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
    pi.add_argument("--corpus", required=True, help="BEIR folder, JSONL(.gz) file or JsonCollection folder")
    pi.add_argument("--index", required=True)
    pi.add_argument("--fields", choices=FIELDS, default="flat")
    pi.add_argument("--threads", type=int, default=2)
    pi.add_argument("--overwrite", action="store_true")
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
    ps.set_defaults(fn=_cmd_search)
    pb = sub.add_parser("beir", help="index + search + evaluate a BEIR dataset (Pyserini 2CR settings)")
    pb.add_argument("--dataset", default="scifact", help="a BEIR name (found in --data) or a BEIR folder path")
    pb.add_argument("--data", default=None, help="data dir (default: $REPLLAMA_PYSERINI_DATA or ../shared/ir-data)")
    pb.add_argument("--work", default="runs", help="where indexes and runs go")
    pb.add_argument("--fields", dest="fields_list", nargs="+", choices=FIELDS, default=["flat"])
    pb.add_argument("--hits", type=int, default=1000)
    pb.add_argument("--threads", type=int, default=2)
    pb.add_argument("--report", default=None, help="write a markdown table vs Pyserini's published scores")
    pb.set_defaults(fn=_cmd_beir)
    args = p.parse_args(argv)
    args.fn(args)


if __name__ == "__main__":
    run_cli(main)
