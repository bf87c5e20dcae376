"""RepLLaMA encoders: equality with the model-card recipe, presets, Pyserini registration, bad input."""
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from repllama_pyserini.encoder import (RepLLaMADocumentEncoder, RepLLaMAEncoder, RepLLaMAQueryEncoder,
                                       check_index_dimension, install_faiss_dimension_check)
from repllama_pyserini.io import InputError
from repllama_pyserini.presets import find_preset, list_presets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LONG = ("goldfish grow in proportion to the size of their tank and water quality while diffusion tensor "
        "imaging of the newborn brain white matter shows retrieval with large language models and lora ") * 6
QUERIES = ["what is the capital of france", LONG, "how do goldfish grow", "x", "retrieval with lora " * 5,
           "paris", "the quick brown fox jumps over the lazy dog"]
PASSAGES = [("paris is the capital and most populous city of france", "Paris"), (LONG, "Goldfish"),
            ("query passage document", None), ("a", ""), (LONG + " tail", None), ("white matter", "Brain"),
            ("the lazy dog", "Fox")]


@pytest.fixture(scope="module")
def card(tiny_encoder):
    """The model-card recipe, written out: base + LoRA merged, ``tokenizer(f'... </s>')``, last hidden state of
    the final token, L2 normalisation -- one text at a time, no padding. Long texts: the first max_length - 1
    tokens, then EOS (Tevatron's truncation, which keeps the EOS)."""
    from peft import PeftModel
    from transformers import AutoModel, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny_encoder["base"])
    merged = PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_encoder["base"]),
                                       tiny_encoder["lora"]).merge_and_unload().eval()
    unmerged = PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_encoder["base"]),
                                         tiny_encoder["lora"]).eval()

    def embed(texts, max_length, model=merged):
        out = []
        for t in texts:
            ids = tok(f"{t}</s>")["input_ids"]
            if len(ids) > max_length:
                ids = tok(t)["input_ids"][:max_length - 1] + [tok.eos_token_id]
            with torch.no_grad():
                h = model(input_ids=torch.tensor([ids])).last_hidden_state[0][-1]
            out.append(F.normalize(h, p=2, dim=0).numpy())
        return np.stack(out)

    embed.tok, embed.unmerged = tok, unmerged
    return embed


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_queries_and_passages_equal_model_card(tiny_encoder, card, padding_side):
    enc = RepLLaMAEncoder(tiny_encoder["lora"], padding_side=padding_side, batch_size=3, query_max_length=24,
                          passage_max_length=40)
    assert enc.resolved.adapter == tiny_encoder["lora"] and enc.resolved.base == tiny_encoder["base"]
    q = enc.encode_queries(QUERIES)
    ref_q = card([f"query: {x}" for x in QUERIES], 24)
    np.testing.assert_allclose(q, ref_q, atol=1e-5, rtol=0)
    texts, titles = [p[0] for p in PASSAGES], [p[1] for p in PASSAGES]
    d = enc.encode_passages(texts, titles)
    ref_d = card([f"passage: {ti} {t}" if ti else f"passage: {t}" for t, ti in PASSAGES], 40)
    np.testing.assert_allclose(d, ref_d, atol=1e-5, rtol=0)
    assert enc.num_truncated >= 3  # LONG as query, and twice as a passage
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1, atol=1e-6)
    # the unmerged adapter (peft forward) gives the same vectors as the merged one
    np.testing.assert_allclose(card([f"query: {x}" for x in QUERIES[:3]], 24, card.unmerged), ref_q[:3], atol=1e-5)
    # a batch of one, sorted or not: same vectors
    ids = enc.tokenize([f"query: {x}" for x in QUERIES], 24)
    np.testing.assert_allclose(enc.embed_ids(ids, batch_size=1), q, atol=1e-5)
    np.testing.assert_allclose(enc.embed_ids(ids, batch_size=7, sort=False), q, atol=1e-5)
    # a token budget: batches of at most 60 padded tokens (a longer text alone), same vectors
    seen, forward = [], enc._forward
    enc._forward = lambda batch: (seen.append(len(batch) * max(map(len, batch))), forward(batch))[1]
    enc.max_batch_tokens = 60
    np.testing.assert_allclose(enc.embed_ids(ids, batch_size=7), q, atol=1e-5)
    assert len(seen) > 2 and max(seen) <= 60


def test_tokens_bos_truncation_keeps_eos(tiny_encoder, card):
    enc = RepLLaMAEncoder(tiny_encoder["lora"])
    tok = card.tok
    short, long_ = enc.tokenize(["query: paris", "query: " + LONG], 32)
    assert short == tok("query: paris</s>")["input_ids"]
    assert short[0] == tok.bos_token_id and short[-1] == tok.eos_token_id
    assert len(long_) == 32 and long_[0] == tok.bos_token_id and long_[-1] == tok.eos_token_id
    assert long_[:-1] == tok("query: " + LONG)["input_ids"][:31]
    assert enc.num_truncated == 1
    with pytest.raises(InputError, match="max length"):
        enc.tokenize(["x"], 1)


def test_passage_format_title_and_url(tiny_encoder):
    enc = RepLLaMAEncoder(tiny_encoder["lora"])
    assert enc.passage_texts(["body", "body", " body "], ["Title", None, ""]) == \
        ["passage: Title body", "passage: body", "passage: body"]
    # the document preset's fields (its 4096-d model is not loadable here)
    enc.preset = enc.preset.replace(passage_fields=["url", "title", "text"])
    assert enc.passage_texts(["body", "body"], ["T", None], url=["http://x.org/a", None]) == \
        ["passage: http://x.org/a T body", "passage: body"]
    n = enc.num_empty
    assert enc.passage_texts([""], [None]) == ["passage: "]
    assert enc.num_empty == n + 1
    with pytest.raises(InputError, match="empty query"):
        enc.encode_queries(["  "])


def test_presets_describe_released_models():
    presets = list_presets()
    p = find_preset("castorini/repllama-v1-7b-lora-passage")
    assert p is presets["castorini/repllama-v1-7b-lora-passage"] or p.name == "castorini/repllama-v1-7b-lora-passage"
    assert (p.base_model, p.query_prefix, p.passage_prefix) == ("meta-llama/Llama-2-7b-hf", "query: ", "passage: ")
    assert (p.query_max_length, p.passage_max_length, p.dimension, p.pooling, p.normalize, p.append_eos) == \
        (32, 156, 4096, "eos", True, True)
    assert p.passage_fields == ["title", "text"]
    doc = find_preset("castorini/repllama-v1-7b-lora-doc")
    assert doc.passage_fields[0] == "url" and doc.passage_max_length == 2048 and doc.model.endswith("lora-doc")
    beir = find_preset("repllama-v1-7b-lora-passage-beir")
    assert (beir.query_max_length, beir.passage_max_length, beir.model) == (512, 512, p.model)
    assert find_preset("repllama-v1-7b-lora-passage").name == p.name  # alias
    assert find_preset("some/other-model") is None
    for f in os.listdir(os.path.join(REPO, "encoders")):
        assert f.endswith(".yaml")


def test_preset_file_with_another_recipe(tiny_encoder, card, tmp_path):
    """A new decoder is a new YAML: prefixes, lengths and pooling come from it."""
    path = tmp_path / "mine.yaml"
    path.write_text(f"model: {tiny_encoder['lora']}\nquery_prefix: 'question: '\npassage_prefix: ''\n"
                    f"query_max_length: 16\npooling: mean\nnormalize: false\ndimension: 64\n")
    enc = RepLLaMAEncoder(str(path))
    assert enc.from_preset and enc.preset.name == "mine"
    q = enc.encode_queries(["paris"])
    ids = card.tok("question: paris</s>", return_tensors="pt")
    with torch.no_grad():
        h = enc.model(**ids).last_hidden_state[0].mean(0).numpy()
    np.testing.assert_allclose(q[0], h, atol=1e-5)
    # a checkpoint directory's own repllama_preset.yaml (as training writes it; paths from before a move)
    import shutil
    ckpt = tmp_path / "moved-checkpoint"
    shutil.copytree(tiny_encoder["lora"], ckpt)
    (ckpt / "repllama_preset.yaml").write_text("name: trained\nmodel: /old/place\nquery_prefix: 'question: '\n"
                                               "query_max_length: 16\npooling: mean\nnormalize: false\n")
    enc2 = RepLLaMAEncoder(str(ckpt))
    assert enc2.from_preset and enc2.preset.model == str(ckpt)
    np.testing.assert_allclose(enc2.encode_queries(["paris"]), q, atol=1e-5)
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"model: {tiny_encoder['lora']}\ndimension: 4096\n")
    with pytest.raises(InputError, match="dimension 4096"):
        RepLLaMAEncoder(str(bad))
    bad.write_text("model: x\npooling: cls\n")
    with pytest.raises(InputError, match="pooling"):
        find_preset(str(bad))
    bad.write_text("model: x\nmax_len: 3\n")
    with pytest.raises(InputError, match="unknown key"):
        find_preset(str(bad))
    bad.write_text("model: x\nkind: retriever\n")
    with pytest.raises(InputError, match="kind 'retriever'"):
        find_preset(str(bad))
    bad.write_text("model: x\nkind: reranker\ndepth: 0\n")
    with pytest.raises(InputError, match="depth"):
        find_preset(str(bad))


def test_encoder_refuses_a_reranker_preset(tiny_encoder, tmp_path):
    """A RankLLaMA preset (explicit ``kind``, or ``rankllama`` in its name) is not silently used as an encoder."""
    assert find_preset("castorini/rankllama-v1-7b-lora-passage").kind == "reranker"
    assert find_preset("castorini/repllama-v1-7b-lora-passage").kind == "encoder"
    with pytest.raises(InputError, match="reranker preset, not an encoder"):
        RepLLaMAEncoder("castorini/rankllama-v1-7b-lora-passage")
    path = tmp_path / "scorer.yaml"
    path.write_text(f"model: {tiny_encoder['lora']}\nkind: reranker\npooling: last\n")
    with pytest.raises(InputError, match="reranker preset"):
        RepLLaMAEncoder(str(path))
    path.write_text(f"name: rankllama-but-dense\nmodel: {tiny_encoder['lora']}\nkind: encoder\n")
    assert RepLLaMAEncoder(str(path)).preset.kind == "encoder"  # explicit kind beats the name


def test_missing_adapter_or_base(tiny_encoder, tmp_path):
    with pytest.raises(InputError, match="not found|cannot load"):
        RepLLaMAEncoder(str(tmp_path / "no-such-adapter"))
    import json
    import shutil
    orphan = tmp_path / "orphan"
    shutil.copytree(tiny_encoder["lora"], orphan)
    cfg = json.loads((orphan / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(tmp_path / "deleted-base")
    (orphan / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="base model .* not found"):
        RepLLaMAEncoder(str(orphan))
    # an explicit base fixes it
    enc = RepLLaMAEncoder(str(orphan), base_model=tiny_encoder["base"])
    assert enc.dimension == 64


def test_pyserini_classes(tiny_encoder, card):
    qe = RepLLaMAQueryEncoder(encoder_dir=tiny_encoder["lora"], tokenizer_name=None, device="cpu", prefix=None,
                              fp16=False, pooling="cls", l2_norm=False, multimodal=False)  # extras ignored
    assert qe.has_model and qe.dimension == 64
    one = qe.encode("what is the capital of france")
    assert one.shape == (64,) and one.dtype == np.float32
    batch = qe.encode_batch(QUERIES[:3])
    np.testing.assert_allclose(batch[0], one, atol=1e-6)
    np.testing.assert_allclose(batch, card([f"query: {x}" for x in QUERIES[:3]], 32), atol=1e-5)
    qp = RepLLaMAQueryEncoder(encoder_dir=tiny_encoder["lora"], prefix="question:")  # Pyserini's --query-prefix
    np.testing.assert_allclose(qp.encode("paris"), card(["question: paris"], 32)[0], atol=1e-5)

    de = RepLLaMADocumentEncoder(model_name=tiny_encoder["lora"], device="cpu")
    texts, titles = [p[0] for p in PASSAGES], [p[1] for p in PASSAGES]
    out = de.encode(texts=texts, titles=titles, max_length=40, fp16=False, add_sep=False)
    ref = card([f"passage: {ti} {t}" if ti else f"passage: {t}" for t, ti in PASSAGES], 40)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    with pytest.raises(InputError):
        RepLLaMAQueryEncoder()


def test_pyserini_encode_without_titles_warns_once(tiny_encoder, caplog):
    """pyserini.encode's encoder section defaults to --fields text: say so instead of silently dropping titles."""
    de = RepLLaMADocumentEncoder(model_name=tiny_encoder["lora"], device="cpu")
    with caplog.at_level("WARNING", logger="repllama_pyserini.encoder"):
        de.encode(texts=["a"], titles=["t"], max_length=16)
        assert not caplog.records
        de.encode(texts=["a"], max_length=16)
        de.encode(texts=["b"], max_length=16)
    assert len(caplog.records) == 1 and "--fields title text" in caplog.records[0].getMessage()


def test_pyserini_name_and_class_resolution(tiny_encoder, tmp_path, monkeypatch):
    """Pyserini picks our classes: by name substring ('repllama' in the hub id or a local path) and by
    --encoder-class repllama, which its argparse accepts."""
    import argparse

    import pyserini.encode as pe
    from pyserini.encode.__main__ import init_encoder
    from pyserini.search.faiss.__main__ import define_dsearch_args, init_query_encoder

    assert list(pe.query_encoder_class_map)[0] == "repllama"
    assert pe.query_encoder_class_map["repllama"] is RepLLaMAQueryEncoder
    assert pe.document_encoder_class_map["repllama"] is RepLLaMADocumentEncoder

    calls = []

    class Recording(RepLLaMAQueryEncoder):
        def __init__(self, **kwargs):
            calls.append(kwargs)

    monkeypatch.setitem(pe.query_encoder_class_map, "repllama", Recording)
    enc = init_query_encoder("castorini/repllama-v1-7b-lora-passage", None, None, "t", None, "cpu", 256, "cls",
                             False, None)
    assert isinstance(enc, Recording) and calls[0]["encoder_dir"] == "castorini/repllama-v1-7b-lora-passage"
    monkeypatch.undo()

    local = tmp_path / "my-repllama-tiny"
    os.symlink(tiny_encoder["lora"], local)
    enc = init_query_encoder(str(local), None, None, "t", None, "cpu", 256, "cls", False, None)
    assert isinstance(enc, RepLLaMAQueryEncoder) and enc.dimension == 64
    enc = init_query_encoder(tiny_encoder["lora"], "repllama", None, "t", None, "cpu", 256, "cls", False, None)
    assert isinstance(enc, RepLLaMAQueryEncoder)
    denc = init_encoder(tiny_encoder["lora"], "repllama", "cpu", "cls", False, None, False, False)
    assert isinstance(denc, RepLLaMADocumentEncoder)

    parser = argparse.ArgumentParser()
    define_dsearch_args(parser)
    assert parser.parse_args(["--index", "x", "--encoder-class", "repllama"]).encoder_class == "repllama"


def test_index_dimension_mismatch(tiny_encoder, tmp_path):
    import faiss
    qe = RepLLaMAQueryEncoder(encoder_dir=tiny_encoder["lora"])
    check_index_dimension(64, qe)
    with pytest.raises(InputError, match="dimension mismatch.*32-d.*64-d"):
        check_index_dimension(32, qe)
    index = faiss.IndexFlatIP(32)
    index.add(np.zeros((2, 32), dtype=np.float32))
    faiss.write_index(index, str(tmp_path / "index"))
    (tmp_path / "docid").write_text("a\nb\n")
    assert install_faiss_dimension_check()
    from pyserini.search.faiss import FaissSearcher
    with pytest.raises(InputError, match="dimension mismatch"):
        FaissSearcher(str(tmp_path), qe)


def test_released_preset_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match="repllama-v1-7b-lora-passage"):
        RepLLaMAQueryEncoder(encoder_dir="castorini/repllama-v1-7b-lora-passage")


def test_presets_from_another_directory(tiny_encoder, tmp_path, monkeypatch):
    """An installed package finds presets in its presets/ dir; $REPLLAMA_PYSERINI_PRESETS adds more."""
    (tmp_path / "tiny.yaml").write_text(f"name: org/tiny-retriever\nmodel: {tiny_encoder['lora']}\n"
                                        f"passage_max_length: 20\n")
    monkeypatch.setenv("REPLLAMA_PYSERINI_PRESETS", str(tmp_path))
    enc = RepLLaMADocumentEncoder(model_name="org/tiny-retriever")
    assert enc.encoder.from_preset and enc.encoder.preset.passage_max_length == 20
    assert len(enc.encoder.tokenize(["passage: " + LONG], enc.encoder.preset.passage_max_length)[0]) == 20


def test_pyserini_default_max_length_is_not_an_override(monkeypatch):
    from repllama_pyserini.encoder import _explicit_pyserini_max_length
    script = "/x/site-packages/pyserini/encode/__main__.py"
    monkeypatch.setattr("sys.argv", [script, "encoder", "--encoder", "m"])
    assert _explicit_pyserini_max_length(256) is None
    monkeypatch.setattr("sys.argv", [script, "encoder", "--max-length", "256"])
    assert _explicit_pyserini_max_length(256) == 256
    monkeypatch.setattr("sys.argv", ["other.py"])
    assert _explicit_pyserini_max_length(256) == 256


def test_unreachable_hub_switches_to_offline_mode(monkeypatch, capsys):
    """A probe that cannot connect turns on offline mode once, so uncached models fail at once, not after retries."""
    import socket

    from huggingface_hub import constants

    from repllama_pyserini import models
    monkeypatch.setattr(models, "_HUB_CHECKED", False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    calls = []

    def refuse(*a, **k):
        calls.append(a)
        raise OSError("unreachable")
    monkeypatch.setattr(socket, "create_connection", refuse)
    models.hub_guard("some-org/some-model")
    models.hub_guard("another/model")  # probed once per process
    assert len(calls) == 1 and constants.HF_HUB_OFFLINE and "unreachable" in capsys.readouterr().err
    with pytest.raises(InputError, match="cannot load tokenizer some-org/uncached-model"):
        models.load_tokenizer("some-org/uncached-model")
