"""RepLLaMA retriever training with Tevatron's command line (``tevatron.retriever.driver.train``'s flags; every
default is the paper's recipe). The output directory holds the LoRA adapter (its config names the base), the
tokenizer and ``preset.yaml``: ``--encoder OUTPUT`` loads it everywhere. The recipe, multi-GPU and CPU runs:
``docs/training-cpu.md``."""
from __future__ import annotations

from ..cli import run_cli
from .trainer import run


def main(argv=None):
    return run("retriever", argv)


if __name__ == "__main__":
    run_cli(main)
