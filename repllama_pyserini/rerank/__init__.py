"""Pointwise reranking: the shared logic (:mod:`.base`), RankLLaMA (:mod:`.rankllama`); CLI ``python -m
repllama_pyserini.rerank``."""
from .base import FunctionReranker, RerankedHit, Reranker, RerankStats
from .rankllama import RankLLaMAReranker

__all__ = ["FunctionReranker", "RerankedHit", "Reranker", "RerankStats", "RankLLaMAReranker"]
