"""Training a Q-PEFT module against a frozen LLM on Hugging Face's ``Trainer``. The loss (NLL of the positive plus
a hinge over hard and in-batch negatives), dev selection, what OUTPUT holds and how a rerun continues, reports or
refuses a run: ``docs/qpeft.md``."""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
from dataclasses import asdict, dataclass, replace
from types import SimpleNamespace
from typing import Dict, Optional, Sequence

import torch
from torch import nn
from transformers import EarlyStoppingCallback, TrainerCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback, TrainerState

from ..cli import InputError, log as stderr
from ..formats.files import atomic_write, read_json, write_json
from ..jobs import Lock, describe_changes
from ..train.callbacks import EpochCallback, TimeLimitCallback
from ..train.data import GroupSource, TrainDataset, sample_group
from ..train.modeling import enable_checkpointing
from ..train.trainer import ContrastiveTrainer
from .module import QPeftModule, load_module
from .scoring import PromptEncoder, QueryLikelihoodScorer

IN_BATCH, SCHEDULES = ("all", "positives", "none"), ("constant", "linear", "cosine")
RUN_LENGTH = ("epochs", "max_steps", "max_minutes")  # may change when a run is continued
CONFIG, SUMMARY, LOG = "train_config.json", "train_summary.json", "log.jsonl"


@dataclass
class TrainConfig:
    variant: str = "R"
    k: int = 10
    max_pairs: int = 1000
    num_heads: int = 2
    dropout: float = 0.1
    max_doc_tokens: int = 256
    max_query_tokens: int = 64
    batch_size: int = 4
    lr: float = 3e-2
    weight_decay: float = 0.0          # MLP/attention only; E' never decays (its untouched rows must stay E's)
    lr_scheduler: str = "constant"     # or linear / cosine (decay to 0 at the last step)
    warmup_steps: int = 0
    margin: float = 0.5
    in_batch: str = "all"
    hard_negative_pool: int = 30       # d- is sampled from the top of a query's hard negatives
    epochs: float = 1.0
    max_steps: Optional[int] = None
    max_minutes: Optional[float] = None
    eval_every: int = 50               # also the checkpoint interval
    patience: int = 3
    early_stopping: str = "loss"       # dev criterion: "loss" (the training loss on dev) or "mrr"
    dev_negatives: int = 9
    grad_clip: float = 1.0             # 0: no clipping
    seed: int = 42
    gradient_checkpointing: bool = False
    padding_side: str = "right"

    def __post_init__(self):
        for name, allowed in (("in_batch", IN_BATCH), ("early_stopping", ("loss", "mrr")), ("lr_scheduler", SCHEDULES)):
            if getattr(self, name) not in allowed:
                raise InputError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("batch_size", "eval_every", "patience", "hard_negative_pool", "max_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")


def check_gradients(lm, module) -> None:
    """Raise unless gradients reached only the module (E', MLP, attention): the LLM must have none."""
    leaked = [n for n, p in lm.named_parameters() if p.requires_grad or p.grad is not None]
    if leaked:
        raise RuntimeError(f"gradients reach the frozen LLM: {leaked[:3]}")
    if not any(p.grad is not None and torch.any(p.grad != 0) for p in module.parameters()):
        raise RuntimeError("no gradient reached the Q-PEFT module")


class PairDataset(TrainDataset):
    """Item ``i`` of the current epoch: ``(group, d+, d-)``, d- drawn from the top ``pool`` of its negatives."""

    def __init__(self, groups: Sequence, pool: int, seed: int):
        super().__init__(GroupSource([replace(g, negatives=g.negatives[:pool]) for g in groups]), 2, seed)

    def __getitem__(self, i: int):
        g = self.source[i]
        pos, negs = sample_group(g, 2, self.seed, self.epoch, int(i))
        return g, pos, negs[0]


class Collator:
    """``(group, d+, d-)`` items -> the model's inputs: encoded queries and distinct passages, the (query, passage)
    pairs to score and, per query, (its positive's pair, its negatives' pairs)."""

    def __init__(self, encoder: PromptEncoder, in_batch: str = "all"):
        self.encoder, self.in_batch = encoder, in_batch

    def __call__(self, items) -> dict:
        docs, index = [], {}
        for p in (p for _, *ps in items for p in ps):
            if p.docid not in index:
                index[p.docid] = len(docs)
                docs.append(p)
        own = [(index[pos.docid], index[neg.docid]) for _, pos, neg in items]
        pairs, groups = [], []
        for i, (g, _, _) in enumerate(items):
            mine, negs = {p.docid for p in g.positives}, [own[i][1]]
            for j, (pj, nj) in enumerate(own if self.in_batch != "none" else []):
                for d in ((pj, nj) if self.in_batch == "all" else (pj,)):
                    if j != i and docs[d].docid not in mine and d not in negs:
                        negs.append(d)
            groups.append((len(pairs), list(range(len(pairs) + 1, len(pairs) + 1 + len(negs)))))
            pairs += [(i, own[i][0])] + [(i, d) for d in negs]
        return {"queries": [self.encoder.encode_query(g.query) for g, _, _ in items],
                "docs": [self.encoder.encode_doc(p.title, p.text) for p in docs], "pairs": pairs, "groups": groups}


class QPeftModel(nn.Module):
    """The Trainer's model: the trainable :class:`QPeftModule` (``.module``) and the frozen LLM (``.lm``, outside the
    module tree: not in ``parameters()`` nor ``state_dict()``, never saved)."""

    def __init__(self, lm, module: QPeftModule, scorer: QueryLikelihoodScorer, margin: float):
        super().__init__()
        self.module, self.scorer, self.margin = module, scorer, margin
        self.__dict__["lm"] = lm

    def forward(self, queries, docs, pairs, groups):
        nll = -self.scorer.loglik(queries, docs, pairs, self.module)
        losses = [nll[p] + torch.clamp(nll[p] - nll[torch.tensor(n)] + self.margin, min=0).mean() for p, n in groups]
        return SimpleNamespace(loss=torch.stack(losses).mean())

    def save(self, output_dir: str, state_dict=None) -> None:
        self.module.save(output_dir, self.lm.get_input_embeddings().weight)

    def load_trained(self, path: str) -> None:
        self.module.load_state_dict(load_module(path, self.lm).state_dict())


@torch.no_grad()
def dev_metrics(scorer: QueryLikelihoodScorer, module, dev: Sequence, negatives: int, margin: float) -> dict:
    """On each dev query, its first positive and first ``negatives`` hard negatives: ``loss`` (NLL of the positive +
    mean hinge, no in-batch negatives), ``nll`` (of the positive), ``mrr`` (of the positive), means over ``queries``."""
    was_training, sums = module.training, {"loss": 0.0, "mrr": 0.0, "nll": 0.0}
    for e in dev:
        s = scorer.score(e.query, [(p.title, p.text) for p in [e.positives[0]] + e.negatives[:negatives]],
                         modules=[module])[0]
        sums["loss"] += -s[0] + sum(max(0.0, x - s[0] + margin) for x in s[1:]) / max(1, len(s) - 1)
        sums["mrr"] += 1.0 / (1 + sum(x > s[0] for x in s[1:]))
        sums["nll"] -= s[0]
    module.train(was_training)
    return {**{k: v / len(dev) for k, v in sums.items()}, "queries": len(dev)} if dev else {}


class CompactAdamW(torch.optim.AdamW):
    """AdamW whose state dict stores mostly-zero 2-D moments (the E' rows never used) as (row index, rows)."""

    def state_dict(self):
        state = super().state_dict()
        packed = {k: {} for k in state["state"]}
        for k, st in state["state"].items():
            for name, v in st.items():
                rows = (v != 0).any(1).nonzero()[:, 0] if torch.is_tensor(v) and v.dim() == 2 else None
                packed[k].update({name: v} if rows is None or rows.numel() >= v.shape[0] // 2 else {
                    name + "@rows": rows, name + "@values": v[rows].clone(), name + "@shape": torch.tensor(v.shape)})
        return {"param_groups": state["param_groups"], "state": packed}

    def load_state_dict(self, state_dict):
        state = {k: dict(st) for k, st in state_dict["state"].items()}
        for st in state.values():
            for name in [n[:-5] for n in st if n.endswith("@rows")]:
                values = st[name + "@values"]
                st[name] = torch.zeros(st.pop(name + "@shape").tolist(), dtype=values.dtype, device=values.device)
                st[name][st.pop(name + "@rows")] = st.pop(name + "@values")
        super().load_state_dict({"param_groups": state_dict["param_groups"], "state": state})


class TimeLimit(TimeLimitCallback):
    """``train/``'s time limit; also records that it stopped the run and has the last steps logged and evaluated."""

    fired = False

    def on_step_end(self, args, state, control, **kwargs):
        stopping = control.should_training_stop
        super().on_step_end(args, state, control, **kwargs)
        if control.should_training_stop and not stopping:
            self.fired = control.should_log = True
            control.should_evaluate = args.eval_strategy != "no"
        return control


class LogFile(TrainerCallback):
    """``log.jsonl``: the Trainer's log history (restored with a checkpoint), rewritten at each checkpoint and at the
    end; each record is also shown with ``show``."""

    def __init__(self, path: str, show=None):
        self.path, self.show = path, show

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.show:
            rec = {"step": state.global_step, **(logs or {})}
            self.show(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()))

    def on_save(self, args, state, control, **kwargs):
        with atomic_write(self.path) as f:
            f.writelines(json.dumps(r) + "\n" for r in state.log_history)

    on_train_end = on_save


class QPeftTrainer(ContrastiveTrainer):
    """``train/``'s Trainer plus the gradient check, dev evaluation (:func:`dev_metrics`), the best module kept."""

    def __init__(self, *args, config: TrainConfig, **kwargs):
        super().__init__(*args, **kwargs)
        self.cfg = config

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        check_gradients(self._inner().lm, self._inner().module)
        return loss

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> Dict[str, float]:
        dev = self.eval_dataset if eval_dataset is None else eval_dataset
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in dev_metrics(
            self._inner().scorer, self._inner().module, dev, self.cfg.dev_negatives, self.cfg.margin).items()}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        if self.is_in_train and self.state.global_step == 0:  # eval_on_start: the untrained module is the first best
            self._determine_best_metric(metrics, None)
        return metrics

    def _determine_best_metric(self, metrics, trial) -> bool:
        """The Trainer's comparison (a tie is no improvement); the best module goes to ``OUTPUT/module/``."""
        value, best = metrics[f"eval_{self.args.metric_for_best_model}"], self.state.best_metric
        better = best is None or (value > best if self.args.greater_is_better else value < best)
        if better:
            self.state.best_metric = value
            self._inner().save(os.path.join(self.args.output_dir, "module"))
        return better


def _usable(examples: Sequence) -> list:
    return [e for e in examples if e.positives and e.negatives]


def build_trainer(lm, tokenizer, train_examples: Sequence, dev_examples: Sequence, output_dir: str,
                  config: TrainConfig, base_model: str = "", show=None, eval_on_start: bool = True) -> QPeftTrainer:
    """The Trainer for ``config`` with a fresh module (examples without a positive or a hard negative are skipped)."""
    cfg = config
    train_ex, dev_ex = _usable(train_examples), _usable(dev_examples)
    if not train_ex:
        raise InputError("no training example has both a positive and a hard negative")
    lm.requires_grad_(False)
    lm.eval()
    if cfg.gradient_checkpointing:
        enable_checkpointing(lm)
        lm.train()  # HF checkpoints only in train mode (LLaMA has no dropout: scores are unchanged)
    encoder = PromptEncoder(tokenizer, "qpeft", cfg.max_doc_tokens, cfg.max_query_tokens)
    # Hugging Face drops past_key_values under checkpointing: then every pair runs as one full sequence
    scorer = QueryLikelihoodScorer(lm, encoder, padding_side=cfg.padding_side,
                                   prefix_cache=not cfg.gradient_checkpointing)
    module = QPeftModule.create(lm, cfg.variant, k=cfg.k, max_pairs=cfg.max_pairs, num_heads=cfg.num_heads,
                                dropout=cfg.dropout, base_model=base_model, prompt=encoder.config(), seed=cfg.seed)
    rest = [p for n, p in module.named_parameters() if not n.startswith("embed.")]
    optimizer = CompactAdamW([{"params": [module.embed.weight], "weight_decay": 0.0},
                              {"params": rest, "weight_decay": cfg.weight_decay}], lr=cfg.lr)
    dev, every = bool(dev_ex), cfg.eval_every
    args = TrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=cfg.batch_size, learning_rate=cfg.lr,
        weight_decay=cfg.weight_decay, max_grad_norm=cfg.grad_clip, warmup_steps=cfg.warmup_steps,
        lr_scheduler_type="constant_with_warmup" if cfg.lr_scheduler == "constant" else cfg.lr_scheduler,
        num_train_epochs=cfg.epochs, max_steps=cfg.max_steps or -1, seed=cfg.seed, use_cpu=module.device.type == "cpu",
        eval_strategy="steps" if dev else "no", eval_steps=every, eval_on_start=dev and eval_on_start,
        metric_for_best_model=cfg.early_stopping if dev else None, load_best_model_at_end=dev,
        greater_is_better=(cfg.early_stopping == "mrr") if dev else None, save_strategy="steps", save_steps=every,
        save_total_limit=1, logging_steps=every, restore_callback_states_from_checkpoint=True,
        remove_unused_columns=False, dataloader_pin_memory=False, report_to="none", disable_tqdm=True)
    if args.n_gpu > 1:
        args._n_gpu = 1  # one process, the frozen LLM's device: no DataParallel
    dataset = PairDataset(train_ex, cfg.hard_negative_pool, cfg.seed)
    callbacks = [EpochCallback(dataset), LogFile(os.path.join(output_dir, LOG), show)] + (
        [EarlyStoppingCallback(cfg.patience)] if dev else []) + (
        [TimeLimit(cfg.max_minutes)] if cfg.max_minutes is not None else [])
    trainer = QPeftTrainer(model=QPeftModel(lm, module, scorer, cfg.margin), args=args, train_dataset=dataset,
                           eval_dataset=dev_ex or None, data_collator=Collator(encoder, cfg.in_batch),
                           optimizers=(optimizer, None), callbacks=callbacks, config=cfg)
    trainer.remove_callback(PrinterCallback)  # log records go to ``show``
    return trainer


def _setup(cfg: TrainConfig, train_examples, dev_examples, base_model: str) -> dict:
    """What identifies a run (saved as ``train_config.json``): the config, the base model, the data's digests."""
    def digest(examples):
        h = hashlib.sha256()
        for e in examples:
            h.update(json.dumps([e.qid, e.query, [[p.docid, p.title, p.text] for p in e.positives], "|",
                                 [[p.docid, p.title, p.text] for p in e.negatives]]).encode())
        return h.hexdigest()
    return {"config": asdict(cfg), "base_model": base_model,
            "inputs": {"train": digest(train_examples), "dev": digest(dev_examples)}}


def _fixed(setup: dict) -> dict:
    """What a continued run must share with the saved one (the run length may change under a constant schedule)."""
    free = RUN_LENGTH if setup["config"].get("lr_scheduler") == "constant" else ("max_minutes",)
    return dict(setup, config={k: v for k, v in setup["config"].items() if k not in free})


def _status(out: str, setup: dict, cfg: TrainConfig, n_train: int, log, overwrite: bool = False):
    """Check OUTPUT against ``setup``. Returns ((path, TrainerState) of its last complete checkpoint or None, how that
    run ended: None (to continue), 'done' or 'early-stopping', its summary if it is finished (reported to ``log``))."""
    if overwrite or not os.path.isfile(os.path.join(out, CONFIG)):
        if not overwrite and os.path.isdir(out) and set(os.listdir(out)) - {"LOCK"}:
            raise InputError(f"{out} is not empty and holds no Q-PEFT training (no {CONFIG}); pass --overwrite to "
                             f"start afresh, or write elsewhere")
        return None, None, None
    changes = describe_changes(_fixed(read_json(os.path.join(out, CONFIG), "training config")), _fixed(setup))
    if changes:
        raise InputError(f"{out} holds a Q-PEFT training with other settings ({'; '.join(changes)}); pass "
                         f"--overwrite to start afresh, or write elsewhere")
    for step in sorted((int(d[11:]) for d in os.listdir(out) if re.fullmatch(r"checkpoint-\d+", d)), reverse=True):
        path = os.path.join(out, f"checkpoint-{step}")
        try:
            state = TrainerState.load_from_json(os.path.join(path, "trainer_state.json"))
        except (OSError, ValueError):
            continue  # cut short by a kill (the trainer state is written last)
        es = state.stateful_callbacks.get("EarlyStoppingCallback") or {}
        es = (es[-1] if isinstance(es, list) else es).get("attributes", {})
        total = cfg.max_steps or math.ceil(cfg.epochs * math.ceil(n_train / cfg.batch_size))
        ended = ("early-stopping" if es.get("early_stopping_patience_counter", 0) >= cfg.patience
                 else "done" if state.global_step >= total else None)
        if not (ended and os.path.isfile(os.path.join(out, SUMMARY))):
            return (path, state), ended, None
        log(f"already complete: {out} (same settings and data; --overwrite trains again)")
        return (path, state), ended, read_json(os.path.join(out, SUMMARY), "training summary")
    return None, None, None


def completed_run(output_dir: str, config: TrainConfig, train_examples, dev_examples, base_model: str = "",
                  log=None) -> Optional[dict]:
    """The summary of a finished run of this config and data in ``output_dir`` (reported to ``log``), else None;
    refuses an OUTPUT with another run like :func:`train` (which it spares loading an LLM for nothing)."""
    setup = _setup(config, train_examples, dev_examples, base_model)
    return _status(output_dir, setup, config, len(_usable(train_examples)), log or stderr)[2]


def train(lm, tokenizer, train_examples, dev_examples, output_dir: str, config: TrainConfig, overwrite: bool = False,
          base_model: str = "", log=None, progress: bool = True) -> dict:
    """Train a Q-PEFT module into ``output_dir``, or continue or report the run there (see the module doc); returns
    the summary written to ``train_summary.json``. ``log``: messages; ``progress``: also each log record."""
    log = log or stderr
    cfg, out = config, output_dir
    n_train, n_dev = len(_usable(train_examples)), len(_usable(dev_examples))
    setup = _setup(cfg, train_examples, dev_examples, base_model)
    os.makedirs(out, exist_ok=True)
    with Lock(os.path.join(out, "LOCK"), f"Q-PEFT training ({out})"):
        last, ended, done = _status(out, setup, cfg, n_train, log, overwrite)
        if done is not None:
            return done
        for name in os.listdir(out):  # overwrite: the run; always: checkpoints a kill cut short
            full = os.path.join(out, name)
            if (re.fullmatch(r"checkpoint-\d+", name) and full != (last or [None])[0] or
                    overwrite and name in ("module", "module-init", CONFIG, SUMMARY, LOG)):
                shutil.rmtree(full) if os.path.isdir(full) else os.unlink(full)
        write_json(os.path.join(out, CONFIG), setup)
        seconds = read_json(os.path.join(out, SUMMARY), "training summary").get("seconds", 0.0) if last and \
            os.path.isfile(os.path.join(out, SUMMARY)) else 0.0  # of the invocations before (a time stop)
        if ended:  # killed between its last checkpoint and its summary
            state, stopped = last[1], ended
        else:
            if n_train < len(train_examples):
                log(f"{len(train_examples) - n_train} training examples without a positive or a hard negative skipped")
            trainer = build_trainer(lm, tokenizer, train_examples, dev_examples, out, cfg, base_model,
                                    log if progress else None, eval_on_start=last is None)
            if last is None:
                trainer.model.save(os.path.join(out, "module-init"))
            else:
                log(f"continuing from {last[0]} (step {last[1].global_step})")
            seconds += trainer.train(resume_from_checkpoint=last[0] if last else None).metrics["train_runtime"]
            state, callbacks = trainer.state, trainer.callback_handler.callbacks
            stopped = ("early-stopping" if any(isinstance(c, EarlyStoppingCallback) and
                                               c.early_stopping_patience_counter >= cfg.patience for c in callbacks)
                       else "time" if any(isinstance(c, TimeLimit) and c.fired for c in callbacks) else "done")
            if n_dev:  # module/ holds the best: the Trainer ends with it, as with load_best_model_at_end
                trainer.model.load_trained(os.path.join(out, "module"))
            else:  # nothing to select on: the last module is the result
                trainer.model.save(os.path.join(out, "module"))
        key = f"eval_{cfg.early_stopping}"
        best_step = next((h["step"] for h in state.log_history if n_dev and h.get(key) == state.best_metric), None)
        summary = {"stopped": stopped, "steps": state.global_step, "best_step": best_step,
                   "early_stopping": cfg.early_stopping, "best_dev": state.best_metric, "seconds": round(seconds, 1),
                   "train_examples": n_train, "dev_examples": n_dev, "config": asdict(cfg)}
        with atomic_write(os.path.join(out, SUMMARY)) as f:
            json.dump(summary, f, indent=1)
        return summary
