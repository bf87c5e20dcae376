"""The trainable Q-PEFT module: query-dependent hint embeddings H for a frozen LLM, from E' (a trainable fp32 copy
of the LLM's input embeddings), an MLP and, for variant ``A``, attention; variant ``R`` retrieves hint tokens.
Saved on its own (``qpeft_config.json`` + ``qpeft.safetensors``: the MLP/attention weights and only the rows of E'
that differ from the LLM's E); :func:`load_module` rebuilds E' from the LLM, checked against a fingerprint of the
E it was trained with. The variants and the format: ``docs/qpeft.md``.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Callable, List, Optional, Sequence

import torch
from torch import nn

from ..cli import InputError
from ..formats.files import atomic_dir

VARIANTS = ("R", "A")
CONFIG_NAME = "qpeft_config.json"
WEIGHTS_NAME = "qpeft.safetensors"


@dataclass
class QPeftConfig:
    variant: str
    vocab_size: int
    hidden_size: int
    k: int = 10                      # R: number of hint tokens
    max_pairs: int = 1000            # R: top (query token, doc token) pairs considered
    num_heads: int = 2               # A
    dropout: float = 0.1             # A
    base_model: str = ""             # the frozen LLM it was trained with (informative)
    prompt: dict = field(default_factory=dict)   # PromptEncoder settings used in training
    embed_fingerprint: List[float] = field(default_factory=list)
    format: str = "repllama_pyserini.qpeft/1"

    def __post_init__(self):
        self.variant = str(self.variant).upper()
        if self.variant not in VARIANTS:
            raise InputError(f"Q-PEFT variant must be one of {VARIANTS}, got {self.variant!r}")


def embed_fingerprint(weight: torch.Tensor) -> List[float]:
    """A few numbers identifying an embedding matrix (robust to fp32/bf16 loading)."""
    w = weight.detach().float()
    rows = w[: min(512, w.shape[0])]
    return [float(w.shape[0]), float(w.shape[1]), float(rows.abs().mean()), float(rows[:, 0].sum()),
            float(rows.mean(0).norm())]


def select_hint_ids(scores: torch.Tensor, doc_ids: Sequence[int], k: int, max_pairs: int,
                    skip: Callable[[int], bool]) -> List[int]:
    """Q-PEFT-R's hint tokens from a ``[Lq, Ld]`` score matrix (real tokens only): the top
    ``min(max_pairs, Lq*Ld)`` pairs by score (stable on ties: query-major order), mapped to the document token
    id of their column, deduplicated in that order, skippable tokens dropped, the first ``k`` kept."""
    lq, ld = scores.shape
    if lq == 0 or ld == 0 or k <= 0:
        return []
    flat = scores.reshape(-1)
    order = torch.sort(flat, descending=True, stable=True).indices[: min(max_pairs, lq * ld)]
    cols = (order % ld).tolist()
    out, seen = [], set()
    for c in cols:
        tid = int(doc_ids[c])
        if tid in seen:
            continue
        seen.add(tid)
        if skip(tid):
            continue
        out.append(tid)
        if len(out) == k:
            break
    return out


def _pad_ids(seqs: Sequence[Sequence[int]], device) -> tuple:
    width = max(1, max((len(s) for s in seqs), default=1))
    ids = torch.zeros((len(seqs), width), dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.bool)
    for i, s in enumerate(seqs):
        if len(s):
            ids[i, :len(s)] = torch.as_tensor(list(s), dtype=torch.long)
            mask[i, :len(s)] = True
    return ids.to(device), mask.to(device)


class QPeftModule(nn.Module):
    def __init__(self, config: QPeftConfig, embed_weight: Optional[torch.Tensor] = None):
        super().__init__()
        self.config = config
        d = config.hidden_size
        self.embed = nn.Embedding(config.vocab_size, d)
        if embed_weight is not None:
            if tuple(embed_weight.shape) != (config.vocab_size, d):
                raise InputError(f"embedding matrix {tuple(embed_weight.shape)} does not fit the module "
                                 f"({config.vocab_size}, {d})")
            with torch.no_grad():
                self.embed.weight.copy_(embed_weight.detach().float())
        self.mlp = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d))
        self.attn = None
        if config.variant == "A":
            if d % config.num_heads:
                raise InputError(f"hidden size {d} is not divisible by {config.num_heads} heads")
            self.attn = nn.MultiheadAttention(d, config.num_heads, dropout=config.dropout, batch_first=True)

    @classmethod
    def create(cls, lm, variant: str, k: int = 10, max_pairs: int = 1000, num_heads: int = 2,
               dropout: float = 0.1, base_model: str = "", prompt: Optional[dict] = None,
               seed: Optional[int] = None) -> "QPeftModule":
        """A fresh module for ``lm``: E' copied from its input embeddings, MLP (and attention) freshly initialised."""
        weight = lm.get_input_embeddings().weight
        cfg = QPeftConfig(variant=variant, vocab_size=weight.shape[0], hidden_size=weight.shape[1], k=k,
                          max_pairs=max_pairs, num_heads=num_heads, dropout=dropout, base_model=base_model,
                          prompt=dict(prompt or {}), embed_fingerprint=embed_fingerprint(weight))
        if seed is not None:
            torch.manual_seed(seed)
        return cls(cfg, weight).to(weight.device)

    @property
    def device(self):
        return self.embed.weight.device

    def hint_ids(self, query_ids: Sequence[Sequence[int]], doc_ids: Sequence[Sequence[int]], frozen_embed,
                 skip: Callable[[int], bool]) -> List[List[int]]:
        """Q-PEFT-R: the selected document token ids for each (query, document) pair (no gradient)."""
        # pair by pair, unpadded: the selection (a sort of float scores, near-ties included) must not depend on
        # what else is in the batch
        dev = self.device
        out = []
        with torch.no_grad():
            for q, d in zip(query_ids, doc_ids):
                if not len(q) or not len(d):
                    out.append([])
                    continue
                eq = nn.functional.normalize(self.embed(torch.as_tensor(list(q), device=dev)), dim=-1)
                ed = nn.functional.normalize(frozen_embed(torch.as_tensor(list(d), device=dev)).float(), dim=-1)
                s = torch.sigmoid(eq @ ed.T)
                out.append(select_hint_ids(s.cpu(), d, self.config.k, self.config.max_pairs, skip))
        return out

    def hints(self, query_ids: Sequence[Sequence[int]], doc_ids: Sequence[Sequence[int]], frozen_embed,
              encoder) -> List[torch.Tensor]:
        """Hint embeddings H (``[L_i, D]``, fp32) for each pair; ``encoder`` (a PromptEncoder) gives the ids of
        ``hints:`` and ``\\n`` and which tokens to skip."""
        dev = self.device
        pre, suf = list(encoder.hint_prefix_ids), list(encoder.hint_suffix_ids)
        # an empty document would leave the attention nothing to attend to: give it one (pad/unk) token
        filler = [getattr(encoder.tok, "pad_token_id", None) or 0]
        doc_ids = [list(d) if len(d) else filler for d in doc_ids]
        if self.config.variant == "R":
            chosen = self.hint_ids(query_ids, doc_ids, frozen_embed, encoder.is_skippable)
            seqs = [pre + c + suf for c in chosen]
            ids, mask = _pad_ids(seqs, dev)
            h = self.mlp(self.embed(ids))
            return [h[i, :len(s)] for i, s in enumerate(seqs)]
        q, qm = _pad_ids(query_ids, dev)
        d, dm = _pad_ids(doc_ids, dev)
        kv = frozen_embed(d).detach().float()
        att, _ = self.attn(self.embed(q), kv, kv, key_padding_mask=~dm, need_weights=False)
        pre_e = self.embed(torch.tensor(pre, dtype=torch.long, device=dev))
        suf_e = self.embed(torch.tensor(suf, dtype=torch.long, device=dev))
        seqs = [torch.cat([pre_e, att[i, :len(query_ids[i])], suf_e], 0) for i in range(len(query_ids))]
        h = self.mlp(nn.utils.rnn.pad_sequence(seqs, batch_first=True))
        return [h[i, :s.shape[0]] for i, s in enumerate(seqs)]

    def save(self, out_dir: str, frozen_weight: torch.Tensor) -> str:
        """Write config + weights (MLP, attention, changed rows of E') to ``out_dir`` atomically."""
        from safetensors.torch import save_file
        tensors = {f"mlp.{k}": v.detach().float().cpu().contiguous() for k, v in self.mlp.state_dict().items()}
        if self.attn is not None:
            tensors.update({f"attn.{k}": v.detach().float().cpu().contiguous()
                            for k, v in self.attn.state_dict().items()})
        e = self.embed.weight.detach().float().cpu()
        base = frozen_weight.detach().float().cpu()
        changed = (e != base).any(1).nonzero()[:, 0]
        tensors["embed_delta.index"] = changed.contiguous()
        tensors["embed_delta.rows"] = e[changed].contiguous()
        with atomic_dir(out_dir) as tmp:
            save_file(tensors, os.path.join(tmp, WEIGHTS_NAME), metadata={"format": self.config.format})
            with open(os.path.join(tmp, CONFIG_NAME), "w", encoding="utf-8") as f:
                json.dump(asdict(self.config), f, indent=2)
        return out_dir


def read_config(path: str) -> QPeftConfig:
    cfg_path = os.path.join(path, CONFIG_NAME)
    if not os.path.isfile(cfg_path):
        raise InputError(f"not a Q-PEFT module directory (no {CONFIG_NAME}): {path}")
    try:
        with open(cfg_path, encoding="utf-8") as f:
            raw = json.load(f)
        return QPeftConfig(**raw)
    except (json.JSONDecodeError, TypeError) as e:
        raise InputError(f"{cfg_path}: bad Q-PEFT config ({e})") from None


def load_module(path: str, lm, check_fingerprint: bool = True) -> QPeftModule:
    """Load a saved module for the frozen ``lm`` (E' = lm's E with the saved rows put back)."""
    from safetensors.torch import load_file
    cfg = read_config(path)
    weight = lm.get_input_embeddings().weight
    if (cfg.vocab_size, cfg.hidden_size) != tuple(weight.shape):
        raise InputError(f"Q-PEFT module {path} was trained for embeddings ({cfg.vocab_size}, {cfg.hidden_size}) "
                         f"but the LLM has {tuple(weight.shape)} (base {cfg.base_model!r})")
    if check_fingerprint and cfg.embed_fingerprint:
        got = embed_fingerprint(weight)
        for a, b in zip(got, cfg.embed_fingerprint):
            if abs(a - b) > 1e-2 * max(1.0, abs(b)):
                raise InputError(f"Q-PEFT module {path} was trained with another LLM ({cfg.base_model!r}): its "
                                 f"input embeddings differ")
    module = QPeftModule(cfg, weight)
    tensors = load_file(os.path.join(path, WEIGHTS_NAME))
    module.mlp.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("mlp.")})
    if module.attn is not None:
        module.attn.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("attn.")})
    with torch.no_grad():
        idx = tensors["embed_delta.index"].long()
        module.embed.weight[idx] = tensors["embed_delta.rows"].float()
    return module.to(weight.device).eval()
