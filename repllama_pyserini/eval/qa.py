"""Open-domain QA retrieval metrics (DPR / UPR / Q-PEFT papers), next to the trec_eval ones (``--qa`` of the CLI).

- ``HR@k`` (top-k accuracy, "hit ratio"): the fraction of questions with at least one answer-bearing passage in
  the top k; every question counts (one with no answer-bearing candidate scores 0), as DPR reports it.
- ``Recall@k``: per question, the answer-bearing passages in the top k over all answer-bearing passages among
  its candidates, averaged over the questions that have at least one.

"Answer-bearing" is DPR's ``has_answer`` flag, or, for a TREC run, a qrels judgment > 0
(:func:`run_qa_metrics`).
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
