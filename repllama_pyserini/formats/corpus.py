"""Corpora, one reader for every layout the project accepts, plain or gzipped:

* a JSONL file: BEIR (``_id, title, text``), Tevatron (``docid, title, text``), Pyserini JsonCollection
  (``id, contents``; ``url``/``title`` kept when present);
* a TSV file (MS MARCO): ``docid \\t text``, ``docid \\t title \\t text`` or ``docid \\t url \\t title \\t body``;
  the first line fixes the column count;
* a folder: BEIR (``corpus.jsonl[.gz]``), a Pyserini JsonCollection (``*.jsonl``/``*.json``, sorted) or TSV files;
* a Lucene index built with ``--storeRaw`` (documents fetched by docid).

The same rules for every command (``docs/reliability.md``): a docid is non-empty, without whitespace and unique; a
document may be empty (counted by the commands that care); every error is ``file:line: what``.
"""
from __future__ import annotations

import glob
import json
import os
from typing import Dict, Iterable, Iterator, List, NamedTuple, Optional, Set, Tuple

from ..cli import InputError
from .files import first_line, iter_lines, json_object, require_file

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz")
TSV_SUFFIXES = (".tsv", ".tsv.gz", ".txt", ".txt.gz")
TSV_COLUMNS = {2: ("text",), 3: ("title", "text"), 4: ("url", "title", "text")}


class Doc(NamedTuple):
    title: str
    text: str
    url: str = ""

    def field(self, name: str) -> str:
        return getattr(self, name, "") or ""

    def is_empty(self) -> bool:
        return not (self.title.strip() or self.text.strip() or self.url.strip())


def is_lucene_index(path: str) -> bool:
    return os.path.isdir(path) and bool(glob.glob(os.path.join(path, "segments_*")))


def file_format(path: str) -> str:
    """``jsonl`` or ``tsv``: by the suffix, else by the first line (a JSON object or not)."""
    if path.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if path.endswith(TSV_SUFFIXES):
        return "tsv"
    return "jsonl" if first_line(path).lstrip().startswith("{") else "tsv"


def corpus_files(path: str) -> Tuple[str, List[str]]:
    """``(layout, files)``: layout is ``lucene`` (files = [index dir]), ``jsonl`` or ``tsv``."""
    require_file(path, "corpus")
    if os.path.isfile(path):
        return file_format(path), [path]
    if is_lucene_index(path):
        return "lucene", [path]
    for name in ("corpus.jsonl", "corpus.jsonl.gz"):
        if os.path.isfile(os.path.join(path, name)):
            return "jsonl", [os.path.join(path, name)]
    for layout, suffixes in (("jsonl", JSONL_SUFFIXES), ("tsv", TSV_SUFFIXES)):
        files = sorted(f for s in suffixes for f in glob.glob(os.path.join(path, "*" + s)))
        if files:
            return layout, files
    raise InputError(f"{path}: no corpus found (expected corpus.jsonl, *.jsonl / *.json, *.tsv, or a Lucene index)")


def check_docid(docid: str, where: str) -> str:
    docid = docid.strip()
    if not docid or any(c.isspace() for c in docid):
        raise InputError(f"{where}: docid {docid!r} is empty or contains whitespace (TREC runs and Pyserini's docid "
                         f"file are whitespace-separated)")
    return docid


def record_doc(obj: dict, where: str) -> Tuple[str, Doc]:
    """A JSON corpus record as ``(docid, Doc)``."""
    for key in ("_id", "docid", "id"):
        if obj.get(key) is not None:
            docid = check_docid(str(obj[key]), where)
            break
    else:
        raise InputError(f"{where}: record has no '_id', 'docid' or 'id' field")
    text = obj.get("text", obj.get("contents"))
    if text is None:
        raise InputError(f"{where}: document {docid!r} has no 'text' or 'contents' field")
    return docid, Doc(str(obj.get("title") or ""), str(text), str(obj.get("url") or ""))


def parse_raw(raw: str) -> Doc:
    """A raw document stored in a Lucene index: a JSON record (BEIR, JsonCollection, MS MARCO doc segments) or text."""
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


def _jsonl(files: List[str]) -> Iterator[Tuple[str, Doc, str]]:
    for f in files:
        if f.endswith((".json", ".json.gz")) and first_line(f).lstrip().startswith("["):
            raise InputError(f"{f}: a JSON array is not a corpus; convert it to JSONL (one object per line)")
        for lineno, line in iter_lines(f):
            if line.strip():
                where = f"{f}:{lineno}"
                docid, doc = record_doc(json_object(line, where), where)
                yield docid, doc, where


def _tsv(files: List[str], wanted: Optional[Set[str]] = None) -> Iterator[Tuple[str, Doc, str]]:
    ncols = None
    for f in files:
        for lineno, line in iter_lines(f):
            if not line.strip():
                continue
            where = f"{f}:{lineno}"
            if wanted is not None and line.partition("\t")[0].strip() not in wanted:
                continue
            parts = line.split("\t")
            if ncols is None:
                ncols = len(parts)
                if ncols not in TSV_COLUMNS:
                    raise InputError(f"{where}: expected 'docid<TAB>text', 'docid<TAB>title<TAB>text' or "
                                     f"'docid<TAB>url<TAB>title<TAB>body', got {ncols} column(s)")
            elif len(parts) != ncols:
                raise InputError(f"{where}: {len(parts)} tab-separated columns, but the corpus has {ncols}")
            fields = dict(zip(TSV_COLUMNS[ncols], parts[1:]))
            yield check_docid(parts[0], where), Doc(fields.get("title", ""), fields["text"], fields.get("url", "")), where


def iter_corpus(path: str, unique: bool = True) -> Iterator[Tuple[str, Doc, str]]:
    """``(docid, Doc, 'file:line')`` of every document, streamed (never the whole corpus in memory; the duplicate
    check keeps the docids). ``unique=False`` leaves the duplicate check to the caller."""
    layout, files = corpus_files(path)
    if layout == "lucene":
        raise InputError(f"{path} is a Lucene index: give the corpus file(s) it was built from")
    seen: Set[str] = set()
    n = 0
    for docid, doc, where in (_jsonl(files) if layout == "jsonl" else _tsv(files)):
        if unique:
            if docid in seen:
                raise InputError(f"{where}: docid {docid!r} appears a second time; deduplicate the corpus")
            seen.add(docid)
        n += 1
        yield docid, doc, where
    if n == 0:
        raise InputError(f"empty corpus: {path}")


def count_docs(path: str) -> Optional[int]:
    """Non-blank lines of a file corpus, counted from raw bytes (for progress bars); None for a Lucene index."""
    from .files import count_lines
    layout, files = corpus_files(path)
    return None if layout == "lucene" else sum(count_lines(f) for f in files)


def load_docs(path: str, docids: Iterable[str], progress: bool = True) -> Dict[str, Doc]:
    """``{docid: Doc}`` for the wanted docids found in the corpus (absent ones are not in the result): a file corpus
    is streamed once, stopping when everything was found; a wanted docid found twice is an error."""
    from tqdm import tqdm
    needed = set(docids)
    layout, files = corpus_files(path)
    if layout == "lucene":
        return _lucene_docs(files[0], needed, progress)
    docs: Dict[str, Doc] = {}
    where_of: Dict[str, str] = {}
    if not needed:
        return docs
    it = _jsonl(files) if layout == "jsonl" else _tsv(files, needed)
    with tqdm(total=len(needed), desc="reading corpus", unit="doc", disable=not progress) as bar:
        for docid, doc, where in it:
            if docid not in needed:
                continue
            if docid in docs:
                raise InputError(f"{where}: docid {docid!r} appears a second time (first at {where_of[docid]}); "
                                 f"deduplicate the corpus")
            docs[docid], where_of[docid] = doc, where
            bar.update(1)
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
        raw = d.raw() if d.raw() is not None else d.contents()
        if raw is None:
            raise InputError(f"Lucene index {index} stores neither raw documents nor contents (index with --storeRaw)")
        docs[docid] = parse_raw(raw)
    return docs
