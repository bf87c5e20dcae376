"""Two processes under torchrun (gloo, CPU) with B queries each == one process with 2B queries: same loss, same
gradients (cross-process negatives included), and the same adapter after Trainer steps.

This file is also the worker script: ``python -m torch.distributed.run --standalone --nproc_per_node 2
tests/test_train_dist.py WORKDIR BASE_MODEL TRAIN_JSONL``.
"""
import json
import os
import subprocess
import sys

import pytest
import torch

B, G = 2, 3  # queries per process, group size
TEXTS = ["what is the capital of france", "how do goldfish grow", "diffusion tensor imaging of the newborn brain",
         "the quick brown fox", "retrieval with large language models", "paris is the capital"]


def _records(n=16):
    recs = []
    for i in range(n):
        recs.append({"query_id": str(i), "query": f"{TEXTS[i % 6]} {i}",
                     "positive_passages": [{"docid": f"p{i}", "title": "t", "text": f"{TEXTS[(i + 1) % 6]} pos {i}"}],
                     "negative_passages": [{"docid": f"n{i}-{k}", "title": "", "text": f"{TEXTS[(i + k) % 6]} neg {k}"}
                                           for k in range(2, 7)]})
    return recs


def _argv(base, out, batch, extra=()):
    return ["--output_dir", out, "--model_name_or_path", base, "--lora_r", "4", "--lora_dropout", "0",
            "--train_group_size", str(G), "--query_max_len", "16", "--passage_max_len", "24", "--temperature", "0.05",
            "--per_device_train_batch_size", str(batch), "--learning_rate", "1e-2", "--warmup_steps", "0",
            "--max_steps", "2", "--logging_steps", "1", "--save_strategy", "no", "--seed", "7",
            "--dataloader_drop_last", "True", "--use_cpu", "True", *extra]


def _model_and_batches(base, n_queries):
    """A LoRA bi-encoder with a fixed non-zero adapter, and the collated batch of the first ``n_queries``."""
    from repllama_pyserini.models import load_tokenizer
    from repllama_pyserini.train.arguments import DataArguments, parse_args
    from repllama_pyserini.formats.tevatron import parse_group
    from repllama_pyserini.train.data import GroupSource, RetrieverCollator, TrainDataset
    from repllama_pyserini.train.modeling import DenseModel
    m, d, t = parse_args(DataArguments, _argv(base, "unused", n_queries))
    tok = load_tokenizer(base)
    torch.manual_seed(0)
    model = DenseModel.build(m, t, tok)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    ds = TrainDataset(GroupSource([parse_group(r, "x") for r in _records()]), G, seed=3)
    feats = [ds[i] for i in range(n_queries)]
    return model, RetrieverCollator(tok, d), feats


def _loss_and_grads(model, batch):
    model.train()
    model.zero_grad()
    out = model(**batch)
    out.loss.backward()
    return out, {n.removeprefix("module."): p.grad.detach().clone() for n, p in model.named_parameters()
                 if p.grad is not None}


def worker(work, base, train_file):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    # 1) the model alone: local batch of B queries, DDP-averaged gradients
    model, collate, feats = _model_and_batches(base, B * world)
    local = collate(feats[rank * B:(rank + 1) * B])
    ddp = DDP(model)
    out, grads = _loss_and_grads(ddp, local)
    model.negatives_x_device = False
    with torch.no_grad():
        local_only = model(**local).loss.item()
    model.negatives_x_device = True
    torch.save({"loss": out.loss.item() / model.loss_scale, "scale": model.loss_scale,
                "scores_shape": tuple(out.scores.shape), "grads": grads, "local_only_loss": local_only},
               os.path.join(work, f"model.rank{rank}.pt"))
    # 2) the whole driver (Trainer + DDP + gathering): 2 updates of B queries per process
    from repllama_pyserini.train.retriever import main
    trainer = main(_argv(base, os.path.join(work, "ddp"), B, ["--dataset_name", train_file]))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    with open(os.path.join(work, f"driver.rank{rank}.json"), "w") as f:
        json.dump({"losses": losses, "world": trainer.args.world_size}, f)
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def torchrun_result(tiny_encoder, tmp_path_factory):
    work = tmp_path_factory.mktemp("dist")
    train_file = str(work / "train.jsonl")
    with open(train_file, "w") as f:
        for r in _records():
            f.write(json.dumps(r) + "\n")
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           os.path.abspath(__file__), str(work), tiny_encoder["base"], train_file]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return {"work": work, "train_file": train_file, "base": tiny_encoder["base"]}


def test_two_processes_equal_one_process_with_double_batch(torchrun_result):
    work, base = torchrun_result["work"], torchrun_result["base"]
    r0 = torch.load(work / "model.rank0.pt")
    r1 = torch.load(work / "model.rank1.pt")
    assert r0["scale"] == 2 and r0["scores_shape"] == (2 * B, 2 * B * G)  # every query sees all 2B*G passages
    torch.set_num_threads(1)
    model, collate, feats = _model_and_batches(base, 2 * B)
    out, grads = _loss_and_grads(model, collate(feats))
    assert out.scores.shape == (2 * B, 2 * B * G)
    for r in (r0, r1):
        assert r["loss"] == pytest.approx(out.loss.item(), rel=1e-5, abs=1e-6)
        assert set(r["grads"]) == set(grads) and grads
        for n, g in grads.items():
            torch.testing.assert_close(r["grads"][n], g, rtol=1e-4, atol=1e-6)
    # without the other process's passages the loss is different: the cross-process negatives do count
    assert abs(r0["local_only_loss"] - out.loss.item()) > 1e-3


def test_torchrun_driver_matches_single_process_driver(torchrun_result, tmp_path):
    """The Trainer under torchrun (2 x B queries) updates the adapter exactly as one process with 2B queries."""
    from safetensors.torch import load_file
    from repllama_pyserini.train.retriever import main
    work, base = torchrun_result["work"], torchrun_result["base"]
    torch.set_num_threads(1)
    single = main(_argv(base, str(tmp_path / "single"), 2 * B, ["--dataset_name", torchrun_result["train_file"]]))
    ddp_losses = json.loads((work / "driver.rank0.json").read_text())
    assert ddp_losses["world"] == 2
    single_losses = [h["loss"] for h in single.state.log_history if "loss" in h]
    assert ddp_losses["losses"] == pytest.approx(single_losses, rel=1e-4)  # logged unscaled, same batches
    a = load_file(str(work / "ddp" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "single" / "adapter_model.safetensors"))
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    assert os.path.isfile(work / "ddp" / "preset.yaml")


if __name__ == "__main__":
    worker(*sys.argv[1:4])
