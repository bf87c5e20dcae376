"""``trec_eval -c`` numbers with pytrec_eval: every judged query counts (one without results scores 0), run queries
without judgments are ignored, a ranking is the run in trec_eval's order (score descending, ties by docid
descending) and ``-M k`` keeps its top k (pytrec_eval has no ``-M``: the run is cut here, in the same order)."""
from __future__ import annotations

import contextlib
import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from ..cli import InputError
from ..formats.collections import collection_files
from ..formats.qrels import Qrels, read_qrels
from ..formats.runs import Run, read_run, truncate_run
from .metrics import Conventions, Metric, resolve_metrics


def load_run(run: Union[str, Run]) -> Run:
    """A run from a TREC or MS MARCO run file, or a ``{qid: {docid: score}}`` dict."""
    if isinstance(run, (str, os.PathLike)):
        if not os.path.isfile(run):
            raise InputError(f"run not found: {run}")
        return read_run(str(run))
    if not isinstance(run, Mapping):
        raise TypeError(f"run must be a path or a {{qid: {{docid: score}}}} dict, got {type(run).__name__}")
    return {str(q): {str(d): float(s) for d, s in hits.items()} for q, hits in run.items()}


def load_qrels(qrels: Union[str, Qrels], data: Optional[str] = None) -> Tuple[Qrels, Optional[str]]:
    """Qrels and their path: a file, a collection name (``dl19-passage``, ``beir-v1.0.0-scifact``...: its file in the
    data folder) or a dict (path None)."""
    if isinstance(qrels, (str, os.PathLike)):
        path = str(qrels)
        if not os.path.exists(path) and "/" not in path and os.sep not in path:
            with contextlib.suppress(InputError):
                path = collection_files(path, data)[1]
        if not os.path.isfile(path):
            raise InputError(f"qrels not found: {qrels}")
        return read_qrels(path), path
    if not isinstance(qrels, Mapping):
        raise TypeError(f"qrels must be a path or a {{qid: {{docid: rel}}}} dict, got {type(qrels).__name__}")
    if not qrels:
        raise InputError("empty qrels")
    return {str(q): {str(d): int(r) for d, r in rels.items()} for q, rels in qrels.items()}, None


@dataclass
class Coverage:
    judged: int         # queries in the qrels
    evaluated: int      # of those, with at least one result
    missing: List[str]  # judged queries without results (score 0 under -c)
    extra: List[str]    # run queries without judgments (ignored)


def coverage(run: Run, qrels: Qrels, run_label: str = "the run", qrels_label: str = "the qrels") -> Coverage:
    """Which judged queries the run answers; none at all is an error (wrong qrels)."""
    missing = [q for q in qrels if not run.get(q)]
    cov = Coverage(len(qrels), len(qrels) - len(missing), missing, [q for q in run if q not in qrels])
    if cov.evaluated == 0:
        raise InputError(f"no query of {run_label} ({len(run)} queries, e.g. {next(iter(run))!r}) is in {qrels_label} "
                         f"({len(qrels)} queries, e.g. {next(iter(qrels))!r}): wrong qrels?")
    return cov


def _measures(metrics: Sequence[Metric]) -> set:
    """pytrec_eval measure strings, one per measure with all its cutoffs (``recall.100,1000``)."""
    cutoffs: Dict[str, set] = defaultdict(set)
    for m in metrics:
        cutoffs[m.measure].add(m.cutoff)
    out = set()
    for meas, ks in cutoffs.items():
        nums = sorted(k for k in ks if k is not None)
        if None in ks:
            out.add(meas)
        if nums:
            out.add(f"{meas}.{','.join(map(str, nums))}")
    return out


def per_query(run: Run, qrels: Qrels, metrics: Sequence[Metric]) -> Dict[str, Dict[str, float]]:
    """``{qid: {metric name: value}}`` for every judged query (0 for those without results, as ``trec_eval -c``)."""
    import pytrec_eval
    groups: Dict[Tuple[int, Optional[int]], List[Metric]] = defaultdict(list)
    for m in metrics:  # -l and -M are per evaluation: one pytrec_eval pass per (-l, -M)
        groups[(1 if m.rel_level is None else m.rel_level, m.max_docs)].append(m)
    judged_run = {q: hits for q, hits in run.items() if q in qrels and hits}
    out: Dict[str, Dict[str, float]] = {q: {} for q in qrels}
    for (level, depth), ms in groups.items():
        r = judged_run if depth is None else truncate_run(judged_run, depth)
        res = pytrec_eval.RelevanceEvaluator(qrels, _measures(ms), relevance_level=level).evaluate(r)
        for q in qrels:
            got = res.get(q)
            for m in ms:
                out[q][m.name] = float(got[m.key]) if got is not None else 0.0
    return out


def evaluate(run: Union[str, Run], qrels: Union[str, Qrels], metrics: Optional[Iterable[Union[str, Metric]]] = None,
             conventions: Union[str, Conventions, None] = None, per_query_scores: bool = False,
             only_run_queries: bool = False) -> dict:
    """Evaluate a run as ``trec_eval -c`` does (mean over every judged query; ``only_run_queries``: over the judged
    queries the run has, for runs of a query sample).

    ``metrics``: names or trec_eval option strings (see :mod:`.metrics`); ``conventions``: a collection's 2CR rules;
    neither: those the qrels file name implies, else :data:`.metrics.DEFAULT_METRICS`. Returns ``{metric: mean}``;
    with ``per_query_scores``, ``{'all': {metric: mean}, qid: {metric: value}, ...}``."""
    qrels_d, qrels_path = load_qrels(qrels)
    run_d = load_run(run)
    if only_run_queries:
        qrels_d = {q: j for q, j in qrels_d.items() if q in run_d}
        if not qrels_d:
            raise InputError("no query of the run is judged in the qrels")
    ms, _ = resolve_metrics(metrics, conventions, qrels_path)
    coverage(run_d, qrels_d, f"run {run}" if isinstance(run, (str, os.PathLike)) else "the run",
             f"qrels {qrels_path}" if qrels_path else "the qrels")
    pq = per_query(run_d, qrels_d, ms)
    means = {m.name: sum(v[m.name] for v in pq.values()) / len(pq) for m in ms}
    return {"all": means, **pq} if per_query_scores else means


def format_table(rows: Mapping[str, Mapping[str, float]], digits: int = 4) -> str:
    """A plain-text table: one row per run, one column per metric (the union of the rows' metrics, in order)."""
    cols: List[str] = []
    for scores in rows.values():
        cols += [c for c in scores if c not in cols]
    width = max([len("run")] + [len(r) for r in rows])
    cw = {c: max(len(c), digits + 2) for c in cols}
    lines = ["  ".join([f"{'run':<{width}}"] + [f"{c:>{cw[c]}}" for c in cols])]
    for name, scores in rows.items():
        cells = [f"{scores[c]:>{cw[c]}.{digits}f}" if scores.get(c) is not None else f"{'-':>{cw[c]}}" for c in cols]
        lines.append("  ".join([f"{name:<{width}}"] + cells))
    return "\n".join(lines)
