"""Loss, pooling and gradients of the training models; trained weights read back identically by the inference
classes (RepLLaMAEncoder, RankLLaMAReranker, models.load_model)."""
import math
import os

import numpy as np
import pytest
import torch

from repllama_pyserini.formats import Doc, Passage
from repllama_pyserini.train.arguments import DataArguments, RerankerDataArguments, parse_args
from repllama_pyserini.train.data import RerankerCollator, RetrieverCollator
from repllama_pyserini.train.modeling import DenseModel, RerankerModel, contrastive_loss, gather_with_grad
from repllama_pyserini.templates import pool

QUERIES = ["what is the capital of france", "how do goldfish grow", "diffusion tensor imaging of the newborn brain"]
PASSAGES = [Passage("1", "Paris", "paris is the capital and most populous city of france"),
            Passage("2", "", "the quick brown fox jumps over the lazy dog"),
            Passage("3", "Goldfish", "goldfish grow in proportion to the size of their tank " * 30),
            Passage("4", "retrieval", "retrieval with large language models and lora"),
            Passage("5", "", "diffusion tensor imaging of the newborn brain white matter"),
            Passage("6", "x", "query passage document title text")]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: one thread is faster and leaves room for the others
    yield
    torch.set_num_threads(n)


def _reference_infonce(q, p, t):
    """Plain numpy InfoNCE: -mean_j log softmax(q_j . p / t)[j * group]."""
    q, p = np.asarray(q, dtype=np.float64), np.asarray(p, dtype=np.float64)
    g = len(p) // len(q)
    s = q @ p.T / t
    out = []
    for j in range(len(q)):
        m = s[j].max()
        out.append(-(s[j, j * g] - (m + math.log(np.exp(s[j] - m).sum()))))
    return float(np.mean(out))


def test_infonce_equals_reference_on_fixed_tensors():
    q = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.6, 0.8]])
    p = torch.tensor([[0.9, 0.1, 0.0], [0.0, 1.0, 0.0], [0.3, 0.3, 0.3], [0.0, 0.6, 0.8], [1.0, 0.0, 0.0],
                      [0.5, -0.5, 0.0]])
    for t in (1.0, 0.05, 0.01):
        assert contrastive_loss(q, p, t).item() == pytest.approx(_reference_infonce(q, p, t), rel=1e-5)
    # analytic case: orthonormal positives, zero negatives -> -log(e^(1/t) / (e^(1/t) + n_other))
    q = torch.eye(2)
    p = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    t = 0.5
    # query 0: scores [2, 0, 0, 0]; query 1: [0, 0, 2, 0]
    expected = -math.log(math.exp(2) / (math.exp(2) + 3))
    assert contrastive_loss(q, p, t).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="whole number of groups"):
        contrastive_loss(torch.eye(2), torch.eye(3), 1.0)


def test_gather_is_identity_without_distributed():
    t = torch.randn(3, 4, requires_grad=True)
    assert gather_with_grad(t) is t


def test_pooling_left_and_right_padding_agree():
    torch.manual_seed(0)
    h = torch.randn(2, 5, 4)
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert torch.equal(pool(h, right, "eos"), torch.stack([h[0, 2], h[1, 4]]))
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert torch.equal(pool(h, left, "last"), torch.stack([h[0, 4], h[1, 4]]))
    assert torch.allclose(pool(h, right, "mean")[0], h[0, :3].mean(0))


def _args(tiny, tmp_path, data_cls=DataArguments, extra=()):
    argv = ["--output_dir", str(tmp_path / "out"), "--model_name_or_path", tiny, "--lora_r", "4",
            "--lora_dropout", "0", "--train_group_size", "2", "--query_max_len", "16", "--passage_max_len", "24",
            "--temperature", "0.05", *extra]
    return parse_args(data_cls, argv)


def _features(group=2):
    return [(q, [PASSAGES[(2 * i + k) % len(PASSAGES)] for k in range(group)]) for i, q in enumerate(QUERIES)]


def test_dense_gradients_reach_only_lora_and_loss_matches_reference(tiny_encoder, tmp_path):
    from repllama_pyserini.models import load_tokenizer
    m, d, t = _args(tiny_encoder["base"], tmp_path)
    tok = load_tokenizer(tiny_encoder["base"])
    torch.manual_seed(0)
    model = DenseModel.build(m, t, tok)
    model.train()
    batch = RetrieverCollator(tok, d)(_features())
    out = model(**batch)
    assert out.scores.shape == (3, 6)
    ref = _reference_infonce(out.q_reps.detach(), out.p_reps.detach(), 0.05)
    assert out.loss.item() == pytest.approx(ref, rel=1e-5)
    out.loss.backward()
    names = [n for n, p in model.named_parameters() if p.grad is not None]
    assert names and all("lora_" in n for n in names)
    assert all(p.grad is None and not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)
    assert any(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)
    # every embedding is unit length (normalize)
    assert torch.allclose(out.p_reps.norm(dim=-1), torch.ones(6), atol=1e-5)


def test_reranker_gradients_reach_only_lora_and_head(tiny_reranker, tmp_path):
    from repllama_pyserini.models import load_tokenizer
    m, d, t = _args(tiny_reranker["base"], tmp_path, RerankerDataArguments, ["--train_group_size", "3"])
    tok = load_tokenizer(tiny_reranker["base"])
    model = RerankerModel.build(m, t, 3, tok)
    model.train()
    batch = RerankerCollator(tok, d)(_features(3))
    out = model(**batch)
    assert out.logits.shape == (3, 3)
    ref = float(torch.mean(-torch.log_softmax(out.logits.detach().double(), -1)[:, 0]))
    assert out.loss.item() == pytest.approx(ref, rel=1e-6)
    out.loss.backward()
    names = [n for n, p in model.named_parameters() if p.grad is not None]
    assert any("lora_" in n for n in names) and any("score" in n for n in names)
    assert all("lora_" in n or "modules_to_save" in n for n in names)


def _perturb_lora(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n or "modules_to_save" in n:
                p.add_(torch.randn(p.shape, generator=g) * 0.2)


def tevatron_retriever_ids(tok, texts, max_len):
    """Tevatron's retriever collator, written out: the tokenizer's specials, truncation to max_len - 1, EOS."""
    return [tok(t, truncation=True, max_length=max_len - 1)["input_ids"] + [tok.eos_token_id] for t in texts]


def tevatron_pair_ids(tok, query, p, max_len, eos):
    """tevatron.reranker.dataset.format_pair + RerankerTrainCollator, written out."""
    title = p.title.replace("-", " ").strip()
    text = f"query:  {query} document:  {title} {p.text}".strip()
    ids = tok(text, truncation=True, max_length=max_len - 1 if eos else max_len)["input_ids"]
    return ids + [tok.eos_token_id] if eos else ids


def test_retriever_inputs_are_tevatrons(tiny_encoder, tmp_path):
    """Tevatron's RepLLaMA flags give Tevatron's inputs: ``query_prefix + query`` and ``passage_prefix + title + ' '
    + text`` (titled passages; an empty title is left out, as Tevatron's own encoder does), EOS last, right padding
    to a multiple of pad_to_multiple_of, the attention mask over the real tokens."""
    from repllama_pyserini.models import load_tokenizer
    m, d, t = _args(tiny_encoder["base"], tmp_path, extra=["--append_eos_token", "--query_prefix", "query: ",
                                                             "--passage_prefix", "passage: ", "--pad_to_multiple_of", "8"])
    tok = load_tokenizer(tiny_encoder["base"])
    feats = _features()
    batch = RetrieverCollator(tok, d)(feats)
    q_ids = tevatron_retriever_ids(tok, ["query: " + q for q, _ in feats], 16)
    p_ids = tevatron_retriever_ids(tok, [f"passage: {p.title} {p.text}" if p.title else f"passage: {p.text}"
                                         for _, ps in feats for p in ps], 24)
    for got, want in ((batch["query"], q_ids), (batch["passage"], p_ids)):
        width = -(-max(map(len, want)) // 8) * 8
        assert got["input_ids"].shape == (len(want), width)
        for row, mask, ids in zip(got["input_ids"].tolist(), got["attention_mask"].tolist(), want):
            assert row[:len(ids)] == ids and mask == [1] * len(ids) + [0] * (width - len(ids))
            assert all(x == tok.pad_token_id for x in row[len(ids):])


@pytest.mark.parametrize("eos", [True, False])
def test_reranker_inputs_are_tevatrons(tiny_reranker, tmp_path, eos):
    """Tevatron's RankLLaMA flags (``--query_prefix "query: " --passage_prefix "document: " [--append_eos_token]``)
    give Tevatron's single-string inputs, the empty-title spacing included."""
    from repllama_pyserini.models import load_tokenizer
    extra = ["--train_group_size", "3", "--rerank_max_len", "40", "--query_prefix", "query: ", "--passage_prefix",
             "document: "] + (["--append_eos_token"] if eos else [])
    m, d, t = _args(tiny_reranker["base"], tmp_path, RerankerDataArguments, extra)
    tok = load_tokenizer(tiny_reranker["base"])
    feats = _features(3)
    batch = RerankerCollator(tok, d)(feats)["pair"]
    want = [tevatron_pair_ids(tok, q, p, 40, eos) for q, ps in feats for p in ps]
    assert [row[:len(ids)] for row, ids in zip(batch["input_ids"].tolist(), want)] == want
    assert batch["attention_mask"].sum(1).tolist() == [len(ids) for ids in want]
    assert any(not p.title for _, ps in feats for p in ps)  # the empty-title case is in the batch


def test_trained_encoder_is_read_back_identically_by_the_inference_encoder(tiny_encoder, tmp_path):
    """Saved adapter + preset -> RepLLaMAEncoder gives the training model's embeddings (same tokens, pooling)."""
    from repllama_pyserini.dense import RepLLaMAEncoder
    from repllama_pyserini.models import load_model, load_tokenizer
    m, d, t = _args(tiny_encoder["base"], tmp_path)
    tok = load_tokenizer(tiny_encoder["base"])
    model = DenseModel.build(m, t, tok)
    _perturb_lora(model)
    model.eval()
    out_dir = str(tmp_path / "saved")
    model.save(out_dir)
    tok.save_pretrained(out_dir)
    enc = RepLLaMAEncoder(out_dir, passage_max_length=d.passage_max_len, query_max_length=d.query_max_len,
                          device="cpu")
    with torch.no_grad():
        batch = RetrieverCollator(tok, d)([(q, PASSAGES[:2]) for q in QUERIES])
        q_train = model.encode(batch["query"]).numpy()
        p_train = model.encode(RetrieverCollator(tok, d)([(QUERIES[0], PASSAGES)])["passage"]).numpy()
    q_inf = enc.encode_queries(QUERIES)
    p_inf = enc.encode_passages([p.text for p in PASSAGES], [p.title for p in PASSAGES])
    np.testing.assert_allclose(q_train, q_inf, atol=2e-5)
    np.testing.assert_allclose(p_train, p_inf, atol=2e-5)
    # the adapter names its base: models.load_model finds it
    merged, resolved = load_model(out_dir, kind="encoder")
    assert resolved.base == os.path.abspath(tiny_encoder["base"]) and resolved.adapter == out_dir


@pytest.mark.parametrize("pair_format", ["tevatron", "rankllama"])
def test_trained_reranker_is_read_back_identically_by_rankllama(tiny_reranker, tmp_path, pair_format):
    """The preset training writes records the pair format: RankLLaMAReranker scores the very inputs trained on."""
    from repllama_pyserini.models import load_tokenizer
    from repllama_pyserini.rerank import RankLLaMAReranker
    from repllama_pyserini.train.trainer import write_trained_preset
    extra = ["--train_group_size", "3", "--rerank_max_len", "40", "--pair_format", pair_format] + \
        (["--append_eos_token"] if pair_format == "tevatron" else [])
    m, d, t = _args(tiny_reranker["base"], tmp_path, RerankerDataArguments, extra)
    tok = load_tokenizer(tiny_reranker["base"])
    model = RerankerModel.build(m, t, 3, tok)
    _perturb_lora(model)
    model.eval()
    out_dir = str(tmp_path / "saved")
    model.save(out_dir)
    tok.save_pretrained(out_dir)
    write_trained_preset(out_dir, "reranker", m, d, model)
    feats = _features(3)
    with torch.no_grad():
        batch = RerankerCollator(tok, d)(feats)["pair"]
        train_scores = model.score(batch).numpy()
    rr = RankLLaMAReranker.from_pretrained(out_dir, device="cpu")
    assert (rr.template.format, rr.template.max_length, rr.template.append_eos) == (pair_format, 40,
                                                                                   pair_format == "tevatron")
    qs = [q for q, ps in feats for _ in ps]
    docs = [Doc(p.title, p.text) for _, ps in feats for p in ps]
    ids = rr.encode_pairs(qs, docs)
    assert ids == [row[:n] for row, n in zip(batch["input_ids"].tolist(), batch["attention_mask"].sum(1).tolist())]
    if pair_format == "rankllama":  # the model card's pair
        assert ids == [tok(f"query: {q}", f"document: {' '.join(x for x in (p.title, p.text) if x)}",
                           truncation="only_second", max_length=40)["input_ids"] for q, ps in feats for p in ps]
    # float32: merged vs unmerged LoRA, masked vs plain causal attention kernels
    np.testing.assert_allclose(train_scores, np.array(rr.score_pairs(qs, docs)), atol=2e-4)


def test_reranker_driver_output_loads_in_rankllama(tiny_reranker, tmp_path):
    import json
    from repllama_pyserini.rerank import RankLLaMAReranker
    from repllama_pyserini.train.reranker import main
    data = tmp_path / "train.jsonl"
    with open(data, "w") as f:
        for i, q in enumerate(QUERIES * 3):
            f.write(json.dumps({"query_id": str(i), "query": q,
                                "positive_passages": [PASSAGES[i % 6].__dict__],
                                "negative_passages": [PASSAGES[(i + k) % 6].__dict__ for k in (1, 2, 3)]}) + "\n")
    out = str(tmp_path / "rr")
    trainer = main(["--output_dir", out, "--model_name_or_path", tiny_reranker["base"], "--dataset_name", str(data),
                    "--lora_r", "4", "--train_group_size", "4", "--rerank_max_len", "48",
                    "--per_device_train_batch_size", "3", "--max_steps", "2", "--logging_steps", "1",
                    "--save_strategy", "no", "--use_cpu", "True", "--append_eos_token"])
    assert len([h["loss"] for h in trainer.state.log_history if "loss" in h]) == 2
    cfg = json.load(open(os.path.join(out, "adapter_config.json")))
    assert cfg["task_type"] == "SEQ_CLS" and "score" in (cfg["modules_to_save"] or [])
    rr = RankLLaMAReranker.from_pretrained(out, device="cpu")  # its own preset.yaml
    t = rr.template
    assert (t.format, t.max_length, t.query_prefix, t.document_prefix, t.append_eos) == \
        ("tevatron", 48, "query: ", "document: ", True)
    model = trainer.model.eval()
    with torch.no_grad():
        trained = model.score(RerankerCollator(trainer.processing_class, trainer.data_collator.args)(
            [(QUERIES[0], [PASSAGES[0], PASSAGES[1]])])["pair"]).tolist()
    np.testing.assert_allclose(rr.score_pairs([QUERIES[0]] * 2, [Doc(PASSAGES[0].title, PASSAGES[0].text),
                                                                 Doc(PASSAGES[1].title, PASSAGES[1].text)]),
                               trained, atol=2e-5)
