"""repllama-pyserini: RepLLaMA / RankLLaMA multi-stage retrieval for the Pyserini ecosystem."""
from . import _startup  # noqa: F401  (Java discovery and Pyserini registration hooks)

__version__ = "0.1.0"
