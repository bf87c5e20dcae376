"""Training data for the drivers: Tevatron JSONL (:mod:`repllama_pyserini.formats.tevatron`) or a hub dataset, groups
of one positive and hard negatives, and the collators that turn them into model inputs with
:mod:`repllama_pyserini.templates` (the same ids as at inference; a reranker's ``--pair_format`` is recorded in its
preset).

Groups. Item ``i`` of epoch ``e`` is ``1 positive + (train_group_size - 1) negatives``, drawn by a ``random.Random``
seeded with ``(seed, e, i)``: the same on every run, process and resume, different from one epoch to the next. The
negatives are drawn *without* replacement when the query has enough and, when it has fewer (but at least one), all of
them in random order followed by draws *with* replacement (reported once as a warning). A query without negatives
is an error unless ``train_group_size`` is 1 (in-batch negatives only).
"""
from __future__ import annotations

import logging
import os
import random
from typing import Dict, List, Optional, Tuple

import torch

from ..cli import InputError
from ..formats.tevatron import Group, Passage, iter_groups, parse_group
from ..templates import PairTemplate, Template, pad

logger = logging.getLogger(__name__)


class GroupSource:
    """Random access to validated groups: local JSONL (all validated up front) or a hub dataset (validated on access,
    messages say ``dataset:row``)."""

    def __init__(self, groups: Optional[List[Group]] = None, rows=None, name: str = ""):
        self._groups, self._rows, self.name = groups, rows, name

    def __len__(self) -> int:
        return len(self._groups) if self._groups is not None else len(self._rows)

    def __getitem__(self, i: int) -> Group:
        if self._groups is not None:
            return self._groups[i]
        return parse_group(self._rows[int(i)], f"{self.name}:row {i}")


def load_groups(data_args, group_size: int) -> GroupSource:
    """Read and check the training data named by ``data_args`` (see :class:`.arguments.DataArguments`)."""
    spec, name = data_args.dataset_path, data_args.dataset_name
    if not spec and name and (os.path.exists(name) or any(c in name for c in "*?,")):
        spec = name
    if spec:
        groups, few = [], 0
        for where, g in iter_groups(spec):
            if group_size > 1 and not g.negatives:
                raise InputError(f"{where}: query {g.query_id!r} has no negative passages but --train_group_size "
                                 f"{group_size} needs {group_size - 1}; mine negatives with python -m "
                                 f"repllama_pyserini.train.negatives, or pass --train_group_size 1 (in-batch negatives)")
            few += len(g.negatives) < group_size - 1
            groups.append(g)
        if not groups:
            raise InputError(f"no training records in {spec}")
        if few:
            logger.warning("%d of %d queries have fewer than %d negatives: their groups repeat negatives "
                           "(sampling with replacement)", few, len(groups), group_size - 1)
        src = GroupSource(groups=groups, name=spec)
    elif name and name != "json":
        try:
            import datasets
            rows = datasets.load_dataset(name, data_args.dataset_config, split=data_args.dataset_split,
                                         cache_dir=data_args.dataset_cache_dir)
        except Exception as e:  # offline, unknown name...
            raise InputError(f"cannot load dataset {name!r}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
                             f" (a local Tevatron JSONL file can be given with --dataset_path)") from None
        src = GroupSource(rows=rows, name=name)
    else:
        raise InputError("no training data: pass --dataset_name FILE_OR_HUB_ID or --dataset_path FILE")
    n_shards, index = data_args.dataset_number_of_shards, data_args.dataset_shard_index
    if n_shards > 1:
        per = -(-len(src) // n_shards)
        src = GroupSource(groups=[src[i] for i in range(index * per, min(len(src), (index + 1) * per))],
                          name=f"{src.name}[shard {index}]")
    return src


def sample_group(group: Group, group_size: int, seed: int, epoch: int, index: int) -> Tuple[Passage, List[Passage]]:
    """The positive and ``group_size - 1`` negatives of item ``index`` in ``epoch`` (see the module docstring)."""
    rng = random.Random(f"{seed}|{epoch}|{index}")
    pos = group.positives[0] if len(group.positives) == 1 else rng.choice(group.positives)
    n, negs = group_size - 1, group.negatives
    if n == 0:
        return pos, []
    if not negs:
        raise InputError(f"query {group.query_id!r} has no negative passages (--train_group_size {group_size})")
    if len(negs) >= n:
        return pos, rng.sample(negs, n)
    return pos, rng.sample(negs, len(negs)) + rng.choices(negs, k=n - len(negs))


class TrainDataset(torch.utils.data.Dataset):
    """Item ``i``: ``(query, [positive, negative, ...])``; ``set_epoch`` (called every epoch) changes the negatives."""

    def __init__(self, source: GroupSource, group_size: int, seed: int = 42):
        self.source, self.group_size, self.seed, self.epoch = source, group_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int):
        g = self.source[i]
        pos, negs = sample_group(g, self.group_size, self.seed, self.epoch, int(i))
        return g.query, [pos] + negs


class RetrieverCollator:
    """``(query, passages)`` items -> ``{"query": batch, "passage": batch}``; passages query-major (the positive of query
    ``j`` is passage ``j * group_size``)."""

    def __init__(self, tokenizer, data_args):
        self.tokenizer, self.args = tokenizer, data_args
        eos = data_args.append_eos_token
        self.query = Template(data_args.query_prefix, data_args.query_max_len, append_eos=eos)
        self.passage = Template(data_args.passage_prefix, data_args.passage_max_len, append_eos=eos)

    def __call__(self, features) -> Dict[str, Dict[str, torch.Tensor]]:
        q, _ = self.query.encode(self.tokenizer, [self.query.query_text(q) for q, _ in features])
        p, _ = self.passage.encode(self.tokenizer, [self.passage.passage_text(p) for _, ps in features for p in ps])
        m = self.args.pad_to_multiple_of
        return {"query": pad(self.tokenizer, q, "right", m), "passage": pad(self.tokenizer, p, "right", m)}


class RerankerCollator:
    """``(query, passages)`` items -> ``{"pair": batch}``, pairs query-major (the positive first in each group)."""

    def __init__(self, tokenizer, data_args):
        self.tokenizer, self.args = tokenizer, data_args
        self.template = PairTemplate(data_args.pair_format, data_args.query_prefix, data_args.passage_prefix,
                                     max_length=data_args.rerank_max_len, append_eos=data_args.append_eos_token)

    def __call__(self, features) -> Dict[str, Dict[str, torch.Tensor]]:
        ids = self.template.encode(self.tokenizer, [q for q, ps in features for _ in ps],
                                   [p for _, ps in features for p in ps])
        return {"pair": pad(self.tokenizer, ids, "right", self.args.pad_to_multiple_of)}
