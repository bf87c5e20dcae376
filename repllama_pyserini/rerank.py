"""RankLLaMA reranking (Ma et al., 2023) of Pyserini search results and TREC runs.

The model is the released recipe: a base decoder loaded as ``AutoModelForSequenceClassification(num_labels=1)``
plus a LoRA adapter (merged); a pair is encoded exactly as the model cards do,
``tokenizer(f"query: {query}", f"document: {title} {text}")`` (documents: ``{url} {title} {text}``; empty
fields are left out with their space), the document side truncated to the max length, no EOS appended, and the
score is the single logit at the last real token. Batched scoring (length-sorted pairs, padding, left or right)
reproduces the one-pair-at-a-time model card to float precision: the score is taken from the backbone's hidden
state at the last attention-mask position, never located by searching for pad ids.

Python::

    from repllama_pyserini.rerank import RankLLaMAReranker
    reranker = RankLLaMAReranker.from_pretrained("castorini/rankllama-v1-7b-lora-passage")
    hits = LuceneSearcher.from_prebuilt_index("msmarco-v1-passage").search(query, k=200)
    for h in reranker.rerank(query, hits):          # re-sorted, h.docid / h.score / h.first_stage_score
        ...

CLI (a TREC run in, a TREC run out; resumable: a killed job continues with the queries it had not finished)::

    python -m repllama_pyserini.rerank --model castorini/rankllama-v1-7b-lora-passage \\
        --run run.bm25.trec --topics topics.dl19-passage.txt --corpus collection.tsv[.gz]|corpus.jsonl|INDEX_DIR \\
        --depth 200 --output run.rankllama.trec
    python -m repllama_pyserini.rerank --model ... --candidates retrieve_results_BM25_dl19.json.gz --output ...
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .corpus_lookup import Doc, load_docs, parse_raw, read_rank_llm_candidates
from .io import InputError, Run, read_run, read_topics, require_file, run_cli, sorted_hits, write_run

PASSAGE = dict(max_length=512, depth=200, document_fields=("title", "text"))
DOCUMENT = dict(max_length=2048, depth=100, document_fields=("url", "title", "text"))
GRANULARITIES = {"passage": PASSAGE, "document": DOCUMENT}
QUERY_PREFIX = "query: "
DOCUMENT_PREFIX = "document: "
ON_MISSING = ("drop", "fail")
DocLike = Union[Doc, str]


# ----------------------------------------------------------------------------------------------------- inputs
def format_query(query: str, prefix: str = QUERY_PREFIX) -> str:
    return f"{prefix}{query}"


def format_document(doc: DocLike, prefix: str = DOCUMENT_PREFIX, fields: Sequence[str] = ("title", "text")) -> str:
    """``prefix`` + the non-empty ``fields`` of ``doc`` joined by single spaces (``document: {title} {text}``)."""
    if isinstance(doc, str):
        doc = Doc("", doc)
    body = " ".join(v for v in (getattr(doc, f) for f in fields) if v)
    return f"{prefix}{body}" if body else prefix.rstrip()


def is_empty(doc: DocLike) -> bool:
    if isinstance(doc, str):
        return not doc.strip()
    return not (doc.title.strip() or doc.text.strip() or doc.url.strip())


@dataclass
class RerankedHit:
    """A reranked search result: ``docid``, the reranker's ``score``, the ``first_stage_score`` and the original
    ``hit`` (a Pyserini result object, or None for run files)."""
    docid: str
    score: float
    first_stage_score: Optional[float] = None
    hit: Any = None


@dataclass
class RerankStats:
    queries: int = 0            # queries reranked (this call) + resumed from the checkpoint
    resumed: int = 0            # queries taken from the checkpoint
    pairs: int = 0              # pairs scored in this call
    missing_docs: int = 0       # (query, docid) candidates whose text is absent from the corpus
    missing_docids: List[str] = field(default_factory=list)
    topics_missing: List[str] = field(default_factory=list)   # run queries with no topic text
    topics_without_run: List[str] = field(default_factory=list)  # topics the run does not mention
    empty_docs: int = 0         # candidates with an empty document (scored as "document:")
    seconds: float = 0.0

    def summary(self) -> str:
        parts = [f"{self.queries} queries", f"{self.pairs} pairs scored"]
        if self.resumed:
            parts.append(f"{self.resumed} queries resumed from checkpoint")
        if self.seconds and self.pairs:
            parts.append(f"{self.pairs / self.seconds:.1f} pairs/s")
        if self.missing_docs:
            parts.append(f"{self.missing_docs} candidates absent from the corpus dropped "
                         f"(e.g. {self.missing_docids[0]!r})")
        if self.topics_missing:
            parts.append(f"{len(self.topics_missing)} run queries without topic text dropped "
                         f"(e.g. {self.topics_missing[0]!r})")
        if self.topics_without_run:
            parts.append(f"{len(self.topics_without_run)} topics absent from the run "
                         f"(e.g. {self.topics_without_run[0]!r})")
        if self.empty_docs:
            parts.append(f"{self.empty_docs} empty documents")
        return "; ".join(parts)


# ------------------------------------------------------------------------------------------------ checkpoint
class Checkpoint:
    """Append-only JSONL of finished queries: a header line with the settings, then ``{"qid", "hits"}`` lines,
    each flushed and fsynced. A line torn by a kill is cut off on reload; other settings refuse to resume."""

    MAGIC = "repllama_pyserini.rerank.checkpoint"

    def __init__(self, path: str, config: dict):
        self.path = path
        self.config = json.loads(json.dumps(config))  # normalise tuples etc. as they read back
        self._f = None

    def load(self) -> Dict[str, List[Tuple[str, float]]]:
        """Finished queries ``{qid: [(docid, score), ...]}``; cuts a torn last line off the file."""
        done: Dict[str, List[Tuple[str, float]]] = {}
        if not os.path.exists(self.path):
            return done
        with open(self.path, "rb") as f:
            data = f.read()
        lines = data.split(b"\n")  # the last piece is b"" after a final newline, else a torn line
        good, header = 0, False      # byte offset after the last valid line; header seen
        for i, line in enumerate(lines):
            last = i >= len(lines) - 2
            if not line.strip():
                good += len(line) + (i < len(lines) - 1)
                continue
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict) or (header and not ("qid" in obj and "hits" in obj)):
                    raise ValueError
            except ValueError:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                if last:
                    break  # the line a killed job was writing
                raise InputError(f"checkpoint {self.path}:{i + 1} is corrupt; delete it or pass --restart") from None
            if i == len(lines) - 1:
                break  # valid JSON but no newline: treat as torn, it is rewritten
            if not header:
                if obj.get("checkpoint") != self.MAGIC:
                    raise InputError(f"{self.path} is not a rerank checkpoint; delete it or pass --restart")
                theirs = obj.get("config") or {}
                mine = self.config if "checkpoint" in theirs else {k: v for k, v in self.config.items()
                                                                    if k != "checkpoint"}  # written before weights
                if theirs != mine:
                    diff = sorted(k for k in set(theirs) | set(mine) if theirs.get(k) != mine.get(k))
                    raise InputError(f"checkpoint {self.path} was written with other settings ({', '.join(diff)}); "
                                     f"delete it or pass --restart")
                header = True
            else:
                done[str(obj["qid"])] = [(str(d), float(s)) for d, s in obj["hits"]]
            good += len(line) + 1
        if good < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(good)
        return done

    def open(self) -> None:
        new = not os.path.exists(self.path) or os.path.getsize(self.path) == 0
        d = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(d, exist_ok=True)
        self._f = open(self.path, "a", encoding="utf-8")
        if new:
            self._write({"checkpoint": self.MAGIC, "config": self.config})

    def _write(self, obj: dict) -> None:
        self._f.write(json.dumps(obj, ensure_ascii=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def append(self, qid: str, hits: List[Tuple[str, float]]) -> None:
        self._write({"qid": qid, "hits": [[d, s] for d, s in hits]})

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def remove(self) -> None:
        self.close()
        if os.path.exists(self.path):
            os.unlink(self.path)


# ------------------------------------------------------------------------------------------------- reranker
def _hit_doc(hit, docs=None) -> Optional[Doc]:
    """The document of a search result: from ``docs`` (mapping docid -> Doc/str, a LuceneSearcher-like object
    with ``.doc(docid)``, or a callable), else from the hit itself (``lucene_document`` raw/contents,
    ``raw``, ``contents``, ``text``)."""
    docid = str(hit.docid)
    if docs is not None:
        if isinstance(docs, Mapping):
            d = docs.get(docid)
        elif hasattr(docs, "doc"):
            d = docs.doc(docid)
            if d is not None:
                raw = d.raw() if d.raw() is not None else d.contents()
                d = parse_raw(raw) if raw is not None else None
        else:
            d = docs(docid)
        if d is None:
            return None
        return Doc("", d) if isinstance(d, str) else d
    lucene_document = getattr(hit, "lucene_document", None)
    if lucene_document is not None:
        raw = lucene_document.get("raw") or lucene_document.get("contents")
        return parse_raw(raw) if raw is not None else None
    for attr in ("raw", "contents", "text", "content"):
        v = getattr(hit, attr, None)
        if callable(v):
            v = v()
        if isinstance(v, str):
            return parse_raw(v) if attr == "raw" else Doc("", v)
    return None


class Reranker:
    """Reranking logic shared by all pointwise rerankers: subclasses implement :meth:`score_pairs`."""

    depth: int = 200
    name: str = "reranker"

    def score_pairs(self, queries: Sequence[str], docs: Sequence[DocLike], progress=None) -> List[float]:
        """One score per (query, doc) pair; ``progress`` (a tqdm bar or None) is advanced by the pairs done."""
        raise NotImplementedError

    def fingerprint(self) -> dict:
        """Settings that change scores (checkpoints refuse to mix them)."""
        return {"reranker": self.name}

    def rerank(self, query: str, hits: Sequence[Any], depth: Optional[int] = None, docs=None,
               on_missing: str = "drop") -> List[RerankedHit]:
        """Rerank the top-``depth`` of Pyserini ``hits`` (anything with ``.docid`` and ``.score``; text from the hit
        or from ``docs``); returns them re-sorted by the new score, ties by docid as ``io.sorted_hits`` orders them. Hits beyond ``depth`` and hits
        without text (``on_missing='drop'``; ``'fail'`` raises) are left out."""
        depth = self.depth if depth is None else depth
        kept, texts = [], []
        for hit in list(hits)[:depth]:
            d = _hit_doc(hit, docs)
            if d is None:
                if on_missing == "fail":
                    raise InputError(f"no text for docid {hit.docid!r}")
                continue
            kept.append(hit)
            texts.append(d)
        scores = self.score_pairs([query] * len(kept), texts) if kept else []
        out = [RerankedHit(str(h.docid), float(s), float(getattr(h, "score", 0.0)), h) for h, s in zip(kept, scores)]
        order = {d: i for i, (d, _) in enumerate(sorted_hits({r.docid: r.score for r in out}))}
        out.sort(key=lambda r: order[r.docid])
        return out

    def rerank_run(self, topics: Mapping[str, str], run: Run, docs: Mapping[str, DocLike],
                   depth: Optional[int] = None, on_missing: str = "drop", checkpoint: Optional[str] = None,
                   checkpoint_config: Optional[dict] = None, progress: bool = True,
                   chunk_pairs: int = 1024) -> Tuple[Run, RerankStats]:
        """Rerank the top-``depth`` (``io.sorted_hits`` order: score, ties by docid) of every query of ``run``.

        ``docs`` maps docid to text; candidates absent from it are dropped and counted (``on_missing='fail'``:
        raise before scoring anything); so are run queries absent from ``topics``. Queries are scored in chunks
        of about ``chunk_pairs`` pairs (length-sorted inside a chunk); each finished query is appended to
        ``checkpoint`` (JSONL) and skipped when the same call is repeated after a kill."""
        from tqdm import tqdm
        if on_missing not in ON_MISSING:
            raise ValueError(f"on_missing must be one of {ON_MISSING}")
        depth = self.depth if depth is None else depth
        t0 = time.perf_counter()
        stats = RerankStats()
        stats.topics_without_run = [q for q in topics if q not in run]
        stats.topics_missing = [q for q in run if q not in topics]
        if stats.topics_missing and on_missing == "fail":
            raise InputError(f"{len(stats.topics_missing)} run queries have no topic text "
                             f"(e.g. {stats.topics_missing[0]!r})")
        todo: Dict[str, List[Tuple[str, float]]] = {}
        for qid, scores in run.items():
            if qid not in topics:
                continue
            cands = []
            for docid, s in sorted_hits(scores)[:depth]:
                d = docs.get(docid)
                if d is None:
                    stats.missing_docs += 1
                    if len(stats.missing_docids) < 5:
                        stats.missing_docids.append(docid)
                    continue
                stats.empty_docs += is_empty(d)
                cands.append((docid, s))
            todo[qid] = cands
        if stats.missing_docs and on_missing == "fail":
            raise InputError(f"{stats.missing_docs} candidates are absent from the corpus "
                             f"(e.g. {stats.missing_docids[0]!r}); pass --on-missing drop to skip them")
        if run and not any(todo.values()):  # nothing left to score: a wrong corpus or topics file, not a result
            what = (f"all {stats.missing_docs} candidates are absent from the corpus (e.g. "
                    f"{stats.missing_docids[0]!r})" if stats.missing_docs else "no run query has topic text")
            raise InputError(f"nothing to rerank: {what}; is it the right corpus / topics file?")
        ckpt = None
        results: Dict[str, List[Tuple[str, float]]] = {}
        if checkpoint:
            config = dict(self.fingerprint(), depth=depth, on_missing=on_missing, **(checkpoint_config or {}))
            ckpt = Checkpoint(checkpoint, config)
            done = ckpt.load()
            for qid in todo:
                if qid in done:
                    results[qid] = done[qid]
                    stats.resumed += 1
            ckpt.open()
        # chunks are cut over all queries, finished or not, so a resumed job scores exactly the batches the
        # uninterrupted job would have (same padding, same kernels: bit-identical scores)
        chunks, chunk, n = [], [], 0
        for q in todo:
            if chunk and n + len(todo[q]) > chunk_pairs:
                chunks.append(chunk)
                chunk, n = [], 0
            chunk.append(q)
            n += len(todo[q])
        if chunk:
            chunks.append(chunk)
        chunks = [c for c in chunks if any(q not in results for q in c)]
        total = sum(len(todo[q]) for c in chunks for q in c)
        try:
            with tqdm(total=total, desc=f"rerank {self.name}", unit="pair", disable=not progress,
                      dynamic_ncols=True) as bar:
                for chunk in chunks:
                    qs = [topics[q] for q in chunk for _ in todo[q]]
                    ds = [docs[d] for q in chunk for d, _ in todo[q]]
                    scores = self.score_pairs(qs, ds, progress=bar) if qs else []
                    stats.pairs += len(scores)
                    pos = 0
                    for q in chunk:
                        k = len(todo[q])
                        hits = sorted_hits({d: float(s) for (d, _), s in zip(todo[q], scores[pos:pos + k])})
                        pos += k
                        if q in results:  # finished before a kill that cut this chunk's checkpoint lines short
                            continue
                        results[q] = hits
                        if ckpt:
                            ckpt.append(q, hits)
        finally:
            if ckpt:
                ckpt.close()
        stats.queries = len(results)
        stats.seconds = time.perf_counter() - t0
        out: Run = {q: dict(results[q]) for q in todo}
        return out, stats


class FunctionReranker(Reranker):
    """A reranker from a plain scoring function ``fn(query, doc) -> float`` (tests, baselines)."""

    def __init__(self, fn: Callable[[str, Doc], float], depth: int = 200, name: str = "function"):
        self.fn, self.depth, self.name = fn, depth, name

    def score_pairs(self, queries, docs, progress=None):
        out = [float(self.fn(q, Doc("", d) if isinstance(d, str) else d)) for q, d in zip(queries, docs)]
        if progress is not None:
            progress.update(len(out))
        return out


# ---------------------------------------------------------------------------------------------- RankLLaMA
def find_reranker_preset(name: Optional[str]):
    """The reranker preset (``encoders/rankllama-*.yaml``, via :mod:`repllama_pyserini.presets`) called ``name``."""
    if not name:
        return None
    from . import presets
    p = presets.find_preset(name)
    if p is not None and p.kind != "reranker":
        raise InputError(f"{name} is an encoder preset, not a reranker")
    return p


def preset_settings(p) -> dict:
    """Reranker settings of a preset. ``passage_max_length`` is the max length of the whole pair; the rerank
    depth is the preset's ``depth`` when it has one, else 100 for documents (fields with ``url``), 200 for passages."""
    fields = tuple(p.passage_fields)
    depth = p.depth or (DOCUMENT["depth"] if "url" in fields else PASSAGE["depth"])
    return dict(model=p.model, base_model=p.base_model, tokenizer=p.tokenizer, query_prefix=p.query_prefix,
                document_prefix=p.passage_prefix, document_fields=fields, max_length=p.passage_max_length,
                depth=depth, padding_side=p.padding_side, name=p.name)


class RankLLaMAReranker(Reranker):
    """Pointwise RankLLaMA scoring: batched, length-sorted, ``torch.inference_mode``."""

    def __init__(self, model, tokenizer, max_length: int = 512, depth: int = 200, batch_size: int = 16,
                 max_tokens: Optional[int] = None, query_prefix: str = QUERY_PREFIX,
                 document_prefix: str = DOCUMENT_PREFIX, document_fields: Sequence[str] = ("title", "text"),
                 padding_side: str = "right", name: str = "rankllama"):
        if padding_side not in ("left", "right"):
            raise ValueError("padding_side must be 'left' or 'right'")
        if max_length < 4:
            raise InputError("max_length must be >= 4")
        self.model, self.tokenizer = model, tokenizer
        self.max_length, self.depth, self.batch_size, self.max_tokens = max_length, depth, batch_size, max_tokens
        self.query_prefix, self.document_prefix = query_prefix, document_prefix
        self.document_fields = tuple(document_fields)
        self.padding_side, self.name = padding_side, name
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.backbone = getattr(model, model.base_model_prefix)
        self.head = getattr(model, "score", None)
        if self.head is None:
            raise InputError(f"{type(model).__name__} has no 'score' head: load it as a sequence classifier")
        self.device = next(model.parameters()).device
        self.source: Optional[Tuple[str, Optional[str]]] = None  # (model, base) when loaded by from_pretrained

    @classmethod
    def from_pretrained(cls, model_name_or_path: Optional[str] = None, preset: Optional[str] = None,
                        base_model: Optional[str] = None, tokenizer: Optional[str] = None,
                        granularity: Optional[str] = None, dtype: Optional[str] = None,
                        device: Optional[str] = None, attn_implementation: Optional[str] = None,
                        **overrides) -> "RankLLaMAReranker":
        """Load a RankLLaMA checkpoint (full model, or LoRA adapter + base, merged). Settings come from
        ``preset`` (a preset name or YAML; default: the preset named ``model_name_or_path`` if any), else the
        ``granularity`` defaults ('passage': 512 tokens / depth 200, 'document': 2048 / 100 with the URL);
        keyword ``overrides`` (max_length, depth, batch_size, ...; None ignored) win."""
        from .models import load_model, load_tokenizer, resolve_model
        p = find_reranker_preset(preset or model_name_or_path)
        if preset and p is None:
            raise InputError(f"unknown reranker preset {preset!r}")
        settings = preset_settings(p) if p is not None else {}
        preset_model, preset_base, preset_tok = (settings.pop(k, None) for k in ("model", "base_model", "tokenizer"))
        # the preset's checkpoint (its name, an alias or its model id): its base and tokenizer too; another
        # checkpoint (e.g. a local copy of the adapter) only takes the preset's input settings
        own = p is not None and (not model_name_or_path or model_name_or_path in {p.name, p.model, *p.aliases})
        if own:
            base_model, tokenizer = base_model or preset_base, tokenizer or preset_tok
        tok_name = tokenizer
        if granularity:
            if granularity not in GRANULARITIES:
                raise InputError(f"granularity must be one of {sorted(GRANULARITIES)}")
            settings.update(GRANULARITIES[granularity])
        name = model_name_or_path or preset_model
        if not name:
            raise InputError("no reranker model given")
        if own:
            name = preset_model or name  # a preset name or alias: load the checkpoint it names
        if not tok_name:
            has_tok = os.path.isdir(name) and any(os.path.isfile(os.path.join(name, f)) for f in
                                                  ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"))
            tok_name = name if has_tok else resolve_model(name, base_model).base
        settings.update({k: v for k, v in overrides.items() if v is not None})
        if not own or not settings.get("name"):
            settings["name"] = name  # checkpoints record it: another checkpoint must not pass for the preset's
        tok = load_tokenizer(tok_name, padding_side=settings.get("padding_side", "right"))
        model, resolved = load_model(name, kind="reranker", base_model=base_model, dtype=dtype, device=device,
                                     attn_implementation=attn_implementation, pad_token_id=tok.pad_token_id)
        reranker = cls(model, tok, **settings)
        reranker.source = (name, resolved.base if resolved.adapter else None)
        return reranker

    def fingerprint(self) -> dict:
        from .models import checkpoint_identity  # weights hashed only when a checkpoint needs them
        return {"reranker": self.name, "max_length": self.max_length, "query_prefix": self.query_prefix,
                "document_prefix": self.document_prefix, "document_fields": list(self.document_fields),
                "dtype": str(next(self.model.parameters()).dtype),
                **({"checkpoint": checkpoint_identity(*self.source)} if self.source else {})}

    # -- tokenisation
    def encode_pairs(self, queries: Sequence[str], docs: Sequence[DocLike]) -> List[List[int]]:
        """Token ids of each pair exactly as ``tokenizer(query_text, doc_text)`` (the model card), the document side
        truncated to ``max_length`` (a query too long by itself is truncated too)."""
        a = [format_query(q, self.query_prefix) for q in queries]
        b = [format_document(d, self.document_prefix, self.document_fields) for d in docs]
        kw = dict(max_length=self.max_length, add_special_tokens=True, return_attention_mask=False,
                  return_token_type_ids=False)
        try:
            ids = self.tokenizer(a, b, truncation="only_second", **kw)["input_ids"]
        except Exception:  # a query longer than max_length on its own: encode pair by pair
            ids = []
            for x, y in zip(a, b):
                try:
                    ids.append(self.tokenizer(x, y, truncation="only_second", **kw)["input_ids"])
                except Exception:
                    ids.append(self.tokenizer(x, y, truncation="longest_first", **kw)["input_ids"])
        for i, s in enumerate(ids):
            if len(s) > self.max_length:
                ids[i] = self.tokenizer(a[i], b[i], truncation="longest_first", **kw)["input_ids"]
        return ids

    def _batches(self, lengths: List[int]) -> List[List[int]]:
        """Pair indices grouped longest first: at most ``batch_size`` pairs and ``max_tokens`` padded tokens."""
        order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
        batches, i = [], 0
        while i < len(order):
            n = self.batch_size
            if self.max_tokens:
                n = max(1, min(n, self.max_tokens // lengths[order[i]]))
            batches.append(order[i:i + n])
            i += n
        return batches

    def score_ids(self, seqs: Sequence[Sequence[int]]) -> List[float]:
        """Scores of already tokenised pairs (one padded batch)."""
        import torch
        bsz, width = len(seqs), max(len(s) for s in seqs)
        ids = torch.full((bsz, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((bsz, width), dtype=torch.long)
        for i, s in enumerate(seqs):
            if self.padding_side == "right":
                ids[i, :len(s)] = torch.as_tensor(s)
                mask[i, :len(s)] = 1
            else:
                ids[i, width - len(s):] = torch.as_tensor(s)
                mask[i, width - len(s):] = 1
        last = width - 1 - mask.flip(-1).argmax(-1)  # last attended position (right or left padding)
        with torch.inference_mode():
            if self.padding_side == "right":
                # causal attention never lets a real token see the pads after it, and positions start at 0:
                # no padding mask is needed, so attention runs its plain causal kernel (no materialised mask)
                hidden = self.backbone(input_ids=ids.to(self.device), use_cache=False).last_hidden_state
            else:
                positions = (mask.cumsum(-1) - 1).clamp(min=0)
                hidden = self.backbone(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                       position_ids=positions.to(self.device), use_cache=False).last_hidden_state
            pooled = hidden[torch.arange(bsz, device=self.device), last.to(self.device)]
            return self.head(pooled)[:, 0].float().cpu().tolist()

    def score_pairs(self, queries, docs, progress=None) -> List[float]:
        if len(queries) != len(docs):
            raise ValueError("queries and docs differ in length")
        if not queries:
            return []
        ids = self.encode_pairs(queries, docs)
        scores = [0.0] * len(ids)
        for batch in self._batches([len(s) for s in ids]):
            for i, s in zip(batch, self.score_ids([ids[i] for i in batch])):
                scores[i] = s
            if progress is not None:
                progress.update(len(batch))
        return scores


def model_card_score(model, tokenizer, query_text: str, document_text: str) -> float:
    """The released model cards' scoring of one pair, the reference for tests and the benchmark:
    ``model(**tokenizer(f'query: {query}', f'document: {title} {passage}', return_tensors='pt')).logits[0][0]``
    (``query_text`` and ``document_text`` are given with their prefixes)."""
    import torch
    inputs = tokenizer(query_text, document_text, return_tensors="pt")
    with torch.no_grad():
        return float(model(**inputs.to(next(model.parameters()).device)).logits[0][0])


# ------------------------------------------------------------------------------------------------------ CLI
def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m repllama_pyserini.rerank", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="RankLLaMA checkpoint or LoRA adapter (hub id or dir), or a preset name")
    p.add_argument("--preset", help="reranker preset (name or YAML) for the settings; default: --model's")
    p.add_argument("--base-model", help="base of the adapter (default: the adapter's config)")
    p.add_argument("--tokenizer", help="default: the preset's, the model dir's, else the base model's")
    p.add_argument("--granularity", choices=sorted(GRANULARITIES),
                   help="defaults for a model without preset: passage (512 tokens, depth 200) or document "
                        "(2048 tokens, depth 100, URL prepended)")
    src = p.add_argument_group("input: --run + --topics + --corpus, or --candidates")
    src.add_argument("--run", help="first-stage TREC run")
    src.add_argument("--topics", help="qid<TAB>query file (.tsv/.txt[.gz]) or queries.jsonl")
    src.add_argument("--corpus", help="BEIR folder / JSONL(.gz) / JsonCollection folder / TSV(.gz) docid<TAB>text "
                                      "/ Lucene index with stored raw docs")
    src.add_argument("--candidates", help="rank_llm retrieve_results JSON(.gz) (queries, hits and text in one file)")
    p.add_argument("--output", required=True, help="reranked TREC run (written atomically at the end)")
    p.add_argument("--depth", type=int, help="candidates reranked per query (default: preset's, 200 passages, "
                                              "100 documents)")
    p.add_argument("--max-length", type=int, help="max tokens of a pair (default 512 passages, 2048 documents)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-tokens", type=int, help="cap on padded tokens per batch (long documents)")
    p.add_argument("--dtype", default=None, help="auto (fp32 on CPU, bf16/fp16 on GPU), float32, bfloat16, float16")
    p.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:1...")
    p.add_argument("--attn-implementation", default=None, help="default: flash_attention_2 if available, else sdpa")
    p.add_argument("--padding-side", choices=("left", "right"), default=None)
    p.add_argument("--on-missing", choices=ON_MISSING, default="drop",
                   help="candidates absent from the corpus / run queries without topic: drop and report, or fail")
    p.add_argument("--checkpoint", help="resume file (default: OUTPUT.ckpt.jsonl)")
    p.add_argument("--restart", action="store_true", help="discard an existing checkpoint")
    p.add_argument("--keep-checkpoint", action="store_true")
    p.add_argument("--tag", default="rankllama")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.candidates:
        if args.run or args.corpus:
            raise InputError("--candidates carries run and text: do not pass --run/--corpus with it")
    elif not (args.run and args.topics and args.corpus):
        raise InputError("pass --run, --topics and --corpus (or --candidates)")
    if not (args.model or args.preset):
        raise InputError("pass --model (or --preset)")
    for n in ("depth", "max_length", "batch_size", "max_tokens"):
        v = getattr(args, n)
        if v is not None and v < 1:
            raise InputError(f"--{n.replace('_', '-')} must be >= 1")

    # inputs first (cheap, and bad input fails before a model is loaded)
    if args.corpus:
        require_file(args.corpus, "corpus")
    if args.candidates:
        cand_topics, run, docs, _ = read_rank_llm_candidates(args.candidates)
        topics = read_topics(args.topics) if args.topics else cand_topics
    else:
        topics = read_topics(args.topics)
        run = read_run(args.run)
        if not run:
            raise InputError(f"empty run: {args.run}")
        docs = None
    reranker = RankLLaMAReranker.from_pretrained(
        args.model, preset=args.preset, base_model=args.base_model, tokenizer=args.tokenizer,
        granularity=args.granularity, dtype=args.dtype, device=args.device,
        attn_implementation=args.attn_implementation, max_length=args.max_length, depth=args.depth,
        batch_size=args.batch_size, max_tokens=args.max_tokens, padding_side=args.padding_side)
    depth = reranker.depth
    if docs is None:
        needed = {d for q, s in run.items() if q in topics for d, _ in sorted_hits(s)[:depth]}
        print(f"loading {len(needed)} candidate documents from {args.corpus}", file=sys.stderr)
        docs = load_docs(args.corpus, needed, progress=not args.no_progress)
    ckpt_path = args.checkpoint or args.output + ".ckpt.jsonl"
    if args.restart and os.path.exists(ckpt_path):
        os.unlink(ckpt_path)
    inputs = {"run": os.path.abspath(args.candidates or args.run),
              "topics": os.path.abspath(args.topics) if args.topics else None}
    out, stats = reranker.rerank_run(topics, run, docs, depth=depth, on_missing=args.on_missing,
                                     checkpoint=ckpt_path, checkpoint_config=inputs,
                                     progress=not args.no_progress)
    write_run(out, args.output, tag=args.tag)
    if not args.keep_checkpoint:
        Checkpoint(ckpt_path, {}).remove()
    print(f"wrote {args.output}: {stats.summary()}", file=sys.stderr)


if __name__ == "__main__":
    run_cli(main)
