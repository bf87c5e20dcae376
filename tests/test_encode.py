"""Corpus encoding: formats, the streamed Flat index, resume after a kill, shards + merge, index types, bad input."""
import glob
import gzip
import json
import os
import signal
import subprocess
import sys
import time

import faiss
import numpy as np
import pytest

from repllama_pyserini.cli import InputError
from repllama_pyserini.dense import RepLLaMAEncoder
from repllama_pyserini.dense.__main__ import main as dense_main
from repllama_pyserini.dense.encode import EncodeSettings, encode_corpus, merge
from repllama_pyserini.dense.index import METADATA

MAXLEN = 48
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def docs(ir_data):
    """The first 60 real SciFact documents (title + abstract)."""
    out = []
    with gzip.open(os.path.join(ir_data, "beir", "scifact", "corpus.jsonl.gz"), "rt", encoding="utf-8") as f:
        for line in f:
            out.append(json.loads(line))
            if len(out) == 60:
                break
    return out


@pytest.fixture(scope="module")
def enc(tiny_encoder):
    return RepLLaMAEncoder(tiny_encoder["lora"], passage_max_length=MAXLEN, batch_size=4)


@pytest.fixture(scope="module")
def expected(docs, enc):
    """Embeddings straight from the encoder, one call, corpus order."""
    return enc.encode_passages([d["text"] for d in docs], [d["title"] for d in docs])


def write_jsonl(path, records):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return str(path)


def run(enc, lora, corpus, out, chunk_size=8, **settings):
    """``encode_corpus`` with the test encoder (or, for ``enc=None``, one loaded from ``lora``)."""
    if enc is None:
        enc = RepLLaMAEncoder(lora, passage_max_length=MAXLEN, batch_size=4)
    s = EncodeSettings(output=str(out), corpus=corpus, chunk_size=chunk_size, progress=False, **settings)
    return encode_corpus(s, lambda: enc, enc.preset)


def work(out):
    return type(out)(str(out) + ".job")


def encode_cli(*args):
    return ["encode", *args, "--no-progress"]


def read_index(d):
    index = faiss.read_index(os.path.join(d, "index"))
    with open(os.path.join(d, "docid")) as f:
        ids = [line.rstrip("\n") for line in f]
    return index, ids


def test_cli_flat_index_is_faiss_and_pyserini_compatible(docs, expected, tiny_encoder, tmp_path, capsys):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", docs)
    out = tmp_path / "idx"
    dense_main(encode_cli("--corpus", corpus, "--encoder", tiny_encoder["lora"], "--output", str(out), "--chunk-size",
                          "16", "--batch-size", "4", "--max-length", str(MAXLEN)))
    index, ids = read_index(out)
    assert isinstance(index, faiss.IndexFlatIP) and index.ntotal == len(docs) and index.d == 64
    assert ids == [d["_id"] for d in docs]
    vecs = index.reconstruct_n(0, index.ntotal)
    np.testing.assert_allclose(vecs, expected, atol=1e-5)
    # the streamed file is byte for byte what Faiss writes for the same vectors
    ref = faiss.IndexFlatIP(64)
    ref.add(vecs)
    assert (out / "index").read_bytes() == bytes(faiss.serialize_index(ref))
    meta = json.loads((out / METADATA).read_text())
    assert meta["num_docs"] == len(docs) and meta["dimension"] == 64 and meta["truncated"] > 0
    assert not work(out).exists()  # chunks removed after the merge
    # Pyserini opens it and finds each document from its own vector
    from pyserini.search.faiss import FaissSearcher
    from repllama_pyserini.dense.pyserini_encoders import RepLLaMAQueryEncoder
    searcher = FaissSearcher(str(out), RepLLaMAQueryEncoder(encoder_dir=tiny_encoder["lora"]))
    hits = searcher.search(expected[3:4], k=3)
    assert hits[0].docid == docs[3]["_id"] and abs(hits[0].score - 1) < 1e-4
    # a second run with the same configuration finds the index complete and does nothing
    dense_main(encode_cli("--corpus", corpus, "--encoder", tiny_encoder["lora"], "--output", str(out), "--chunk-size",
                          "16", "--max-length", str(MAXLEN)))
    assert "already complete" in capsys.readouterr().err


def test_corpus_formats_give_the_same_index(docs, enc, tiny_encoder, tmp_path):
    recs = docs[:20]
    layouts = {
        "beir.jsonl": lambda p: write_jsonl(p, [{"_id": d["_id"], "title": "", "text": d["text"]} for d in recs]),
        "tevatron.jsonl.gz": lambda p: write_jsonl(p, [{"docid": d["_id"], "text": d["text"]} for d in recs]),
        "collection": lambda p: (os.makedirs(p), write_jsonl(os.path.join(p, "docs00.json"), [
            {"id": d["_id"], "contents": d["text"]} for d in recs[:12]]), write_jsonl(
            os.path.join(p, "docs01.json"), [{"id": d["_id"], "contents": d["text"]} for d in recs[12:]]), str(p))[-1],
        "msmarco.tsv.gz": lambda p: (gzip.open(p, "wt").write("".join(
            f"{d['_id']}\t{d['text']}\n\n" for d in recs)), str(p))[-1],
        "beir-folder": lambda p: (os.makedirs(p), write_jsonl(os.path.join(p, "corpus.jsonl.gz"), [
            {"_id": d["_id"], "title": "", "text": d["text"]} for d in recs]), str(p))[-1],
    }
    files = []
    for name, make in layouts.items():
        corpus = make(tmp_path / name)
        out = tmp_path / ("idx-" + name)
        run(enc, tiny_encoder["lora"], corpus, out)
        files.append((out / "index").read_bytes())
        assert read_index(out)[1] == [d["_id"] for d in recs]
    assert all(f == files[0] for f in files[1:])


SLOW_ENCODE = ("import sys, time\nfrom repllama_pyserini.jobs import Job\nwrite = Job.write_chunk\n"
               "Job.write_chunk = lambda self, *a, **k: (write(self, *a, **k), time.sleep(0.3))\n"
               "from repllama_pyserini.dense.__main__ import main\nmain(sys.argv[1:])\n")


def test_resume_after_kill(docs, expected, enc, tiny_encoder, tmp_path):
    """Kill a real run mid-way (SIGKILL; the test slows chunks down from outside), leave debris as a kill during a
    write would, restart: the finished chunks are kept, the rest is encoded, every docid once with its vector."""
    corpus = write_jsonl(tmp_path / "corpus.jsonl.gz", docs)
    out = tmp_path / "idx"
    sdir = work(out) / "shard-00000-of-00001"
    cmd = [sys.executable, "-c", SLOW_ENCODE, *encode_cli("--corpus", corpus, "--encoder", tiny_encoder["lora"],
           "--output", str(out), "--chunk-size", "6", "--batch-size", "4", "--max-length", str(MAXLEN))]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (sdir / "manifest.json").exists() and len(json.loads((sdir / "manifest.json").read_text())["chunks"]) >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    finished = sorted(json.loads((sdir / "manifest.json").read_text())["chunks"])
    assert 3 <= len(finished) < 10 and not (out / "index").exists()
    (sdir / "chunk_000099.npy.abc123.tmp").write_bytes(b"partial")  # a write cut short
    np.save(sdir / f"chunk_{len(finished):06d}.npy", np.zeros((6, 64), np.float32))  # written, not recorded
    mtimes = {f: os.path.getmtime(sdir / (f + ".npy")) for f in finished}
    run(enc, tiny_encoder["lora"], corpus, out, chunk_size=6, keep_chunks=True)  # the same settings as the command
    index, ids = read_index(out)
    assert ids == [d["_id"] for d in docs] and len(set(ids)) == len(ids)
    np.testing.assert_allclose(index.reconstruct_n(0, index.ntotal), expected, atol=1e-5)
    assert {f: os.path.getmtime(sdir / (f + ".npy")) for f in finished} == mtimes  # not redone
    assert not list(sdir.glob("*.tmp"))
    assert json.loads((out / METADATA).read_text())["num_docs"] == len(docs)


def test_shards_and_merge(docs, expected, enc, tiny_encoder, tmp_path):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", docs)
    out = tmp_path / "idx"
    assert run(enc, tiny_encoder["lora"], corpus, out, shard_id=2, shard_num=3, keep_chunks=True) is None
    assert run(enc, tiny_encoder["lora"], corpus, out, shard_id=0, shard_num=3, keep_chunks=True) is None
    assert not (out / "index").exists()
    with pytest.raises(InputError, match=r"1 of 3 shards are not finished \(started: 2\)"):
        merge(EncodeSettings(output=str(out)), by_hand=True)
    assert run(enc, tiny_encoder["lora"], corpus, out, shard_id=1, shard_num=3, keep_chunks=True) == str(out)
    index, ids = read_index(out)
    want = {d["_id"]: v for d, v in zip(docs, expected)}
    assert sorted(ids) == sorted(want) and len(ids) == len(set(ids))
    np.testing.assert_allclose(index.reconstruct_n(0, index.ntotal), np.stack([want[i] for i in ids]), atol=1e-5)
    assert ids[:3] == [docs[0]["_id"], docs[3]["_id"], docs[6]["_id"]]  # round-robin, shard 0 first

    # other index types from the same chunks, by hand (the `merge` command)
    from pyserini.search.faiss import FaissSearcher
    for spec, check in [("fp16", "SQfp16"), ("HNSW32", "HNSW32"), ("IVF4,Flat", "IVF4,Flat"), ("ivfpq", "IVF")]:
        d = tmp_path / f"idx-{spec}"
        dense_main(["merge", "--output", str(d), "--work-dir", str(work(out)), "--index-type", spec, "--keep-chunks",
                    "--nprobe", "4"])
        meta = json.loads((d / METADATA).read_text())
        assert meta["index_type"].startswith(check) and meta["num_docs"] == len(docs)
        s = FaissSearcher(str(d), None)
        assert s.docids == ids
        hits = s.search(expected[5:6], k=5)
        assert docs[5]["_id"] in [h.docid for h in hits]
        if spec == "fp16":
            np.testing.assert_allclose(s.index.reconstruct_n(0, len(ids)), index.reconstruct_n(0, len(ids)),
                                       atol=2e-3)
            assert os.path.getsize(d / "index") < 0.6 * os.path.getsize(out / "index")
        if spec.startswith("IVF4"):
            assert faiss.extract_index_ivf(s.index).nprobe == 4
    with pytest.raises(InputError, match="bad --index-type"):
        dense_main(["merge", "--output", str(tmp_path / "bad"), "--work-dir", str(work(out)), "--index-type", "Nope7"])


def test_duplicates_empty_and_bad_records(docs, enc, tiny_encoder, tmp_path):
    lora = tiny_encoder["lora"]
    recs = [dict(d) for d in docs[:12]]
    # a duplicate docid, in the same chunk or a later one: refused, naming the line
    for name, corpus in [("d1", recs[:4] + [recs[1]]), ("d2", recs + [dict(recs[2], text="another text")])]:
        with pytest.raises(InputError, match=rf"{name}.jsonl:{len(corpus)}: docid '{recs[len(corpus) - 11 if name == 'd2' else 1]['_id']}' appears a second time"):
            run(enc, lora, write_jsonl(tmp_path / f"{name}.jsonl", corpus), tmp_path / f"o-{name}", chunk_size=4)
    # empty documents: encoded as the prefix (counted), skipped, or refused
    empty = recs[:5] + [{"_id": "empty-1", "title": "", "text": "  "}]
    corpus = write_jsonl(tmp_path / "e.jsonl", empty)
    run(enc, lora, corpus, tmp_path / "e1")
    assert read_index(tmp_path / "e1")[1][-1] == "empty-1"
    assert json.loads((tmp_path / "e1" / METADATA).read_text())["empty"] == 1
    run(enc, lora, corpus, tmp_path / "e2", on_empty="skip")
    assert "empty-1" not in read_index(tmp_path / "e2")[1]
    with pytest.raises(InputError, match="e.jsonl:6: document 'empty-1' has no text"):
        run(enc, lora, corpus, tmp_path / "e3", on_empty="error")
    # docids Pyserini's line-based docid file cannot hold; malformed lines
    with pytest.raises(InputError, match="w.jsonl:1: docid 'a b' is empty or contains whitespace"):
        run(enc, lora, write_jsonl(tmp_path / "w.jsonl", [{"_id": "a b", "text": "x"}]), tmp_path / "o4")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(recs[0]) + "\n{not json\n")
    with pytest.raises(InputError, match=r"bad.jsonl:2: malformed JSON"):
        run(enc, lora, str(bad), tmp_path / "o5")
    tsv = tmp_path / "bad.tsv"
    tsv.write_text("1\ta\tb\tc\td\n")
    with pytest.raises(InputError, match="bad.tsv:1: expected 'docid<TAB>text'.*got 5 column"):
        run(enc, lora, str(tsv), tmp_path / "o6")


def test_changed_configuration_is_refused(docs, enc, tiny_encoder, tmp_path):
    lora = tiny_encoder["lora"]
    corpus = write_jsonl(tmp_path / "c.jsonl", docs[:10])
    out = tmp_path / "idx"
    run(enc, lora, corpus, out, keep_chunks=True, shard_num=2, shard_id=0)
    with pytest.raises(InputError, match=r"holds the progress of a job with other settings or inputs "
                                         r"\(settings.chunk_size: 8 -> 5\); pass --overwrite"):
        run(enc, lora, corpus, out, chunk_size=5, shard_num=2, shard_id=0)
    run(enc, lora, corpus, out, shard_num=2, shard_id=1)
    assert read_index(out)[0].ntotal == 10
    with pytest.raises(InputError, match="already holds an index built with other settings, inputs or weights"):
        run(enc, lora, corpus, out, chunk_size=5)


def test_retrained_adapter_in_the_same_directory_is_not_served_stale(docs, tiny_encoder, tmp_path):
    """Re-running encode after retraining into the same checkpoint directory must not reuse the old index."""
    from repllama_pyserini.models import weights_fingerprint
    from tiny_models import make_random_lora
    lora = make_random_lora(tiny_encoder["base"], str(tmp_path / "adapter"), seed=1)
    fp = weights_fingerprint(lora)
    corpus = write_jsonl(tmp_path / "c.jsonl", docs[:6])
    out = tmp_path / "idx"
    run(None, lora, corpus, out)
    run(None, lora, corpus, out)  # unchanged: the complete index is kept
    make_random_lora(tiny_encoder["base"], lora, seed=2)  # "retrained" in place
    assert weights_fingerprint(lora) != fp
    with pytest.raises(InputError, match="already holds an index built with other settings, inputs or weights"):
        run(None, lora, corpus, out)
    assert weights_fingerprint(tiny_encoder["lora"]) and weights_fingerprint("some/hub-id") is None


def test_merge_lock_of_a_live_merger_is_respected_and_freed_by_its_death(docs, enc, tiny_encoder, tmp_path):
    corpus = write_jsonl(tmp_path / "c.jsonl", docs[:5])
    out = tmp_path / "idx"
    assert run(enc, tiny_encoder["lora"], corpus, out, merge=False) is None
    hold = ("import sys, time\nfrom repllama_pyserini.jobs import Lock\nheld = Lock(sys.argv[1], 'x').acquire()\n"
            "print('held', flush=True)\ntime.sleep(600)\n")
    merger = subprocess.Popen([sys.executable, "-c", hold, str(work(out) / "merge.LOCK")], stdout=subprocess.PIPE)
    assert merger.stdout.readline().strip() == b"held"
    assert run(enc, tiny_encoder["lora"], corpus, out) is None and not (out / "index").exists()  # it merges
    with pytest.raises(InputError, match=rf"the merge into .* is being written by process {merger.pid}"):
        merge(EncodeSettings(output=str(out)), by_hand=True)
    merger.kill()  # killed: the operating system frees its lock
    merger.wait()
    assert run(enc, tiny_encoder["lora"], corpus, out) == str(out)
    assert read_index(out)[0].ntotal == 5


def test_index_type_errors_are_early_and_one_line(docs, enc, tiny_encoder, tmp_path):
    lora = tiny_encoder["lora"]
    corpus = write_jsonl(tmp_path / "c.jsonl", docs[:10])
    out = tmp_path / "idx"
    with pytest.raises(InputError, match="bad --index-type 'bogus' for 64-d"):
        run(enc, lora, corpus, out, index_type="bogus")
    assert not glob.glob(str(work(out) / "*" / "chunk_*"))  # refused before encoding anything
    with pytest.raises(InputError, match="Faiss cannot build --index-type IVF1000,Flat from 10 vectors"):
        run(enc, lora, corpus, out, index_type="IVF1000,Flat")
    run(enc, lora, corpus, out)  # the kept embeddings make a flat index
    assert read_index(out)[0].ntotal == 10


def test_cli_errors_are_one_line(tmp_path):
    for args, pattern in [(["encode", "--corpus", str(tmp_path / "nope.jsonl"), "--encoder", "org/x", "--output",
                            str(tmp_path / "o")], "corpus not found"),
                          (["merge", "--output", str(tmp_path)], "no encoded shards")]:
        r = subprocess.run([sys.executable, "-m", "repllama_pyserini.dense", *args], capture_output=True, text=True,
                           timeout=120, cwd=REPO)
        assert r.returncode == 2, r.stderr
        lines = [x for x in r.stderr.splitlines() if x.startswith("error:")]
        assert len(lines) == 1 and pattern in lines[0] and "Traceback" not in r.stderr, r.stderr
