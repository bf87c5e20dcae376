"""The adapters shipped in ``models/`` load by directory (their base named ``smollm2-135m-instruct``) and compute
what their model cards say, checked against references written from the published recipes with transformers + peft
directly: RepLLaMA's ``query: {q}`` + EOS, last token's hidden state, L2-normalised; Tevatron's RankLLaMA string
``query:  {q} document:  {title} {text}`` + EOS, the score head's logit at the last token. Real SciFact texts.
Their retrieval scores are pinned by the slow regression beir-v1.0.0-scifact.smollm2-135m-scifact-shipped.cpu."""
import os

import numpy as np
import pytest
import torch

from repllama_pyserini.formats.collections import REPO_ROOT

RETRIEVER = os.path.join(REPO_ROOT, "models", "smollm2-135m-repllama-scifact")
RERANKER = os.path.join(REPO_ROOT, "models", "smollm2-135m-rankllama-scifact")
QUERIES = ["0-dimensional biomaterials show inductive properties.",
           "ALDH1 expression is associated with poorer prognosis for breast cancer primary tumors."]
DOCS = [("Microstructured and nanostructured biomaterials", "Biomaterials with micro- and nanoscale features can "
         "induce cell responses, such as osteoinduction, without added growth factors."),
        ("ALDH1 is a marker of normal and malignant human mammary stem cells", "Application of stem cell biology to "
         "breast cancer research has been limited by the lack of simple methods for identification.")]


@pytest.fixture(scope="module")
def smollm2():
    pytest.importorskip("gguf")
    from repllama_pyserini import smollm
    from repllama_pyserini.cli import InputError
    try:
        return smollm.smollm2_path()
    except InputError as e:
        pytest.skip(str(e))


def test_shipped_retriever_is_the_repllama_recipe(smollm2):
    from peft import PeftModel
    from transformers import AutoModel, AutoTokenizer
    from repllama_pyserini.dense.encoder import RepLLaMAEncoder
    enc = RepLLaMAEncoder(RETRIEVER)
    tok = AutoTokenizer.from_pretrained(smollm2)
    model = PeftModel.from_pretrained(AutoModel.from_pretrained(smollm2), RETRIEVER).merge_and_unload().eval()

    def reference(text, max_len):
        ids = tok(text, add_special_tokens=True, truncation=True, max_length=max_len - 1)["input_ids"]
        with torch.no_grad():
            h = model(input_ids=torch.tensor([ids + [tok.eos_token_id]])).last_hidden_state[0, -1]
        return torch.nn.functional.normalize(h, dim=-1).numpy()
    q = enc.encode_queries(QUERIES)
    p = enc.encode_passages([t for _, t in DOCS], [ti for ti, _ in DOCS])
    np.testing.assert_allclose(q, [reference(f"query: {x}", 32) for x in QUERIES], atol=2e-4)
    np.testing.assert_allclose(p, [reference(f"passage: {ti} {t}", 64) for ti, t in DOCS], atol=2e-4)
    assert (q @ p.T).argmax(1).tolist() == [0, 1]  # each claim finds its own abstract


def test_shipped_reranker_is_tevatrons_rankllama_pair(smollm2):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from repllama_pyserini.formats.corpus import Doc
    from repllama_pyserini.rerank.rankllama import RankLLaMAReranker
    ours = RankLLaMAReranker.from_pretrained(RERANKER)
    tok = AutoTokenizer.from_pretrained(smollm2)
    base = AutoModelForSequenceClassification.from_pretrained(smollm2, num_labels=1)
    base.config.pad_token_id = None  # one unpadded pair at a time: the logit at the last token (the EOS), as trained
    model = PeftModel.from_pretrained(base, RERANKER).merge_and_unload().eval()
    pairs = [(q, d) for q in QUERIES for d in DOCS]
    got = ours.score_pairs([q for q, _ in pairs], [Doc(title=ti, text=t) for _, (ti, t) in pairs])
    want = []
    for q, (ti, t) in pairs:
        ids = tok(f"query:  {q} document:  {ti} {t}", truncation=True, max_length=127)["input_ids"]
        with torch.no_grad():
            want.append(model(input_ids=torch.tensor([ids + [tok.eos_token_id]])).logits[0, 0].item())
    np.testing.assert_allclose(got, want, atol=2e-3)
    assert got[0] > got[1] and got[3] > got[2]  # each claim's own abstract scores higher
