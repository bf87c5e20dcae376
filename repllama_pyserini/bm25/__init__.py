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
from ..formats.corpus import is_lucene_index, iter_corpus
from ..formats.files import atomic_dir, cleanup_partial
from ..formats.runs import Run

FIELDS = ("flat", "multifield")
MULTIFIELD_WEIGHTS = {"contents": 1.0, "title": 1.0}
INDEX_DONE = "repllama_pyserini.index.json"


def write_json_collection(corpus: str, out_dir: str, fields: str = "flat") -> int:
    """Stream ``corpus`` into a Pyserini JsonCollection file; returns the document count."""
    if fields not in FIELDS:
        raise InputError(f"--fields must be one of {FIELDS}, got {fields!r}")
    os.makedirs(out_dir, exist_ok=True)
    n = 0
    with open(os.path.join(out_dir, "docs.jsonl"), "w", encoding="utf-8") as f:
        for docid, doc, _ in tqdm(iter_corpus(corpus), desc="preparing collection", unit="doc", file=sys.stderr):
            flat = f"{doc.title} {doc.text}" if doc.title else doc.text  # Pyserini's BEIR flat: one field
            rec = ({"id": docid, "contents": flat} if fields == "flat"
                   else {"id": docid, "title": doc.title, "contents": doc.text})
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    return n


def index_is_complete(index_dir: str) -> bool:
    return os.path.isfile(os.path.join(index_dir, INDEX_DONE))


def _die_with_parent() -> None:
    """In the indexer's child process: die when the parent dies (Linux), so a killed build leaves no Java behind."""
    try:
        import ctypes
        import signal
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def build_index(corpus: str, index_dir: str, fields: str = "flat", threads: int = 2, overwrite: bool = False,
                stale: str = "error") -> str:
    """A Lucene index built by Pyserini's indexer (positions, docvectors and raw documents stored), under a temporary
    name renamed when complete. A complete index of the same corpus bytes and fields is reused; one of another corpus
    or fields is an error (``stale='rebuild'``: rebuilt, for caches), ``overwrite`` rebuilds it (the old one kept
    until the new one is complete). One builder at a time per index; a killed build's leftovers are removed."""
    from ..formats.corpus import corpus_files
    from ..java import find_java
    from ..jobs import Lock, content_fingerprint
    want = {"corpus": content_fingerprint(corpus_files(corpus)[1]), "fields": fields}
    parent, name = os.path.split(os.path.abspath(index_dir))
    os.makedirs(parent, exist_ok=True)
    with Lock(os.path.join(parent, f".{name}.lock"), f"the index {index_dir}"):
        if index_is_complete(index_dir) and not overwrite:
            with open(os.path.join(index_dir, INDEX_DONE), encoding="utf-8") as f:
                have = json.load(f)
            if {k: have.get(k) for k in want} == want:
                log(f"reusing complete index {index_dir}")
                return index_dir
            if stale != "rebuild":
                raise InputError(f"{index_dir} holds an index of another corpus or --fields ({have.get('fields')}); "
                                 f"pass --overwrite to rebuild it, or use another --index")
        cleanup_partial(index_dir)
        for old in glob.glob(os.path.join(parent, f".{name}.collection-*")):
            shutil.rmtree(old, ignore_errors=True)
        with tempfile.TemporaryDirectory(dir=parent, prefix=f".{name}.collection-") as coll:
            n = write_json_collection(corpus, coll, fields)
            with atomic_dir(index_dir) as tmp:
                cmd = [sys.executable, "-m", "pyserini.index.lucene", "--collection", "JsonCollection", "--input",
                       coll, "--index", tmp, "--generator", "DefaultLuceneDocumentGenerator", "--threads",
                       str(threads), "--storePositions", "--storeDocvectors", "--storeRaw"] + (
                           ["--fields", "title"] if fields == "multifield" else [])
                log("indexing: " + " ".join(cmd))
                proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=_die_with_parent,
                                      env=dict(os.environ, JAVA_HOME=find_java().home))
                if proc.returncode != 0:
                    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
                    raise InputError(f"Pyserini indexing failed (exit {proc.returncode}): {tail[0]}")
                with open(os.path.join(tmp, INDEX_DONE), "w") as f:
                    json.dump(dict(want, corpus_path=os.path.abspath(corpus), documents=n), f)
        return index_dir


def search(index_dir: str, topics: Dict[str, str], hits: int = 1000, k1: float = 0.9, b: float = 0.4,
           fields: Optional[str] = None, remove_query: bool = False, threads: int = 2, batch_size: int = 256,
           progress: bool = True) -> Run:
    """BM25 top-``hits`` of every topic; ``fields='multifield'`` searches ``contents`` and ``title`` with weight 1.0
    each; ``remove_query`` drops a hit whose docid is the query id (Pyserini's ``--remove-query``)."""
    if not os.path.isdir(index_dir):
        raise InputError(f"index not found: {index_dir}")
    if not is_lucene_index(index_dir):
        raise InputError(f"{index_dir} is not a Lucene index (no segments_* file); build one with "
                         f"`python -m repllama_pyserini.bm25 index`")
    if index_is_complete(index_dir):
        with open(os.path.join(index_dir, INDEX_DONE), encoding="utf-8") as f:
            built = json.load(f).get("fields")
        if built and built != (fields or "flat"):
            raise InputError(f"{index_dir} is a {built} index: search it with --fields {built}")
    from pyserini.search.lucene import LuceneSearcher
    searcher = LuceneSearcher(index_dir)
    searcher.set_bm25(k1, b)
    weights = MULTIFIELD_WEIGHTS if fields == "multifield" else {}
    qids, run = list(topics), {}
    with tqdm(total=len(qids), desc="BM25 search", unit="q", file=sys.stderr, disable=not progress) as bar:
        for start in range(0, len(qids), batch_size):
            batch = qids[start:start + batch_size]
            results = searcher.batch_search([topics[q] for q in batch], batch, k=hits, threads=threads, fields=weights)
            for qid in batch:
                run[qid] = {h.docid: float(h.score) for h in results.get(qid, []) if not (remove_query and h.docid == qid)}
            bar.update(len(batch))
    return run
