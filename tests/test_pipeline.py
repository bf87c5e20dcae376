"""The multi-stage pipeline: real published runs fused and evaluated; a full tiny-model pipeline on a real
SciFact subset (BM25 -> RepLLaMA dense through Pyserini's CLI -> hybrid -> RankLLaMA rerank), cached stages."""
import gzip
import json
import os
import subprocess
import sys

import pytest

from repllama_pyserini.eval import evaluate
from repllama_pyserini.formats import read_qrels, read_run


def _pipeline(*args):
    return subprocess.run([sys.executable, "-m", "repllama_pyserini.workflows.pipeline", *args], capture_output=True,
                          text=True, timeout=1200)


def test_published_runs_fused_and_evaluated(ir_data, tmp_path):
    c = os.path.join(ir_data, "msmarco-passage", "rank_llm_candidates")
    tq = os.path.join(ir_data, "topics-and-qrels")
    args = ["--name", "dl19", "--topics", f"{tq}/topics.dl19-passage.txt", "--qrels", f"{tq}/qrels.dl19-passage.txt",
            "--run", f"bm25={c}/trec_results_BM25_dl19.txt",
            "--run", f"repllama-7b={c}/retrieve_results_REP_LLAMA_dl19.json.gz",
            "--fuse", "bm25", "repllama-7b", "--work", str(tmp_path), "--json", str(tmp_path / "m.json")]
    r = _pipeline(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.load(open(tmp_path / "m.json"))["metrics"]
    assert round(m["bm25"]["nDCG@10"], 4) == 0.5058  # Pyserini 2CR bm25-default
    assert round(m["repllama-7b"]["nDCG@10"], 4) == 0.7384  # the published run, as the data README states
    # the fused run is the RRF formula (k=60) of the two inputs
    from test_fusion import reference_fusion
    ref = reference_fusion([f"{c}/trec_results_BM25_dl19.txt", str(tmp_path / "run.repllama-7b.trec")], "rrf", 1000,
                           1000)
    ref_run = {q: {d: s for d, _, s in hits} for q, hits in ref.items()}
    qrels = read_qrels(f"{tq}/qrels.dl19-passage.txt")
    assert evaluate(ref_run, qrels, conventions="dl19-passage") == pytest.approx(m["hybrid"], abs=1e-12)
    r2 = _pipeline(*args)  # everything cached
    assert r2.returncode == 0 and "complete, skipped" in r2.stderr


def test_bad_input_is_one_line(tmp_path, ir_data):
    tq = os.path.join(ir_data, "topics-and-qrels")
    r = _pipeline("--topics", f"{tq}/topics.dl20.txt", "--qrels", f"{tq}/qrels.dl19-passage.txt", "--work", str(tmp_path))
    assert r.returncode == 2 and "judged topics" in r.stderr and "Traceback" not in r.stderr
    r = _pipeline("--dataset", "scifact", "--first-stage", "dense", "--work", str(tmp_path))
    assert r.returncode == 2 and "--encoder" in r.stderr


def test_tiny_models_end_to_end_on_real_subset(ir_data, tmp_path, tiny_encoder, tiny_reranker):
    """All stages on 200 real SciFact docs and the test queries judged within them; checks the plumbing and that
    each stage's run covers every query (the tiny models are random, so no effectiveness claim)."""
    qrels_all = read_qrels(os.path.join(ir_data, "topics-and-qrels", "qrels.beir-v1.0.0-scifact.test.txt"))
    docs = []
    with gzip.open(os.path.join(ir_data, "beir", "scifact", "corpus.jsonl.gz"), "rt") as f:
        for line in f:
            docs.append(json.loads(line))
    relevant = {d for q in qrels_all.values() for d in q}
    chosen = [d for d in docs if d["_id"] in relevant][:40] + [d for d in docs if d["_id"] not in relevant][:160]
    ids = {d["_id"] for d in chosen}
    folder = tmp_path / "mini"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in chosen))
    qrels = {q: {d: r for d, r in j.items() if d in ids} for q, j in qrels_all.items()}
    qrels = {q: j for q, j in qrels.items() if j}
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{r}\n" for q, j in qrels.items() for d, r in j.items()))
    import gzip as gz
    with gz.open(os.path.join(ir_data, "topics-and-qrels", "topics.beir-v1.0.0-scifact.test.tsv.gz"), "rt") as f:
        topics = dict(line.rstrip("\n").split("\t", 1) for line in f)
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": topics[q]}) + "\n" for q in qrels))
    work = tmp_path / "work"
    args = ["--dataset", str(folder), "--first-stage", "bm25", "dense", "hybrid", "--encoder", tiny_encoder["lora"],
            "--reranker", tiny_reranker["lora"], "--depth", "20", "--hits", "100", "--work", str(work),
            "--json", str(tmp_path / "m.json")]
    r = _pipeline(*args)
    assert r.returncode == 0, r.stderr[-4000:]
    m = json.load(open(tmp_path / "m.json"))
    assert set(m["metrics"]) == {"bm25", "dense", "hybrid", "rerank"}
    for name, path in m["runs"].items():
        run = read_run(path)
        assert set(run) == set(qrels), name
    rerank = read_run(m["runs"]["rerank"])
    assert all(len(h) == 20 for h in rerank.values())
    # the BM25 run is what Pyserini's own searcher gives on the pipeline's index (BEIR: --remove-query)
    ref = tmp_path / "pyserini-bm25.trec"
    p = subprocess.run([sys.executable, "-m", "pyserini.search.lucene", "--index", str(work / "index.lucene"),
                        "--topics", str(work / "topics.tsv"), "--output", str(ref), "--bm25", "--hits", "100",
                        "--remove-query"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    theirs, ours = read_run(str(ref)), read_run(m["runs"]["bm25"])
    assert theirs.keys() == ours.keys()
    for q in theirs:
        assert ours[q].keys() == theirs[q].keys() and all(abs(ours[q][d] - theirs[q][d]) < 1e-4 for d in theirs[q])
    r = _pipeline(*args)
    assert r.returncode == 0 and r.stderr.count("complete, skipped") == 6


def test_query_sample_and_tuned_fusion(ir_data, tmp_path):
    """--sample-queries runs and scores a seeded sample (the mean is over the sample's judged queries only);
    --fusion-choice applies fusion.tune's setting: the pipeline's hybrid equals fusion --choice on the same runs."""
    from repllama_pyserini.fusion.__main__ import main as fusion_main
    from repllama_pyserini.fusion.tune import main as tune_main
    c = os.path.join(ir_data, "msmarco-passage", "rank_llm_candidates")
    tq = os.path.join(ir_data, "topics-and-qrels")
    qrels_path = f"{tq}/qrels.dl20-passage.txt"
    choice = tmp_path / "choice.json"
    rep = tmp_path / "rep.trec"
    from repllama_pyserini.formats import candidates_to_trec
    candidates_to_trec(f"{c}/retrieve_results_REP_LLAMA_dl20.json.gz", str(rep))
    # held-out queries for the choice: DL19 (the pipeline then runs DL20 with it)
    rep19 = tmp_path / "rep19.trec"
    candidates_to_trec(f"{c}/retrieve_results_REP_LLAMA_dl19.json.gz", str(rep19))
    tune_main(["--runs", f"{c}/trec_results_BM25_dl19.txt", str(rep19), "--qrels", f"{tq}/qrels.dl19-passage.txt",
               "--alphas", "0.1", "1", "--output", str(choice)])
    args = ["--name", "dl20", "--topics", f"{tq}/topics.dl20.txt", "--qrels", qrels_path,
            "--run", f"bm25={c}/trec_results_BM25_dl20.txt", "--run", f"rep={rep}", "--fuse", "bm25", "rep",
            "--fusion-choice", str(choice), "--sample-queries", "10", "--seed", "5", "--work", str(tmp_path / "w"),
            "--json", str(tmp_path / "m.json")]
    r = _pipeline(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "a seeded sample: --sample-queries 10 --seed 5" in r.stdout
    import random
    qrels = read_qrels(qrels_path)
    sample = set(random.Random(5).sample(sorted(qrels), 10))
    m = json.load(open(tmp_path / "m.json"))["metrics"]
    sub = {q: j for q, j in qrels.items() if q in sample}
    bm25 = {q: h for q, h in read_run(f"{c}/trec_results_BM25_dl20.txt").items() if q in sample}
    assert m["bm25"]["nDCG@10"] == pytest.approx(evaluate(bm25, sub, conventions="dl20-passage")["nDCG@10"], abs=1e-12)
    fusion_main(["--runs", f"{c}/trec_results_BM25_dl20.txt", str(rep), "--choice", str(choice), "--output",
                 str(tmp_path / "h.trec")])
    want = {q: h for q, h in read_run(str(tmp_path / "h.trec")).items() if q in sample}
    assert m["hybrid"] == pytest.approx(evaluate(want, sub, conventions="dl20-passage"), abs=1e-12)
