"""Command-line arguments of the training drivers, under Tevatron's names so a Tevatron command line works unchanged.

Three dataclasses parsed together by :class:`transformers.HfArgumentParser` (as Tevatron v2 does):
:class:`ModelArguments`, :class:`DataArguments` (or :class:`RerankerDataArguments`) and :class:`TrainingArguments`
(a :class:`transformers.TrainingArguments`, so every Trainer flag works too: ``--save_steps``, ``--deepspeed``,
``--resume_from_checkpoint``, ``--lr_scheduler_type``...). ``--resume_from_checkpoint last`` continues from the newest
``checkpoint-*`` of ``output_dir``; ``auto`` does so when there is one and starts afresh otherwise.

Defaults are the RepLLaMA paper's recipe (Ma et al., 2023, arXiv:2310.08319; Tevatron's RepLLaMA example):
Llama-2-7B + LoRA r=32 / alpha 64 / dropout 0.1 on the attention and MLP projections, EOS pooling, L2
normalisation, temperature 0.01, ``query: `` / ``passage: `` prefixes with EOS appended, 1 positive + 15 hard
negatives per query, query 32 / passage 156 tokens, learning rate 1e-4, 100 warm-up steps, 1 epoch, 8 queries per
device. On a GPU, bf16 and gradient checkpointing are on by default (``--bf16 False`` / ``--gradient_checkpointing
False`` turn them off) and flash attention 2 is used when installed; on a CPU everything runs in fp32. The paper
updates on 128 queries at a time: ``per_device_train_batch_size x gradient_accumulation_steps x processes = 128``
(e.g. 8 x 4 x 4 GPUs). Passages are shared across processes as negatives (``--negatives_x_device``, default on).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import List, Optional

import transformers

from ..cli import InputError
from ..templates import PAIR_FORMATS

PAPER_BASE_MODEL = "meta-llama/Llama-2-7b-hf"
LORA_TARGETS = "q_proj,k_proj,v_proj,o_proj,down_proj,up_proj,gate_proj"
POOLINGS = ("eos", "last", "mean")

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


def _flag(help_text: str) -> dict:
    """Metadata of a tri-state flag: ``--x`` means True, ``--x False`` False, absent None (automatic)."""
    return {"help": help_text, "nargs": "?", "const": True}


@dataclass
class ModelArguments:
    model_name_or_path: str = field(default=PAPER_BASE_MODEL, metadata={
        "help": "base decoder checkpoint (hub id or local dir) to fine-tune"})
    config_name: Optional[str] = field(default=None, metadata={"help": "accepted for Tevatron compatibility; unused"})
    tokenizer_name: Optional[str] = field(default=None, metadata={"help": "default: the model's tokenizer"})
    cache_dir: Optional[str] = field(default=None, metadata={"help": "Hugging Face cache for downloaded models"})
    pooling: str = field(default="eos", metadata={
        "help": "eos / last: final hidden state of the last token (the appended EOS); mean: masked mean"})
    normalize: bool = field(default=True, metadata={"help": "L2-normalise embeddings"})
    temperature: float = field(default=0.01, metadata={"help": "softmax temperature of the contrastive loss"})
    lora: bool = field(default=True, metadata={"help": "train a LoRA adapter (False: full fine-tuning)"})
    lora_name_or_path: Optional[str] = field(default=None, metadata={
        "help": "start from this LoRA adapter instead of a fresh one"})
    lora_r: int = field(default=32, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=64, metadata={"help": "LoRA alpha"})
    lora_dropout: float = field(default=0.1, metadata={"help": "LoRA dropout"})
    lora_target_modules: str = field(default=LORA_TARGETS, metadata={"help": "comma-separated module names"})
    dtype: Optional[str] = field(default=None, metadata={
        "help": "dtype the base weights are loaded in (default: bf16/fp16 with --bf16/--fp16, else fp32)"})
    attn_implementation: Optional[str] = field(default=None, metadata={
        "help": "default: flash_attention_2 on CUDA in bf16/fp16 when flash-attn is installed, else sdpa"})

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
    dataset_name: Optional[str] = field(default=None, metadata={
        "help": "training data: a local Tevatron JSONL(.gz) file or folder, 'json' with --dataset_path, or a "
                "Hugging Face dataset id (e.g. Tevatron/msmarco-passage-aug; needs the hub or its cache)"})
    dataset_path: Optional[str] = field(default=None, metadata={
        "aliases": ["--train_file", "--train_dir"],
        "help": "local Tevatron JSONL file(s): a file, a folder of *.jsonl[.gz], a glob or a comma-separated list"})
    dataset_config: Optional[str] = field(default=None, metadata={"help": "hub dataset configuration"})
    dataset_split: str = field(default="train", metadata={"help": "hub dataset split"})
    dataset_cache_dir: Optional[str] = field(default=None, metadata={"help": "hub dataset cache"})
    dataset_number_of_shards: int = field(default=1, metadata={"help": "train on one shard of the data"})
    dataset_shard_index: int = field(default=0, metadata={"help": "which shard"})
    train_group_size: int = field(default=16, metadata={
        "help": "passages per query: 1 positive + (group - 1) hard negatives. A query with fewer negatives "
                "samples them with replacement; one with none is an error unless the group size is 1"})
    query_max_len: int = field(default=32, metadata={"help": "query tokens, BOS and the appended EOS included"})
    passage_max_len: int = field(default=156, metadata={"help": "passage tokens, BOS and EOS included"})
    query_prefix: str = field(default="query: ", metadata={"help": "prepended to every query"})
    passage_prefix: str = field(default="passage: ", metadata={"help": "prepended to every passage"})
    append_eos_token: bool = field(default=True, metadata={
        "help": "append the EOS id after truncation (the EOS is what 'eos' pooling reads)"})
    pad_to_multiple_of: int = field(default=16, metadata={"help": "pad batches to a multiple of this length"})

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
    """RankLLaMA pairs, at most ``rerank_max_len`` tokens, scored at the last token. ``--pair_format tevatron``
    (default) builds Tevatron's one string ``"{query_prefix} {query} {passage_prefix} {title} {text}"`` and appends the
    EOS with ``--append_eos_token``, exactly as Tevatron's reranker; ``rankllama`` builds the released model cards'
    pair. The trained model's preset records the format, so ``repllama_pyserini.rerank`` scores the same inputs."""
    passage_prefix: str = field(default="document: ", metadata={"help": "prepended to every document"})
    rerank_max_len: int = field(default=256, metadata={"help": "tokens of a (query, document) pair"})
    pair_format: str = field(default="tevatron", metadata={
        "help": f"how a pair becomes tokens: {' or '.join(PAIR_FORMATS)} (see repllama_pyserini.templates)"})
    append_eos_token: bool = field(default=False, metadata={
        "help": "tevatron pairs: append the EOS id after truncation (Tevatron's RankLLaMA recipe passes it)"})

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
    output_dir: Optional[str] = field(default=None, metadata={"help": "where the adapter and checkpoints go"})
    learning_rate: float = field(default=1e-4, metadata={"help": "peak learning rate (paper: 1e-4)"})
    num_train_epochs: float = field(default=1.0, metadata={"help": "epochs (paper: 1)"})
    warmup_steps: float = field(default=100, metadata={"help": "linear warm-up steps"})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "queries per device per step"})
    logging_steps: float = field(default=10, metadata={"help": "log every N updates"})
    remove_unused_columns: bool = field(default=False, metadata={"help": "keep False (custom collator)"})
    bf16: Optional[bool] = field(default=None, metadata=_flag(
        "bf16 mixed precision; default: on with a bf16-capable GPU, off on CPU"))
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "start afresh even if output_dir holds checkpoints (else: error unless --resume_from_checkpoint)"})
    negatives_x_device: bool = field(default=True, metadata={
        "help": "under torchrun, every query sees the passages of every process as negatives"})
    max_train_minutes: Optional[float] = field(default=None, metadata={
        "help": "stop (and save) after this many minutes of training: a bounded-time run"})

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
        if self.resume_from_checkpoint and self.resume_from_checkpoint.lower() in ("true", "last", "latest"):
            self.resume_from_checkpoint = "last"
        elif self.resume_from_checkpoint and self.resume_from_checkpoint.lower() == "auto":
            self.resume_from_checkpoint = "auto"  # the last checkpoint if any, else start (re-runnable commands)
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
