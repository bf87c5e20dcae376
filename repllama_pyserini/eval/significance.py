"""Paired significance tests over queries: is run B's per-query score different from run A's on the same queries?

* ``t``: the paired two-sided Student's t-test on the per-query differences (scipy's ``ttest_rel``), the test most
  IR papers report (Sakai 2014; the Pyserini/Anserini papers);
* ``randomization``: Fisher's paired randomization test, two-sided: the share of random sign flips of the
  per-query differences whose mean is at least as far from zero as the observed one (seeded, ``trials`` flips;
  Smucker, Allan and Carterette 2007).

Both take the per-query scores of :func:`repllama_pyserini.eval.evaluate` with ``per_query_scores=True`` (every
judged query, 0 for one without results: ``trec_eval -c``).
"""
from __future__ import annotations

import random
from typing import Dict, Mapping, Sequence

from ..cli import InputError

TESTS = ("t", "randomization")


def paired(a: Mapping[str, float], b: Mapping[str, float]) -> Sequence[float]:
    """The per-query differences ``b - a`` over the queries both have (they must be the same queries)."""
    if set(a) != set(b):
        raise InputError(f"the runs were scored on different queries ({len(set(a) ^ set(b))} differ)")
    return [b[q] - a[q] for q in sorted(a)]


def t_test(diffs: Sequence[float]) -> float:
    """Two-sided p-value of the paired t-test (1.0 when every difference is 0)."""
    from scipy.stats import ttest_1samp
    if all(d == 0 for d in diffs):
        return 1.0
    return float(ttest_1samp(diffs, 0.0).pvalue)


def randomization_test(diffs: Sequence[float], trials: int = 10000, seed: int = 0) -> float:
    """Two-sided p-value of Fisher's paired randomization test (the observed assignment counts as one trial)."""
    observed = abs(sum(diffs))
    rng = random.Random(seed)
    hits = sum(abs(sum(d if rng.random() < 0.5 else -d for d in diffs)) >= observed - 1e-12 for _ in range(trials))
    return (hits + 1) / (trials + 1)


def compare(baseline: Mapping[str, Mapping[str, float]], other: Mapping[str, Mapping[str, float]],
            metrics: Sequence[str], test: str = "t") -> Dict[str, float]:
    """``{metric: p-value}`` of ``other`` against ``baseline`` (per-query score dicts, ``{qid: {metric: v}}``)."""
    if test not in TESTS:
        raise ValueError(f"test must be one of {TESTS}")
    out = {}
    for m in metrics:
        diffs = paired({q: s[m] for q, s in baseline.items()}, {q: s[m] for q, s in other.items()})
        out[m] = t_test(diffs) if test == "t" else randomization_test(diffs)
    return out
