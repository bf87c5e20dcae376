"""What a user would pick instead of this project, for the throughput benchmarks: sentence-transformers
(``SentenceTransformer`` with last-token pooling, ``CrossEncoder``) and ONNX Runtime (CPU) on a ``torch.onnx`` export.

Each factory loads once and returns ``f(batch) -> np.ndarray`` computing the project's reference outputs:
RepLLaMA embeddings (``prefix + text``, at most ``max_length - 1`` tokens, EOS appended, final hidden state at the
EOS, L2-normalised) and RankLLaMA scores (``tokenizer("query: q", "document: d", truncation="only_second")``, the
one-logit head at the last real token). ``python benchmarks/_competitors.py --check [--smollm2]`` compares every
callable with a one-text-at-a-time transformers reference.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from typing import List, Optional, Sequence

import numpy as np

TEXT_ONLY = {"text": {"method": "forward", "method_output_name": "last_hidden_state"}}


def _texts_for_ids(tok, ids: Sequence[Sequence[int]]):
    """Texts whose tokenisation (special tokens added) should give back ``ids``: the ids after the tokenizer's
    leading special tokens, decoded, EOS included as its token string. Returns (texts, rows that do not)."""
    lead = len(tok("a")["input_ids"]) - len(tok("a", add_special_tokens=False)["input_ids"])
    texts = [tok.decode(list(x[lead:]), skip_special_tokens=False, clean_up_tokenization_spaces=False) for x in ids]
    back = tok(texts)["input_ids"]
    return texts, [i for i, (a, b) in enumerate(zip(back, ids)) if list(a) != list(b)]


def st_encoder(model_dir: str, max_length: int, batch_size: int = 32, threads: Optional[int] = None):
    """sentence-transformers: Transformer (plain text modality: no chat template) + last-token Pooling + Normalize.
    ST cannot take token ids, so ids are decoded (EOS kept as its token string) and ST tokenizes them again. Not
    exact where truncation cut a UTF-8 character (decoded as U+FFFD: SmolLM2, SciFact + MS MARCO, ~0.2-0.5% of
    rows at 32-128 tokens, none at 512): each call checks and lists such rows in ``f.mismatches`` (and warns).
    Plain strings are first tokenized by the reference recipe (truncation, EOS) and then go the same way."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    import torch
    if threads:  # process-wide
        torch.set_num_threads(threads)
    # modality_config without "message": SmolLM2-Instruct's chat template is never applied
    tr = Transformer(model_dir, max_seq_length=max_length, modality_config=TEXT_ONLY,
                     module_output_name="token_embeddings")
    model = SentenceTransformer(modules=[tr, Pooling(tr.get_embedding_dimension(), "lasttoken"), Normalize()],
                                device="cpu")
    tok = tr.tokenizer

    def f(batch) -> np.ndarray:
        ids = batch
        if batch and isinstance(batch[0], str):
            ids = [x + [tok.eos_token_id] for x in
                   tok(list(batch), truncation=True, max_length=max_length - 1)["input_ids"]]
        texts, f.mismatches = _texts_for_ids(tok, ids)
        if f.mismatches:
            warnings.warn(f"st_encoder: {len(f.mismatches)} texts do not re-tokenize to their ids")
        return model.encode(texts, batch_size=batch_size, convert_to_numpy=True).astype(np.float32)
    f.mismatches, f.model = [], model
    return f


def st_cross_encoder(model_dir: str, max_length: int, batch_size: int = 32, threads: Optional[int] = None):
    """sentence-transformers ``CrossEncoder`` on a sequence-classification checkpoint, identity activation, text
    pairs in (``[(query, doc), ...]``, prefixes added here), plain text modality (no chat template). Truncation is
    set to ``only_second`` (ST's default ``longest_first`` coincides only while the query is the shorter side)."""
    from sentence_transformers import CrossEncoder
    from sentence_transformers.base.modules import Transformer
    import torch
    if threads:  # process-wide
        torch.set_num_threads(threads)
    tr = Transformer(model_dir, transformer_task="sequence-classification", max_seq_length=max_length,
                     modality_config={"text": {"method": "forward", "method_output_name": "logits"}},
                     module_output_name="scores",
                     processing_kwargs={"text": {"truncation": "only_second", "max_length": max_length}})
    model = CrossEncoder(modules=[tr], activation_fn=torch.nn.Identity(), device="cpu")

    def f(pairs) -> np.ndarray:
        pairs = [(f"query: {q}", f"document: {d}") for q, d in pairs]
        return np.asarray(model.predict(pairs, batch_size=batch_size, convert_to_numpy=True), dtype=np.float32)
    f.model = model
    return f


def _onnx(model_dir: str, kind: str, work_dir: Optional[str]) -> str:
    """Export ``model_dir`` once (per path, size and mtime of its weights) to ``work_dir``; returns the .onnx path."""
    import torch
    weights = [os.path.join(model_dir, n) for n in sorted(os.listdir(model_dir)) if n.endswith(".safetensors")]
    key = repr([os.path.abspath(model_dir), kind] + [(os.path.getsize(w), os.path.getmtime(w)) for w in weights])
    work_dir = work_dir or os.path.join(tempfile.gettempdir(), "repllama_bench_onnx")
    path = os.path.join(work_dir, f"{kind}-{hashlib.sha1(key.encode()).hexdigest()[:12]}", "model.onnx")
    if os.path.isfile(path):
        return path
    from transformers import AutoModel, AutoModelForSequenceClassification
    auto = AutoModel if kind == "encoder" else AutoModelForSequenceClassification
    m = auto.from_pretrained(model_dir, dtype=torch.float32).eval()

    class Wrap(torch.nn.Module):  # hidden states [b, s, d] (encoder) or per-token scores [b, s] (reranker)
        def __init__(self):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            body = self.m if kind == "encoder" else getattr(self.m, self.m.base_model_prefix)
            h = body(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
            return h if kind == "encoder" else self.m.score(h)[..., 0]

    ids = torch.full((2, 8), 5, dtype=torch.long)
    axes = {0: torch.export.Dim("batch"), 1: torch.export.Dim("seq")}
    tmp = os.path.dirname(path) + ".tmp"
    os.makedirs(tmp, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(Wrap().eval(), (ids, torch.ones_like(ids)), os.path.join(tmp, "model.onnx"),
                          input_names=["input_ids", "attention_mask"], output_names=["out"],
                          dynamic_shapes=(axes, axes), dynamo=True)
    os.replace(tmp, os.path.dirname(path))
    return path


def _ort_runner(path: str, batch_size: int, threads: int, pool):
    """Length-sorted, right-padded batches through an ORT CPU session; ``pool(out, lengths)`` per batch."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])

    def f(ids: Sequence[Sequence[int]]) -> np.ndarray:
        lengths = np.array([len(x) for x in ids])
        order, parts = np.argsort(-lengths, kind="stable"), []
        for s in range(0, len(ids), batch_size):
            rows = order[s:s + batch_size]
            n = lengths[rows]
            x = np.zeros((len(rows), n.max()), dtype=np.int64)
            mask = (np.arange(n.max())[None] < n[:, None]).astype(np.int64)
            for j, r in enumerate(rows):
                x[j, :n[j]] = ids[r]
            parts.append(pool(sess.run(["out"], {"input_ids": x, "attention_mask": mask})[0], n))
        return np.concatenate(parts)[np.argsort(order)].astype(np.float32)
    f.session = sess
    return f


def ort_encoder(model_dir: str, max_length: int, batch_size: int = 16, threads: int = 1,
                work_dir: Optional[str] = None):
    """ONNX Runtime encoder on token id lists (already truncated, EOS appended; ``max_length`` is only checked)."""
    def pool(h, n):
        v = h[np.arange(len(n)), n - 1]
        return v / np.linalg.norm(v, axis=1, keepdims=True)
    run = _ort_runner(_onnx(model_dir, "encoder", work_dir), batch_size, threads, pool)

    def f(ids):
        assert all(len(x) <= max_length for x in ids), "ids longer than max_length"
        return run(ids)
    return f


def ort_reranker(seqcls_dir: str, max_length: Optional[int] = None, batch_size: int = 16, threads: int = 1,
                 work_dir: Optional[str] = None):
    """ONNX Runtime one-logit reranker on token id lists of (query, document) pairs (already truncated:
    ``max_length`` unused); the score at the last real token."""
    return _ort_runner(_onnx(seqcls_dir, "reranker", work_dir), batch_size, threads,
                       lambda s, n: s[np.arange(len(n)), n - 1])


def reference_embed(model, tok, ids: List[List[int]]) -> np.ndarray:
    """One text at a time: final hidden state at the last token, L2-normalised."""
    import torch
    with torch.no_grad():
        v = [model(input_ids=torch.tensor([x]), use_cache=False).last_hidden_state[0, -1] for x in ids]
    return torch.nn.functional.normalize(torch.stack(v), dim=-1).numpy()


def reference_scores(model, ids: List[List[int]]) -> np.ndarray:
    """One pair at a time: the score head on the last token's final hidden state."""
    import torch
    body = getattr(model, model.base_model_prefix)
    with torch.no_grad():
        return np.array([model.score(body(input_ids=torch.tensor([x]), use_cache=False).last_hidden_state[0, -1])[0]
                         for x in ids], dtype=np.float32)


def _check(smollm2: bool, tmp: str) -> None:
    import gzip, json, time
    import torch, transformers
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer, LlamaConfig
    from repllama_pyserini.smollm import smollm2_path
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    base, L = smollm2_path(), 512
    tok = AutoTokenizer.from_pretrained(base)
    if not smollm2:
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=4, pad_token_id=tok.pad_token_id)
        base = os.path.join(tmp, "tiny")
        transformers.LlamaForCausalLM(cfg).save_pretrained(base)
        tok.save_pretrained(base)
    seqcls = os.path.join(tmp, "seqcls")
    m = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    m.config.pad_token_id = tok.pad_token_id
    m.save_pretrained(seqcls)
    tok.save_pretrained(seqcls)
    path = "/work/shared/ir-data/beir/scifact/corpus.jsonl.gz"
    with gzip.open(path if os.path.exists(path) else "../shared/ir-data/beir/scifact/corpus.jsonl.gz", "rt") as fh:
        docs = [json.loads(next(fh)) for _ in range(40)]
    bodies = [" ".join(v for v in (d["title"].strip(), d["text"].strip()) if v) for d in docs]
    texts = ["passage: " + b for b in bodies]
    n = [len(tok(t)["input_ids"]) for t in texts]
    # ~150 tokens, the longest (truncated to 512), and short ones
    pick = [i for i in np.argsort(np.abs(np.array(n) - 150))[:3]] + [int(np.argmax(n))] + [5]
    texts = [texts[i] for i in pick] + ["passage: a", "passage: Héllo wörld — ünïcode ✓ 数学"]
    ids = [x + [tok.eos_token_id] for x in tok(texts, truncation=True, max_length=L - 1)["input_ids"]]
    print("encoder lengths", [len(x) for x in ids])
    enc = AutoModel.from_pretrained(base).eval()
    ref = reference_embed(enc, tok, ids)
    queries = ["what causes white matter damage in newborns?", "a", "does drinking coffee lower mortality"]
    pairs = [(queries[i % 3], b) for i, b in enumerate(bodies[:4] + [bodies[pick[3]], "short"])]
    pairs.append((bodies[1][:1500], bodies[pick[3]]))  # a ~300-token query: only_second != longest_first
    pids = tok([f"query: {q}" for q, _ in pairs], [f"document: {d}" for _, d in pairs], truncation="only_second",
               max_length=L)["input_ids"]
    print("reranker lengths", [len(x) for x in pids])
    rref = reference_scores(AutoModelForSequenceClassification.from_pretrained(seqcls).eval(), pids)
    work = os.path.join(tmp, "onnx")
    for name, make, inp, want in [
            ("st_encoder(ids)", lambda: st_encoder(base, L, 4, 1), ids, ref),
            ("st_encoder(texts)", lambda: st_encoder(base, L, 4, 1), texts, ref),
            ("st_cross_encoder", lambda: st_cross_encoder(seqcls, L, 4, 1), pairs, rref),
            ("ort_encoder", lambda: ort_encoder(base, L, 4, 1, work), ids, ref),
            ("ort_reranker", lambda: ort_reranker(seqcls, L, 4, 1, work), pids, rref)]:
        f = make()
        t = time.perf_counter()
        got = f(inp)
        dt = time.perf_counter() - t
        tokens = sum(len(x) for x in (pids if "rerank" in name or "cross" in name else ids))
        diff = float(np.abs(got - want).max())
        print(f"{name:18s} max abs diff {diff:.2e}  {tokens / dt:8.0f} tokens/s  mismatches "
              f"{getattr(f, 'mismatches', '-')}")
        assert got.shape == want.shape and diff < 1e-4, name


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare every callable with the one-at-a-time reference")
    ap.add_argument("--smollm2", action="store_true", help="check on SmolLM2-135M (default: a tiny random LLaMA)")
    a = ap.parse_args()
    if a.check:
        with tempfile.TemporaryDirectory(prefix="competitors-") as tmp:
            _check(a.smollm2, tmp)
