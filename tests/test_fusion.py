"""Fusion of real DL19 runs (BM25 TREC run + RepLLaMA candidates) must match Pyserini's own fusion exactly."""
import os
import subprocess
import sys

import pytest

from repllama_pyserini import fusion
from repllama_pyserini.corpus_lookup import read_rank_llm_candidates, write_candidates_as_trec
from repllama_pyserini.io import InputError


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
    topics, run, docs, ranks = read_rank_llm_candidates(dl19["rep_json"])
    rows = read_lines(dl19["rep"])
    assert len(topics) == 43 and len(rows) == sum(len(v) for v in run.values()) == 43 * 200
    q, d, r, s = rows[0]
    assert ranks[q][d] == r == 1 and run[q][d] == s and docs[d].text


@pytest.mark.parametrize("method,kwargs", [
    ("rrf", dict(rrf_k=60, depth=1000, k=1000)), ("rrf", dict(rrf_k=10, depth=50, k=20)),
    ("interpolation", dict(alpha=0.3, depth=1000, k=1000)), ("average", dict(depth=100, k=100)),
    ("normalize", dict(depth=1000, k=1000))])
def test_fusion_matches_pyserini(dl19, method, kwargs, tmp_path):
    from pyserini import fusion as pf
    from pyserini.trectools import TrecRun
    theirs_runs = [TrecRun(dl19["bm25"]), TrecRun(dl19["rep"])]
    fn = {"rrf": pf.reciprocal_rank_fusion, "interpolation": pf.interpolation, "average": pf.average,
          "normalize": pf.normalize}[method]
    theirs = pyserini_frame(fn(theirs_runs, **kwargs))
    out = tmp_path / "fused.trec"
    argv = ["--runs", dl19["bm25"], dl19["rep_json"], "--method", method, "--output", str(out),
            "--depth", str(kwargs["depth"]), "--hits", str(kwargs["k"])]
    if "rrf_k" in kwargs:
        argv += ["--k", str(kwargs["rrf_k"])]
    if "alpha" in kwargs:
        argv += ["--alpha", str(kwargs["alpha"])]
    fusion.main(argv)
    ours = by_topic(read_lines(str(out)))
    assert_same(ours, theirs)
    inputs = [by_topic(read_lines(p)) for p in (dl19["bm25"], dl19["rep"])]
    assert len(ours) == 43
    for q in ours:  # the union of each input's top-depth, cut at k
        union = {d for run in inputs for d, _, _ in run[q][:kwargs["depth"]]}
        assert {d for d, _, _ in ours[q]} <= union and len(ours[q]) == min(kwargs["k"], len(union))


def test_rrf_by_hand(dl19, tmp_path):
    """An independent check of what the fused scores mean: sum over runs of 1 / (60 + rank)."""
    ranks = [{}, {}]
    for i, path in enumerate((dl19["bm25"], dl19["rep"])):
        for q, d, r, _ in read_lines(path):
            ranks[i][(q, d)] = r
    out = tmp_path / "rrf.trec"
    fusion.main(["--runs", dl19["bm25"], dl19["rep"], "--output", str(out)])
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
    fusion.main(["--runs", dl19["bm25"], dl19["rep"], "--method", "interpolation", "--alpha", "0.5",
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
    fusion.main(["--runs", dl19["bm25"], dl19["rep"], "--method", "hybrid", "--alpha", "0.1", "--depth", "100",
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
        fusion.main(["--runs", dl19["bm25"], dl19["rep"], dl19["bm25"], "--method", "interpolation",
                     "--output", str(tmp_path / "x")])
    with pytest.raises(InputError, match="not found"):
        fusion.main(["--runs", dl19["bm25"], str(tmp_path / "nope"), "--output", str(tmp_path / "x")])
    bad = tmp_path / "bad.trec"
    bad.write_text("1 Q0 d1 1\n")
    with pytest.raises(InputError):
        fusion.main(["--runs", dl19["bm25"], str(bad), "--output", str(tmp_path / "x")])
    assert not os.path.exists(tmp_path / "x")
