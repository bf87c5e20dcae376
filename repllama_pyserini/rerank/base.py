"""Pointwise reranking of Pyserini hits and TREC runs, shared by every reranker (RankLLaMA, UPR, Q-PEFT): a subclass
implements :meth:`Reranker.score_pairs` (or :meth:`Reranker.score_heads` for several score lists at once).

Run reranking (:meth:`Reranker.rerank_runs`) takes each query's top ``depth`` in trec_eval order, drops candidates
absent from the corpus and run queries without topic text (counted, or an error with ``on_missing='fail'``), and
scores the pairs in chunks of about ``chunk_pairs`` cut over all queries (a resumed job scores the same batches:
identical scores), each saved through :class:`repllama_pyserini.jobs.Job` when there is a job directory. The job's
fingerprint is the reranker's identity plus digests of exactly what is scored (``docs/reliability.md``).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ..cli import InputError, log
from ..formats.corpus import Doc
from ..formats.files import sha256_file
from ..formats.runs import Run, sorted_hits, top_hits, write_run
from ..templates import as_doc

ON_MISSING = ("drop", "fail")


@dataclass
class RerankedHit:
    """A reranked result: ``docid``, the reranker's ``score``, the ``first_stage_score`` and the original ``hit``."""
    docid: str
    score: float
    first_stage_score: Optional[float] = None
    hit: Any = None


@dataclass
class RerankStats:
    queries: int = 0             # queries in the output
    resumed: int = 0             # queries whose scores came from saved chunks
    pairs: int = 0               # pairs scored by this call
    missing_docs: int = 0        # candidates absent from the corpus
    missing_docids: List[str] = field(default_factory=list)
    topics_missing: List[str] = field(default_factory=list)      # run queries without topic text
    topics_without_run: List[str] = field(default_factory=list)  # topics the run does not mention
    empty_docs: int = 0          # candidates with an empty document
    seconds: float = 0.0

    def summary(self) -> str:
        parts = [f"{self.queries} queries", f"{self.pairs} pairs scored"]
        if self.resumed:
            parts.append(f"{self.resumed} queries resumed from saved chunks")
        if self.seconds and self.pairs:
            parts.append(f"{self.pairs / self.seconds:.1f} pairs/s")
        if self.missing_docs:
            parts.append(f"{self.missing_docs} candidates absent from the corpus dropped (e.g. {self.missing_docids[0]!r})")
        if self.topics_missing:
            parts.append(f"{len(self.topics_missing)} run queries without topic text dropped "
                         f"(e.g. {self.topics_missing[0]!r})")
        if self.topics_without_run:
            parts.append(f"{len(self.topics_without_run)} topics absent from the run (e.g. {self.topics_without_run[0]!r})")
        if self.empty_docs:
            parts.append(f"{self.empty_docs} empty documents")
        return "; ".join(parts)


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, ensure_ascii=False, sort_keys=True).encode()).hexdigest()


@dataclass
class Plan:
    """What a run reranking scores: per query, its top-``depth`` candidates found in the corpus."""
    todo: Dict[str, List[Tuple[str, float]]]
    stats: RerankStats
    chunks: List[List[str]]

    def inputs(self, topics: Mapping[str, str], docs: Mapping[str, Any]) -> dict:
        """Digests of exactly what is scored (the job fingerprint's inputs)."""
        used = sorted({d for c in self.todo.values() for d, _ in c})
        return {"topics": _digest({q: topics[q] for q in self.todo}),
                "candidates": _digest({q: [d for d, _ in c] for q, c in self.todo.items()}),
                "documents": _digest([[d, list(as_doc(docs[d]))] for d in used])}


def plan(topics: Mapping[str, str], run: Run, docs: Mapping[str, Any], depth: int, on_missing: str = "drop",
         chunk_pairs: int = 1024) -> Plan:
    if on_missing not in ON_MISSING:
        raise InputError(f"on_missing must be one of {ON_MISSING}")
    stats = RerankStats(topics_without_run=[q for q in topics if q not in run],
                        topics_missing=[q for q in run if q not in topics])
    if stats.topics_missing and on_missing == "fail":
        raise InputError(f"{len(stats.topics_missing)} run queries have no topic text (e.g. {stats.topics_missing[0]!r})")
    todo: Dict[str, List[Tuple[str, float]]] = {}
    for qid, scores in run.items():
        if qid not in topics:
            continue
        cands = []
        for docid, s in top_hits(scores, depth):
            d = docs.get(docid)
            if d is None:
                stats.missing_docs += 1
                if len(stats.missing_docids) < 5:
                    stats.missing_docids.append(docid)
                continue
            stats.empty_docs += as_doc(d).is_empty()
            cands.append((docid, s))
        todo[qid] = cands
    if stats.missing_docs and on_missing == "fail":
        raise InputError(f"{stats.missing_docs} candidates are absent from the corpus (e.g. {stats.missing_docids[0]!r});"
                         f" pass --on-missing drop to skip them")
    if run and not any(todo.values()):
        what = (f"all {stats.missing_docs} candidates are absent from the corpus (e.g. {stats.missing_docids[0]!r})"
                if stats.missing_docs else "no run query has topic text")
        raise InputError(f"nothing to rerank: {what}; is it the right corpus / topics file?")
    chunks, chunk, n = [], [], 0
    for q in todo:
        if chunk and n + len(todo[q]) > chunk_pairs:
            chunks.append(chunk)
            chunk, n = [], 0
        chunk.append(q)
        n += len(todo[q])
    if chunk:
        chunks.append(chunk)
    return Plan(todo, stats, chunks)


def _hit_doc(hit, docs=None) -> Optional[Doc]:
    """A search result's document: from ``docs`` (a mapping, a LuceneSearcher-like ``.doc(docid)``, a callable), else
    from the hit itself (``lucene_document`` raw/contents, ``raw``, ``contents``, ``text``)."""
    from ..formats.corpus import parse_raw
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
        return None if d is None else as_doc(d)
    ld = getattr(hit, "lucene_document", None)
    if ld is not None:
        raw = ld.get("raw") or ld.get("contents")
        return parse_raw(raw) if raw is not None else None
    for attr in ("raw", "contents", "text", "content"):
        v = getattr(hit, attr, None)
        v = v() if callable(v) else v
        if isinstance(v, str):
            return parse_raw(v) if attr == "raw" else Doc("", v)
    return None


class Reranker:
    """Reranking logic shared by pointwise rerankers."""

    depth: int = 200
    name: str = "reranker"
    heads: int = 1  # score lists produced per pair (Q-PEFT: one per module)

    def score_pairs(self, queries: Sequence[str], docs: Sequence[Any], progress=None) -> List[float]:
        """One score per (query, doc) pair; ``progress`` (a tqdm bar or None) advances by the pairs done."""
        raise NotImplementedError

    def score_heads(self, queries: Sequence[str], docs: Sequence[Any], progress=None) -> List[List[float]]:
        return [self.score_pairs(queries, docs, progress)]

    def identity(self) -> dict:
        """Settings and weights that decide the scores (a job refuses to mix them)."""
        return {"reranker": self.name}

    def rerank(self, query: str, hits: Sequence[Any], depth: Optional[int] = None, docs=None,
               on_missing: str = "drop") -> List[RerankedHit]:
        """Rerank the top-``depth`` Pyserini ``hits`` (``.docid``, ``.score``; text from the hit or ``docs``), re-sorted
        by the new score (ties by docid, trec_eval's order); hits without text are dropped (``'fail'`` raises)."""
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
        out = {str(h.docid): RerankedHit(str(h.docid), float(s), float(getattr(h, "score", 0.0)), h)
               for h, s in zip(kept, scores)}
        return [out[d] for d, _ in sorted_hits({d: r.score for d, r in out.items()})]

    def rerank_run(self, topics: Mapping[str, str], run: Run, docs: Mapping[str, Any], depth: Optional[int] = None,
                   on_missing: str = "drop", progress: bool = True, **kwargs) -> Tuple[Run, RerankStats]:
        """Rerank every query of ``run`` (see the module doc); returns the reranked run and counts."""
        runs, stats = self.rerank_runs(topics, run, docs, depth, on_missing, progress=progress, **kwargs)
        return runs[0], stats

    def rerank_runs(self, topics: Mapping[str, str], run: Run, docs: Mapping[str, Any], depth: Optional[int] = None,
                    on_missing: str = "drop", job_dir: Optional[str] = None, overwrite: bool = False,
                    progress: bool = True, chunk_pairs: int = 1024) -> Tuple[List[Run], RerankStats]:
        """One reranked run per head; with ``job_dir``, resumable (see the module doc)."""
        depth = self.depth if depth is None else depth
        p = plan(topics, run, docs, depth, on_missing, chunk_pairs)
        if job_dir is None:
            return self._score_plan(p, topics, docs, None, progress), p.stats
        with open_job(job_dir, self.identity(), p, topics, docs, depth, on_missing, chunk_pairs, overwrite) as job:
            return self._score_plan(p, topics, docs, job, progress), p.stats

    def _score_plan(self, p: Plan, topics, docs, job, progress: bool) -> List[Run]:
        from tqdm import tqdm
        t0 = time.perf_counter()
        results: List[Dict[str, List[Tuple[str, float]]]] = [{} for _ in range(self.heads)]
        todo_chunks = []
        for k, chunk in enumerate(p.chunks):
            saved = load_chunk(job, k) if job is not None else None
            if saved is None:
                todo_chunks.append((k, chunk))
                continue
            for result, head in zip(results, saved):
                result.update(head)
            p.stats.resumed += len(chunk)
        total = sum(len(p.todo[q]) for _, c in todo_chunks for q in c)
        with tqdm(total=total, desc=f"rerank {self.name}", unit="pair", disable=not progress, dynamic_ncols=True) as bar:
            for k, chunk in todo_chunks:
                qs = [topics[q] for q in chunk for _ in p.todo[q]]
                ds = [docs[d] for q in chunk for d, _ in p.todo[q]]
                heads = self.score_heads(qs, ds, progress=bar) if qs else [[] for _ in range(self.heads)]
                p.stats.pairs += len(qs)
                chunk_out = []
                for result, scores in zip(results, heads):
                    out, pos = {}, 0
                    for q in chunk:
                        n = len(p.todo[q])
                        out[q] = sorted_hits({d: float(s) for (d, _), s in zip(p.todo[q], scores[pos:pos + n])})
                        pos += n
                    chunk_out.append(out)
                    result.update(out)
                if job is not None:
                    job.write_chunk(f"chunk_{k:06d}", {".json": json.dumps(chunk_out).encode()}, queries=len(chunk))
        p.stats.queries = len(p.todo)
        p.stats.seconds = time.perf_counter() - t0
        return [{q: dict(r[q]) for q in p.todo} for r in results]


def open_job(job_dir: str, identity: dict, p: Plan, topics, docs, depth: int, on_missing: str, chunk_pairs: int,
             overwrite: bool = False):
    from ..jobs import Job
    fp = {"settings": json.loads(json.dumps(dict(identity, depth=depth, on_missing=on_missing,
                                                 chunk_pairs=chunk_pairs))),
          "inputs": p.inputs(topics, docs), "weights": {}}
    return Job(job_dir, fp, "reranking").open(overwrite)


def load_chunk(job, k: int) -> Optional[List[dict]]:
    """A saved chunk's results, or None (absent, or damaged: then dropped and redone)."""
    name = f"chunk_{k:06d}"
    if not job.has(name):
        return None
    try:
        return [{q: [(d, float(s)) for d, s in hits] for q, hits in head.items()}
                for head in json.loads(job.read_chunk(name, ".json"))]
    except (InputError, ValueError, TypeError):
        job.drop(name)
        return None


class FunctionReranker(Reranker):
    """A reranker from a plain function ``fn(query, doc) -> float`` (tests, baselines)."""

    def __init__(self, fn: Callable[[str, Doc], float], depth: int = 200, name: str = "function"):
        self.fn, self.depth, self.name = fn, depth, name

    def score_pairs(self, queries, docs, progress=None):
        out = [float(self.fn(q, as_doc(d))) for q, d in zip(queries, docs)]
        if progress is not None:
            progress.update(len(out))
        return out


def rerank_job(make_reranker: Callable[[], Reranker], identity: dict, topics: Mapping[str, str], run: Run,
               docs: Mapping[str, Any], depth: int, outputs: Sequence[str], tags: Sequence[str], heads: int = 1,
               on_missing: str = "drop", overwrite: bool = False, progress: bool = True,
               chunk_pairs: int = 1024) -> Optional[RerankStats]:
    """The resumable, idempotent run reranking of the CLIs. The job lives in ``OUTPUTS[0].job``; a complete job whose
    outputs are intact is reported and skipped (None); ``make_reranker`` (loading the model) is called only when
    something is left to score; the outputs are written (atomically) once every chunk is done."""
    p = plan(topics, run, docs, depth, on_missing, chunk_pairs)
    with open_job(outputs[0] + ".job", identity, p, topics, docs, depth, on_missing, chunk_pairs, overwrite) as job:
        done = job.complete
        if done and not overwrite and done.get("tags") == list(tags) and \
                all(os.path.isfile(o) and sha256_file(o) == done.get("files", {}).get(o) for o in outputs):
            log(f"already complete: {', '.join(outputs)} (same model, settings and inputs; --overwrite reranks again)")
            return None
        if len(job.chunks()) < len(p.chunks):
            reranker = make_reranker()
            if reranker.heads != heads:
                raise ValueError(f"the reranker has {reranker.heads} score lists for {heads} outputs")
        else:  # every chunk is saved: the outputs are written without the model
            reranker = Reranker()
            reranker.heads = heads
        runs = reranker._score_plan(p, topics, docs, job, progress)
        for out, r, tag in zip(outputs, runs, tags):
            write_run(r, out, tag=tag)
        job.set_complete(files={o: sha256_file(o) for o in outputs}, tags=list(tags))
    return p.stats
