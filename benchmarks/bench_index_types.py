"""Index size and speed on real embeddings (not a test): Faiss index types over the shipped SciFact retriever's vectors.

    python benchmarks/bench_index_types.py --index runs/scifact-multistage/test-shipped/index
        [--encoder models/smollm2-135m-repllama-scifact] [--work DIR (default: INDEX-types)] [--repeats 3]

Vectors read back from the Flat index, each index type written by the toolkit's ``dense.index.write_index`` (what
``dense merge --index-type`` runs), searched by ``pyserini.search.faiss --encoded-queries`` (the test claims encoded
once), scored by ``repllama_pyserini.eval --significance t``. Per index: bytes/vector, build time, Faiss queries/s
(1 thread), nDCG@10 / R@100 change, overlap with Flat. Writes ``docs/benchmark-index-types.{json,md,png}``
(the method in detail: there).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import time

os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "benchmarks")]

import numpy as np  # noqa: E402

from _common import cpu_name  # noqa: E402

GOAL_LOSS, GOAL_SIZE = 0.005, 0.25  # <= 0.5 point nDCG@10 below Flat at <= 1/4 of Flat's index file
INDEXES = [(k, k, None, None) for k in ("SQfp16", "SQ8", "SQ6", "SQ4")] + [("HNSW32", "HNSW32", None, 128)] + \
    [(f"IVF64 nprobe {p}", "IVF64,Flat", p, None) for p in (8, 16, 64)] + \
    [(f"PQ{m}", f"PQ{m}np", None, None) for m in (48, 96, 144, 192, 288)] + \
    [(f"OPQ{m},PQ{m}", f"OPQ{m},PQ{m}np", None, None) for m in (48, 96)] + \
    [(f"IVF64,PQ{m} nprobe 16", f"IVF64,PQ{m}np", 16, None) for m in (144, 288)] + \
    [("toolkit 'ivfpq' (default nprobe)", "ivfpq", None, None)]  # (label, factory or shortcut, nprobe, efSearch)


def sh(cmd):
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=dict(os.environ))
    if p.returncode:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{p.stderr[-3000:]}")


def read_run(path, k):
    out = {}
    for line in open(path, encoding="utf-8"):
        q, _, d, rank = line.split()[:4]
        if int(rank) <= k:
            out.setdefault(q, []).append(d)
    return out


def overlap(a, b, k):
    return float(np.mean([len(set(a[q][:k]) & set(b.get(q, [])[:k])) / k for q in a]))


def qps(index, q, k, repeats):
    index.search(q[:8], k)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        index.search(q, k)
        times.append(time.perf_counter() - t)
    return round(len(q) / min(times), 1)


def encode_queries(encoder, topics, out_dir):
    """Pyserini's encoded-queries layout: ``embedding.pkl``, a DataFrame (text, embedding) keyed by query text."""
    import pandas as pd
    from repllama_pyserini.dense.pyserini_encoders import RepLLaMAQueryEncoder
    texts, enc, t = list(topics.values()), RepLLaMAQueryEncoder(encoder), time.time()
    q = np.concatenate([enc.encode_batch(texts[i:i + 32]) for i in range(0, len(texts), 32)]).astype(np.float32)
    t = time.time() - t
    os.makedirs(out_dir, exist_ok=True)
    pd.DataFrame({"text": texts, "embedding": list(q)}).to_pickle(os.path.join(out_dir, "embedding.pkl"))
    return q, t


def search_cmd(index, topics, queries, output):
    return [sys.executable, "-m", "pyserini.search.faiss", "--index", index, "--topics", topics, "--encoded-queries",
            queries, "--output", output, "--hits", "1000", "--batch-size", "32", "--threads", "1", "--remove-query"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 2)[2])
    ap.add_argument("--index", required=True, help="the shipped retriever's Flat index of SciFact (Pyserini layout)")
    ap.add_argument("--encoder", default=os.path.join(REPO, "models", "smollm2-135m-repllama-scifact"))
    ap.add_argument("--work", help="where the index directories, queries and runs go (default INDEX-types)")
    ap.add_argument("--repeats", type=int, default=3, help="timed Faiss searches per index; the best counts")
    ap.add_argument("--check-encoder", action="store_true",
                    help="also search the chosen index with --encoder (queries encoded by Pyserini) and compare")
    ap.add_argument("--out", default=os.path.join(REPO, "docs", "benchmark-index-types"), help="PREFIX.{json,md,png}")
    args = ap.parse_args()
    import faiss
    from repllama_pyserini.dense.index import index_spec, read_metadata, write_index
    from repllama_pyserini.formats import data_dir
    faiss.omp_set_num_threads(1)
    load0, work = os.getloadavg(), os.path.abspath(args.work or args.index.rstrip(os.sep) + "-types")
    os.makedirs(work, exist_ok=True)
    tq = os.path.join(data_dir(), "topics-and-qrels")
    qrels = os.path.join(tq, "qrels.beir-v1.0.0-scifact.test.txt")
    topics_tsv = os.path.join(work, "topics.tsv")
    with gzip.open(os.path.join(tq, "topics.beir-v1.0.0-scifact.test.tsv.gz"), "rt", encoding="utf-8") as f, \
            open(topics_tsv, "w", encoding="utf-8") as g:
        g.write(f.read())
    topics = dict(line.rstrip("\n").split("\t", 1) for line in open(topics_tsv, encoding="utf-8"))

    flat = faiss.read_index(os.path.join(args.index, "index"))
    n, d = flat.ntotal, flat.d
    x = flat.reconstruct_n(0, n)
    ids = [line.rstrip("\n") for line in open(os.path.join(args.index, "docid"), encoding="utf-8")]
    meta = {k: v for k, v in (read_metadata(args.index) or {}).items()
            if k not in ("dimension", "num_docs", "index_type", "metric", "sizes")}
    meta["source"] = f"vectors reconstructed from {os.path.abspath(args.index)} by benchmarks/bench_index_types.py"
    queries = os.path.join(work, "queries")
    q, q_seconds = encode_queries(args.encoder, topics, queries)

    rows, flat_size = [], os.path.getsize(os.path.join(args.index, "index"))
    for label, spec, nprobe, ef in [("Flat", "Flat", None, None)] + INDEXES:
        out = os.path.join(work, label.split(" (")[0].replace(" ", "-").replace(",", "_").replace("'", ""))
        t = time.perf_counter()
        write_index(out, [(0, n)], lambda _: (x, ids), d, meta, index_type=spec, nprobe=nprobe, ef_search=ef)
        build = time.perf_counter() - t
        idx = faiss.read_index(os.path.join(out, "index"))
        size = os.path.getsize(os.path.join(out, "index"))
        if spec == "Flat":
            with open(os.path.join(out, "index"), "rb") as a, open(os.path.join(args.index, "index"), "rb") as b:
                assert a.read() == b.read(), "reconstructed Flat differs from the given index"
        empty = faiss.clone_index(idx)
        empty.reset()  # trained, no vectors: what does not grow with the corpus
        ivf = faiss.try_extract_index_ivf(idx)
        run = os.path.join(work, os.path.basename(out) + ".trec")
        cmd = search_cmd(out, topics_tsv, queries, run)
        sh(cmd)
        rows.append(dict(label=label, factory=index_spec(spec, d, n), dir=out, run=run,
                         nprobe=None if ivf is None else ivf.nprobe,
                         ef_search=idx.hnsw.efSearch if hasattr(idx, "hnsw") else None,
                         bytes_per_vector=round(size / n, 1), fixed_bytes=(fixed := len(faiss.serialize_index(empty))),
                         per_vector_bytes=round((size - fixed) / n, 1), size_vs_flat=round(size / flat_size, 4),
                         build_s=round(build, 2),
                         qps_k10=qps(idx, q, 10, args.repeats), qps_k1000=qps(idx, q, 1000, args.repeats),
                         command=" ".join(["python"] + [os.path.relpath(c, REPO) for c in cmd[1:]])))
        print({k: v for k, v in rows[-1].items() if k not in ("dir", "run", "command")}, flush=True)

    ev = os.path.join(work, "eval.json")
    sh([sys.executable, "-m", "repllama_pyserini.eval", "--run", *[r["run"] for r in rows], "--qrels", qrels,
        "--significance", "t", "--json", ev])
    scores = {r["run"]: r for r in json.load(open(ev))["runs"]}
    base = read_run(rows[0]["run"], 100)
    for r in rows:
        s = scores[r["run"]]
        r.update(ndcg10=round(s["scores"]["nDCG@10"], 4), r100=round(s["scores"]["R@100"], 4),
                 r1000=round(s["scores"]["R@1000"], 4), p_values={k: float(f"{v:.3g}") for k, v in
                                                                  s.get("p_values", {}).items()})
        r.update(d_ndcg10=round(r["ndcg10"] - rows[0]["ndcg10"], 4), d_r100=round(r["r100"] - rows[0]["r100"], 4))
        got = read_run(r["run"], 100)
        r.update(overlap10=round(overlap(base, got, 10), 4), overlap100=round(overlap(base, got, 100), 4))
    small, ok = [r for r in rows if r["size_vs_flat"] <= GOAL_SIZE], [r for r in rows if r["d_ndcg10"] >= -GOAL_LOSS]
    meets = sorted((r for r in ok if r in small), key=lambda r: r["bytes_per_vector"])
    chosen = meets[0] if meets else max(small, key=lambda r: r["d_ndcg10"])
    large = sorted((r for r in ok if r["per_vector_bytes"] <= GOAL_SIZE * rows[0]["per_vector_bytes"]),
                   key=lambda r: r["per_vector_bytes"])  # a large corpus: the fixed part amortised
    check = None
    if args.check_encoder:
        run = os.path.join(work, os.path.basename(chosen["dir"]) + ".encoder.trec")
        cmd = search_cmd(chosen["dir"], topics_tsv, queries, run)
        cmd[cmd.index("--encoded-queries"):cmd.index("--encoded-queries") + 2] = \
            ["--encoder", args.encoder, "--encoder-class", "repllama"]
        sh(cmd)
        a, b = read_run(chosen["run"], 1000), read_run(run, 1000)
        check = dict(run=os.path.relpath(run, REPO), same_rankings=a == b, overlap10=round(overlap(a, b, 10), 4))
    res = dict(command=" ".join(["python benchmarks/bench_index_types.py"] +
                                [os.path.relpath(a, REPO) if os.path.isabs(a) else a for a in sys.argv[1:]]),
               machine=dict(cpu=cpu_name(), cores=os.cpu_count(), threads=1, faiss=faiss.__version__,
                            loadavg_start=[round(v, 2) for v in load0],
                            loadavg_end=[round(v, 2) for v in os.getloadavg()]),
               docs=n, dimension=d, queries=len(q), query_encoding_s=round(q_seconds, 1), flat_bytes=flat_size,
               goal=dict(max_ndcg10_loss=GOAL_LOSS, max_size_vs_flat=GOAL_SIZE, met=bool(meets),
                         chosen=chosen["label"], meeting=[r["label"] for r in meets],
                         within_loss_per_vector=[r["label"] for r in large]),
               encoder_check=check,
               rows=[{k: v for k, v in r.items() if k not in ("dir", "run")} for r in rows])
    with open(args.out + ".json", "w", encoding="utf-8") as f:
        json.dump(res, f, indent=1)
    plot(res, args.out + ".png")
    write_markdown(res, args.out + ".md")
    print(f"wrote {args.out}.{{json,md,png}}; goal met: {bool(meets)} ({chosen['label']})")


def plot(res, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows, flat, quarter = res["rows"], res["rows"][0], res["rows"][0]["bytes_per_vector"] * GOAL_SIZE
    colour = dict(Flat="k", SQ="tab:blue", HNSW="tab:purple", IVF="tab:orange", PQ="tab:red", OPQ="tab:brown")
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    for zoom, ax in enumerate(axes):
        ax.axvspan(80, quarter, color="tab:green", alpha=0.07)
        ax.axhline(flat["ndcg10"] - GOAL_LOSS, color="tab:green", ls="--", lw=1, label="Flat - 0.5 point (goal)")
        ax.axvline(quarter, color="tab:green", ls=":", lw=1, label="1/4 of Flat's bytes (goal)")
        ax.axhline(flat["ndcg10"], color="grey", lw=0.8)
        shown = [r for r in rows if not zoom or r["ndcg10"] >= flat["ndcg10"] - 0.025]
        groups = []  # points that (nearly) coincide get one label
        for r in sorted(shown, key=lambda r: r["bytes_per_vector"]):
            kind = next((k for k in ("IVF", "OPQ", "PQ", "HNSW", "SQ") if k in r["factory"]), "Flat")
            ax.scatter(r["bytes_per_vector"], r["ndcg10"], color=colour[kind], s=25, zorder=3, label=kind)
            g = next((g for g in groups if round(g[0]["ndcg10"], 3) == round(r["ndcg10"], 3)
                      and r["bytes_per_vector"] < 1.2 * g[-1]["bytes_per_vector"]), None)
            g.append(r) if g else groups.append([r])
        for i, g in enumerate(groups):
            x, y = g[0]["bytes_per_vector"], g[0]["ndcg10"]
            if zoom or y < flat["ndcg10"] - 0.025:
                ax.annotate(" / ".join(r["label"].replace(" (default nprobe)", "") for r in g), (x, y), fontsize=7,
                            textcoords="offset points", xytext=(5, 3 if i % 2 == 0 else -10))
        ax.set_xscale("log"), ax.set_xlim(80, 12000)
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("bytes per vector (index file / documents, log scale)")
        ax.set_ylabel("nDCG@10 (pyserini.search.faiss, SciFact test)")
        ax.set_title("all index types" if not zoom else "within 2.5 points of Flat", fontsize=10)
    legend = dict(zip(*axes[0].get_legend_handles_labels()[::-1]))  # one entry per kind
    axes[0].legend(legend.values(), legend.keys(), fontsize=8, loc="lower right")
    fig.suptitle(f"Faiss index types on the SmolLM2 retriever's SciFact embeddings ({res['docs']:,} x "
                 f"{res['dimension']})", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_markdown(res, path):
    m, rows, flat, g = res["machine"], res["rows"], res["rows"][0], res["goal"]
    L = ["# Index types on real embeddings", "",
         f"The shipped retriever (`models/smollm2-135m-repllama-scifact`, SmolLM2-135M + LoRA) over the full SciFact "
         f"corpus: {res['docs']:,} documents x {res['dimension']} dimensions (Flat: {res['flat_bytes']:,} bytes); "
         f"{res['queries']} test claims. Machine: {m['cpu']}, {m['cores']} cores shared with other jobs (load average "
         f"{m['loadavg_start']} at start, {m['loadavg_end']} at end), 1 thread everywhere, Faiss {m['faiss']}: "
         f"timings are indicative. Command: `{res['command']}`.", "",
         f"**Goal** (<= {100 * g['max_ndcg10_loss']:.1f} point nDCG@10 loss at <= 1/4 of Flat's size): "
         f"{'met' if g['met'] else 'not met'}; {'the smallest index meeting it' if g['met'] else 'closest'}: "
         f"**{g['chosen']}** (all meeting it, smallest first: {', '.join(g['meeting']) or 'none'}). Counting only "
         f"the per-vector bytes (a large corpus, where codebooks, rotations and ranges are negligible): "
         f"{', '.join(g['within_loss_per_vector']) or 'none'}.", "",
         "| index | factory | nprobe / efSearch | bytes/vector | fixed bytes | + bytes/vector | size vs Flat | "
         "build s | q/s k=10 | q/s k=1000 | nDCG@10 | change | p (t) | R@100 | change | overlap@10 | overlap@100 |",
         "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        knob = f"nprobe {r['nprobe']}" if r["nprobe"] else f"efSearch {r['ef_search']}" if r["ef_search"] else ""
        p = r["p_values"].get("nDCG@10")
        L.append(f"| {r['label']} | `{r['factory']}` | {knob} | {r['bytes_per_vector']:,.1f} | {r['fixed_bytes']:,} | "
                 f"{r['per_vector_bytes']:,.1f} | {r['size_vs_flat']:.3f} | {r['build_s']:.2f} | {r['qps_k10']:,.0f} | "
                 f"{r['qps_k1000']:,.0f} | {r['ndcg10']:.4f} | {100 * r['d_ndcg10']:+.2f} | "
                 f"{'' if p is None else f'{p:.2g}'} | {r['r100']:.4f} | {100 * r['d_r100']:+.2f} | "
                 f"{r['overlap10']:.3f} | {r['overlap100']:.3f} |")
    c = res["encoder_check"]
    L += ["", "![nDCG@10 against bytes per vector](benchmark-index-types.png)", "",
          "## How each number was made", "",
          "* **bytes/vector**: the `index` file's size / documents; **fixed bytes**: the same index trained but empty "
          "(`reset()`, serialised): codebooks, centroids, OPQ rotation, SQ ranges, which do not grow with the corpus; "
          "**+ bytes/vector**: the rest per document (codes, ids, HNSW links). The `docid` file (same for all) is not "
          "counted. **size vs Flat**: index file / Flat's index file (the goal's measure).",
          "* **build s**: `repllama_pyserini.dense.index.write_index` (train on all vectors + add + write), what "
          "`python -m repllama_pyserini.dense merge --index-type SPEC [--nprobe N] [--ef-search E]` runs on encoded "
          "chunks, here on the vectors of the Flat index (`reconstruct_n`; rewritten as Flat: the same file byte for "
          "byte). nprobe and efSearch are stored in the index (Pyserini has no `--nprobe`; its `--ef-search` would "
          "override efSearch; Faiss' HNSW uses max(efSearch, k): 1,000 for the runs' 1,000 hits).",
          f"* **q/s**: Faiss `search` of the {res['queries']} pre-encoded queries on the index as read back from "
          "disk, 1 thread, best of the repeats, for k = 10 and k = 1,000 (the runs' depth). Query encoding, which "
          f"dominates a real search here, is not included: {res['query_encoding_s']} s for the queries (1 thread).",
          "* **nDCG@10, R@100**: `python -m pyserini.search.faiss` runs (command below), scored by `python -m "
          "repllama_pyserini.eval` (trec_eval conventions of BEIR); **change**: points against Flat; **p (t)**: "
          "two-sided paired t test over the 300 queries against Flat (`--significance t`). **overlap@k**: mean share "
          "of Flat's top k in the index's top k.",
          "* PQ factory strings end in `np` (no polysemous training). Plain `PQm` (what `--index-type PQm` gives) "
          "also reorders the codes for polysemous (Hamming) search, which Pyserini never uses: measured once by hand "
          "on this machine, PQ288 then took 574 s to build instead of 31 s, with identical rankings.",
          "* Queries are encoded once (the `repllama` query encoder's `encode_batch`, 32 at a time, as "
          "`pyserini.search.faiss --encoder-class repllama --batch-size 32`) and passed as Pyserini encoded queries "
          "(`--encoded-queries DIR`, `embedding.pkl`), which gives Flat the shipped test run's scores (nDCG@10 0.5219)."
          + ("" if c is None else " Searched with `--encoder` instead, the chosen index gives " +
             ("the same rankings." if c["same_rankings"] else f"top-10 overlap {c['overlap10']} with it.")),
          "", "## Commands", "", "```bash",
          "# the Flat index (run_scripts/scifact_multistage.sh, stage test-first-stage):",
          "python -m repllama_pyserini.dense encode --corpus ../shared/ir-data/beir/scifact/corpus.jsonl.gz \\",
          "  --encoder models/smollm2-135m-repllama-scifact --output runs/scifact-multistage/test-shipped/index",
          "# this benchmark (writes INDEX-types/: one index directory, run and the encoded queries):",
          res["command"],
          "# each search, e.g. Flat's:", flat["command"],
          "# scoring: python -m repllama_pyserini.eval --run Flat.trec OTHER.trec ... --qrels ../shared/ir-data/"
          "topics-and-qrels/qrels.beir-v1.0.0-scifact.test.txt --significance t",
          "# one index type from encoded chunks (encode ... --output INDEX --keep-chunks), without this script:",
          "python -m repllama_pyserini.dense merge --output DIR --index-type SQ8 --work-dir INDEX.job --keep-chunks",
          "```", ""]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(L))


if __name__ == "__main__":
    main()
