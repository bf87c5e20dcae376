"""Searching shards in place and memory-mapped Flat indexes (:mod:`repllama_pyserini.dense.search`) against Faiss
loading the merged index whole: peak RSS, queries/s, and a search under an address-space cap smaller than the index.

Builds what ``encode --shard-num S --no-merge`` leaves (random float32 vectors, RepLLaMA's 4096 dims, 2048-document
chunks, document j in shard j % S) and the ``merge`` of it, then runs each variant in its own process (one thread),
which reports its own ``ru_maxrss``:

* ``faiss-whole``: ``faiss.read_index`` of the merged index, then its ``search`` (what Pyserini does);
* ``faiss-mmap``: the same read with ``faiss.IO_FLAG_MMAP_IFC`` (Faiss maps the vectors; the kernel pages them in);
* ``mmap``: the merged index through ``open_index`` (``REPLLAMA_PYSERINI_MMAP=1`` in Pyserini);
* ``shards``: the work dir through ``open_index`` (``--index OUTPUT.job``), no merge.

Every variant must return the hits of ``faiss-whole`` bit for bit. The files' pages are dropped from the page cache
(``posix_fadvise``) before each variant, so the first batch reads from disk; queries/s is over the later batches.
All children import the same modules (torch included, as under Pyserini), so baselines are equal.

    python benchmarks/bench_shards.py [--docs 80000] [--dim 4096] [--shards 4] [--queries 512] [--batch-size 64]
                                      [--hits 1000] [--cap-mb 512] [--rounds 3] [--out docs/benchmark-shards]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _common import cpu_name  # noqa: E402

VARIANTS = {"faiss-whole": "Faiss, merged index loaded whole", "faiss-mmap": "Faiss, merged index IO_FLAG_MMAP_IFC",
            "mmap": "ours, merged index memory-mapped", "shards": "ours, shards in place (no merge)"}


def build(root: str, n: int, d: int, shards: int, chunk: int) -> dict:
    """The work dir of ``encode --no-merge`` (via the job API, as encode writes it), then ``merge`` of it."""
    from repllama_pyserini.dense.encode import EncodeSettings, merge
    from repllama_pyserini.jobs import Job, fingerprint
    work, out = os.path.join(root, "idx.job"), os.path.join(root, "idx")
    fp = fingerprint({"encoder": {"preset": {"name": "bench"}}, "shard_num": shards})
    t0 = time.perf_counter()
    for s in range(shards):
        rows = np.arange(s, n, shards)
        with Job(os.path.join(work, f"shard-{s:05d}-of-{shards:05d}"), fp).open() as job:
            for c in range(0, len(rows), chunk):
                r, buf = rows[c:c + chunk], io.BytesIO()
                np.save(buf, np.random.default_rng([s, c]).standard_normal((len(r), d), dtype=np.float32))
                job.write_chunk(f"chunk_{c // chunk:06d}", {".npy": buf.getvalue(), ".docids": "".join(
                    f"doc{j}\n" for j in r).encode()}, rows=len(r), consumed=len(r), skipped=0, truncated=0, empty=0,
                    dimension=d)
            job.set_complete(rows=len(rows))
    encode_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    merge(EncodeSettings(output=out, keep_chunks=True), by_hand=True)
    return {"work": work, "out": out, "write_shards_s": encode_s, "merge_s": time.perf_counter() - t0,
            "index_bytes": os.path.getsize(os.path.join(out, "index"))}


def drop_cache(root: str) -> None:
    """Our files' pages out of the page cache (written back first: dirty pages cannot be dropped)."""
    for base, _, files in os.walk(root):
        for f in files:
            fd = os.open(os.path.join(base, f), os.O_RDONLY)
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)


def status() -> dict:
    with open("/proc/self/status") as f:
        kv = dict(line.split(":", 1) for line in f)
    return {k: int(kv[k].split()[0]) * 1024 for k in ("VmPeak", "VmSize", "VmRSS", "RssAnon", "RssFile")}


def child(variant: str, work: str, out: str, queries: str, hits: int, batch: int, cap: int, result: str) -> None:
    """One variant in this process: open, search every batch, report ru_maxrss (under RLIMIT_AS when ``cap``)."""
    import faiss
    import repllama_pyserini.dense.search as search  # noqa: F401  (imports torch: equal baselines)
    faiss.omp_set_num_threads(1)
    Q = np.load(queries)
    base = dict(status(), ru_maxrss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    if cap:
        resource.setrlimit(resource.RLIMIT_AS, (base["VmSize"] + cap, base["VmSize"] + cap))
    rep = {"variant": variant, "baseline": base, "cap": cap}
    t0 = time.perf_counter()
    try:
        if variant.startswith("faiss"):
            flag = faiss.IO_FLAG_MMAP_IFC if variant == "faiss-mmap" else 0
            index = faiss.read_index(os.path.join(out, "index"), flag)
        else:
            index, _ = search.open_index(out if variant == "mmap" else work)
        rep["open_s"] = time.perf_counter() - t0
        D, I, times = [], [], []
        for b in range(0, len(Q), batch):
            t = time.perf_counter()
            d, i = index.search(Q[b:b + batch], hits)
            times.append(time.perf_counter() - t)
            D.append(d)
            I.append(i)
        rep.update(batch_s=times, D_sha=_sha(np.concatenate(D)), I_sha=_sha(np.concatenate(I)))
    except (MemoryError, RuntimeError) as e:
        rep["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:120]}"
    rep.update(ru_maxrss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, end=status())
    with open(result, "w") as f:
        json.dump(rep, f)


def _sha(a: np.ndarray) -> str:
    import hashlib
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def run_child(variant: str, paths: dict, args, cap: int = 0) -> dict:
    drop_cache(paths["root"])
    res = os.path.join(paths["root"], f"{variant}-{cap}.json")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", variant, paths["work"], paths["out"], paths["queries"],
           str(args.hits), str(args.batch_size), str(cap), res]
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    if not os.path.isfile(res):
        return {"variant": variant, "cap": cap, "error": f"exit {r.returncode}: {r.stderr.strip()[-300:]}"}
    with open(res) as f:
        return json.load(f)


def report(res: dict, out: str) -> None:
    mb = 1 << 20
    size = res["index_bytes"]
    rows = res["variants"]
    md = ["# Searching shards in place and memory-mapped Flat indexes", "",
          f"Made by `python benchmarks/bench_shards.py --docs {res['docs']} --dim {res['dim']} --shards "
          f"{res['shards']} --queries {res['queries']} --batch-size {res['batch_size']} --hits {res['hits']} "
          f"--cap-mb {res['cap_mb']} --rounds {res['rounds']}` on {res['cpu']}, one thread (2 cores and the disk "
          f"shared with other jobs: timings are noisy). The merged Flat index holds {res['docs']:,} random "
          f"{res['dim']}-d float32 vectors ({size / mb:,.0f} MiB); the `encode --no-merge` work dir holds the same "
          f"vectors as {res['shards']} shards of {res['chunk']}-row chunks. Each variant runs in a fresh process "
          f"which reports its own `ru_maxrss`; the index files are dropped from the page cache before each, so opening "
          f"and the first batch read the disk (cold: the best of {res['rounds']} rounds, the disk being shared); "
          f"queries/s is the batch size over the median time of the later batches of all rounds (page cache warm). Every process first imports "
          f"what Pyserini's searcher imports (torch included): its resident set after that is the baseline, and the "
          f"import itself peaks at the 'import peak'.", "",
          "| variant | open + first batch, cold (s) | queries/s, warm | peak RSS (MiB) | RSS after imports / import peak "
          "(MiB) | anonymous RSS at end (MiB) | hits = Faiss loaded whole |", "|---|---:|---:|---:|---:|---:|---|"]
    ref = next(r for r in rows if r["variant"] == "faiss-whole")
    for r in rows:
        later = [t for x in r["rounds"] for t in (x["batch_s"][1:] or x["batch_s"])]
        r["qps"] = res["batch_size"] / float(np.median(later))
        r["peak_rss"] = max(x["ru_maxrss"] for x in r["rounds"])
        r["cold_s"] = min(x["open_s"] + x["batch_s"][0] for x in r["rounds"])
        r["same_hits"] = all(x["D_sha"] == ref["D_sha"] and x["I_sha"] == ref["I_sha"] for x in r["rounds"])
        md.append(f"| {VARIANTS[r['variant']]} | {r['cold_s']:.2f} | {r['qps']:.1f} | "
                  f"{r['peak_rss'] / mb:,.0f} | {r['baseline']['VmRSS'] / mb:,.0f} / "
                  f"{r['baseline']['ru_maxrss'] / mb:,.0f} | {r['end']['RssAnon'] / mb:,.0f} | "
                  f"{'yes' if r['same_hits'] else 'NO'} |")
    md += ["", f"Not merging saves the merge ({res['merge_s']:.1f} s here, a second copy of the vectors on disk) and "
           f"the shards are searchable as soon as the last one is encoded.", "",
           f"## Under an address-space cap of {res['cap_mb']} MiB (smaller than the {size / mb:,.0f} MiB index)", "",
           f"Each process may map at most {res['cap_mb']} MiB beyond its baseline (`RLIMIT_AS`: address space, "
           f"stricter than a memory cap, since mapped files count):", "",
           "| variant | result |", "|---|---|"]
    for r in res["capped"]:
        ok = "error" not in r
        what = (f"searched all queries, peak RSS {r['ru_maxrss'] / mb:,.0f} MiB, hits = Faiss loaded whole: "
                f"{'yes' if r['D_sha'] == ref['D_sha'] and r['I_sha'] == ref['I_sha'] else 'NO'}") if ok else \
            f"fails: {r['error']}"
        md.append(f"| {VARIANTS[r['variant']]} | {what} |")
    md += ["", "Faiss' own mmap (`IO_FLAG_MMAP_IFC`, Faiss >= 1.11) maps the whole file: its resident set grows to the "
           "index size as the kernel pages it in (file-backed, `RssFile`; the kernel may drop those pages under "
           "pressure, so an index larger than RAM still works, but `ru_maxrss` and the address space show the whole "
           "index). Ours maps one window at a time and unmaps it (64 MiB, or 16 (k + 1) vectors if more: "
           f"{res['window_mib']:.0f} MiB here), so both stay about one window whatever the index size; the page cache "
           "still keeps the file between batches when RAM allows. In place, the shards' 2048-row chunks are copied "
           "into each window (windows must start on Faiss' 1024-row BLAS blocks for the scores to be identical): one "
           "more window of memory, and the copy costs queries/s; merging removes that cost, not the memory bound.",
           "", "On a cold page cache, Faiss' mmap pages the file in fault by fault (slow on this disk); ours maps each "
           "window with `MAP_POPULATE` and has the kernel read the next one ahead (`POSIX_FADV_WILLNEED`).", "",
           "Usage: `python -m pyserini.search.faiss --index OUTPUT.job ...` searches the shards of `encode "
           "--no-merge`; `REPLLAMA_PYSERINI_MMAP=1 python -m pyserini.search.faiss --index INDEX_DIR ...` a Flat "
           "index memory-mapped; both give the merged index's hits exactly (see `repllama_pyserini/dense/search.py`)."]
    with open(out + ".md", "w") as f:
        f.write("\n".join(md) + "\n")
    with open(out + ".json", "w") as f:
        json.dump(res, f, indent=1)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = [VARIANTS[r["variant"]].replace(", ", ",\n", 1) for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.6))
    a.barh(names[::-1], [r["peak_rss"] / mb for r in rows][::-1], color="#4c72b0", label="peak RSS")
    a.barh(names[::-1], [r["baseline"]["VmRSS"] / mb for r in rows][::-1], color="#a1b7d8", label="after imports")
    a.axvline(size / mb, color="#c44e52", ls="--", label="index size")
    a.set_xlabel("MiB")
    a.legend(loc="lower right", fontsize=8)
    b.barh(names[::-1], [r["qps"] for r in rows][::-1], color="#55a868")
    b.set_xlabel(f"queries/s (batches of {res['batch_size']}, k={res['hits']}, 1 thread, median)")
    b.set_yticklabels([])
    fig.tight_layout()
    fig.savefig(out + ".png", dpi=120)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=80_000)
    ap.add_argument("--dim", type=int, default=4096)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--chunk-size", type=int, default=2048)
    ap.add_argument("--queries", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--hits", type=int, default=1000)
    ap.add_argument("--cap-mb", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3, help="runs of each variant (the cores may be shared)")
    ap.add_argument("--dir", default=None, help="where the index goes (removed at the end)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(HERE), "docs", "benchmark-shards"))
    args = ap.parse_args(argv)
    root = tempfile.mkdtemp(prefix="bench-shards-", dir=args.dir)
    try:
        paths = dict(build(root, args.docs, args.dim, args.shards, args.chunk_size), root=root,
                     queries=os.path.join(root, "queries.npy"))
        np.save(paths["queries"], np.random.default_rng(99).standard_normal((args.queries, args.dim), np.float32))
        runs = [run_child(v, paths, args) for _ in range(args.rounds) for v in VARIANTS]  # rounds interleaved
        for r in runs:
            if "error" in r:
                raise SystemExit(f"{r['variant']} failed: {r['error']}")
        variants = [dict(rounds=[r for r in runs if r["variant"] == v], **next(r for r in runs if r["variant"] == v))
                    for v in VARIANTS]
        capped = [run_child(v, paths, args, cap=args.cap_mb << 20) for v in VARIANTS]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    res = {"cpu": cpu_name(), "python": platform.python_version(), "docs": args.docs, "dim": args.dim,
           "shards": args.shards, "chunk": args.chunk_size, "queries": args.queries, "batch_size": args.batch_size,
           "hits": args.hits, "cap_mb": args.cap_mb, "rounds": args.rounds,
           **{k: paths[k] for k in ("write_shards_s", "merge_s", "index_bytes")},
           "window_mib": max(64 << 20, ((16 * (args.hits + 1)) // 1024 * 1024) * 4 * args.dim) / (1 << 20),
           "variants": variants, "capped": capped}
    report(res, args.out)
    print(open(args.out + ".md").read())


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8]),
              sys.argv[9])
    else:
        main()
