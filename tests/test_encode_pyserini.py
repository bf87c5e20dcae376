"""End to end on real data (BEIR SciFact) through Pyserini's own command lines, in subprocesses:

``python -m repllama_pyserini.dense encode`` and ``python -m pyserini.encode ... --encoder-class repllama`` build indexes,
``python -m pyserini.search.faiss --encoder-class repllama`` (and by name substring) searches them, and the run is
evaluated with :mod:`repllama_pyserini.eval`. The model is a tiny random LLaMA + LoRA, so the scores are checked
against a brute-force reference computed from the encoder directly, not against published numbers.
"""
import gzip
import json
import os
import subprocess
import sys

import faiss
import numpy as np
import pytest

from repllama_pyserini.dense import RepLLaMAEncoder
from repllama_pyserini.dense.__main__ import main
from repllama_pyserini.formats import read_qrels, read_run, read_topics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAXLEN = 64
HITS = 10


def sh(*args, timeout=600):
    r = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO,
                       env=dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false"))
    assert r.returncode == 0, f"{args[:2]} failed:\n{r.stderr[-3000:]}"
    return r


def scifact_subset(ir_data, out_dir, n_queries, n_extra):
    """The first ``n_queries`` judged test queries, their relevant documents plus the first ``n_extra`` others."""
    tq = os.path.join(ir_data, "topics-and-qrels")
    topics = read_topics(os.path.join(tq, "topics.beir-v1.0.0-scifact.test.tsv.gz"))
    qrels = read_qrels(os.path.join(tq, "qrels.beir-v1.0.0-scifact.test.txt"))
    qids = [q for q in topics if q in qrels][:n_queries]
    wanted = {d for q in qids for d in qrels[q]}
    docs = []
    with gzip.open(os.path.join(ir_data, "beir", "scifact", "corpus.jsonl.gz"), "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            d = json.loads(line)
            if d["_id"] in wanted or i < n_extra:
                docs.append(d)
    corpus = os.path.join(out_dir, "corpus.jsonl")
    with open(corpus, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(d) + "\n" for d in docs)
    tpath = os.path.join(out_dir, "topics.tsv")
    with open(tpath, "w", encoding="utf-8") as f:
        f.writelines(f"{q}\t{topics[q]}\n" for q in qids)
    qpath = os.path.join(out_dir, "qrels.txt")
    with open(qpath, "w", encoding="utf-8") as f:
        f.writelines(f"{q} 0 {d} {r}\n" for q in qids for d, r in qrels[q].items())
    return docs, {q: topics[q] for q in qids}, corpus, tpath, qpath


def brute_force(enc, docs, topics, k):
    d = enc.encode_passages([x["text"] for x in docs], [x["title"] for x in docs], max_length=MAXLEN)
    q = enc.encode_queries(list(topics.values()))
    s = q @ d.T
    return {qid: {docs[j]["_id"]: float(row[j]) for j in np.argsort(-row, kind="stable")[:k]}
            for qid, row in zip(topics, s)}


def assert_same_run(run, ref, atol=1e-4):
    assert run.keys() == ref.keys()
    for qid in ref:
        assert len(run[qid]) == len(ref[qid])
        for docid, score in run[qid].items():  # same hits, same scores (ties at the cut aside)
            if docid in ref[qid]:
                assert abs(score - ref[qid][docid]) < atol
        common = set(run[qid]) & set(ref[qid])
        assert len(common) >= len(ref[qid]) - 1, qid


def check_end_to_end(tiny_encoder, tmp_path, ir_data, n_queries, n_extra, pyserini_encode=True):
    lora = tiny_encoder["lora"]
    docs, topics, corpus, tpath, qpath = scifact_subset(ir_data, str(tmp_path), n_queries, n_extra)
    enc = RepLLaMAEncoder(lora)
    ref = brute_force(enc, docs, topics, HITS)

    ours = tmp_path / "idx"  # our encoder CLI (in-process: its subprocess entry point is tested in test_encode)
    main(["encode", "--corpus", corpus, "--encoder", lora, "--output", str(ours), "--max-length", str(MAXLEN),
          "--batch-size", "16", "--chunk-size", "256", "--no-progress"])

    run_path = tmp_path / "run.trec"
    sh("-m", "pyserini.search.faiss", "--index", str(ours), "--topics", tpath, "--encoder-class", "repllama",
       "--encoder", lora, "--output", str(run_path), "--hits", str(HITS), "--batch-size", "8", "--threads", "2")
    run = read_run(str(run_path))
    assert_same_run(run, ref)

    from repllama_pyserini.eval import evaluate
    scores = evaluate(str(run_path), qpath, ["nDCG@10", "R@10"])
    ref_scores = evaluate(ref, qpath, ["nDCG@10", "R@10"])
    for m in ("nDCG@10", "R@10"):
        assert abs(scores[m] - ref_scores[m]) < 0.02  # the same ranking up to ties at the cut
    if pyserini_encode:
        # Pyserini's own encoder CLI with our document encoder gives the same vectors
        theirs = tmp_path / "idx-pyserini"
        sh("-m", "pyserini.encode", "input", "--corpus", corpus, "--fields", "title", "text",
           "output", "--embeddings", str(theirs), "--to-faiss",
           "encoder", "--encoder-class", "repllama", "--encoder", lora, "--fields", "title", "text",
           "--batch-size", "16", "--max-length", str(MAXLEN), "--dimension", "64", "--device", "cpu")
        a, b = faiss.read_index(str(ours / "index")), faiss.read_index(str(theirs / "index"))
        assert (ours / "docid").read_text() == (theirs / "docid").read_text()
        np.testing.assert_allclose(a.reconstruct_n(0, a.ntotal), b.reconstruct_n(0, b.ntotal), atol=1e-5)
        # ... and a local model directory whose path contains "repllama" is matched by name (no --encoder-class),
        # one query at a time
        link = tmp_path / "my-repllama-model"
        os.symlink(lora, link)
        run2_path = tmp_path / "run2.trec"
        sh("-m", "pyserini.search.faiss", "--index", str(theirs), "--topics", tpath, "--encoder", str(link),
           "--output", str(run2_path), "--hits", str(HITS))
        assert_same_run(read_run(str(run2_path)), ref)
    return scores


def test_scifact_subset_through_pyserini_clis(tiny_encoder, tmp_path, ir_data):
    check_end_to_end(tiny_encoder, tmp_path, ir_data, n_queries=20, n_extra=80)


@pytest.mark.slow
def test_full_scifact_through_pyserini_clis(tiny_encoder, tmp_path, ir_data):
    """All 5,183 SciFact documents and 300 test queries."""
    check_end_to_end(tiny_encoder, tmp_path, ir_data, n_queries=300, n_extra=10 ** 9, pyserini_encode=False)


def test_pyserini_cli_names_the_presets(tmp_path):
    """``--encoder repllama`` is the RepLLaMA preset inside Pyserini's own CLI (here: its checkpoint is not cached,
    so the error names it); a misspelled preset lists the presets and suggests the closest, in one line."""
    (tmp_path / "t.tsv").write_text("1\tx\n")
    for name, pattern in [("repllama", "castorini/repllama-v1-7b-lora-passage"),
                          ("repllama-v1-7b-lora-pasage", "did you mean 'repllama-v1-7b-lora-passage'")]:
        r = subprocess.run([sys.executable, "-m", "pyserini.search.faiss", "--index", str(tmp_path), "--topics",
                            str(tmp_path / "t.tsv"), "--encoder", name, "--output", str(tmp_path / "run")],
                           capture_output=True, text=True, timeout=300, cwd=REPO, env=dict(os.environ, HF_HUB_OFFLINE="1"))
        errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
        assert r.returncode != 0 and len(errors) == 1 and pattern in errors[0], r.stderr[-2000:]
        assert "Traceback" not in r.stderr
