"""Measured inputs of docs/scale.md: bytes per vector of each Faiss index type at RepLLaMA's 4096 dimensions (written
to disk by faiss itself, on a sample of random unit vectors; the size per vector of these types does not depend on
the values), scaled to MS MARCO passage (8,841,823 passages), and the encode FLOPs per token of Llama-2-7B and
SmolLM2-135M from their configs (2 x linear weights per token + causal attention), so that a tokens/s measured on
one model converts to the other.

    python benchmarks/scale_check.py [--n 20000] [--json docs/scale-check.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

MSMARCO_PASSAGES = 8_841_823
# (factory string, what it is); IVF lists sized for MS MARCO would be ~sqrt(N) x 4 = 16384, here 256 for the sample
TYPES = [("Flat", "exact, fp32"), ("SQfp16", "fp16 scalar quantiser"), ("SQ8", "8-bit scalar quantiser"),
         ("HNSW32,Flat", "graph, 32 links"), ("HNSW32,SQ8", "graph over SQ8"),
         ("IVF256,PQ256", "IVF + PQ 256 x 8 bit"), ("IVF256,PQ64", "IVF + PQ 64 x 8 bit")]
# OPQ adds a d x d rotation (4096^2 x 4 B = 67 MB, fixed) to the PQ codes; training it at 4096-d takes too long here
# Llama-2-7B (meta-llama/Llama-2-7b-hf config.json) and SmolLM2-135M (its config.json)
MODELS = {"Llama-2-7B": dict(hidden=4096, layers=32, intermediate=11008, heads=32, kv_heads=32),
          "SmolLM2-135M": dict(hidden=576, layers=30, intermediate=1536, heads=9, kv_heads=3)}


def linear_params(hidden, layers, intermediate, heads, kv_heads):
    head = hidden // heads
    attn = hidden * hidden * 2 + 2 * hidden * kv_heads * head  # q, o; k, v
    return layers * (attn + 3 * hidden * intermediate)


def flops_per_token(model: dict, length: int) -> float:
    """Forward FLOPs per token of a sequence of ``length`` tokens (mean over its positions)."""
    return 2 * linear_params(**model) + 2 * model["layers"] * model["hidden"] * (length + 1)


def index_bytes(n: int, d: int = 4096, seed: int = 0):
    import faiss
    x = np.random.default_rng(seed).standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    out = []
    for spec, what in TYPES:
        idx = faiss.index_factory(d, spec, faiss.METRIC_INNER_PRODUCT)
        t = time.perf_counter()
        if not idx.is_trained:
            idx.train(x)
        idx.add(x)
        secs = time.perf_counter() - t
        with tempfile.NamedTemporaryFile(suffix=".faiss") as f:
            faiss.write_index(idx, f.name)
            size = os.path.getsize(f.name)
        # fixed part (codebooks, centroids, rotation) apart from the per-vector part: write an empty copy too
        idx.reset()
        with tempfile.NamedTemporaryFile(suffix=".faiss") as f:
            faiss.write_index(idx, f.name)
            fixed = os.path.getsize(f.name)
        per_vec = (size - fixed) / n
        print(f"{spec}: {per_vec:.1f} B/vector, {secs:.0f} s", file=sys.stderr, flush=True)
        out.append(dict(index=spec, what=what, bytes_per_vector=round(per_vec, 1), fixed_bytes=fixed,
                        build_s_sample=round(secs, 1), msmarco_gb=round((per_vec * MSMARCO_PASSAGES + fixed) / 1e9, 2)))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20000, help="sample vectors per index type")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    res = dict(sample=args.n, dimension=4096, msmarco_passages=MSMARCO_PASSAGES, indexes=index_bytes(args.n),
               flops_per_token={m: {L: flops_per_token(c, L) for L in (32, 156, 512)} for m, c in MODELS.items()},
               linear_params={m: linear_params(**c) for m, c in MODELS.items()})
    print(json.dumps(res, indent=1))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
