"""RankLLaMA reranker training with Tevatron's command line (``tevatron.reranker.driver.train``'s flags): LoRA plus
a fully trained one-logit score head read at the last token, softmax cross-entropy over each group (the positive
first). The output directory holds the adapter, the tokenizer and ``preset.yaml`` (the ``--pair_format`` included):
``python -m repllama_pyserini.rerank --model OUTPUT`` scores the trained inputs. See ``docs/training-cpu.md``."""
from __future__ import annotations

from ..cli import run_cli
from .trainer import run


def main(argv=None):
    return run("reranker", argv)


if __name__ == "__main__":
    run_cli(main)
