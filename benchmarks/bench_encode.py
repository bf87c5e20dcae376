"""Encoding benchmark (not a test): throughput, MFU and peak RSS.

    python benchmarks/bench_encode.py [--texts 48] [--queries 96] [--threads 1 2] [--model random-llama|smollm2|PATH]
                                      [--rss-sizes 2000 16000] [--smoke (tiny sizes, output in the temp dir)]

1. Peak: the best fp32 matmul rate of this machine (``torch.mm``, square 1024-4096), the MFU denominator.
2. Throughput on the same texts (real MS MARCO passages; real TREC DL queries), same model object, same run,
   for each ``--threads`` setting, three ways:
   * ``model-card loop``: one text at a time, ``tokenizer(f'passage: {text}</s>')`` -> ``last_hidden_state[0][-1]``;
   * ``fixed-order batches``: batches in corpus order, padded to the longest (Pyserini's AutoDocumentEncoder style);
   * ``ours``: :class:`RepLLaMAEncoder` (batches sorted by length within the window, no KV cache), with the same
     batch size, and again with a token budget per batch (``max_batch_tokens``).
   Methods run interleaved ``--repeats`` times; the best time counts (the machine is shared).
   Texts are kept to those within the max length, so every way processes exactly the same tokens; useful
   (non-pad) tokens/s and FLOP/s are reported. FLOPs: 2 x (matmul weights) per token + causal attention
   (2 x 2 x layers x width x L^2 / 2 per sequence). MFU = achieved FLOP/s / measured peak.
3. Peak RSS of ``python -m repllama_pyserini.dense encode`` (tiny model) on two corpus sizes (must stay flat).

Index types (size, speed, quality) are measured on real embeddings by ``benchmarks/bench_index_types.py``.

Writes ``docs/benchmark-encode.json`` and ``docs/benchmark-encode.md``.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "tests")]  # tests/: tiny_models, the random test checkpoints
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _common import cpu_name  # noqa: E402
from repllama_pyserini.dense import RepLLaMAEncoder  # noqa: E402
from repllama_pyserini.formats import data_dir, read_topics  # noqa: E402

COLLECTION = "msmarco-passage/collection.dl19-dl20-candidates.tsv.gz"


def read_passages(path, n=None):
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            docid, text = line.rstrip("\n").split("\t", 1)
            out.append((docid, text))
            if n and len(out) >= n:
                break
    return out


def peak_matmul_flops(repeats=5, sizes=(1024, 2048, 4096)):
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        for _ in range(repeats):
            t = time.perf_counter()
            a @ b
            best = max(best, 2 * n ** 3 / (time.perf_counter() - t))
    return best


def make_random_llama(out_dir, texts, hidden, layers, intermediate, heads):
    from transformers import LlamaConfig, LlamaModel
    from tiny_models import make_tokenizer
    tok = make_tokenizer(out_dir, texts, vocab_size=8000)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=intermediate,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                      max_position_embeddings=2048, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    LlamaModel(cfg).save_pretrained(out_dir)
    return out_dir


def flops_per_sequence(model, length):
    cfg = model.config
    linear = sum(m.weight.numel() for name, m in model.named_modules() if isinstance(m, torch.nn.Linear))
    width = cfg.num_attention_heads * getattr(cfg, "head_dim", cfg.hidden_size // cfg.num_attention_heads)
    return 2 * linear * length + 2 * 2 * cfg.num_hidden_layers * width * length * length / 2


def model_card_loop(model, tok, texts, prefix="passage: "):
    out = []
    with torch.no_grad():
        for t in texts:
            inputs = tok(f"{prefix}{t}</s>", return_tensors="pt")
            h = model(**inputs).last_hidden_state[0][-1]
            out.append(F.normalize(h, p=2, dim=0))
    return torch.stack(out).numpy()


def fixed_order_batches(model, tok, texts, batch_size, prefix="passage: "):
    out = []
    tok.padding_side = "right"
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            inputs = tok([f"{prefix}{t}</s>" for t in texts[i:i + batch_size]], padding="longest",
                         return_tensors="pt")
            h = model(**inputs).last_hidden_state
            last = inputs["attention_mask"].sum(1) - 1
            out.append(F.normalize(h[torch.arange(len(last)), last], p=2, dim=-1))
    return torch.cat(out).numpy()


def throughput(enc, label, kind, pool, n_texts, max_length, batch_size, peak, repeats=2, token_budget=512):
    """``kind``: 'passages' or 'queries'; ``pool``: candidate texts (those within ``max_length`` are used)."""
    model, tok = enc.model, enc.tokenizer
    prefix = "passage: " if kind == "passages" else "query: "
    texts = [t for t in pool if len(tok(f"{prefix}{t}</s>")["input_ids"]) <= max_length][:n_texts]
    lengths = [len(tok(f"{prefix}{t}</s>")["input_ids"]) for t in texts]
    tokens = sum(lengths)
    flops = sum(flops_per_sequence(model, L) for L in lengths)

    def ours(x, budget=None):
        enc.max_batch_tokens = budget
        try:
            if kind == "passages":
                return enc.encode_passages(x, max_length=max_length, batch_size=batch_size)
            return enc.encode_queries(x, max_length=max_length, batch_size=batch_size)
        finally:
            enc.max_batch_tokens = None

    warm = texts[:4]
    model_card_loop(model, tok, warm, prefix), fixed_order_batches(model, tok, warm, 4, prefix), ours(warm)
    methods = [("model-card loop", lambda: model_card_loop(model, tok, texts, prefix)),
               ("fixed-order batches", lambda: fixed_order_batches(model, tok, texts, batch_size, prefix)),
               ("ours (sorted batches)", lambda: ours(texts)),
               (f"ours, <= {token_budget} tokens/batch", lambda: ours(texts, token_budget))]
    times, outs = {name: [] for name, _ in methods}, {}
    for _ in range(repeats):  # interleaved, best of: the machine is shared and its load drifts
        for name, fn in methods:
            t = time.perf_counter()
            outs[name] = fn()
            times[name].append(time.perf_counter() - t)
    rows = {}
    for name, _ in methods:
        dt = min(times[name])
        rows[name] = dict(seconds=round(dt, 3), tokens_per_s=round(tokens / dt, 1), gflops=round(flops / dt / 1e9, 2),
                          mfu=round(flops / dt / peak, 4), all_seconds=[round(x, 3) for x in times[name]])
    base = rows["model-card loop"]["tokens_per_s"]
    for r in rows.values():
        r["speedup_vs_model_card"] = round(r["tokens_per_s"] / base, 2)
    ref = outs["model-card loop"]
    agree = {k: float(np.abs(v - ref).max()) for k, v in outs.items()}
    cfg = model.config
    return dict(model=label, kind=kind, hidden=cfg.hidden_size, layers=cfg.num_hidden_layers,
                intermediate=cfg.intermediate_size,
                params=sum(p.numel() for p in model.parameters()), texts=len(texts), tokens=tokens,
                mean_length=round(tokens / len(texts), 1), max_length=max_length, batch_size=batch_size,
                padding_fixed_order=round(_padding(lengths, batch_size, False), 3),
                padding_sorted=round(_padding(lengths, batch_size, True), 3),
                max_abs_diff_vs_model_card=agree, methods=rows)


def _padding(lengths, bs, sort):
    ls = sorted(lengths, reverse=True) if sort else list(lengths)
    padded = sum(max(ls[i:i + bs]) * len(ls[i:i + bs]) for i in range(0, len(ls), bs))
    return 1 - sum(ls) / padded


def peak_rss(model_dir, corpus, n_docs, work, max_length=64):
    out = os.path.join(work, f"idx-{n_docs}")
    cmd = [sys.executable, "-m", "repllama_pyserini.dense", "encode", "--corpus", corpus, "--encoder", model_dir,
           "--output", out, "--max-docs", str(n_docs), "--max-length", str(max_length), "--chunk-size", "512",
           "--batch-size", "32", "--no-progress"]
    t = time.time()
    env = dict(os.environ, OMP_NUM_THREADS="1")  # a 64-wide model gains nothing from threads on a shared box
    p = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(p.pid, 0)
    err = p.stderr.read().decode()
    p.stderr.close()
    if status != 0:
        raise SystemExit(f"encode failed:\n{err[-2000:]}")
    return out, dict(docs=n_docs, peak_rss_mb=round(usage.ru_maxrss / 1024, 1), seconds=round(time.time() - t, 1),
                     index_mb=round(os.path.getsize(os.path.join(out, "index")) / 2 ** 20, 2))


def import_baseline_rss():
    """Peak RSS of a process that only imports the encoder stack (the encode CLI's modules); the libraries it loads."""
    code = ("import sys, repllama_pyserini.dense.__main__, repllama_pyserini.dense.encode, repllama_pyserini.dense."
            "encoder; print(*[m for m in ('torch', 'transformers', 'peft', 'faiss', 'pyserini', 'jnius') "
            "if m in sys.modules])")
    p = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    _, _, usage = os.wait4(p.pid, 0)  # its few bytes of output fit in the pipe
    with p.stdout:
        return round(usage.ru_maxrss / 1024, 1), p.stdout.read().decode().split()


def write_markdown(res, path):
    L = ["# Encoding benchmark", "",
         f"Machine: {res['machine']['cpu']}, {res['machine']['cores']} cores, load average at start "
         f"{res['machine']['loadavg_start']}, at end {res['machine']['loadavg_end']} (the machine is shared with "
         f"other jobs: absolute numbers are a lower bound). Command: `{res['command']}`.", "",
         "## Summary against the targets (>= 3x the model-card loop, >= 50% MFU)", "",
         "| texts | threads | method | tokens/s | vs model-card loop | vs fixed-order batches | MFU | targets met |",
         "|---|---:|---|---:|---:|---:|---:|---|"]
    for t in res["throughput"]:
        f = t["methods"]["fixed-order batches"]
        for name, o in t["methods"].items():
            if not name.startswith("ours"):
                continue
            met = [x for x, ok in (("3x", o["speedup_vs_model_card"] >= 3), ("MFU", o["mfu"] >= 0.5)) if ok]
            L.append(f"| {t['kind']} | {t['threads']} | {name} | {o['tokens_per_s']:,.0f} | "
                     f"{o['speedup_vs_model_card']:.2f}x | {o['tokens_per_s'] / f['tokens_per_s']:.2f}x | "
                     f"{100 * o['mfu']:.1f}% | {', '.join(met) or 'none'} |")
    L += ["", "## Throughput (same model, same texts, same run)", ""]
    for t in res["throughput"]:
        L += [f"**{t['kind']}, {t['model']}, {t['threads']} thread(s)**, measured fp32 matmul peak "
              f"{t['peak_gflops']:.1f} GFLOP/s; "
              f"hidden {t['hidden']}, {t['layers']} layers, {t['params'] / 1e6:.1f}M parameters; "
              f"{t['texts']} real {'MS MARCO passages' if t['kind'] == 'passages' else 'TREC DL queries'}, "
              f"{t['tokens']} tokens (mean {t['mean_length']}), max length "
              f"{t['max_length']}, batch size {t['batch_size']}; padding: {100 * t['padding_fixed_order']:.1f}% "
              f"in corpus order vs {100 * t['padding_sorted']:.1f}% sorted.", "",
              "| method | tokens/s | GFLOP/s | MFU | vs model-card loop | max abs diff vs loop |",
              "|---|---:|---:|---:|---:|---:|"]
        for name, r in t["methods"].items():
            L.append(f"| {name} | {r['tokens_per_s']:,.0f} | {r['gflops']:.1f} | {100 * r['mfu']:.1f}% | "
                     f"{r['speedup_vs_model_card']:.2f}x | {t['max_abs_diff_vs_model_card'][name]:.1e} |")
        L.append("")
    r = res["rss"]
    L += ["## Peak RSS of `python -m repllama_pyserini.dense encode` (tiny model, chunk 512, 1 thread)", "",
          f"A process that only imports the stack ({', '.join(res['import_baseline_modules']) or 'nothing heavy'}) "
          f"peaks at {res['import_baseline_rss_mb']:.0f} MB.", "",
          "| documents | peak RSS (MB) | above import baseline (MB) | seconds | Flat index (MB) |",
          "|---:|---:|---:|---:|---:|"]
    L += [f"| {x['docs']:,} | {x['peak_rss_mb']:.0f} | {x['above_import_baseline_mb']:.0f} | {x['seconds']:.0f} | "
          f"{x['index_mb']:.1f} |" for x in r]
    L += ["", f"RSS ratio largest/smallest: {res['rss_ratio']:.3f} for {r[-1]['docs'] / r[0]['docs']:.0f}x the "
          f"documents.", ""]
    L += ["## Index types", "", "Measured on the trained SciFact retriever's real embeddings through "
          "`pyserini.search.faiss`: [benchmark-index-types.md](benchmark-index-types.md)."]
    L += ["", "Notes: " + res["notes"], ""]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(L))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=32, help="passages (MS MARCO)")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved repetitions; the best time counts")
    ap.add_argument("--token-budget", type=int, default=512, help="max_batch_tokens of the 4th method")
    ap.add_argument("--queries", type=int, default=96, help="queries (TREC DL19+DL20)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                    help="torch thread counts to measure throughput with (peak measured for each)")
    ap.add_argument("--max-length", type=int, default=156)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--model", nargs="+", default=["random-llama"],
                    help="random-llama (hidden 1024, 4 layers), smollm2 (if cached), or a model dir")
    ap.add_argument("--rss-sizes", type=int, nargs=2, default=[2000, 16000])
    ap.add_argument("--json", default=os.path.join(REPO, "docs", "benchmark-encode.json"))
    ap.add_argument("--md", default=os.path.join(REPO, "docs", "benchmark-encode.md"))
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, meaningless numbers, output in the temp dir")
    ap.set_defaults(llama=(1024, 4, 2816, 8), peak_sizes=(1024, 2048, 4096))  # random-llama: hidden, layers, MLP, heads
    if "--smoke" in sys.argv[1:]:  # explicit flags still win
        tmp = os.path.join(tempfile.gettempdir(), "benchmark-encode.smoke")
        ap.set_defaults(texts=4, queries=4, threads=[1], repeats=1, rss_sizes=[200, 400], llama=(128, 2, 352, 4),
                        peak_sizes=(256, 512), json=tmp + ".json", md=tmp + ".md")
    args = ap.parse_args()
    ir = data_dir()
    passages = read_passages(os.path.join(ir, COLLECTION))
    load0 = os.getloadavg()
    work = tempfile.mkdtemp(prefix="bench-encode-")
    try:
        rng = random.Random(0)
        passage_pool = [t for _, t in rng.sample(passages, min(len(passages), args.texts * 3))]
        tq = os.path.join(ir, "topics-and-qrels")
        query_pool = list(read_topics(os.path.join(tq, "topics.dl19-passage.txt")).values()) + \
            list(read_topics(os.path.join(tq, "topics.dl20.txt")).values())
        results, encoders = [], {}
        for threads in args.threads:
            torch.set_num_threads(threads)
            peak = peak_matmul_flops(sizes=args.peak_sizes)
            print(f"{threads} thread(s): peak {peak / 1e9:.1f} GFLOP/s", flush=True)
            for m in args.model:
                if m not in encoders:
                    if m == "random-llama":
                        path = make_random_llama(os.path.join(work, "random-llama"), [t for _, t in passages[:3000]],
                                                 *args.llama)  # hidden, layers, intermediate, heads
                        label = f"random LLaMA ({args.llama[0]} wide)"
                    elif m == "smollm2":
                        from repllama_pyserini.smollm import smollm2_path
                        path, label = smollm2_path(), "SmolLM2-135M-Instruct"
                    else:
                        path, label = m, os.path.basename(m.rstrip("/"))
                    encoders[m] = (RepLLaMAEncoder(path), label)
                enc, label = encoders[m]
                for kind, pool, n, max_len in [("passages", passage_pool, args.texts, args.max_length),
                                               ("queries", query_pool, args.queries, 32)]:
                    t = throughput(enc, label, kind, pool, n, max_len, args.batch_size, peak, args.repeats,
                                   args.token_budget)
                    t.update(threads=threads, peak_gflops=round(peak / 1e9, 2))
                    print(json.dumps(t, indent=1), flush=True)
                    results.append(t)
        torch.set_num_threads(max(args.threads))

        from tiny_models import make_random_lora, make_tiny_llama
        tiny = make_tiny_llama(os.path.join(work, "tiny"), [t for _, t in passages[:2000]], vocab_size=4000)
        tiny = make_random_lora(tiny, os.path.join(work, "tiny-lora"))
        corpus = os.path.join(ir, COLLECTION)
        rss, (base_rss, base_modules) = [], import_baseline_rss()
        for n in args.rss_sizes:
            _, r = peak_rss(tiny, corpus, n, work)
            r["above_import_baseline_mb"] = round(r["peak_rss_mb"] - base_rss, 1)
            print(r, flush=True)
            rss.append(r)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res = dict(command=" ".join(["python benchmarks/bench_encode.py"] + sys.argv[1:]),
               machine=dict(cpu=cpu_name(), threads=torch.get_num_threads(),
                            cores=os.cpu_count(), loadavg_start=[round(x, 2) for x in load0],
                            loadavg_end=[round(x, 2) for x in os.getloadavg()], torch=torch.__version__),
               throughput=results, rss=rss, import_baseline_rss_mb=base_rss, import_baseline_modules=base_modules,
               rss_ratio=round(rss[-1]["peak_rss_mb"] / rss[0]["peak_rss_mb"], 3),
               notes=("fp32 on CPU. The random models have real LLaMA architecture and real tokenised text but random "
                      "weights: throughput/FLOPs are those of the architecture."))
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump(res, f, indent=1)
    write_markdown(res, args.md)
    print(f"wrote {args.json} and {args.md}")


if __name__ == "__main__":
    main()
