"""Training data in Tevatron's layout, one JSON object per line::

    {"query_id": "3", "query": "...", "positive_passages": [{"docid": "7", "title": "...", "text": "..."}, ...],
     "negative_passages": [{"docid": "9", "title": "...", "text": "..."}, ...]}

Every record is checked before training starts; a bad one stops the run with ``file:line: what is wrong``
(malformed JSON, no query text, no positive passage, a passage without text, no negatives when the group needs
some).

Groups. Item ``i`` of epoch ``e`` is ``1 positive + (train_group_size - 1) negatives``, drawn by a
``random.Random`` seeded with ``(seed, e, i)``: the same on every run, process and resume, different from one
epoch to the next. The positive is one of the query's positives; the negatives are drawn *without* replacement
when the query has enough of them and, when it has fewer (but at least one), all of them in random order followed
by draws *with* replacement to fill the group (documented behaviour, reported once as a warning). A query with no
negative at all is an error unless ``train_group_size`` is 1 (in-batch negatives only).

Inputs are formatted exactly as at inference: ``query_prefix + query`` and ``passage_prefix + title + " " +
text`` (empty fields left out with their space; :class:`repllama_pyserini.encoder.RepLLaMAEncoder`), tokenised
with the tokenizer's special tokens, truncated to ``max_len - 1`` and EOS appended. The reranker's pairs are
``tokenizer("query: {q}", "document: {title} {text}")`` truncated on the document side, as
:mod:`repllama_pyserini.rerank` scores them.
"""
from __future__ import annotations

import glob
import logging
import os
import random
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from ..io import InputError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Passage:
    docid: str
    title: str
    text: str


@dataclass
class Group:
    """One validated training record."""
    query_id: str
    query: str
    positives: List[Passage]
    negatives: List[Passage]


def _passage(obj: Any, where: str, kind: str, k: int) -> Passage:
    if not isinstance(obj, dict):
        raise InputError(f"{where}: {kind}[{k}] is not an object")
    text = obj.get("text")
    if text is None:
        text = obj.get("contents")
    if text is None:
        raise InputError(f"{where}: {kind}[{k}] has no 'text'")
    docid = obj.get("docid", obj.get("_id", obj.get("id", "")))
    return Passage(str(docid), str(obj.get("title") or ""), str(text))


def parse_group(obj: Any, where: str) -> Group:
    """Validate one Tevatron record (``where`` is ``file:line`` for messages)."""
    if not isinstance(obj, dict):
        raise InputError(f"{where}: expected a JSON object")
    query = obj.get("query")
    if not isinstance(query, str) or not query.strip():
        raise InputError(f"{where}: no 'query' text")
    qid = str(obj.get("query_id", obj.get("qid", "")))
    pos = obj.get("positive_passages")
    if not isinstance(pos, list):
        raise InputError(f"{where}: 'positive_passages' must be a list")
    if not pos:
        raise InputError(f"{where}: query {qid!r} has no positive passage")
    neg = obj.get("negative_passages", [])
    if neg is None:
        neg = []
    if not isinstance(neg, list):
        raise InputError(f"{where}: 'negative_passages' must be a list")
    return Group(qid, query, [_passage(p, where, "positive_passages", k) for k, p in enumerate(pos)],
                 [_passage(p, where, "negative_passages", k) for k, p in enumerate(neg)])


def data_files(spec: str) -> List[str]:
    """A file, a folder of ``*.jsonl[.gz]`` / ``*.json[.gz]``, a glob, or a comma-separated list of those."""
    files: List[str] = []
    for part in [s.strip() for s in spec.split(",") if s.strip()]:
        if os.path.isdir(part):
            found = sorted(f for ext in ("*.jsonl", "*.jsonl.gz", "*.json", "*.json.gz")
                           for f in glob.glob(os.path.join(part, ext)))
            if not found:
                raise InputError(f"no *.jsonl / *.json files in {part}")
            files += found
        elif any(c in part for c in "*?["):
            found = sorted(glob.glob(part))
            if not found:
                raise InputError(f"no training files match {part}")
            files += found
        elif os.path.isfile(part):
            files.append(part)
        else:
            raise InputError(f"training data not found: {part}")
    if not files:
        raise InputError("no training data given (--dataset_name / --dataset_path / --train_file)")
    return files


class GroupSource:
    """Random access to validated groups: local JSONL (all validated up front) or a hub dataset (validated on
    access, messages say ``dataset:row``)."""

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
    spec = data_args.dataset_path
    name = data_args.dataset_name
    if not spec and name and (os.path.exists(name) or any(c in name for c in "*?,")):
        spec = name
    if spec:
        groups: List[Group] = []
        few = 0
        for path in data_files(spec):
            for lineno, obj in _numbered(path):
                g = parse_group(obj, f"{path}:{lineno}")
                if group_size > 1 and not g.negatives:
                    raise InputError(
                        f"{path}:{lineno}: query {g.query_id!r} has no negative passages but --train_group_size "
                        f"{group_size} needs {group_size - 1}; mine negatives with python -m "
                        f"repllama_pyserini.train.negatives, or pass --train_group_size 1 (in-batch negatives only)")
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
        lo, hi = index * per, min(len(src), (index + 1) * per)
        base = src
        src = GroupSource(groups=[base[i] for i in range(lo, hi)], name=f"{base.name}[shard {index}]")
    return src


def _numbered(path: str):
    """``(line number, object)`` of a JSONL file, malformed lines reported as ``file:line``."""
    import json
    from ..io import open_text
    with open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{lineno}: malformed JSON ({e.msg})") from None


def sample_group(group: Group, group_size: int, seed: int, epoch: int, index: int) -> Tuple[Passage, List[Passage]]:
    """The positive and ``group_size - 1`` negatives of item ``index`` in ``epoch`` (see the module docstring)."""
    rng = random.Random(f"{seed}|{epoch}|{index}")
    pos = group.positives[0] if len(group.positives) == 1 else rng.choice(group.positives)
    n = group_size - 1
    negs = group.negatives
    if n == 0:
        return pos, []
    if not negs:
        raise InputError(f"query {group.query_id!r} has no negative passages (--train_group_size {group_size})")
    if len(negs) >= n:
        return pos, rng.sample(negs, n)
    return pos, rng.sample(negs, len(negs)) + rng.choices(negs, k=n - len(negs))


def format_query(query: str, prefix: str) -> str:
    return f"{prefix}{str(query).strip()}"


def format_passage(p: Passage, prefix: str) -> str:
    """``prefix + ' '.join(non-empty [title, text])`` (RepLLaMAEncoder.format_passage with fields title, text)."""
    body = " ".join(x for x in (p.title.strip(), p.text.strip()) if x)
    return f"{prefix}{body}"


class TrainDataset(torch.utils.data.Dataset):
    """Item ``i``: ``(query, [positive, negative, ...])`` as raw :class:`Passage` objects (formatted by the
    collator). ``set_epoch`` (called by the Trainer every epoch) changes the negatives drawn."""

    def __init__(self, source: GroupSource, group_size: int, seed: int = 42):
        self.source, self.group_size, self.seed = source, group_size, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int):
        g = self.source[i]
        pos, negs = sample_group(g, self.group_size, self.seed, self.epoch, int(i))
        return g.query, [pos] + negs


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int, pad_to_multiple_of: Optional[int] = None,
              left: bool = False) -> Dict[str, torch.Tensor]:
    """``input_ids`` / ``attention_mask`` tensors of token id lists (right padding unless ``left``)."""
    width = max(len(s) for s in seqs)
    if pad_to_multiple_of and pad_to_multiple_of > 1:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        sl = slice(width - len(s), width) if left else slice(0, len(s))
        ids[i, sl] = torch.as_tensor(list(s), dtype=torch.long)
        mask[i, sl] = 1
    return {"input_ids": ids, "attention_mask": mask}


def tokenize(tokenizer, texts: Sequence[str], max_len: int, append_eos: bool = True) -> List[List[int]]:
    """Token ids: the tokenizer's special tokens, truncated to ``max_len - 1`` (``max_len`` without EOS), then the
    EOS id appended, so the EOS survives truncation (RepLLaMAEncoder.tokenize)."""
    limit = max_len - 1 if append_eos else max_len
    ids = tokenizer(list(texts), add_special_tokens=True, truncation=True, max_length=limit, padding=False,
                    return_attention_mask=False, return_token_type_ids=False)["input_ids"]
    if append_eos:
        if tokenizer.eos_token_id is None:
            raise InputError("the tokenizer has no EOS token: pass --append_eos_token False --pooling last")
        ids = [list(x) + [tokenizer.eos_token_id] for x in ids]
    return [list(x) for x in ids]


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


class RetrieverCollator:
    """Batch of ``(query, passages)`` -> ``{"query": {...}, "passage": {...}}``; passages query-major (the
    positive of query ``j`` is passage ``j * group_size``)."""

    def __init__(self, tokenizer, data_args):
        self.tokenizer, self.args = tokenizer, data_args
        self.pad_id = _pad_id(tokenizer)

    def __call__(self, features) -> Dict[str, Dict[str, torch.Tensor]]:
        a = self.args
        queries = [format_query(q, a.query_prefix) for q, _ in features]
        passages = [format_passage(p, a.passage_prefix) for _, ps in features for p in ps]
        q = tokenize(self.tokenizer, queries, a.query_max_len, a.append_eos_token)
        p = tokenize(self.tokenizer, passages, a.passage_max_len, a.append_eos_token)
        return {"query": pad_batch(q, self.pad_id, a.pad_to_multiple_of),
                "passage": pad_batch(p, self.pad_id, a.pad_to_multiple_of)}


def tokenize_pairs(tokenizer, queries: Sequence[str], documents: Sequence[str], max_len: int) -> List[List[int]]:
    """``tokenizer(query, document)`` truncated on the document side to ``max_len`` (a query too long by itself is
    truncated too): the pair encoding of :meth:`repllama_pyserini.rerank.RankLLaMAReranker.encode_pairs`."""
    kw = dict(max_length=max_len, add_special_tokens=True, return_attention_mask=False, return_token_type_ids=False)
    try:
        ids = tokenizer(list(queries), list(documents), truncation="only_second", **kw)["input_ids"]
    except Exception:
        ids = []
        for x, y in zip(queries, documents):
            try:
                ids.append(tokenizer(x, y, truncation="only_second", **kw)["input_ids"])
            except Exception:
                ids.append(tokenizer(x, y, truncation="longest_first", **kw)["input_ids"])
    out = []
    for x, y, s in zip(queries, documents, ids):
        if len(s) > max_len:
            s = tokenizer(x, y, truncation="longest_first", **kw)["input_ids"]
        out.append(list(s))
    return out


class RerankerCollator:
    """Batch of ``(query, passages)`` -> ``{"pair": {...}}``, pairs query-major (the positive first in each group)."""

    def __init__(self, tokenizer, data_args):
        self.tokenizer, self.args = tokenizer, data_args
        self.pad_id = _pad_id(tokenizer)

    def __call__(self, features) -> Dict[str, Dict[str, torch.Tensor]]:
        from ..corpus_lookup import Doc
        from ..rerank import format_document, format_query as rerank_query
        a = self.args
        qs = [rerank_query(q, a.query_prefix) for q, ps in features for _ in ps]
        ds = [format_document(Doc(p.title, p.text), a.passage_prefix) for _, ps in features for p in ps]
        ids = tokenize_pairs(self.tokenizer, qs, ds, a.rerank_max_len)
        return {"pair": pad_batch(ids, self.pad_id, a.pad_to_multiple_of)}
