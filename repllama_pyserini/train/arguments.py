"""Command-line arguments of the training drivers, under Tevatron's names so a Tevatron command line works unchanged:
:class:`ModelArguments`, :class:`DataArguments` (or :class:`RerankerDataArguments`) and :class:`TrainingArguments` (a
:class:`transformers.TrainingArguments`: every Trainer flag works too), parsed together by
:class:`transformers.HfArgumentParser`. ``--resume_from_checkpoint last`` continues from the newest ``checkpoint-*``
of ``output_dir``; ``auto`` does so when there is one and starts afresh otherwise. Defaults are the RepLLaMA paper's
recipe (``docs/training-cpu.md``); on a GPU, bf16 and gradient checkpointing are on unless turned off.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import List, Optional

import transformers

from ..cli import InputError
from ..templates import PAIR_FORMATS, POOLINGS

PAPER_BASE_MODEL = "meta-llama/Llama-2-7b-hf"
LORA_TARGETS = "q_proj,k_proj,v_proj,o_proj,down_proj,up_proj,gate_proj"

# A ZeRO-3 configuration for ``--deepspeed zero3`` (every value "auto" is filled in by the HF Trainer).
DEEPSPEED_ZERO3 = {
    "zero_optimization": {
        "stage": 3, "overlap_comm": True, "contiguous_gradients": True, "reduce_bucket_size": "auto",
        "stage3_prefetch_bucket_size": "auto", "stage3_param_persistence_threshold": "auto",
        "stage3_gather_16bit_weights_on_model_save": True,
    },
    "bf16": {"enabled": "auto"},
    "fp16": {"enabled": "auto", "loss_scale": 0, "initial_scale_power": 10},
    "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto",
                                               "weight_decay": "auto"}},
    "scheduler": {"type": "WarmupDecayLR", "params": {"total_num_steps": "auto", "warmup_min_lr": "auto",
                                                       "warmup_max_lr": "auto", "warmup_num_steps": "auto"}},
    "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
    "train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto",
}


def _arg(default, help_text: str, **metadata):
    """A dataclass field with its command-line help (``nargs="?", const=True``: a tri-state flag, ``--x`` True,
    ``--x False`` False, absent None: automatic)."""
    return field(default=default, metadata={"help": help_text, **metadata})


@dataclass
class ModelArguments:
    model_name_or_path: str = _arg(PAPER_BASE_MODEL, "base decoder checkpoint (hub id or local dir) to fine-tune")
    config_name: Optional[str] = _arg(None, "accepted for Tevatron compatibility; unused")
    tokenizer_name: Optional[str] = _arg(None, "default: the model's tokenizer")
    cache_dir: Optional[str] = _arg(None, "Hugging Face cache for downloaded models")
    pooling: str = _arg("eos", "eos / last: final hidden state of the last token (the appended EOS); mean: masked mean")
    normalize: bool = _arg(True, "L2-normalise embeddings")
    temperature: float = _arg(0.01, "softmax temperature of the contrastive loss")
    lora: bool = _arg(True, "train a LoRA adapter (False: full fine-tuning)")
    lora_name_or_path: Optional[str] = _arg(None, "start from this LoRA adapter instead of a fresh one")
    lora_r: int = _arg(32, "LoRA rank")
    lora_alpha: int = _arg(64, "LoRA alpha")
    lora_dropout: float = _arg(0.1, "LoRA dropout")
    lora_target_modules: str = _arg(LORA_TARGETS, "comma-separated module names")
    dtype: Optional[str] = _arg(None, "dtype the base weights are loaded in (default: bf16/fp16 with --bf16/--fp16, "
                                      "else fp32)")
    attn_implementation: Optional[str] = _arg(None, "default: flash_attention_2 on CUDA in bf16/fp16 when flash-attn "
                                                    "is installed, else sdpa")

    def __post_init__(self):
        if self.pooling not in POOLINGS:
            raise InputError(f"--pooling must be one of {list(POOLINGS)}, got {self.pooling!r}")
        if self.temperature <= 0:
            raise InputError(f"--temperature must be > 0, got {self.temperature}")

    @property
    def target_modules(self) -> List[str]:
        return [m.strip() for m in self.lora_target_modules.split(",") if m.strip()]


@dataclass
class DataArguments:
    dataset_name: Optional[str] = _arg(None, "training data: a local Tevatron JSONL(.gz) file or folder, 'json' with "
                                             "--dataset_path, or a Hugging Face dataset id (e.g. "
                                             "Tevatron/msmarco-passage-aug; needs the hub or its cache)")
    dataset_path: Optional[str] = _arg(None, "local Tevatron JSONL file(s): a file, a folder of *.jsonl[.gz], a glob "
                                             "or a comma-separated list", aliases=["--train_file", "--train_dir"])
    dataset_config: Optional[str] = _arg(None, "hub dataset configuration")
    dataset_split: str = _arg("train", "hub dataset split")
    dataset_cache_dir: Optional[str] = _arg(None, "hub dataset cache")
    dataset_number_of_shards: int = _arg(1, "train on one shard of the data")
    dataset_shard_index: int = _arg(0, "which shard")
    train_group_size: int = _arg(16, "passages per query: 1 positive + (group - 1) hard negatives. A query with fewer "
                                     "negatives samples them with replacement; one with none is an error unless the "
                                     "group size is 1")
    query_max_len: int = _arg(32, "query tokens, BOS and the appended EOS included")
    passage_max_len: int = _arg(156, "passage tokens, BOS and EOS included")
    query_prefix: str = _arg("query: ", "prepended to every query")
    passage_prefix: str = _arg("passage: ", "prepended to every passage")
    append_eos_token: bool = _arg(True, "append the EOS id after truncation (the EOS is what 'eos' pooling reads)")
    pad_to_multiple_of: int = _arg(16, "pad batches to a multiple of this length")

    def __post_init__(self):
        if self.train_group_size < 1:
            raise InputError(f"--train_group_size must be >= 1, got {self.train_group_size}")
        for name in ("query_max_len", "passage_max_len"):
            if getattr(self, name) < 2:
                raise InputError(f"--{name} must be >= 2 (BOS and EOS take room)")
        if not 0 <= self.dataset_shard_index < self.dataset_number_of_shards:
            raise InputError("--dataset_shard_index must be in [0, --dataset_number_of_shards)")


@dataclass
class RerankerDataArguments(DataArguments):
    """RankLLaMA pairs (``--pair_format``: Tevatron's one string, the default, or the model cards' pair; see
    :mod:`repllama_pyserini.templates`), at most ``rerank_max_len`` tokens; the trained model's preset records them."""
    passage_prefix: str = _arg("document: ", "prepended to every document")
    rerank_max_len: int = _arg(256, "tokens of a (query, document) pair")
    pair_format: str = _arg("tevatron", f"how a pair becomes tokens: {' or '.join(PAIR_FORMATS)} (see "
                                        "repllama_pyserini.templates)")
    append_eos_token: bool = _arg(False, "tevatron pairs: append the EOS id after truncation (Tevatron's RankLLaMA "
                                         "recipe passes it)")

    def __post_init__(self):
        super().__post_init__()
        if self.rerank_max_len < 4:
            raise InputError(f"--rerank_max_len must be >= 4, got {self.rerank_max_len}")
        if self.pair_format not in PAIR_FORMATS:
            raise InputError(f"--pair_format must be one of {list(PAIR_FORMATS)}, got {self.pair_format!r}")
        if self.pair_format == "rankllama" and self.append_eos_token:
            raise InputError("--pair_format rankllama has no EOS (the model-card pair): drop --append_eos_token")


@dataclass
class TrainingArguments(transformers.TrainingArguments):
    output_dir: Optional[str] = _arg(None, "where the adapter and checkpoints go")
    learning_rate: float = _arg(1e-4, "peak learning rate (paper: 1e-4)")
    num_train_epochs: float = _arg(1.0, "epochs (paper: 1)")
    warmup_steps: float = _arg(100, "linear warm-up steps")
    per_device_train_batch_size: int = _arg(8, "queries per device per step")
    logging_steps: float = _arg(10, "log every N updates")
    remove_unused_columns: bool = _arg(False, "keep False (custom collator)")
    bf16: Optional[bool] = _arg(None, "bf16 mixed precision; default: on with a bf16-capable GPU, off on CPU",
                                nargs="?", const=True)
    overwrite_output_dir: bool = _arg(False, "start afresh even if output_dir holds checkpoints (else: error unless "
                                             "--resume_from_checkpoint)")
    negatives_x_device: bool = _arg(True, "under torchrun, every query sees the passages of every process as negatives")
    max_train_minutes: Optional[float] = _arg(None, "stop (and save) after this many minutes of training: a "
                                                    "bounded-time run")

    def __post_init__(self):
        import torch
        if self.output_dir is None:
            raise InputError("--output_dir is required")
        if isinstance(self.deepspeed, str) and self.deepspeed.lower() in ("zero3", "zero-3", "zero_3"):
            self.deepspeed = dict(DEEPSPEED_ZERO3)
        if self.deepspeed:
            import importlib.util
            if importlib.util.find_spec("deepspeed") is None:
                raise InputError("--deepspeed needs DeepSpeed (pip install deepspeed, on a GPU machine); without it "
                                 "torchrun alone trains with DDP")
        gpu = torch.cuda.is_available() and not getattr(self, "use_cpu", False)
        mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
        if not torch.cuda.is_available() and not mps and hasattr(self, "use_cpu"):
            self.use_cpu = True  # CPU-only machine: a GPU command line (--bf16...) still runs, on the CPU
        if self.bf16 is None:
            self.bf16 = bool(gpu and torch.cuda.is_bf16_supported() and not self.fp16)
        if self.gradient_checkpointing is None and getattr(self, "activation_checkpointing", None) is None:
            if hasattr(self, "activation_checkpointing"):  # transformers >= 5.x name
                self.activation_checkpointing = gpu
            else:
                self.gradient_checkpointing = gpu
        resume = (self.resume_from_checkpoint or "").lower()
        if resume in ("true", "last", "latest", "auto"):  # auto: the last checkpoint if any, else start afresh
            self.resume_from_checkpoint = "auto" if resume == "auto" else "last"
        super().__post_init__()

    @property
    def data_rng_seed(self) -> int:
        return self.data_seed if self.data_seed is not None else self.seed


def parse_args(data_cls, argv=None):
    """``(ModelArguments, data_cls, TrainingArguments)`` from ``argv`` (or a single .json / .yaml file of them)."""
    import sys
    parser = transformers.HfArgumentParser((ModelArguments, data_cls, TrainingArguments))
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(os.path.abspath(argv[0]))
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
        return parser.parse_yaml_file(os.path.abspath(argv[0]))
    model_args, data_args, training_args, rest = parser.parse_args_into_dataclasses(
        args=argv, return_remaining_strings=True)
    if rest:
        raise InputError(f"unknown argument(s): {' '.join(rest)}")
    return model_args, data_args, training_args
