"""Paired significance tests against their formulas: the t statistic by hand, the randomization test against the
exact enumeration of every sign assignment."""
import itertools
import math

import pytest

from repllama_pyserini.eval.significance import compare, paired, randomization_test, t_test

DIFFS = [0.12, -0.03, 0.25, 0.08, 0.0, 0.19, -0.07, 0.11]


def test_t_test_is_the_paired_t_formula():
    from scipy.stats import t as student
    n = len(DIFFS)
    mean = sum(DIFFS) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in DIFFS) / (n - 1))
    t = mean / (sd / math.sqrt(n))
    assert t_test(DIFFS) == pytest.approx(2 * student.sf(abs(t), n - 1), rel=1e-12)
    assert t_test([0.0, 0.0, 0.0]) == 1.0


def test_randomization_test_approaches_the_exact_enumeration():
    observed = abs(sum(DIFFS))
    flips = list(itertools.product((1, -1), repeat=len(DIFFS)))
    exact = sum(abs(sum(s * d for s, d in zip(signs, DIFFS))) >= observed - 1e-12 for signs in flips) / len(flips)
    assert randomization_test(DIFFS, trials=20000, seed=1) == pytest.approx(exact, abs=0.01)
    assert randomization_test(DIFFS, trials=2000, seed=3) == randomization_test(DIFFS, trials=2000, seed=3)


def test_compare_pairs_queries_and_refuses_different_ones():
    a = {"q1": {"nDCG@10": 0.5}, "q2": {"nDCG@10": 0.2}, "q3": {"nDCG@10": 0.9}}
    b = {"q1": {"nDCG@10": 0.7}, "q2": {"nDCG@10": 0.1}, "q3": {"nDCG@10": 0.95}}
    assert paired({q: s["nDCG@10"] for q, s in a.items()}, {q: s["nDCG@10"] for q, s in b.items()}) == \
        pytest.approx([0.2, -0.1, 0.05])
    assert compare(a, b, ["nDCG@10"]) == {"nDCG@10": pytest.approx(t_test([0.2, -0.1, 0.05]))}
    with pytest.raises(ValueError, match="different queries"):
        compare(a, {"q1": b["q1"]}, ["nDCG@10"])


def test_eval_cli_significance_equals_scipy_ttest_rel_on_pytrec_eval_scores(tmp_path):
    """The CLI's p-value of run B against run A = scipy's ``ttest_rel`` over pytrec_eval's per-query nDCG@10 (a
    query without results counts 0, as trec_eval -c does)."""
    import json
    import pytrec_eval
    from scipy.stats import ttest_rel
    from repllama_pyserini.eval.__main__ import main
    qrels = {f"q{i}": {f"d{i}": 1, f"d{i + 1}": 2} for i in range(12)}
    runs = {}
    for name, shift in (("a", 0), ("b", 1)):
        path = tmp_path / f"{name}.trec"
        lines = []
        for i in range(12 - (name == "a")):  # run a lacks q11
            docs = [f"d{(i + shift * (i % 3) + k) % 14}" for k in range(5)]
            lines += [f"q{i} Q0 {d} {r + 1} {10 - r} {name}" for r, d in enumerate(docs)]
        path.write_text("\n".join(lines) + "\n")
        runs[name] = str(path)
    (tmp_path / "qrels.txt").write_text("".join(f"{q} 0 {d} {g}\n" for q, j in qrels.items() for d, g in j.items()))
    out = tmp_path / "s.json"
    main(["--run", runs["a"], runs["b"], "--qrels", str(tmp_path / "qrels.txt"), "--metrics", "nDCG@10",
          "--significance", "t", "--json", str(out)])
    ev = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"})

    def per_query(path):
        run = {}
        for line in open(path):
            q, _, d, _, s, _ = line.split()
            run.setdefault(q, {})[d] = float(s)
        res = ev.evaluate(run)
        return [res[q]["ndcg_cut_10"] if q in res else 0.0 for q in sorted(qrels)]
    expected = ttest_rel(per_query(runs["b"]), per_query(runs["a"])).pvalue
    got = json.loads(out.read_text())["runs"][1]["p_values"]["nDCG@10"]
    assert got == pytest.approx(expected, rel=1e-9)
    assert "per_query" not in json.loads(out.read_text())["runs"][0]
