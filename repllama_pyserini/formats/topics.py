"""Topics (queries): ``qid \\t text`` files (TREC / MS MARCO / BEIR ``.tsv``, ``.txt``, gzipped or not) and BEIR
``queries.jsonl``. A qid given twice is an error; an empty query is dropped with a counted warning that names it
(it cannot be searched or reranked)."""
from __future__ import annotations

import logging
from typing import Dict

from ..cli import InputError
from .files import iter_lines, jsonl_records

logger = logging.getLogger(__name__)


def _items(path: str):
    if path.endswith((".jsonl", ".jsonl.gz")):
        for where, obj in jsonl_records(path):
            qid = obj.get("_id", obj.get("query_id", obj.get("qid")))
            text = obj.get("text", obj.get("query"))
            if qid is None or text is None:
                raise InputError(f"{where}: a query record needs '_id' and 'text'")
            yield where, str(qid).strip(), str(text)
        return
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        qid, sep, text = line.partition("\t")
        if not sep:
            raise InputError(f"{path}:{lineno}: expected 'qid<TAB>query'")
        yield f"{path}:{lineno}", qid.strip(), text


def read_topics(path: str) -> Dict[str, str]:
    """``{qid: query text}`` in file order."""
    topics: Dict[str, str] = {}
    first: Dict[str, str] = {}
    empty = []
    for where, qid, text in _items(path):
        if not qid or any(c.isspace() for c in qid):
            raise InputError(f"{where}: query id {qid!r} is empty or contains whitespace (TREC runs are "
                             f"whitespace-separated)")
        if qid in first:
            raise InputError(f"{where}: query id {qid!r} appears a second time (first at {first[qid]})")
        first[qid] = where
        text = text.strip()
        if not text:
            empty.append(where)
            continue
        topics[qid] = text
    if empty:
        logger.warning("%s: %d empty queries dropped (first at %s)", path, len(empty), empty[0])
    if not topics:
        raise InputError(f"no topics in {path}")
    return topics
