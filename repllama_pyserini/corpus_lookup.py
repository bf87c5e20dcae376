"""Fetch the text of just the documents a run needs, from any corpus layout the project reads.

* JSONL corpora (BEIR folder / ``corpus.jsonl[.gz]``, Pyserini JsonCollection folder, Tevatron JSONL), through
  :func:`repllama_pyserini.io.corpus_files` (same normalisation as ``io.iter_corpus``, plus the optional ``url``);
* MS MARCO style TSV (plain or ``.gz``): ``docid \\t text`` (passages), ``docid \\t title \\t text``, or
  ``docid \\t url \\t title \\t body`` (``msmarco-docs.tsv``);
* a Lucene index with stored raw documents (``LuceneSearcher(index).doc(docid).raw()``);
* rank_llm's candidate files (``retrieve_results_*.json[.gz]``), which carry the query and the passage text.

Corpora are streamed: the needed docids are collected first, only those documents are kept in memory.
"""
from __future__ import annotations

import glob
import json
import os
from typing import Dict, Iterable, Iterator, NamedTuple, Optional, Set, Tuple

from .io import InputError, Run, corpus_files, open_text, require_file


class Doc(NamedTuple):
    title: str
    text: str
    url: str = ""


def is_lucene_index(path: str) -> bool:
    return os.path.isdir(path) and bool(glob.glob(os.path.join(path, "segments_*")))


def _is_tsv(path: str) -> bool:
    """A file is TSV when its first non-empty line is not a JSON object."""
    if not os.path.isfile(path):
        return False
    name = path[:-3] if path.endswith(".gz") else path
    if name.endswith((".tsv", ".txt")):
        return True
    if name.endswith((".jsonl", ".json")):
        return False
    with open_text(path) as f:
        for line in f:
            if line.strip():
                return not line.lstrip().startswith("{")
    return False


def parse_raw(raw: str) -> Doc:
    """A stored raw document: a JSON record (JsonCollection ``id,contents``, BEIR ``_id,title,text``, MS MARCO doc
    segments ``url,title,segment``...) or plain text."""
    s = raw.strip()
    if s.startswith("{"):
        try:
            obj = json.loads(s)
        except json.JSONDecodeError:
            return Doc("", raw)
        if isinstance(obj, dict):
            text = next((obj[k] for k in ("text", "contents", "segment", "body") if obj.get(k) is not None), "")
            return Doc(str(obj.get("title") or ""), str(text), str(obj.get("url") or ""))
    return Doc("", raw)


def _jsonl_docs(path: str, needed: Set[str]) -> Iterator[Tuple[str, Doc]]:
    from .io import _doc_fields, jsonl_records  # the project's one normalisation of corpus records
    for f in corpus_files(path):
        for lineno, obj in jsonl_records(f):
            docid, title, text = _doc_fields(obj, f"{f}:{lineno}")
            if docid in needed:
                yield docid, Doc(title, text, str(obj.get("url") or ""))


def _tsv_docs(path: str, needed: Set[str]) -> Iterator[Tuple[str, Doc]]:
    ncols = None
    with open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n\r")
            if not line.strip():
                continue
            if ncols is None:
                ncols = min(line.count("\t") + 1, 4)
                if ncols < 2:
                    raise InputError(f"{path}:{lineno}: expected 'docid<TAB>text'")
            docid, sep, rest = line.partition("\t")
            if docid not in needed:
                continue
            if not sep:
                raise InputError(f"{path}:{lineno}: expected 'docid<TAB>text'")
            parts = rest.split("\t", ncols - 2)
            if ncols == 2 or len(parts) == 1:
                yield docid, Doc("", rest)
            elif ncols == 3 or len(parts) == 2:
                yield docid, Doc(parts[0], parts[1])
            else:
                yield docid, Doc(parts[1], parts[2], parts[0])


def load_docs(corpus: str, docids: Iterable[str], progress: bool = True) -> Dict[str, Doc]:
    """``{docid: Doc}`` for the wanted docids found in ``corpus`` (absent ones are simply not in the result).
    A file corpus is streamed once (stopping early when everything wanted was found)."""
    from tqdm import tqdm
    needed = set(docids)
    require_file(corpus, "corpus")
    if is_lucene_index(corpus):
        return _lucene_docs(corpus, needed, progress)
    if os.path.isfile(corpus) and _is_tsv(corpus):
        it = _tsv_docs(corpus, needed)
    else:
        it = _jsonl_docs(corpus, needed)
    docs: Dict[str, Doc] = {}
    if not needed:
        return docs
    with tqdm(total=len(needed), desc="reading corpus", unit="doc", disable=not progress) as bar:
        for docid, doc in it:
            if docid not in docs:
                bar.update(1)
            docs[docid] = doc
            if len(docs) == len(needed):
                break
    return docs


def _lucene_docs(index: str, needed: Set[str], progress: bool) -> Dict[str, Doc]:
    from pyserini.search.lucene import LuceneSearcher
    from tqdm import tqdm
    searcher = LuceneSearcher(index)
    docs: Dict[str, Doc] = {}
    for docid in tqdm(sorted(needed), desc="fetching docs", unit="doc", disable=not progress):
        d = searcher.doc(docid)
        if d is None:
            continue
        raw = d.raw()
        if raw is None:
            raw = d.contents()
        if raw is None:
            raise InputError(f"Lucene index {index} stores neither raw documents nor contents "
                             f"(index it with --storeRaw)")
        docs[docid] = parse_raw(raw)
    return docs


def read_rank_llm_candidates(path: str) -> Tuple[Dict[str, str], Run, Dict[str, Doc], Dict[str, Dict[str, int]]]:
    """rank_llm ``retrieve_results`` JSON: ``[{"query", "hits": [{"qid","docid","rank","score","content"}]}]``.

    Returns (topics, run scores, docs, run ranks)."""
    require_file(path, "candidates file")
    with open_text(path) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}: malformed JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON list of {{'query', 'hits'}} entries")
    topics: Dict[str, str] = {}
    run: Run = {}
    ranks: Dict[str, Dict[str, int]] = {}
    docs: Dict[str, Doc] = {}
    for i, entry in enumerate(data):
        if not isinstance(entry, dict) or "query" not in entry or "hits" not in entry:
            raise InputError(f"{path}: entry {i} needs 'query' and 'hits'")
        for j, hit in enumerate(entry["hits"]):
            try:
                qid, docid = str(hit["qid"]), str(hit["docid"])
                score = float(hit["score"])
            except (KeyError, TypeError, ValueError):
                raise InputError(f"{path}: entry {i} hit {j} needs 'qid', 'docid' and a numeric 'score'") from None
            topics[qid] = str(entry["query"])
            run.setdefault(qid, {})[docid] = score
            ranks.setdefault(qid, {})[docid] = int(hit.get("rank", j + 1))
            docs[docid] = Doc("", str(hit.get("content") or ""))
    if not run:
        raise InputError(f"no candidates in {path}")
    return topics, run, docs, ranks


def write_candidates_as_trec(path: str, out: str, tag: Optional[str] = None) -> str:
    """Convert rank_llm candidates to a TREC run keeping their ranks and scores exactly (full float precision)."""
    from .io import atomic_write
    _, run, _, ranks = read_rank_llm_candidates(path)
    tag = tag or os.path.basename(path).split(".")[0]
    with atomic_write(out) as f:
        for qid, hits in run.items():
            for docid, rank in sorted(ranks[qid].items(), key=lambda kv: kv[1]):
                f.write(f"{qid} Q0 {docid} {rank} {hits[docid]!r} {tag}\n")
    return out
