"""What the resume checks cost on a large corpus, next to what encoding that corpus costs (docs/reliability.md).

A resumable job records the SHA-256 of every input file's bytes (:func:`repllama_pyserini.jobs.content_fingerprint`)
and checks it whenever the job is opened. This measures, on a 1 GB corpus file (real SciFact documents repeated
with fresh docids, plain JSONL), in one run:

* the fingerprint of the corpus (cold page cache is not forced: the file was just written, as after a download);
* streaming the corpus through the one reader (``iter_corpus``: JSON parsing, docid and duplicate checks);
* the encoding throughput of a real model (SmolLM2-135M, fp32, the same thread count) on the corpus's first
  documents, and from it the time to encode the whole corpus (tokens counted on a sample, scaled to the file).

    python benchmarks/bench_fingerprint.py [--size-gb 1] [--threads 2] [--out docs/benchmark-fingerprint]
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _common import cpu_name  # noqa: E402

from repllama_pyserini.formats import data_dir, iter_corpus  # noqa: E402
from repllama_pyserini.jobs import content_fingerprint  # noqa: E402


def make_corpus(path: str, size: int) -> int:
    """Real SciFact documents, repeated with fresh docids until ``size`` bytes; returns the document count."""
    with gzip.open(os.path.join(data_dir(), "beir", "scifact", "corpus.jsonl.gz"), "rt", encoding="utf-8") as f:
        docs = [json.loads(line) for line in f]
    n, written = 0, 0
    with open(path, "w", encoding="utf-8") as out:
        while written < size:
            d = docs[n % len(docs)]
            line = json.dumps({"_id": f"{d['_id']}-{n}", "title": d["title"], "text": d["text"]}) + "\n"
            out.write(line)
            written += len(line.encode("utf-8"))
            n += 1
    return n


def encode_rate(corpus: str, n_docs: int, threads: int, sample: int = 48) -> dict:
    """SmolLM2-135M (the project's default batching) on the first ``sample`` documents: tokens/s and tokens/doc."""
    import torch
    from repllama_pyserini.dense import RepLLaMAEncoder
    from repllama_pyserini.smollm import smollm2_path
    torch.set_num_threads(threads)
    enc = RepLLaMAEncoder(smollm2_path(), passage_max_length=512)
    docs = []
    for _, doc, _ in iter_corpus(corpus, unique=False):
        docs.append(doc)
        if len(docs) == sample:
            break
    enc.encode_docs(docs[:4])  # warm-up
    t0, tok0 = time.perf_counter(), enc.num_tokens
    enc.encode_docs(docs)
    seconds, tokens = time.perf_counter() - t0, enc.num_tokens - tok0
    return {"sample_docs": len(docs), "tokens_per_s": tokens / seconds, "tokens_per_doc": tokens / len(docs),
            "encode_hours": n_docs * tokens / len(docs) / (tokens / seconds) / 3600}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gb", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(HERE), "docs", "benchmark-fingerprint"))
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.join(tmp, "corpus.jsonl")
        n_docs = make_corpus(corpus, int(args.size_gb * 1e9))
        size = os.path.getsize(corpus)
        t0 = time.perf_counter()
        content_fingerprint(corpus)
        fp_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        streamed = sum(1 for _ in iter_corpus(corpus))
        stream_s = time.perf_counter() - t0
        assert streamed == n_docs
        rate = encode_rate(corpus, n_docs, args.threads)
    enc_s = rate["encode_hours"] * 3600
    res = {"cpu": cpu_name(), "python": platform.python_version(), "threads": args.threads, "bytes": size,
           "documents": n_docs, "fingerprint_s": fp_s, "fingerprint_mb_per_s": size / fp_s / 1e6,
           "stream_s": stream_s, **rate, "fingerprint_share_of_encoding": fp_s / enc_s,
           "stream_share_of_encoding": stream_s / enc_s}
    with open(args.out + ".json", "w") as f:
        json.dump(res, f, indent=1)
    rows = [("SHA-256 of the corpus file (every job open)", fp_s), ("streaming it through the reader", stream_s),
            ("encoding it with SmolLM2-135M (estimated)", enc_s)]
    md = ["# Resume checks on a large corpus", "", f"Made by `python benchmarks/bench_fingerprint.py --size-gb "
          f"{args.size_gb:g} --threads {args.threads}` on {res['cpu']} ({args.threads} threads): a {size / 1e9:.2f} GB "
          f"JSONL corpus of {n_docs:,} real SciFact documents (repeated, fresh docids). Encoding time is the measured "
          f"SmolLM2-135M rate ({rate['tokens_per_s']:,.0f} tokens/s, passages up to 512 tokens, "
          f"{rate['tokens_per_doc']:.0f} tokens per document on a {rate['sample_docs']}-document sample) times the "
          f"corpus's tokens.", "", "| step | seconds | share of encoding |", "|---|---:|---:|"]
    md += [f"| {name} | {s:,.1f} | {s / enc_s:.2e} |" for name, s in rows]
    md += ["", f"Fingerprinting reads {res['fingerprint_mb_per_s']:,.0f} MB/s: a resume check of this corpus costs "
           f"{fp_s:.1f} s against {rate['encode_hours']:,.0f} hours of encoding."]
    with open(args.out + ".md", "w") as f:
        f.write("\n".join(md) + "\n")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 2.6))
    ax.barh([r[0] for r in rows][::-1], [r[1] for r in rows][::-1], color=["#4c72b0", "#55a868", "#c44e52"][::-1])
    ax.set_xscale("log")
    ax.set_xlabel(f"seconds (log scale), {size / 1e9:.1f} GB corpus")
    fig.tight_layout()
    fig.savefig(args.out + ".png", dpi=120)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
