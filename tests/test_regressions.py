"""Regression YAMLs: every shipped YAML validates and its generated doc is current; the checker runs stages,
skips complete ones, compares at 4 decimals (OK / OKish / FAIL) and exits non-zero on FAIL."""
import os
import subprocess
import sys
import textwrap

import pytest

from repllama_pyserini.cli import InputError
from repllama_pyserini.workflows import regressions as R


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "repllama_pyserini.workflows.regressions", *args], capture_output=True,
                          text=True, timeout=900)


def test_every_shipped_yaml_validates_and_its_page_shows_it():
    """Each YAML loads; its page (read as text) names it and shows every command and expected score the YAML holds
    (the YAML read here with yaml, independently of the generator); the index links every page."""
    import glob

    import yaml
    from repllama_pyserini.eval import parse_metric
    paths = sorted(glob.glob(os.path.join(R.REGRESSION_DIR, "*.yaml")))
    assert len(paths) >= 4 and len(R.all_regressions()) == len(paths)
    with open(os.path.join(R.REGRESSION_DIR, "README.md"), encoding="utf-8") as f:
        index = f.read()
    for path in paths:
        with open(path, encoding="utf-8") as f:
            y = yaml.safe_load(f)
        page = os.path.splitext(path)[0] + ".md"
        assert os.path.isfile(page), f"run `python -m repllama_pyserini.workflows.regressions --all --generate-docs-only`"
        with open(page, encoding="utf-8") as f:
            text = f.read()
        assert text.startswith(f"# Regression: {y['name']}\n") and f"[{y['name']}]({os.path.basename(page)})" in index
        for stage in y["stages"]:
            assert stage["command"].strip() in text, (page, stage["name"])
        for ev in y["evaluations"]:
            for m in ev["metrics"]:
                parse_metric(m["trec_eval"])  # one metric language: trec_eval options parse
                assert f"`{m['trec_eval']}`" in text and m["source"].strip() and m["source"] in text
                if m.get("expected") is not None:
                    assert f"| {m['expected']:.4f}" in text, (page, m["name"])


def test_status_follows_2cr_conventions():
    m = R.Metric("nDCG@10", "-c -m ndcg_cut.10", 0.6789, "test")
    assert R.status(0.67891, m) == "OK"
    assert R.status(0.6793, m) == "OKish"
    assert R.status(0.6795, m) == "FAIL"
    assert R.status(0.6, R.Metric("x", "-c -m map", 0.7, "paper", unverified=True)) == "FAIL (unverified)"
    wide = R.Metric("MRR@10", "-c -M 10 -m recip_rank", 0.412, "paper", tolerance=0.005, tolerance_reason="r")
    assert R.status(0.416, wide) == "OKish" and R.status(0.418, wide) == "FAIL"


@pytest.mark.parametrize("mutation,field", [
    ("drop:qrels", "'qrels' is missing"),
    ("drop:source", "'evaluations[0].metrics[0].source' is missing"),
    ("tolerance", "tolerance_reason"),
    ("requires", "'requires' has unknown"),
    ("expected", "'evaluations[0].metrics[0].expected' is missing"),
    ("queries", "'evaluations[0].queries' must be"),
])
def test_bad_yaml_names_the_field(tmp_path, mutation, field):
    y = {"name": "x", "description": "d", "collection": "c", "topics": "t", "qrels": "q",
         "stages": [{"name": "s", "command": "true", "output": "o"}],
         "evaluations": [{"run": "r", "metrics": [{"name": "nDCG@10", "trec_eval": "-c -m ndcg_cut.10",
                                                   "expected": 0.5, "source": "paper"}]}]}
    met = y["evaluations"][0]["metrics"][0]
    if mutation == "drop:qrels":
        del y["qrels"]
    elif mutation == "drop:source":
        del met["source"]
    elif mutation == "tolerance":
        met["tolerance"] = 0.01
    elif mutation == "requires":
        y["requires"] = ["quantum-computer"]
    elif mutation == "expected":
        del met["expected"]
    elif mutation == "queries":
        y["evaluations"][0]["queries"] = "some"
    import yaml
    p = tmp_path / "x.yaml"
    p.write_text(yaml.safe_dump(y))
    with pytest.raises(InputError, match=field.replace("[", r"\[").replace("]", r"\]")):
        R.load_regression(str(p))
    r = _cli("--regression", str(p), "--dry-run")
    assert r.returncode == 2 and field in r.stderr and "Traceback" not in r.stderr


def test_checker_runs_skips_and_fails(tmp_path, ir_data):
    """A regression whose stage writes a known run: OK when expected matches, FAIL (exit 1) when not, and the
    stage is skipped on the second run because its output is complete."""
    qrels = os.path.join(ir_data, "topics-and-qrels", "qrels.dl19-passage.txt")
    bm25 = os.path.join(ir_data, "msmarco-passage", "rank_llm_candidates", "trec_results_BM25_dl19.txt")
    marker = tmp_path / "ran.txt"
    script = tmp_path / "stage.py"
    script.write_text(textwrap.dedent(f"""
        import shutil, sys
        open({str(marker)!r}, "a").write("ran\\n")
        shutil.copy({bm25!r}, sys.argv[1])
    """))

    def write(expected):
        p = tmp_path / "reg.yaml"
        p.write_text(textwrap.dedent(f"""
            name: test-reg
            description: test
            collection: dl19-passage
            topics: {ir_data}/topics-and-qrels/topics.dl19-passage.txt
            qrels: {qrels}
            stages:
              - name: copy
                output: ${{work}}/run.trec
                command: ${{python}} {script} ${{stage.copy}}
            evaluations:
              - label: copied BM25
                run: ${{stage.copy}}
                metrics:
                  - {{name: nDCG@10, trec_eval: -c -m ndcg_cut.10, expected: {expected}, source: test}}
        """))
        return str(p)

    work = str(tmp_path / "work")
    r = _cli("--regression", write(0.5058), "--work", work)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "OK" in r.stdout and "0.5058" in r.stdout
    r = _cli("--regression", write(0.5100), "--work", work)
    assert r.returncode == 1 and "FAIL" in r.stdout
    assert marker.read_text().count("ran") == 1  # second run skipped the complete stage
    r = _cli("--regression", write(0.5058), "--work", work, "--dry-run")
    assert r.returncode == 0 and str(script) in r.stdout and marker.read_text().count("ran") == 1


def test_cpu_regressions_that_fit_ci(ir_data, tmp_path):
    """The quick CPU regressions on real data (the BM25 SciFact ones run in tests/test_bm25.py)."""
    in_test_bm25 = {"beir-v1.0.0-scifact.bm25-flat", "beir-v1.0.0-scifact.bm25-multifield"}
    names = [r.name for r in R.all_regressions() if r.cpu and not r.slow and r.name not in in_test_bm25]
    assert names
    for name in names:
        r = _cli("--regression", name, "--work", str(tmp_path))
        assert r.returncode == 0, (name, r.stdout[-2000:], r.stderr[-2000:])
        assert "FAIL" not in r.stdout
