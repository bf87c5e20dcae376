"""Test collections by name: where their topics and qrels are, which evaluation conventions they use, BEIR datasets
(found locally or downloaded, md5-checked) and Pyserini's published 2CR scores. The one table of collection names.

The data folder is ``--data DIR``, else ``$REPLLAMA_PYSERINI_DATA``, else ``../shared/ir-data``; its
``topics-and-qrels/`` holds Anserini's files.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from ..cli import InputError

ENV = "REPLLAMA_PYSERINI_DATA"
CACHE_ENV = "REPLLAMA_PYSERINI_CACHE"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# name (as Pyserini spells it) -> (topics file, qrels file, evaluation conventions; see repllama_pyserini.eval)
COLLECTIONS: Dict[str, Tuple[str, str, str]] = {
    "msmarco-passage-dev-subset": ("topics.msmarco-passage.dev-subset.txt", "qrels.msmarco-passage.dev-subset.txt",
                                   "msmarco-passage-dev"),
    "dl19-passage": ("topics.dl19-passage.txt", "qrels.dl19-passage.txt", "dl19-passage"),
    "dl20-passage": ("topics.dl20.txt", "qrels.dl20-passage.txt", "dl20-passage"),
    "msmarco-doc-dev": ("topics.msmarco-doc.dev.txt", "qrels.msmarco-doc.dev.txt", "msmarco-doc-dev"),
    "dl19-doc": ("topics.dl19-doc.txt", "qrels.dl19-doc.txt", "dl19-doc"),
    "dl20-doc": ("topics.dl20.txt", "qrels.dl20-doc.txt", "dl20-doc"),
}
ALIASES = {"msmarco-passage-dev": "msmarco-passage-dev-subset", "msmarco-v1-passage-dev": "msmarco-passage-dev-subset",
           "msmarco-v1-passage.dev": "msmarco-passage-dev-subset", "msmarco-v1-doc-dev": "msmarco-doc-dev",
           "msmarco-passage.dev-subset": "msmarco-passage-dev-subset", "msmarco-doc.dev": "msmarco-doc-dev"}
# qrels file names -> conventions (Anserini's, NIST's and MS MARCO's own spellings)
QRELS_PATTERNS = [
    (re.compile(r"qrels\.(dl(?:19|20))-(passage|doc)\b"), lambda m: f"{m.group(1)}-{m.group(2)}"),
    (re.compile(r"^20(19|20)qrels-pass\b"), lambda m: f"dl{m.group(1)}-passage"),
    (re.compile(r"^20(19|20)qrels-docs\b"), lambda m: f"dl{m.group(1)}-doc"),
    (re.compile(r"qrels\.msmarco-passage[.-]dev"), lambda m: "msmarco-passage-dev"),
    (re.compile(r"^qrels\.dev(\.small)?\.tsv\b"), lambda m: "msmarco-passage-dev"),
    (re.compile(r"qrels\.msmarco-doc[.-]dev"), lambda m: "msmarco-doc-dev"),
    (re.compile(r"^msmarco-docdev-qrels\b"), lambda m: "msmarco-doc-dev"),
    (re.compile(r"qrels\.beir-v1\.0\.0-.+\.test\b"), lambda m: "beir"),
]
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


def data_dir(arg: Optional[str] = None) -> str:
    """The data folder (it may not exist: callers check what they need)."""
    if arg:
        return os.path.abspath(arg)
    if os.environ.get(ENV):
        return os.path.abspath(os.environ[ENV])
    for root in (REPO_ROOT, os.getcwd()):
        candidate = os.path.abspath(os.path.join(root, "..", "shared", "ir-data"))
        if os.path.isdir(candidate):
            return candidate
    return os.path.abspath(os.path.join(REPO_ROOT, "..", "shared", "ir-data"))


def cache_dir() -> str:
    return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "repllama_pyserini")


def canonical(name: str) -> str:
    key = name.strip().lower()
    key = key[:-len("-test")] if key.endswith("-test") else key
    return ALIASES.get(key, key)


def collection_files(name: str, data: Optional[str] = None) -> Tuple[str, str, str]:
    """``(topics path, qrels path, conventions)`` of a collection name (``dl19-passage``, ``beir-v1.0.0-scifact``...)."""
    key, tq = canonical(name), os.path.join(data_dir(data), "topics-and-qrels")
    if key.startswith("beir-v1.0.0-"):
        return (os.path.join(tq, f"topics.{key}.test.tsv.gz"), os.path.join(tq, f"qrels.{key}.test.txt"), "beir")
    if key not in COLLECTIONS:
        raise InputError(f"unknown collection {name!r}; known: {', '.join(COLLECTIONS)}, beir-v1.0.0-<dataset>")
    topics, qrels, conv = COLLECTIONS[key]
    return os.path.join(tq, topics), os.path.join(tq, qrels), conv


def conventions_of_qrels(path: str) -> Optional[str]:
    """The evaluation conventions a qrels file name implies, or None."""
    path = os.path.normpath(str(path)).replace(os.sep, "/")
    base = os.path.basename(path).lower()
    for pattern, conv in QRELS_PATTERNS:
        m = pattern.search(base)
        if m:
            return conv(m)
    if re.search(r"(^|/)qrels/test\.tsv(\.gz)?$", path):
        return "beir"
    return None


@dataclass
class BeirDataset:
    """A BEIR test collection: corpus, test topics, test qrels (paths)."""
    name: str
    corpus: str
    topics_path: str
    qrels: str

    def topics(self) -> Dict[str, str]:
        """Test topics only (a BEIR ``queries.jsonl`` holds every split): the qids judged in the qrels."""
        from .qrels import read_qrels
        from .topics import read_topics
        topics, judged = read_topics(self.topics_path), read_qrels(self.qrels)
        missing = [q for q in judged if q not in topics]
        if missing:
            raise InputError(f"{len(missing)} judged topics (e.g. {missing[0]!r}) are absent from {self.topics_path}")
        return {q: t for q, t in topics.items() if q in judged}


def _beir_folder(path: str, name: str) -> Optional[BeirDataset]:
    def first(*names):
        return next((os.path.join(path, n) for n in names if os.path.isfile(os.path.join(path, n))), None)
    corpus, queries = first("corpus.jsonl", "corpus.jsonl.gz"), first("queries.jsonl", "queries.jsonl.gz")
    qrels = first("qrels/test.tsv", "qrels/test.tsv.gz")
    return BeirDataset(name, corpus, queries, qrels) if corpus and queries and qrels else None


def beir_dataset(name_or_path: str, data: Optional[str] = None, download: bool = True) -> BeirDataset:
    """A BEIR folder given by path; ``<data>/beir/<name>`` with Anserini's topics/qrels (this project's shared
    layout) or a standard BEIR folder; else the cache, downloading from BEIR's public URL when missing."""
    if os.path.isdir(name_or_path):
        ds = _beir_folder(name_or_path, os.path.basename(os.path.normpath(name_or_path)))
        if ds is None:
            raise InputError(f"{name_or_path} is not a BEIR folder (needs corpus.jsonl, queries.jsonl, qrels/test.tsv)")
        return ds
    name = name_or_path
    root = os.path.join(data_dir(data), "beir", name)
    topics, qrels, _ = collection_files(f"beir-v1.0.0-{name}", data)
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
        with open(zpath, "rb") as f:
            md5 = hashlib.md5(f.read()).hexdigest()
        if md5 != BEIR_MD5[name]:
            raise InputError(f"checksum mismatch for {url}: md5 {md5}, expected {BEIR_MD5[name]}")
        with zipfile.ZipFile(zpath) as z:
            z.extractall(tmp)
        final = os.path.join(target, name)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(os.path.join(tmp, name), final)
    return final


def twocr_beir_scores(condition: str, dataset: str, data: Optional[str] = None) -> Dict[str, float]:
    """Pyserini's published 2CR BEIR scores, e.g. ``('bm25-flat', 'scifact') -> {'nDCG@10': 0.6789, ...}``."""
    import yaml
    path = os.path.join(data_dir(data), "pyserini-2cr", "beir.yaml")
    if not os.path.isfile(path):
        raise InputError(f"Pyserini 2CR file not found: {path}")
    with open(path, encoding="utf-8") as f:
        conditions = yaml.safe_load(f)["conditions"]
    for cond in conditions:
        if cond["name"] == condition:
            for ds in cond["datasets"]:
                if ds["dataset"] == dataset:
                    return {k: float(v) for k, v in ds["scores"][0].items()}
    raise InputError(f"no Pyserini 2CR scores for {condition} on {dataset}")
