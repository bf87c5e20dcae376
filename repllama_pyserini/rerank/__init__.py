"""Pointwise reranking: the shared logic (:mod:`.base`), RankLLaMA (:mod:`.rankllama`); CLI ``python -m
repllama_pyserini.rerank``."""
from .base import FunctionReranker, RerankedHit, Reranker, RerankStats
from .rankllama import RankLLaMAReranker, model_card_score

__all__ = ["FunctionReranker", "RerankedHit", "Reranker", "RerankStats", "RankLLaMAReranker", "model_card_score"]
