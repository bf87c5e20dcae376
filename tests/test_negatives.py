"""Hard-negative mining with Pyserini BM25 on the real SciFact train split (plus an extra first-stage run)."""
import gzip
import json
import os

import pytest

from repllama_pyserini.cli import InputError
from repllama_pyserini.formats import read_qrels, read_topics, write_run
from repllama_pyserini.train.negatives import main, merge_candidates, mine, sample_negatives

N_QUERIES = 40


def test_merge_is_round_robin_by_rank_without_duplicates():
    a = {"q": {"d1": 9.0, "d2": 8.0, "d3": 7.0}}
    b = {"q": {"d4": 0.9, "d1": 0.8, "d5": 0.7, "d6": 0.1}}
    assert merge_candidates([a, b], "q", depth=3) == ["d1", "d4", "d2", "d3", "d5"]
    assert merge_candidates([a, b], "q", depth=2, skip_top=1) == ["d2", "d1", "d3", "d5"]
    assert merge_candidates([a], "other", depth=5) == []


def test_sampling_is_deterministic_and_keeps_rank_order():
    pool = [f"d{i}" for i in range(50)]
    s = sample_negatives(pool, 10, seed=1, qid="q1")
    assert s == sample_negatives(pool, 10, seed=1, qid="q1") and len(set(s)) == 10
    assert s == sorted(s, key=pool.index)
    assert s != sample_negatives(pool, 10, seed=2, qid="q1")
    assert s != sample_negatives(pool, 10, seed=1, qid="q2")
    assert sample_negatives(pool[:3], 10, 1, "q") == pool[:3]


@pytest.fixture(scope="module")
def scifact(ir_data):
    d = os.path.join(ir_data, "beir", "scifact")
    if not os.path.isfile(os.path.join(d, "corpus.jsonl.gz")):
        pytest.skip("SciFact not in the data dir")
    topics = read_topics(os.path.join(d, "topics.scifact.train.tsv"))
    qrels = read_qrels(os.path.join(d, "qrels.scifact.train.txt"))
    qids = [q for q in topics if q in qrels][:N_QUERIES]
    return {"dir": d, "corpus": os.path.join(d, "corpus.jsonl.gz"), "topics": {q: topics[q] for q in qids},
            "qrels": {q: qrels[q] for q in qids}}


def _read(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_mined_scifact_negatives_are_bm25_hits_and_never_positives(scifact, tmp_path):
    from repllama_pyserini import bm25
    from repllama_pyserini.formats import load_docs
    from repllama_pyserini.train.negatives import default_index_dir
    out = str(tmp_path / "train.jsonl.gz")
    stats = mine(scifact["corpus"], out, scifact["topics"], scifact["qrels"], depth=30, num_negatives=8, seed=5)
    assert stats.written == N_QUERIES and not stats.skipped_no_positive
    recs = _read(out)
    assert [r["query_id"] for r in recs] == list(scifact["topics"])
    index = default_index_dir(scifact["corpus"], "flat")
    run = bm25.search(index, scifact["topics"], hits=30)
    docs = load_docs(scifact["corpus"], {p["docid"] for r in recs for p in r["positive_passages"]})
    for r in recs:
        qid = r["query_id"]
        pos = {d for d, rel in scifact["qrels"][qid].items() if rel > 0}
        assert r["query"] == scifact["topics"][qid]
        assert {p["docid"] for p in r["positive_passages"]} == pos
        for p in r["positive_passages"]:
            assert (p["title"], p["text"]) == (docs[p["docid"]].title, docs[p["docid"]].text)
        negs = [p["docid"] for p in r["negative_passages"]]
        assert len(negs) == 8 and len(set(negs)) == 8
        assert not set(negs) & pos and set(negs) <= set(run[qid])
        assert all(p["text"] for p in r["negative_passages"])
    # deterministic: the same call writes the same bytes; another seed other negatives
    again = str(tmp_path / "again.jsonl.gz")
    mine(scifact["corpus"], again, scifact["topics"], scifact["qrels"], depth=30, num_negatives=8, seed=5)
    assert open(out, "rb").read() == open(again, "rb").read()
    other = str(tmp_path / "other.jsonl.gz")
    mine(scifact["corpus"], other, scifact["topics"], scifact["qrels"], depth=30, num_negatives=8, seed=6)
    assert _read(other) != recs
    # and it is valid training input
    from repllama_pyserini.train.arguments import DataArguments
    from repllama_pyserini.train.data import load_groups
    assert len(load_groups(DataArguments(dataset_path=out, train_group_size=9), 9)) == N_QUERIES


def test_cli_with_tevatron_input_and_a_dense_run(scifact, tmp_path):
    """--input keeps the file's positives; --run candidates are merged with BM25's (the paper's BM25 + dense mix)."""
    src = os.path.join(scifact["dir"], "train.tevatron.jsonl.gz")
    head = [json.loads(line) for line in gzip.open(src, "rt")][:10]
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in head))
    # a "dense" run whose candidates BM25 would not return (documents judged for other queries)
    others = sorted({d for q, rel in read_qrels(os.path.join(scifact["dir"], "qrels.scifact.train.txt")).items()
                     for d in rel})[:50]
    dense = {r["query_id"]: {d: 1.0 - i / 100 for i, d in enumerate(others)} for r in head}
    run_path = str(tmp_path / "dense.trec")
    write_run(dense, run_path)
    out = str(tmp_path / "out.jsonl")
    main(["--corpus", scifact["corpus"], "--input", str(inp), "--run", run_path, "--depth", "20",
          "--num-negatives", "30", "--output", out])
    recs = _read(out)
    assert len(recs) == 10
    for r, h in zip(recs, head):
        assert r["positive_passages"] == h["positive_passages"]
        negs = {p["docid"] for p in r["negative_passages"]}
        assert negs & set(others[:20]), "dense-run candidates are mixed in"
        assert not negs & {p["docid"] for p in h["positive_passages"]}
    # --no-bm25: only the run's top 20 (minus positives)
    out2 = str(tmp_path / "dense-only.jsonl")
    main(["--corpus", scifact["corpus"], "--input", str(inp), "--run", run_path, "--no-bm25", "--depth", "20",
          "--num-negatives", "30", "--output", out2])
    for r in _read(out2):
        assert {p["docid"] for p in r["negative_passages"]} <= set(others[:20])


def test_queries_without_positives_are_skipped_or_refused(scifact, tmp_path):
    topics = dict(scifact["topics"])
    qrels = {q: dict(v) for q, v in list(scifact["qrels"].items())[:5]}
    first = next(iter(qrels))
    qrels[first] = {d: 0 for d in qrels[first]}  # judged, but not relevant
    qrels[list(qrels)[1]] = {"no-such-doc": 1}     # relevant doc absent from the corpus
    out = str(tmp_path / "t.jsonl")
    stats = mine(scifact["corpus"], out, topics, qrels, depth=10, num_negatives=3)
    assert stats.written == 3 and stats.skipped_no_positive == [first]
    assert len(stats.skipped_positive_not_in_corpus) == 1
    assert "skipped" in stats.summary()
    with pytest.raises(InputError, match="--strict"):
        mine(scifact["corpus"], str(tmp_path / "s.jsonl"), topics, qrels, depth=10, num_negatives=3, strict=True)
    with pytest.raises(InputError, match=r"no training record written: .*5 judged queries without topic text skipped"):
        mine(scifact["corpus"], out, {}, qrels, depth=10, num_negatives=3)
