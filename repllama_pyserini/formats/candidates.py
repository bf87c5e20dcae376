"""rank_llm's candidate files (``retrieve_results_*.json[.gz]``): a JSON list of
``{"query", "hits": [{"qid", "docid", "rank", "score", "content"}]}``: queries, a run and passage text in one file."""
from __future__ import annotations

import json
import os
from typing import Dict, NamedTuple, Optional

from ..cli import InputError
from .corpus import Doc
from .files import atomic_write, read_text, require_file
from .runs import Run


class Candidates(NamedTuple):
    topics: Dict[str, str]
    run: Run
    docs: Dict[str, Doc]
    ranks: Dict[str, Dict[str, int]]


def is_candidates(path: str) -> bool:
    return path.endswith((".json", ".json.gz"))


def read_candidates(path: str) -> Candidates:
    require_file(path, "candidates file")
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise InputError(f"{path}:{e.lineno}: malformed JSON ({e.msg})") from None
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON list of {{'query', 'hits'}} entries")
    out = Candidates({}, {}, {}, {})
    for i, entry in enumerate(data):
        if not isinstance(entry, dict) or "query" not in entry or not isinstance(entry.get("hits"), list):
            raise InputError(f"{path}: entry {i} needs 'query' and a list of 'hits'")
        for j, hit in enumerate(entry["hits"]):
            try:
                qid, docid, score = str(hit["qid"]), str(hit["docid"]), float(hit["score"])
            except (KeyError, TypeError, ValueError):
                raise InputError(f"{path}: entry {i} hit {j} needs 'qid', 'docid' and a numeric 'score'") from None
            if docid in out.run.get(qid, {}):
                raise InputError(f"{path}: entry {i} hit {j}: document {docid!r} is listed twice for query {qid!r}")
            out.topics[qid] = str(entry["query"])
            out.run.setdefault(qid, {})[docid] = score
            out.ranks.setdefault(qid, {})[docid] = int(hit.get("rank", j + 1))
            out.docs[docid] = Doc("", str(hit.get("content") or ""))
    if not out.run:
        raise InputError(f"no candidates in {path}")
    return out


def candidates_to_trec(path: str, out: str, tag: Optional[str] = None) -> str:
    """The candidates as a TREC run with their own ranks and full-precision scores."""
    c = read_candidates(path)
    tag = tag or os.path.basename(path).split(".")[0]
    with atomic_write(out) as f:
        for qid, hits in c.run.items():
            for docid, rank in sorted(c.ranks[qid].items(), key=lambda kv: kv[1]):
                f.write(f"{qid} Q0 {docid} {rank} {hits[docid]!r} {tag}\n")
    return out
