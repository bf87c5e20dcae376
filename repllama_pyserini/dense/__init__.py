"""RepLLaMA dense retrieval: the encoder (:mod:`.encoder`), Pyserini's encoder interfaces (:mod:`.pyserini_encoders`),
corpus encoding (:mod:`.encode`), Faiss indexes (:mod:`.index`), evaluation (:mod:`.evaluate`); CLI ``python -m
repllama_pyserini.dense``."""
from .encoder import RepLLaMAEncoder

__all__ = ["RepLLaMAEncoder"]
