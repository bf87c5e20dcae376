"""Fusion of real DL19 runs (BM25 TREC run + RepLLaMA candidates) against references written here from the published
formulas (RRF: Cormack et al. 2009; interpolation, average, min-max normalisation, Pyserini's hybrid scoring)."""
import os
import subprocess
import sys

import pytest

from repllama_pyserini.cli import InputError
from repllama_pyserini.formats import candidates_to_trec as write_candidates_as_trec
from repllama_pyserini.formats import read_candidates
from repllama_pyserini.fusion.__main__ import main as fusion_main


@pytest.fixture(scope="module")
def dl19(ir_data, tmp_path_factory):
    cand = os.path.join(ir_data, "msmarco-passage", "rank_llm_candidates")
    bm25 = os.path.join(cand, "trec_results_BM25_dl19.txt")
    rep_json = os.path.join(cand, "retrieve_results_REP_LLAMA_dl19.json.gz")
    rep = write_candidates_as_trec(rep_json, str(tmp_path_factory.mktemp("runs") / "repllama.dl19.trec"))
    return {"bm25": bm25, "rep": rep, "rep_json": rep_json}


def read_lines(path):
    """[(qid, docid, rank, score)] as written."""
    out = []
    for line in open(path):
        q, _, d, r, s, _ = line.split()
        out.append((q, d, int(r), float(s)))
    return out


def by_topic(rows):
    t = {}
    for q, d, r, s in rows:
        t.setdefault(str(q), []).append((d, r, s))
    return t


def assert_same(ours, theirs, tol=1e-12):
    assert set(ours) == set(theirs)
    for q in theirs:
        a, b = ours[q], theirs[q]
        assert [d for d, _, _ in a] == [d for d, _, _ in b], q
        assert [r for _, r, _ in a] == [r for _, r, _ in b], q
        assert all(abs(x - y) <= tol * max(1.0, abs(y)) for (_, _, x), (_, _, y) in zip(a, b)), q


def pyserini_frame(trec_run):
    df = trec_run.run_data
    return by_topic(zip(df["topic"], df["docid"], df["rank"], df["score"]))


def test_candidates_conversion(dl19):
    topics, run, docs, ranks = read_candidates(dl19["rep_json"])
    rows = read_lines(dl19["rep"])
    assert len(topics) == 43 and len(rows) == sum(len(v) for v in run.values()) == 43 * 200
    q, d, r, s = rows[0]
    assert ranks[q][d] == r == 1 and run[q][d] == s and docs[d].text


def reference_fusion(paths, method, depth, k, rrf_k=60, alpha=0.5):
    """The fusion formulas, written out: each run's top ``depth`` per topic (ranks as in the file) contributes
    rrf: 1 / (rrf_k + rank); interpolation: alpha * s1, (1 - alpha) * s2; average: s / n_runs; normalize: min-max
    of the score over the topic's whole list; a document's fused score is the sum of its contributions (absent: 0);
    the top ``k`` by score, ties by docid ascending."""
    runs = [by_topic(read_lines(p)) for p in paths]
    fused = {}
    for i, run in enumerate(runs):
        for q, hits in run.items():
            scores = [s for _, _, s in hits]
            lo, hi = min(scores), max(scores)
            for d, r, s in sorted(hits, key=lambda h: h[1])[:depth]:
                c = {"rrf": 1.0 / (rrf_k + r), "interpolation": (alpha if i == 0 else 1 - alpha) * s,
                     "average": s / len(runs), "normalize": 1.0 if hi == lo else (s - lo) / (hi - lo)}[method]
                fused.setdefault(q, {}).setdefault(d, 0.0)
                fused[q][d] += c
    return {q: [(d, r, s) for r, (d, s) in enumerate(sorted(h.items(), key=lambda kv: (-kv[1], kv[0]))[:k], 1)]
            for q, h in fused.items()}


@pytest.mark.parametrize("method,kwargs", [
    ("rrf", dict(rrf_k=60, depth=1000, k=1000)), ("rrf", dict(rrf_k=10, depth=50, k=20)),
    ("interpolation", dict(alpha=0.3, depth=1000, k=1000)), ("average", dict(depth=100, k=100)),
    ("normalize", dict(depth=1000, k=1000))])
def test_fusion_matches_the_formulas(dl19, method, kwargs, tmp_path):
    out = tmp_path / "fused.trec"
    argv = ["--runs", dl19["bm25"], dl19["rep_json"], "--method", method, "--output", str(out),
            "--depth", str(kwargs["depth"]), "--k", str(kwargs["k"])]
    if "rrf_k" in kwargs:
        argv += ["--rrf.k", str(kwargs["rrf_k"])]
    if "alpha" in kwargs:
        argv += ["--alpha", str(kwargs["alpha"])]
    fusion_main(argv)
    ours = by_topic(read_lines(str(out)))
    assert len(ours) == 43
    assert_same(ours, reference_fusion([dl19["bm25"], dl19["rep"]], method, **kwargs), tol=1e-9)


def test_rrf_by_hand(dl19, tmp_path):
    """An independent check of what the fused scores mean: sum over runs of 1 / (60 + rank)."""
    ranks = [{}, {}]
    for i, path in enumerate((dl19["bm25"], dl19["rep"])):
        for q, d, r, _ in read_lines(path):
            ranks[i][(q, d)] = r
    out = tmp_path / "rrf.trec"
    fusion_main(["--runs", dl19["bm25"], dl19["rep"], "--output", str(out)])
    rows = read_lines(str(out))
    for q, d, r, s in rows:
        want = sum(1.0 / (60 + rk[(q, d)]) for rk in ranks if (q, d) in rk)
        assert abs(s - want) < 1e-12
    fused = by_topic(rows)
    for q, hits in fused.items():  # sorted by score, ties by docid, ranks 1..n
        assert [r for _, r, _ in hits] == list(range(1, len(hits) + 1))
        keys = [(-s, d) for d, _, s in hits]
        assert keys == sorted(keys)


def test_cli_output_equals_pyserini_cli(dl19, tmp_path):
    ours, theirs = tmp_path / "ours.trec", tmp_path / "theirs.trec"
    fusion_main(["--runs", dl19["bm25"], dl19["rep"], "--method", "interpolation", "--alpha", "0.5",
                 "--output", str(ours)])
    subprocess.run([sys.executable, "-m", "pyserini.fusion", "--runs", dl19["bm25"], dl19["rep"],
                    "--method", "interpolation", "--alpha", "0.5", "--output", str(theirs)], check=True,
                   capture_output=True, timeout=300)
    a, b = by_topic(read_lines(str(ours))), by_topic(read_lines(str(theirs)))
    # Pyserini's save_to_txt sorts by score only (not stable on ties): compare scores per docid and the order
    # up to ties
    assert set(a) == set(b)
    for q in b:
        sa, sb = {d: s for d, _, s in a[q]}, {d: s for d, _, s in b[q]}
        assert sa.keys() == sb.keys() and all(abs(sa[d] - sb[d]) < 1e-12 for d in sb)
        assert [round(s, 9) for _, _, s in a[q]] == [round(s, 9) for _, _, s in b[q]]


def test_hybrid_is_pyserini_hybrid_scoring(dl19, tmp_path):
    """Pyserini's HybridSearcher formula: alpha * sparse + dense, a side's missing score = that side's minimum."""
    out = tmp_path / "hybrid.trec"
    fusion_main(["--runs", dl19["bm25"], dl19["rep"], "--method", "hybrid", "--alpha", "0.1", "--depth", "100",
                 "--output", str(out)])
    sparse, dense = by_topic(read_lines(dl19["bm25"])), by_topic(read_lines(dl19["rep"]))
    fused = by_topic(read_lines(str(out)))
    assert set(fused) == set(sparse)
    for q in fused:
        s = {d: x for d, _, x in sparse[q][:100]}
        dn = {d: x for d, _, x in dense[q][:100]}
        want = {d: 0.1 * s.get(d, min(s.values())) + dn.get(d, min(dn.values())) for d in set(s) | set(dn)}
        got = {d: x for d, _, x in fused[q]}
        assert got.keys() == want.keys() and all(abs(got[d] - want[d]) < 1e-9 for d in want)
        keys = [(-x, d) for d, _, x in fused[q]]
        assert keys == sorted(keys)


def test_bad_input(dl19, tmp_path):
    with pytest.raises(InputError, match="exactly two"):
        fusion_main(["--runs", dl19["bm25"], dl19["rep"], dl19["bm25"], "--method", "interpolation",
                     "--output", str(tmp_path / "x")])
    with pytest.raises(InputError, match="not found"):
        fusion_main(["--runs", dl19["bm25"], str(tmp_path / "nope"), "--output", str(tmp_path / "x")])
    bad = tmp_path / "bad.trec"
    bad.write_text("1 Q0 d1 1\n")
    with pytest.raises(InputError):
        fusion_main(["--runs", dl19["bm25"], str(bad), "--output", str(tmp_path / "x")])
    assert not os.path.exists(tmp_path / "x")


def test_tuned_choice_is_the_best_setting_by_pytrec_eval(dl19, tmp_path):
    """fusion.tune on DL19 (as a stand-in for held-out queries): its chosen setting has the highest nDCG@10 of the
    grid by pytrec_eval on the written runs, and ``fusion --choice`` writes the same run as the explicit flags."""
    import json
    import pytrec_eval
    from repllama_pyserini.fusion.tune import main as tune_main
    qrels_path = os.path.join(os.path.dirname(os.path.dirname(dl19["rep_json"])), "..", "topics-and-qrels",
                              "qrels.dl19-passage.txt")
    qrels = {}
    for line in open(qrels_path):
        q, _, d, g = line.split()
        qrels.setdefault(q, {})[d] = int(g)
    choice = tmp_path / "choice.json"
    tune_main(["--runs", dl19["bm25"], dl19["rep"], "--qrels", qrels_path, "--alphas", "0.1", "1", "10",
               "--output", str(choice)])
    ev = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"})
    ndcg = {}
    for flags in (["--method", "hybrid", "--normalization", "--alpha", a] for a in ("0.1", "1", "10")):
        out = tmp_path / f"h{flags[-1]}.trec"
        fusion_main(["--runs", dl19["bm25"], dl19["rep"], *flags, "--output", str(out)])
        run = {}
        for q, d, _, s in read_lines(str(out)):
            run.setdefault(q, {})[d] = s
        res = ev.evaluate(run)
        ndcg[float(flags[-1])] = sum(res[q]["ndcg_cut_10"] if q in res else 0 for q in qrels) / len(qrels)
    got = json.loads(choice.read_text())
    best = max(ndcg, key=ndcg.get)
    assert got["choice"]["method"] == "hybrid" and got["choice"]["alpha"] == best
    assert got["choice"]["scores"]["nDCG@10"] == pytest.approx(ndcg[best], abs=1e-4)
    fusion_main(["--runs", dl19["bm25"], dl19["rep"], "--choice", str(choice), "--output", str(tmp_path / "c.trec")])
    assert (tmp_path / "c.trec").read_text() == (tmp_path / f"h{best:g}.trec").read_text()
