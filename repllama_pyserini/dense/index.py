"""Faiss indexes that Pyserini's ``FaissSearcher`` opens (``index`` + ``docid``), built from encoded chunks, plus
``repllama-index.json`` (the encoder, its settings and weights, the corpus fingerprint, counts). ``Flat`` (default) is
streamed to disk chunk by chunk; any other index-factory string (shortcuts ``flat``, ``fp16``, ``hnsw``, ``ivfpq``) is
trained on a sample spread over all chunks. The directory is built aside and swapped in whole.
"""
from __future__ import annotations

import os
import time
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..cli import InputError, log
from ..formats.files import atomic_dir, atomic_write, cleanup_partial, read_json, write_json

METADATA = "repllama-index.json"
SHORTCUTS = {"flat": "Flat", "fp16": "SQfp16", "hnsw": "HNSW32"}


def read_metadata(index_dir: str) -> Optional[dict]:
    path = os.path.join(index_dir, METADATA)
    return read_json(path, "index metadata") if os.path.isfile(path) else None


def encoder_key(identity: dict) -> dict:
    """The parts of an encoder's identity that decide its vectors (weights, pooling), not where its files are."""
    ck, p = identity.get("checkpoint", {}), identity.get("preset", {})
    return {"model": ck.get("model_weights") or ck.get("model"), "base": ck.get("base_weights") or ck.get("base_model"),
            "pooling": p.get("pooling"), "normalize": p.get("normalize"), "append_eos": p.get("append_eos")}


def index_spec(spec: str, d: int, n: int) -> str:
    s = SHORTCUTS.get(spec.lower(), spec)
    if spec.lower() in ("ivfpq", "ivf-pq"):
        nlist = max(1, min(65536, int(4 * np.sqrt(max(n, 1)))))
        m = next(m for m in (d // 16, d // 8, d // 4, d // 2, d) if m >= 1 and d % m == 0)
        nbits = 8 if n >= 256 * 39 else max(1, min(8, int(np.log2(max(n, 2)))))
        s = f"IVF{nlist},PQ{m}x{nbits}"
    return s


def no_polysemous(index) -> None:
    """Skip PQ's polysemous code training: it serves Hamming-filtered search, which Pyserini never runs, and made PQ
    builds ~20x slower with identical rankings (docs/benchmark-index-types.md)."""
    import faiss
    idx = faiss.downcast_index(index)
    inner = faiss.downcast_index(idx.index) if hasattr(idx, "index") and idx.index is not None else None
    for x in (idx, inner):
        if x is not None and hasattr(x, "do_polysemous_training"):
            x.do_polysemous_training = False


def check_index_type(index_type: str, d: int) -> None:
    """Refuse an index type Faiss cannot make for dimension ``d`` before hours of encoding, not after."""
    import faiss
    spec = index_spec(index_type, d, 1_000_000)
    if spec != "Flat":
        try:
            faiss.index_factory(d, spec, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as e:
            raise InputError(f"bad --index-type {index_type!r} for {d}-d embeddings: "
                             f"{str(e).strip().splitlines()[-1]}") from None


def flat_header(d: int, n: int) -> bytes:
    """The bytes Faiss writes before the vectors of an ``IndexFlatIP`` of ``n`` ``d``-dim vectors, derived from Faiss'
    own serialisation of a few vectors: the 8-byte count fields are located (a field's low byte may never change:
    the float count ``d * k`` when d is a multiple of 256) and checked to be linear in n."""
    import faiss

    def ser(k):
        idx = faiss.IndexFlatIP(d)
        if k:
            idx.add(np.zeros((k, d), dtype=np.float32))
        return bytes(faiss.serialize_index(idx))

    h0 = ser(0)
    ks = (1, 2, 3, 257)
    hs = {k: ser(k)[:len(h0)] for k in ks}
    fields: List[Tuple[int, int]] = []

    def linear(o):
        v1 = int.from_bytes(hs[1][o:o + 8], "little")
        ok = o + 8 <= len(h0) and not int.from_bytes(h0[o:o + 8], "little") and \
            all(int.from_bytes(hs[k][o:o + 8], "little") == k * v1 for k in ks)
        return v1 if ok else None

    for i in range(len(h0)):
        if any(h0[i] != h[i] for h in hs.values()) and not any(o <= i < o + 8 for o, _ in fields):
            o = next((o for o in range(i, max(-1, i - 8, *(f + 7 for f, _ in fields)), -1)
                      if linear(o) is not None), None)
            if o is None:
                raise RuntimeError("unexpected Faiss IndexFlat serialisation; use --index-type with a factory string")
            fields.append((o, linear(o)))

    def header(k):
        out = bytearray(h0)
        for o, v1 in fields:
            out[o:o + 8] = (v1 * k).to_bytes(8, "little")
        return bytes(out)

    if any(header(k) != hs[k] for k in ks):
        raise RuntimeError("unexpected Faiss IndexFlat serialisation; use --index-type with a factory string")
    return header(n)


Chunk = Tuple[np.ndarray, List[str]]  # (vectors, docids)


def _sample(chunks: Sequence, load, size: int) -> np.ndarray:
    total = sum(rows for _, rows in chunks)
    step, rows_out, start = max(1, total // max(1, size)), [], 0
    for ref, rows in chunks:
        idx = np.arange((-start) % step, rows, step)
        if len(idx):
            rows_out.append(np.asarray(load(ref)[0][idx], dtype=np.float32))
        start += rows
    return np.ascontiguousarray(np.concatenate(rows_out)[:size])


def write_index(output: str, chunks: Sequence[Tuple[object, int]], load, d: int, metadata: dict,
                index_type: str = "Flat", train_size: int = 65536, nprobe: Optional[int] = None,
                ef_search: Optional[int] = None) -> str:
    """Write ``output/{index,docid,repllama-index.json}`` from ``chunks`` (``(ref, rows)``; ``load(ref)`` gives the
    chunk's ``(vectors, docids)``), swapping the whole directory in when complete."""
    import faiss
    n = sum(rows for _, rows in chunks)
    if n == 0:
        raise InputError("no documents were encoded: nothing to index")
    check_index_type(index_type, d)
    spec = index_spec(index_type, d, n)
    cleanup_partial(output)
    started = time.time()
    with atomic_dir(output) as tmp:
        with atomic_write(os.path.join(tmp, "docid")) as fd_ids:
            if spec == "Flat":
                with atomic_write(os.path.join(tmp, "index"), "wb", encoding=None) as fi:
                    fi.write(flat_header(d, n))
                    for ref, _ in chunks:
                        x, ids = load(ref)
                        fi.write(np.ascontiguousarray(x, dtype=np.float32).tobytes())
                        fd_ids.write("".join(i + "\n" for i in ids))
            else:
                index = faiss.index_factory(d, spec, faiss.METRIC_INNER_PRODUCT)
                try:
                    if not index.is_trained:
                        sample = _sample(chunks, load, train_size)
                        log(f"training {spec} on {len(sample)} vectors")
                        no_polysemous(index)
                        index.train(sample)
                    for ref, _ in chunks:
                        x, ids = load(ref)
                        index.add(np.ascontiguousarray(x, dtype=np.float32))
                        fd_ids.write("".join(i + "\n" for i in ids))
                except RuntimeError as e:
                    raise InputError(f"Faiss cannot build --index-type {spec} from {n} vectors: "
                                     f"{str(e).strip().splitlines()[-1]} (the encoded chunks are kept: merge again "
                                     f"with another --index-type, e.g. Flat)") from None
                ivf = faiss.try_extract_index_ivf(index)
                if ivf is not None:
                    ivf.nprobe = nprobe or max(1, min(ivf.nlist, ivf.nlist // 16 or 1))
                if hasattr(index, "hnsw"):
                    index.hnsw.efSearch = ef_search or max(index.hnsw.efSearch, 128)
                with atomic_write(os.path.join(tmp, "index"), "wb", encoding=None) as fi:
                    fi.write(bytes(faiss.serialize_index(index)))
        sizes = {f: os.path.getsize(os.path.join(tmp, f)) for f in ("index", "docid")}
        write_json(os.path.join(tmp, METADATA), dict(metadata, dimension=d, num_docs=n, index_type=spec,
                                                     metric="inner_product", sizes=sizes))
    log(f"wrote {spec} index of {n} x {d} to {output} in {time.time() - started:.1f}s")
    return output
