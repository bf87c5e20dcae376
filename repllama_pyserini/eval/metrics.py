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

trec_eval option strings are the same language (``-c -l 2 -m recall.1000``: ``-c`` is required; regression YAMLs
use them). trec_eval's own names are accepted too (``ndcg_cut.10``, ``recip_rank``, ``recall.1000``, ``map``, ``P.10``,
``map_cut.100``, ``success.10``, ``ndcg``). Options are suffixes: ``:l2`` is ``-l 2`` (a document is relevant when
its judgment is >= 2), ``:M100`` is ``-M 100`` (only the top 100 of each ranking are evaluated); e.g. ``R@1000:l2``.

Semantics are trec_eval's with ``-c`` (see :mod:`.evaluate`). Conventions are the collections' rules of Pyserini's
2CR (``pyserini/2cr/msmarco.py``, ``beir.py``): a metric list plus per-measure defaults (``-l 2`` for MAP/recall on DL
passage, ``-M 100`` for MAP on DL doc) that also apply to metrics asked for explicitly, unless they carry their own
``:l``/``:M``; without metrics or conventions, those the qrels file name implies.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field, replace
from typing import Dict, Iterable, List, Mapping, Optional, Tuple, Union

from ..cli import InputError
from ..formats.collections import COLLECTIONS, canonical, conventions_of_qrels


@dataclass(frozen=True)
class Metric:
    """One trec_eval measure with its options.

    ``measure``: trec_eval's name (``ndcg_cut``, ``recall``, ``P``, ``success``, ``map``, ``recip_rank``, ``ndcg``);
    ``cutoff``: its parameter (``ndcg_cut.10``); ``rel_level``: ``-l`` (None: the conventions', else 1);
    ``max_docs``: ``-M`` (None: the conventions', else all); ``name``: the display name."""
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
    if str(spec).lstrip().startswith("-"):
        return parse_trec_eval(str(spec))
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


@dataclass(frozen=True)
class Conventions:
    """A collection's Pyserini 2CR conventions."""
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
CONVENTIONS: Dict[str, Conventions] = {
    "msmarco-passage-dev": Conventions("msmarco-passage-dev", ("MRR@10", "R@1000"),
                                  description="2CR: MRR@10 -c -M 10 -m recip_rank; R@1K -c -m recall.1000"),
    "dl19-passage": Conventions("dl19-passage", **_DL_PASSAGE),
    "dl20-passage": Conventions("dl20-passage", **_DL_PASSAGE),
    "msmarco-doc-dev": Conventions("msmarco-doc-dev", ("MRR@100", "R@1000"),
                              description="2CR: -c -M 100 -m recip_rank (2CR labels it MRR@10; the paper MRR@100); "
                                          "R@1K -c -m recall.1000"),
    "dl19-doc": Conventions("dl19-doc", **_DL_DOC),
    "dl20-doc": Conventions("dl20-doc", **_DL_DOC),
    "beir": Conventions("beir", ("nDCG@10", "R@100", "R@1000"),
                   description="2CR: -c -m ndcg_cut.10; -c -m recall.100; -c -m recall.1000"),
}
DEFAULT_METRICS: Tuple[str, ...] = ("nDCG@10", "MRR@10", "MAP", "R@100", "R@1000")


def get_conventions(name: Union[str, Conventions]) -> Conventions:
    """Conventions by name: their own, or a collection name (``dl19-passage``, ``beir-v1.0.0-scifact``...)."""
    if isinstance(name, Conventions):
        return name
    key = canonical(name)
    if key.startswith("beir"):
        key = "beir"
    key = COLLECTIONS[key][2] if key in COLLECTIONS else key
    if key not in CONVENTIONS:
        raise InputError(f"unknown conventions {name!r}; known: {', '.join(CONVENTIONS)} (or a collection name)")
    return CONVENTIONS[key]


def resolve_metrics(metrics: Optional[Iterable[Union[str, Metric]]] = None,
                    conventions: Union[str, Conventions, None] = None,
                    qrels_path: Optional[str] = None) -> Tuple[List[Metric], Optional[str]]:
    """The metrics to compute and the conventions in force: explicit metrics (with the conventions' options), else
    the conventions' metrics, else those implied by the qrels file name, else :data:`DEFAULT_METRICS`."""
    if conventions is None and metrics is None and qrels_path:
        conventions = conventions_of_qrels(qrels_path)
    p = get_conventions(conventions) if conventions is not None else None
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


def parse_trec_eval(options: str) -> Metric:
    """``'-c -l 2 -M 100 -m recall.1000'`` -> a :class:`Metric` (``-c`` is required: it is always in force here)."""
    toks, rel_level, max_docs, measure, i = shlex.split(options), None, None, None, 0
    while i < len(toks):
        t = toks[i]
        if t == "-c":
            i += 1
        elif t in ("-l", "-M", "-m") and i + 1 < len(toks):
            try:
                if t == "-l":
                    rel_level = int(toks[i + 1])
                elif t == "-M":
                    max_docs = int(toks[i + 1])
            except ValueError:
                raise InputError(f"trec_eval options {options!r}: {t} needs an integer") from None
            measure = toks[i + 1] if t == "-m" else measure
            i += 2
        else:
            raise InputError(f"unsupported trec_eval option {t!r} in {options!r} (use -c, -l N, -M N, -m measure[.k])")
    if "-c" not in toks:
        raise InputError(f"trec_eval options {options!r} must include -c (queries without results count as zero)")
    if measure is None:
        raise InputError(f"trec_eval options {options!r} name no measure (-m)")
    name, _, k = measure.partition(".")
    try:
        return parse_metric(Metric(name, int(k) if k else None, rel_level, max_docs))
    except ValueError:
        raise InputError(f"trec_eval options {options!r}: bad cutoff {k!r}") from None
