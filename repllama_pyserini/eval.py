"""Evaluation with pytrec_eval that gives the numbers of ``trec_eval -c`` as Pyserini's 2CR runs it.

Metrics have readable names, each standing for one trec_eval measure plus its options:

=================  ==============================  =========================================================
name               trec_eval                       notes
=================  ==============================  =========================================================
``nDCG@k``         ``-m ndcg_cut.k``               graded gains as in the qrels (``-l`` does not apply)
``nDCG``           ``-m ndcg``
``MRR@k``          ``-M k -m recip_rank``          only the top k of the run count (2CR's MRR@10)
``MRR``            ``-m recip_rank``
``MAP``            ``-m map``
``MAP@k``          ``-M k -m map``                 2CR's MAP@100 (equal to ``map_cut.k``)
``R@k``            ``-m recall.k``                 also ``Recall@k``
``P@k``            ``-m P.k``
``Success@k``      ``-m success.k``
=================  ==============================  =========================================================

trec_eval's own names are accepted too (``ndcg_cut.10``, ``recip_rank``, ``recall.1000``, ``map``, ``P.10``,
``map_cut.100``, ``success.10``, ``ndcg``). Options are suffixes: ``:l2`` is ``-l 2`` (a document is relevant when
its judgment is >= 2), ``:M100`` is ``-M 100`` (only the top 100 of each ranking are evaluated); e.g. ``R@1000:l2``.

Semantics, identical to trec_eval:

* ``-c``: every query of the qrels counts; one without results scores 0. (pytrec_eval alone averages over the
  queries it evaluated; here the mean is always taken over all qrels queries.) Run queries absent from the qrels
  are ignored.
* A ranking is the run sorted by score descending, ties broken by docid descending (reverse lexicographic, as
  trec_eval's ``strcmp``); the ranks written in a run file are ignored. ``-M k`` keeps the top k of that ranking.
  pytrec_eval sorts the same way internally but has no ``-M``: the run is cut here, with the same ordering.

Presets are the collection conventions of Pyserini's 2CR (``pyserini/2cr/msmarco.py``, ``beir.py``): a metric list
plus per-measure defaults (``-l 2`` for MAP/recall on DL passage, ``-M 100`` for MAP on DL doc) that also apply to
metrics asked for explicitly with the preset, unless they carry their own ``:l``/``:M``.

The preset is inferred from the qrels file name when neither metrics nor preset are given (:func:`infer_preset`).

CLI::

    python -m repllama_pyserini.eval --run RUN [RUN ...] --qrels QRELS [--metrics M ...] [--preset P]
                                     [--topics TOPICS] [--json out.json] [--per-query]

``--qrels`` also takes a collection name (``dl19-passage``, ``beir-v1.0.0-scifact``...) found in the data folder.
``--topics``: every judged query must be in the topics file, else it is an error (a topics/qrels mismatch would
silently score the missing queries 0 under ``-c``).
"""
from __future__ import annotations

import argparse
import heapq
import json
import os
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from .io import (InputError, Qrels, Run, atomic_write, open_text, read_qrels, read_run, read_topics, require_file,
                 run_cli, split_lines)

__all__ = ["Metric", "Preset", "PRESETS", "DEFAULT_METRICS", "parse_metric", "resolve_metrics", "get_preset",
           "infer_preset", "evaluate", "trec_ranking", "truncate_run", "load_run", "load_qrels", "coverage",
           "default_name", "format_table", "main"]


# ---------------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Metric:
    """One trec_eval measure with its options.

    ``measure``: trec_eval's name (``ndcg_cut``, ``recall``, ``P``, ``success``, ``map``, ``recip_rank``, ``ndcg``);
    ``cutoff``: its parameter (``ndcg_cut.10``); ``rel_level``: ``-l`` (None: the preset's convention, else 1);
    ``max_docs``: ``-M`` (None: the preset's convention, else all); ``name``: the display name."""
    measure: str
    cutoff: Optional[int] = None
    rel_level: Optional[int] = None
    max_docs: Optional[int] = None
    name: str = ""

    @property
    def key(self) -> str:
        """The name trec_eval prints and pytrec_eval returns (``ndcg_cut_10``, ``map``...)."""
        return self.measure if self.cutoff is None else f"{self.measure}_{self.cutoff}"

    def trec_eval_args(self) -> List[str]:
        """The equivalent trec_eval options, e.g. ``['-c', '-l', '2', '-m', 'recall.1000']``."""
        args = ["-c"]
        if self.rel_level not in (None, 1):
            args += ["-l", str(self.rel_level)]
        if self.max_docs is not None:
            args += ["-M", str(self.max_docs)]
        return args + ["-m", self.measure if self.cutoff is None else f"{self.measure}.{self.cutoff}"]


# base name (lower case) -> (trec_eval measure, what @k means: "cutoff" | "depth" (-M k) | "ndcg" (ndcg vs ndcg_cut))
_BASES = {
    "ndcg": ("ndcg", "ndcg"), "ndcg_cut": ("ndcg_cut", "cutoff"),
    "mrr": ("recip_rank", "depth"), "rr": ("recip_rank", "depth"), "recip_rank": ("recip_rank", "depth"),
    "map": ("map", "depth"), "map_cut": ("map", "cutoff-depth"),
    "r": ("recall", "cutoff"), "recall": ("recall", "cutoff"),
    "p": ("P", "cutoff"), "precision": ("P", "cutoff"),
    "success": ("success", "cutoff"),
}
_DISPLAY = {"ndcg_cut": "nDCG", "ndcg": "nDCG", "recip_rank": "MRR", "map": "MAP", "recall": "R", "P": "P",
            "success": "Success"}
_HEAD = re.compile(r"^(?P<base>[A-Za-z_]+)(?:[@.](?P<k>\d+))?$")
_OPT = re.compile(r"^(?P<opt>[lM])(?P<n>\d+)$")
METRIC_HELP = ("nDCG@k, nDCG, MRR@k, MRR, MAP, MAP@k, R@k, P@k, Success@k or trec_eval names (ndcg_cut.10, "
               "recip_rank, recall.1000, map, P.10, map_cut.100, success.10); options :l<N> (-l N), :M<N> (-M N)")


def parse_metric(spec: Union[str, Metric]) -> Metric:
    """``'nDCG@10'``, ``'MRR@10'``, ``'R@1000:l2'``, ``'recall.1000'``, ``'MAP:M100'``... -> :class:`Metric`.

    A :class:`Metric` passes through (named if it has no name)."""
    if isinstance(spec, Metric):
        if spec.measure == "map_cut" and spec.cutoff:  # trec_eval map_cut.k == map over the top k (-M k)
            spec = replace(spec, measure="map", cutoff=None, max_docs=min(spec.cutoff, spec.max_docs or spec.cutoff))
        if spec.measure not in _DISPLAY or (spec.cutoff is None) != (spec.measure in ("map", "recip_rank", "ndcg")):
            raise InputError(f"unsupported metric {spec}; use {METRIC_HELP}")
        return spec if spec.name else replace(spec, name=default_name(spec))
    head, *opts = str(spec).strip().split(":")
    m = _HEAD.match(head)
    base = _BASES.get(m.group("base").lower()) if m else None
    if base is None:
        raise InputError(f"unknown metric {spec!r}; use {METRIC_HELP}")
    measure, k_means = base
    k = int(m.group("k")) if m.group("k") is not None else None
    if k is not None and k <= 0:
        raise InputError(f"metric {spec!r}: the cutoff must be a positive integer")
    if k is None and k_means in ("cutoff", "cutoff-depth"):
        raise InputError(f"metric {spec!r} needs a cutoff, e.g. {head}@10")
    cutoff = max_docs = rel_level = None
    if k_means == "cutoff":
        cutoff = k
    elif k_means == "ndcg" and k is not None:  # nDCG@k -> ndcg_cut.k; nDCG -> ndcg
        measure, cutoff = "ndcg_cut", k
    elif k_means in ("depth", "cutoff-depth"):  # MRR@k, MAP@k: trec_eval -M k (2CR); map_cut.k is the same number
        max_docs = k
    for o in opts:
        om = _OPT.match(o)
        if not om or (om.group("opt") == "M" and int(om.group("n")) < 1):
            raise InputError(f"metric {spec!r}: bad option {o!r} (use :l<N> for -l N, :M<N> for -M N)")
        n = int(om.group("n"))
        if om.group("opt") == "l":
            rel_level = n
        elif max_docs is not None and max_docs != n:
            raise InputError(f"metric {spec!r}: {head} already means -M {max_docs}")
        else:
            max_docs = n
    metric = Metric(measure, cutoff, rel_level, max_docs)
    return replace(metric, name=default_name(metric))  # canonical: MAP:M100 -> MAP@100, recall.1000 -> R@1000


def default_name(m: Metric) -> str:
    """The readable name of a :class:`Metric` built by hand."""
    name = _DISPLAY.get(m.measure, m.measure)
    depth_in_name = m.cutoff is None and m.measure in ("recip_rank", "map") and m.max_docs is not None
    if m.cutoff is not None:
        name += f"@{m.cutoff}"
    elif depth_in_name:
        name += f"@{m.max_docs}"
    if m.rel_level is not None:
        name += f":l{m.rel_level}"
    if m.max_docs is not None and not depth_in_name:
        name += f":M{m.max_docs}"
    return name


# ---------------------------------------------------------------------------------------------------------------
# Presets (Pyserini 2CR conventions)
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Preset:
    name: str
    metrics: Tuple[str, ...]
    rel_level: Mapping[str, int] = field(default_factory=dict)  # trec_eval measure -> -l
    max_docs: Mapping[str, int] = field(default_factory=dict)   # trec_eval measure -> -M
    description: str = ""

    def resolve(self, metric: Metric) -> Metric:
        """Apply this collection's conventions to a metric that does not set ``-l``/``-M`` itself."""
        level = metric.rel_level if metric.rel_level is not None else self.rel_level.get(metric.measure)
        depth = metric.max_docs if metric.max_docs is not None else self.max_docs.get(metric.measure)
        return replace(metric, rel_level=level, max_docs=depth)


_DL_PASSAGE = dict(metrics=("nDCG@10", "MAP", "R@1000"), rel_level={"map": 2, "recall": 2},
                   description="2CR: MAP -c -l 2 -m map; nDCG@10 -c -m ndcg_cut.10; R@1K -c -l 2 -m recall.1000")
_DL_DOC = dict(metrics=("nDCG@10", "MAP", "R@1000"), max_docs={"map": 100},
               description="2CR: MAP -c -M 100 -m map; nDCG@10 -c -m ndcg_cut.10; R@1K -c -m recall.1000")
PRESETS: Dict[str, Preset] = {
    "msmarco-passage-dev": Preset("msmarco-passage-dev", ("MRR@10", "R@1000"),
                                  description="2CR: MRR@10 -c -M 10 -m recip_rank; R@1K -c -m recall.1000"),
    "dl19-passage": Preset("dl19-passage", **_DL_PASSAGE),
    "dl20-passage": Preset("dl20-passage", **_DL_PASSAGE),
    "msmarco-doc-dev": Preset("msmarco-doc-dev", ("MRR@100", "R@1000"),
                              description="2CR: -c -M 100 -m recip_rank (2CR labels it MRR@10; the paper MRR@100); "
                                          "R@1K -c -m recall.1000"),
    "dl19-doc": Preset("dl19-doc", **_DL_DOC),
    "dl20-doc": Preset("dl20-doc", **_DL_DOC),
    "beir": Preset("beir", ("nDCG@10", "R@100", "R@1000"),
                   description="2CR: -c -m ndcg_cut.10; -c -m recall.100; -c -m recall.1000"),
}
_ALIASES = {"msmarco-passage-dev-subset": "msmarco-passage-dev", "msmarco-v1-passage-dev": "msmarco-passage-dev",
            "msmarco-v1-passage.dev": "msmarco-passage-dev", "msmarco-v1-doc-dev": "msmarco-doc-dev"}
DEFAULT_METRICS: Tuple[str, ...] = ("nDCG@10", "MRR@10", "MAP", "R@100", "R@1000")


def get_preset(name: Union[str, Preset]) -> Preset:
    """A preset by name; ``beir-v1.0.0-<dataset>[-test]`` and a few Pyserini spellings are accepted."""
    if isinstance(name, Preset):
        return name
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key.startswith("beir"):
        key = "beir"
    if key not in PRESETS:
        raise InputError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[key]


_PRESET_PATTERNS = [
    (re.compile(r"qrels\.(dl(?:19|20))-(passage|doc)\b"), lambda m: f"{m.group(1)}-{m.group(2)}"),
    (re.compile(r"^20(19|20)qrels-pass\b"), lambda m: f"dl{m.group(1)}-passage"),       # NIST file names
    (re.compile(r"^20(19|20)qrels-docs\b"), lambda m: f"dl{m.group(1)}-doc"),
    (re.compile(r"qrels\.msmarco-passage[.-]dev"), lambda m: "msmarco-passage-dev"),    # Anserini/Pyserini
    (re.compile(r"^qrels\.dev(\.small)?\.tsv\b"), lambda m: "msmarco-passage-dev"),      # MS MARCO's own
    (re.compile(r"qrels\.msmarco-doc[.-]dev"), lambda m: "msmarco-doc-dev"),
    (re.compile(r"^msmarco-docdev-qrels\b"), lambda m: "msmarco-doc-dev"),
    (re.compile(r"qrels\.beir-v1\.0\.0-.+\.test\b"), lambda m: "beir"),
]


def infer_preset(qrels_path: str) -> Optional[str]:
    """The preset a qrels file name implies (``qrels.dl19-passage.txt`` -> ``dl19-passage``,
    ``qrels.beir-v1.0.0-scifact.test.txt`` or a BEIR folder's ``qrels/test.tsv`` -> ``beir``,
    ``qrels.msmarco-passage.dev-subset.txt`` -> ``msmarco-passage-dev``...); None when it implies none."""
    path = os.path.normpath(str(qrels_path)).replace(os.sep, "/")
    base = os.path.basename(path).lower()
    for pattern, preset in _PRESET_PATTERNS:
        m = pattern.search(base)
        if m:
            return preset(m)
    if re.search(r"(^|/)qrels/test\.tsv(\.gz)?$", path):
        return "beir"
    return None


def resolve_metrics(metrics: Optional[Iterable[Union[str, Metric]]] = None, preset: Union[str, Preset, None] = None,
                    qrels_path: Optional[str] = None) -> Tuple[List[Metric], Optional[str]]:
    """The metrics to compute and the preset in force: explicit metrics (with the preset's conventions), else the
    preset's metrics, else the preset inferred from ``qrels_path``, else :data:`DEFAULT_METRICS`."""
    if preset is None and metrics is None and qrels_path:
        preset = infer_preset(qrels_path)
    p = get_preset(preset) if preset is not None else None
    specs = list(metrics) if metrics is not None else list(p.metrics if p else DEFAULT_METRICS)
    if not specs:
        raise InputError("no metrics to compute")
    out: List[Metric] = []
    for s in specs:
        m = parse_metric(s)
        if p is not None:
            m = p.resolve(m)
        if m.name in {x.name for x in out}:
            raise InputError(f"metric {m.name!r} is asked for twice")
        out.append(m)
    return out, (p.name if p else None)


# ---------------------------------------------------------------------------------------------------------------
# Runs and qrels
# ---------------------------------------------------------------------------------------------------------------

def _trec_key(kv: Tuple[str, float]) -> Tuple[float, str]:
    return kv[1], kv[0]


def trec_ranking(scores: Mapping[str, float]) -> List[Tuple[str, float]]:
    """trec_eval's order: score descending, ties broken by docid descending (``strcmp``, reverse lexicographic)."""
    return sorted(scores.items(), key=_trec_key, reverse=True)


def truncate_run(run: Run, depth: int) -> Run:
    """trec_eval ``-M depth``: each query's top ``depth`` in trec_eval's order."""
    return {q: dict(heapq.nlargest(depth, hits.items(), key=_trec_key)) if len(hits) > depth else hits
            for q, hits in run.items()}


def _read_msmarco_run(path: str) -> Run:
    """MS MARCO run ``qid \\t docid \\t rank``; score = 1/rank, as Pyserini's trec_eval converts it."""
    run: Run = defaultdict(dict)
    for lineno, parts in split_lines(path):
        if len(parts) != 3:
            raise InputError(f"{path}:{lineno}: expected 'qid docid rank' like the lines before, "
                             f"got {len(parts)} fields")
        try:
            rank = int(parts[2])
            if rank < 1:
                raise ValueError
        except ValueError:
            raise InputError(f"{path}:{lineno}: rank {parts[2]!r} is not a positive integer") from None
        run[parts[0]][parts[1]] = 1.0 / rank
    return dict(run)


def _check_duplicates(path: str, run: Run, docid_field: int) -> None:
    """trec_eval refuses a run that lists a document twice for a query ("duplicate docs"); so do we, rather than
    keep one of the scores silently."""
    with open_text(path) as f:
        lines = sum(1 for line in f if line.strip())
    if lines == sum(len(h) for h in run.values()):
        return
    seen = set()
    with open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if parts:
                key = (parts[0], parts[docid_field])
                if key in seen:
                    raise InputError(f"{path}:{lineno}: document {key[1]!r} is listed twice for query {key[0]!r}")
                seen.add(key)


def load_run(run: Union[str, Run]) -> Run:
    """A run from a TREC run file (``qid Q0 docid rank score tag``), an MS MARCO run file (``qid docid rank``)
    or a ``{qid: {docid: score}}`` dict. An empty run is an error."""
    if isinstance(run, (str, os.PathLike)):
        path = require_file(str(run), "run")
        first = ""
        with open_text(path) as f:
            for line in f:
                if line.strip():
                    first = line
                    break
        loaded = _read_msmarco_run(path) if len(first.split()) == 3 else read_run(path)
        if not loaded:
            raise InputError(f"run {path} is empty")
        _check_duplicates(path, loaded, 1 if len(first.split()) == 3 else 2)
        return loaded
    if not isinstance(run, Mapping):
        raise TypeError(f"run must be a path or a {{qid: {{docid: score}}}} dict, got {type(run).__name__}")
    return {str(q): {str(d): float(s) for d, s in hits.items()} for q, hits in run.items()}


def load_qrels(qrels: Union[str, Qrels], data: Optional[str] = None) -> Tuple[Qrels, Optional[str]]:
    """Qrels and their path from a file, a collection name (``dl19-passage``, ``beir-v1.0.0-scifact``...: the file
    in the data folder's ``topics-and-qrels/``) or a dict (path None)."""
    if isinstance(qrels, (str, os.PathLike)):
        path = str(qrels)
        if not os.path.exists(path) and os.sep not in path and "/" not in path:
            from .data import topics_and_qrels
            name = path[:-len("-test")] if path.endswith("-test") else path
            candidate = topics_and_qrels({"msmarco-passage-dev-subset": "msmarco-passage.dev-subset",
                                          "msmarco-passage-dev": "msmarco-passage.dev-subset",
                                          "msmarco-doc-dev": "msmarco-doc.dev"}.get(name, name), data)[1]
            if os.path.isfile(candidate):
                path = candidate
        require_file(path, "qrels")
        return read_qrels(path), path
    if not isinstance(qrels, Mapping):
        raise TypeError(f"qrels must be a path or a {{qid: {{docid: rel}}}} dict, got {type(qrels).__name__}")
    if not qrels:
        raise InputError("empty qrels")
    return {str(q): {str(d): int(r) for d, r in rels.items()} for q, rels in qrels.items()}, None


@dataclass
class Coverage:
    judged: int     # queries in the qrels
    evaluated: int  # of those, with at least one result
    missing: List[str]  # judged queries without results (score 0 under -c)
    extra: List[str]    # run queries without judgments (ignored)


def coverage(run: Run, qrels: Qrels) -> Coverage:
    missing = [q for q in qrels if not run.get(q)]
    extra = [q for q in run if q not in qrels]
    return Coverage(len(qrels), len(qrels) - len(missing), missing, extra)


# ---------------------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------------------

def _pytrec_measures(metrics: Sequence[Metric]) -> set:
    """pytrec_eval measure strings, one per measure with all its cutoffs (``recall.100,1000``): separate
    ``recall.100`` and ``recall.1000`` entries are not reliably both computed."""
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


def _per_query(run: Run, qrels: Qrels, metrics: Sequence[Metric]) -> Dict[str, Dict[str, float]]:
    """``{qid: {metric name: value}}`` for every qrels query (0 for those without results, as trec_eval -c)."""
    import pytrec_eval
    groups: Dict[Tuple[int, Optional[int]], List[Metric]] = defaultdict(list)
    for m in metrics:  # -l and -M are per evaluation: one pytrec_eval pass per (-l, -M)
        groups[(1 if m.rel_level is None else m.rel_level, m.max_docs)].append(m)
    judged_run = {q: hits for q, hits in run.items() if q in qrels and hits}
    out: Dict[str, Dict[str, float]] = {q: {} for q in qrels}
    for (level, depth), ms in groups.items():
        r = judged_run if depth is None else truncate_run(judged_run, depth)
        res = pytrec_eval.RelevanceEvaluator(qrels, _pytrec_measures(ms), relevance_level=level).evaluate(r)
        for q in qrels:
            got = res.get(q)
            for m in ms:
                out[q][m.name] = float(got[m.key]) if got is not None else 0.0
    return out


def _check_overlap(run: Run, qrels: Qrels, run_label: str, qrels_label: str) -> Coverage:
    cov = coverage(run, qrels)
    if cov.evaluated == 0:
        raise InputError(f"no query of {run_label} ({len(run)} queries, e.g. {next(iter(run))!r}) is in {qrels_label} "
                         f"({len(qrels)} queries, e.g. {next(iter(qrels))!r}): wrong qrels?")
    return cov


def _scores(run: Run, qrels: Qrels, metrics: Sequence[Metric], per_query: bool) -> dict:
    pq = _per_query(run, qrels, metrics)
    means = {m.name: sum(v[m.name] for v in pq.values()) / len(pq) for m in metrics}  # -c: over all qrels queries
    return {"all": means, **pq} if per_query else means


def evaluate(run: Union[str, Run], qrels: Union[str, Qrels], metrics: Optional[Iterable[Union[str, Metric]]] = None,
             preset: Union[str, Preset, None] = None, per_query: bool = False) -> dict:
    """Evaluate a run as ``trec_eval -c`` does (mean over every qrels query).

    ``run``/``qrels``: paths or dicts (``{qid: {docid: score}}``, ``{qid: {docid: rel}}``); qrels may also be a
    collection name (``dl19-passage``). ``metrics``: names (see the module doc) or :class:`Metric`; ``preset``: a
    collection's 2CR conventions; neither: the preset implied by the qrels file name, else :data:`DEFAULT_METRICS`.

    Returns ``{metric: mean}``, e.g. ``{'nDCG@10': 0.5058, 'MAP': 0.3773, 'R@1000': 0.7389}``; with ``per_query``,
    ``{'all': {metric: mean}, qid: {metric: value}, ...}`` with every qrels query (trec_eval ``-q -c`` layout).
    Raises :class:`InputError` on bad input, including a run none of whose queries is judged (wrong qrels)."""
    qrels_d, qrels_path = load_qrels(qrels)
    run_d = load_run(run)
    ms, _ = resolve_metrics(metrics, preset, qrels_path)
    _check_overlap(run_d, qrels_d, f"run {run}" if isinstance(run, (str, os.PathLike)) else "the run",
                   f"qrels {qrels_path}" if qrels_path else "the qrels")
    return _scores(run_d, qrels_d, ms, per_query)


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------

def format_table(rows: Mapping[str, Mapping[str, float]], digits: int = 4) -> str:
    """A plain-text table: one row per run, one column per metric (union of the rows' metrics, in order)."""
    cols: List[str] = []
    for scores in rows.values():
        cols += [c for c in scores if c not in cols]
    width = max([len("run")] + [len(r) for r in rows])
    cw = {c: max(len(c), digits + 2) for c in cols}
    lines = ["  ".join([f"{'run':<{width}}"] + [f"{c:>{cw[c]}}" for c in cols])]
    for name, scores in rows.items():
        cells = [f"{scores[c]:>{cw[c]}.{digits}f}" if c in scores and scores[c] is not None else f"{'-':>{cw[c]}}"
                 for c in cols]
        lines.append("  ".join([f"{name:<{width}}"] + cells))
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m repllama_pyserini.eval",
        description="Evaluate TREC runs like `trec_eval -c` with Pyserini 2CR conventions.",
        epilog=f"Metrics: {METRIC_HELP}. Presets: " + "; ".join(f"{k} ({', '.join(v.metrics)})"
                                                                for k, v in PRESETS.items()))
    p.add_argument("--run", nargs="+", required=True, help="TREC run files (or MS MARCO 'qid docid rank' runs)")
    p.add_argument("--qrels", required=True, help="TREC qrels file, or a collection name such as dl19-passage")
    p.add_argument("--metrics", nargs="+", help="metric names (default: the preset's)")
    p.add_argument("--preset", help=f"collection conventions: {', '.join(PRESETS)} (default: from the qrels name)")
    p.add_argument("--topics", help="check that every judged query is in this topics file (error if not)")
    p.add_argument("--json", help="also write the scores as JSON to this file (atomically)")
    p.add_argument("--per-query", action="store_true", help="include per-query scores in the JSON")
    p.add_argument("--data", help="data folder for collection names "
                                  "(default: $REPLLAMA_PYSERINI_DATA or ../shared/ir-data)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = _parser().parse_args(argv)
    qrels, qrels_path = load_qrels(args.qrels, args.data)
    metrics, preset = resolve_metrics([s for m in args.metrics for s in m.split(",") if s] if args.metrics else None,
                                      args.preset, qrels_path)
    if args.topics:
        topics = read_topics(require_file(args.topics, "topics"))
        absent = [q for q in qrels if q not in topics]
        if absent:
            raise InputError(f"{len(absent)} of {len(qrels)} judged queries (e.g. {absent[0]!r}) are absent from "
                             f"topics {args.topics}: topics and qrels do not match")
    rows: Dict[str, Dict[str, float]] = {}
    results = []
    for path in args.run:
        run = load_run(path)
        cov = _check_overlap(run, qrels, f"run {path}", f"qrels {qrels_path}")
        if cov.missing:
            print(f"warning: {path}: {len(cov.missing)} of {cov.judged} judged queries have no results "
                  f"(e.g. {cov.missing[0]!r}); they score 0 (trec_eval -c)", file=sys.stderr)
        if cov.extra:
            print(f"note: {path}: {len(cov.extra)} run queries are not in the qrels and are ignored", file=sys.stderr)
        if args.topics:
            unknown = [q for q in run if q not in topics]
            if unknown:
                print(f"warning: {path}: {len(unknown)} run queries (e.g. {unknown[0]!r}) are not in {args.topics}",
                      file=sys.stderr)
        scores = _scores(run, qrels, metrics, args.per_query)
        means = scores["all"] if args.per_query else scores
        rows[path] = means
        entry = {"run": path, "scores": means, "judged_queries": cov.judged, "evaluated_queries": cov.evaluated,
                 "unjudged_run_queries": len(cov.extra)}
        if args.per_query:
            entry["per_query"] = {q: v for q, v in scores.items() if q != "all"}
        results.append(entry)
    header = f"qrels {qrels_path} ({len(qrels)} queries)" + (f", preset {preset}" if preset else "")
    print(header)
    names = [os.path.basename(p) for p in rows]  # short row labels when they stay unambiguous
    print(format_table(dict(zip(names, rows.values())) if len(set(names)) == len(names) else rows))
    if args.json:
        doc = {"qrels": qrels_path, "preset": preset,
               "metrics": {m.name: "trec_eval " + " ".join(m.trec_eval_args()) for m in metrics}, "runs": results}
        with atomic_write(args.json) as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    run_cli(main)
