"""Fuse first-stage runs (BM25 + RepLLaMA...) with Pyserini's own fusion code, one CLI, a TREC run out.

    python -m repllama_pyserini.fusion --runs bm25.trec repllama.trec --method rrf --rrf.k 60 --depth 1000 \\
        --output fused.trec
    python -m repllama_pyserini.fusion --runs bm25.trec repllama.trec --method interpolation --alpha 0.5 ...
    python -m repllama_pyserini.fusion --runs bm25.trec repllama.trec --method hybrid --alpha 0.1 ...

Methods:
  rrf            ``pyserini.fusion.reciprocal_rank_fusion`` (score = sum 1 / (k + rank), ranks as in the files)
  interpolation  ``pyserini.fusion.interpolation``: alpha * run1 + (1 - alpha) * run2 (exactly two runs)
  average        ``pyserini.fusion.average``;  normalize: ``pyserini.fusion.normalize`` (min-max per topic, sum)
  hybrid         Pyserini's ``HybridSearcher`` scoring on two runs given as SPARSE DENSE:
                 alpha * sparse + dense (``--weight-on-dense``: sparse + alpha * dense), a document missing from
                 one side gets that side's minimum score; ``--normalization`` as in Pyserini's hybrid search.

Runs are TREC files (checked line by line, then read by ``pyserini.trectools.TrecRun``) or rank_llm candidate files
(``retrieve_results_*.json[.gz]``, converted with their ranks and scores). ``--depth``: results of each input run
considered per topic; ``--k``: results written per topic (``--rrf.k``: the RRF constant). Ties are broken by docid
ascending, as in Pyserini's merge (so ranks equal Pyserini's). The output keeps full float precision (RRF scores
differ in the 7th decimal deep in a ranking).
"""
from __future__ import annotations

import itertools
import os
import tempfile
from typing import Optional, Sequence

from ..cli import InputError
from ..formats.candidates import candidates_to_trec, is_candidates
from ..formats.files import atomic_write, require_file
from ..formats.runs import read_run

METHODS = ("rrf", "interpolation", "average", "normalize", "hybrid")
DEFAULT_ALPHA = {"interpolation": 0.5, "hybrid": 0.1}


def load_runs(paths: Sequence[str], resort: bool = False) -> list:
    """``pyserini.trectools.TrecRun`` objects for TREC files or rank_llm candidate files (each checked first)."""
    from pyserini.trectools import TrecRun
    runs = []
    for path in paths:
        require_file(path, "run")
        if is_candidates(path):
            with tempfile.TemporaryDirectory() as tmp:
                runs.append(_trec_run(TrecRun, candidates_to_trec(path, os.path.join(tmp, "run.trec")), resort))
        else:
            read_run(path)  # file:line errors: columns, numbers, duplicates
            runs.append(_trec_run(TrecRun, path, resort))
    return runs


def _trec_run(TrecRun, path: str, resort: bool):
    if len(open(path, encoding="utf-8").readline().split()) != 6:
        raise InputError(f"{path}: fusion needs TREC runs ('qid Q0 docid rank score tag')")
    run = TrecRun(filepath=path, resort=resort)
    run.run_data["topic"] = run.run_data["topic"].astype(str)  # '0042' and 42 must not be mixed up across runs
    run.run_data["docid"] = run.run_data["docid"].astype(str)
    return run


def fuse(runs: list, method: str = "rrf", alpha: Optional[float] = None, rrf_k: int = 60,
         depth: Optional[int] = 1000, hits: Optional[int] = 1000, normalization: bool = False,
         weight_on_dense: bool = False):
    """Fuse ``TrecRun`` objects with Pyserini's implementation of ``method``; returns a ``TrecRun``."""
    from pyserini import fusion as pf
    if method not in METHODS:
        raise InputError(f"unknown fusion method {method!r}; choose one of {METHODS}")
    if len(runs) < 2:
        raise InputError("fusion needs at least two runs")
    if method in ("interpolation", "hybrid") and len(runs) != 2:
        raise InputError(f"{method} fuses exactly two runs, got {len(runs)}")
    alpha = DEFAULT_ALPHA.get(method) if alpha is None else alpha
    if method == "rrf":
        return pf.reciprocal_rank_fusion(runs, rrf_k=rrf_k, depth=depth, k=hits)
    if method == "interpolation":
        return pf.interpolation(runs, alpha=alpha, depth=depth, k=hits)
    if method == "average":
        return pf.average(runs, depth=depth, k=hits)
    if method == "normalize":
        return pf.normalize(runs, depth=depth, k=hits)
    return hybrid(runs[0], runs[1], alpha=alpha, depth=depth, hits=hits, normalization=normalization,
                  weight_on_dense=weight_on_dense)


def hybrid(sparse, dense, alpha: float = 0.1, depth: Optional[int] = 1000, hits: Optional[int] = 1000,
           normalization: bool = False, weight_on_dense: bool = False):
    """Pyserini's dense + sparse hybrid (``HybridSearcher._hybrid_results``) on two ``TrecRun`` objects: the top
    ``depth`` of each side per topic, in file order; output sorted by score, ties by docid."""
    import pandas as pd
    from pyserini.search.faiss import DenseSearchResult
    from pyserini.search.hybrid import HybridSearcher
    from pyserini.trectools import TrecRun

    def per_topic(run):
        df = run.run_data.sort_values(["topic", "rank"], kind="stable")
        return {t: [DenseSearchResult(d, float(s)) for d, s in zip(g["docid"], g["score"])][:depth]
                for t, g in df.groupby("topic", sort=False)}

    s_hits, d_hits = per_topic(sparse), per_topic(dense)
    rows = []
    for topic in sorted(set(s_hits) | set(d_hits)):
        fused = HybridSearcher._hybrid_results(d_hits.get(topic, []), s_hits.get(topic, []), alpha, None,
                                               normalization, weight_on_dense)
        fused = sorted(((h.docid, float(h.score)) for h in fused), key=lambda kv: (-kv[1], kv[0]))[:hits]
        rows += [(topic, "Q0", d, r, s, "hybrid") for r, (d, s) in enumerate(fused, 1)]
    out = TrecRun()
    out.run_data = pd.DataFrame(rows, columns=TrecRun.columns)
    return out


def write_fused(trec_run, path: str, tag: str = "fusion") -> None:
    """Write a fused ``TrecRun`` atomically: per topic by score (ties by docid), ranks from 1, full precision."""
    df = trec_run.run_data
    rows = sorted(zip(map(str, df["topic"]), map(float, df["score"]), map(str, df["docid"])),
                  key=lambda r: (r[0], -r[1], r[2]))
    with atomic_write(path) as f:
        for topic, hits in itertools.groupby(rows, key=lambda r: r[0]):
            for rank, (_, score, docid) in enumerate(hits, 1):
                f.write(f"{topic} Q0 {docid} {rank} {score!r} {tag}\n")
