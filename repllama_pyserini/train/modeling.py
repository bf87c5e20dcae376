"""Models trained by the drivers, each a decoder with (by default) a LoRA adapter, reading their inputs exactly as
inference does (:mod:`repllama_pyserini.templates`: position ids from the mask, the last attended token).

Bi-encoder (:class:`DenseModel`): InfoNCE, ``cross_entropy(q @ p.T / temperature)``, query ``j``'s positive being
passage ``j * group_size`` and every other passage of the batch a negative. Under ``torchrun``
(``negatives_x_device``) each process gathers every process's queries and passages (:func:`gather_with_grad`) and
computes the global-batch loss times the world size: DDP's average of the gradients is then exactly the gradient of
the global-batch loss (``docs/training-cpu.md``); ``Trainer`` logs the loss divided back.

Cross-encoder (:class:`RerankerModel`): one logit per pair at the last attended token, softmax cross-entropy over
each group of ``train_group_size`` pairs whose first is the positive.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Dict, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..cli import InputError
from ..templates import last_token, pool, position_ids

logger = logging.getLogger(__name__)


def contrastive_scores(q: torch.Tensor, p: torch.Tensor, temperature: float) -> torch.Tensor:
    return q @ p.T / temperature


def contrastive_loss(q: torch.Tensor, p: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE: query ``j`` against all passages; its positive is passage ``j * (len(p) // len(q))``."""
    if p.shape[0] % q.shape[0]:
        raise ValueError(f"{p.shape[0]} passages for {q.shape[0]} queries: not a whole number of groups")
    scores = contrastive_scores(q, p, temperature)
    target = torch.arange(q.shape[0], device=q.device) * (p.shape[0] // q.shape[0])
    return F.cross_entropy(scores, target)


def distributed_world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    """Concatenate ``t`` from every process in rank order; this process's slice keeps its gradient (the others are
    constants here: their gradients are computed on their own processes). Every process must pass the same shape."""
    world = distributed_world()
    if world == 1:
        return t
    t = t.contiguous()
    parts = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(parts, t.detach())
    parts[dist.get_rank()] = t
    return torch.cat(parts, dim=0)


def train_dtype(model_args, training_args) -> torch.dtype:
    from ..models import resolve_dtype
    if model_args.dtype:
        return resolve_dtype(model_args.dtype, torch.device("cpu"))
    if training_args.bf16:
        return torch.bfloat16
    if training_args.fp16 and model_args.lora:  # LoRA weights stay fp32 (peft), AMP's grad scaler needs that
        return torch.float16
    return torch.float32


def load_backbone(model_args, training_args, kind: str, pad_token_id: Optional[int] = None):
    """The base decoder for ``kind`` ('encoder' -> AutoModel, 'reranker' -> sequence classifier, one label)."""
    from ..models import adapter_has_head, load_base, resolve_attn_implementation, resolve_device
    dtype = train_dtype(model_args, training_args)
    attn = resolve_attn_implementation(model_args.attn_implementation, resolve_device(), dtype)
    model = load_base(model_args.model_name_or_path, kind, dtype, attn, pad_token_id, cache_dir=model_args.cache_dir,
                      head_in_adapter=kind == "reranker" and adapter_has_head(model_args.lora_name_or_path))
    model.config.use_cache = False
    return model


def add_lora(model, model_args, task_type: str):
    """Wrap ``model`` with a fresh LoRA adapter (or ``--lora_name_or_path``'s, trainable); the adapter config names
    the base by absolute path when it is a local directory, so ``models.load_model(output_dir)`` finds it."""
    from peft import LoraConfig, get_peft_model
    from ..models import load_adapter
    if model_args.lora_name_or_path:
        kind = "reranker" if task_type == "SEQ_CLS" else "encoder"
        peft_model = load_adapter(model, model_args.lora_name_or_path, kind, is_trainable=True)
    else:
        cfg = LoraConfig(r=model_args.lora_r, lora_alpha=model_args.lora_alpha, lora_dropout=model_args.lora_dropout,
                         target_modules=model_args.target_modules, task_type=task_type, inference_mode=False)
        peft_model = get_peft_model(model, cfg)
    base = model_args.model_name_or_path
    if os.path.isdir(base):
        for cfg in peft_model.peft_config.values():
            cfg.base_model_name_or_path = os.path.abspath(base)
    return peft_model


def enable_checkpointing(model, kwargs: Optional[dict] = None, **extra) -> None:
    """Activation (gradient) checkpointing of a Hugging Face model, non-reentrant unless ``kwargs`` say otherwise."""
    kwargs = kwargs or {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs, **extra)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


class _Trainable(nn.Module):
    """Common saving / loading / checkpointing of a (peft-wrapped) Hugging Face model held as ``self.hf``."""

    hf: nn.Module
    accepts_loss_kwargs = False  # the Trainer must average the loss over gradient accumulation itself

    @property
    def is_peft(self) -> bool:
        from peft import PeftModel
        return isinstance(self.hf, PeftModel)

    def base_hf(self):
        return self.hf.get_base_model() if self.is_peft else self.hf

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs=None, **kwargs):
        enable_checkpointing(self.base_hf(), activation_checkpointing_kwargs, **kwargs)
        if self.is_peft:
            self.base_hf().enable_input_require_grads()

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None, **kwargs):
        self.activation_checkpointing_enable(gradient_checkpointing_kwargs, **kwargs)

    def save(self, output_dir: str, state_dict: Optional[Dict[str, torch.Tensor]] = None) -> None:
        """The adapter (``adapter_config.json`` + ``adapter_model.safetensors``) or the full model."""
        if state_dict is not None:  # from the Trainer (DeepSpeed ZeRO-3 gathers it): strip this wrapper's prefix
            state_dict = {k[len("hf."):] if k.startswith("hf.") else k: v for k, v in state_dict.items()}
        self.hf.save_pretrained(output_dir, state_dict=state_dict, safe_serialization=True)

    def load_trained(self, checkpoint: str) -> None:
        """Load the trainable weights saved by :meth:`save` (resuming from a checkpoint)."""
        if self.is_peft:
            from peft import set_peft_model_state_dict
            from peft.utils import load_peft_weights
            set_peft_model_state_dict(self.hf, load_peft_weights(checkpoint, device="cpu"))
            return
        from transformers.modeling_utils import load_sharded_checkpoint
        single = os.path.join(checkpoint, "model.safetensors")
        if os.path.isfile(single):
            from safetensors.torch import load_file
            missing, unexpected = self.hf.load_state_dict(load_file(single), strict=False)
            if unexpected:
                raise InputError(f"{single}: unexpected weights {unexpected[:3]}")
        else:
            load_sharded_checkpoint(self.hf, checkpoint, strict=False)


@dataclass
class DenseOutput:
    loss: Optional[torch.Tensor] = None
    scores: Optional[torch.Tensor] = None
    q_reps: Optional[torch.Tensor] = None
    p_reps: Optional[torch.Tensor] = None


class DenseModel(_Trainable):
    """RepLLaMA bi-encoder: ``forward(query=batch, passage=batch)`` -> :class:`DenseOutput`."""

    def __init__(self, hf_model: nn.Module, pooling: str = "eos", normalize: bool = True, temperature: float = 0.01,
                 negatives_x_device: bool = True):
        super().__init__()
        self.hf = hf_model
        self.pooling, self.normalize, self.temperature = pooling, normalize, temperature
        self.negatives_x_device = negatives_x_device

    @classmethod
    def build(cls, model_args, training_args, tokenizer=None) -> "DenseModel":
        model = load_backbone(model_args, training_args, "encoder",
                              tokenizer.pad_token_id if tokenizer is not None else None)
        if model_args.lora:
            model = add_lora(model, model_args, "FEATURE_EXTRACTION")
        return cls(model, model_args.pooling, model_args.normalize, model_args.temperature,
                   getattr(training_args, "negatives_x_device", True))

    def encode(self, batch: Optional[Dict[str, torch.Tensor]]) -> Optional[torch.Tensor]:
        if batch is None:
            return None
        mask = batch["attention_mask"]
        hidden = self.hf(input_ids=batch["input_ids"], attention_mask=mask, position_ids=position_ids(mask),
                         use_cache=False).last_hidden_state
        reps = pool(hidden, mask, self.pooling)
        return F.normalize(reps, p=2, dim=-1) if self.normalize else reps

    @property
    def loss_scale(self) -> int:
        """The factor the loss is multiplied by (world size when gathering across processes, else 1)."""
        return distributed_world() if (self.negatives_x_device and self.training) else 1

    def forward(self, query=None, passage=None, **unused) -> DenseOutput:
        q, p = self.encode(query), self.encode(passage)
        if q is None or p is None:
            return DenseOutput(q_reps=q, p_reps=p)
        scale = self.loss_scale
        if scale > 1:
            q, p = gather_with_grad(q), gather_with_grad(p)
        scores = contrastive_scores(q, p, self.temperature)
        loss = contrastive_loss(q, p, self.temperature) * scale
        return DenseOutput(loss=loss, scores=scores, q_reps=q, p_reps=p)


@dataclass
class RerankOutput:
    loss: Optional[torch.Tensor] = None
    logits: Optional[torch.Tensor] = None


class RerankerModel(_Trainable):
    """RankLLaMA cross-encoder: ``forward(pair=batch)`` with ``group_size`` consecutive pairs per query, the
    positive first."""

    loss_scale = 1

    def __init__(self, hf_model: nn.Module, group_size: int):
        super().__init__()
        self.hf, self.group_size = hf_model, group_size

    @classmethod
    def build(cls, model_args, training_args, group_size: int, tokenizer=None) -> "RerankerModel":
        model = load_backbone(model_args, training_args, "reranker",
                              tokenizer.pad_token_id if tokenizer is not None else None)
        if model_args.lora:
            model = add_lora(model, model_args, "SEQ_CLS")
        return cls(model, group_size)

    def score(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        """One float32 logit per pair, read at the last attended token."""
        base = self.base_hf()
        backbone = getattr(base, base.base_model_prefix)
        mask = batch["attention_mask"]
        hidden = backbone(input_ids=batch["input_ids"], attention_mask=mask, position_ids=position_ids(mask),
                          use_cache=False).last_hidden_state
        return base.score(last_token(hidden, mask))[:, 0].float()

    def forward(self, pair=None, **unused) -> RerankOutput:
        logits = self.score(pair).view(-1, self.group_size)
        target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        return RerankOutput(loss=F.cross_entropy(logits, target), logits=logits)


def trainable_parameter_report(model: nn.Module) -> str:
    total = sum(p.numel() for p in model.parameters())
    train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return f"trainable parameters: {train:,} of {total:,} ({100 * train / max(total, 1):.3f}%)"
