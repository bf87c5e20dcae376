"""Search Flat indexes without merging them and without loading them (castorini/pyserini#798).

:class:`FlatShards` is a read-only ``IndexFlatIP`` over float32 vectors that stay in their files: the shards of
``encode --no-merge`` (a work dir ``OUTPUT.job``, or one ``shard-*-of-*`` dir: their ``chunk_*.npy``), several
Pyserini Flat index dirs (``index`` + ``docid``), or one. Rows are concatenated in merge order (shard 0's chunks
first: the rows of the merged index) and searched window by window, each window memory-mapped, searched by Faiss
and unmapped: memory stays about one window (``WINDOW_BYTES``, or 16 (k + 1) vectors if more), whatever the index
size.

Results are identical to Faiss searching the merged ``IndexFlatIP`` with the same query batch (same docids, scores,
order): windows start on Faiss' BLAS block grid (``distance_compute_blas_database_bs``), so every score is computed
by the same kernel call on the same rows; each window keeps its top k+1; the final selection and order are Faiss'
own (its top-k run on the candidates' scores, in row order). Where the k-th and (k+1)-th scores tie, which tied rows
Faiss keeps depends on the whole score stream: that query's scores are recomputed and Faiss' top-k replayed on all.

Pyserini's ``FaissSearcher`` gets one through the plugin (:mod:`repllama_pyserini.plugin`): ``--index`` naming a
work dir, a shard dir or a directory of index dirs; or a Flat index dir with ``REPLLAMA_PYSERINI_MMAP=1``.
"""
from __future__ import annotations

import bisect
import glob
import json
import mmap
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..cli import InputError, log
from ..jobs import MANIFEST
from .index import encoder_key, flat_header, read_metadata

MMAP_ENV = "REPLLAMA_PYSERINI_MMAP"
WINDOW_BYTES = 64 << 20   # vectors mapped at a time
REPLAY_BYTES = 64 << 20   # scores held at a time when a tie is replayed
SHARD = re.compile(r"shard-\d+-of-\d+$")


@dataclass(frozen=True)
class Piece:
    """``rows`` float32 vectors of ``d`` dims stored contiguously in ``path`` from byte ``offset``."""
    path: str
    offset: int
    rows: int
    d: int


def _lines(path: str) -> List[str]:
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def _natural(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def flat_piece(index_path: str, n: int) -> Optional[Piece]:
    """The vectors of a Faiss ``IndexFlatIP`` file holding ``n`` vectors, or None if it is not one."""
    h = len(flat_header(1, 0))
    body = os.path.getsize(index_path) - h
    if n <= 0 or body <= 0 or body % (4 * n):
        return None
    d = body // (4 * n)
    with open(index_path, "rb") as f:
        head = f.read(h)
    return Piece(index_path, h, n, d) if head == flat_header(d, n) else None


def npy_piece(path: str) -> Piece:
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in read:
            raise InputError(f"{path}: unsupported .npy version {version}")
        shape, fortran, dtype = read[version](f)
        offset = f.tell()
    if dtype != np.dtype("<f4") or fortran or len(shape) != 2:
        raise InputError(f"{path} does not hold a C-ordered float32 matrix ({dtype}, shape {shape})")
    return Piece(path, offset, shape[0], shape[1])


def _kind(path: str) -> Optional[str]:
    if not os.path.isdir(path):
        return None
    if os.path.isfile(os.path.join(path, "index")):
        return "index"
    if glob.glob(os.path.join(path, "shard-*-of-*")):
        return "work"
    if SHARD.search(os.path.basename(os.path.normpath(path))) and os.path.isfile(os.path.join(path, MANIFEST)):
        return "shard"
    return "indexes" if _subindexes(path) else None


def _subindexes(path: str) -> List[str]:
    subs = [os.path.join(path, s) for s in sorted(os.listdir(path), key=_natural)]
    return [s for s in subs if os.path.isfile(os.path.join(s, "index")) and os.path.isfile(os.path.join(s, "docid"))]


def _shard_manifests(path: str, kind: str) -> List[Tuple[str, dict]]:
    from ..jobs import read_manifest
    from .encode import _shards
    shards, expected = ([(path, read_manifest(path))], 1) if kind == "shard" else _shards(path)
    waiting = expected - sum(1 for _, m in shards if (m or {}).get("complete"))
    if waiting:
        raise InputError(f"{path}: {waiting} of {expected} shards are not finished (started: {len(shards)}); run "
                         f"their encode commands first")
    return shards


def metadata(path: str) -> Optional[dict]:
    """What an index, work dir, shard dir or directory of indexes (its first) records of its encoder
    (``{'encoder': ...}``)."""
    kind = _kind(path)
    if kind == "indexes":
        path, kind = _subindexes(path)[0], "index"
    if kind == "index":
        return read_metadata(path)
    if kind in ("work", "shard"):
        try:
            m = _shard_manifests(path, kind)[0][1]
        except InputError:
            return None
        return {"encoder": m["fingerprint"]["settings"]["encoder"]}
    return None


def _open_one(path: str) -> Tuple[List[Piece], List[str]]:
    kind = _kind(path)
    if kind is None:
        raise InputError(f"{path} is not an index dir (index + docid), an encode work dir (shard-*-of-*), a shard "
                         f"dir or a directory of index dirs")
    if kind == "index":
        ids = _lines(os.path.join(path, "docid"))
        piece = flat_piece(os.path.join(path, "index"), len(ids))
        if piece is None:
            raise InputError(f"{os.path.join(path, 'index')} is not a Flat inner-product index of {len(ids)} vectors "
                             f"(its docid count): only IndexFlatIP can be searched in place")
        return [piece], ids
    pieces, ids = [], []
    for d, m in _shard_manifests(path, kind):
        for name, c in sorted(m["chunks"].items()):
            if not c["rows"]:
                continue
            p, i = npy_piece(os.path.join(d, name + ".npy")), _lines(os.path.join(d, name + ".docids"))
            if not p.rows == len(i) == c["rows"]:
                raise InputError(f"{d}/{name}: {p.rows} vectors and {len(i)} docids, {c['rows']} written (damaged? "
                                 f"rerun that shard's encode command)")
            pieces.append(p)
            ids += i
    return pieces, ids


def open_index(paths: Union[str, Sequence[str]], window_bytes: int = WINDOW_BYTES) -> Tuple["FlatShards", List[str]]:
    """``(index, docids)`` for one path or several (searched as their concatenation, in the order given)."""
    paths = [paths] if isinstance(paths, str) else list(paths)
    paths = [s for p in paths for s in (_subindexes(p) if _kind(p) == "indexes" else [p])]
    pieces, ids = [], []
    for p in paths:
        pc, i = _open_one(p)
        pieces += pc
        ids += i
    if not pieces:
        raise InputError(f"no vectors in {', '.join(paths)}")
    if len({p.d for p in pieces}) > 1:
        raise InputError(f"dimension mismatch between the indexes: {sorted({p.d for p in pieces})}")
    metas = [metadata(p) for p in paths]
    keys = {json.dumps(encoder_key(m["encoder"]), sort_keys=True) for m in metas if m and m.get("encoder")}
    if len(keys) > 1:
        raise InputError(f"{', '.join(paths)} were built by different encoders: their scores cannot be merged")
    return FlatShards(pieces, next((m for m in metas if m), None), window_bytes), ids


def wanted(path) -> bool:
    """Whether Pyserini's loader should hand ``path`` to :func:`open_index` (see the module doc)."""
    kind = _kind(path) if isinstance(path, str) else None
    if kind != "index":
        return kind is not None
    if os.environ.get(MMAP_ENV) != "1":
        return False
    with open(os.path.join(path, "docid"), "rb") as f:
        ids = sum(1 for _ in f)
    if flat_piece(os.path.join(path, "index"), ids) is None:
        log(f"note: {MMAP_ENV}=1 but {path} is not a Flat inner-product index: loaded whole")
        return False
    return True


@contextmanager
def _mapped(p: Piece, a: int, b: int) -> Iterator[np.ndarray]:
    """Rows ``a:b`` of ``p``, memory-mapped (read-only) for the ``with`` block only."""
    start, length = p.offset + a * 4 * p.d, (b - a) * 4 * p.d
    base = start - start % mmap.ALLOCATIONGRANULARITY
    with open(p.path, "rb") as f:
        mm = mmap.mmap(f.fileno(), length + start - base, flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0),
                       prot=mmap.PROT_READ, offset=base)
    x = np.frombuffer(mm, np.float32, (b - a) * p.d, start - base).reshape(b - a, p.d)
    try:
        yield x
    finally:
        del x
        try:
            mm.close()
        except BufferError:  # a caller kept a view: the mapping goes with it
            pass


def faiss_topk(scores: np.ndarray, ids: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Faiss' own top-k (selection among ties and order) of ``scores`` met in the order given, labelled ``ids``:
    run as an inner-product search of the query ``[1]`` over the 1-d vectors ``scores``."""
    import faiss
    d, j = faiss.knn(np.ones((1, 1), np.float32), np.ascontiguousarray(scores, np.float32)[:, None], k,
                     metric=faiss.METRIC_INNER_PRODUCT)
    return d[0], np.where(j[0] >= 0, ids[np.maximum(j[0], 0)], -1)


class FlatShards:
    """A read-only ``faiss.IndexFlatIP`` look-alike (``d``, ``ntotal``, ``metric_type``, ``search``,
    ``reconstruct``, ``search_and_reconstruct``) over :class:`Piece` s left on disk (see the module doc)."""
    metric_type = 0  # faiss.METRIC_INNER_PRODUCT
    is_trained = True
    WINDOW_HITS = 16

    def __init__(self, pieces: Sequence[Piece], metadata: Optional[dict] = None, window_bytes: int = WINDOW_BYTES):
        self.pieces = [p for p in pieces if p.rows]
        self.d = self.pieces[0].d
        self.starts = [0]
        for p in self.pieces:
            self.starts.append(self.starts[-1] + p.rows)
        self.ntotal = self.starts[-1]
        self.metadata, self.window_bytes = metadata, window_bytes

    @staticmethod
    def _grid(rows: int) -> int:
        """``rows`` rounded down to Faiss' BLAS database block (windows must start where its blocks do)."""
        import faiss
        bs = max(1, int(faiss.cvar.distance_compute_blas_database_bs))
        return max(bs, rows // bs * bs)

    @contextmanager
    def _rows(self, r0: int, r1: int, buf: Optional[np.ndarray] = None) -> Iterator[np.ndarray]:
        """Global rows ``r0:r1``: mapped in place within one piece, else copied (into ``buf`` if big enough)."""
        i = bisect.bisect_right(self.starts, r0) - 1
        if r1 <= self.starts[i + 1]:
            with _mapped(self.pieces[i], r0 - self.starts[i], r1 - self.starts[i]) as x:
                yield x
                del x  # every reference gone: the mapping closes now
            return
        out = buf[:r1 - r0] if buf is not None and len(buf) >= r1 - r0 else np.empty((r1 - r0, self.d), np.float32)
        at = r0
        while at < r1:
            i = bisect.bisect_right(self.starts, at) - 1
            end = min(r1, self.starts[i + 1])
            with _mapped(self.pieces[i], at - self.starts[i], end - self.starts[i]) as x:
                out[at - r0:end - r0] = x
            at = end
        yield out

    def _prefetch(self, r0: int, r1: int) -> None:
        """Have the kernel read rows ``r0:r1`` ahead, while the current window is searched."""
        at = r0
        while at < r1 and hasattr(os, "posix_fadvise"):
            i = bisect.bisect_right(self.starts, at) - 1
            p, end = self.pieces[i], min(r1, self.starts[i + 1])
            fd = os.open(p.path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, p.offset + (at - self.starts[i]) * 4 * p.d, (end - at) * 4 * p.d,
                                 os.POSIX_FADV_WILLNEED)
            finally:
                os.close(fd)
            at = end

    def _windows(self, rows: int) -> Iterator[Tuple[int, np.ndarray]]:
        """``(first row, rows)`` window by window; the caller drops each before asking for the next."""
        buf = None if len(self.pieces) == 1 else np.empty((min(rows, self.ntotal), self.d), np.float32)
        for w0 in range(0, self.ntotal, rows):
            with self._rows(w0, min(w0 + rows, self.ntotal), buf) as x:
                self._prefetch(w0 + rows, min(w0 + 2 * rows, self.ntotal))
                yield w0, x
                del x

    def search(self, x, k: int, *args, **kwargs) -> Tuple[np.ndarray, np.ndarray]:
        import faiss
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.d:
            raise ValueError(f"queries of shape {x.shape}, expected (n, {self.d})")
        nq, kk = len(x), k + 1
        D, I = np.empty((nq, 0), np.float32), np.empty((nq, 0), np.int64)
        # Faiss sorts each window's top k + 1: windows of WINDOW_HITS (k + 1) rows at least keep that cheap
        for w0, X in self._windows(self._grid(max(self.window_bytes // (4 * self.d), self.WINDOW_HITS * kk))):
            d, i = faiss.knn(x, X, min(kk, len(X)), metric=faiss.METRIC_INNER_PRODUCT)
            del X  # unmapped before the next window is mapped
            D, I = np.hstack([D, d]), np.hstack([I, i + w0])
            if D.shape[1] > kk:  # the exact top k+1 scores so far
                top = np.argpartition(-D, kk - 1, axis=1)[:, :kk]
                D, I = np.take_along_axis(D, top, 1), np.take_along_axis(I, top, 1)
        out_d, out_i = np.empty((nq, k), np.float32), np.empty((nq, k), np.int64)
        ties = []
        for q in range(nq):
            d, i = D[q], I[q]
            if len(d) > k:
                s = np.sort(d)
                if s[0] == s[1]:  # the k-th and (k+1)-th tie: Faiss' pick depends on every score
                    ties.append(q)
                    continue
                d, i = d[d > s[0]], i[d > s[0]]
            order = np.argsort(i)
            out_d[q], out_i[q] = faiss_topk(d[order], i[order], k)
        if ties:
            self._replay(x, k, ties, out_d, out_i)
        return out_d, out_i

    def _replay(self, x: np.ndarray, k: int, queries: List[int], out_d: np.ndarray, out_i: np.ndarray) -> None:
        """Every score of ``queries`` (computed with the whole batch, as Faiss did), then Faiss' top-k on them."""
        import faiss
        rows = self._grid(REPLAY_BYTES // (36 * len(x)))  # Faiss' sort of a window: ~3 x (4 + 8) bytes a score
        per = max(1, REPLAY_BYTES // (4 * self.ntotal))
        for g in range(0, len(queries), per):
            group = queries[g:g + per]
            S = np.empty((len(group), self.ntotal), np.float32)
            for w0, X in self._windows(rows):
                d, i = faiss.knn(x, X, len(X), metric=faiss.METRIC_INNER_PRODUCT)
                del X
                for r, q in enumerate(group):
                    S[r, i[q] + w0] = d[q]
            for r, q in enumerate(group):
                out_d[q], out_i[q] = faiss_topk(S[r], np.arange(self.ntotal), k)

    def reconstruct(self, key: int) -> np.ndarray:
        with self._rows(int(key), int(key) + 1) as x:
            return np.array(x[0])

    def search_and_reconstruct(self, x, k: int, *args, **kwargs):
        D, I = self.search(x, k)
        V = np.zeros(I.shape + (self.d,), np.float32)
        for (q, j), key in np.ndenumerate(I):
            if key >= 0:
                V[q, j] = self.reconstruct(key)
        return D, I, V
