"""Relevance judgments: TREC qrels ``qid iter docid rel`` and BEIR ``qrels/*.tsv`` (``qid docid rel``, with a header).
A (query, document) judged twice with different grades is an error."""
from __future__ import annotations

from typing import Dict

from ..cli import InputError
from .files import split_lines

Qrels = Dict[str, Dict[str, int]]


def read_qrels(path: str) -> Qrels:
    qrels: Qrels = {}
    for lineno, parts in split_lines(path):
        where = f"{path}:{lineno}"
        if len(parts) == 4:
            qid, _, docid, rel = parts
        elif len(parts) == 3:
            qid, docid, rel = parts
        else:
            raise InputError(f"{where}: expected 'qid Q0 docid rel', got {len(parts)} fields")
        try:
            value = float(rel)
        except ValueError:
            if lineno == 1 and len(parts) == 3:  # BEIR header "query-id corpus-id score"
                continue
            raise InputError(f"{where}: relevance {rel!r} is not a number") from None
        if value != int(value):
            raise InputError(f"{where}: relevance {rel!r} is not an integer")
        old = qrels.setdefault(qid, {}).get(docid)
        if old is not None and old != int(value):
            raise InputError(f"{where}: document {docid!r} of query {qid!r} is judged again with another grade")
        qrels[qid][docid] = int(value)
    if not qrels:
        raise InputError(f"no judgments in {path}")
    return qrels
