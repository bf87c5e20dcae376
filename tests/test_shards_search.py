"""Searching in place (:mod:`repllama_pyserini.dense.search`): the shards of ``encode --no-merge``, several index
dirs, a memory-mapped Flat index. The reference is Faiss searching the merged ``IndexFlatIP`` (the ``merge``
command's output) with the same queries: docids, scores (bit for bit) and order must be identical, ties included,
on both of Faiss' kernels (per-pair SIMD and BLAS)."""
import glob
import io
import os
import subprocess
import sys

import faiss
import numpy as np
import pytest

from repllama_pyserini.cli import InputError
from repllama_pyserini.dense.encode import EncodeSettings, merge
from repllama_pyserini.dense.index import METADATA, flat_header
from repllama_pyserini.dense.search import FlatShards, open_index, wanted
from repllama_pyserini.formats.files import write_json
from repllama_pyserini.jobs import Job, fingerprint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N, D = 2000, 16


@pytest.fixture(scope="module", autouse=True)
def one_faiss_thread():
    """Tiny searches: threads only spin (the cores are shared)."""
    n = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(n)


def write_shards(work, X, shard_num, chunk_size, shards=None):
    """What ``encode --shard-id I --shard-num N --no-merge`` leaves: document j in shard j % N, in chunks."""
    ids = [f"doc{j}" for j in range(len(X))]
    fp = fingerprint({"encoder": {"preset": {"name": "test"}}, "shard_num": shard_num})
    for i in range(shard_num) if shards is None else shards:
        rows = list(range(i, len(X), shard_num))
        with Job(os.path.join(work, f"shard-{i:05d}-of-{shard_num:05d}"), fp).open() as job:
            for c in range(0, len(rows), chunk_size):
                r, buf = rows[c:c + chunk_size], io.BytesIO()
                np.save(buf, X[r])
                job.write_chunk(f"chunk_{c // chunk_size:06d}", {".npy": buf.getvalue(), ".docids": "".join(
                    ids[j] + "\n" for j in r).encode()}, rows=len(r), consumed=len(r), skipped=0, truncated=0,
                    empty=0, dimension=X.shape[1])
            job.set_complete(rows=len(rows))
    return ids


def write_flat(path, X, ids):
    os.makedirs(path, exist_ok=True)
    index = faiss.IndexFlatIP(X.shape[1])
    index.add(X)
    faiss.write_index(index, os.path.join(path, "index"))
    with open(os.path.join(path, "docid"), "w") as f:
        f.writelines(i + "\n" for i in ids)


@pytest.fixture(scope="module", params=["floats", "ties"])
def data(request, tmp_path_factory):
    """Random vectors with 40 copies of one (``floats``) or small integers (``ties``: scores tie everywhere), encoded
    as 3 shards of 37-row chunks, then merged; queries include the copied vector."""
    rng = np.random.default_rng(0)
    if request.param == "floats":
        X, Q = rng.standard_normal((N, D)), rng.standard_normal((40, D))
    else:
        X, Q = rng.integers(-2, 3, (N, D)), rng.integers(-2, 3, (40, D))
    X, Q = X.astype(np.float32), Q.astype(np.float32)
    X[500:540] = X[7]
    Q[0] = X[7]
    root = tmp_path_factory.mktemp(request.param)
    work, out = str(root / "idx.job"), str(root / "idx")
    write_shards(work, X, 3, 37)
    merge(EncodeSettings(output=out, keep_chunks=True), by_hand=True)
    merged = faiss.read_index(os.path.join(out, "index"))
    with open(os.path.join(out, "docid")) as f:
        ids = [line.rstrip("\n") for line in f]
    return dict(kind=request.param, X=X, Q=Q, work=work, out=out, merged=merged, ids=ids, root=root)


@pytest.fixture(params=["simd", "blas"])
def kernel(request):
    """Faiss' per-pair kernel (its default below nq * d = 128000), or BLAS with 64-row database blocks (windows must
    start on those blocks for the scores to be bit-identical)."""
    cv = faiss.cvar
    saved = cv.distance_compute_blas_threshold, cv.distance_compute_blas_database_bs
    if request.param == "blas":
        cv.distance_compute_blas_threshold, cv.distance_compute_blas_database_bs = 1, 64
    yield request.param
    cv.distance_compute_blas_threshold, cv.distance_compute_blas_database_bs = saved


@pytest.mark.parametrize("source", ["work", "shard-dirs", "out"])
def test_identical_to_the_merged_index(data, kernel, source):
    paths = {"work": data["work"], "out": data["out"],  # a work dir, the merged index memory-mapped, shard dirs listed
             "shard-dirs": sorted(glob.glob(os.path.join(data["work"], "shard-*")))}[source]
    index, ids = open_index(paths, window_bytes=3 * 64 * D * 4 + 100)  # 3 blocks a window: many, across chunks
    index.WINDOW_HITS = 0  # (else windows hold 16 (k + 1) rows at least)
    assert ids == data["ids"] and index.ntotal == N and index.d == D
    Q, merged = data["Q"], data["merged"]
    for nq in (1, 7, 40):
        for k in (1, 10, 99, 100, 130, N + 5):  # Faiss keeps a heap below k = 100, a reservoir from there on
            want_d, want_i = merged.search(Q[:nq], k)
            got_d, got_i = index.search(Q[:nq], k)
            np.testing.assert_array_equal(got_i, want_i, err_msg=f"nq={nq} k={k}")
            np.testing.assert_array_equal(got_d, want_d, err_msg=f"nq={nq} k={k}")
    s = Q @ data["X"][[int(i[3:]) for i in ids]].T  # the scores themselves, by numpy
    np.testing.assert_allclose(index.search(Q, 5)[0], -np.sort(-s, axis=1)[:, :5], rtol=1e-5, atol=1e-5)


def test_the_reference_discriminates(data, kernel):
    """Ties decide: at the cut, Faiss keeps neither the lowest nor the highest rows, so neither a merge by (score,
    row) nor one by (score, -row) reproduces it; and the copied vector ties at the cut for some k."""
    Q, merged, k = data["Q"], data["merged"], 20
    want_d, want_i = merged.search(Q, k)
    s = merged.search(Q, N)[0]
    assert (s[:, k - 1] == s[:, k]).any()  # a tie straddles the cut
    if data["kind"] == "ties":
        full_d, full_i = merged.search(Q, N)
        for sign in (1, -1):
            naive = [sorted(zip(-full_d[q], sign * full_i[q]))[:k] for q in range(len(Q))]
            assert any([sign * j for _, j in naive[q]] != list(want_i[q]) for q in range(len(Q)))


def test_pyserini_faiss_searcher_opens_them(data, monkeypatch):
    """Pyserini's ``FaissSearcher`` (patched by the plugin) takes a work dir, and a Flat index memory-mapped with
    REPLLAMA_PYSERINI_MMAP=1; its hits, PRF vectors and score normalisation are the merged index's."""
    from pyserini.search.faiss import FaissSearcher
    Q, qids = data["Q"][:6], [f"q{i}" for i in range(6)]
    ref = FaissSearcher(data["out"], None)
    assert isinstance(ref.index, faiss.IndexFlatIP)
    monkeypatch.setenv("REPLLAMA_PYSERINI_MMAP", "1")
    for path in (data["work"], data["out"]):
        s = FaissSearcher(path, None)
        assert isinstance(s.index, FlatShards) and s.docids == ref.docids
        got, want = s.batch_search(Q, qids, k=25, threads=1), ref.batch_search(Q, qids, k=25, threads=1)
        assert {q: [(h.docid, h.score) for h in got[q]] for q in qids} == \
               {q: [(h.docid, h.score) for h in want[q]] for q in qids}
        _, hits = s.search(Q[:1], k=5, return_vector=True)
        _, ref_hits = ref.search(Q[:1], k=5, return_vector=True)
        assert [h.docid for h in hits] == [h.docid for h in ref_hits]
        np.testing.assert_array_equal(np.stack([h.vectors for h in hits]), np.stack([h.vectors for h in ref_hits]))
    monkeypatch.delenv("REPLLAMA_PYSERINI_MMAP")
    assert not wanted(data["out"]) and wanted(data["work"])


def test_directory_of_index_dirs_in_natural_order(tmp_path):
    rng = np.random.default_rng(1)
    parts = {"part-1": 300, "part-2": 5, "part-10": 700}  # part-10 last: natural, not lexicographic, order
    X = rng.standard_normal((1005, 8)).astype(np.float32)
    at, ids = 0, []
    for name, n in parts.items():
        write_flat(str(tmp_path / "parts" / name), X[at:at + n], [f"{name}/{j}" for j in range(n)])
        ids += [f"{name}/{j}" for j in range(n)]
        at += n
    ref = faiss.IndexFlatIP(8)
    ref.add(X)
    index, got_ids = open_index(str(tmp_path / "parts"))
    assert got_ids == ids
    Q = rng.standard_normal((5, 8)).astype(np.float32)
    for got, want in zip(index.search(Q, 50), ref.search(Q, 50)):
        np.testing.assert_array_equal(got, want)


def test_refusals_are_one_line(tmp_path):
    X = np.random.default_rng(2).standard_normal((100, 8)).astype(np.float32)
    write_shards(str(tmp_path / "w"), X, 3, 10, shards=[0, 2])
    with pytest.raises(InputError, match=r"1 of 3 shards are not finished"):
        open_index(str(tmp_path / "w"))
    hnsw = faiss.IndexHNSWFlat(8, 8, faiss.METRIC_INNER_PRODUCT)
    hnsw.add(X)
    os.makedirs(tmp_path / "hnsw")
    faiss.write_index(hnsw, str(tmp_path / "hnsw" / "index"))
    (tmp_path / "hnsw" / "docid").write_text("".join(f"{i}\n" for i in range(100)))
    with pytest.raises(InputError, match="not a Flat inner-product index"):
        open_index(str(tmp_path / "hnsw"))
    os.environ["REPLLAMA_PYSERINI_MMAP"] = "1"
    try:
        assert not wanted(str(tmp_path / "hnsw"))  # loaded whole by Pyserini, with a note
    finally:
        del os.environ["REPLLAMA_PYSERINI_MMAP"]
    write_flat(str(tmp_path / "a"), X, [str(i) for i in range(100)])
    write_flat(str(tmp_path / "b"), X[:, :4].copy(), [str(i) for i in range(100)])
    with pytest.raises(InputError, match="dimension mismatch"):
        open_index([str(tmp_path / "a"), str(tmp_path / "b")])
    write_flat(str(tmp_path / "c"), X, [str(i) for i in range(100)])
    for name, weights in (("a", "w1"), ("c", "w2")):
        write_json(str(tmp_path / name / METADATA), {"encoder": {"checkpoint": {"model_weights": weights}}})
    with pytest.raises(InputError, match="built by different encoders"):
        open_index([str(tmp_path / "a"), str(tmp_path / "c")])
    os.makedirs(tmp_path / "ac")
    for name in ("a", "c"):
        os.rename(tmp_path / name, tmp_path / "ac" / name)
    with pytest.raises(InputError, match="built by different encoders"):  # ... inside a directory of indexes too
        open_index(str(tmp_path / "ac"))
    with pytest.raises(InputError, match="is not an index dir"):
        open_index(str(tmp_path / "nothing"))


def test_flat_header_matches_faiss_for_every_dimension():
    for d in (1, 7, 64, 256, 768, 4096):  # d % 256 == 0: the float count's low byte never changes
        for n in (0, 1, 300):
            index = faiss.IndexFlatIP(d)
            if n:
                index.add(np.zeros((n, d), np.float32))
            data = bytes(faiss.serialize_index(index))
            h = flat_header(d, n)
            assert data[:len(h)] == h and len(data) == len(h) + 4 * n * d


MEMORY_CAPPED = """
import resource, sys, faiss, numpy as np
faiss.omp_set_num_threads(1)
from repllama_pyserini.dense.search import open_index
path, limit = sys.argv[1], int(sys.argv[2])
vm = int([l for l in open("/proc/self/status") if l.startswith("VmSize")][0].split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + limit, vm + limit))
index, ids = open_index(path, window_bytes=4 << 20)
D, I = index.search(np.load(sys.argv[3]), 10)
np.save(sys.argv[4], np.stack([D, I.astype(np.float32)]))
try:
    faiss.read_index(path + "/index")
    print("loaded whole")
except (MemoryError, RuntimeError):
    print("too big to load")
"""


def test_search_under_an_address_space_cap_smaller_than_the_index(tmp_path):
    """A 160 MB Flat index searched in a process allowed 64 MB more address space than it started with (Faiss
    cannot even load it there); the hits are those of the index loaded whole."""
    d, n = 256, 160_000
    rng = np.random.default_rng(3)
    os.makedirs(tmp_path / "big")
    with open(tmp_path / "big" / "index", "wb") as f:
        f.write(flat_header(d, n))
        for _ in range(0, n, 20_000):
            f.write(rng.standard_normal((20_000, d)).astype(np.float32).tobytes())
    (tmp_path / "big" / "docid").write_text("".join(f"{i}\n" for i in range(n)))
    Q = rng.standard_normal((3, d)).astype(np.float32)
    np.save(tmp_path / "q.npy", Q)
    r = subprocess.run([sys.executable, "-c", MEMORY_CAPPED, str(tmp_path / "big"), str(64 << 20),
                        str(tmp_path / "q.npy"), str(tmp_path / "out.npy")], capture_output=True, text=True,
                       timeout=120, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1"))
    assert r.returncode == 0 and r.stdout.strip() == "too big to load", r.stderr[-2000:]
    got = np.load(tmp_path / "out.npy")
    want_d, want_i = faiss.read_index(str(tmp_path / "big" / "index")).search(Q, 10)
    np.testing.assert_array_equal(got[0], want_d)
    np.testing.assert_array_equal(got[1].astype(np.int64), want_i)
