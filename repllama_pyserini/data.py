"""Where the real data lives: ``--data DIR``, else ``$REPLLAMA_PYSERINI_DATA``, else ``../shared/ir-data``."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Optional

ENV = "REPLLAMA_PYSERINI_DATA"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def data_dir(arg: Optional[str] = None) -> str:
    """The data directory (it may not exist: callers check what they need)."""
    if arg:
        return os.path.abspath(arg)
    if os.environ.get(ENV):
        return os.path.abspath(os.environ[ENV])
    for root in (REPO_ROOT, os.getcwd()):
        candidate = os.path.abspath(os.path.join(root, "..", "shared", "ir-data"))
        if os.path.isdir(candidate):
            return candidate
    return os.path.abspath(os.path.join(REPO_ROOT, "..", "shared", "ir-data"))


def topics_and_qrels(name: str, data: Optional[str] = None) -> tuple[str, str]:
    """Topic and qrels paths for a collection name as Pyserini spells it (``dl19-passage``, ``beir-v1.0.0-scifact``...)."""
    tq = os.path.join(data_dir(data), "topics-and-qrels")
    if name.startswith("beir-v1.0.0-"):
        return (os.path.join(tq, f"topics.{name}.test.tsv.gz"), os.path.join(tq, f"qrels.{name}.test.txt"))
    topics = {"dl20-passage": "topics.dl20.txt", "dl20-doc": "topics.dl20.txt"}.get(name, f"topics.{name}.txt")
    return os.path.join(tq, topics), os.path.join(tq, f"qrels.{name}.txt")


# BEIR's public archives and their published md5 (BEIR README, "Available Datasets").
BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"
BEIR_MD5 = {
    "msmarco": "444067daf65d982533ea17ebd59501e4", "trec-covid": "ce62140cb23feb9becf6270d0d1fe6d1",
    "nfcorpus": "a89dba18a62ef92f7d323ec890a0d38d", "nq": "d4d3d2e48787a744b6f6e691ff534307",
    "hotpotqa": "f412724f78b0d91183a0e86805e16114", "fiqa": "17918ed23cd04fb15047f73e6c3bd9d9",
    "arguana": "8ad3e3c2a5867cdced806d6503f29b99", "webis-touche2020": "46f650ba5a527fc69e0a6521c5a23563",
    "cqadupstack": "4e41456d7df8ee7760a7f866133bda78", "quora": "18fb154900ba42a600f84b839c173167",
    "dbpedia-entity": "c2a39eb420a3164af735795df012ac2c", "scidocs": "38121350fc3a4d2f48850f6aff52e4a9",
    "fever": "5a818580227bfb4b35bb6fa46d9b6c03", "climate-fever": "8b66f0a9126c521bae2bde127b4dc99d",
    "scifact": "5f7d1de60b170fc8027bb7898e2efca1",
}
CACHE_ENV = "REPLLAMA_PYSERINI_CACHE"


def cache_dir() -> str:
    return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "repllama_pyserini")


@dataclass
class BeirDataset:
    """A BEIR test collection: corpus, test topics, test qrels (paths)."""
    name: str
    corpus: str
    topics_path: str
    qrels: str

    def topics(self) -> Dict[str, str]:
        """Test topics only: a BEIR ``queries.jsonl`` holds every split, so keep the qids judged in the qrels."""
        from .io import InputError, read_qrels, read_topics
        topics = read_topics(self.topics_path)
        judged = read_qrels(self.qrels)
        missing = [q for q in judged if q not in topics]
        if missing:
            raise InputError(f"{len(missing)} judged topics (e.g. {missing[0]!r}) are absent from {self.topics_path}")
        return {q: t for q, t in topics.items() if q in judged}


def _beir_folder(path: str, name: str) -> Optional[BeirDataset]:
    """The standard BEIR layout: corpus.jsonl, queries.jsonl, qrels/test.tsv (gzipped variants accepted)."""
    def first(*names):
        return next((os.path.join(path, n) for n in names if os.path.isfile(os.path.join(path, n))), None)
    corpus = first("corpus.jsonl", "corpus.jsonl.gz")
    queries = first("queries.jsonl", "queries.jsonl.gz")
    qrels = first("qrels/test.tsv", "qrels/test.tsv.gz")
    if corpus and queries and qrels:
        return BeirDataset(name, corpus, queries, qrels)
    return None


def beir_dataset(name_or_path: str, data: Optional[str] = None, download: bool = True) -> BeirDataset:
    """Find a BEIR dataset: a BEIR folder given by path; ``<data>/beir/<name>`` with Anserini's topics/qrels in
    ``<data>/topics-and-qrels`` (this project's shared layout) or a standard BEIR folder; else the cache, where
    it is downloaded from BEIR's public URL (md5-checked) when missing."""
    from .io import InputError
    if os.path.isdir(name_or_path):
        ds = _beir_folder(name_or_path, os.path.basename(os.path.normpath(name_or_path)))
        if ds is None:
            raise InputError(f"{name_or_path} is not a BEIR folder (needs corpus.jsonl, queries.jsonl, qrels/test.tsv)")
        return ds
    name = name_or_path
    root = os.path.join(data_dir(data), "beir", name)
    topics, qrels = topics_and_qrels(f"beir-v1.0.0-{name}", data)
    for corpus in (os.path.join(root, "corpus.jsonl.gz"), os.path.join(root, "corpus.jsonl")):
        if os.path.isfile(corpus) and os.path.isfile(topics) and os.path.isfile(qrels):
            return BeirDataset(name, corpus, topics, qrels)
    ds = _beir_folder(root, name) or _beir_folder(os.path.join(cache_dir(), "beir", name), name)
    if ds:
        return ds
    if not download:
        raise InputError(f"BEIR {name} not found under {root} or the cache")
    return _beir_folder(download_beir(name), name)


def download_beir(name: str) -> str:
    """Download and unpack BEIR ``name`` into the cache (md5 checked); one clear line when offline."""
    import hashlib
    import shutil
    import tempfile
    import urllib.request
    import zipfile
    from .io import InputError
    if name not in BEIR_MD5:
        raise InputError(f"unknown BEIR dataset {name!r}; known: {', '.join(sorted(BEIR_MD5))}")
    url, target = BEIR_URL.format(name=name), os.path.join(cache_dir(), "beir")
    os.makedirs(target, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target) as tmp:
        zpath = os.path.join(tmp, f"{name}.zip")
        try:
            with urllib.request.urlopen(url, timeout=30) as r, open(zpath, "wb") as f:
                shutil.copyfileobj(r, f)
        except OSError as e:
            raise InputError(f"BEIR {name} is not local and cannot be downloaded ({e}); download {url} and unzip it "
                             f"into {target}/ (or pass --data DIR with beir/{name}/ inside)") from None
        md5 = hashlib.md5(open(zpath, "rb").read()).hexdigest()
        if md5 != BEIR_MD5[name]:
            raise InputError(f"checksum mismatch for {url}: md5 {md5}, expected {BEIR_MD5[name]}")
        with zipfile.ZipFile(zpath) as z:
            z.extractall(tmp)
        final = os.path.join(target, name)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(os.path.join(tmp, name), final)
    return final
