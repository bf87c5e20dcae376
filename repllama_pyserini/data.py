"""Where the real data lives: ``--data DIR``, else ``$REPLLAMA_PYSERINI_DATA``, else ``../shared/ir-data``."""
from __future__ import annotations

import os
from typing import Optional

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
