"""Runs: TREC ``qid Q0 docid rank score tag`` and MS MARCO ``qid docid rank`` (score = 1/rank, as Pyserini's
trec_eval wrapper converts it), read into ``{qid: {docid: score}}``; written in TREC format.

One order everywhere, trec_eval's: score descending, ties broken by docid descending (``sorted_hits``). A document
listed twice for a query, a non-finite score or a malformed line is an error (``file:line``).
"""
from __future__ import annotations

import heapq
import math
from typing import Dict, List, Mapping, Optional, Tuple

from ..cli import InputError
from .files import atomic_write, split_lines

Run = Dict[str, Dict[str, float]]


def _key(kv: Tuple[str, float]) -> Tuple[float, str]:
    return kv[1], kv[0]


def sorted_hits(scores: Mapping[str, float]) -> List[Tuple[str, float]]:
    """trec_eval's order: score descending, ties broken by docid descending (``strcmp``)."""
    return sorted(scores.items(), key=_key, reverse=True)


def top_hits(scores: Mapping[str, float], depth: int) -> List[Tuple[str, float]]:
    """The first ``depth`` of :func:`sorted_hits`."""
    if len(scores) <= depth:
        return sorted_hits(scores)
    return heapq.nlargest(depth, scores.items(), key=_key)


def truncate_run(run: Run, depth: int) -> Run:
    """trec_eval ``-M depth``: each query's top ``depth``."""
    return {q: dict(top_hits(h, depth)) if len(h) > depth else h for q, h in run.items()}


def read_run(path: str) -> Run:
    run: Run = {}
    width = None
    for lineno, parts in split_lines(path):
        where = f"{path}:{lineno}"
        if width is None:
            width = len(parts)
            if width not in (3, 6):
                raise InputError(f"{where}: expected 'qid Q0 docid rank score tag' (TREC) or 'qid docid rank' "
                                 f"(MS MARCO), got {width} fields")
        elif len(parts) != width:
            raise InputError(f"{where}: {len(parts)} fields, but the run's first line has {width}")
        if width == 6:
            qid, docid, value = parts[0], parts[2], parts[4]
            try:
                score = float(value)
            except ValueError:
                raise InputError(f"{where}: score {value!r} is not a number") from None
            if not math.isfinite(score):
                raise InputError(f"{where}: score {value!r} is not finite")
        else:
            qid, docid, value = parts
            try:
                rank = int(value)
                if rank < 1:
                    raise ValueError
            except ValueError:
                raise InputError(f"{where}: rank {value!r} is not a positive integer") from None
            score = 1.0 / rank
        hits = run.setdefault(qid, {})
        if docid in hits:
            raise InputError(f"{where}: document {docid!r} is listed twice for query {qid!r}")
        hits[docid] = score
    if not run:
        raise InputError(f"empty run: {path}")
    return run


def write_run(run: Run, path: str, tag: str = "repllama-pyserini", depth: Optional[int] = None,
              digits: Optional[int] = 6) -> None:
    """A TREC run, atomically: hits in :func:`sorted_hits` order, ranks from 1; ``digits=None`` keeps full
    precision (``repr``)."""
    with atomic_write(path) as f:
        for qid, hits in run.items():
            ranked = top_hits(hits, depth) if depth else sorted_hits(hits)
            for rank, (docid, score) in enumerate(ranked, 1):
                s = repr(float(score)) if digits is None else f"{score:.{digits}f}"
                f.write(f"{qid} Q0 {docid} {rank} {s} {tag}\n")
