"""Checkpoints: an interrupted run resumed from its checkpoint continues exactly as the uninterrupted run
(optimizer moments, scheduler, RNG for LoRA dropout and negative sampling, adapter)."""
import json
import os

import pytest
import torch
from transformers import TrainerCallback

from repllama_pyserini.cli import InputError


class StopAt(TrainerCallback):
    """Simulates a kill right after step ``n`` (its checkpoint is written first)."""

    def __init__(self, n):
        self.n = n

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.n:
            control.should_training_stop = True
        return control


def _train_file(tmp_path):
    texts = ["what is the capital of france", "how do goldfish grow", "diffusion tensor imaging",
             "the quick brown fox", "retrieval with large language models"]
    path = tmp_path / "train.jsonl"
    with open(path, "w") as f:
        for i in range(12):
            f.write(json.dumps({"query_id": str(i), "query": f"{texts[i % 5]} {i}",
                                "positive_passages": [{"docid": f"p{i}", "title": "", "text": f"{texts[(i + 1) % 5]}"}],
                                "negative_passages": [{"docid": f"n{i}{k}", "text": f"{texts[(i + k) % 5]} {k}"}
                                                      for k in range(2, 6)]}) + "\n")
    return str(path)


def _argv(base, out, data):
    # 12 queries / 4 per step = 3 steps per epoch: 6 steps cross an epoch boundary (negatives resampled)
    return ["--output_dir", out, "--model_name_or_path", base, "--dataset_name", data, "--lora_r", "4",
            "--train_group_size", "3", "--query_max_len", "16", "--passage_max_len", "24",
            "--per_device_train_batch_size", "4", "--learning_rate", "5e-3", "--warmup_steps", "2",
            "--max_steps", "6", "--save_steps", "2", "--logging_steps", "1", "--seed", "11", "--use_cpu", "True"]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_resumed_run_continues_like_the_uninterrupted_one(tiny_encoder, tmp_path):
    from safetensors.torch import load_file
    from repllama_pyserini.train.retriever import main
    from repllama_pyserini.train.trainer import run
    data = _train_file(tmp_path)
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    full = main(_argv(tiny_encoder["base"], a, data))
    interrupted = run("retriever", _argv(tiny_encoder["base"], b, data), callbacks=[StopAt(4)])
    assert interrupted.state.global_step == 4
    assert sorted(os.listdir(b)).count("checkpoint-4") == 1 and not os.path.exists(os.path.join(b, "checkpoint-6"))

    # the same command again refuses to silently start over
    with pytest.raises(InputError, match="already holds checkpoints"):
        main(_argv(tiny_encoder["base"], b, data))
    resumed = main(_argv(tiny_encoder["base"], b, data) + ["--resume_from_checkpoint", "last"])
    assert resumed.state.global_step == 6

    ca, cb = os.path.join(a, "checkpoint-6"), os.path.join(b, "checkpoint-6")
    sa, sb = torch.load(os.path.join(ca, "scheduler.pt")), torch.load(os.path.join(cb, "scheduler.pt"))
    assert sa["last_epoch"] == sb["last_epoch"] == 6 and sa["_last_lr"] == pytest.approx(sb["_last_lr"])
    oa = torch.load(os.path.join(ca, "optimizer.pt"))
    ob = torch.load(os.path.join(cb, "optimizer.pt"))
    assert oa["state"].keys() == ob["state"].keys() and len(oa["state"]) > 0
    for k in oa["state"]:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(oa["state"][k][name], ob["state"][k][name], rtol=1e-4, atol=1e-7)
    wa, wb = load_file(os.path.join(ca, "adapter_model.safetensors")), load_file(os.path.join(cb, "adapter_model.safetensors"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-6)
    la = [h["loss"] for h in full.state.log_history if "loss" in h]
    lb = [h["loss"] for h in resumed.state.log_history if "loss" in h]
    assert len(la) == 6 and len(lb) == 6
    assert lb == pytest.approx(la, rel=1e-4)
    # the final output dir is a loadable adapter
    assert os.path.isfile(os.path.join(b, "adapter_model.safetensors"))
    assert os.path.isfile(os.path.join(b, "preset.yaml"))
