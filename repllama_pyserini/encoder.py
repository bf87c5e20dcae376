"""RepLLaMA query and document encoders, behind Pyserini's ``QueryEncoder`` / ``DocumentEncoder`` interfaces.

The released RepLLaMA recipe, exactly (model card of ``castorini/repllama-v1-7b-lora-passage``, Tevatron v2):

* input ``query: {query}`` and ``passage: {title} {text}`` (the title and its space only when there is a title;
  the document model also puts the URL first), prefixes and fields from the preset (:mod:`.presets`);
* tokenised with the tokenizer's own special tokens (LLaMA: BOS), truncated to ``max_length - 1`` tokens, then
  the EOS id appended, so the EOS survives truncation and a sequence is at most ``max_length`` tokens;
* the embedding is the final hidden state at that EOS token (found from the attention mask, so left and right
  padding give the same result; position ids are computed from the mask too), L2-normalised, float32.

Batches are sorted by length (less padding); results come back in input order.

Handling of odd input, everywhere (Pyserini's CLIs, :mod:`.encode`, Python):

* text longer than the max length: truncated (the EOS kept); :attr:`RepLLaMAEncoder.num_truncated` counts them;
* an empty query: :class:`~repllama_pyserini.io.InputError`; an empty passage (no title, no text) is encoded
  as the prefix alone (:attr:`RepLLaMAEncoder.num_empty` counts them; :mod:`.encode` can skip or refuse them);
* an index whose dimension differs from the encoder's: :func:`check_index_dimension` raises a one-line error
  (:func:`install_faiss_dimension_check` wires it into Pyserini's ``FaissSearcher``).

Pyserini passes ``max_length=256`` to a document encoder even when ``--max-length`` is not on its command line;
that default is ignored in favour of the preset's passage length, an explicit ``--max-length`` is honoured.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import pyserini_plugin as _plugin

logger = logging.getLogger(__name__)

# Importing pyserini.encode runs the plugin's register(), which imports this very module: keep it from
# registering while this module is half-defined; it is registered at the bottom of this file instead.
_registered_before, _plugin._done = _plugin._done, True
try:
    from pyserini.encode import DocumentEncoder, QueryEncoder
finally:
    _plugin._done = _registered_before

from .io import InputError
from .models import load_model, load_tokenizer, resolve_model
from .presets import Preset, resolve

PYSERINI_DEFAULT_DOC_MAX_LENGTH = 256
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def _join_prefix(prefix: Optional[str]) -> Optional[str]:
    """Pyserini's convention for a user prefix is ``f'{prefix} {text}'``: add the space unless it is there."""
    if prefix is None:
        return None
    return prefix if (not prefix or prefix[-1].isspace()) else prefix + " "


class RepLLaMAEncoder:
    """Tokenise, batch, run the decoder and pool, the RepLLaMA way; shared by the query and document encoders.

    ``model_name_or_path``: a preset name or YAML file, a hub id or a local directory (full model or LoRA
    adapter; an adapter's base is resolved from its ``adapter_config.json`` unless ``base_model`` is given).
    Keyword arguments that are None keep the preset's value. ``model``/``tokenizer`` may be given ready-made.
    Batches hold at most ``batch_size`` texts and, when ``max_batch_tokens`` is set, at most that many tokens
    (padding included): long documents then go in small batches, short ones in full ones.
    """

    def __init__(self, model_name_or_path: str, *, base_model: Optional[str] = None,
                 tokenizer_name: Optional[str] = None, device: Optional[str] = None,
                 dtype: Optional[str] = None, attn_implementation: Optional[str] = None,
                 query_prefix: Optional[str] = None, passage_prefix: Optional[str] = None,
                 query_max_length: Optional[int] = None, passage_max_length: Optional[int] = None,
                 padding_side: Optional[str] = None, batch_size: int = 32, max_batch_tokens: Optional[int] = None,
                 pad_to_multiple_of: Optional[int] = None, model=None, tokenizer=None):
        self.preset, self.from_preset = resolve(
            model_name_or_path, base_model=base_model, tokenizer=tokenizer_name, query_prefix=query_prefix,
            passage_prefix=passage_prefix, query_max_length=query_max_length,
            passage_max_length=passage_max_length, padding_side=padding_side)
        p = self.preset
        if p.kind != "encoder":
            raise InputError(f"{model_name_or_path} is a {p.kind} preset, not an encoder (use "
                             f"repllama_pyserini.rerank for RankLLaMA)")
        if p.pooling == "eos" and not p.append_eos:
            raise InputError(f"preset {p.name}: pooling 'eos' needs append_eos: true")
        if batch_size < 1:
            raise InputError(f"batch size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.pad_to_multiple_of = pad_to_multiple_of
        if model is None:
            self.resolved = resolve_model(p.model, p.base_model)
            if p.base_model and not self.resolved.adapter and p.base_model != p.model:
                # resolve_model falls back to "a full model" when it cannot read an adapter config; with a base
                # named, that would silently encode with the bare base model
                raise InputError(f"cannot read the LoRA adapter {p.model} (no adapter_config.json; offline and "
                                 f"not cached?) although base model {p.base_model} is set")
            tokenizer = tokenizer or self._load_tokenizer()
            model, self.resolved = load_model(p.model, kind="encoder", base_model=p.base_model, dtype=dtype,
                                              device=device, attn_implementation=attn_implementation,
                                              pad_token_id=tokenizer.pad_token_id)
        elif tokenizer is None:
            raise ValueError("pass the tokenizer together with a ready-made model")
        self.model, self.tokenizer = model, tokenizer
        self.tokenizer.padding_side = p.padding_side
        self.device = next(model.parameters()).device
        self.dimension = int(getattr(model.config, "hidden_size", 0) or 0)
        if p.dimension and self.dimension and p.dimension != self.dimension:
            raise InputError(f"preset {p.name} says dimension {p.dimension} but model {p.model} has hidden "
                             f"size {self.dimension}")
        self.eos_id = self.tokenizer.eos_token_id
        if p.append_eos and self.eos_id is None:
            raise InputError(f"tokenizer of {p.model} has no EOS token; set append_eos: false and pooling: last")
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_id
        probe = self.tokenizer("a", add_special_tokens=True)["input_ids"]
        self._trailing_special = bool(probe) and probe[-1] in set(self.tokenizer.all_special_ids)
        self.num_truncated = 0
        self.num_empty = 0
        self.num_tokens = 0

    def _load_tokenizer(self):
        p, r = self.preset, self.resolved
        if p.tokenizer:
            return load_tokenizer(p.tokenizer, p.padding_side)
        if r.adapter:  # adapters usually ship without a tokenizer: use its own if it has one, else the base's
            if os.path.isdir(r.adapter):
                if any(os.path.isfile(os.path.join(r.adapter, f)) for f in TOKENIZER_FILES):
                    return load_tokenizer(r.adapter, p.padding_side)
            else:
                try:
                    return load_tokenizer(r.adapter, p.padding_side)
                except Exception:
                    pass
        return load_tokenizer(r.base, p.padding_side)

    # -- formatting -------------------------------------------------------------------------------------------
    def format_query(self, query: str) -> str:
        query = "" if query is None else str(query).strip()
        if not query:
            raise InputError("empty query: RepLLaMA needs query text (drop the topic or give it text)")
        return f"{self.preset.query_prefix}{query}"

    def format_passage(self, fields: Dict[str, Optional[str]]) -> str:
        """``prefix + ' '.join(non-empty fields in preset order)``; an all-empty passage is the prefix alone."""
        parts = [str(fields[f]).strip() for f in self.preset.passage_fields if fields.get(f) is not None]
        body = " ".join(x for x in parts if x)
        if not body:
            self.num_empty += 1
        return f"{self.preset.passage_prefix}{body}"

    # -- tokenisation -----------------------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str], max_length: int) -> List[List[int]]:
        """Token ids per text: the tokenizer's special tokens, truncated to ``max_length - 1``, EOS appended."""
        if max_length < 2:
            raise InputError(f"max length must be >= 2 (BOS and EOS), got {max_length}")
        if not texts:
            return []
        limit = max_length - 1 if self.preset.append_eos else max_length
        ids = self.tokenizer(list(texts), add_special_tokens=True, truncation=True, max_length=limit + 1,
                             padding=False, return_attention_mask=False,
                             return_token_type_ids=False)["input_ids"]
        out = []
        for text, x in zip(texts, ids):
            if len(x) > limit:
                self.num_truncated += 1
                x = (self.tokenizer(text, add_special_tokens=True, truncation=True, max_length=limit)["input_ids"]
                     if self._trailing_special else x[:limit])
            if self.preset.append_eos:
                x = list(x) + [self.eos_id]
            out.append(x)
        return out

    # -- the model --------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def embed_ids(self, ids: Sequence[Sequence[int]], batch_size: Optional[int] = None,
                  sort: bool = True) -> np.ndarray:
        """Embeddings ``[len(ids), dim]`` (float32) in input order; batches formed longest first when ``sort``,
        of at most ``batch_size`` sequences and (with :attr:`max_batch_tokens`) at most that many padded tokens."""
        n = len(ids)
        if n == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        bs = batch_size or self.batch_size
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=n)
        order = np.argsort(-lengths, kind="stable") if sort else np.arange(n)
        out = np.empty((n, self.dimension), dtype=np.float32)
        start = 0
        while start < n:
            end, width = start, 0
            while end < n and end - start < bs:
                w = max(width, int(lengths[order[end]]))
                if self.max_batch_tokens and end > start and w * (end - start + 1) > self.max_batch_tokens:
                    break
                width, end = w, end + 1
            rows = order[start:end]
            out[rows] = self._forward([ids[i] for i in rows]).cpu().numpy()
            start = end
        return out

    def _forward(self, batch: List[Sequence[int]]) -> torch.Tensor:
        lens = [len(x) for x in batch]
        width = max(lens)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        left = self.preset.padding_side == "left"
        for i, x in enumerate(batch):
            sl = slice(width - len(x), width) if left else slice(0, len(x))
            input_ids[i, sl] = torch.as_tensor(x, dtype=torch.long)
            mask[i, sl] = 1
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        input_ids, mask, position_ids = (t.to(self.device) for t in (input_ids, mask, position_ids))
        hidden = self.model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids,
                            use_cache=False).last_hidden_state
        self.num_tokens += sum(lens)
        if self.preset.pooling == "mean":
            m = mask.unsqueeze(-1).to(hidden.dtype)
            reps = (hidden * m).sum(1) / m.sum(1).clamp(min=1)
        else:  # eos / last: the last real token (the appended EOS)
            last = torch.full((len(batch),), width - 1, dtype=torch.long) if left else \
                torch.as_tensor(lens, dtype=torch.long) - 1
            reps = hidden[torch.arange(len(batch), device=hidden.device), last.to(hidden.device)]
        reps = reps.float()
        return F.normalize(reps, p=2, dim=-1) if self.preset.normalize else reps

    # -- texts in, embeddings out -----------------------------------------------------------------------------
    def encode_queries(self, queries: Sequence[str], max_length: Optional[int] = None,
                       batch_size: Optional[int] = None) -> np.ndarray:
        texts = [self.format_query(q) for q in queries]
        return self.embed_ids(self.tokenize(texts, max_length or self.preset.query_max_length), batch_size)

    def passage_texts(self, texts: Sequence[Optional[str]], titles: Optional[Sequence[Optional[str]]] = None,
                      **fields: Optional[Sequence[Optional[str]]]) -> List[str]:
        columns = dict(fields, text=texts, title=titles)
        n = len(texts)
        for name, col in columns.items():
            if col is not None and len(col) != n:
                raise InputError(f"{len(col)} {name}s for {n} texts")
        return [self.format_passage({k: (v[i] if v is not None else None) for k, v in columns.items()})
                for i in range(n)]

    def encode_passages(self, texts: Sequence[Optional[str]], titles: Optional[Sequence[Optional[str]]] = None,
                        max_length: Optional[int] = None, batch_size: Optional[int] = None,
                        **fields) -> np.ndarray:
        formatted = self.passage_texts(texts, titles, **fields)
        return self.embed_ids(self.tokenize(formatted, max_length or self.preset.passage_max_length), batch_size)


def _encoder_kwargs(prefix_key: str, prefix, fp16, dtype, kwargs) -> dict:
    out = dict(base_model=kwargs.pop("base_model", None), dtype=dtype or ("fp16" if fp16 else None),
               attn_implementation=kwargs.pop("attn_implementation", None),
               padding_side=kwargs.pop("padding_side", None), batch_size=kwargs.pop("batch_size", 32) or 32,
               max_batch_tokens=kwargs.pop("max_batch_tokens", None),
               pad_to_multiple_of=kwargs.pop("pad_to_multiple_of", None))
    out[prefix_key] = _join_prefix(prefix)
    return out


class RepLLaMAQueryEncoder(QueryEncoder):
    """Pyserini query encoder. Pyserini calls it with ``encoder_dir, tokenizer_name, device, prefix, fp16`` (and,
    depending on substrings of the encoder name, ``pooling``, ``l2_norm``, ``multimodal``...: pooling and
    normalisation come from the preset, those are ignored). ``prefix`` (``--query-prefix``) replaces the preset's
    ``query: ``; ``max_length`` replaces its query max length."""

    def __init__(self, encoder_dir: Optional[str] = None, tokenizer_name: Optional[str] = None,
                 encoded_query_dir: Optional[str] = None, device: Optional[str] = "cpu",
                 prefix: Optional[str] = None, fp16: bool = False, max_length: Optional[int] = None,
                 dtype: Optional[str] = None, **kwargs):
        super().__init__(encoded_query_dir)
        self.encoder: Optional[RepLLaMAEncoder] = None
        if encoder_dir:
            self.encoder = RepLLaMAEncoder(encoder_dir, tokenizer_name=tokenizer_name, device=device,
                                           query_max_length=max_length,
                                           **_encoder_kwargs("query_prefix", prefix, fp16, dtype, kwargs))
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


def _explicit_pyserini_max_length(max_length: Optional[int]) -> Optional[int]:
    """None when ``max_length`` is only Pyserini's ``pyserini.encode`` default (``--max-length`` not given)."""
    if max_length == PYSERINI_DEFAULT_DOC_MAX_LENGTH and "--max-length" not in sys.argv \
            and sys.argv and sys.argv[0].replace("\\", "/").endswith("pyserini/encode/__main__.py"):
        return None
    return max_length


class RepLLaMADocumentEncoder(DocumentEncoder):
    """Pyserini document encoder (``python -m pyserini.encode ... encoder --encoder-class repllama``).

    Pyserini calls it with ``model_name, device`` (sometimes ``prefix``, ``l2_norm``, ``pooling``...) and then
    ``encode(texts=..., titles=..., max_length=..., fp16=..., add_sep=...)``; ``titles`` and other fields
    (``urls``...) are there when ``--fields title text`` is given. ``add_sep`` is ignored: RepLLaMA joins the
    fields with a space."""

    def __init__(self, model_name: Optional[str] = None, tokenizer_name: Optional[str] = None,
                 device: Optional[str] = "cpu", prefix: Optional[str] = None, fp16: bool = False,
                 max_length: Optional[int] = None, dtype: Optional[str] = None, **kwargs):
        model_name = model_name or kwargs.pop("encoder_dir", None)
        self.encoder = RepLLaMAEncoder(model_name, tokenizer_name=tokenizer_name, device=device,
                                       passage_max_length=max_length,
                                       **_encoder_kwargs("passage_prefix", prefix, fp16, dtype, kwargs))
        self.dimension = self.encoder.dimension
        self.has_model = True

    def encode(self, texts: Sequence[Optional[str]], titles: Optional[Sequence[Optional[str]]] = None,
               max_length: Optional[int] = None, **kwargs) -> np.ndarray:
        for ignored in ("fp16", "add_sep", "multimodal"):
            kwargs.pop(ignored, None)
        names = self.encoder.preset.passage_fields
        fields = {k[:-1]: v for k, v in kwargs.items() if k.endswith("s") and k[:-1] in names}
        absent = [n for n in names if n != "text" and n not in fields and not (n == "title" and titles is not None)]
        if absent and not getattr(self, "_warned_fields", False):
            self._warned_fields = True
            logger.warning("pyserini.encode passed no %s: documents are encoded without them (the model expects "
                           "%s); give both the input and the encoder sections --fields %s", "/".join(absent),
                           " + ".join(names), " ".join(names))
        return self.encoder.encode_passages(texts, titles, max_length=_explicit_pyserini_max_length(max_length),
                                            **fields)


# -- index/encoder dimension check ----------------------------------------------------------------------------
def encoder_dimension(query_encoder) -> Optional[int]:
    return getattr(query_encoder, "dimension", None) or getattr(getattr(query_encoder, "encoder", None),
                                                                 "dimension", None)


def check_index_dimension(index_dimension: int, query_encoder, index_dir: str = "the index") -> None:
    """Raise a one-line :class:`InputError` when a query encoder's dimension differs from the index's."""
    dim = encoder_dimension(query_encoder)
    if dim and index_dimension and int(dim) != int(index_dimension):
        raise InputError(f"dimension mismatch: {index_dir} holds {index_dimension}-d vectors but the query "
                         f"encoder produces {dim}-d ones (was the index built with another model?)")


def install_faiss_dimension_check() -> bool:
    """Make Pyserini's ``FaissSearcher`` check the index dimension against a RepLLaMA query encoder when it
    opens an index (instead of a bare ``AssertionError`` at the first query). Idempotent; returns whether
    ``FaissSearcher`` was found."""
    _searcher = sys.modules.get("pyserini.search.faiss._searcher")
    if _searcher is None or not hasattr(_searcher, "FaissSearcher"):
        try:
            from pyserini.search.faiss import _searcher
        except Exception:
            return False
    cls = _searcher.FaissSearcher
    if getattr(cls.__init__, "_repllama_dim_check", False):
        return True
    original = cls.__init__

    def __init__(self, index_dir, query_encoder, *args, **kwargs):
        original(self, index_dir, query_encoder, *args, **kwargs)
        if isinstance(query_encoder, RepLLaMAQueryEncoder):
            check_index_dimension(self.dimension, query_encoder, index_dir)

    __init__._repllama_dim_check = True
    cls.__init__ = __init__
    return True


__all__ = ["RepLLaMAEncoder", "RepLLaMAQueryEncoder", "RepLLaMADocumentEncoder", "check_index_dimension",
           "install_faiss_dimension_check", "Preset"]

_plugin.register()
