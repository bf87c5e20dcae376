"""Q-PEFT training data: queries with positives and hard negatives from Tevatron JSONL or DPR JSON
(:func:`repllama_pyserini.formats.dpr.read_training`), BM25 hard negatives mined with Pyserini when a file has none,
and a seeded dev split."""
from __future__ import annotations

import random
from typing import Dict, List, Optional, Sequence, Tuple

from ..cli import InputError
from ..formats.tevatron import Group, read_groups


def add_bm25_negatives(examples: Sequence[Group], corpus: str, index_dir: Optional[str] = None, depth: int = 100,
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
        positives[e.qid] = e.positives
    with tempfile.TemporaryDirectory(prefix="qpeft-negatives-") as tmp:
        out = os.path.join(tmp, "negatives.jsonl")
        mine(corpus, out, topics=topics, qrels=qrels, input_positives=positives, index=index_dir, depth=depth,
             num_negatives=n, seed=seed, threads=threads)
        mined = {g.query_id: g.negatives for g in read_groups(out, require_positive=False)}
    done = 0
    for e in todo:
        e.negatives = list(mined.get(e.qid, []))
        done += bool(e.negatives)
    return done


def split_dev(examples: Sequence[Group], fraction: float, seed: int = 13,
              max_dev: Optional[int] = None) -> Tuple[List[Group], List[Group]]:
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
