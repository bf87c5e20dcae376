"""Adversarial inputs (docs/reliability.md): bad bytes, ambiguous files, mismatched models. Every case asserts the
exact outcome: exit status 2 with one line ``error: file:line: what`` and no traceback, or the counted warning and
the exact output."""
import gzip
import json
import os
import re

import pytest

from repllama_pyserini.cli import run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


def fails(main, argv, capsys, pattern):
    """``main(argv)`` through the CLI wrapper: exit status 2, exactly one ``error:`` line matching ``pattern``."""
    with pytest.raises(SystemExit) as e:
        run_cli(main, argv)
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert e.value.code == 2 and len(lines) == 1 and re.search(pattern, lines[0]), err[-2000:]
    assert "Traceback" not in err
    return lines[0]


def mains():
    from repllama_pyserini.bm25.__main__ import main as bm25
    from repllama_pyserini.dense.__main__ import main as dense
    from repllama_pyserini.eval.__main__ import main as ev
    from repllama_pyserini.fusion.__main__ import main as fusion
    from repllama_pyserini.rerank.__main__ import main as rerank
    from repllama_pyserini.train.negatives import main as negatives
    return dict(bm25=bm25, dense=dense, eval=ev, fusion=fusion, rerank=rerank, negatives=negatives)


@pytest.fixture
def files(tmp_path):
    """A tiny valid corpus / topics / run / qrels set (each case damages one of them)."""
    docs = [{"_id": f"d{i}", "title": f"T{i}", "text": f"goldfish grow number {i}"} for i in range(6)]
    f = {"corpus": tmp_path / "corpus.jsonl", "topics": tmp_path / "topics.tsv", "run": tmp_path / "run.trec",
         "run2": tmp_path / "run2.trec", "qrels": tmp_path / "qrels.txt", "out": tmp_path / "out.trec"}
    f["corpus"].write_text("".join(json.dumps(d) + "\n" for d in docs))
    f["topics"].write_text("q1\tdo goldfish grow\nq2\twhat grows\n")
    f["run"].write_text("".join(f"{q} Q0 d{i} {i + 1} {10 - i} bm25\n" for q in ("q1", "q2") for i in range(4)))
    f["run2"].write_text("".join(f"{q} Q0 d{5 - i} {i + 1} {5 - i} other\n" for q in ("q1", "q2") for i in range(4)))
    f["qrels"].write_text("q1 0 d1 1\nq2 0 d2 1\n")
    return {k: str(v) for k, v in f.items()}


def damage_bytes(path, line, raw=b"\xff\xfe"):
    """Put non-UTF-8 bytes at the start of ``line`` (1-based); returns their byte offset."""
    data = open(path, "rb").read().split(b"\n")
    offset = sum(len(x) + 1 for x in data[:line - 1])
    data[line - 1] = raw + data[line - 1]
    open(path, "wb").write(b"\n".join(data))
    return offset


@pytest.mark.parametrize("target,command", [
    ("corpus", "dense encode"), ("corpus", "rerank"), ("corpus", "bm25 index"), ("topics", "bm25 search"),
    ("topics", "rerank"), ("run", "eval"), ("run", "fusion"), ("run", "rerank"), ("qrels", "eval")])
def test_non_utf8_bytes_are_one_line_with_the_byte_offset(files, tmp_path, capsys, tiny_encoder, tiny_reranker,
                                                          target, command):
    offset = damage_bytes(files[target], 2)
    argv = {"dense encode": ["encode", "--corpus", files["corpus"], "--encoder", tiny_encoder["lora"], "--output",
                             str(tmp_path / "idx"), "--no-progress"],
            "rerank": ["--model", tiny_reranker["lora"], "--run", files["run"], "--topics", files["topics"],
                       "--corpus", files["corpus"], "--output", files["out"], "--no-progress"],
            "bm25 index": ["index", "--corpus", files["corpus"], "--index", str(tmp_path / "lucene")],
            "bm25 search": ["search", "--index", str(tmp_path / "none"), "--topics", files["topics"], "--output",
                            files["out"]],
            "eval": ["--run", files["run"], "--qrels", files["qrels"]],
            "fusion": ["--runs", files["run"], files["run2"], "--output", files["out"]]}[command]
    main = mains()[command.split()[0]]
    fails(main, argv, capsys, rf"{re.escape(files[target])}:2: not UTF-8 \(byte 0xff at byte offset {offset}\)")
    assert not os.path.exists(files["out"])


def test_non_utf8_in_a_gzipped_corpus(tmp_path, capsys, tiny_encoder):
    path = tmp_path / "corpus.jsonl.gz"
    with gzip.open(path, "wb") as f:
        f.write(b'{"_id": "a", "text": "x"}\n{"_id": "b", "text": "\xff"}\n')
    fails(mains()["dense"], ["encode", "--corpus", str(path), "--encoder", tiny_encoder["lora"], "--output",
                             str(tmp_path / "idx")], capsys,
          r"corpus.jsonl.gz:2: not UTF-8 \(byte 0xff at byte offset 48 of the uncompressed text\)")


def test_duplicate_query_ids(files, capsys, tiny_reranker):
    with open(files["topics"], "a") as f:
        f.write("q1\tanother text\n")
    want = rf"topics.tsv:3: query id 'q1' appears a second time \(first at {re.escape(files['topics'])}:1\)"
    fails(mains()["rerank"], ["--model", tiny_reranker["lora"], "--run", files["run"], "--topics", files["topics"],
                              "--corpus", files["corpus"], "--output", files["out"]], capsys, want)
    fails(mains()["bm25"], ["search", "--index", "none", "--topics", files["topics"], "--output", files["out"]],
          capsys, want)


def test_duplicate_docids(files, tmp_path, capsys, tiny_reranker):
    with open(files["corpus"], "a") as f:
        f.write(json.dumps({"_id": "d1", "title": "", "text": "a second d1"}) + "\n")
    want = rf"corpus.jsonl:7: docid 'd1' appears a second time"
    fails(mains()["rerank"], ["--model", tiny_reranker["lora"], "--run", files["run"], "--topics", files["topics"],
                              "--corpus", files["corpus"], "--output", files["out"]], capsys, want)
    fails(mains()["bm25"], ["index", "--corpus", files["corpus"], "--index", str(tmp_path / "lucene")], capsys, want)
    fails(mains()["negatives"], ["--corpus", files["corpus"], "--topics", files["topics"], "--qrels", files["qrels"],
                                 "--run", files["run"], "--no-bm25", "--output", str(tmp_path / "t.jsonl")], capsys,
          want)


@pytest.mark.parametrize("command", ["eval", "fusion", "rerank"])
def test_a_document_twice_for_one_query(files, capsys, tiny_reranker, command):
    with open(files["run"], "a") as f:
        f.write("q1 Q0 d2 9 0.5 bm25\n")
    argv = {"eval": ["--run", files["run"], "--qrels", files["qrels"]],
            "fusion": ["--runs", files["run"], files["run2"], "--output", files["out"]],
            "rerank": ["--model", tiny_reranker["lora"], "--run", files["run"], "--topics", files["topics"],
                       "--corpus", files["corpus"], "--output", files["out"]]}[command]
    fails(mains()[command], argv, capsys, r"run.trec:9: document 'd2' is listed twice for query 'q1'")


@pytest.mark.parametrize("line,message", [("q1 Q0 d9 5 0.1 bm25 extra", "7 fields, but the run's first line has 6"),
                                          ("q1 Q0 d9 5 nan bm25", "score 'nan' is not finite"),
                                          ("q1 Q0 d9", "3 fields, but the run's first line has 6")])
def test_fusion_errors_name_the_line(files, capsys, line, message):
    with open(files["run2"], "a") as f:
        f.write(line + "\n")
    fails(mains()["fusion"], ["--runs", files["run"], files["run2"], "--output", files["out"]], capsys,
          rf"run2.trec:9: {re.escape(message)}")
    assert not os.path.exists(files["out"])


def test_empty_query_is_dropped_with_a_counted_warning(files, tmp_path, capsys, caplog, tiny_reranker):
    from repllama_pyserini.formats import read_run
    open(files["topics"], "w").write("q1\tdo goldfish grow\nq2\t   \n")
    with caplog.at_level("WARNING"):
        run_cli(mains()["rerank"], ["--model", tiny_reranker["lora"], "--run", files["run"], "--topics",
                                    files["topics"], "--corpus", files["corpus"], "--output", files["out"],
                                    "--no-progress"])
    assert any(f"1 empty queries dropped (first at {files['topics']}:2)" in r.getMessage() for r in caplog.records)
    assert list(read_run(files["out"])) == ["q1"]
    assert "1 run queries without topic text dropped (e.g. 'q2')" in capsys.readouterr().err
    # negatives: the empty query is not written into training data
    out = str(tmp_path / "train.jsonl")
    run_cli(mains()["negatives"], ["--corpus", files["corpus"], "--topics", files["topics"], "--qrels",
                                   files["qrels"], "--run", files["run"], "--no-bm25", "--output", out])
    assert [json.loads(x)["query_id"] for x in open(out)] == ["q1"]


def test_run_documents_missing_from_the_corpus_are_counted_by_negatives(files, tmp_path, capsys):
    with open(files["run"], "a") as f:
        f.write("q1 Q0 ghost 5 0.5 bm25\nq1 Q0 ghost2 6 0.4 bm25\n")
    out = str(tmp_path / "train.jsonl")
    run_cli(mains()["negatives"], ["--corpus", files["corpus"], "--topics", files["topics"], "--qrels",
                                   files["qrels"], "--run", files["run"], "--no-bm25", "--num-negatives", "9",
                                   "--output", out])
    assert "2 candidates of the runs are absent from the corpus (dropped)" in capsys.readouterr().out
    assert all(p["docid"] != "ghost" for x in open(out) for p in json.loads(x)["negative_passages"])


def test_malformed_lines(files, tmp_path, capsys, tiny_encoder):
    open(files["corpus"], "a").write('{"_id": "z", "text": \n')
    fails(mains()["dense"], ["encode", "--corpus", files["corpus"], "--encoder", tiny_encoder["lora"], "--output",
                             str(tmp_path / "idx")], capsys, r"corpus.jsonl:7: malformed JSON")
    tsv = tmp_path / "c.tsv"
    tsv.write_text("a\tx\nb\ty\tz\n")
    fails(mains()["dense"], ["encode", "--corpus", str(tsv), "--encoder", tiny_encoder["lora"], "--output",
                             str(tmp_path / "idx2")], capsys, r"c.tsv:2: 3 tab-separated columns, but the corpus has 2")


@pytest.fixture(scope="module")
def other_base_adapter(tmp_path_factory, tiny_encoder, tiny_reranker):
    """LoRA adapters trained on another base (hidden size 32), pointed at the 64-d test bases."""
    from tiny_models import make_random_lora, make_tiny_llama
    root = tmp_path_factory.mktemp("other-base")
    out = {}
    for kind, fixture in (("encoder", tiny_encoder), ("reranker", tiny_reranker)):
        base = make_tiny_llama(str(root / f"base-{kind}"), kind=kind, hidden_size=32)
        out[kind] = make_random_lora(base, str(root / f"lora-{kind}"), kind=kind)
        out[f"{kind}-base"] = fixture["base"]
    return out


def test_adapter_on_the_wrong_base(files, tmp_path, capsys, other_base_adapter):
    a = other_base_adapter
    fails(mains()["dense"], ["encode", "--corpus", files["corpus"], "--encoder", a["encoder"], "--base-model",
                             a["encoder-base"], "--output", str(tmp_path / "idx")], capsys,
          r"the LoRA adapter .*lora-encoder does not fit the base model .*size mismatch.*pass --base-model")
    fails(mains()["rerank"], ["--model", a["reranker"], "--base-model", a["reranker-base"], "--run", files["run"],
                              "--topics", files["topics"], "--corpus", files["corpus"], "--output", files["out"]],
          capsys, r"the LoRA adapter .*lora-reranker does not fit the base model")


def test_index_searched_with_another_encoder(files, tmp_path, tiny_encoder, monkeypatch):
    """An index records its encoder: searching it with other weights of the same dimension is an error (an
    environment variable proceeds on purpose); the dimension check stays."""
    from pyserini.search.faiss import FaissSearcher

    from repllama_pyserini.cli import InputError
    from repllama_pyserini.dense.pyserini_encoders import RepLLaMAQueryEncoder
    from tiny_models import make_random_lora
    idx = str(tmp_path / "idx")
    run_cli(mains()["dense"], ["encode", "--corpus", files["corpus"], "--encoder", tiny_encoder["lora"], "--output",
                               idx, "--no-progress"])
    other = make_random_lora(tiny_encoder["base"], str(tmp_path / "other"), seed=7)
    FaissSearcher(idx, RepLLaMAQueryEncoder(encoder_dir=tiny_encoder["lora"]))  # its own encoder: fine
    with pytest.raises(InputError, match=r"was built with another encoder than .*other \(its model weights differ\); "
                                         r"search with the encoder that built it"):
        FaissSearcher(idx, RepLLaMAQueryEncoder(encoder_dir=other))
    monkeypatch.setenv("REPLLAMA_PYSERINI_ALLOW_ENCODER_MISMATCH", "1")
    FaissSearcher(idx, RepLLaMAQueryEncoder(encoder_dir=other))
    # the index searched with Pyserini's AutoQueryEncoder (what `--encoder DIR` without `repllama` in the name and
    # without --encoder-class gets): meaningless scores, so refused; pre-encoded queries are not judged
    from pyserini.encode import AutoQueryEncoder, QueryEncoder
    with pytest.raises(InputError, match=r"searched with Pyserini's AutoQueryEncoder, but it was built by a RepLLaMA "
                                         r"encoder: add --encoder-class repllama"):
        FaissSearcher(idx, AutoQueryEncoder(tiny_encoder["base"], pooling="mean"))
    FaissSearcher(idx, QueryEncoder())


def test_reranking_with_an_untrained_score_head(files, capsys, tiny_causal):
    """A plain decoder has no trained score head: refused, or run on purpose with --allow-untrained-head."""
    from repllama_pyserini.formats import read_run
    argv = ["--model", tiny_causal["base"], "--run", files["run"], "--topics", files["topics"], "--corpus",
            files["corpus"], "--output", files["out"], "--no-progress"]
    fails(mains()["rerank"], argv, capsys, r"has no trained score head .* pass --allow-untrained-head")
    run_cli(mains()["rerank"], argv + ["--allow-untrained-head"])
    assert set(read_run(files["out"])) == {"q1", "q2"}


def test_load_report_of_a_score_head_the_adapter_brings_is_dropped(tmp_path, tiny_causal):
    """A reranker adapter on a plain decoder (as the shipped ones): transformers reports the base's score head as
    newly initialised, which is noise when the adapter saves the trained head (dropped) and the truth without one
    (kept)."""
    import logging
    from repllama_pyserini.models import load_model
    from tiny_models import make_random_lora
    lora = make_random_lora(tiny_causal["base"], str(tmp_path / "lora"), kind="reranker")

    class Keep(logging.Handler):
        def __init__(self):
            super().__init__()
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    logger, keep = logging.getLogger("transformers.modeling_utils"), Keep()
    logger.addHandler(keep)
    try:
        load_model(lora, kind="reranker", dtype="float32", device="cpu")
        assert not [m for m in keep.messages if "LOAD REPORT" in m]
        load_model(tiny_causal["base"], kind="reranker", dtype="float32", device="cpu", allow_untrained_head=True)
        reports = [m for m in keep.messages if "LOAD REPORT" in m]
        assert len(reports) == 1 and "score.weight" in reports[0] and "MISSING" in reports[0]
    finally:
        logger.removeHandler(keep)


def test_load_report_of_a_failed_load_is_shown(monkeypatch):
    """A load that fails after transformers logged its report (e.g. a size mismatch) still shows the report."""
    import logging
    import transformers
    from repllama_pyserini.models import load_base
    logger, seen = logging.getLogger("transformers.modeling_utils"), []

    def failing(*args, **kwargs):
        logger.warning("LlamaForSequenceClassification LOAD REPORT from: x\nscore.weight | MISMATCH")
        raise RuntimeError("see the above report")

    monkeypatch.setattr(transformers.AutoModelForSequenceClassification, "from_pretrained", failing)
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logger.addHandler(handler)
    try:
        with pytest.raises(RuntimeError, match="above report"):
            load_base("x", "reranker", None, "sdpa", head_in_adapter=True)
    finally:
        logger.removeHandler(handler)
    assert [m for m in seen if "LOAD REPORT" in m] and not logger.filters


def test_a_byte_order_mark_is_dropped(files, tmp_path):
    from repllama_pyserini.formats import read_qrels, read_topics
    for name in ("topics", "qrels"):
        data = open(files[name], "rb").read()
        open(files[name], "wb").write(b"\xef\xbb\xbf" + data)
    assert list(read_topics(files["topics"])) == ["q1", "q2"]
    assert read_qrels(files["qrels"]) == {"q1": {"d1": 1}, "q2": {"d2": 1}}


def test_query_ids_with_whitespace(files, capsys):
    open(files["topics"], "w").write("q 1\tdo goldfish grow\n")
    fails(mains()["bm25"], ["search", "--index", "none", "--topics", files["topics"], "--output", files["out"]],
          capsys, r"topics.tsv:1: query id 'q 1' is empty or contains whitespace")


def test_a_truncated_gzip_corpus(tmp_path, capsys, tiny_encoder):
    path = tmp_path / "corpus.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write("".join(json.dumps({"_id": str(i), "text": "x " * 50}) + "\n" for i in range(200)))
    os.truncate(path, os.path.getsize(path) // 2)
    fails(mains()["dense"], ["encode", "--corpus", str(path), "--encoder", tiny_encoder["lora"], "--output",
                             str(tmp_path / "idx")], capsys, r"corpus.jsonl.gz: cannot read \(")


def test_an_unwritable_output(files, capsys):
    fails(mains()["fusion"], ["--runs", files["run"], files["run2"], "--output", "/proc/no-such/x.trec"], capsys,
          r"No such file or directory: /proc/no-such")


def test_a_bm25_index_of_another_corpus_or_fields(files, tmp_path, capsys):
    idx = str(tmp_path / "lucene")
    run_cli(mains()["bm25"], ["index", "--corpus", files["corpus"], "--index", idx])
    other = tmp_path / "other.jsonl"
    other.write_text('{"_id": "x", "text": "another corpus"}\n')
    fails(mains()["bm25"], ["index", "--corpus", str(other), "--index", idx], capsys,
          r"holds an index of another corpus or --fields \(flat\); pass --overwrite")
    fails(mains()["bm25"], ["index", "--corpus", files["corpus"], "--index", idx, "--fields", "multifield"], capsys,
          r"holds an index of another corpus or --fields")
    fails(mains()["bm25"], ["search", "--index", idx, "--topics", files["topics"], "--output", files["out"],
                            "--fields", "multifield"], capsys, r"is a flat index: search it with --fields flat")
