"""Q-PEFT (query-dependent parameter-efficient fine-tuning) and UPR: reranking by the query's likelihood under a
frozen causal LM, zero-shot (UPR) or with a small trained module that writes query-dependent hint embeddings
(variants R: retrieved hint tokens; A: attention). See ``docs/qpeft.md``.

    python -m repllama_pyserini.qpeft train | rerank | rerank-dpr | eval
"""
from .module import QPeftConfig, QPeftModule, load_module, select_hint_ids
from .rerank import QPeftReranker
from .scoring import PromptEncoder, QueryLikelihoodScorer, query_loglik, reference_loglik

__all__ = ["QPeftConfig", "QPeftModule", "load_module", "select_hint_ids", "QPeftReranker", "PromptEncoder",
           "QueryLikelihoodScorer", "query_loglik", "reference_loglik"]
