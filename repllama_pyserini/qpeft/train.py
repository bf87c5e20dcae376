"""Training a Q-PEFT module against a frozen LLM.

Per step, ``batch_size`` queries, each with one positive d+ and one hard negative d- (sampled from its hard
negatives); every query is also paired with the other passages of the batch (in-batch negatives: ``all``, only
the other ``positives``, or ``none``). With l(q|d) the mean token NLL of q given d::

    loss = mean_i [ l(q_i|d+_i) + mean_{d- in negatives of i} max(0, l(q_i|d+_i) - l(q_i|d-) + margin) ]

AdamW over E', the MLP (and the attention of variant A) only -- the LLM is frozen and every step checks that no
gradient reached it. Early stopping on held-out queries, each with its positive and ``dev_negatives`` hard
negatives: on the same loss (default) or on the MRR of the positive (``early_stopping='mrr'``). ``output_dir`` holds ``module-init/`` (the untrained module, for before/after comparisons), ``module/``
(the best module on dev), ``checkpoint/`` (the last state: module, optimizer, trainer state; ``resume=True``
continues from it) and ``log.jsonl``.
"""
from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence

import torch

from ..io import InputError, atomic_write
from .data import Example
from .module import QPeftModule, load_module
from .scoring import PromptEncoder, QueryLikelihoodScorer

IN_BATCH = ("all", "positives", "none")


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
    margin: float = 0.5
    in_batch: str = "all"
    hard_negative_pool: int = 30       # d- is sampled from the top of a query's hard negatives
    epochs: float = 1.0
    max_steps: Optional[int] = None
    max_minutes: Optional[float] = None
    eval_every: int = 50
    patience: int = 3
    early_stopping: str = "loss"       # dev criterion: "loss" (the training loss on dev) or "mrr"
    dev_negatives: int = 9
    grad_clip: float = 1.0
    seed: int = 42
    gradient_checkpointing: bool = False
    padding_side: str = "right"

    def __post_init__(self):
        if self.in_batch not in IN_BATCH:
            raise InputError(f"in_batch must be one of {IN_BATCH}, got {self.in_batch!r}")
        if self.early_stopping not in ("loss", "mrr"):
            raise InputError(f"early_stopping must be 'loss' or 'mrr', got {self.early_stopping!r}")
        if self.batch_size < 1:
            raise InputError("batch_size must be >= 1")


def check_gradients(lm, module) -> None:
    """Raise unless gradients reached only the module (E', MLP, attention): the LLM must have none."""
    leaked = [n for n, p in lm.named_parameters() if p.requires_grad or p.grad is not None]
    if leaked:
        raise RuntimeError(f"gradients reach the frozen LLM: {leaked[:3]}")
    if not any(p.grad is not None and torch.any(p.grad != 0) for p in module.parameters()):
        raise RuntimeError("no gradient reached the Q-PEFT module")


def _passage_tuple(p):
    return (p.title, p.text)


class Trainer:
    def __init__(self, lm, tokenizer, train: Sequence[Example], dev: Sequence[Example], output_dir: str,
                 config: TrainConfig, base_model: str = "", log=print):
        self.lm, self.tok, self.cfg = lm, tokenizer, config
        self.train = [e for e in train if e.positives and e.negatives]
        dropped = len(train) - len(self.train)
        if not self.train:
            raise InputError("no training example has both a positive and a hard negative")
        self.dev = [e for e in dev if e.positives and e.negatives]
        self.output_dir = output_dir
        self.base_model = base_model
        self.log_fn = log
        if dropped:
            log(f"{dropped} training examples without a positive or a hard negative skipped")
        lm.requires_grad_(False)
        lm.eval()
        self.encoder = PromptEncoder(tokenizer, "qpeft", config.max_doc_tokens, config.max_query_tokens)
        prefix_cache = not config.gradient_checkpointing
        if config.gradient_checkpointing:
            if hasattr(lm, "activation_checkpointing_enable"):  # transformers >= 5.x
                lm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            lm.train()  # HF checkpoints only in train mode (LLaMA has no dropout: scores are unchanged)
        self.scorer = QueryLikelihoodScorer(lm, self.encoder, padding_side=config.padding_side,
                                            prefix_cache=prefix_cache)
        self.module: Optional[QPeftModule] = None
        self.optimizer = None
        self.state = {"step": 0, "epoch": 0, "pos": 0, "best": None, "best_step": None, "bad_evals": 0,
                      "elapsed": 0.0, "stopped": None}

    # ------------------------------------------------------------------ setup / checkpoint
    def _make_optimizer(self):
        emb = [self.module.embed.weight]
        rest = [p for n, p in self.module.named_parameters() if not n.startswith("embed.")]
        return torch.optim.AdamW([{"params": emb, "weight_decay": 0.0},
                                  {"params": rest, "weight_decay": self.cfg.weight_decay}], lr=self.cfg.lr)

    def setup(self, resume: bool = False) -> None:
        ckpt = os.path.join(self.output_dir, "checkpoint")
        if resume and os.path.isfile(os.path.join(ckpt, "trainer_state.json")):
            with open(os.path.join(ckpt, "trainer_state.json"), encoding="utf-8") as f:
                saved = json.load(f)
            if saved.get("config", {}).get("variant") != self.cfg.variant:
                raise InputError(f"checkpoint {ckpt} is for variant {saved.get('config', {}).get('variant')}, "
                                 f"not {self.cfg.variant}")
            self.module = load_module(ckpt, self.lm)
            self.optimizer = self._make_optimizer()
            self.optimizer.load_state_dict(_expand_state(torch.load(os.path.join(ckpt, "optimizer.pt"),
                                                                    weights_only=True)))
            self.state = saved["state"]
            self.log_fn(f"resumed from {ckpt} at step {self.state['step']}")
            return
        self.module = QPeftModule.create(self.lm, self.cfg.variant, k=self.cfg.k, max_pairs=self.cfg.max_pairs,
                                         num_heads=self.cfg.num_heads, dropout=self.cfg.dropout,
                                         base_model=self.base_model, prompt=self.encoder.config(),
                                         seed=self.cfg.seed)
        self.optimizer = self._make_optimizer()
        self.module.save(os.path.join(self.output_dir, "module-init"), self._frozen())

    def _frozen(self):
        return self.lm.get_input_embeddings().weight

    def save_checkpoint(self) -> None:
        ckpt = os.path.join(self.output_dir, "checkpoint")
        self.module.save(ckpt, self._frozen())
        with atomic_write(os.path.join(ckpt, "optimizer.pt"), "wb", encoding=None) as f:
            torch.save(_compact_state(self.optimizer.state_dict()), f)
        with atomic_write(os.path.join(ckpt, "trainer_state.json")) as f:
            json.dump({"state": self.state, "config": asdict(self.cfg)}, f, indent=1)

    # ------------------------------------------------------------------ batches
    def _order(self, epoch: int) -> List[int]:
        idx = list(range(len(self.train)))
        random.Random(self.cfg.seed * 1000 + epoch).shuffle(idx)
        return idx

    def _next_batch(self) -> List[Example]:
        order = self._order(self.state["epoch"])
        if self.state["pos"] >= len(order):
            self.state["epoch"] += 1
            self.state["pos"] = 0
            order = self._order(self.state["epoch"])
        batch = [self.train[i] for i in order[self.state["pos"]:self.state["pos"] + self.cfg.batch_size]]
        self.state["pos"] += self.cfg.batch_size
        return batch

    def step_loss(self, batch: Sequence[Example], rng: random.Random) -> torch.Tensor:
        """The loss of one batch (differentiable w.r.t. the module)."""
        cfg = self.cfg
        docs, doc_index, own = [], {}, []

        def add(p):
            if p.docid not in doc_index:
                doc_index[p.docid] = len(docs)
                docs.append(p)
            return doc_index[p.docid]

        for e in batch:
            pos = rng.choice(e.positives)
            neg = rng.choice(e.negatives[:cfg.hard_negative_pool])
            own.append((add(pos), add(neg)))
        positive_ids = [{p.docid for p in e.positives} for e in batch]
        pairs, groups = [], []  # groups[i] = (index of the positive pair, [indices of negative pairs])
        for i, e in enumerate(batch):
            p_idx, n_idx = own[i]
            pairs.append((i, p_idx))
            negs = [n_idx]
            if cfg.in_batch != "none":
                for j, (pj, nj) in enumerate(own):
                    if j == i:
                        continue
                    for d in ((pj, nj) if cfg.in_batch == "all" else (pj,)):
                        if docs[d].docid not in positive_ids[i] and d not in negs:
                            negs.append(d)
            groups.append((len(pairs) - 1, []))
            for d in negs:
                pairs.append((i, d))
                groups[-1][1].append(len(pairs) - 1)
        queries = [self.encoder.encode_query(e.query) for e in batch]
        enc_docs = [self.encoder.encode_doc(p.title, p.text) for p in docs]
        nll = -self.scorer.loglik(queries, enc_docs, pairs, self.module)
        losses = []
        for p_i, n_is in groups:
            hinge = torch.clamp(nll[p_i] - nll[torch.tensor(n_is)] + cfg.margin, min=0).mean()
            losses.append(nll[p_i] + hinge)
        return torch.stack(losses).mean()

    # ------------------------------------------------------------------ dev
    @torch.no_grad()
    def evaluate_dev(self, module=None) -> Dict[str, float]:
        """On each dev query, its (first) positive and first ``dev_negatives`` hard negatives: the training loss
        without in-batch negatives (``dev_loss``: NLL of the positive + mean hinge), the positive's mean NLL and
        its reciprocal rank (``dev_mrr``)."""
        module = self.module if module is None else module
        was_training = module.training
        module.eval()
        rr, nll, losses = [], [], []
        for e in self.dev:
            cands = [e.positives[0]] + list(e.negatives[:self.cfg.dev_negatives])
            scores = self.scorer.score(e.query, [_passage_tuple(p) for p in cands], modules=[module])[0]
            rank = 1 + sum(s > scores[0] for s in scores[1:])
            rr.append(1.0 / rank)
            nll.append(-scores[0])
            hinge = [max(0.0, scores[j] - scores[0] + self.cfg.margin) for j in range(1, len(scores))]
            losses.append(-scores[0] + (sum(hinge) / len(hinge) if hinge else 0.0))
        module.train(was_training)
        if not rr:
            return {}
        return {"dev_loss": sum(losses) / len(losses), "dev_mrr": sum(rr) / len(rr), "dev_nll": sum(nll) / len(nll),
                "dev_queries": len(rr)}

    def _key(self, metrics) -> List[float]:
        """Higher is better: -dev_loss (``early_stopping='loss'``) or (dev_mrr, -dev_nll) (``'mrr'``)."""
        if self.cfg.early_stopping == "mrr":
            return [metrics["dev_mrr"], -metrics["dev_nll"]]
        return [-metrics["dev_loss"]]

    def _improved(self, metrics) -> bool:
        best = self.state["best"]
        return best is None or tuple(self._key(metrics)) > tuple(best)

    # ------------------------------------------------------------------ loop
    def log(self, record: dict) -> None:
        record = dict(record, time=round(self.state["elapsed"], 1))
        with open(os.path.join(self.output_dir, "log.jsonl"), "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        self.log_fn(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))

    def _evaluate_and_log(self, losses: List[float], t_start: float) -> Optional[float]:
        """Log the mean loss since the last evaluation, evaluate on dev, keep the module when it is the best so
        far, save a checkpoint; returns the evaluation's duration (None without dev)."""
        rec = dict(step=self.state["step"], epoch=self.state["epoch"], loss=sum(losses) / max(1, len(losses)))
        cost = None
        if self.dev:
            t = time.perf_counter()
            m = self.evaluate_dev()
            cost = time.perf_counter() - t
            rec.update(m)
            if self._improved(m):
                self.state["best"], self.state["best_step"] = self._key(m), self.state["step"]
                self.state["bad_evals"] = 0
                self.module.save(os.path.join(self.output_dir, "module"), self._frozen())
            else:
                self.state["bad_evals"] += 1
        self.state["elapsed"] = time.perf_counter() - t_start
        self.log(rec)
        self.save_checkpoint()
        return cost

    def run(self) -> dict:
        cfg = self.cfg
        os.makedirs(self.output_dir, exist_ok=True)
        steps_per_epoch = math.ceil(len(self.train) / cfg.batch_size)
        total = cfg.max_steps if cfg.max_steps is not None else int(math.ceil(cfg.epochs * steps_per_epoch))
        t_start = time.perf_counter() - self.state["elapsed"]
        eval_cost = 0.0
        if self.state["step"] == 0 and self.dev and self.state["best"] is None:
            t = time.perf_counter()
            m = self.evaluate_dev()
            eval_cost = time.perf_counter() - t
            self.state["elapsed"] = time.perf_counter() - t_start
            self.state["best"], self.state["best_step"] = self._key(m), 0
            self.module.save(os.path.join(self.output_dir, "module"), self._frozen())
            self.log(dict(step=0, **m))
        self.module.train()
        stop = None
        last_loss: List[float] = []
        step_cost = 0.0
        while self.state["step"] < total:
            elapsed = time.perf_counter() - t_start
            if cfg.max_minutes is not None and elapsed + step_cost + eval_cost > cfg.max_minutes * 60:
                stop = "time"  # room is kept for the step and the final dev evaluation
                break
            t_step = time.perf_counter()
            step = self.state["step"]
            rng = random.Random(cfg.seed * 7919 + step)
            torch.manual_seed(cfg.seed + step)
            batch = self._next_batch()
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.step_loss(batch, rng)
            loss.backward()
            check_gradients(self.lm, self.module)
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.module.parameters(), cfg.grad_clip)
            self.optimizer.step()
            self.state["step"] = step + 1
            self.state["elapsed"] = time.perf_counter() - t_start
            step_cost = time.perf_counter() - t_step
            last_loss.append(loss.item())
            if (step + 1) % max(1, cfg.eval_every) == 0 or self.state["step"] == total:
                eval_cost = self._evaluate_and_log(last_loss, t_start) or eval_cost
                last_loss = []
                if self.dev and self.state["bad_evals"] >= cfg.patience:
                    stop = "early-stopping"
                    break
        else:
            stop = "done"
        if last_loss:  # steps since the last evaluation (a time stop): evaluate them too
            self._evaluate_and_log(last_loss, t_start)
        if not self.dev:  # nothing to select on: the last module is the result
            self.module.save(os.path.join(self.output_dir, "module"), self._frozen())
        self.state["stopped"] = stop
        self.state["elapsed"] = time.perf_counter() - t_start
        self.save_checkpoint()
        summary = {"stopped": stop, "steps": self.state["step"], "best_step": self.state["best_step"],
                   "early_stopping": cfg.early_stopping,
                   "best_dev": None if self.state["best"] is None else self.state["best"][0] *
                   (-1 if cfg.early_stopping == "loss" else 1),
                   "seconds": round(self.state["elapsed"], 1), "train_examples": len(self.train),
                   "dev_examples": len(self.dev), "config": asdict(cfg)}
        with atomic_write(os.path.join(self.output_dir, "train_summary.json")) as f:
            json.dump(summary, f, indent=1)
        return summary


def _compact_state(state: dict) -> dict:
    """Optimizer state with mostly-zero 2-D tensors (E' rows never touched) stored as (row index, rows)."""
    out = {"param_groups": state["param_groups"], "state": {}}
    for k, st in state["state"].items():
        new = {}
        for name, v in st.items():
            if torch.is_tensor(v) and v.dim() == 2:
                rows = (v != 0).any(1).nonzero()[:, 0]
                if rows.numel() < v.shape[0] // 2:
                    new[name + "@rows"] = rows
                    new[name + "@values"] = v[rows].clone()
                    new[name + "@shape"] = torch.tensor(list(v.shape))
                    continue
            new[name] = v
        out["state"][k] = new
    return out


def _expand_state(state: dict) -> dict:
    out = {"param_groups": state["param_groups"], "state": {}}
    for k, st in state["state"].items():
        new = {}
        for name, v in st.items():
            if name.endswith("@rows"):
                base = name[:-5]
                full = torch.zeros(tuple(st[base + "@shape"].tolist()), dtype=st[base + "@values"].dtype)
                full[v] = st[base + "@values"]
                new[base] = full
            elif "@" not in name:
                new[name] = v
        out["state"][k] = new
    return out


def train(lm, tokenizer, train_examples, dev_examples, output_dir, config: TrainConfig, resume: bool = False,
          base_model: str = "", log=None) -> dict:
    """Train (or resume) a Q-PEFT module; returns the summary written to ``train_summary.json``."""
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    t = Trainer(lm, tokenizer, train_examples, dev_examples, output_dir, config, base_model, log)
    t.setup(resume)
    return t.run()
