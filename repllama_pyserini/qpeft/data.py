"""Q-PEFT training data: (query, positives, hard negatives) from the toolkit's Tevatron JSONL or a DPR
retriever-results JSON; BM25 hard negatives mined with Pyserini when a file has none.

Tevatron JSONL (one object a line)::

    {"query_id": "0", "query": "...", "positive_passages": [{"docid", "title", "text"}], "negative_passages": [...]}

DPR retriever results (a JSON list, as DPR's ``dense_retriever.py`` writes it; also DPR's training files with
``positive_ctxs`` / ``hard_negative_ctxs``)::

    [{"question": "...", "answers": ["..."], "ctxs": [{"id", "title", "text", "score", "has_answer"}]}]

Answer-bearing contexts (``has_answer``) are positives, the others hard negatives (in retrieval order). Every
reader error is one line naming the file and line.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from ..io import InputError, jsonl_records, open_text


@dataclass
class Passage:
    docid: str
    title: str
    text: str
    has_answer: Optional[bool] = None
    score: Optional[float] = None


@dataclass
class Example:
    qid: str
    query: str
    positives: List[Passage] = field(default_factory=list)
    negatives: List[Passage] = field(default_factory=list)
    answers: List[str] = field(default_factory=list)
    ctxs: List[Passage] = field(default_factory=list)  # DPR: the retrieved list in its order (for reranking)


def _passage(obj, where: str, id_keys=("docid", "id", "_id", "passage_id")) -> Passage:
    if not isinstance(obj, dict):
        raise InputError(f"{where}: a passage must be a JSON object, got {type(obj).__name__}")
    docid = next((obj[k] for k in id_keys if obj.get(k) is not None), None)
    text = obj.get("text", obj.get("contents"))
    if text is None:
        raise InputError(f"{where}: passage {docid!r} has no 'text'")
    if docid is None:  # DPR training files may omit ids: derive a stable one from the content
        import hashlib
        docid = "h" + hashlib.md5(f"{obj.get('title', '')}\t{text}".encode("utf-8")).hexdigest()[:16]
    has = obj.get("has_answer")
    score = obj.get("score")
    try:
        score = None if score is None else float(score)
    except (TypeError, ValueError):
        raise InputError(f"{where}: passage {docid!r} has a non-numeric score {score!r}") from None
    return Passage(str(docid), str(obj.get("title") or ""), str(text), None if has is None else bool(has), score)


def _passages(obj: dict, key: str, where: str) -> List[Passage]:
    v = obj.get(key)
    if v is None:
        return []
    if not isinstance(v, list):
        raise InputError(f"{where}: '{key}' must be a list")
    return [_passage(p, f"{where}: {key}[{i}]") for i, p in enumerate(v)]


def read_tevatron(path: str, require_positive: bool = True) -> List[Example]:
    """Tevatron training JSONL (``query_id``/``query``/``positive_passages``/``negative_passages``)."""
    out: List[Example] = []
    for lineno, obj in jsonl_records(path):
        where = f"{path}:{lineno}"
        query = obj.get("query")
        if not isinstance(query, str) or not query.strip():
            raise InputError(f"{where}: missing or empty 'query'")
        pos = _passages(obj, "positive_passages", where)
        if require_positive and not pos:
            raise InputError(f"{where}: no 'positive_passages'")
        qid = str(obj.get("query_id", obj.get("qid", lineno)))
        out.append(Example(qid, query, pos, _passages(obj, "negative_passages", where)))
    if not out:
        raise InputError(f"no training examples in {path}")
    return out


def _json_array_items(path: str):
    """Yield (line number, element) of a top-level JSON array, with each element's starting line."""
    with open_text(path) as f:
        text = f.read()
    dec = json.JSONDecoder()
    i, n = 0, len(text)

    def skip(j):
        while j < n and text[j] in " \t\r\n":
            j += 1
        return j

    def line_of(j):
        return text.count("\n", 0, j) + 1

    i = skip(i)
    if i >= n or text[i] != "[":
        raise InputError(f"{path}:{line_of(i)}: expected a JSON list of questions")
    i = skip(i + 1)
    if i < n and text[i] == "]":
        return
    while True:
        try:
            obj, end = dec.raw_decode(text, i)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{e.lineno}: malformed JSON ({e.msg})") from None
        yield line_of(i), obj
        i = skip(end)
        if i < n and text[i] == ",":
            i = skip(i + 1)
            continue
        if i < n and text[i] == "]":
            if skip(i + 1) < n:
                raise InputError(f"{path}:{line_of(skip(i + 1))}: trailing data after the JSON list")
            return
        raise InputError(f"{path}:{line_of(i)}: expected ',' or ']' in the JSON list")


def read_dpr(path: str) -> List[Example]:
    """DPR retriever results (``question``, ``answers``, ``ctxs`` with ``has_answer``) or DPR training data
    (``positive_ctxs``, ``hard_negative_ctxs``, ``negative_ctxs``)."""
    out: List[Example] = []
    for k, (lineno, obj) in enumerate(_json_array_items(path)):
        where = f"{path}:{lineno}"
        if not isinstance(obj, dict):
            raise InputError(f"{where}: expected a JSON object per question")
        q = obj.get("question")
        if not isinstance(q, str) or not q.strip():
            raise InputError(f"{where}: missing or empty 'question'")
        answers = obj.get("answers", [])
        if not isinstance(answers, list):
            raise InputError(f"{where}: 'answers' must be a list")
        qid = str(obj.get("qid", obj.get("id", k)))
        if "ctxs" in obj:
            ctxs = _passages(obj, "ctxs", where)
            for i, c in enumerate(ctxs):
                if c.has_answer is None:
                    raise InputError(f"{where}: ctxs[{i}] has no 'has_answer'")
            out.append(Example(qid, q, [c for c in ctxs if c.has_answer], [c for c in ctxs if not c.has_answer],
                               [str(a) for a in answers], ctxs))
        elif "positive_ctxs" in obj:
            pos = _passages(obj, "positive_ctxs", where)
            neg = _passages(obj, "hard_negative_ctxs", where) or _passages(obj, "negative_ctxs", where)
            out.append(Example(qid, q, pos, neg, [str(a) for a in answers]))
        else:
            raise InputError(f"{where}: a question needs 'ctxs' (retriever results) or 'positive_ctxs' (training)")
    if not out:
        raise InputError(f"no questions in {path}")
    return out


def read_examples(path: str) -> List[Example]:
    """Tevatron JSONL or DPR JSON, told apart by the first non-blank character (``{`` or ``[``)."""
    with open_text(path) as f:
        first = ""
        while True:
            c = f.read(1)
            if not c or not c.isspace():
                first = c
                break
    if first == "[":
        return read_dpr(path)
    if first == "{":
        return read_tevatron(path, require_positive=False)
    raise InputError(f"{path}: neither Tevatron JSONL (objects) nor DPR JSON (a list)")


def add_bm25_negatives(examples: Sequence[Example], corpus: str, index_dir: Optional[str] = None, depth: int = 100,
                       n: int = 30, qrels: Optional[Dict[str, Dict[str, int]]] = None, seed: int = 42,
                       threads: int = 2) -> int:
    """Give the examples that have no negatives Pyserini BM25 hard negatives, mined by the training pipeline's
    :func:`repllama_pyserini.train.negatives.mine` (``n`` sampled from the top ``depth``; positives, documents
    judged relevant in ``qrels`` and the query's own id excluded; the index of ``corpus`` is built once, under
    ``index_dir`` or the cache). Returns how many examples got negatives."""
    import os
    import tempfile
    from ..train.negatives import mine
    todo = [e for e in examples if not e.negatives and e.positives]
    if not todo:
        return 0
    topics, positives = {}, {}
    for e in todo:
        if e.qid in topics and topics[e.qid] != e.query:
            raise InputError(f"duplicate query id {e.qid!r} with different texts")
        topics[e.qid] = e.query
        positives[e.qid] = [{"docid": p.docid, "title": p.title, "text": p.text} for p in e.positives]
    with tempfile.TemporaryDirectory(prefix="qpeft-negatives-") as tmp:
        out = os.path.join(tmp, "negatives.jsonl")
        mine(corpus, out, topics=topics, qrels=qrels, input_positives=positives, index=index_dir, depth=depth,
             num_negatives=n, seed=seed, threads=threads)
        mined = {e.qid: e.negatives for e in read_tevatron(out, require_positive=False)}
    done = 0
    for e in todo:
        e.negatives = list(mined.get(e.qid, []))
        done += bool(e.negatives)
    return done


def split_dev(examples: Sequence[Example], fraction: float, seed: int = 13,
              max_dev: Optional[int] = None) -> Tuple[List[Example], List[Example]]:
    """A seeded random split by example into (train, dev)."""
    idx = list(range(len(examples)))
    random.Random(seed).shuffle(idx)
    n_dev = int(round(len(idx) * fraction))
    if max_dev is not None:
        n_dev = min(n_dev, max_dev)
    if fraction > 0 and n_dev == 0 and len(idx) > 1:
        n_dev = 1
    dev = set(idx[:n_dev])
    return [e for i, e in enumerate(examples) if i not in dev], [e for i, e in enumerate(examples) if i in dev]
