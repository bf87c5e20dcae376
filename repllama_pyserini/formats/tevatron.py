"""Tevatron training data, one JSON object per line (the layout of Tevatron's ``msmarco-passage-aug``)::

    {"query_id": "3", "query": "...", "positive_passages": [{"docid": "7", "title": "...", "text": "..."}],
     "negative_passages": [{"docid": "9", "title": "...", "text": "..."}]}

Every record is validated when read (``file:line: what is wrong``): a query needs text, passages need text, and,
unless asked otherwise, at least one positive.
"""
from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, List, Optional, Tuple

from ..cli import InputError
from .files import jsonl_records, write_lines


@dataclass(frozen=True)
class Passage:
    docid: str
    title: str
    text: str
    has_answer: Optional[bool] = None  # DPR
    score: Optional[float] = None      # first-stage score, when known


@dataclass
class Group:
    """One training query with its positive and negative passages (DPR files also carry answers and the ranked
    ``ctxs``)."""
    query_id: str
    query: str
    positives: List[Passage] = field(default_factory=list)
    negatives: List[Passage] = field(default_factory=list)
    answers: List[str] = field(default_factory=list)
    ctxs: List[Passage] = field(default_factory=list)

    @property
    def qid(self) -> str:
        return self.query_id


def parse_passage(obj: Any, where: str) -> Passage:
    if not isinstance(obj, dict):
        raise InputError(f"{where}: a passage must be a JSON object, got {type(obj).__name__}")
    text = obj.get("text", obj.get("contents"))
    if text is None:
        raise InputError(f"{where}: passage has no 'text'")
    docid = next((obj[k] for k in ("docid", "_id", "id", "passage_id") if obj.get(k) is not None), None)
    if docid is None:  # DPR training files may omit ids: a stable one from the content
        import hashlib
        docid = "h" + hashlib.md5(f"{obj.get('title', '')}\t{text}".encode("utf-8")).hexdigest()[:16]
    score, has = obj.get("score"), obj.get("has_answer")
    try:
        score = None if score is None else float(score)
    except (TypeError, ValueError):
        raise InputError(f"{where}: passage {docid!r} has a non-numeric score {score!r}") from None
    return Passage(str(docid), str(obj.get("title") or ""), str(text), None if has is None else bool(has), score)


def passages(obj: dict, key: str, where: str) -> List[Passage]:
    v = obj.get(key)
    if v is None:
        return []
    if not isinstance(v, list):
        raise InputError(f"{where}: '{key}' must be a list")
    return [parse_passage(p, f"{where}: {key}[{i}]") for i, p in enumerate(v)]


def parse_group(obj: Any, where: str, require_positive: bool = True) -> Group:
    if not isinstance(obj, dict):
        raise InputError(f"{where}: expected a JSON object")
    query = obj.get("query")
    if not isinstance(query, str) or not query.strip():
        raise InputError(f"{where}: no 'query' text")
    qid = str(obj.get("query_id", obj.get("qid", where.rsplit(":", 1)[-1])))
    pos = passages(obj, "positive_passages", where)
    if require_positive and not pos:
        raise InputError(f"{where}: query {qid!r} has no positive passage")
    return Group(qid, query, pos, passages(obj, "negative_passages", where))


def data_files(spec: str) -> List[str]:
    """A file, a folder of ``*.jsonl[.gz]`` / ``*.json[.gz]``, a glob, or a comma-separated list of those."""
    files: List[str] = []
    for part in [s.strip() for s in spec.split(",") if s.strip()]:
        if os.path.isdir(part):
            found = sorted(f for ext in ("*.jsonl", "*.jsonl.gz", "*.json", "*.json.gz")
                           for f in glob.glob(os.path.join(part, ext)))
            if not found:
                raise InputError(f"no *.jsonl / *.json files in {part}")
        elif any(c in part for c in "*?["):
            found = sorted(glob.glob(part))
            if not found:
                raise InputError(f"no files match {part}")
        elif os.path.isfile(part):
            found = [part]
        else:
            raise InputError(f"training data not found: {part}")
        files += found
    if not files:
        raise InputError("no training data given")
    return files


def iter_groups(spec: str, require_positive: bool = True) -> Iterator[Tuple[str, Group]]:
    """``('file:line', Group)`` of every record of the Tevatron file(s) named by ``spec`` (see :func:`data_files`);
    a query id given twice is an error."""
    first = {}
    for path in data_files(spec):
        for where, obj in jsonl_records(path):
            g = parse_group(obj, where, require_positive)
            if g.query_id in first:
                raise InputError(f"{where}: query id {g.query_id!r} appears a second time (first at "
                                 f"{first[g.query_id]})")
            first[g.query_id] = where
            yield where, g


def read_groups(spec: str, require_positive: bool = True) -> List[Group]:
    groups = [g for _, g in iter_groups(spec, require_positive)]
    if not groups:
        raise InputError(f"no training records in {spec}")
    return groups


def _passage_record(p: Passage) -> dict:
    return {"docid": p.docid, "title": p.title, "text": p.text}


def write_groups(path: str, groups: Iterable[Group]) -> None:
    """Tevatron JSONL, atomically (``.gz`` compresses, with equal bytes for equal content)."""
    write_lines(path, (json.dumps({"query_id": g.query_id, "query": g.query,
                                   "positive_passages": [_passage_record(p) for p in g.positives],
                                   "negative_passages": [_passage_record(p) for p in g.negatives]},
                                  ensure_ascii=False) for g in groups))
