"""RankLLaMA (Ma et al., 2023): a decoder as a one-logit sequence classifier (+ LoRA, merged) scoring a (query,
document) pair at its last token, inputs from the preset's pair template (:mod:`repllama_pyserini.templates`). Batched
scoring (length-sorted, padded) reproduces the one-pair-at-a-time model card to float precision: the score is read
at the last attention-mask position, never located by searching for pad ids::

    reranker = RankLLaMAReranker.from_pretrained("rankllama")
    for h in reranker.rerank(query, LuceneSearcher.from_prebuilt_index("msmarco-v1-passage").search(query, k=200)):
        ...   # h.docid, h.score, h.first_stage_score
"""
from __future__ import annotations

from typing import List, Optional, Sequence

from ..cli import InputError
from ..templates import BATCH_SIZE, BATCH_TOKENS, PairTemplate, last_token, length_batches, pad, position_ids
from .base import Reranker


def identity(preset, dtype: str = "auto", device: str = "auto") -> dict:
    """What decides a RankLLaMA model's scores, computed without loading it."""
    from ..models import checkpoint_identity, resolve_device, resolve_dtype
    settings = {k: v for k, v in preset.to_dict().items() if k not in ("name", "aliases", "description", "depth")}
    return dict(reranker="rankllama", settings=settings, dtype=str(resolve_dtype(dtype, resolve_device(device))),
                checkpoint=checkpoint_identity(preset.model, preset.base_model))


class RankLLaMAReranker(Reranker):
    """Pointwise RankLLaMA scoring: batched (at most ``batch_size`` pairs and ``max_tokens`` padded tokens),
    length-sorted, ``torch.inference_mode``."""

    def __init__(self, model, tokenizer, template: PairTemplate = PairTemplate(), depth: int = 200,
                 batch_size: int = BATCH_SIZE, max_tokens: Optional[int] = BATCH_TOKENS, padding_side: str = "right",
                 name: str = "rankllama", preset=None):
        if padding_side not in ("left", "right"):
            raise ValueError("padding_side must be 'left' or 'right'")
        self.model, self.tokenizer, self.template = model, tokenizer, template
        self.depth, self.batch_size, self.max_tokens = depth, batch_size, max_tokens
        self.padding_side, self.name, self.preset = padding_side, name, preset
        self.backbone = getattr(model, model.base_model_prefix)
        self.head = getattr(model, "score", None)
        if self.head is None:
            raise InputError(f"{type(model).__name__} has no 'score' head: load it as a sequence classifier")
        self.device = next(model.parameters()).device

    @classmethod
    def from_pretrained(cls, model_name_or_path: Optional[str] = None, preset: Optional[str] = None,
                        base_model: Optional[str] = None, tokenizer: Optional[str] = None,
                        granularity: Optional[str] = None, dtype: Optional[str] = None, device: Optional[str] = None,
                        attn_implementation: Optional[str] = None, batch_size: int = BATCH_SIZE,
                        max_tokens: Optional[int] = BATCH_TOKENS, allow_untrained_head: bool = False,
                        **overrides) -> "RankLLaMAReranker":
        """Load a RankLLaMA checkpoint: ``model_name_or_path`` (a preset name, hub id or directory) with the settings of
        ``preset`` (default: its own), else the ``granularity`` defaults (passage: 512 tokens, depth 200; document:
        2048, 100, URL first); keyword ``overrides`` (``max_length``, ``depth``...; None ignored) win."""
        p = resolve_preset(model_name_or_path, preset, granularity, base_model=base_model, tokenizer=tokenizer,
                           **overrides)
        from ..dense.encoder import own_tokenizer
        from ..models import load_model, load_tokenizer, resolve_model
        tok = load_tokenizer(own_tokenizer(p, resolve_model(p.model, p.base_model)), p.padding_side)
        model, _ = load_model(p.model, kind="reranker", base_model=p.base_model, dtype=dtype, device=device,
                              attn_implementation=attn_implementation, pad_token_id=tok.pad_token_id,
                              allow_untrained_head=allow_untrained_head)
        r = cls(model, tok, p.pair_template(), p.depth, batch_size, max_tokens, p.padding_side, p.name, p)
        r.dtype_setting, r.device_setting = dtype, device
        return r

    def identity(self) -> dict:
        if self.preset is None:
            return {"reranker": self.name, "template": self.template.__dict__}
        return identity(self.preset, getattr(self, "dtype_setting", None), getattr(self, "device_setting", None))

    def encode_pairs(self, queries: Sequence[str], docs: Sequence) -> List[List[int]]:
        return self.template.encode(self.tokenizer, queries, docs)

    def score_ids(self, seqs: Sequence[Sequence[int]]) -> List[float]:
        """Scores of tokenised pairs (one padded batch)."""
        import torch
        enc = pad(self.tokenizer, seqs, self.padding_side)
        ids, mask = enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)
        with torch.inference_mode():
            if self.padding_side == "right":
                # causal attention never lets a real token see the pads after it and positions start at 0: no mask
                # needed, so attention runs its plain causal kernel
                hidden = self.backbone(input_ids=ids, use_cache=False).last_hidden_state
            else:
                hidden = self.backbone(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask),
                                       use_cache=False).last_hidden_state
            return self.head(last_token(hidden, mask))[:, 0].float().cpu().tolist()

    def score_pairs(self, queries, docs, progress=None) -> List[float]:
        if len(queries) != len(docs):
            raise ValueError("queries and docs differ in length")
        ids = self.encode_pairs(queries, docs)
        scores = [0.0] * len(ids)
        for batch in length_batches([len(s) for s in ids], self.batch_size, self.max_tokens):
            for i, s in zip(batch, self.score_ids([ids[i] for i in batch])):
                scores[i] = s
            if progress is not None:
                progress.update(len(batch))
        return scores


def resolve_preset(model: Optional[str], preset: Optional[str] = None, granularity: Optional[str] = None, **overrides):
    """The reranker preset for ``model`` (its own, or the settings of ``preset`` applied to ``model``)."""
    from ..presets import resolve
    if preset:
        p, _ = resolve(preset, "reranker", granularity)
        if model and model not in {p.name, p.model, *p.aliases}:  # another copy of the weights: settings only
            import dataclasses
            p = dataclasses.replace(p, model=model, name=model, base_model=None, tokenizer=None)
        return p.replace(**overrides)
    if not model:
        raise InputError("no reranker model given (--model)")
    return resolve(model, "reranker", granularity, **overrides)[0]
