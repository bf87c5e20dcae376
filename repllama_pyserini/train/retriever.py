"""RepLLaMA retriever training with Tevatron's command line (``tevatron.retriever.driver.train``'s flags).

The paper's recipe (Ma et al., 2023) on 16 GPUs, 128 queries per update::

    torchrun --nproc_per_node 16 -m repllama_pyserini.train.retriever \\
      --output_dir repllama-7b --model_name_or_path meta-llama/Llama-2-7b-hf \\
      --lora --lora_r 32 --lora_alpha 64 --lora_dropout 0.1 \\
      --lora_target_modules q_proj,k_proj,v_proj,o_proj,down_proj,up_proj,gate_proj \\
      --pooling eos --normalize --temperature 0.01 --append_eos_token \\
      --query_prefix "query: " --passage_prefix "passage: " --query_max_len 32 --passage_max_len 156 \\
      --dataset_name train.jsonl.gz --train_group_size 16 \\
      --per_device_train_batch_size 8 --gradient_accumulation_steps 1 \\
      --learning_rate 1e-4 --warmup_steps 100 --num_train_epochs 1 \\
      --bf16 --gradient_checkpointing --save_steps 500 --logging_steps 10

Every value above is also the default (bf16 and gradient checkpointing on GPUs), so ``--output_dir`` and the data
are all that is required. Add ``--deepspeed zero3`` (or a DeepSpeed JSON) when DeepSpeed is installed; on a CPU
the same command runs in fp32 (``torchrun`` uses gloo). ``--resume_from_checkpoint last`` continues an interrupted
run. The training data is Tevatron JSONL (:mod:`.data`); :mod:`.negatives` mines it with Pyserini BM25.

The output directory holds a peft LoRA adapter whose ``adapter_config.json`` names its base, the tokenizer, and
``preset.yaml`` (the exact input settings): ``--encoder output_dir`` (or its ``preset.yaml``) loads it everywhere.
"""
from __future__ import annotations

from ..cli import run_cli
from .trainer import run


def main(argv=None):
    return run("retriever", argv)


if __name__ == "__main__":
    run_cli(main)
