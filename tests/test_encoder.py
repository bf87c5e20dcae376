"""RepLLaMA encoders: equality with the model-card recipe, presets, Pyserini registration, bad input."""
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from repllama_pyserini import plugin
from repllama_pyserini.cli import InputError
from repllama_pyserini.dense import RepLLaMAEncoder
from repllama_pyserini.dense.pyserini_encoders import RepLLaMADocumentEncoder, RepLLaMAQueryEncoder
from repllama_pyserini.presets import find_preset, list_presets, resolve
from repllama_pyserini.templates import tokenize

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
def test_queries_and_passages_equal_model_card(tiny_encoder, card, padding_side, monkeypatch):
    monkeypatch.setenv("REPLLAMA_PYSERINI_CPU_LINEAR", "onednn")  # forced: "auto" keeps torch's where it is faster
    enc = RepLLaMAEncoder(tiny_encoder["lora"], padding_side=padding_side, batch_size=3, query_max_length=24,
                          passage_max_length=40)
    ck = enc.identity()["checkpoint"]
    assert ck["model"] == tiny_encoder["lora"] and ck["base_model"] == tiny_encoder["base"] and ck["model_weights"]
    from torch.utils.mkldnn import MkldnnLinear  # oneDNN linears (models.onednn_linears)
    assert sum(isinstance(m, MkldnnLinear) for m in enc.model.modules()) == 7 * enc.model.config.num_hidden_layers
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
    ids, _ = tokenize(enc.tokenizer, [f"query: {x}" for x in QUERIES], 24)
    np.testing.assert_allclose(enc.embed_ids(ids, batch_size=1), q, atol=1e-5)
    np.testing.assert_allclose(enc.embed_ids(ids, batch_size=7), q, atol=1e-5)
    # a token budget: batches of at most 60 padded tokens (a longer text alone), same vectors
    seen, forward = [], enc.forward
    enc.forward = lambda batch: (seen.append(len(batch) * max(map(len, batch))), forward(batch))[1]
    enc.max_batch_tokens = 60
    np.testing.assert_allclose(enc.embed_ids(ids, batch_size=7), q, atol=1e-5)
    assert len(seen) > 2 and max(seen) <= 60


def test_tokens_bos_truncation_keeps_eos(card):
    tok = card.tok
    (short, long_), truncated = tokenize(tok, ["query: paris", "query: " + LONG], 32)
    assert short == tok("query: paris</s>")["input_ids"]
    assert short[0] == tok.bos_token_id and short[-1] == tok.eos_token_id
    assert len(long_) == 32 and long_[0] == tok.bos_token_id and long_[-1] == tok.eos_token_id
    assert long_[:-1] == tok("query: " + LONG)["input_ids"][:31]
    assert truncated == 1
    with pytest.raises(InputError, match="max length"):
        tokenize(tok, ["x"], 1)


def test_passage_format_title_and_url(tiny_encoder, card):
    from repllama_pyserini.formats import Doc
    enc = RepLLaMAEncoder(tiny_encoder["lora"])
    t = enc.passage_template
    assert [t.passage_text(Doc(ti, x)) for x, ti in [("body", "Title"), ("body", ""), (" body ", "")]] == \
        ["passage: Title body", "passage: body", "passage: body"]
    # the document preset's fields: url, title, text (its 4096-d model is not loadable here)
    doc = find_preset("castorini/repllama-v1-7b-lora-doc").passage_template()
    assert [doc.passage_text(d) for d in (Doc("T", "body", "http://x.org/a"), Doc("", "body"))] == \
        ["passage: http://x.org/a T body", "passage: body"]
    n = enc.num_empty
    np.testing.assert_allclose(enc.encode_passages([""], [None]), card(["passage: "], 156), atol=1e-5)
    assert enc.num_empty == n + 1
    with pytest.raises(InputError, match="empty query"):
        enc.encode_queries(["  "])


def test_presets_describe_released_models():
    p = find_preset("castorini/repllama-v1-7b-lora-passage")
    assert p.name in list_presets() and p.kind == "encoder"
    assert (p.base_model, p.query_prefix, p.passage_prefix) == ("meta-llama/Llama-2-7b-hf", "query: ", "passage: ")
    assert (p.query_max_length, p.passage_max_length, p.dimension, p.pooling, p.normalize, p.append_eos) == \
        (32, 156, 4096, "eos", True, True)
    assert p.passage_fields == ["title", "text"]
    doc = find_preset("castorini/repllama-v1-7b-lora-doc")
    assert doc.passage_fields[0] == "url" and doc.passage_max_length == 2048 and doc.model.endswith("lora-doc")
    beir = find_preset("repllama-v1-7b-lora-passage-beir")
    assert (beir.query_max_length, beir.passage_max_length, beir.model) == (512, 512, p.model)
    # the design card's short names
    assert find_preset("repllama").name == p.name and find_preset("REPLLAMA-v1-7b-lora-passage").name == p.name
    r = find_preset("rankllama")
    assert (r.name, r.kind, r.max_length, r.depth, r.pair_format, r.document_prefix) == \
        ("castorini/rankllama-v1-7b-lora-passage", "reranker", 512, 200, "rankllama", "document: ")
    assert find_preset("some/other-model") is None
    for f in os.listdir(os.path.join(REPO, "encoders")):
        assert f.endswith(".yaml")


def test_unknown_preset_names_list_the_presets():
    with pytest.raises(InputError, match=r"unknown encoder preset 'repllama-v1-7b-lora-pasage'; did you mean "
                                         r"'repllama-v1-7b-lora-passage'\? Presets: .*castorini/repllama-v1-7b-lora-doc"):
        resolve("repllama-v1-7b-lora-pasage", "encoder")
    with pytest.raises(InputError, match=r"unknown reranker preset 'rankllam'; did you mean 'rankllama'\?"):
        resolve("rankllam", "reranker")
    p, found = resolve("org/model", "encoder", passage_max_length=64)  # a hub id: the RepLLaMA defaults
    assert not found and (p.model, p.passage_max_length, p.query_prefix) == ("org/model", 64, "query: ")


def test_preset_file_with_another_recipe(tiny_encoder, card, tmp_path):
    """A new decoder is a new YAML: prefixes, lengths and pooling come from it."""
    path = tmp_path / "mine.yaml"
    path.write_text(f"kind: encoder\nmodel: {tiny_encoder['lora']}\nquery_prefix: 'question: '\npassage_prefix: ''\n"
                    f"query_max_length: 16\npooling: mean\nnormalize: false\ndimension: 64\n")
    enc = RepLLaMAEncoder(str(path))
    assert enc.from_preset and enc.preset.name == "mine"
    q = enc.encode_queries(["paris"])
    ids = card.tok("question: paris</s>", return_tensors="pt")
    with torch.no_grad():
        h = enc.model(**ids).last_hidden_state[0].mean(0).numpy()
    np.testing.assert_allclose(q[0], h, atol=1e-5)
    # a checkpoint directory's own preset.yaml (as training writes it; paths from before a move)
    import shutil
    ckpt = tmp_path / "moved-checkpoint"
    shutil.copytree(tiny_encoder["lora"], ckpt)
    (ckpt / "preset.yaml").write_text("kind: encoder\nname: trained\nmodel: /old/place\nquery_prefix: 'question: '\n"
                                      "query_max_length: 16\npooling: mean\nnormalize: false\n")
    enc2 = RepLLaMAEncoder(str(ckpt))
    assert enc2.from_preset and enc2.preset.model == str(ckpt)
    np.testing.assert_allclose(enc2.encode_queries(["paris"]), q, atol=1e-5)
    bad = tmp_path / "bad.yaml"
    for text, message in [(f"kind: encoder\nmodel: {tiny_encoder['lora']}\ndimension: 4096\n", "dimension 4096"),
                          ("kind: encoder\nmodel: x\npooling: cls\n", "pooling 'cls' is not one of"),
                          ("kind: encoder\nmodel: x\nmax_len: 3\n", r"unknown key\(s\) \['max_len'\] for a encoder"),
                          ("kind: encoder\nmodel: x\ndepth: 3\n", r"unknown key\(s\) \['depth'\]"),
                          ("model: x\nkind: retriever\n", "'kind' must be one of \\['encoder', 'reranker'\\], got "
                                                          "'retriever'"),
                          ("model: x\n", "'kind' must be one of"),
                          ("model: x\nkind: reranker\ndepth: 0\n", "depth must be an integer >= 1"),
                          ("model: x\nkind: reranker\npair_format: t5\n", "pair_format must be one of"),
                          ("kind: encoder\nquery_prefix: 'q: '\n", "'model' .* is required")]:
        bad.write_text(text)
        with pytest.raises(InputError, match=message):
            RepLLaMAEncoder(str(bad)) if "4096" in text else find_preset(str(bad))


def test_encoder_refuses_a_reranker_preset(tiny_encoder, tmp_path):
    with pytest.raises(InputError, match="is a reranker preset, not an encoder"):
        RepLLaMAEncoder("castorini/rankllama-v1-7b-lora-passage")
    path = tmp_path / "scorer.yaml"
    path.write_text(f"model: {tiny_encoder['lora']}\nkind: reranker\n")
    with pytest.raises(InputError, match="reranker preset"):
        RepLLaMAEncoder(str(path))


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
    with caplog.at_level("WARNING", logger="repllama_pyserini.dense.pyserini_encoders"):
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

    assert "repllama" in pe.query_encoder_class_map and "repllama" in pe.document_encoder_class_map
    # Pyserini's own keywords keep their precedence: a non-RepLLaMA model under a "repllama" folder stays theirs
    first = [k for k in pe.query_encoder_class_map if k in "/x/repllama-study/contriever-msmarco"][0]
    assert first == "contriever"  # Pyserini resolves a name by the first key it contains, in map order

    calls = []

    class Recording(RepLLaMAQueryEncoder):
        def __init__(self, **kwargs):
            calls.append(kwargs)

    monkeypatch.setitem(pe.query_encoder_class_map, "repllama", Recording)
    enc = init_query_encoder("castorini/repllama-v1-7b-lora-passage", None, None, "t", None, "cpu", 256, "cls",
                             False, None)
    assert isinstance(enc, Recording) and calls[0]["encoder_dir"] == "castorini/repllama-v1-7b-lora-passage"
    # the design card's spelling: --encoder repllama, no --encoder-class
    init_query_encoder("repllama", None, None, "t", None, "cpu", 256, "cls", False, None)
    assert calls[1]["encoder_dir"] == "repllama"
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
    from pyserini.search.faiss import FaissSearcher
    qe = RepLLaMAQueryEncoder(encoder_dir=tiny_encoder["lora"])
    plugin.check_index(str(tmp_path), 64, qe)
    with pytest.raises(InputError, match="dimension mismatch.*32-d.*64-d"):
        plugin.check_index(str(tmp_path), 32, qe)
    index = faiss.IndexFlatIP(32)
    index.add(np.zeros((2, 32), dtype=np.float32))
    faiss.write_index(index, str(tmp_path / "index"))
    (tmp_path / "docid").write_text("a\nb\n")
    with pytest.raises(InputError, match="dimension mismatch"):
        FaissSearcher(str(tmp_path), qe)


def test_released_preset_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match="repllama-v1-7b-lora-passage"):
        RepLLaMAQueryEncoder(encoder_dir="castorini/repllama-v1-7b-lora-passage")


def test_presets_from_another_directory(tiny_encoder, tmp_path, monkeypatch):
    """An installed package finds presets in its presets/ dir; $REPLLAMA_PYSERINI_PRESETS adds more."""
    (tmp_path / "tiny.yaml").write_text(f"kind: encoder\nname: org/tiny-retriever\nmodel: {tiny_encoder['lora']}\n"
                                        f"passage_max_length: 20\n")
    monkeypatch.setenv("REPLLAMA_PYSERINI_PRESETS", str(tmp_path))
    enc = RepLLaMADocumentEncoder(model_name="org/tiny-retriever")
    assert enc.encoder.from_preset and enc.encoder.preset.passage_max_length == 20


def test_pyserini_max_length_is_the_passage_length(tiny_encoder, card):
    """pyserini.encode's --max-length (its default 256 included) is the passage length, as for any Pyserini encoder;
    without one (Python use) the preset's length applies."""
    de = RepLLaMADocumentEncoder(model_name=tiny_encoder["lora"], device="cpu")
    np.testing.assert_allclose(de.encode(texts=[LONG], titles=["T"], max_length=20), card([f"passage: T {LONG}"], 20),
                               atol=1e-5)
    np.testing.assert_allclose(de.encode(texts=[LONG], titles=["T"]), card([f"passage: T {LONG}"], 156), atol=1e-5)


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


def _set_partitions(items):
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in _set_partitions(rest):
        for i in range(len(part)):
            yield part[:i] + [[first] + part[i]] + part[i + 1:]
        yield [[first]] + part


@pytest.mark.parametrize("seed", range(6))
def test_length_batches_minimise_padding_plus_call_cost(seed):
    """Against brute force over every partition of the rows (not only cuts of the sorted order)."""
    import random
    from repllama_pyserini.templates import length_batches
    rng = random.Random(seed)
    lengths = [rng.choice([3, 8, 9, 20, 40, 41, 120]) for _ in range(7)]
    size, cap, budget = rng.choice([2, 3, 7]), rng.choice([None, 80, 130]), rng.choice([0, 16, 60])

    def ok(batch):
        return len(batch) <= size and (not cap or len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= cap)

    def cost(batches):
        return sum(budget + len(b) * max(lengths[i] for i in b) for b in batches)
    best = min(cost(p) for p in _set_partitions(list(range(len(lengths)))) if all(ok(b) for b in p))
    got = length_batches(lengths, size, cap, call_cost=budget)
    assert sorted(i for b in got for i in b) == list(range(len(lengths)))
    assert all(ok(b) for b in got) and cost(got) == best, (lengths, size, cap, budget, got)
    assert all(lengths[b[0]] == max(lengths[i] for i in b) for b in got)  # longest first within a batch
    if budget == 0:  # no cost per pass: no padding at all
        assert all(len({lengths[i] for i in b}) == 1 for b in got)


@pytest.mark.parametrize("setting, faster, converted", [("torch", True, False), ("onednn", False, True),
                                                         ("auto", True, True), ("auto", False, False)])
def test_cpu_linear_switch(tiny_encoder, card, monkeypatch, setting, faster, converted):
    """REPLLAMA_PYSERINI_CPU_LINEAR: torch keeps torch's own linears, onednn converts them, auto converts them only
    when oneDNN times faster on the model's widest layer; every way gives the model card's vectors."""
    from torch.utils.mkldnn import MkldnnLinear
    from repllama_pyserini import models
    asked = []
    monkeypatch.setattr(models, "onednn_faster", lambda shape, threads: asked.append(shape) or faster)
    monkeypatch.setenv("REPLLAMA_PYSERINI_CPU_LINEAR", setting)
    enc = RepLLaMAEncoder(tiny_encoder["lora"], query_max_length=24)
    cfg = enc.model.config
    assert asked == ([(cfg.hidden_size, cfg.intermediate_size)] if setting == "auto" else [])
    assert sum(isinstance(m, MkldnnLinear) for m in enc.model.modules()) == \
        (7 * cfg.num_hidden_layers if converted else 0)
    np.testing.assert_allclose(enc.encode_queries(QUERIES), card([f"query: {x}" for x in QUERIES], 24), atol=1e-5)


def test_cpu_linear_choice_argument_over_environment(tiny_encoder, monkeypatch):
    """``onednn_linears(model, choice)`` decides over the environment (the benchmark's ablations use it)."""
    from torch.utils.mkldnn import MkldnnLinear
    from repllama_pyserini.models import onednn_linears
    monkeypatch.setenv("REPLLAMA_PYSERINI_CPU_LINEAR", "torch")
    enc = RepLLaMAEncoder(tiny_encoder["lora"], query_max_length=24)
    assert not any(isinstance(m, MkldnnLinear) for m in enc.model.modules())
    assert onednn_linears(enc.model, "onednn") == 7 * enc.model.config.num_hidden_layers
    assert sum(isinstance(m, MkldnnLinear) for m in enc.model.modules()) == 7 * enc.model.config.num_hidden_layers


def test_onednn_faster_times_real_layers():
    """The measurement itself: a bool for a real layer shape, cached per (shape, threads)."""
    from repllama_pyserini.models import onednn_faster
    onednn_faster.cache_clear()
    got = onednn_faster((64, 96), 1)
    assert isinstance(got, bool) and onednn_faster((64, 96), 1) is got and onednn_faster.cache_info().hits == 1
