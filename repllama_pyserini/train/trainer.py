"""The Hugging Face ``Trainer`` around :mod:`.modeling`'s models, and the driver shared by :mod:`.retriever` and
:mod:`.reranker`. The Trainer gives DDP / DeepSpeed, mixed precision, accumulation, schedules, logging and exact
checkpoints; this module adds the loss, saving the adapter (not a wrapper's state dict) with the tokenizer and a
preset YAML, loading it back on resume, a time limit (``--max_train_minutes``) and per-epoch negative sampling.
"""
from __future__ import annotations

import glob
import logging
import os
import sys
from typing import Callable, List, Optional

import torch
from transformers import Trainer, TrainerCallback

from ..cli import InputError
from ..presets import DIR_PRESET, write_preset
from .callbacks import EpochCallback, TimeLimitCallback

logger = logging.getLogger("repllama_pyserini.train")


class ContrastiveTrainer(Trainer):
    """Trainer for :class:`.modeling.DenseModel` / :class:`.modeling.RerankerModel`."""

    # our loss is a per-micro-batch mean: the Trainer divides it by the gradient accumulation steps
    loss_is_scaled_for_ga = False

    def __init__(self, *args, preset_writer: Optional[Callable[[str], None]] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.preset_writer = preset_writer

    def _inner(self):
        return self.accelerator.unwrap_model(self.model) if hasattr(self, "accelerator") else self.model

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = model(**inputs)
        return (out.loss, out) if return_outputs else out.loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        # the model's loss is scaled by the world size when negatives are gathered (see modeling); log it unscaled
        loss = super().training_step(model, inputs, num_items_in_batch)
        return loss / getattr(self._inner(), "loss_scale", 1)

    def _save(self, output_dir: Optional[str] = None, state_dict=None) -> None:
        output_dir = output_dir or self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        self._inner().save(output_dir, state_dict=state_dict)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))
        if self.preset_writer is not None:
            self.preset_writer(output_dir)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None) -> None:
        inner = self.accelerator.unwrap_model(model) if model is not None else self._inner()
        logger.info("loading trained weights from %s", resume_from_checkpoint)
        inner.load_trained(resume_from_checkpoint)


def setup_logging(training_args) -> None:
    import transformers
    level = logging.INFO if training_args.should_log else logging.WARNING
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr, level=level)
    logging.getLogger("repllama_pyserini").setLevel(level)
    transformers.utils.logging.set_verbosity(logging.WARNING)


def resolve_resume(training_args) -> Optional[str]:
    """The checkpoint to resume from; refuse to silently start over an output dir that holds checkpoints."""
    from transformers.trainer_utils import get_last_checkpoint
    out = training_args.output_dir
    resume = training_args.resume_from_checkpoint
    if resume in ("auto", "last"):  # auto: the last checkpoint when there is one, else a fresh start
        last = get_last_checkpoint(out) if os.path.isdir(out) else None
        if last is None and resume == "last":
            raise InputError(f"--resume_from_checkpoint last: no checkpoint-* in {out}")
        return last
    if resume:
        if not os.path.isdir(resume):
            raise InputError(f"checkpoint not found: {resume}")
        return resume
    if glob.glob(os.path.join(out, "checkpoint-*")) and not training_args.overwrite_output_dir:
        raise InputError(f"{out} already holds checkpoints: pass --resume_from_checkpoint last to continue, or "
                         f"--overwrite_output_dir to start afresh")
    return None


def run(kind: str, argv=None, callbacks: Optional[List[TrainerCallback]] = None) -> ContrastiveTrainer:
    """Parse Tevatron-style arguments and train; ``kind`` is 'retriever' or 'reranker'. Returns the Trainer."""
    from transformers import set_seed
    from ..models import load_tokenizer
    from .arguments import DataArguments, RerankerDataArguments, parse_args
    from .data import RerankerCollator, RetrieverCollator, TrainDataset, load_groups
    from .modeling import DenseModel, RerankerModel, trainable_parameter_report

    data_cls = RerankerDataArguments if kind == "reranker" else DataArguments
    model_args, data_args, training_args = parse_args(data_cls, argv)
    setup_logging(training_args)
    resume = resolve_resume(training_args)
    set_seed(training_args.seed)
    if getattr(training_args, "use_cpu", False) and (training_args.bf16 or training_args.fp16):
        logger.warning("--bf16/--fp16 on a CPU: mixed precision is emulated there and slow; --bf16 False trains "
                       "in fp32")
    if kind == "retriever" and model_args.pooling in ("eos", "last") and not data_args.append_eos_token:
        logger.warning("pooling %r without --append_eos_token reads the last text token", model_args.pooling)

    tokenizer = load_tokenizer(model_args.tokenizer_name or model_args.model_name_or_path, padding_side="right")
    group_size = data_args.train_group_size
    dataset = TrainDataset(load_groups(data_args, group_size), group_size, seed=training_args.data_rng_seed)
    logger.info("%d training queries, group size %d", len(dataset), group_size)
    if kind == "reranker":
        model = RerankerModel.build(model_args, training_args, group_size, tokenizer)
        collator = RerankerCollator(tokenizer, data_args)
    else:
        model = DenseModel.build(model_args, training_args, tokenizer)
        collator = RetrieverCollator(tokenizer, data_args)
    logger.info(trainable_parameter_report(model))

    def preset_writer(output_dir: str) -> None:
        write_trained_preset(output_dir, kind, model_args, data_args, model)

    cbs = [EpochCallback(dataset)] + list(callbacks or [])
    if training_args.max_train_minutes:
        cbs.append(TimeLimitCallback(training_args.max_train_minutes))
    trainer = ContrastiveTrainer(model=model, args=training_args, train_dataset=dataset, data_collator=collator,
                                 processing_class=tokenizer, callbacks=cbs, preset_writer=preset_writer)
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(training_args.output_dir)
    if trainer.is_world_process_zero():
        logger.info("saved %s to %s", "LoRA adapter" if model_args.lora else "model", training_args.output_dir)
    return trainer


def write_trained_preset(output_dir: str, kind: str, model_args, data_args, model) -> str:
    """``OUTPUT/preset.yaml``: the input settings the model was trained with (the pair format of a reranker
    included), so every inference command reads the same inputs from ``--encoder/--model OUTPUT``."""
    base = model_args.model_name_or_path
    common = dict(name=os.path.basename(os.path.normpath(output_dir)), model=os.path.abspath(output_dir),
                  base_model=(os.path.abspath(base) if os.path.isdir(base) else base) if model_args.lora else None,
                  tokenizer=os.path.abspath(output_dir), query_prefix=data_args.query_prefix, padding_side="right")
    common = {k: v for k, v in common.items() if v is not None}
    if kind == "reranker":
        preset = dict(kind="reranker", description="RankLLaMA-style reranker trained with repllama_pyserini.train."
                      "reranker", **common, document_prefix=data_args.passage_prefix, document_fields=["title", "text"],
                      max_length=data_args.rerank_max_len, pair_format=data_args.pair_format,
                      append_eos=data_args.append_eos_token)
    else:
        preset = dict(kind="encoder", description="RepLLaMA-style retriever trained with repllama_pyserini.train."
                      "retriever", **common, passage_prefix=data_args.passage_prefix, passage_fields=["title", "text"],
                      query_max_length=data_args.query_max_len, passage_max_length=data_args.passage_max_len,
                      pooling=model_args.pooling, normalize=model_args.normalize, append_eos=data_args.append_eos_token,
                      dimension=getattr(model.base_hf().config, "hidden_size", None))
    path = os.path.join(output_dir, DIR_PRESET)
    write_preset(path, preset, "written by repllama_pyserini.train: the settings this model was trained with")
    return path
