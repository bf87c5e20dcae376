"""RankLLaMA reranker training with Tevatron's command line (``tevatron.reranker.driver.train``'s flags).

A decoder as a one-logit sequence classifier (+ LoRA on the attention/MLP projections; the score head is trained in
full), the logit read at the last token. Inputs: ``--pair_format tevatron`` (default) is Tevatron's single string
``"{query_prefix} {query} {passage_prefix} {title} {text}"``, with the EOS appended under ``--append_eos_token``;
``--pair_format rankllama`` is the released model cards' pair (see :mod:`repllama_pyserini.templates`). Loss: softmax
cross-entropy over each group of ``--train_group_size`` pairs (the positive first, then hard negatives, e.g. the
retriever's top 200 mined with :mod:`.negatives`). Tevatron's RankLLaMA command works unchanged::

    torchrun --nproc_per_node 8 -m repllama_pyserini.train.reranker \\
      --output_dir rankllama-7b --model_name_or_path meta-llama/Llama-2-7b-hf \\
      --lora --lora_r 32 --lora_alpha 64 --lora_dropout 0.1 \\
      --dataset_name train.jsonl.gz --train_group_size 16 --rerank_max_len 256 \\
      --query_prefix "query: " --passage_prefix "document: " --append_eos_token \\
      --per_device_train_batch_size 4 --gradient_accumulation_steps 4 \\
      --learning_rate 1e-4 --num_train_epochs 1 --bf16 --gradient_checkpointing --save_steps 200

The output directory holds the adapter (with the score head), the tokenizer and ``preset.yaml`` (the pair format
included): ``python -m repllama_pyserini.rerank --model OUTPUT_DIR`` scores exactly the trained inputs.
"""
from __future__ import annotations

from ..cli import run_cli
from .trainer import run


def main(argv=None):
    return run("reranker", argv)


if __name__ == "__main__":
    run_cli(main)
