"""Query-likelihood reranking (UPR zero-shot, or Q-PEFT with trained modules): :class:`QPeftReranker` is a
:class:`repllama_pyserini.rerank.Reranker`, so ``rerank(query, hits)``, resumable ``rerank_run`` and the pipeline work
as with RankLLaMA (``docs/qpeft.md``)."""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Sequence

import torch

from ..cli import InputError
from ..rerank.base import Reranker
from ..templates import as_doc
from .module import CONFIG_NAME, QPeftModule, load_module, read_config
from .scoring import PROMPTS, PromptEncoder, QueryLikelihoodScorer

DEFAULT_DEPTH = 100


def resolve_module_dir(path: str) -> str:
    """A module directory, or a training output directory (its ``module/``)."""
    if os.path.isdir(os.path.join(path, "module")) and not os.path.isfile(os.path.join(path, CONFIG_NAME)):
        return os.path.join(path, "module")
    return path


class QPeftReranker(Reranker):
    """Scores = mean log-likelihood of the query's tokens given the document under a frozen causal LM; with
    ``modules`` (Q-PEFT), given the document and the module's hints. Several modules can be scored in one pass
    (:meth:`score_heads`: the document prefixes run once for all of them); :meth:`score_pairs` uses the
    first."""

    def __init__(self, lm, tokenizer, modules: Sequence[Optional[QPeftModule]] = (None,), prompt: str = "upr",
                 max_doc_tokens: int = 256, max_query_tokens: int = 64, depth: int = DEFAULT_DEPTH,
                 batch_size: int = 16, padding_side: str = "right", name: Optional[str] = None,
                 instruction: Optional[str] = None, add_bos: bool = True):
        if any(m is not None for m in modules) and prompt != "qpeft":
            raise InputError("a Q-PEFT module needs prompt='qpeft'")
        lm.requires_grad_(False)
        lm.eval()
        self.lm, self.tokenizer = lm, tokenizer
        self.modules = list(modules)
        self.encoder = PromptEncoder(tokenizer, prompt, max_doc_tokens, max_query_tokens, instruction, add_bos)
        self.scorer = QueryLikelihoodScorer(lm, self.encoder, batch_size, padding_side)
        self.depth, self.batch_size = depth, batch_size
        self.name = name or ("upr" if prompt == "upr" else "qpeft")
        self.heads = len(self.modules)

    @staticmethod
    def plan(model_name_or_path: Optional[str] = None, module=None, prompt: Optional[str] = None, **settings):
        """``(LLM, module dirs, prompt, settings)`` as :meth:`from_pretrained` resolves them, without loading."""
        module_dirs = [] if module is None else ([module] if isinstance(module, str) else list(module))
        module_dirs = [resolve_module_dir(m) for m in module_dirs]
        configs = [read_config(m) for m in module_dirs]
        settings = {k: v for k, v in settings.items() if v is not None}
        if configs:
            prompt = prompt or "qpeft"
            model_name_or_path = model_name_or_path or configs[0].base_model
            for key, v in configs[0].prompt.items():
                if key in ("max_doc_tokens", "max_query_tokens", "instruction", "add_bos"):
                    settings.setdefault(key, v)
        if not model_name_or_path:
            raise InputError("no LLM given (pass the model, or a module whose config names its base model)")
        prompt = prompt or "upr"
        if prompt not in PROMPTS:
            raise InputError(f"prompt must be one of {PROMPTS}")
        return model_name_or_path, module_dirs, prompt, settings

    @classmethod
    def planned_identity(cls, model_name_or_path=None, module=None, prompt=None, base_model=None, dtype=None,
                         device=None, **settings) -> dict:
        """What decides the scores, from the files alone (a finished job is recognised without loading anything)."""
        from ..jobs import content_fingerprint
        from ..models import checkpoint_identity, resolve_device, resolve_dtype
        model, dirs, prompt, settings = cls.plan(model_name_or_path, module, prompt, **settings)
        keep = ("max_doc_tokens", "max_query_tokens", "instruction", "add_bos", "padding_side")
        return {"reranker": "qpeft" if dirs else prompt, "prompt": prompt,
                "settings": {k: v for k, v in sorted(settings.items()) if k in keep},
                "dtype": str(resolve_dtype(dtype, resolve_device(device))),
                "checkpoint": checkpoint_identity(model, base_model),
                "modules": [content_fingerprint(d) for d in dirs]}

    @classmethod
    def from_pretrained(cls, model_name_or_path: Optional[str] = None, module=None, prompt: Optional[str] = None,
                        tokenizer: Optional[str] = None, base_model: Optional[str] = None,
                        dtype: Optional[str] = None, device: Optional[str] = None,
                        attn_implementation: Optional[str] = "sdpa", **settings) -> "QPeftReranker":
        """Load the frozen LLM (full model or LoRA adapter + base, merged) and optional Q-PEFT module(s)
        (a directory, a training output directory, or a list of them). Without ``model_name_or_path`` the LLM
        is the module's ``base_model``; prompt settings default to the module's training settings."""
        from ..models import load_model, load_tokenizer
        model_name_or_path, module_dirs, prompt, settings = cls.plan(model_name_or_path, module, prompt, **settings)
        tok = load_tokenizer(tokenizer or model_name_or_path, padding_side=settings.get("padding_side", "right"))
        lm, _ = load_model(model_name_or_path, kind="causal", base_model=base_model, dtype=dtype, device=device,
                           attn_implementation=attn_implementation, pad_token_id=tok.pad_token_id)
        modules = [load_module(m, lm) for m in module_dirs] or [None]
        reranker = cls(lm, tok, modules, prompt=prompt, **settings)
        reranker.source = (model_name_or_path, base_model)
        return reranker

    def identity(self) -> dict:
        """The prompt settings, the LLM's weights (when loaded from files) and each module's weights (a digest)."""
        import hashlib
        from ..models import checkpoint_identity

        def digest(m):
            h = hashlib.sha256(json.dumps(m.config.__dict__, sort_keys=True, default=str).encode())
            for k, v in sorted(m.state_dict().items()):
                h.update(k.encode() + v.detach().cpu().contiguous().numpy().tobytes())
            return h.hexdigest()

        source = getattr(self, "source", None)
        return {"reranker": self.name, "dtype": str(next(self.lm.parameters()).dtype), **self.encoder.config(),
                "checkpoint": checkpoint_identity(*source) if source else None,
                "modules": [None if m is None else digest(m) for m in self.modules]}

    @torch.no_grad()
    def score_heads(self, queries: Sequence[str], docs: Sequence, progress=None) -> List[List[float]]:
        """One score list per module for the (query, doc) pairs; pairs of the same query are batched together."""
        if len(queries) != len(docs):
            raise ValueError("queries and docs differ in length")
        groups: Dict[str, List[int]] = {}
        for i, q in enumerate(queries):
            groups.setdefault(q, []).append(i)
        out = [[0.0] * len(queries) for _ in self.modules]
        for q, idx in groups.items():
            fields = [tuple(as_doc(docs[i]))[:2] for i in idx]
            scores = self.scorer.score(q, fields, modules=self.modules)
            for m, s in enumerate(scores):
                for i, v in zip(idx, s):
                    out[m][i] = float(v)
            if progress is not None:
                progress.update(len(idx))
        return out

    def score_pairs(self, queries, docs, progress=None) -> List[float]:
        return self.score_heads(queries, docs, progress)[0]
