"""Regressions, Anserini style: one YAML per regression in ``docs/regressions/``, a checker that runs it.

    python -m repllama_pyserini.workflows.regressions --regression beir-v1.0.0-scifact.bm25-flat
    python -m repllama_pyserini.workflows.regressions --all --only-cpu [--skip-slow]
    python -m repllama_pyserini.workflows.regressions --regression NAME --dry-run      # print the exact commands
    python -m repllama_pyserini.workflows.regressions --all --generate-docs-only       # regenerate docs/regressions/*.md

The YAML schema, its ``${...}`` variables and how scores are compared (OK / OKish / FAIL at 4 decimals,
``unverified`` never failed): ``docs/regressions/README.md``. Exit status is non-zero on any FAIL.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import yaml

from ..cli import InputError, run_cli
from ..formats import data_dir, read_qrels, read_run
from ..formats.collections import REPO_ROOT
from ..formats.files import write_json
from .regression_docs import write_doc, write_index
from .stages import Step, run_steps

REGRESSION_DIR = os.path.join(REPO_ROOT, "docs", "regressions")
DEFAULT_TOLERANCE = 0.0005
REQUIREMENTS = {"gpu", "hub", "msmarco-passage-collection", "msmarco-doc-collection", "beir-corpora"}


@dataclass
class Metric:
    name: str
    trec_eval: str
    expected: Optional[float]
    source: str
    tolerance: float = DEFAULT_TOLERANCE
    tolerance_reason: str = ""
    unverified: bool = False


@dataclass
class Evaluation:
    label: str
    run: str
    metrics: List[Metric]
    only_run_queries: bool = False  # YAML ``queries: run``: the qrels restricted to the run's queries


@dataclass
class Stage:
    name: str
    command: str
    output: str
    complete_marker: Optional[str] = None  # a file inside a directory output that says it is complete


@dataclass
class Regression:
    name: str
    description: str
    path: str
    collection: str
    topics: str
    qrels: str
    stages: List[Stage]
    evaluations: List[Evaluation]
    cpu: bool = True
    slow: bool = False
    requires: List[str] = field(default_factory=list)
    models: Dict[str, str] = field(default_factory=dict)
    variables: Dict[str, str] = field(default_factory=dict)
    raw: dict = field(default_factory=dict)


def _need(d: dict, key: str, where: str, path: str, types=(str,)):
    if not isinstance(d, dict) or key not in d or d[key] in (None, ""):
        raise InputError(f"{path}: field '{where}{key}' is missing")
    if not isinstance(d[key], types):
        names = "/".join(t.__name__ for t in types)
        raise InputError(f"{path}: field '{where}{key}' must be {names}, got {type(d[key]).__name__}")
    return d[key]


def load_regression(path: str) -> Regression:
    """Parse and validate one regression YAML; a bad one raises InputError naming the field."""
    if not os.path.isfile(path):
        raise InputError(f"regression YAML not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            y = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise InputError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(y, dict):
        raise InputError(f"{path}: expected a mapping at the top level")
    for key in ("name", "description", "collection", "topics", "qrels"):
        _need(y, key, "", path)
    stages = []
    for i, s in enumerate(_need(y, "stages", "", path, (list,))):
        w = f"stages[{i}]."
        stages.append(Stage(_need(s, "name", w, path), _need(s, "command", w, path), _need(s, "output", w, path),
                            s.get("complete_marker")))
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise InputError(f"{path}: field 'stages' has duplicate stage names")
    evaluations = []
    for i, e in enumerate(_need(y, "evaluations", "", path, (list,))):
        w = f"evaluations[{i}]."
        metrics = []
        for j, m in enumerate(_need(e, "metrics", w, path, (list,))):
            mw = f"{w}metrics[{j}]."
            unverified = bool(m.get("unverified", False)) if isinstance(m, dict) else False
            expected = m.get("expected") if isinstance(m, dict) else None
            if expected is None and not unverified:
                raise InputError(f"{path}: field '{mw}expected' is missing (or mark the metric 'unverified: true')")
            if expected is not None and not isinstance(expected, (int, float)):
                raise InputError(f"{path}: field '{mw}expected' must be a number")
            tol = m.get("tolerance", DEFAULT_TOLERANCE)
            if tol != DEFAULT_TOLERANCE and not m.get("tolerance_reason"):
                raise InputError(f"{path}: field '{mw}tolerance_reason' is missing (a tolerance override needs a reason)")
            metrics.append(Metric(_need(m, "name", mw, path), _need(m, "trec_eval", mw, path),
                                  None if expected is None else float(expected), _need(m, "source", mw, path),
                                  float(tol), m.get("tolerance_reason", ""), unverified))
        queries = e.get("queries", "all")
        if queries not in ("all", "run"):
            raise InputError(f"{path}: field '{w}queries' must be 'all' (every judged query) or 'run' (the run's)")
        evaluations.append(Evaluation(e.get("label", f"run {i}"), _need(e, "run", w, path), metrics,
                                      queries == "run"))
    requires = y.get("requires", []) or []
    unknown = [r for r in requires if r not in REQUIREMENTS]
    if unknown:
        raise InputError(f"{path}: field 'requires' has unknown entries {unknown}; known: {sorted(REQUIREMENTS)}")
    return Regression(name=y["name"], description=y["description"], path=path, collection=y["collection"],
                      topics=y["topics"], qrels=y["qrels"], stages=stages, evaluations=evaluations,
                      cpu=bool(y.get("cpu", True)), slow=bool(y.get("slow", False)), requires=list(requires),
                      models=dict(y.get("models") or {}), variables=dict(y.get("variables") or {}), raw=y)


def all_regressions(directory: str = REGRESSION_DIR) -> List[Regression]:
    return [load_regression(p) for p in sorted(glob.glob(os.path.join(directory, "*.yaml")))]


def find_regression(name_or_path: str, directory: str = REGRESSION_DIR) -> Regression:
    if os.path.isfile(name_or_path):
        return load_regression(name_or_path)
    path = os.path.join(directory, f"{name_or_path}.yaml")
    if not os.path.isfile(path):
        known = ", ".join(os.path.basename(p)[:-5] for p in sorted(glob.glob(os.path.join(directory, "*.yaml"))))
        raise InputError(f"no regression named {name_or_path!r}; known: {known}")
    return load_regression(path)


class Context:
    """Variable substitution for one regression."""

    _VAR = re.compile(r"\$\{([^}]+)\}")

    def __init__(self, reg: Regression, data: Optional[str], work: Optional[str], strict: bool = True):
        self.reg, self.strict = reg, strict
        self.values = {"data": data_dir(data), "python": sys.executable, "repo": REPO_ROOT,
                       "work": os.path.abspath(os.path.join(work or os.path.join("runs", "regressions"),
                                                            reg.name))}
        self.values["shared"] = os.path.join(os.path.dirname(self.values["work"]), "_shared")  # outputs several share
        self.values.update({k: str(v) for k, v in reg.variables.items()})
        self.values["topics"] = self.sub(reg.topics)
        self.values["qrels"] = self.sub(reg.qrels)
        for s in reg.stages:
            self.values[f"stage.{s.name}"] = self.sub(s.output)

    def sub(self, text: str) -> str:
        def repl(m):
            key = m.group(1)
            if key.startswith("env:"):
                var = key[4:]
                if not os.environ.get(var):
                    if not self.strict:  # --dry-run: show the variable
                        return f"${var}"
                    raise InputError(f"{self.reg.path}: needs environment variable {var} (see the YAML's description)")
                return os.environ[var]
            if key not in self.values:
                raise InputError(f"{self.reg.path}: unknown variable ${{{key}}}")
            return self.sub(self.values[key]) if "${" in self.values[key] else self.values[key]
        return self._VAR.sub(repl, str(text))


def steps(reg: Regression, ctx: Context) -> List[Step]:
    """The regression's stages with every variable substituted."""
    return [Step(st.name, shlex.split(ctx.sub(st.command)), ctx.sub(st.output), st.complete_marker)
            for st in reg.stages]


def status(got: float, metric: Metric) -> str:
    if metric.expected is None:
        return "UNVERIFIED"
    diff = abs(round(got, 4) - metric.expected)
    if diff < 1e-9:
        verdict = "OK"
    elif diff <= metric.tolerance + 1e-9:
        verdict = "OKish"
    else:
        verdict = "FAIL"
    return f"{verdict} (unverified)" if metric.unverified and verdict != "OK" else verdict


def evaluate_regression(reg: Regression, ctx: Context) -> List[dict]:
    from ..eval import evaluate
    qrels = read_qrels(ctx.values["qrels"])
    rows = []
    for ev in reg.evaluations:
        run = read_run(ctx.sub(ev.run))
        for m in ev.metrics:
            got = evaluate(run, qrels, metrics=[m.trec_eval], only_run_queries=ev.only_run_queries)
            got = next(iter(got.values()))
            rows.append({"evaluation": ev.label, "metric": m.name, "trec_eval": m.trec_eval, "expected": m.expected,
                         "got": round(got, 4), "status": status(got, m), "source": m.source})
    return rows


def format_rows(reg: Regression, rows: List[dict]) -> str:
    out = [f"{reg.name}", f"{'run':<34} {'metric':<9} {'expected':>8} {'got':>8}  status"]
    for r in rows:
        exp = "-" if r["expected"] is None else f"{r['expected']:.4f}"
        out.append(f"{r['evaluation'][:34]:<34} {r['metric']:<9} {exp:>8} {r['got']:>8.4f}  {r['status']}")
    return "\n".join(out)


REQUIREMENT_ENV = {"msmarco-passage-collection": "MSMARCO_PASSAGE_CORPUS", "msmarco-doc-collection": "MSMARCO_DOC_CORPUS",
                   "beir-corpora": "BEIR_ROOT"}


def _runnable_here(reg: Regression) -> Optional[str]:
    """Why ``reg`` cannot run on this machine, or None (``hub``: checkpoints load from the hub or its cache)."""
    if "gpu" in reg.requires:
        import torch
        if not torch.cuda.is_available():
            return "needs a GPU"
    for req, var in REQUIREMENT_ENV.items():
        if req in reg.requires and not os.environ.get(var):
            return f"needs {req} (set ${var})"
    return None


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m repllama_pyserini.workflows.regressions", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--regression", help="a name in docs/regressions/ or a YAML path")
    which.add_argument("--all", action="store_true")
    p.add_argument("--only-cpu", action="store_true", help="only regressions marked cpu: true")
    p.add_argument("--skip-slow", action="store_true", help="leave out regressions marked slow: true")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--generate-docs-only", action="store_true")
    p.add_argument("--data", default=None)
    p.add_argument("--work", default=None, help="where outputs go (default: ./runs/regressions/<name>, under the current "
                   "directory)")
    p.add_argument("--directory", default=REGRESSION_DIR, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    regs = all_regressions(args.directory) if args.all else [find_regression(args.regression, args.directory)]
    if args.only_cpu:
        regs = [r for r in regs if r.cpu]
    if args.skip_slow:
        regs = [r for r in regs if not r.slow]
    failed, summary = [], []
    for reg in regs:
        ctx = Context(reg, args.data, args.work, strict=not (args.dry_run or args.generate_docs_only))
        if args.generate_docs_only:
            print(f"wrote {write_doc(reg)}")
            continue
        if args.dry_run:
            print(f"# {reg.name}")
            run_steps(steps(reg, ctx), reg.name, dry_run=True)
            continue
        why = _runnable_here(reg)
        if why:
            print(f"[{reg.name}] skipped: {why}", file=sys.stderr)
            summary.append((reg.name, "SKIPPED: " + why))
            continue
        os.makedirs(ctx.values["work"], exist_ok=True)
        run_steps(steps(reg, ctx), reg.name, cwd=REPO_ROOT)
        rows = evaluate_regression(reg, ctx)
        print(format_rows(reg, rows))
        write_json(os.path.join(ctx.values["work"], "results.json"), rows)
        bad = [r for r in rows if r["status"] == "FAIL"]  # "FAIL (unverified)" is reported, never failed
        failed += [reg.name] if bad else []
        summary.append((reg.name, "FAIL" if bad else "OK"))
    if args.generate_docs_only and args.all and not (args.only_cpu or args.skip_slow):
        print(f"wrote {write_index(regs, args.directory)}")
    if len(summary) > 1:
        print("\nsummary:")
        for name, s in summary:
            print(f"  {name}: {s}")
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    run_cli(main)
