"""Adversarial runs of the long jobs (docs/reliability.md): kills, concurrent writers, inputs changed under the same
path, damaged saved state, overwrite, reruns. Each case asserts the exact outcome: output equal (byte for byte) to an
uninterrupted run, or exit status 2 with one line naming the problem and the old output intact."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from repllama_pyserini.cli import run_cli

pytestmark = pytest.mark.usefixtures("one_thread")
SLOW = ("import sys, time\nfrom repllama_pyserini.jobs import Job\nwrite = Job.write_chunk\n"
        "Job.write_chunk = lambda self, *a, **k: (write(self, *a, **k), time.sleep(0.4))\n"
        "from repllama_pyserini.{module}.__main__ import main\nmain(sys.argv[1:])\n")
HOLD_LOCK = ("import sys, time\nfrom repllama_pyserini.jobs import Lock\nheld = Lock(sys.argv[1], 'x').acquire()\n"
             "print('held', flush=True)\ntime.sleep(600)\n")


def fails(main, argv, capsys, pattern):
    with pytest.raises(SystemExit) as e:
        run_cli(main, argv)
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert e.value.code == 2 and len(lines) == 1 and re.search(pattern, lines[0]), err[-2000:]
    assert "Traceback" not in err


def dense(argv):
    from repllama_pyserini.dense.__main__ import main
    return main(argv)


def rerank(argv):
    from repllama_pyserini.rerank.__main__ import main
    return main(argv)


@pytest.fixture(scope="module")
def data(ir_data, tmp_path_factory):
    """40 real SciFact documents; 6 DL19 queries reranked over 8 real passages each (a 48-pair run)."""
    import gzip
    d = tmp_path_factory.mktemp("reliability")
    with gzip.open(os.path.join(ir_data, "beir", "scifact", "corpus.jsonl.gz"), "rt", encoding="utf-8") as f:
        docs = [next(f) for _ in range(40)]
    (d / "corpus.jsonl").write_text("".join(docs))
    from repllama_pyserini.formats import load_docs, read_run, read_topics
    mm = os.path.join(ir_data, "msmarco-passage")
    run = read_run(os.path.join(mm, "rank_llm_candidates", "trec_results_BM25_dl19.txt"))
    topics = read_topics(os.path.join(ir_data, "topics-and-qrels", "topics.dl19-passage.txt"))
    qids = list(run)[:6]
    cands = {q: sorted(run[q], key=run[q].get, reverse=True)[:8] for q in qids}
    passages = load_docs(os.path.join(mm, "collection.dl19-dl20-candidates.tsv.gz"), {x for c in cands.values() for x in c})
    (d / "passages.tsv").write_text("".join(f"{k}\t{v.text}\n" for k, v in sorted(passages.items())))
    (d / "topics.tsv").write_text("".join(f"{q}\t{topics[q]}\n" for q in qids))
    (d / "run.trec").write_text("".join(f"{q} Q0 {x} {r + 1} {run[q][x]} bm25\n" for q in qids
                                        for r, x in enumerate(cands[q])))
    return {k: str(d / f) for k, f in (("corpus", "corpus.jsonl"), ("passages", "passages.tsv"),
                                       ("topics", "topics.tsv"), ("run", "run.trec"))}


def encode_argv(data, enc, out, *extra):
    return ["encode", "--corpus", data["corpus"], "--encoder", enc, "--output", str(out), "--chunk-size", "8",
            "--max-length", "48", "--batch-size", "4", "--no-progress", *extra]


def rerank_argv(data, model, out, *extra):
    return ["--model", model, "--run", data["run"], "--topics", data["topics"], "--corpus", data["passages"],
            "--output", str(out), "--chunk-pairs", "8", "--max-length", "64", "--no-progress", *extra]


@pytest.fixture(scope="module")
def reference(data, tiny_encoder, tiny_reranker, tmp_path_factory):
    """Uninterrupted outputs, made once."""
    d = tmp_path_factory.mktemp("reference")
    run_cli(dense, encode_argv(data, tiny_encoder["lora"], d / "idx"))
    run_cli(rerank, rerank_argv(data, tiny_reranker["lora"], d / "rr.trec"))
    return {"index": (d / "idx" / "index").read_bytes(), "docid": (d / "idx" / "docid").read_bytes(),
            "run": (d / "rr.trec").read_bytes()}


def same_index(out, reference):
    return (out / "index").read_bytes() == reference["index"] and (out / "docid").read_bytes() == reference["docid"]


def chunk_count(job_dir):
    p = os.path.join(job_dir, "manifest.json")
    return len(json.load(open(p))["chunks"]) if os.path.isfile(p) else 0


def kill_after(cmd, job_dir, chunks):
    """Start ``cmd`` (slowed down per chunk from outside), SIGKILL it once ``chunks`` chunks are saved."""
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and p.poll() is None and chunk_count(job_dir) < chunks:
        time.sleep(0.02)
    assert p.poll() is None, p.stderr.read().decode()[-2000:]
    p.send_signal(signal.SIGKILL)
    p.wait()
    p.stderr.close()


# ------------------------------------------------------------------------------------------ kill -9, then resume
@pytest.mark.parametrize("chunks", [1, 3])
def test_encode_killed_then_resumed_equals_uninterrupted(data, tiny_encoder, reference, tmp_path, chunks):
    out = tmp_path / "idx"
    cmd = [sys.executable, "-c", SLOW.format(module="dense"), *encode_argv(data, tiny_encoder["lora"], out)]
    kill_after(cmd, f"{out}.job/shard-00000-of-00001", chunks)
    assert not (out / "index").exists()
    run_cli(dense, encode_argv(data, tiny_encoder["lora"], out))
    assert same_index(out, reference) and not os.path.exists(f"{out}.job")


@pytest.mark.parametrize("chunks", [1, 4])
def test_rerank_killed_then_resumed_equals_uninterrupted(data, tiny_reranker, reference, tmp_path, chunks):
    out = tmp_path / "rr.trec"
    cmd = [sys.executable, "-c", SLOW.format(module="rerank"), *rerank_argv(data, tiny_reranker["lora"], out)]
    kill_after(cmd, f"{out}.job", chunks)
    assert not out.exists()
    run_cli(rerank, rerank_argv(data, tiny_reranker["lora"], out))
    assert out.read_bytes() == reference["run"]


# ----------------------------------------------------------------------------------------------- one writer
@pytest.mark.parametrize("job", ["encode", "rerank"])
def test_a_second_writer_is_refused_and_a_dead_writers_lock_freed(data, tiny_encoder, tiny_reranker, reference,
                                                                       tmp_path, capsys, job):
    out = tmp_path / ("idx" if job == "encode" else "rr.trec")
    lock = f"{out}.job/shard-00000-of-00001/LOCK" if job == "encode" else f"{out}.job/LOCK"
    os.makedirs(os.path.dirname(lock))
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, lock], stdout=subprocess.PIPE)
    assert holder.stdout.readline().strip() == b"held"
    main, argv = ((dense, encode_argv(data, tiny_encoder["lora"], out, "--max-length", "32")) if job == "encode"
                  else (rerank, rerank_argv(data, tiny_reranker["lora"], out)))
    fails(main, argv, capsys, rf"is being written by process {holder.pid} on \S+ since [-0-9: ]+; wait for it")
    holder.kill()
    holder.wait()
    if job == "encode":
        argv = encode_argv(data, tiny_encoder["lora"], out)
    run_cli(main, argv)  # the operating system freed the lock of the killed process
    assert same_index(out, reference) if job == "encode" else out.read_bytes() == reference["run"]


# ------------------------------------------------------------------------------ inputs changed under the same path
@pytest.mark.parametrize("change,key", [("topics", "inputs.topics"), ("passages", "inputs.documents"),
                                        ("run", "inputs.candidates")])
def test_rerank_resume_with_changed_inputs_is_refused(data, tiny_reranker, tmp_path, capsys, change, key):
    import shutil
    local = {k: str(tmp_path / os.path.basename(v)) for k, v in data.items()}
    for k in local:
        shutil.copy(data[k], local[k])
    out = tmp_path / "rr.trec"
    run_cli(rerank, rerank_argv(local, tiny_reranker["lora"], out))
    out.unlink()  # as if killed before the end: the saved chunks remain
    text = open(local[change]).read()
    if change == "run":  # the same size: another candidate order
        lines = text.splitlines()
        lines[0], lines[1] = lines[1].replace(" 2 ", " 1 ", 1), lines[0].replace(" 1 ", " 2 ", 1)
        a, b = lines[0].split(), lines[1].split()
        a[4], b[4] = b[4], a[4]
        lines[0], lines[1] = " ".join(a), " ".join(b)
        text = "\n".join(lines) + "\n"
    else:
        text = text.replace("e", "a", 1)  # one character, the same size
    open(local[change], "w").write(text)
    fails(rerank, rerank_argv(local, tiny_reranker["lora"], out), capsys,
          rf"holds the progress of a job with other settings or inputs \({re.escape(key)}: content changed\); pass "
          rf"--overwrite")
    assert not out.exists()


def test_encode_resume_after_a_same_size_corpus_edit_is_refused(data, tiny_encoder, tmp_path, capsys):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(open(data["corpus"]).read())
    local = dict(data, corpus=str(corpus))
    out = tmp_path / "idx"
    run_cli(dense, encode_argv(local, tiny_encoder["lora"], out, "--no-merge"))
    corpus.write_text(corpus.read_text().replace("the", "THE", 1))
    fails(dense, encode_argv(local, tiny_encoder["lora"], out), capsys,
          r"holds the progress of a job with other settings or inputs \(inputs.corpus: content changed\)")


# ------------------------------------------------------------------------------------------------ damaged state
@pytest.mark.parametrize("damage", ["overwrite-bytes", "truncate", "edit-docid", "delete"])
def test_damaged_encode_chunk_is_re_encoded(data, tiny_encoder, reference, tmp_path, caplog, damage):
    out = tmp_path / "idx"
    run_cli(dense, encode_argv(data, tiny_encoder["lora"], out, "--no-merge"))
    chunk = tmp_path / "idx.job" / "shard-00000-of-00001" / "chunk_000002"
    npy, ids = f"{chunk}.npy", f"{chunk}.docids"
    if damage == "overwrite-bytes":  # values up to 3.4e38, the same size
        raw = bytearray(open(npy, "rb").read())
        raw[-64:] = np.full(16, 3.4e38, np.float32).tobytes()
        open(npy, "wb").write(bytes(raw))
    elif damage == "truncate":
        open(npy, "r+b").truncate(100)
    elif damage == "edit-docid":
        open(ids, "w").write(open(ids).read().replace("\n", "x\n", 1))
    else:
        os.unlink(npy)
    with caplog.at_level("WARNING"):
        run_cli(dense, encode_argv(data, tiny_encoder["lora"], out))
    problem = "missing" if damage == "delete" else "checksum mismatch"
    assert [r.getMessage() for r in caplog.records] == [
        f"encoding shard 0/1: chunk_000002{'.docids' if damage == 'edit-docid' else '.npy'} is damaged ({problem}): "
        f"it will be redone"]
    assert same_index(out, reference)


def test_damaged_rerank_chunk_is_rescored(data, tiny_reranker, reference, tmp_path, caplog):
    out = tmp_path / "rr.trec"
    run_cli(rerank, rerank_argv(data, tiny_reranker["lora"], out))
    out.unlink()
    chunk = tmp_path / "rr.trec.job" / "chunk_000001.json"
    chunk.write_text(re.sub(r"(\d)\]", r"9]", chunk.read_text(), count=1))  # an edited score
    with caplog.at_level("WARNING"):
        run_cli(rerank, rerank_argv(data, tiny_reranker["lora"], out))
    assert [r.getMessage() for r in caplog.records] == [
        "reranking: chunk_000001.json is damaged (checksum mismatch): it will be redone"]
    assert out.read_bytes() == reference["run"]


def test_a_truncated_manifest_is_one_line_with_the_way_out(data, tiny_encoder, tmp_path, capsys):
    out = tmp_path / "idx"
    run_cli(dense, encode_argv(data, tiny_encoder["lora"], out, "--no-merge"))
    manifest = tmp_path / "idx.job" / "shard-00000-of-00001" / "manifest.json"
    manifest.write_text(manifest.read_text()[:50])
    fails(dense, encode_argv(data, tiny_encoder["lora"], out), capsys,
          r"manifest.json: unreadable job manifest .*; pass --overwrite to start afresh")


# --------------------------------------------------------------------------------------------- overwrite safety
def test_overwrite_keeps_the_old_index_until_the_new_one_is_complete(data, tiny_encoder, reference, tmp_path,
                                                                    capsys):
    out = tmp_path / "idx"
    run_cli(dense, encode_argv(data, tiny_encoder["lora"], out, "--keep-chunks"))
    # a merge over a damaged chunk: refused before anything is replaced
    chunk = tmp_path / "idx.job" / "shard-00000-of-00001" / "chunk_000001.npy"
    chunk.write_bytes(chunk.read_bytes()[:-4] + b"\0\0\0\0")
    fails(dense, ["merge", "--output", str(out), "--overwrite"], capsys,
          r"damaged chunks were dropped; rerun the encode command of that shard")
    assert same_index(out, reference)
    # a new encode that fails on its input
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "x", "text": "ok"}\n{broken\n')
    fails(dense, encode_argv(dict(data, corpus=str(bad)), tiny_encoder["lora"], out, "--overwrite"), capsys,
          r"bad.jsonl:2: malformed JSON")
    assert same_index(out, reference)
    # another setting without --overwrite: refused, the index untouched
    fails(dense, encode_argv(data, tiny_encoder["lora"], out, "--max-length", "32"), capsys,
          r"already holds an index built with other settings, inputs or weights \(settings.encoder.preset."
          r"passage_max_length: 48 -> 32\); pass --overwrite")
    assert same_index(out, reference)


def test_a_killed_merge_leaves_nothing_behind(data, tiny_encoder, reference, tmp_path):
    """A kill between the two renames of the swap leaves the old index aside: the next run puts it back and removes
    temporary directories."""
    out = tmp_path / "idx"
    run_cli(dense, encode_argv(data, tiny_encoder["lora"], out))
    os.rename(out, tmp_path / ".idx.old-123")
    (tmp_path / ".idx.tmp-abc").mkdir()
    (tmp_path / ".idx.tmp-abc" / "index").write_bytes(b"partial")
    from repllama_pyserini.dense.index import cleanup_partial
    cleanup_partial(str(out))
    assert same_index(out, reference) and sorted(os.listdir(tmp_path)) == ["idx"]


# --------------------------------------------------------------------------------------- reruns and determinism
def test_finished_jobs_are_reported_not_redone(data, tiny_encoder, tiny_reranker, reference, tmp_path, capsys,
                                               monkeypatch):
    out, rr = tmp_path / "idx", tmp_path / "rr.trec"
    run_cli(dense, encode_argv(data, tiny_encoder["lora"], out))
    run_cli(rerank, rerank_argv(data, tiny_reranker["lora"], rr))
    capsys.readouterr()
    stamps = (os.stat(out / "index").st_mtime_ns, os.stat(rr).st_mtime_ns)
    import repllama_pyserini.rerank.rankllama as rankllama
    monkeypatch.setattr(rankllama.RankLLaMAReranker, "from_pretrained", None)  # the model must not even load
    run_cli(dense, encode_argv(data, tiny_encoder["lora"], out))
    run_cli(rerank, rerank_argv(data, tiny_reranker["lora"], rr))
    err = capsys.readouterr().err
    assert "index already complete" in err and "already complete: " + str(rr) in err
    assert (os.stat(out / "index").st_mtime_ns, os.stat(rr).st_mtime_ns) == stamps
    assert same_index(out, reference) and rr.read_bytes() == reference["run"]  # deterministic across runs


def test_work_dir_keeps_what_the_job_did_not_make(data, tiny_encoder, reference, tmp_path):
    work = tmp_path / "mywork"
    work.mkdir()
    (work / "notes.txt").write_text("precious")
    out = tmp_path / "idx"
    run_cli(dense, encode_argv(data, tiny_encoder["lora"], out, "--work-dir", str(work)))
    assert same_index(out, reference) and sorted(os.listdir(work)) == ["notes.txt"]


def test_an_interrupted_overwrite_resumes(data, tiny_encoder, reference, tmp_path):
    """--overwrite discards another job's progress, never the progress of the very job it asks for."""
    out = tmp_path / "idx"
    run_cli(dense, encode_argv(data, tiny_encoder["lora"], out, "--max-length", "32"))  # an older index
    cmd = [sys.executable, "-c", SLOW.format(module="dense"),
           *encode_argv(data, tiny_encoder["lora"], out, "--overwrite")]
    kill_after(cmd, f"{out}.job/shard-00000-of-00001", 2)
    shard = tmp_path / "idx.job" / "shard-00000-of-00001"
    saved = {f: os.stat(shard / f).st_mtime_ns for f in os.listdir(shard) if f.endswith(".npy")}
    run_cli(dense, encode_argv(data, tiny_encoder["lora"], out, "--overwrite", "--keep-chunks"))
    assert len(saved) >= 2 and all(os.stat(shard / f).st_mtime_ns == t for f, t in saved.items())
    assert same_index(out, reference)


def test_a_damaged_finished_index_is_not_reported_complete(data, tiny_encoder, reference, tmp_path, capsys):
    out = tmp_path / "idx"
    run_cli(dense, encode_argv(data, tiny_encoder["lora"], out))
    os.truncate(out / "index", 1000)
    fails(dense, encode_argv(data, tiny_encoder["lora"], out), capsys,
          r"holds a damaged index \(files missing or of another size than written\); pass --overwrite")
    run_cli(dense, encode_argv(data, tiny_encoder["lora"], out, "--overwrite"))
    assert same_index(out, reference)


def test_an_output_inside_a_folder_corpus_does_not_change_its_fingerprint(data, tiny_encoder, tmp_path, capsys):
    beir = tmp_path / "beir"
    beir.mkdir()
    (beir / "corpus.jsonl").write_text(open(data["corpus"]).read())
    (beir / "queries.jsonl").write_text('{"_id": "1", "text": "x"}\n')
    argv = encode_argv(dict(data, corpus=str(beir)), tiny_encoder["lora"], beir / "idx")
    run_cli(dense, argv)
    (beir / "queries.jsonl").write_text('{"_id": "1", "text": "y"}\n')  # not read by the encoder
    capsys.readouterr()
    run_cli(dense, argv)
    assert "index already complete" in capsys.readouterr().err


def test_a_changed_rerank_tag_rewrites_the_run(data, tiny_reranker, tmp_path, monkeypatch):
    out = tmp_path / "rr.trec"
    run_cli(rerank, rerank_argv(data, tiny_reranker["lora"], out))
    import repllama_pyserini.rerank.rankllama as rankllama
    monkeypatch.setattr(rankllama.RankLLaMAReranker, "from_pretrained", None)  # from the saved chunks alone
    run_cli(rerank, rerank_argv(data, tiny_reranker["lora"], out, "--tag", "mytag"))
    assert {line.split()[5] for line in open(out)} == {"mytag"}


def test_a_finished_qpeft_rerank_is_reported_without_loading_the_llm(data, tiny_causal, tmp_path, capsys,
                                                                    monkeypatch):
    from repllama_pyserini.qpeft.__main__ import main as qpeft
    argv = ["rerank", "--model", tiny_causal["base"], "--prompt", "upr", "--run", data["run"], "--topics",
            data["topics"], "--corpus", data["passages"], "--output", str(tmp_path / "upr.trec"), "--depth", "4",
            "--chunk-pairs", "8", "--no-progress"]
    run_cli(qpeft, argv)
    import repllama_pyserini.qpeft.rerank as qrerank
    monkeypatch.setattr(qrerank.QPeftReranker, "from_pretrained", None)
    capsys.readouterr()
    run_cli(qpeft, argv)
    assert "already complete" in capsys.readouterr().err
