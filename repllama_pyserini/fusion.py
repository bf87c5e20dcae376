"""Fuse first-stage runs (BM25 + RepLLaMA...) with Pyserini's own fusion code, one CLI, a TREC run out.

    python -m repllama_pyserini.fusion --runs bm25.trec repllama.trec --method rrf --k 60 --depth 1000 \\
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

Runs are TREC files (read by ``pyserini.trectools.TrecRun``) or rank_llm candidate files
(``retrieve_results_*.json[.gz]``, converted with their ranks and scores). ``--depth``: results of each input
run considered per topic; ``--hits``: results written per topic. Ties are broken by docid ascending, as in
Pyserini's merge (so ranks equal Pyserini's; trec_eval re-sorts ties itself).
The output keeps full float precision (RRF scores differ in the 7th decimal deep in a ranking).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import Optional, Sequence

from .io import InputError, Run, atomic_write, require_file, run_cli

METHODS = ("rrf", "interpolation", "average", "normalize", "hybrid")
DEFAULT_ALPHA = {"interpolation": 0.5, "hybrid": 0.1}


def _is_candidates(path: str) -> bool:
    return path.endswith((".json", ".json.gz"))


def load_runs(paths: Sequence[str], resort: bool = False) -> list:
    """``pyserini.trectools.TrecRun`` objects for TREC files or rank_llm candidate JSON files."""
    from pyserini.trectools import TrecRun
    from .corpus_lookup import write_candidates_as_trec
    runs = []
    for path in paths:
        require_file(path, "run")
        if _is_candidates(path):
            with tempfile.TemporaryDirectory() as tmp:
                trec = write_candidates_as_trec(path, os.path.join(tmp, "run.trec"))
                runs.append(_read_trec(TrecRun, trec, resort, shown=path))
        else:
            runs.append(_read_trec(TrecRun, path, resort))
    return runs


def _read_trec(TrecRun, path: str, resort: bool, shown: Optional[str] = None):
    shown = shown or path
    try:
        run = TrecRun(filepath=path, resort=resort)
    except Exception as e:  # pandas parse errors
        raise InputError(f"cannot read TREC run {shown} (expected 'qid Q0 docid rank score tag' lines): "
                         f"{str(e).splitlines()[0]}") from None
    df = run.run_data
    if len(df) == 0:
        raise InputError(f"empty run: {shown}")
    if df.isnull().values.any() or df["score"].dtype.kind not in "fiu" or df["rank"].dtype.kind not in "fiu":
        raise InputError(f"{shown}: expected 'qid Q0 docid rank score tag' on every line")
    df["topic"] = df["topic"].astype(str)  # '0042' and 42 must not be mixed up across runs
    df["docid"] = df["docid"].astype(str)
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


class _Hit:
    __slots__ = ("docid", "score")

    def __init__(self, docid: str, score: float):
        self.docid, self.score = docid, score


def hybrid(sparse, dense, alpha: float = 0.1, depth: Optional[int] = 1000, hits: Optional[int] = 1000,
           normalization: bool = False, weight_on_dense: bool = False):
    """Pyserini's dense + sparse hybrid (``HybridSearcher._hybrid_results``) on two ``TrecRun`` objects: the top
    ``depth`` of each side per topic, in file order; output sorted by score, ties by docid."""
    import pandas as pd
    from pyserini.search.hybrid import HybridSearcher
    from pyserini.trectools import TrecRun

    def per_topic(run):
        df = run.run_data.sort_values(["topic", "rank"], kind="stable")
        return {t: [_Hit(d, float(s)) for d, s in zip(g["docid"], g["score"])][:depth]
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


def to_run(trec_run) -> Run:
    """A ``TrecRun`` as ``{qid: {docid: score}}`` (qids and docids as strings)."""
    run: Run = {}
    for t, d, s in zip(trec_run.run_data["topic"], trec_run.run_data["docid"], trec_run.run_data["score"]):
        run.setdefault(str(t), {})[str(d)] = float(s)
    return run


def write_fused(trec_run, path: str, tag: str = "fusion") -> None:
    """Write a fused ``TrecRun`` atomically: per topic by score (ties by docid), ranks from 1, full precision."""
    df = trec_run.run_data
    order = sorted(range(len(df)), key=lambda i: (str(df["topic"].iat[i]), -float(df["score"].iat[i]),
                                                  str(df["docid"].iat[i])))
    topics, docids, scores = df["topic"].tolist(), df["docid"].tolist(), df["score"].tolist()
    with atomic_write(path) as f:
        last, rank = None, 0
        for i in order:
            t = str(topics[i])
            rank = rank + 1 if t == last else 1
            last = t
            f.write(f"{t} Q0 {docids[i]} {rank} {float(scores[i])!r} {tag}\n")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m repllama_pyserini.fusion", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", required=True, help="TREC runs (or rank_llm candidate JSON files)")
    p.add_argument("--method", choices=METHODS, default="rrf")
    p.add_argument("--alpha", type=float, default=None,
                   help="interpolation: alpha * run1 + (1 - alpha) * run2 (default 0.5); "
                        "hybrid: alpha * sparse + dense (default 0.1, Pyserini's)")
    p.add_argument("--k", "--rrf-k", "--rrf.k", dest="rrf_k", type=int, default=60,
                   help="RRF constant k (default 60; Pyserini's --rrf.k)")
    p.add_argument("--depth", type=int, default=1000, help="results of each input run considered per topic")
    p.add_argument("--hits", type=int, default=1000, help="results written per topic (Pyserini's --k)")
    p.add_argument("--resort", action="store_true", help="re-rank each input by score before fusing "
                                                         "(Pyserini's --resort; default: ranks as in the files)")
    p.add_argument("--normalization", action="store_true", help="hybrid: Pyserini's score normalisation")
    p.add_argument("--weight-on-dense", action="store_true", help="hybrid: sparse + alpha * dense")
    p.add_argument("--output", required=True)
    p.add_argument("--tag", "--runtag", dest="tag", default=None, help="run tag (default: the method)")
    args = p.parse_args(argv)
    for n in ("depth", "hits", "rrf_k"):
        if getattr(args, n) < 1:
            raise InputError(f"--{n.replace('_', '-')} must be >= 1")
    if args.alpha is not None and not 0.0 <= args.alpha <= (1.0 if args.method == "interpolation" else float("inf")):
        raise InputError(f"--alpha {args.alpha} out of range for {args.method}")
    runs = load_runs(args.runs, resort=args.resort)
    fused = fuse(runs, args.method, alpha=args.alpha, rrf_k=args.rrf_k, depth=args.depth, hits=args.hits,
                 normalization=args.normalization, weight_on_dense=args.weight_on_dense)
    write_fused(fused, args.output, tag=args.tag or args.method)
    n_topics = fused.run_data["topic"].nunique()
    print(f"wrote {args.output}: {args.method} of {len(runs)} runs, {n_topics} topics, {len(fused.run_data)} hits",
          file=sys.stderr)


if __name__ == "__main__":
    run_cli(main)
