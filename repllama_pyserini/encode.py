"""Encode a corpus with RepLLaMA into a Faiss index that Pyserini's ``FaissSearcher`` opens.

::

    python -m repllama_pyserini.encode --corpus CORPUS --encoder MODEL --output INDEX_DIR [options]
    python -m repllama_pyserini.encode merge --output INDEX_DIR [--index-type Flat|SQfp16|HNSW32|IVF4096,PQ64...]

``CORPUS``: a BEIR ``corpus.jsonl``, a Pyserini JsonCollection (file or folder), a Tevatron corpus JSONL, or an
MS MARCO TSV (``docid \\t text``, ``docid \\t title \\t text`` or ``docid \\t url \\t title \\t body``); plain or
gzipped. It is streamed: memory does not grow with the corpus (the merge keeps 8 bytes per docid to find
duplicates). ``MODEL``: a preset name (``castorini/repllama-v1-7b-lora-passage``), a preset YAML, a hub id or a
local directory (full model or LoRA adapter).

How it works:

* documents are read in chunks of ``--chunk-size``; within a chunk they are sorted by token length, encoded in
  batches of ``--batch-size`` (and at most ``--max-batch-tokens`` padded tokens, if given), which cuts padding,
  and put back in corpus order; flags also go by their Tevatron names (``--model_name_or_path``,
  ``--passage_max_len``, ``--per_device_eval_batch_size``...);
* each finished chunk is written atomically (``chunk_000123.npy`` + ``chunk_000123.docids`` under
  ``INDEX_DIR/chunks/shard-SSSSS-of-NNNNN/``, temp name then rename) and recorded in that shard's
  ``manifest.json``; a restarted run checks the manifest's configuration and continues after the last
  finished chunk, so a killed run loses at most one chunk of work;
* ``--shard-id/--num-shards`` split the corpus round-robin (document ``i`` goes to shard ``i % num_shards``);
  under ``torchrun`` they default to ``RANK/WORLD_SIZE`` and the device to ``cuda:LOCAL_RANK``. The process that
  completes the last shard merges (a lock file makes sure only one does); ``merge`` can also be run by hand;
* the merge writes ``INDEX_DIR/index`` (Faiss, inner product) and ``INDEX_DIR/docid`` (one docid per line,
  every docid exactly once: duplicates are an error, or ``--on-duplicate first`` keeps the first),
  plus ``INDEX_DIR/repllama-index.json`` (model, preset, dimension, counts). ``--index-type Flat`` (default) is
  streamed to disk chunk by chunk; any other Faiss index-factory string (``SQfp16`` = fp16 storage, half the
  size; ``HNSW32``; ``IVF4096,PQ64``...) is trained on a sample and filled chunk by chunk. ``--nprobe`` and
  ``--ef-search`` are stored in the index, so Pyserini searches with them.

Document handling: text beyond ``--max-length`` tokens is truncated (the EOS kept; counted); documents with no
text and no title are encoded as the prefix alone (``--on-empty encode``, counted and reported), skipped
(``skip``) or refused (``error``); a docid that is empty or contains whitespace is an error (Pyserini's docid
file is line-based).
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import gzip
import hashlib
import json
import os
import shutil
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

from .io import (InputError, _doc_fields, atomic_write, corpus_files, json_object, open_text, require_file,
                 run_cli)

FORMAT = "repllama-pyserini-chunks/1"
MANIFEST = "manifest.json"
METADATA = "repllama-index.json"
LOCK = "merge.lock"
INDEX_SHORTCUTS = {"flat": "Flat", "fp16": "SQfp16", "hnsw": "HNSW32"}
TSV_SUFFIXES = (".tsv", ".tsv.gz", ".txt", ".txt.gz")


# -- arguments (Tevatron-v2 style dataclasses) ----------------------------------------------------------------
@dataclass
class ModelArguments:
    encoder: str = field(metadata={"help": "preset name, preset YAML, hub id or local dir (model or LoRA adapter)",
                                   "aliases": ["--model", "--model-name-or-path", "--model_name_or_path"]})
    base_model: Optional[str] = field(default=None, metadata={"help": "base of a LoRA adapter (default: from "
                                                                      "its adapter_config.json or the preset)"})
    tokenizer: Optional[str] = field(default=None, metadata={"help": "tokenizer (default: preset, model, base)"})
    dtype: str = field(default="auto", metadata={"help": "auto (fp32 on CPU, bf16/fp16 on GPU), fp32, fp16, bf16"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:N"})
    attn_implementation: Optional[str] = field(default=None, metadata={
        "help": "default: flash_attention_2 with flash-attn on CUDA, else sdpa"})


@dataclass
class DataArguments:
    corpus: str = field(metadata={"help": "corpus file or folder (JSONL/TSV, plain or .gz)"})
    output: str = field(metadata={"help": "index directory to write (index, docid)"})
    work_dir: Optional[str] = field(default=None, metadata={"help": "where chunks go (default OUTPUT/chunks)"})
    max_length: Optional[int] = field(default=None, metadata={"help": "passage max tokens (default: preset)",
                                                              "aliases": ["--passage-max-len", "--passage_max_len"]})
    passage_prefix: Optional[str] = field(default=None, metadata={"help": "default: preset ('passage: ')"})
    on_empty: str = field(default="encode", metadata={"help": "documents with no text: encode|skip|error",
                                                      "choices": ["encode", "skip", "error"]})
    max_docs: Optional[int] = field(default=None, metadata={"help": "encode only the first N documents"})
    shard_id: Optional[int] = field(default=None, metadata={"help": "0-based (default: $RANK or 0)"})
    num_shards: Optional[int] = field(default=None, metadata={"help": "default: $WORLD_SIZE or 1"})


@dataclass
class EncodeArguments:
    batch_size: int = field(default=16, metadata={"help": "documents per forward pass (at most)",
                                                  "aliases": ["--per_device_eval_batch_size"]})
    max_batch_tokens: Optional[int] = field(default=None, metadata={
        "help": "also cap a batch at this many (padded) tokens: long documents in small batches"})
    chunk_size: int = field(default=2048, metadata={"help": "documents per checkpointed chunk (= sort window)"})
    pad_to_multiple_of: Optional[int] = field(default=None, metadata={"help": "e.g. 8 on GPUs"})
    merge: bool = field(default=True, metadata={"help": "merge into the index once every shard is complete"})
    overwrite: bool = field(default=False, metadata={"help": "discard existing chunks/index in OUTPUT"})
    count: bool = field(default=True, metadata={"help": "count the corpus first, for the progress bar's ETA"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})


@dataclass
class MergeArguments:
    output: str = field(metadata={"help": "index directory (chunks in OUTPUT/chunks unless --work-dir)"})
    work_dir: Optional[str] = field(default=None, metadata={"help": "default OUTPUT/chunks"})
    index_type: str = field(default="Flat", metadata={
        "help": "Faiss index factory string or flat|fp16|hnsw|ivfpq (inner product)"})
    on_duplicate: str = field(default="error", metadata={"help": "error|first", "choices": ["error", "first"]})
    train_size: int = field(default=65536, metadata={"help": "vectors sampled to train IVF/PQ/SQ indexes"})
    nprobe: Optional[int] = field(default=None, metadata={"help": "IVF lists searched (stored in the index)"})
    ef_search: Optional[int] = field(default=None, metadata={"help": "HNSW efSearch (stored in the index)"})
    keep_chunks: bool = field(default=False, metadata={"help": "keep the chunks after a successful merge"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing index"})


@dataclass
class EncodeIndexArguments(MergeArguments):
    """Merge options accepted by the encode command (its own ``output``/``work_dir``/``overwrite`` win)."""
    output: str = ""


def _add_dataclass(parser: argparse.ArgumentParser, cls, skip=()) -> None:
    group = parser.add_argument_group(cls.__name__)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        names = [f"--{f.name.replace('_', '-')}"] + f.metadata.get("aliases", [])
        kwargs = dict(dest=f.name, help=f.metadata.get("help") or "")
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        tp = f.type if not isinstance(f.type, str) else eval(f.type, globals())  # noqa: S307 (our own annotations)
        base = [a for a in getattr(tp, "__args__", (tp,)) if a is not type(None)][0]
        if base is bool:
            kwargs.update(action=argparse.BooleanOptionalAction, default=f.default)
        else:
            kwargs.update(type=base, required=required, default=None if required else f.default)
            if "choices" in f.metadata:
                kwargs["choices"] = f.metadata["choices"]
        if not required and f.default is not None and "default:" not in kwargs["help"]:
            kwargs["help"] = (kwargs["help"] + f" (default: {f.default})").strip()
        group.add_argument(*names, **kwargs)
        if "_" in f.name:  # Tevatron's spelling is accepted too, without cluttering --help
            hidden = dict(kwargs, help=argparse.SUPPRESS, required=False)
            group.add_argument(f"--{f.name}", **hidden)


def _build(cls, ns: argparse.Namespace):
    return cls(**{f.name: getattr(ns, f.name) for f in dataclasses.fields(cls)})


# -- reading the corpus ---------------------------------------------------------------------------------------
def _files(path: str) -> List[str]:
    require_file(path, "corpus")
    if os.path.isfile(path):
        return [path]
    try:
        return corpus_files(path)
    except InputError:
        tsv = sorted(f for s in TSV_SUFFIXES for f in glob.glob(os.path.join(path, "*" + s)))
        if tsv:
            return tsv
        raise


def _is_tsv(path: str) -> bool:
    return path.endswith(TSV_SUFFIXES)


def _lines(files: List[str]) -> Iterator[Tuple[str, int, str]]:
    for f in files:
        with open_text(f) as fh:
            for lineno, line in enumerate(fh, 1):
                if line.strip():
                    yield f, lineno, line


def count_documents(files: List[str]) -> int:
    """Non-empty lines, read as raw bytes (fast; used for the progress bar only)."""
    n = 0
    for f in files:
        opener = gzip.open if f.endswith(".gz") else open
        with opener(f, "rb") as fh:
            tail = b"\n"
            while True:
                block = fh.read(1 << 24)
                if not block:
                    break
                n += block.count(b"\n") - block.count(b"\n\n")
                tail = block[-1:]
            n += tail != b"\n"
    return n


def parse_record(f: str, lineno: int, line: str, extra_fields=()) -> Tuple[str, Dict[str, Optional[str]]]:
    """One corpus line -> ``(docid, {'title','text','url',...})``."""
    where = f"{f}:{lineno}"
    if _is_tsv(f):
        parts = line.rstrip("\n\r").split("\t")
        if len(parts) == 2:
            docid, fields = parts[0], {"text": parts[1]}
        elif len(parts) == 3:
            docid, fields = parts[0], {"title": parts[1], "text": parts[2]}
        elif len(parts) == 4:
            docid, fields = parts[0], {"url": parts[1], "title": parts[2], "text": parts[3]}
        else:
            raise InputError(f"{where}: expected 'docid<TAB>text' (2-4 tab-separated columns), got {len(parts)}")
    else:
        obj = json_object(line, where)
        docid, title, text = _doc_fields(obj, where)
        fields = {"title": title, "text": text}
        for k in ("url", *extra_fields):
            if k not in fields and obj.get(k) is not None:
                fields[k] = str(obj[k])
    docid = docid.strip()
    if not docid or any(c.isspace() for c in docid):
        raise InputError(f"{where}: docid {docid!r} is empty or contains whitespace (Pyserini's docid file is "
                         f"one id per line)")
    return docid, fields


# -- shard bookkeeping ----------------------------------------------------------------------------------------
def shard_dir(work_dir: str, shard_id: int, num_shards: int) -> str:
    return os.path.join(work_dir, f"shard-{shard_id:05d}-of-{num_shards:05d}")


def _write_json(path: str, obj) -> None:
    with atomic_write(path) as f:
        json.dump(obj, f, indent=1, sort_keys=True)


def _read_json(path: str):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def _hash_matches(recorded: Optional[str], config: dict) -> bool:
    """``recorded`` is this configuration's hash, or the hash it had before weight fingerprints and the preset's
    kind/depth were recorded (indexes and chunks made by earlier versions stay usable)."""
    legacy = {k: v for k, v in config.items() if k != "checkpoint"}
    legacy["preset"] = {k: v for k, v in config["preset"].items() if k not in ("kind", "depth")}
    return recorded in (_config_hash(config), _config_hash(legacy))


def load_manifest(sdir: str, config: dict, shard_id: int, num_shards: int) -> dict:
    """The shard's manifest (a fresh one if there is none); refuses a manifest of another configuration;
    drops temp files and chunks the manifest does not list (a kill between writing and recording). Nothing is
    created on disk here (a run that fails to load its model leaves no empty folders)."""
    path = os.path.join(sdir, MANIFEST)
    if os.path.isfile(path):
        m = _read_json(path)
        if not _hash_matches(m.get("config_hash"), config):
            old = m.get("config", {})
            diff = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
            raise InputError(f"{sdir} holds chunks of another configuration (differs in {diff}); pass "
                             f"--overwrite or another --output")
    else:
        m = dict(format=FORMAT, config=config, config_hash=_config_hash(config), shard_id=shard_id,
                 num_shards=num_shards, chunks=[], complete=False, dimension=None)
    listed = {c["file"] for c in m["chunks"]}
    for f in (os.listdir(sdir) if os.path.isdir(sdir) else []):
        stem = f.split(".")[0]
        if f.endswith(".tmp") or (stem.startswith("chunk_") and stem not in listed):
            os.unlink(os.path.join(sdir, f))
    for c in m["chunks"]:
        for ext in (".npy", ".docids"):
            if not os.path.isfile(os.path.join(sdir, c["file"] + ext)):
                raise InputError(f"{sdir}: chunk {c['file']}{ext} listed in the manifest is missing; "
                                 f"pass --overwrite to start over")
    return m


def _save_chunk(sdir: str, k: int, emb: np.ndarray, docids: List[str]) -> str:
    name = f"chunk_{k:06d}"
    with atomic_write(os.path.join(sdir, name + ".npy"), "wb", encoding=None) as f:
        np.save(f, emb)
    with atomic_write(os.path.join(sdir, name + ".docids")) as f:
        f.write("".join(d + "\n" for d in docids))
    return name


def _dist_env() -> Tuple[Optional[int], Optional[int], Optional[int]]:
    def get(k):
        v = os.environ.get(k)
        return int(v) if v not in (None, "") else None
    return get("RANK"), get("WORLD_SIZE"), get("LOCAL_RANK")


# -- encoding -------------------------------------------------------------------------------------------------
def encode_corpus(model_args: ModelArguments, data_args: DataArguments, enc_args: EncodeArguments,
                  index_args: Optional[MergeArguments] = None, encoder=None) -> Optional[str]:
    """Encode this process's shard (resuming), then merge if every shard is done. Returns the index dir when
    this call produced (or found) the final index, else None."""
    from .presets import resolve

    rank, world, local_rank = _dist_env()
    num_shards = data_args.num_shards or (world if world and world > 1 else 1)
    shard_id = data_args.shard_id if data_args.shard_id is not None else (rank if world and world > 1 else 0)
    if not 0 <= shard_id < num_shards:
        raise InputError(f"--shard-id {shard_id} is not in [0, {num_shards})")
    if enc_args.chunk_size < 1 or enc_args.batch_size < 1:
        raise InputError("--chunk-size and --batch-size must be >= 1")
    device = model_args.device
    if device == "auto" and local_rank is not None and world and world > 1:
        import torch
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"

    files = _files(data_args.corpus)
    work = data_args.work_dir or os.path.join(data_args.output, "chunks")
    preset, _ = resolve(model_args.encoder, base_model=model_args.base_model, tokenizer=model_args.tokenizer,
                        passage_max_length=data_args.max_length, passage_prefix=data_args.passage_prefix)
    from .models import checkpoint_identity
    config = dict(encoder=model_args.encoder, preset=preset.to_dict(), dtype=model_args.dtype,
                  checkpoint=checkpoint_identity(preset.model, preset.base_model),
                  corpus=[[os.path.abspath(f), os.path.getsize(f)] for f in files], chunk_size=enc_args.chunk_size,
                  num_shards=num_shards, on_empty=data_args.on_empty, max_docs=data_args.max_docs)
    meta_path = os.path.join(data_args.output, METADATA)
    sdir = shard_dir(work, shard_id, num_shards)
    if enc_args.overwrite:  # each shard clears its own chunks; shard 0 also the index and stale shard layouts
        if os.path.isdir(sdir):
            shutil.rmtree(sdir)
        if shard_id == 0:
            for d in glob.glob(os.path.join(work, "shard-*-of-*")):
                if not d.endswith(f"-of-{num_shards:05d}"):
                    shutil.rmtree(d)
            for f in [os.path.join(data_args.output, x) for x in ("index", "docid", METADATA)] + \
                    [os.path.join(work, LOCK)]:
                if os.path.exists(f):
                    os.unlink(f)
    elif os.path.isfile(meta_path) and os.path.isfile(os.path.join(data_args.output, "index")):
        meta = _read_json(meta_path)
        if _hash_matches(meta.get("config_hash"), config):
            _log(f"index already complete: {data_args.output} ({meta.get('num_docs')} docs)")
            return data_args.output
        raise InputError(f"{data_args.output} already holds an index built with another configuration; "
                         f"pass --overwrite or another --output")

    manifest = load_manifest(sdir, config, shard_id, num_shards)
    if not manifest["complete"]:
        if encoder is None:
            from .encoder import RepLLaMAEncoder
            encoder = RepLLaMAEncoder(model_args.encoder, base_model=model_args.base_model,
                                      tokenizer_name=model_args.tokenizer, device=device, dtype=model_args.dtype,
                                      attn_implementation=model_args.attn_implementation,
                                      passage_prefix=data_args.passage_prefix,
                                      passage_max_length=data_args.max_length, batch_size=enc_args.batch_size,
                                      max_batch_tokens=enc_args.max_batch_tokens,
                                      pad_to_multiple_of=enc_args.pad_to_multiple_of)
        if enc_args.merge:
            check_index_type((index_args or MergeArguments(output=data_args.output)).index_type, encoder.dimension)
        _encode_shard(encoder, files, sdir, manifest, shard_id, num_shards, data_args, enc_args)
    if not enc_args.merge:
        return None
    return _maybe_merge(work, data_args.output, num_shards, index_args or MergeArguments(output=data_args.output))


def _own_lines(files, shard_id, num_shards, skip, max_docs) -> Iterator[Tuple[str, int, str]]:
    """This shard's lines (round-robin over the corpus), after the first ``skip`` of them."""
    own = 0
    for i, item in enumerate(_lines(files)):
        if max_docs is not None and i >= max_docs:
            return
        if i % num_shards != shard_id:
            continue
        own += 1
        if own > skip:
            yield item


def _encode_shard(encoder, files, sdir, manifest, shard_id, num_shards, data_args, enc_args) -> None:
    from tqdm import tqdm

    os.makedirs(sdir, exist_ok=True)
    preset = encoder.preset
    max_len = preset.passage_max_length
    consumed = sum(c["consumed"] for c in manifest["chunks"])
    total = None
    if enc_args.count:
        n = count_documents(files)
        if data_args.max_docs is not None:
            n = min(n, data_args.max_docs)
        total = max(0, (n - shard_id + num_shards - 1) // num_shards)
    bar = tqdm(total=total, initial=consumed, unit="doc", dynamic_ncols=True, disable=not enc_args.progress,
               desc=f"shard {shard_id}/{num_shards}", file=sys.stderr, smoothing=0.05)
    delay = float(os.environ.get("REPLLAMA_PYSERINI_CHUNK_DELAY", "0") or 0)  # for kill/resume tests
    started, tokens0 = time.time(), encoder.num_tokens
    lines = _own_lines(files, shard_id, num_shards, consumed, data_args.max_docs)
    k = len(manifest["chunks"])
    extra = [f for f in preset.passage_fields if f not in ("title", "text", "url")]
    while True:
        batch = []
        for item in lines:
            batch.append(item)
            if len(batch) == enc_args.chunk_size:
                break
        if not batch:
            break
        docids, columns, seen, skipped = [], {f: [] for f in preset.passage_fields}, set(), 0
        empty = 0
        for f, lineno, line in batch:
            docid, fields = parse_record(f, lineno, line, extra)
            if docid in seen:
                raise InputError(f"{f}:{lineno}: duplicate docid {docid!r}")
            seen.add(docid)
            if not any((fields.get(x) or "").strip() for x in preset.passage_fields):
                empty += 1
                if data_args.on_empty == "error":
                    raise InputError(f"{f}:{lineno}: document {docid!r} has no text (--on-empty skip|encode "
                                     f"to go on)")
                if data_args.on_empty == "skip":
                    skipped += 1
                    continue
            docids.append(docid)
            for x in preset.passage_fields:
                columns[x].append(fields.get(x))
        truncated0 = encoder.num_truncated
        texts = encoder.passage_texts(columns.get("text") or [None] * len(docids), columns.get("title"),
                                      **{x: v for x, v in columns.items() if x not in ("text", "title")})
        emb = encoder.embed_ids(encoder.tokenize(texts, max_len))
        name = _save_chunk(sdir, k, emb, docids)
        manifest["chunks"].append(dict(file=name, rows=len(docids), consumed=len(batch), empty=empty,
                                       skipped=skipped, truncated=encoder.num_truncated - truncated0))
        manifest["dimension"] = int(emb.shape[1])
        _write_json(os.path.join(sdir, MANIFEST), manifest)
        k += 1
        bar.update(len(batch))
        dt = max(time.time() - started, 1e-9)
        bar.set_postfix_str(f"{(encoder.num_tokens - tokens0) / dt:,.0f} tok/s", refresh=False)
        if delay:
            time.sleep(delay)
    bar.close()
    manifest["complete"] = True
    _write_json(os.path.join(sdir, MANIFEST), manifest)
    c = manifest["chunks"]
    _log(f"shard {shard_id}/{num_shards}: {sum(x['rows'] for x in c)} docs encoded "
         f"({sum(x['truncated'] for x in c)} truncated to {max_len} tokens, {sum(x['empty'] for x in c)} "
         f"without text, {sum(x['skipped'] for x in c)} skipped) in {sdir}")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- merging --------------------------------------------------------------------------------------------------
def _shards(work: str, num_shards: Optional[int] = None) -> List[dict]:
    dirs = sorted(glob.glob(os.path.join(work, "shard-*-of-*")))
    if not dirs:
        raise InputError(f"no encoded shards in {work}")
    ms = []
    for d in dirs:
        path = os.path.join(d, MANIFEST)
        if not os.path.isfile(path):
            raise InputError(f"{d} has no {MANIFEST} (not written by repllama_pyserini.encode?)")
        m = _read_json(path)
        m["dir"] = d
        ms.append(m)
    n = num_shards or ms[0]["num_shards"]
    if any(m["num_shards"] != n for m in ms):
        raise InputError(f"{work} mixes shards of different --num-shards runs; remove the stale ones")
    if any(m["config_hash"] != ms[0]["config_hash"] for m in ms):
        raise InputError(f"{work} holds shards encoded with different configurations")
    ids = sorted(m["shard_id"] for m in ms)
    if ids != list(range(n)):
        raise InputError(f"{work}: shards {sorted(set(range(n)) - set(ids))} of {n} have not been started")
    return sorted(ms, key=lambda m: m["shard_id"])


def _all_complete(work: str, num_shards: int) -> bool:
    try:
        return all(m["complete"] for m in _shards(work, num_shards))
    except InputError:
        return False


def _maybe_merge(work: str, output: str, num_shards: int, args: MergeArguments) -> Optional[str]:
    if not _all_complete(work, num_shards):
        _log(f"shard done; waiting for the other shards, then run: python -m repllama_pyserini.encode merge "
             f"--output {output}" + (f" --work-dir {work}" if work != os.path.join(output, "chunks") else ""))
        return None
    lock = os.path.join(work, LOCK)
    if _stale_lock(lock):
        os.unlink(lock)
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        _log(f"another process is merging ({lock}); if none is, run the merge command")
        return None
    os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
    os.close(fd)
    try:
        margs = dataclasses.replace(args, output=output, work_dir=work, overwrite=True)
        return merge(margs)
    finally:
        if os.path.exists(lock):
            os.unlink(lock)


def _stale_lock(lock: str) -> bool:
    """A merge lock left by a dead process of this host (a run killed while merging)."""
    try:
        with open(lock, encoding="utf-8") as f:
            pid, host = f.read().split()[:2]
        if host != socket.gethostname():
            return False
        os.kill(int(pid), 0)
        return False
    except ProcessLookupError:
        return True
    except (OSError, ValueError):
        return False


def _docid_hashes(paths: List[str]) -> np.ndarray:
    out = []
    for p in paths:
        with open(p, encoding="utf-8") as f:
            out.append(np.fromiter((int.from_bytes(hashlib.blake2b(line.rstrip("\n").encode(), digest_size=8)
                                                   .digest(), "little") for line in f), dtype=np.uint64))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.uint64)


def _keep_mask(hashes: np.ndarray, doc_paths: List[str], policy: str) -> Optional[np.ndarray]:
    """None when every docid is unique; else the rows to keep (first occurrence) or an error."""
    order = np.argsort(hashes, kind="stable")
    s = hashes[order]
    dup_sorted = np.nonzero(s[1:] == s[:-1])[0] + 1
    if len(dup_sorted) == 0:
        return None
    suspects = set(order[np.isin(s, s[dup_sorted])].tolist())
    names, row = {}, 0
    for p in doc_paths:  # confirm with the strings (a 64-bit hash collision is not a duplicate)
        with open(p, encoding="utf-8") as f:
            for line in f:
                if row in suspects:
                    names[row] = line.rstrip("\n")
                row += 1
    firsts = {}
    real = []
    for r in sorted(suspects):
        if names[r] in firsts:
            real.append(r)
        else:
            firsts[names[r]] = r
    if not real:
        return None
    if policy == "error":
        example = names[real[0]]
        raise InputError(f"{len(real)} duplicate docid(s) in the corpus, e.g. {example!r}; the index would "
                         f"return them twice. Deduplicate the corpus or merge with --on-duplicate first")
    keep = np.ones(len(hashes), dtype=bool)
    keep[real] = False
    _log(f"dropped {len(real)} later copies of duplicate docids (kept the first of each)")
    return keep


def _flat_header(d: int, n: int) -> bytes:
    """The bytes Faiss writes before the vectors of an ``IndexFlatIP`` holding ``n`` ``d``-dim vectors, derived
    from Faiss' own serialisation of 0..3 vectors (count fields located and checked to be linear in n)."""
    import faiss

    def ser(k):
        idx = faiss.IndexFlatIP(d)
        if k:
            idx.add(np.zeros((k, d), dtype=np.float32))
        return bytes(faiss.serialize_index(idx))

    h0 = ser(0)
    hs = [ser(k)[:len(h0)] for k in (1, 2, 3)]
    diff = [i for i in range(len(h0)) if h0[i] != hs[0][i]]
    offsets = []
    for i in diff:
        if not any(o <= i < o + 8 for o in offsets):
            offsets.append(i)
    fields = []
    for o in offsets:
        v1 = int.from_bytes(hs[0][o:o + 8], "little")
        if int.from_bytes(hs[1][o:o + 8], "little") != 2 * v1 or int.from_bytes(hs[2][o:o + 8], "little") != 3 * v1:
            raise RuntimeError("unexpected Faiss IndexFlat serialisation; use --index-type with a factory string")
        fields.append((o, v1))
    out = bytearray(h0)
    for o, v1 in fields:
        out[o:o + 8] = (v1 * n).to_bytes(8, "little")
    for k in (1, 2):  # self-check against Faiss
        hdr = bytearray(h0)
        for o, v1 in fields:
            hdr[o:o + 8] = (v1 * k).to_bytes(8, "little")
        if bytes(hdr) != hs[k - 1]:
            raise RuntimeError("unexpected Faiss IndexFlat serialisation; use --index-type with a factory string")
    return bytes(out)


def check_index_type(index_type: str, d: int) -> None:
    """Refuse an --index-type Faiss cannot make for dimension ``d`` before hours of encoding, not after."""
    import faiss
    spec = _index_spec(index_type, d, 1_000_000)
    if spec == "Flat":
        return
    try:
        faiss.index_factory(d, spec, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise InputError(f"bad --index-type {index_type!r} for {d}-d embeddings: "
                         f"{str(e).strip().splitlines()[-1]}") from None


def _index_spec(spec: str, d: int, n: int) -> str:
    s = INDEX_SHORTCUTS.get(spec.lower(), spec)
    if spec.lower() in ("ivfpq", "ivf-pq"):
        nlist = max(1, min(65536, int(4 * np.sqrt(max(n, 1)))))
        m = next(m for m in (d // 16, d // 8, d // 4, d // 2, d) if m >= 1 and d % m == 0)
        nbits = 8 if n >= 256 * 39 else max(1, min(8, int(np.log2(max(n, 2)))))
        s = f"IVF{nlist},PQ{m}x{nbits}"
    return s


def merge(args: MergeArguments) -> str:
    """Build ``OUTPUT/index`` + ``OUTPUT/docid`` from the chunks of every shard (see the module doc)."""
    import faiss

    work = args.work_dir or os.path.join(args.output, "chunks")
    ms = _shards(work)
    incomplete = [m["shard_id"] for m in ms if not m["complete"]]
    if incomplete:
        raise InputError(f"shards {incomplete} of {work} are not complete; rerun their encode command first")
    if os.path.exists(os.path.join(args.output, "index")) and not args.overwrite:
        raise InputError(f"{args.output}/index exists; pass --overwrite to replace it")
    dims = {m["dimension"] for m in ms if m["dimension"] is not None}
    if len(dims) > 1:
        raise InputError(f"dimension mismatch between shards of {work}: {sorted(dims)}")
    chunks = [(os.path.join(m["dir"], c["file"]), c["rows"]) for m in ms for c in m["chunks"]]
    doc_paths = [p + ".docids" for p, _ in chunks]
    hashes = _docid_hashes(doc_paths)
    n_rows = sum(r for _, r in chunks)
    if len(hashes) != n_rows:
        raise InputError(f"{work}: docid files hold {len(hashes)} ids for {n_rows} vectors (corrupt chunks?)")
    if n_rows == 0:
        raise InputError(f"{work}: no documents were encoded")
    d = dims.pop()
    keep = _keep_mask(hashes, doc_paths, args.on_duplicate)
    n = int(keep.sum()) if keep is not None else n_rows

    def blocks():
        row = 0
        for path, rows in chunks:
            x = np.load(path + ".npy", mmap_mode="r")
            if x.shape != (rows, d):
                raise InputError(f"{path}.npy has shape {x.shape}, expected ({rows}, {d}); dimension mismatch")
            with open(path + ".docids", encoding="utf-8") as f:
                ids = [line.rstrip("\n") for line in f]
            if keep is not None:
                k = keep[row:row + rows]
                x, ids = x[k], [i for i, kk in zip(ids, k) if kk]
            row += rows
            yield np.ascontiguousarray(x, dtype=np.float32), ids

    os.makedirs(args.output, exist_ok=True)
    for f in ("index", METADATA):  # never leave a new docid file next to an old index
        if os.path.exists(os.path.join(args.output, f)):
            os.unlink(os.path.join(args.output, f))
    spec = _index_spec(args.index_type, d, n)
    started = time.time()
    with atomic_write(os.path.join(args.output, "docid")) as fd_ids:
        if spec == "Flat":
            with atomic_write(os.path.join(args.output, "index"), "wb", encoding=None) as fi:
                fi.write(_flat_header(d, n))
                for x, ids in blocks():
                    fi.write(x.tobytes())
                    fd_ids.write("".join(i + "\n" for i in ids))
        else:
            try:
                index = faiss.index_factory(d, spec, faiss.METRIC_INNER_PRODUCT)
            except RuntimeError as e:
                raise InputError(f"bad --index-type {args.index_type!r}: {str(e).strip().splitlines()[-1]}") from None
            try:
                if not index.is_trained:
                    sample = _training_sample(chunks, d, args.train_size, keep)
                    _log(f"training {spec} on {len(sample)} vectors")
                    index.train(sample)
                for x, ids in blocks():
                    index.add(x)
                    fd_ids.write("".join(i + "\n" for i in ids))
            except RuntimeError as e:  # e.g. fewer training vectors than IVF centroids
                raise InputError(f"Faiss cannot build --index-type {spec} from {n} vectors: "
                                 f"{str(e).strip().splitlines()[-1]} (the embeddings are kept: rerun the merge "
                                 f"with another --index-type, e.g. Flat)") from None
            ivf = faiss.try_extract_index_ivf(index)
            if ivf is not None:
                ivf.nprobe = args.nprobe or max(1, min(ivf.nlist, ivf.nlist // 16 or 1))
            if hasattr(index, "hnsw"):
                index.hnsw.efSearch = args.ef_search or max(index.hnsw.efSearch, 128)
            with atomic_write(os.path.join(args.output, "index"), "wb", encoding=None) as fi:
                fi.write(bytes(faiss.serialize_index(index)))
    m0 = ms[0]
    meta = dict(format=FORMAT, config_hash=m0["config_hash"], encoder=m0["config"]["encoder"],
                preset=m0["config"]["preset"], dimension=d, num_docs=n, index_type=spec, metric="inner_product",
                num_shards=len(ms), truncated=sum(c["truncated"] for m in ms for c in m["chunks"]),
                empty=sum(c["empty"] for m in ms for c in m["chunks"]),
                skipped=sum(c["skipped"] for m in ms for c in m["chunks"]), duplicates_dropped=n_rows - n)
    _write_json(os.path.join(args.output, METADATA), meta)
    _log(f"wrote {spec} index of {n} x {d} to {args.output} in {time.time() - started:.1f}s")
    if not args.keep_chunks:
        shutil.rmtree(work, ignore_errors=True)
    return args.output


def _training_sample(chunks, d: int, size: int, keep: Optional[np.ndarray]) -> np.ndarray:
    """Up to ``size`` vectors spread evenly over all chunks (memory: the sample only)."""
    total = sum(r for _, r in chunks)
    step = max(1, total // max(1, size))
    rows, start = [], 0
    for path, r in chunks:
        x = np.load(path + ".npy", mmap_mode="r")
        idx = np.arange((-start) % step, r, step)
        if keep is not None:
            idx = idx[keep[start + idx]]
        if len(idx):
            rows.append(np.asarray(x[idx], dtype=np.float32))
        start += r
    return np.ascontiguousarray(np.concatenate(rows)[:size])


# -- CLI ------------------------------------------------------------------------------------------------------
def _encode_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m repllama_pyserini.encode",
                                description="Encode a corpus with RepLLaMA into a Pyserini Faiss index "
                                            "(resumable, shardable). Subcommand: merge.")
    _add_dataclass(p, ModelArguments)
    _add_dataclass(p, DataArguments)
    _add_dataclass(p, EncodeArguments)
    _add_dataclass(p, EncodeIndexArguments, skip=("output", "work_dir", "overwrite"))
    return p


def _merge_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m repllama_pyserini.encode merge",
                                description="Merge encoded shards into OUTPUT/index + OUTPUT/docid.")
    _add_dataclass(p, MergeArguments)
    return p


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "merge":
        merge(_build(MergeArguments, _merge_parser().parse_args(argv[1:])))
        return
    if argv and argv[0] == "encode":
        argv = argv[1:]
    ns = _encode_parser().parse_args(argv)
    margs = MergeArguments(output=ns.output, work_dir=ns.work_dir, index_type=ns.index_type,
                           on_duplicate=ns.on_duplicate, train_size=ns.train_size, nprobe=ns.nprobe,
                           ef_search=ns.ef_search, keep_chunks=ns.keep_chunks, overwrite=True)
    encode_corpus(_build(ModelArguments, ns), _build(DataArguments, ns), _build(EncodeArguments, ns), margs)


if __name__ == "__main__":
    run_cli(main)
