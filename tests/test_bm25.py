"""BM25 through Pyserini: reproduce Pyserini's published BEIR numbers; bad input gives one-line errors."""
import gzip
import json
import os
import subprocess
import sys

import pytest

from repllama_pyserini import bm25
from repllama_pyserini.cli import InputError
from repllama_pyserini.formats import beir_dataset, read_qrels, read_run
from repllama_pyserini.formats.collections import twocr_beir_scores as beir_scores


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "repllama_pyserini.bm25", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


@pytest.fixture(scope="session")
def scifact(ir_data):
    return beir_dataset("scifact", ir_data, download=False)


@pytest.mark.parametrize("fields,condition", [("flat", "bm25-flat"), ("multifield", "bm25-multifield")])
def test_scifact_reproduces_pyserini_2cr(scifact, ir_data, tmp_path_factory, fields, condition):
    """Index SciFact as Pyserini's beir-v1.0.0-scifact.{flat,multifield} and match its 2CR scores to 4 decimals."""
    from repllama_pyserini.eval import evaluate
    work = tmp_path_factory.mktemp(f"bm25-{fields}")
    index = bm25.build_index(scifact.corpus, str(work / "index"), fields=fields)
    run = bm25.search(index, scifact.topics(), hits=1000, fields=fields, remove_query=True)
    assert max(len(h) for h in run.values()) == 1000
    got = evaluate(run, read_qrels(scifact.qrels), conventions="beir")
    expected = beir_scores(condition, "scifact", ir_data)
    for metric, value in expected.items():
        assert round(got[metric], 4) == pytest.approx(value, abs=1e-9), (metric, got[metric], value)


def test_cli_index_search_and_atomic_outputs(tmp_path, ir_data):
    corpus = tmp_path / "corpus.jsonl"
    docs = [{"_id": "d1", "title": "Goldfish", "text": "goldfish grow with the size of their tank"},
            {"_id": "d2", "title": "", "text": "paris is the capital of france"},
            {"_id": "d3", "title": "Bluetooth", "text": "wifi and bluetooth are wireless technologies"}]
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs))
    topics = tmp_path / "topics.tsv"
    topics.write_text("q1\tdo goldfish grow\nq2\tcapital of france\n")
    r = _cli("index", "--corpus", str(corpus), "--index", str(tmp_path / "idx"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert bm25.index_is_complete(str(tmp_path / "idx"))
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]
    r = _cli("search", "--index", str(tmp_path / "idx"), "--topics", str(topics), "--output", str(tmp_path / "run.trec"))
    assert r.returncode == 0, r.stderr[-2000:]
    run = read_run(str(tmp_path / "run.trec"))
    assert max(run["q1"], key=run["q1"].get) == "d1" and max(run["q2"], key=run["q2"].get) == "d2"
    line = open(tmp_path / "run.trec").readline().split()
    assert line[1] == "Q0" and line[3] == "1" and len(line) == 6


@pytest.mark.parametrize("content,message", [
    ('{"_id": "a", "text": "x"}\n{"_id": "b", "text": \n', "corpus.jsonl:2: malformed JSON"),
    ("", "empty corpus"),
    ('{"_id": "a", "text": "x"}\n{"_id": "a", "text": "y"}\n', "corpus.jsonl:2: docid 'a' appears a second time"),
    ('{"title": "no id"}\n', "corpus.jsonl:1: record has no '_id'"),
])
def test_bad_corpus_is_one_line_error_and_leaves_no_index(tmp_path, content, message):
    (tmp_path / "corpus.jsonl").write_text(content)
    r = _cli("index", "--corpus", str(tmp_path / "corpus.jsonl"), "--index", str(tmp_path / "idx"))
    assert r.returncode == 2
    assert message in r.stderr and r.stderr.strip().splitlines()[-1].startswith("error:")
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "idx").exists()


def test_missing_files_and_bad_topics(tmp_path):
    r = _cli("index", "--corpus", str(tmp_path / "nope.jsonl"), "--index", str(tmp_path / "idx"))
    assert r.returncode == 2 and "corpus not found" in r.stderr
    r = _cli("search", "--index", str(tmp_path / "nope"), "--topics", str(tmp_path / "t.tsv"), "--output", "x")
    assert r.returncode == 2 and "not found" in r.stderr and "Traceback" not in r.stderr


def test_beir_folder_layout_and_judged_topics_only(tmp_path):
    """A standard BEIR folder (queries.jsonl holds every split): only judged test topics are searched."""
    d = tmp_path / "mini"
    (d / "qrels").mkdir(parents=True)
    with gzip.open(d / "corpus.jsonl.gz", "wt") as f:
        f.write(json.dumps({"_id": "d1", "title": "t", "text": "x"}) + "\n")
    (d / "queries.jsonl").write_text('{"_id": "1", "text": "a"}\n{"_id": "2", "text": "b"}\n')
    (d / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n2\td1\t1\n")
    ds = beir_dataset(str(d))
    assert ds.topics() == {"2": "b"}
    assert read_qrels(ds.qrels) == {"2": {"d1": 1}}
    (d / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n3\td1\t1\n")
    with pytest.raises(InputError, match="judged topics"):
        ds.topics()


def test_search_on_a_directory_that_is_not_a_lucene_index(tmp_path):
    (tmp_path / "index").write_bytes(b"faiss")
    with pytest.raises(InputError, match="is not a Lucene index"):
        bm25.search(str(tmp_path), {"q": "x"})
