"""Open-domain QA retrieval metrics (DPR / UPR / Q-PEFT papers; ``--qa`` of the CLI): ``HR@k``, the fraction of
questions with an answer-bearing passage in the top k (every question counts), and ``Recall@k``, the answer-bearing
passages in the top k over all of a question's answer-bearing candidates, averaged over the questions with one.
Answer-bearing: DPR's ``has_answer``, or a qrels judgment > 0 for a TREC run (:func:`run_qa_metrics`).
"""
from __future__ import annotations

from typing import Dict, Mapping, Sequence

from ..formats.runs import sorted_hits

DEFAULT_KS = (1, 5, 10, 20, 50, 100)


def qa_metrics(rankings: Sequence[Sequence[bool]], ks: Sequence[int] = DEFAULT_KS) -> Dict[str, float]:
    """``rankings``: per question, the answer flags of its passages in ranked order."""
    out: Dict[str, float] = {}
    n = len(rankings)
    with_answer = [r for r in rankings if any(r)]
    for k in ks:
        out[f"HR@{k}"] = sum(any(r[:k]) for r in rankings) / n if n else 0.0
    for k in ks:
        out[f"Recall@{k}"] = (sum(sum(r[:k]) / sum(r) for r in with_answer) / len(with_answer)
                              if with_answer else 0.0)
    return out


def run_qa_metrics(run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]],
                   ks: Sequence[int] = DEFAULT_KS) -> Dict[str, float]:
    """HR@k / Recall@k of a TREC run with qrels (relevance > 0 = answer-bearing; the denominator of Recall@k is
    the relevant documents in the qrels, so it is the usual recall). Every qrels query counts (missing = 0)."""
    hr = {k: 0.0 for k in ks}
    rec = {k: 0.0 for k in ks}
    queries = [q for q in qrels if any(r > 0 for r in qrels[q].values())]
    for q in queries:
        rel = {d for d, r in qrels[q].items() if r > 0}
        ranked = [d for d, _ in sorted_hits(run.get(q, {}))]
        for k in ks:
            found = sum(d in rel for d in ranked[:k])
            hr[k] += found > 0
            rec[k] += found / len(rel)
    n = max(1, len(queries))
    return {**{f"HR@{k}": hr[k] / n for k in ks}, **{f"Recall@{k}": rec[k] / n for k in ks}}
