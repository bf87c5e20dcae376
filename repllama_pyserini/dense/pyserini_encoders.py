"""RepLLaMA behind Pyserini's ``QueryEncoder`` / ``DocumentEncoder`` interfaces, for ``python -m
pyserini.search.faiss`` and ``python -m pyserini.encode`` (registered by :mod:`repllama_pyserini.plugin`). Settings
come from the preset named by ``--encoder``: ``--query-prefix`` / ``--prefix`` replace its prefix and
``pyserini.encode``'s ``--max-length`` (Pyserini's default 256; RepLLaMA's MS MARCO setting is 156) is the passage
length; pooling and normalisation are always the preset's.
"""
from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np
from pyserini.encode import DocumentEncoder, QueryEncoder

from ..cli import InputError
from ..templates import BATCH_SIZE
from .encoder import RepLLaMAEncoder

logger = logging.getLogger(__name__)


def _prefix(prefix: Optional[str]) -> Optional[str]:
    """Pyserini's convention for a user prefix is ``f'{prefix} {text}'``: add the space unless it is there."""
    if prefix is None:
        return None
    return prefix if (not prefix or prefix[-1].isspace()) else prefix + " "


def _settings(fp16: bool, dtype: Optional[str], kwargs: dict) -> dict:
    keep = ("base_model", "attn_implementation", "padding_side", "max_batch_tokens", "pad_to_multiple_of")
    out = {k: kwargs[k] for k in keep if kwargs.get(k) is not None}
    out["dtype"] = dtype or ("fp16" if fp16 else None)
    out["batch_size"] = kwargs.get("batch_size") or BATCH_SIZE
    return out


class RepLLaMAQueryEncoder(QueryEncoder):
    """``prefix`` (``--query-prefix``) replaces the preset's ``query: ``; ``max_length`` its query length."""

    def __init__(self, encoder_dir: Optional[str] = None, tokenizer_name: Optional[str] = None,
                 encoded_query_dir: Optional[str] = None, device: Optional[str] = "cpu", prefix: Optional[str] = None,
                 fp16: bool = False, max_length: Optional[int] = None, dtype: Optional[str] = None,
                 encoder: Optional[RepLLaMAEncoder] = None, **kwargs):
        super().__init__(encoded_query_dir)
        self.encoder: Optional[RepLLaMAEncoder] = encoder  # a ready-made encoder (Python use)
        if encoder is not None:
            self.has_model, self.dimension = True, encoder.dimension
        elif encoder_dir:
            self.encoder = RepLLaMAEncoder(encoder_dir, tokenizer_name=tokenizer_name, device=device,
                                           query_max_length=max_length, query_prefix=_prefix(prefix),
                                           **_settings(fp16, dtype, kwargs))
            self.has_model = True
            self.dimension = self.encoder.dimension
        if not self.has_model and not self.has_encoded_query:
            raise InputError("RepLLaMA query encoder needs a model (--encoder) or pre-encoded queries")

    def encode(self, query: str, **kwargs) -> np.ndarray:
        if not self.has_model:
            return super().encode(query)
        return self.encoder.encode_queries([query], max_length=kwargs.get("max_length"))[0]

    def encode_batch(self, queries: Sequence[str], **kwargs) -> np.ndarray:
        """Used by ``FaissSearcher.batch_search`` (Pyserini's ``--batch-size`` > 1): one sorted, padded pass."""
        if not self.has_model:
            return np.stack([super(RepLLaMAQueryEncoder, self).encode(q) for q in queries])
        return self.encoder.encode_queries(list(queries), max_length=kwargs.get("max_length"))


class RepLLaMADocumentEncoder(DocumentEncoder):
    """``python -m pyserini.encode ... encoder --encoder-class repllama``; give both sections ``--fields title text``
    or the titles are not encoded (a warning says so once). ``add_sep`` is ignored: fields are joined by a space."""

    def __init__(self, model_name: Optional[str] = None, tokenizer_name: Optional[str] = None,
                 device: Optional[str] = "cpu", prefix: Optional[str] = None, fp16: bool = False,
                 dtype: Optional[str] = None, **kwargs):
        self.encoder = RepLLaMAEncoder(model_name or kwargs.pop("encoder_dir", None), tokenizer_name=tokenizer_name,
                                       device=device, passage_prefix=_prefix(prefix), **_settings(fp16, dtype, kwargs))
        self.dimension = self.encoder.dimension
        self.has_model = True
        self._warned = False

    def encode(self, texts: Sequence[Optional[str]], titles: Optional[Sequence[Optional[str]]] = None,
               max_length: Optional[int] = None, **kwargs) -> np.ndarray:
        urls = kwargs.get("urls")
        fields = self.encoder.preset.passage_fields
        absent = [f for f in fields if f != "text" and {"title": titles, "url": urls}.get(f) is None]
        if absent and not self._warned:
            self._warned = True
            logger.warning("pyserini.encode passed no %s: documents are encoded without them (the model expects "
                           "%s); give both the input and the encoder sections --fields %s", "/".join(absent),
                           " + ".join(fields), " ".join(fields))
        return self.encoder.encode_passages(texts, titles, max_length=max_length, urls=urls)
