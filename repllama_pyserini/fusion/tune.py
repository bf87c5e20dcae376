"""Choose the fusion of a sparse and a dense run on held-out queries (never on the test queries)::

    python -m repllama_pyserini.fusion.tune --runs dev.bm25.trec dev.dense.trec --qrels dev.qrels.txt \\
        [--alphas 0.1 0.2 0.5 1 2] [--metric nDCG@10] --output choice.json

Tries Pyserini's hybrid (``alpha * sparse + dense`` on normalised scores, ``fusion --method hybrid
--normalization``) at each alpha, and RRF (k=60); writes every setting's scores and the best one by ``--metric``
(ties: the next conventions metric). ``python -m repllama_pyserini.fusion --choice choice.json`` applies it.
"""
from __future__ import annotations

import argparse
from typing import Dict, Optional, Sequence

from ..cli import log, run_cli
from ..eval import evaluate
from ..formats.files import write_json
from . import fuse, load_runs

ALPHAS = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


def _to_dict(trec_run) -> Dict[str, Dict[str, float]]:
    out: Dict[str, Dict[str, float]] = {}
    for q, d, s in trec_run.run_data[["topic", "docid", "score"]].itertuples(index=False):
        out.setdefault(str(q), {})[str(d)] = float(s)
    return out


def tune(sparse: str, dense: str, qrels: str, alphas: Sequence[float] = ALPHAS, metric: str = "nDCG@10",
         tie_metric: str = "R@100") -> dict:
    """Scores of every setting on ``qrels`` and the chosen one: ``{'choice': {...}, 'settings': [...]}``."""
    runs = load_runs([sparse, dense])
    settings = [dict(method="hybrid", alpha=float(a), normalization=True) for a in alphas] + \
        [dict(method="rrf", rrf_k=60)]
    for s in settings:
        fused = fuse(runs, s["method"], alpha=s.get("alpha"), rrf_k=s.get("rrf_k", 60),
                     normalization=s.get("normalization", False))
        s["scores"] = evaluate(_to_dict(fused), qrels, [metric, tie_metric])
    best = max(settings, key=lambda s: (s["scores"][metric], s["scores"][tie_metric]))
    return {"runs": [sparse, dense], "qrels": qrels, "metric": metric, "choice": best, "settings": settings}


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(prog="python -m repllama_pyserini.fusion.tune", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs=2, required=True, metavar=("SPARSE", "DENSE"), help="runs of the held-out queries")
    p.add_argument("--qrels", required=True, help="judgments of the held-out queries")
    p.add_argument("--alphas", type=float, nargs="+", default=list(ALPHAS), help="hybrid weights of the sparse run")
    p.add_argument("--metric", default="nDCG@10")
    p.add_argument("--output", required=True, help="JSON with every setting's scores and the choice")
    args = p.parse_args(argv)
    result = tune(args.runs[0], args.runs[1], args.qrels, args.alphas, args.metric)
    for s in result["settings"]:
        name = f"hybrid alpha={s['alpha']:g}" if s["method"] == "hybrid" else "rrf k=60"
        log(f"{name:20s} " + "  ".join(f"{m} {v:.4f}" for m, v in s["scores"].items()))
    write_json(args.output, result)
    c = result["choice"]
    log(f"chosen: {c['method']}" + (f" alpha={c['alpha']:g}" if c["method"] == "hybrid" else "") +
        f" ({args.metric} {c['scores'][args.metric]:.4f}); wrote {args.output}")


if __name__ == "__main__":
    run_cli(main)
