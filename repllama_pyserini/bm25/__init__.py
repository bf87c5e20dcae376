"""Pyserini BM25: index a corpus as Pyserini's ``beir-v1.0.0-*.flat`` / ``.multifield`` indexes are built, and search
it exactly as ``python -m pyserini.search.lucene --bm25`` does. Indexing and search are Pyserini's (Anserini's
``IndexCollection``, ``LuceneSearcher``); this module lays any corpus layout out as a JsonCollection (flat:
``contents = title + " " + text``; multifield: ``title`` and ``contents = text``). CLI ``python -m
repllama_pyserini.bm25 index|search|beir``."""
from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Dict, Optional

from tqdm import tqdm

from ..cli import InputError, log
from ..formats.corpus import iter_corpus
from ..formats.files import make_temp_dir
from ..formats.runs import Run

FIELDS = ("flat", "multifield")
MULTIFIELD_WEIGHTS = {"contents": 1.0, "title": 1.0}
INDEX_DONE = "repllama_pyserini.index.json"


def flat_contents(title: str, text: str) -> str:
    """Pyserini's BEIR flat layout: title and text in one field."""
    return f"{title} {text}" if title else text


def write_json_collection(corpus: str, out_dir: str, fields: str = "flat") -> int:
    """Stream ``corpus`` into a Pyserini JsonCollection file; returns the document count."""
    if fields not in FIELDS:
        raise InputError(f"--fields must be one of {FIELDS}, got {fields!r}")
    os.makedirs(out_dir, exist_ok=True)
    n = 0
    with open(os.path.join(out_dir, "docs.jsonl"), "w", encoding="utf-8") as f:
        for docid, doc, _ in tqdm(iter_corpus(corpus), desc="preparing collection", unit="doc", file=sys.stderr):
            rec = ({"id": docid, "contents": flat_contents(doc.title, doc.text)} if fields == "flat"
                   else {"id": docid, "title": doc.title, "contents": doc.text})
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    return n


def index_is_complete(index_dir: str) -> bool:
    return os.path.isfile(os.path.join(index_dir, INDEX_DONE))


def _java_env() -> dict:
    from ..java import find_java
    return dict(os.environ, JAVA_HOME=find_java().home)


def build_index(corpus: str, index_dir: str, fields: str = "flat", threads: int = 2, overwrite: bool = False) -> str:
    """A Lucene index built by Pyserini's indexer (positions, docvectors and raw documents stored), under a temporary
    name renamed when complete; a complete index is reused (``overwrite`` rebuilds it, the old one kept until then)."""
    if index_is_complete(index_dir) and not overwrite:
        log(f"reusing complete index {index_dir}")
        return index_dir
    parent = os.path.dirname(os.path.abspath(index_dir))
    os.makedirs(parent, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent, prefix=".collection-") as coll:
        n = write_json_collection(corpus, coll, fields)
        tmp = make_temp_dir(index_dir)
        cmd = [sys.executable, "-m", "pyserini.index.lucene", "--collection", "JsonCollection", "--input", coll,
               "--index", tmp, "--generator", "DefaultLuceneDocumentGenerator", "--threads", str(threads),
               "--storePositions", "--storeDocvectors", "--storeRaw"] + (["--fields", "title"] if fields == "multifield"
                                                                        else [])
        log("indexing: " + " ".join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True, env=_java_env())
        if proc.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise InputError(f"Pyserini indexing failed (exit {proc.returncode}): {tail[0]}")
        with open(os.path.join(tmp, INDEX_DONE), "w") as f:
            json.dump({"corpus": os.path.abspath(corpus), "fields": fields, "documents": n}, f)
    from ..dense.index import swap_in
    swap_in(tmp, index_dir)
    return index_dir


def search(index_dir: str, topics: Dict[str, str], hits: int = 1000, k1: float = 0.9, b: float = 0.4,
           fields: Optional[str] = None, remove_query: bool = False, threads: int = 2, batch_size: int = 256) -> Run:
    """BM25 top-``hits`` of every topic; ``fields='multifield'`` searches ``contents`` and ``title`` with weight 1.0
    each; ``remove_query`` drops a hit whose docid is the query id (Pyserini's ``--remove-query``)."""
    if not os.path.isdir(index_dir):
        raise InputError(f"index not found: {index_dir}")
    if not glob.glob(os.path.join(index_dir, "segments_*")):
        raise InputError(f"{index_dir} is not a Lucene index (no segments_* file); build one with "
                         f"`python -m repllama_pyserini.bm25 index`")
    from pyserini.search.lucene import LuceneSearcher
    searcher = LuceneSearcher(index_dir)
    searcher.set_bm25(k1, b)
    weights = MULTIFIELD_WEIGHTS if fields == "multifield" else {}
    qids, run = list(topics), {}
    with tqdm(total=len(qids), desc="BM25 search", unit="q", file=sys.stderr) as bar:
        for start in range(0, len(qids), batch_size):
            batch = qids[start:start + batch_size]
            results = searcher.batch_search([topics[q] for q in batch], batch, k=hits, threads=threads, fields=weights)
            for qid in batch:
                run[qid] = {h.docid: float(h.score) for h in results.get(qid, []) if not (remove_query and h.docid == qid)}
            bar.update(len(batch))
    return run
