"""Evaluate TREC runs like ``trec_eval -c`` with Pyserini's 2CR conventions::

    python -m repllama_pyserini.eval --run RUN [RUN ...] --qrels QRELS|COLLECTION [--metrics M ...]
        [--conventions dl19-passage|beir|...] [--topics TOPICS] [--only-run-queries | --queries-of RUN]
        [--qa [--ks 1 5 10]] [--significance t|randomization] [--json out.json] [--per-query]

``--significance``: a paired test over queries of every run against the first (eval/significance.py).
"""
from __future__ import annotations

import argparse
import os
from typing import Dict, Optional, Sequence

from ..cli import InputError, log, run_cli
from ..formats import read_topics, require_file
from ..formats.files import write_json
from .evaluate import coverage, evaluate, format_table, load_qrels, load_run
from .metrics import CONVENTIONS, METRIC_HELP, resolve_metrics
from .significance import TESTS, compare


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m repllama_pyserini.eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=f"Metrics: {METRIC_HELP}. Conventions: " +
                                "; ".join(f"{k} ({', '.join(v.metrics)})" for k, v in CONVENTIONS.items()))
    p.add_argument("--run", nargs="+", required=True, help="TREC run files (or MS MARCO 'qid docid rank' runs)")
    p.add_argument("--qrels", required=True, help="TREC qrels file, or a collection name such as dl19-passage")
    p.add_argument("--metrics", nargs="+", help="metric names (default: the conventions')")
    p.add_argument("--conventions", help=f"{', '.join(CONVENTIONS)} or a collection name (default: from the qrels)")
    p.add_argument("--topics", help="check that every judged query is in this topics file (error if not)")
    p.add_argument("--only-run-queries", action="store_true",
                   help="average over the judged queries each run has (runs over a query sample)")
    p.add_argument("--queries-of", help="evaluate every run on the judged queries of this run (a query sample)")
    p.add_argument("--qa", action="store_true", help="also HR@k and Recall@k (open-domain QA, eval.qa)")
    p.add_argument("--ks", type=int, nargs="+", default=[1, 5, 10, 20, 100], help="cutoffs of --qa")
    p.add_argument("--json", help="also write the scores as JSON")
    p.add_argument("--per-query", action="store_true", help="include per-query scores in the JSON")
    p.add_argument("--significance", choices=TESTS,
                   help="paired test of every run against the first: t (Student's t) or randomization (Fisher)")
    p.add_argument("--data", help="data folder for collection names (default: $REPLLAMA_PYSERINI_DATA, ../shared/ir-data)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = _parser().parse_args(argv)
    qrels, qrels_path = load_qrels(args.qrels, args.data)
    if args.queries_of:
        sample = load_run(args.queries_of)
        qrels = {q: j for q, j in qrels.items() if q in sample}
    names = [s for m in args.metrics for s in m.split(",") if s] if args.metrics else None
    metrics, conv = resolve_metrics(names, args.conventions, qrels_path)
    topics = read_topics(require_file(args.topics, "topics")) if args.topics else None
    if topics is not None:
        absent = [q for q in qrels if q not in topics]
        if absent:
            raise InputError(f"{len(absent)} of {len(qrels)} judged queries (e.g. {absent[0]!r}) are absent from "
                             f"topics {args.topics}: topics and qrels do not match")
    rows: Dict[str, Dict[str, float]] = {}
    results = []
    for path in args.run:
        run = load_run(path)
        if args.queries_of:
            run = {q: h for q, h in run.items() if q in qrels}
        judged = {q: j for q, j in qrels.items() if q in run} if args.only_run_queries else qrels
        cov = coverage(run, judged, f"run {path}", f"qrels {qrels_path}")
        if cov.missing:
            log(f"warning: {path}: {len(cov.missing)} of {cov.judged} judged queries have no results "
                f"(e.g. {cov.missing[0]!r}); they score 0 (trec_eval -c)")
        if cov.extra:
            log(f"note: {path}: {len(cov.extra)} run queries are not in the qrels and are ignored")
        if topics is not None:
            unknown = [q for q in run if q not in topics]
            if unknown:
                log(f"warning: {path}: {len(unknown)} run queries (e.g. {unknown[0]!r}) are not in {args.topics}")
        per_query = args.per_query or bool(args.significance)
        scores = evaluate(run, judged, metrics, per_query_scores=per_query)
        rows[path] = dict(scores["all"] if per_query else scores)
        if args.qa:
            from .qa import run_qa_metrics
            rows[path].update(run_qa_metrics(run, judged, args.ks))
        entry = {"run": path, "scores": rows[path], "judged_queries": cov.judged, "evaluated_queries": cov.evaluated,
                 "unjudged_run_queries": len(cov.extra)}
        entry["per_query"] = {q: v for q, v in scores.items() if q != "all"} if per_query else None
        if args.significance and results:
            entry["p_values"] = compare(results[0]["per_query"], entry["per_query"], [m.name for m in metrics],
                                        args.significance)
            entry["p_values_against"] = results[0]["run"]
        results.append(entry)
    print(f"qrels {qrels_path} ({len(qrels)} queries)" + (f", conventions {conv}" if conv else ""))
    short = [os.path.basename(p) for p in rows]  # short row labels when they stay unambiguous
    print(format_table(dict(zip(short, rows.values())) if len(set(short)) == len(short) else rows))
    if args.significance and len(results) > 1:
        print(f"paired {'t' if args.significance == 't' else 'randomization'} test against {results[0]['run']} "
              f"(two-sided p-values, {results[0]['judged_queries']} queries):")
        for r in results[1:]:
            print(f"  {r['run']}: " + "  ".join(f"{m} p={p:.4g}" for m, p in r["p_values"].items()))
    for r in results:
        if not args.per_query:
            r.pop("per_query")
    if args.json:
        write_json(args.json, {"qrels": qrels_path, "conventions": conv, "runs": results,
                               "metrics": {m.name: "trec_eval " + " ".join(m.trec_eval_args()) for m in metrics}})
        print(f"wrote {args.json}")


if __name__ == "__main__":
    run_cli(main)
