"""Shipping an adapter (train/export.py): fp16 weights, a portable base name, no tokenizer copy; the exported
directory loads like the trained one and gives the same embeddings and scores up to fp16 rounding of the LoRA
weights."""
import json
import os

import numpy as np
import pytest
import yaml

from repllama_pyserini.cli import InputError
from repllama_pyserini.train.export import export

QUERIES = ["retrieval with large language models", "the quick brown fox"]
DOCS = [{"title": "lora", "text": "retrieval with large language models and lora"},
        {"title": "", "text": "the lazy dog"}]


def _trained_dir(tiny, tmp_path, kind):
    """A copy of the tiny adapter with the preset.yaml train/ writes next to it."""
    import shutil
    out = tmp_path / f"trained-{kind}"
    shutil.copytree(tiny["lora"], out)
    preset = dict(kind=kind, name=out.name, model=str(out), base_model=tiny["base"], tokenizer=str(out),
                  query_prefix="query: ")
    preset.update(passage_prefix="passage: ", passage_max_length=32, pooling="eos", normalize=True, append_eos=True)\
        if kind == "encoder" else preset.update(document_prefix="document: ", max_length=64, pair_format="tevatron",
                                                append_eos=True)
    for f in os.listdir(tiny["base"]):  # train/ saves the tokenizer with the adapter
        if f.startswith(("tokenizer", "special_tokens")):
            shutil.copy(os.path.join(tiny["base"], f), out)
    (out / "preset.yaml").write_text(yaml.safe_dump(preset))
    return str(out)


@pytest.fixture
def named_base(monkeypatch, tiny_encoder):
    """``smollm2-135m-instruct`` resolved to a given tiny base instead of the converted SmolLM2."""
    import repllama_pyserini.smollm as smollm
    holder = {}
    monkeypatch.setattr(smollm, "smollm2_path", lambda *a, **k: holder["base"])
    return holder


def test_exported_encoder_equals_the_trained_one(tiny_encoder, tmp_path, named_base, one_thread):
    from repllama_pyserini.dense.encoder import RepLLaMAEncoder
    named_base["base"] = tiny_encoder["base"]
    src = _trained_dir(tiny_encoder, tmp_path, "encoder")
    dst = str(tmp_path / "models" / "tiny-repllama")
    size = export(src, dst, base_name="smollm2-135m-instruct")
    assert sorted(os.listdir(dst)) == ["adapter_config.json", "adapter_model.safetensors", "preset.yaml"]
    assert size == os.path.getsize(os.path.join(dst, "adapter_model.safetensors"))
    assert json.load(open(os.path.join(dst, "adapter_config.json")))["base_model_name_or_path"] == \
        "smollm2-135m-instruct"
    from safetensors.torch import load_file
    assert {str(v.dtype) for v in load_file(os.path.join(dst, "adapter_model.safetensors")).values()} == \
        {"torch.float16"}
    a, b = RepLLaMAEncoder(src), RepLLaMAEncoder(dst)
    for fa, fb in ((a.encode_queries(QUERIES), b.encode_queries(QUERIES)),
                   (a.encode_passages([d["text"] for d in DOCS], [d["title"] for d in DOCS]),
                    b.encode_passages([d["text"] for d in DOCS], [d["title"] for d in DOCS]))):
        assert np.abs(fa - fb).max() < 5e-3 and (fa * fb).sum(1).min() > 0.9999
    with pytest.raises(InputError, match="exists"):
        export(src, dst)
    with open(os.path.join(dst, "README.md"), "w") as f:
        f.write("model card")
    export(src, dst, base_name="smollm2-135m-instruct", overwrite=True)
    assert open(os.path.join(dst, "README.md")).read() == "model card"  # a re-export keeps the card
    with pytest.raises(InputError, match="over --max-mb"):
        export(src, dst, max_mb=0.001, overwrite=True)
    assert os.path.isfile(os.path.join(dst, "preset.yaml"))  # a refused export leaves the old one whole


def test_exported_reranker_keeps_its_score_head(tiny_reranker, tmp_path, named_base, one_thread):
    from repllama_pyserini.formats.corpus import Doc
    from repllama_pyserini.rerank.rankllama import RankLLaMAReranker
    named_base["base"] = tiny_reranker["base"]
    src = _trained_dir(tiny_reranker, tmp_path, "reranker")
    dst = str(tmp_path / "models" / "tiny-rankllama")
    export(src, dst, base_name="smollm2-135m-instruct")
    docs = [Doc(title=d["title"], text=d["text"]) for d in DOCS]
    a = RankLLaMAReranker.from_pretrained(src).score_pairs(QUERIES, docs)
    b = RankLLaMAReranker.from_pretrained(dst).score_pairs(QUERIES, docs)
    assert np.allclose(a, b, atol=5e-3 * max(1.0, np.abs(a).max()))
    assert len(set(np.round(a, 3))) == len(a)  # the pairs score differently: the head is not a constant
