"""Ship a trained adapter: the LoRA (and score-head) weights in fp16 safetensors, its ``adapter_config.json`` and its
``preset.yaml``, with the base named portably and no tokenizer copy (the base's is used)::

    python -m repllama_pyserini.train.export --input runs/.../retriever --output models/NAME \\
        [--base-name smollm2-135m-instruct] [--max-mb 8]

The exported directory loads like any checkpoint (``--encoder models/NAME`` / ``--model models/NAME``); its base is
resolved by :func:`repllama_pyserini.models.resolve_base`. The model card (``README.md``) is written separately; a
re-export keeps it.
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Optional, Sequence

from ..cli import InputError, log, run_cli
from ..formats.files import atomic_dir
from ..presets import DIR_PRESET, write_preset

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"


def export(src: str, dst: str, base_name: Optional[str] = None, max_mb: float = 8.0, overwrite: bool = False) -> int:
    """Write ``dst`` from the trained adapter directory ``src``; returns the weight file's size in bytes."""
    import torch
    import yaml
    from safetensors.torch import load_file, save_file
    for f in (WEIGHTS, CONFIG, DIR_PRESET):
        if not os.path.isfile(os.path.join(src, f)):
            raise InputError(f"{src} is not a trained adapter directory: {f} missing")
    if os.path.exists(dst) and not overwrite:
        raise InputError(f"{dst} exists; pass --overwrite to replace it")
    tensors = {k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous()
               for k, v in load_file(os.path.join(src, WEIGHTS)).items()}
    with open(os.path.join(src, CONFIG), encoding="utf-8") as f:
        config = json.load(f)
    with open(os.path.join(src, DIR_PRESET), encoding="utf-8") as f:
        preset = yaml.safe_load(f)
    if base_name:
        config["base_model_name_or_path"] = base_name
        preset["base_model"] = base_name
    for key in ("model", "tokenizer"):  # a directory's preset follows the directory; the base's tokenizer is used
        preset.pop(key, None)
    preset["name"] = os.path.basename(os.path.normpath(dst))
    with atomic_dir(dst) as tmp:
        card = os.path.join(dst, "README.md")
        if os.path.isfile(card):  # a re-export keeps the model card
            with open(card, encoding="utf-8") as f, open(os.path.join(tmp, "README.md"), "w", encoding="utf-8") as g:
                g.write(f.read())
        save_file(tensors, os.path.join(tmp, WEIGHTS), metadata={"format": "pt"})
        with open(os.path.join(tmp, CONFIG), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2, sort_keys=True)
        write_preset(os.path.join(tmp, DIR_PRESET), preset,
                     f"exported by repllama_pyserini.train.export from {os.path.basename(os.path.normpath(src))}")
        for f in os.listdir(tmp):
            os.chmod(os.path.join(tmp, f), 0o644)
        size = os.path.getsize(os.path.join(tmp, WEIGHTS))
        if size > max_mb * 2 ** 20:
            raise InputError(f"{WEIGHTS} is {size / 2 ** 20:.1f} MB in fp16, over --max-mb {max_mb}: "
                             f"train with a smaller --lora_r or fewer --lora_target_modules")
    return size


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(prog="python -m repllama_pyserini.train.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="output_dir of train.retriever / train.reranker")
    p.add_argument("--output", required=True, help="directory to write (e.g. models/NAME)")
    p.add_argument("--base-name", help="portable name of the base written into the adapter (e.g. "
                                       "smollm2-135m-instruct)")
    p.add_argument("--max-mb", type=float, default=8.0, help="refuse a weight file larger than this")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    size = export(args.input, args.output, args.base_name, args.max_mb, args.overwrite)
    log(f"exported {args.input} -> {args.output} ({size / 2 ** 20:.2f} MB fp16)")


if __name__ == "__main__":
    run_cli(main)
