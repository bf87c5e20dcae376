"""Query-likelihood scoring with a frozen causal LM: relevance(q, d) = mean log P(q's tokens | prompt(d) [, hints]),
for the ``upr`` and ``qpeft`` prompts (``docs/qpeft.md``). Documents and queries are truncated to ``max_doc_tokens`` /
``max_query_tokens`` tokens of their own tokenisation; only the query's tokens are scored.

The engine (:func:`query_loglik`) runs every distinct document prefix once, without gradient, and the
query-dependent rest of every pair against the gathered key/value caches, the LM head only where query tokens are
predicted; :func:`reference_loglik` is the plain one-sequence computation it is tested against.
"""
from __future__ import annotations

import functools
import string
import unicodedata
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch

from ..templates import pad, passage_body, position_ids

QPEFT_INSTRUCTION = "given the hints, please generate a question for the input passage"
QPEFT_PREFIX = "{instruction}\nPassage: {doc} \n"
QPEFT_TAIL = "Question: \n"
UPR_INSTRUCTION = "Please write a question based on this passage."
UPR_PREFIX = "Passage: {doc}. {instruction}"
UPR_QUERY_SEP = " "
HINT_PREFIX = "hints:"
HINT_SUFFIX = "\n"
PROMPTS = ("upr", "qpeft")


@dataclass
class EncodedDoc:
    doc_ids: List[int]          # the (truncated) document alone: what the Q-PEFT module looks at
    doc_text: str               # the document text cut where its ``max_doc_tokens``-th token ends
    prefix_ids: Tuple[int, ...]  # qpeft: BOS + instruction + passage (query independent); upr: unused


@dataclass
class EncodedQuery:
    query_ids: List[int]        # the (truncated) query alone: what the Q-PEFT module looks at
    query_text: str
    tail_ids: List[int]         # qpeft: "Question: \n" + query; upr: unused
    n_query: int                # the last n_query ids of tail_ids are the scored query tokens


@dataclass
class Pair:
    """One sequence to score: ``prefixes[prefix]`` + hints (``mid``, may be None) + ``tail``; the last
    ``n_query`` ids of ``tail`` are the scored tokens."""
    prefix: int
    mid: Optional[torch.Tensor]
    tail: List[int]
    n_query: int


class PromptEncoder:
    """Tokenises documents, queries and pairs for the ``upr`` or ``qpeft`` prompt (fast tokenizers only)."""

    def __init__(self, tokenizer, prompt: str = "qpeft", max_doc_tokens: int = 256, max_query_tokens: int = 64,
                 instruction: Optional[str] = None, add_bos: bool = True):
        if prompt not in PROMPTS:
            raise ValueError(f"prompt must be one of {PROMPTS}, got {prompt!r}")
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("Q-PEFT/UPR scoring needs a fast (Rust) tokenizer for offsets")
        self.tok = tokenizer
        self.prompt = prompt
        self.max_doc_tokens = int(max_doc_tokens)
        self.max_query_tokens = int(max_query_tokens)
        self.instruction = instruction if instruction is not None else (
            QPEFT_INSTRUCTION if prompt == "qpeft" else UPR_INSTRUCTION)
        self.bos = [tokenizer.bos_token_id] if add_bos and tokenizer.bos_token_id is not None else []
        self.add_bos = add_bos
        self.hint_prefix_ids = self._ids(HINT_PREFIX)
        self.hint_suffix_ids = self._ids(HINT_SUFFIX)
        self._special = set(tokenizer.all_special_ids)

    def config(self) -> dict:
        return {"prompt": self.prompt, "max_doc_tokens": self.max_doc_tokens,
                "max_query_tokens": self.max_query_tokens, "instruction": self.instruction, "add_bos": self.add_bos}

    def _ids(self, text: str) -> List[int]:
        return list(self.tok(text, add_special_tokens=False).input_ids)

    def _truncate(self, text: str, limit: int) -> Tuple[List[int], str]:
        enc = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc.input_ids)
        if len(ids) <= limit:
            return ids, text
        ids = ids[:limit]
        return ids, text[:enc.offset_mapping[limit - 1][1]]

    def _split(self, text: str, start: int) -> Tuple[List[int], int]:
        """Tokenise ``text``; returns (ids, number of trailing tokens that overlap ``text[start:]``)."""
        enc = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)
        n = sum(1 for (_, end) in enc.offset_mapping if end > start)
        return list(enc.input_ids), n

    def encode_doc(self, title: str, text: str) -> EncodedDoc:
        ids, cut = self._truncate(passage_body((title, text)), self.max_doc_tokens)
        prefix: Tuple[int, ...] = ()
        if self.prompt == "qpeft":
            prefix = tuple(self.bos + self._ids(QPEFT_PREFIX.format(instruction=self.instruction, doc=cut)))
        return EncodedDoc(ids, cut, prefix)

    def encode_query(self, query: str) -> EncodedQuery:
        ids, cut = self._truncate(query.strip(), self.max_query_tokens)
        tail, n = [], 0
        if self.prompt == "qpeft":
            tail, n = self._split(QPEFT_TAIL + cut, len(QPEFT_TAIL))
        return EncodedQuery(ids, cut, tail, n)

    def encode_pair(self, q: EncodedQuery, d: EncodedDoc) -> Tuple[Tuple[int, ...], List[int], int]:
        """(prefix ids, tail ids, n_query). For ``upr`` the prompt and the query are tokenised as one text and
        split where the query starts (tokens overlapping the query are scored)."""
        if self.prompt == "qpeft":
            return d.prefix_ids, q.tail_ids, q.n_query
        head = UPR_PREFIX.format(doc=d.doc_text, instruction=self.instruction)
        ids, n = self._split(head + UPR_QUERY_SEP + q.query_text, len(head) + len(UPR_QUERY_SEP))
        ids = self.bos + ids
        return tuple(ids[:-n]), ids[-n:], n

    def is_skippable(self, token_id: int) -> bool:
        """Special, whitespace-only and punctuation/symbol-only tokens are never used as hints."""
        return token_id in self._special or _punct_or_space(self.tok.decode([int(token_id)]))


@functools.lru_cache(maxsize=200_000)
def _punct_or_space(s: str) -> bool:
    s = s.strip()
    return not s or all(c in string.punctuation or unicodedata.category(c)[0] in "PSZ" or c.isspace() for c in s)


def query_loglik(lm, tokenizer, prefixes: Sequence[Sequence[int]], pairs: Sequence[Pair], padding_side: str = "right",
                 prefix_cache: bool = True) -> torch.Tensor:
    """Mean log-probability of each pair's query tokens, shape ``[len(pairs)]`` (float32).

    ``prefixes`` are run once each without gradient and their key/value caches are shared by the pairs that
    point at them; gradients flow into ``Pair.mid`` (the hints). ``prefix_cache=False`` runs every pair as one
    full sequence instead (same result; needed with gradient checkpointing). ``padding_side`` pads left or right
    (explicit position ids and masks make both give the same scores)."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if not pairs:
        return torch.zeros(0)
    base = lm.base_model
    emb = lm.get_input_embeddings()
    head = lm.get_output_embeddings()
    device, dtype = emb.weight.device, emb.weight.dtype
    for p in pairs:
        if p.n_query < 1 or p.n_query > len(p.tail):
            raise ValueError(f"n_query {p.n_query} out of range for a tail of {len(p.tail)} tokens")
        mid = 0 if p.mid is None else p.mid.shape[0]
        if len(prefixes[p.prefix]) + mid + len(p.tail) - p.n_query < 1:
            raise ValueError("nothing precedes the query: its first token cannot be scored")
    cache = None
    use_cache = prefix_cache and any(len(prefixes[p.prefix]) > 1 for p in pairs)
    if use_cache:
        used = sorted({p.prefix for p in pairs})
        remap = {j: i for i, j in enumerate(used)}
        cached = [list(prefixes[j])[:-1] for j in used]
        enc = pad(tokenizer, cached, padding_side)
        ids, pmask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
        with torch.no_grad():
            out = base(input_ids=ids, attention_mask=pmask, position_ids=position_ids(pmask), use_cache=True)
        idx = torch.tensor([remap[p.prefix] for p in pairs], device=device)
        # a row with no real token (fully masked) may hold NaNs; masked keys must still be finite
        kv = getattr(out, "cache", None) or out.past_key_values  # transformers >= 5.24 names it ``cache``
        layers = [(torch.nan_to_num(layer.keys[idx]), torch.nan_to_num(layer.values[idx])) for layer in kv.layers]
        from transformers import DynamicCache
        cache = DynamicCache(layers)
        prefix_mask = pmask[idx]
        heads = [list(prefixes[p.prefix])[-1:] for p in pairs]
        del out
    else:
        heads = [list(prefixes[p.prefix]) for p in pairs]
    # the live part of each pair: (rest of) prefix ids, hints, tail ids
    lives = []
    for h, p in zip(heads, pairs):
        parts = []
        if h:
            parts.append(emb(torch.tensor(h, device=device)))
        if p.mid is not None and p.mid.shape[0]:
            parts.append(p.mid.to(device=device, dtype=dtype))
        parts.append(emb(torch.tensor(p.tail, device=device)))
        lives.append(torch.cat(parts, 0))
    lengths = [v.shape[0] for v in lives]
    width = max(lengths)
    x = lives[0].new_zeros((len(pairs), width, lives[0].shape[1]))
    live_mask = torch.zeros((len(pairs), width), dtype=torch.long, device=device)
    starts = []
    for i, (v, n) in enumerate(zip(lives, lengths)):
        s = width - n if padding_side == "left" else 0
        starts.append(s)
        x[i, s:s + n] = v
        live_mask[i, s:s + n] = 1
    mask = torch.cat([prefix_mask, live_mask], 1) if cache is not None else live_mask
    pos = position_ids(mask)[:, -width:]
    import inspect
    cache_kw = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
    out = base(inputs_embeds=x, attention_mask=mask, position_ids=pos, use_cache=cache is not None,
               **{cache_kw: cache})
    hs = out.last_hidden_state
    rows, cols, targets = [], [], []
    for i, (p, s, n) in enumerate(zip(pairs, starts, lengths)):
        first = s + n - p.n_query  # column of the first query token, predicted at the column before it
        rows += [i] * p.n_query
        cols += range(first - 1, first - 1 + p.n_query)
        targets += p.tail[len(p.tail) - p.n_query:]
    rows_t = torch.tensor(rows, device=device)
    logits = head(hs[rows_t, torch.tensor(cols, device=device)]).float()
    logp = torch.log_softmax(logits, -1).gather(1, torch.tensor(targets, device=device)[:, None])[:, 0]
    total = torch.zeros(len(pairs), device=device, dtype=torch.float32).index_add(0, rows_t, logp)
    counts = torch.tensor([p.n_query for p in pairs], device=device, dtype=torch.float32)
    return total / counts


def reference_loglik(lm, prefix: Sequence[int], mid: Optional[torch.Tensor], tail: Sequence[int],
                     n_query: int) -> torch.Tensor:
    """The direct computation for one pair: one unpadded forward of the whole sequence through the LM (full
    logits), mean log-probability of the last ``n_query`` tokens."""
    emb = lm.get_input_embeddings()
    device, dtype = emb.weight.device, emb.weight.dtype
    parts = [emb(torch.tensor(list(prefix), device=device, dtype=torch.long))]
    if mid is not None:
        parts.append(mid.to(device=device, dtype=dtype))
    parts.append(emb(torch.tensor(list(tail), device=device, dtype=torch.long)))
    x = torch.cat(parts, 0)[None]
    logits = lm(inputs_embeds=x).logits[0].float()
    logp = torch.log_softmax(logits[:-1], -1)
    targets = torch.tensor(list(tail)[len(tail) - n_query:], device=device)
    rows = torch.arange(x.shape[1] - 1 - n_query, x.shape[1] - 1, device=device)
    return logp[rows, targets].mean()


class QueryLikelihoodScorer:
    """Scores (query, documents) with a frozen causal LM, zero-shot (``module=None``, UPR or Q-PEFT prompt
    without hints) or with one or more Q-PEFT modules (hints computed per pair)."""

    def __init__(self, lm, encoder: PromptEncoder, batch_size: int = 16, padding_side: str = "right",
                 prefix_cache: bool = True):
        self.lm = lm
        self.enc = encoder
        self.batch_size = max(1, int(batch_size))
        self.padding_side = padding_side
        self.prefix_cache = prefix_cache

    def build_pairs(self, queries: Sequence[EncodedQuery], docs: Sequence[EncodedDoc],
                    pairs: Sequence[Tuple[int, int]], module=None) -> Tuple[List[Tuple[int, ...]], List[Pair]]:
        """Prefixes (deduplicated) and :class:`Pair` objects for (query index, doc index) pairs; hints from
        ``module`` (gradients flow into them when the module is trainable)."""
        mids: List[Optional[torch.Tensor]] = [None] * len(pairs)
        if module is not None:
            if self.enc.prompt != "qpeft":
                raise ValueError("Q-PEFT hints need the 'qpeft' prompt")
            mids = module.hints([queries[q].query_ids for q, _ in pairs], [docs[d].doc_ids for _, d in pairs],
                                self.lm.get_input_embeddings(), self.enc)
        prefix_index, prefixes, out = {}, [], []
        for (qi, di), mid in zip(pairs, mids):
            prefix, tail, n = self.enc.encode_pair(queries[qi], docs[di])
            if prefix not in prefix_index:
                prefix_index[prefix] = len(prefixes)
                prefixes.append(prefix)
            out.append(Pair(prefix_index[prefix], mid, list(tail), n))
        return prefixes, out

    def loglik(self, queries, docs, pairs, module=None) -> torch.Tensor:
        prefixes, items = self.build_pairs(queries, docs, pairs, module)
        return query_loglik(self.lm, self.enc.tok, prefixes, items, self.padding_side, self.prefix_cache)

    @torch.no_grad()
    def score(self, query: str, docs: Sequence[Tuple[str, str]], modules: Sequence = (None,)) -> List[List[float]]:
        """Scores of ``query`` against ``docs`` [(title, text)], one list per entry of ``modules`` (None = no
        hints). The documents are processed ``batch_size`` at a time; each batch's prefixes run once for all
        modules."""
        q = [self.enc.encode_query(query)]
        scores: List[List[float]] = [[] for _ in modules]
        for start in range(0, len(docs), self.batch_size):
            enc_docs = [self.enc.encode_doc(t, x) for t, x in docs[start:start + self.batch_size]]
            prefixes, items = [], []
            for module in modules:
                if module is not None:
                    module.eval()
                p, it = self.build_pairs(q, enc_docs, [(0, d) for d in range(len(enc_docs))], module)
                if not prefixes:
                    prefixes = p
                else:  # same documents, same prefixes (they do not depend on the module)
                    assert p == prefixes
                items.extend(it)
            ll = query_loglik(self.lm, self.enc.tok, prefixes, items, self.padding_side, self.prefix_cache).tolist()
            for m in range(len(modules)):
                scores[m].extend(ll[m * len(enc_docs):(m + 1) * len(enc_docs)])
        return scores

