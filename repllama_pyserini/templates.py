"""Input templates: how a query, a passage or a (query, document) pair becomes token ids, and how a batch of them is
padded and pooled. The encoder, the reranker, both trainers and Q-PEFT all use this module, so training and
inference see the same ids.

RepLLaMA (:class:`Template`): ``prefix + text``, a passage's text being its non-empty fields (default title, text)
stripped and joined by single spaces; the tokenizer's special tokens (LLaMA: BOS), at most ``max_length - 1`` tokens,
then the EOS id (so it survives truncation).

Reranker pairs (:class:`PairTemplate`): ``rankllama``, the released model cards' ``tokenizer(f"{query_prefix}{query}",
f"{document_prefix}{fields}")`` (LLaMA: ``<s> A <s> B``), the document side truncated, no EOS; ``tevatron``,
Tevatron's reranker input (``tevatron.reranker.dataset.format_pair``): one string ``f"{query_prefix} {query}
{document_prefix} {title} {text}".strip()``, dashes in titles turned into spaces (an empty title leaves its spaces
in), at most ``max_length - 1`` tokens plus EOS with ``append_eos``, else ``max_length``.

Padding is ``tokenizer.pad``; position ids come from the attention mask and the pooled token is the last attended
one, so left and right padding give the same results.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

from .cli import InputError
from .formats.corpus import Doc

PAIR_FORMATS = ("rankllama", "tevatron")
POOLINGS = ("eos", "last", "mean")
# batching defaults, measured on SmolLM2-135M fp32 CPU (docs/benchmark-real.md): rows and padded tokens per forward
# pass, and the cost of one more pass in tokens
BATCH_SIZE, BATCH_TOKENS, CALL_COST = 64, 2048, 16
TextLike = Union[Doc, str, None]


def as_doc(x) -> Doc:
    """A :class:`Doc` from a Doc, a plain text, a (title, text) tuple or anything with ``title``/``text``."""
    if isinstance(x, Doc):
        return x
    if x is None or isinstance(x, str):
        return Doc("", x or "")
    if isinstance(x, tuple):
        return Doc(*(str(v or "") for v in x))
    return Doc(str(getattr(x, "title", "") or ""), str(getattr(x, "text", "") or ""), str(getattr(x, "url", "") or ""))


def passage_body(doc, fields: Sequence[str] = ("title", "text")) -> str:
    """The non-empty ``fields`` of ``doc``, stripped, joined by single spaces."""
    d = as_doc(doc)
    return " ".join(v for v in (d.field(f).strip() for f in fields) if v)


def ensure_pad_token(tokenizer):
    """Give a tokenizer without a pad token one (unk, else eos); returns the tokenizer."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.unk_token if tokenizer.unk_token is not None else tokenizer.eos_token
    return tokenizer


def _trailing_special(tokenizer) -> bool:
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(probe) and probe[-1] in set(tokenizer.all_special_ids)


def tokenize(tokenizer, texts: Sequence[str], max_length: int, append_eos: bool = True) -> Tuple[List[List[int]], int]:
    """``(ids, number truncated)``: the tokenizer's special tokens, at most ``max_length - 1`` tokens then the EOS id
    (``append_eos``), else at most ``max_length``."""
    if max_length < 2:
        raise InputError(f"max length must be >= 2 (BOS and EOS take room), got {max_length}")
    if not texts:
        return [], 0
    if append_eos and tokenizer.eos_token_id is None:
        raise InputError("the tokenizer has no EOS token: use append_eos false (pooling 'last')")
    limit = max_length - 1 if append_eos else max_length
    kw = dict(add_special_tokens=True, padding=False, return_attention_mask=False, return_token_type_ids=False)
    ids = tokenizer(list(texts), truncation=True, max_length=limit + 1, **kw)["input_ids"]
    out, truncated, trailing = [], 0, None
    for text, x in zip(texts, ids):
        if len(x) > limit:
            truncated += 1
            trailing = _trailing_special(tokenizer) if trailing is None else trailing
            x = tokenizer(text, truncation=True, max_length=limit, **kw)["input_ids"] if trailing else x[:limit]
        out.append(list(x) + ([tokenizer.eos_token_id] if append_eos else []))
    return out, truncated


@dataclass(frozen=True)
class Template:
    """One side of a bi-encoder: ``prefix``, ``max_length`` (tokens, BOS and EOS included), passage ``fields``."""
    prefix: str
    max_length: int
    fields: Tuple[str, ...] = ("title", "text")
    append_eos: bool = True

    def query_text(self, query: str) -> str:
        query = "" if query is None else str(query).strip()
        if not query:
            raise InputError("empty query: it needs text")
        return f"{self.prefix}{query}"

    def passage_text(self, doc: TextLike) -> str:
        return f"{self.prefix}{passage_body(doc, self.fields)}"

    def encode(self, tokenizer, texts: Sequence[str]) -> Tuple[List[List[int]], int]:
        return tokenize(tokenizer, texts, self.max_length, self.append_eos)


@dataclass(frozen=True)
class PairTemplate:
    """A (query, document) pair for a cross-encoder, in one of :data:`PAIR_FORMATS`."""
    format: str = "rankllama"
    query_prefix: str = "query: "
    document_prefix: str = "document: "
    fields: Tuple[str, ...] = ("title", "text")
    max_length: int = 512
    append_eos: bool = False

    def __post_init__(self):
        if self.format not in PAIR_FORMATS:
            raise InputError(f"pair format {self.format!r} is not one of {list(PAIR_FORMATS)}")
        if self.format == "rankllama" and self.append_eos:
            raise InputError("the rankllama pair format has no EOS (use the tevatron format for an appended EOS)")
        if self.max_length < 4:
            raise InputError(f"pair max length must be >= 4, got {self.max_length}")

    def texts(self, query: str, doc: TextLike) -> Tuple[str, Optional[str]]:
        """The text(s) given to the tokenizer: ``(query side, document side)`` or ``(single string, None)``."""
        d = as_doc(doc)
        if self.format == "tevatron":
            title = d.title.replace("-", " ").strip()
            return f"{self.query_prefix} {query} {self.document_prefix} {title} {d.text}".strip(), None
        body = passage_body(d, self.fields)
        return f"{self.query_prefix}{query}", (f"{self.document_prefix}{body}" if body else self.document_prefix.rstrip())

    def encode(self, tokenizer, queries: Sequence[str], docs: Sequence[TextLike]) -> List[List[int]]:
        pairs = [self.texts(q, d) for q, d in zip(queries, docs)]
        if self.format == "tevatron":
            return tokenize(tokenizer, [a for a, _ in pairs], self.max_length, self.append_eos)[0]
        kw = dict(max_length=self.max_length, add_special_tokens=True, return_attention_mask=False,
                  return_token_type_ids=False)
        a, b = [x for x, _ in pairs], [y for _, y in pairs]
        try:
            ids = tokenizer(a, b, truncation="only_second", **kw)["input_ids"]
        except Exception:  # a query too long by itself: pair by pair
            ids = [None] * len(a)
        out = []
        for x, y, s in zip(a, b, ids):
            if s is None:
                try:
                    s = tokenizer(x, y, truncation="only_second", **kw)["input_ids"]
                except Exception:
                    s = None
            if s is None or len(s) > self.max_length:  # only the query can be cut: longest_first
                s = tokenizer(x, y, truncation="longest_first", **kw)["input_ids"]
            out.append(list(s))
        return out


def length_batches(lengths: Sequence[int], batch_size: int, max_tokens: Optional[int] = None,
                   call_cost: int = CALL_COST) -> List[List[int]]:
    """Row indices per batch, longest first (ties in input order). The sorted rows are cut into the batches that
    minimise padded tokens plus ``call_cost`` tokens per forward pass (exact dynamic programming), each with at most
    ``batch_size`` rows and, with ``max_tokens``, at most that many padded tokens (a longer sequence alone): similar
    lengths share a batch, a few long texts among short ones do not pad them all."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    size = [max(1, lengths[i]) for i in order]
    n = len(size)
    best, cut = [0.0] + [float("inf")] * n, [0] * (n + 1)
    for i in range(n):  # a batch starting at row i is padded to size[i]
        rows = max(1, min(batch_size, max_tokens // size[i])) if max_tokens else batch_size
        for j in range(i + 1, min(n, i + rows) + 1):
            cost = best[i] + call_cost + (j - i) * size[i]
            if cost < best[j]:
                best[j], cut[j] = cost, i
    out, j = [], n
    while j > 0:
        out.append(order[cut[j]:j])
        j = cut[j]
    return out[::-1]


def pad(tokenizer, ids: Sequence[Sequence[int]], padding_side: str = "right",
        pad_to_multiple_of: Optional[int] = None) -> dict:
    """``{"input_ids", "attention_mask"}`` (torch, long) of token id lists, with ``tokenizer.pad``."""
    ensure_pad_token(tokenizer)
    batch = tokenizer.pad({"input_ids": [list(x) for x in ids]}, padding=True, padding_side=padding_side,
                          pad_to_multiple_of=pad_to_multiple_of if (pad_to_multiple_of or 0) > 1 else None,
                          return_attention_mask=True, return_tensors="pt")
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def position_ids(mask):
    """Positions counted over attended tokens only (so left padding does not shift them)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def last_token(hidden, mask):
    """Each row's hidden state at its last attended token (right or left padding)."""
    import torch
    idx = (mask.shape[1] - 1 - mask.flip(-1).argmax(-1)).to(hidden.device)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]


def pool(hidden, mask, pooling: str = "eos"):
    """``eos``/``last``: the hidden state at the last attended token; ``mean``: the masked mean. float32."""
    if pooling == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return ((hidden * m).sum(1) / m.sum(1).clamp(min=1)).float()
    return last_token(hidden, mask).float()
