"""The RepLLaMA encoder: texts in, L2-normalised embeddings out (the released recipe, model card of
``castorini/repllama-v1-7b-lora-passage``; inputs from :mod:`repllama_pyserini.templates`, settings from the preset):

* ``query: {query}`` / ``passage: {title} {text}``, truncated to ``max_length - 1`` tokens, EOS appended;
* the embedding is the final hidden state at that EOS (the last attended token), L2-normalised, float32.

Batches group similar lengths under a token budget (:func:`repllama_pyserini.templates.length_batches`); results come
back in input order. With right padding the forward pass needs no attention mask (the plain causal kernel).
Text beyond the max length is truncated (counted in :attr:`num_truncated`); an empty query is an error; an empty
passage is encoded as the prefix alone (counted in :attr:`num_empty`).
"""
from __future__ import annotations

import os
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..cli import InputError
from ..formats.corpus import Doc
from ..models import checkpoint_identity, load_model, load_tokenizer, resolve_model
from ..presets import resolve
from ..templates import BATCH_SIZE, BATCH_TOKENS, length_batches, pad, pool, position_ids, tokenize

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def own_tokenizer(preset, resolved) -> str:
    """The tokenizer to load: the preset's, else the adapter's (when it ships one), else the base model's."""
    if preset.tokenizer:
        return preset.tokenizer
    if resolved.adapter and os.path.isdir(resolved.adapter) and \
            any(os.path.isfile(os.path.join(resolved.adapter, f)) for f in TOKENIZER_FILES):
        return resolved.adapter
    return resolved.base


class RepLLaMAEncoder:
    """``model_name_or_path``: a preset name or YAML, a hub id (``org/model``) or a local directory (full model or
    LoRA adapter, whose base comes from its ``adapter_config.json`` unless ``base_model`` is given). Keyword settings
    that are None keep the preset's. A ready-made ``model`` comes with its ``tokenizer``."""

    def __init__(self, model_name_or_path: str, *, base_model: Optional[str] = None,
                 tokenizer_name: Optional[str] = None, device: Optional[str] = None, dtype: Optional[str] = None,
                 attn_implementation: Optional[str] = None, query_prefix: Optional[str] = None,
                 passage_prefix: Optional[str] = None, query_max_length: Optional[int] = None,
                 passage_max_length: Optional[int] = None, padding_side: Optional[str] = None,
                 batch_size: int = BATCH_SIZE, max_batch_tokens: Optional[int] = BATCH_TOKENS,
                 pad_to_multiple_of: Optional[int] = None, model=None, tokenizer=None):
        self.preset, self.from_preset = resolve(
            model_name_or_path, "encoder", base_model=base_model, tokenizer=tokenizer_name, query_prefix=query_prefix,
            passage_prefix=passage_prefix, query_max_length=query_max_length, passage_max_length=passage_max_length,
            padding_side=padding_side)
        p = self.preset
        if batch_size < 1:
            raise InputError(f"batch size must be >= 1, got {batch_size}")
        self.batch_size, self.max_batch_tokens, self.pad_to_multiple_of = batch_size, max_batch_tokens, pad_to_multiple_of
        if model is None:
            resolved = resolve_model(p.model, p.base_model)
            if p.base_model and not resolved.adapter and p.base_model != p.model:
                raise InputError(f"cannot read the LoRA adapter {p.model} (no adapter_config.json; offline and not "
                                 f"cached?) although base model {p.base_model} is set")
            tokenizer = tokenizer or load_tokenizer(own_tokenizer(p, resolved), p.padding_side)
            model, _ = load_model(p.model, kind="encoder", base_model=p.base_model, dtype=dtype, device=device,
                                  attn_implementation=attn_implementation, pad_token_id=tokenizer.pad_token_id)
        elif tokenizer is None:
            raise ValueError("pass the tokenizer together with a ready-made model")
        self.model, self.tokenizer = model, tokenizer
        self.device = next(model.parameters()).device
        self.dimension = int(getattr(model.config, "hidden_size", 0) or 0)
        if p.dimension and self.dimension and p.dimension != self.dimension:
            raise InputError(f"preset {p.name} says dimension {p.dimension} but model {p.model} has hidden size "
                             f"{self.dimension}")
        self.query_template, self.passage_template = p.query_template(), p.passage_template()
        self.num_truncated = self.num_empty = self.num_tokens = 0

    def identity(self) -> dict:
        """What identifies this encoder's vectors: the preset's settings and the weights' fingerprints."""
        return dict(preset=self.preset.to_dict(), checkpoint=checkpoint_identity(self.preset.model,
                                                                                 self.preset.base_model),
                    dtype=str(next(self.model.parameters()).dtype))

    def encode_queries(self, queries: Sequence[str], max_length: Optional[int] = None,
                       batch_size: Optional[int] = None) -> np.ndarray:
        t = self.query_template
        texts = [t.query_text(q) for q in queries]
        return self.embed_ids(self._tokenize(texts, max_length or t.max_length), batch_size)

    def encode_docs(self, docs: Sequence[Doc], max_length: Optional[int] = None,
                    batch_size: Optional[int] = None, on_batch: Optional[Callable[[int], None]] = None) -> np.ndarray:
        t = self.passage_template
        self.num_empty += sum(not any(d.field(f).strip() for f in t.fields) for d in docs)
        texts = [t.passage_text(d) for d in docs]
        return self.embed_ids(self._tokenize(texts, max_length or t.max_length), batch_size, on_batch)

    def encode_passages(self, texts: Sequence[Optional[str]], titles: Optional[Sequence[Optional[str]]] = None,
                        max_length: Optional[int] = None, batch_size: Optional[int] = None,
                        urls: Optional[Sequence[Optional[str]]] = None) -> np.ndarray:
        """Column-wise passages (``texts``, optional ``titles`` and ``urls``), as Pyserini's encoders take them."""
        n = len(texts)
        for name, col in (("title", titles), ("url", urls)):
            if col is not None and len(col) != n:
                raise InputError(f"{len(col)} {name}s for {n} texts")
        docs = [Doc(str((titles or [None] * n)[i] or ""), str(texts[i] or ""), str((urls or [None] * n)[i] or ""))
                for i in range(n)]
        return self.encode_docs(docs, max_length, batch_size)

    def _tokenize(self, texts: List[str], max_length: int) -> List[List[int]]:
        ids, truncated = tokenize(self.tokenizer, texts, max_length, self.preset.append_eos)
        self.num_truncated += truncated
        return ids

    @torch.inference_mode()
    def embed_ids(self, ids: Sequence[Sequence[int]], batch_size: Optional[int] = None,
                  on_batch: Optional[Callable[[int], None]] = None) -> np.ndarray:
        """Embeddings ``[len(ids), dim]`` (float32), in input order; ``on_batch(n)`` after each batch of n."""
        out = np.empty((len(ids), self.dimension), dtype=np.float32)
        for rows in length_batches([len(x) for x in ids], batch_size or self.batch_size, self.max_batch_tokens):
            out[rows] = self.forward([ids[i] for i in rows]).cpu().numpy()
            if on_batch is not None:
                on_batch(len(rows))
        return out

    def forward(self, batch: Sequence[Sequence[int]]) -> torch.Tensor:
        enc = pad(self.tokenizer, batch, self.preset.padding_side, self.pad_to_multiple_of)
        mask, ids = enc["attention_mask"].to(self.device), enc["input_ids"].to(self.device)
        if self.preset.padding_side == "right":
            # causal attention never lets a real token see the pads after it: no mask, the plain causal kernel
            hidden = self.model(input_ids=ids, use_cache=False).last_hidden_state
        else:
            hidden = self.model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask),
                                use_cache=False).last_hidden_state
        self.num_tokens += sum(len(x) for x in batch)
        reps = pool(hidden, mask, self.preset.pooling)
        return F.normalize(reps, p=2, dim=-1) if self.preset.normalize else reps
