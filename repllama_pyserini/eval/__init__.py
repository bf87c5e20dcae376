"""Evaluation with ``trec_eval -c`` semantics and Pyserini's 2CR conventions (:mod:`.metrics`, :mod:`.evaluate`);
CLI ``python -m repllama_pyserini.eval``."""
from .evaluate import coverage, evaluate, format_table, load_qrels, load_run, per_query
from .metrics import CONVENTIONS, DEFAULT_METRICS, Conventions, Metric, get_conventions, parse_metric, resolve_metrics

__all__ = ["coverage", "evaluate", "format_table", "load_qrels", "load_run", "per_query", "CONVENTIONS",
           "DEFAULT_METRICS", "Conventions", "Metric", "get_conventions", "parse_metric", "resolve_metrics"]
