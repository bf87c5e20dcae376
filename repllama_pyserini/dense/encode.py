"""Encode a corpus with RepLLaMA into a Faiss index Pyserini opens: a resumable, shardable job
(``docs/reliability.md``).

The corpus is streamed; this process's shard (document ``i`` goes to shard ``i % shard_num``; under ``torchrun`` the
shard defaults to ``RANK/WORLD_SIZE`` and the device to ``cuda:LOCAL_RANK``) is cut into chunks of ``chunk_size``
documents, each written as ``chunk_NNNNNN.npy`` + ``.docids`` through :class:`repllama_pyserini.jobs.Job` under
``WORK/shard-SSSSS-of-NNNNN/`` (``WORK``: ``OUTPUT.job``). The process that completes the last shard merges them into
``OUTPUT`` (:mod:`.index`); ``merge`` does it by hand.
"""
from __future__ import annotations

import glob
import io
import os
import shutil
import sys
import time
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from ..cli import InputError, log
from ..formats.corpus import corpus_files, count_docs, iter_corpus
from ..jobs import Job, Lock, describe_changes, fingerprint, read_manifest
from ..models import checkpoint_identity, resolve_device, resolve_dtype
from .index import check_index_type, index_spec, read_metadata, write_index

FORMAT = "repllama-pyserini-index/2"


@dataclass
class EncodeSettings:
    output: str
    corpus: Optional[str] = None
    work_dir: Optional[str] = None
    shard_id: Optional[int] = None
    shard_num: Optional[int] = None
    chunk_size: int = 2048
    on_empty: str = "encode"          # encode | skip | error
    max_docs: Optional[int] = None
    index_type: str = "Flat"
    train_size: int = 65536
    nprobe: Optional[int] = None
    ef_search: Optional[int] = None
    merge: bool = True
    keep_chunks: bool = False
    overwrite: bool = False
    progress: bool = True

    @property
    def work(self) -> str:
        return self.work_dir or os.path.abspath(self.output).rstrip(os.sep) + ".job"


def shard_of(s: EncodeSettings) -> Tuple[int, int]:
    """``(shard id, shard count)``: the flags, else torchrun's ``RANK``/``WORLD_SIZE``, else ``(0, 1)``."""
    rank, world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
    n = s.shard_num or (int(world) if world and int(world) > 1 else 1)
    i = s.shard_id if s.shard_id is not None else (int(rank) if world and int(world) > 1 else 0)
    if not 0 <= i < n:
        raise InputError(f"--shard-id {i} is not in [0, {n})")
    return i, n


def identity(preset, dtype: str, device: str) -> dict:
    """What identifies the vectors (see RepLLaMAEncoder.identity), computed without loading the model."""
    dev = resolve_device(device)
    return dict(preset=preset.to_dict(), checkpoint=checkpoint_identity(preset.model, preset.base_model),
                dtype=str(resolve_dtype(dtype, dev)))


def check_existing(s: EncodeSettings, fp: dict) -> bool:
    """True when OUTPUT already holds the index this job would build, intact; an error when it holds another (or a
    damaged one) and ``--overwrite`` is not given; False when there is none or it is to be replaced."""
    meta = read_metadata(s.output) if os.path.isdir(s.output) else None
    if meta is None or s.overwrite:
        return False
    sizes = {f: os.path.getsize(os.path.join(s.output, f)) if os.path.isfile(os.path.join(s.output, f)) else None
             for f in meta.get("sizes", {})}
    if not sizes or sizes != meta["sizes"]:
        raise InputError(f"{s.output} holds a damaged index (files missing or of another size than written); pass "
                         f"--overwrite to rebuild it")
    changes = describe_changes(meta.get("fingerprint", {}), fp)
    wanted = index_spec(s.index_type, meta.get("dimension", 0), meta.get("num_docs", 0))
    if wanted != meta.get("index_type"):
        changes.append(f"index_type: {meta.get('index_type')} -> {wanted}")
    if changes:
        raise InputError(f"{s.output} already holds an index built with other settings, inputs or weights "
                         f"({'; '.join(changes[:3])}); pass --overwrite (the old index stays until the new one is "
                         f"complete) or another --output")
    log(f"index already complete: {s.output} ({meta.get('num_docs')} docs); --overwrite rebuilds it")
    return True


def encode_corpus(s: EncodeSettings, make_encoder, preset, dtype: str = "auto", device: str = "auto") -> Optional[str]:
    """Encode this process's shard (resuming), then merge when every shard is done. ``make_encoder()`` loads the
    model (only when there is something to encode). Returns the index dir when this call produced or found it."""
    if s.chunk_size < 1:
        raise InputError("--chunk-size must be >= 1")
    if s.on_empty not in ("encode", "skip", "error"):
        raise InputError("--on-empty must be encode, skip or error")
    i, n = shard_of(s)
    if device == "auto" and os.environ.get("LOCAL_RANK") and n > 1:
        import torch
        device = f"cuda:{os.environ['LOCAL_RANK']}" if torch.cuda.is_available() else "cpu"
    # settings, the weights (in the identity) and the bytes of the corpus files the reader reads (not a whole folder)
    settings = dict(encoder=identity(preset, dtype, device), chunk_size=s.chunk_size, shard_num=n,
                    on_empty=s.on_empty, max_docs=s.max_docs)
    fp = fingerprint(settings, {"corpus": corpus_files(s.corpus)[1]})
    if check_existing(s, fp):
        return s.output
    if s.merge and preset.dimension:
        check_index_type(s.index_type, preset.dimension)
    with Job(os.path.join(s.work, f"shard-{i:05d}-of-{n:05d}"), fp, f"encoding shard {i}/{n}").open(s.overwrite) as job:
        if not job.complete:
            _encode_shard(job, make_encoder, s, i, n)
    return merge(s) if s.merge else None


def _own_chunks(s: EncodeSettings, i: int, n: int):
    """``(k, [(docid, Doc, where), ...])`` for this shard's chunks, in corpus order."""
    chunk, k = [], 0
    for j, rec in enumerate(iter_corpus(s.corpus)):
        if s.max_docs is not None and j >= s.max_docs:
            break
        if j % n != i:
            continue
        chunk.append(rec)
        if len(chunk) == s.chunk_size:
            yield k, chunk
            chunk, k = [], k + 1
    if chunk:
        yield k, chunk


def _encode_shard(job: Job, make_encoder, s: EncodeSettings, i: int, n: int) -> None:
    from tqdm import tqdm
    total = count_docs(s.corpus)
    total = min(total, s.max_docs) if s.max_docs is not None else total
    done = sum(c["consumed"] for c in job.chunks().values())
    with tqdm(total=(total - i + n - 1) // n, initial=done, unit="doc", dynamic_ncols=True, smoothing=0.05,
              disable=not s.progress, desc=f"encode shard {i}/{n}", file=sys.stderr) as bar:
        _encode_chunks(job, make_encoder, s, i, n, bar)
    c = job.chunks().values()
    job.set_complete(rows=sum(x["rows"] for x in c))
    log(f"shard {i}/{n}: {sum(x['rows'] for x in c)} docs encoded ({sum(x['truncated'] for x in c)} truncated, "
        f"{sum(x['empty'] for x in c)} without text, {sum(x['skipped'] for x in c)} skipped) in {job.dir}")


def _encode_chunks(job: Job, make_encoder, s: EncodeSettings, i: int, n: int, bar) -> None:
    encoder, started, tokens0 = None, time.time(), 0
    for k, chunk in _own_chunks(s, i, n):
        name = f"chunk_{k:06d}"
        if job.has(name):
            continue
        keep = []
        for docid, doc, where in chunk:
            if doc.is_empty() and s.on_empty != "encode":
                if s.on_empty == "error":
                    raise InputError(f"{where}: document {docid!r} has no text (--on-empty skip|encode to go on)")
                continue
            keep.append((docid, doc))
        if encoder is None:
            encoder = make_encoder()
            tokens0 = encoder.num_tokens
            if s.merge:
                check_index_type(s.index_type, encoder.dimension)
        t0, e0 = encoder.num_truncated, encoder.num_empty
        emb = encoder.encode_docs([d for _, d in keep], on_batch=bar.update)  # the bar moves per batch
        buf = io.BytesIO()
        np.save(buf, emb)
        job.write_chunk(name, {".npy": buf.getvalue(), ".docids": "".join(d + "\n" for d, _ in keep).encode()},
                        rows=len(keep), consumed=len(chunk), skipped=len(chunk) - len(keep),
                        truncated=encoder.num_truncated - t0, empty=encoder.num_empty - e0,
                        dimension=int(emb.shape[1]))
        bar.update(len(chunk) - len(keep))  # skipped documents
        bar.set_postfix_str(f"{(encoder.num_tokens - tokens0) / max(time.time() - started, 1e-9):,.0f} tok/s",
                            refresh=False)


def _shards(work: str) -> Tuple[List[Tuple[str, dict]], int]:
    dirs = sorted(glob.glob(os.path.join(work, "shard-*-of-*")))
    if not dirs:
        raise InputError(f"no encoded shards in {work}")
    out = [(d, read_manifest(d)) for d in dirs]
    n = {d.rsplit("-of-", 1)[1] for d, _ in out}
    if len(n) > 1:
        raise InputError(f"{work} mixes shards of different --shard-num runs; remove the stale ones")
    fps = {str(m["fingerprint"]) if m else None for _, m in out}
    if None in fps or len(fps) > 1:
        raise InputError(f"{work} holds shards of different jobs (or without a manifest); rerun the encode commands")
    return out, int(n.pop())


def merge(s: EncodeSettings, by_hand: bool = False) -> Optional[str]:
    """Build ``OUTPUT`` from every shard's chunks, each verified against its checksum. While shards are unfinished:
    an error ``by_hand``, else None (the process finishing the last shard merges)."""
    shards, expected = _shards(s.work)
    waiting = expected - sum(1 for _, m in shards if m.get("complete"))
    if waiting and by_hand:
        raise InputError(f"{s.work}: {waiting} of {expected} shards are not finished (started: {len(shards)}); run "
                         f"their encode commands first")
    if waiting:
        log(f"shard done; waiting for {waiting} other shard(s), then run: python -m repllama_pyserini.dense merge "
            f"--output {s.output}" + (f" --work-dir {s.work}" if s.work_dir else ""))
        return None
    lock = Lock(os.path.join(s.work, "merge.LOCK"), f"the merge into {s.output}")
    try:
        lock.acquire()
    except InputError as e:
        if by_hand:
            raise
        log(f"note: {e}")
        return None
    with lock:
        fp = shards[0][1]["fingerprint"]
        if check_existing(s, fp):
            return s.output
        chunks, dims = [], set()
        for d, _ in shards:
            job = Job(d, fp, f"shard {os.path.basename(d)}")
            job.manifest = read_manifest(d)
            if job.verify():
                raise InputError(f"{d}: damaged chunks were dropped; rerun the encode command of that shard to "
                                 f"re-encode them, then merge")
            for name, c in sorted(job.chunks().items()):
                chunks.append(((job.path(name, ".npy"), job.path(name, ".docids")), c["rows"]))
                dims.add(c["dimension"])
        if len(dims) > 1:
            raise InputError(f"dimension mismatch between the chunks of {s.work}: {sorted(dims)}")

        def load(ref):
            x = np.load(ref[0], mmap_mode="r")
            with open(ref[1], encoding="utf-8") as f:
                return x, [line.rstrip("\n") for line in f]

        ident = fp["settings"]["encoder"]
        info = dict(format=FORMAT, fingerprint=fp, encoder=ident, corpus=s.corpus and os.path.abspath(s.corpus),
                    shard_num=len(shards), **{k: sum(c[k] for _, m in shards for c in m["chunks"].values())
                                              for k in ("truncated", "empty", "skipped")})
        write_index(s.output, chunks, load, dims.pop() if dims else 0, info, s.index_type, s.train_size, s.nprobe,
                    s.ef_search)
        if not s.keep_chunks:  # only what the job made: --work-dir may hold other things
            for d, _ in shards:
                shutil.rmtree(d, ignore_errors=True)
            if os.path.exists(os.path.join(s.work, "merge.LOCK")):
                os.unlink(os.path.join(s.work, "merge.LOCK"))
            if not os.listdir(s.work):
                os.rmdir(s.work)
        return s.output
