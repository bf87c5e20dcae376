"""``python -m repllama_pyserini.fusion --runs A B --method rrf|interpolation|average|normalize|hybrid --output OUT``
(see :mod:`repllama_pyserini.fusion`)."""
from __future__ import annotations

import argparse

from ..cli import InputError, log, positive, run_cli
from . import METHODS, __doc__ as DOC, fuse, load_runs, write_fused


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m repllama_pyserini.fusion", description=DOC,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", required=True, help="TREC runs (or rank_llm candidate JSON files)")
    p.add_argument("--method", choices=METHODS, default="rrf")
    p.add_argument("--alpha", type=float, default=None,
                   help="interpolation: alpha * run1 + (1 - alpha) * run2 (default 0.5); "
                        "hybrid: alpha * sparse + dense (default 0.1, Pyserini's)")
    p.add_argument("--rrf.k", "--rrf-k", dest="rrf_k", type=int, default=60, help="RRF constant (default 60)")
    p.add_argument("--depth", type=int, default=1000, help="results of each input run considered per topic")
    p.add_argument("--k", "--hits", dest="hits", type=int, default=1000,
                   help="results written per topic (default 1000; Pyserini's --k)")
    p.add_argument("--resort", action="store_true", help="re-rank each input by score before fusing "
                                                         "(Pyserini's --resort; default: ranks as in the files)")
    p.add_argument("--normalization", action="store_true", help="hybrid: Pyserini's score normalisation")
    p.add_argument("--weight-on-dense", action="store_true", help="hybrid: sparse + alpha * dense")
    p.add_argument("--choice", help="the setting chosen by repllama_pyserini.fusion.tune (its JSON): method, alpha, "
                                    "normalization and rrf.k from there")
    p.add_argument("--output", required=True)
    p.add_argument("--tag", "--runtag", dest="tag", default=None, help="run tag (default: the method)")
    args = p.parse_args(argv)
    if args.choice:
        from ..formats.files import read_json
        c = read_json(args.choice).get("choice") or {}
        if c.get("method") not in METHODS:
            raise InputError(f"{args.choice}: no fusion choice in it (write it with repllama_pyserini.fusion.tune)")
        args.method, args.alpha = c["method"], c.get("alpha")
        args.normalization, args.rrf_k = bool(c.get("normalization")), int(c.get("rrf_k", args.rrf_k))
    for n in ("depth", "hits", "rrf_k"):
        positive(n, getattr(args, n))
    if args.alpha is not None and not 0.0 <= args.alpha <= (1.0 if args.method == "interpolation" else float("inf")):
        raise InputError(f"--alpha {args.alpha} out of range for {args.method}")
    runs = load_runs(args.runs, resort=args.resort)
    fused = fuse(runs, args.method, alpha=args.alpha, rrf_k=args.rrf_k, depth=args.depth, hits=args.hits,
                 normalization=args.normalization, weight_on_dense=args.weight_on_dense)
    write_fused(fused, args.output, tag=args.tag or args.method)
    n_topics = fused.run_data["topic"].nunique()
    log(f"wrote {args.output}: {args.method} of {len(runs)} runs, {n_topics} topics, {len(fused.run_data)} hits")


if __name__ == "__main__":
    run_cli(main)
