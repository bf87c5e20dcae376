"""Hard negatives with Pyserini: training queries + qrels + a corpus in, Tevatron training JSONL out.

For every training query, the top ``--depth`` of Pyserini BM25 (the corpus indexed once with Pyserini's indexer)
and/or of other first-stage runs (``--run``) are merged round-robin by rank; the positives (judged
``>= --min-relevance``), the query's own id and the top ``--skip-top`` of each list are dropped, and
``--num-negatives`` are sampled, seeded by ``(--seed, query id)``: the output is identical from run to run. Queries
come from ``--topics`` + ``--qrels`` or from a Tevatron file without negatives (``--input``); a query without a
usable positive is skipped and counted (``--strict``: an error). Details and the paper's recipes:
``docs/training-cpu.md``::

    python -m repllama_pyserini.train.negatives --corpus ../shared/ir-data/beir/scifact/corpus.jsonl.gz \\
        --input ../shared/ir-data/beir/scifact/train.tevatron.jsonl.gz --depth 200 --num-negatives 30 \\
        --output runs/scifact-train.bm25-negatives.jsonl.gz
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
import random
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from ..cli import InputError, run_cli
from ..formats import Qrels, Run, load_docs, read_qrels, read_run, read_topics, sorted_hits
from ..formats.tevatron import Group, Passage, read_groups, write_groups

logger = logging.getLogger(__name__)


@dataclass
class MiningStats:
    queries: int = 0
    written: int = 0
    skipped_no_topic: List[str] = field(default_factory=list)
    skipped_no_positive: List[str] = field(default_factory=list)
    skipped_positive_not_in_corpus: List[str] = field(default_factory=list)
    fewer_negatives: int = 0
    negatives: int = 0
    negatives_not_in_corpus: int = 0

    def summary(self) -> str:
        s = f"{self.written} of {self.queries} queries written, {self.negatives} negatives"
        if self.negatives_not_in_corpus:
            s += f"; {self.negatives_not_in_corpus} candidates of the runs are absent from the corpus (dropped)"
        if self.fewer_negatives:
            s += f"; {self.fewer_negatives} queries got fewer negatives than asked (small candidate pool)"
        if self.skipped_no_topic:
            s += f"; {len(self.skipped_no_topic)} judged queries without topic text skipped " \
                 f"(e.g. {self.skipped_no_topic[0]!r})"
        if self.skipped_no_positive:
            s += f"; {len(self.skipped_no_positive)} skipped without a judged positive " \
                 f"(e.g. {self.skipped_no_positive[0]!r})"
        if self.skipped_positive_not_in_corpus:
            s += f"; {len(self.skipped_positive_not_in_corpus)} skipped: positives absent from the corpus " \
                 f"(e.g. {self.skipped_positive_not_in_corpus[0]!r})"
        return s


def merge_candidates(runs: Sequence[Run], qid: str, depth: int, skip_top: int = 0) -> List[str]:
    """Top ``depth`` (after skipping ``skip_top``) of each run for ``qid``, merged round-robin by rank, deduplicated."""
    lists = [[d for d, _ in sorted_hits(r.get(qid, {}))][skip_top:skip_top + depth] for r in runs]
    by_rank = (x[rank] for rank in range(max((len(x) for x in lists), default=0)) for x in lists if rank < len(x))
    return list(dict.fromkeys(by_rank))


def sample_negatives(pool: Sequence[str], n: int, seed: int, qid: str) -> List[str]:
    """``n`` docids drawn without replacement from ``pool`` (all of it when smaller), kept in pool (rank) order."""
    if len(pool) <= n:
        return list(pool)
    rng = random.Random(f"{seed}|{qid}")
    keep = set(rng.sample(range(len(pool)), n))
    return [d for i, d in enumerate(pool) if i in keep]


def default_index_dir(corpus: str, fields: str) -> str:
    from ..formats.collections import cache_dir
    key = hashlib.sha1(os.path.abspath(corpus).encode()).hexdigest()[:10]
    name = os.path.basename(os.path.normpath(corpus)).split(".")[0] or "corpus"
    return os.path.join(cache_dir(), "indexes", f"{name}-{key}.{fields}")


def mine(corpus: str, output: str, topics: Optional[Dict[str, str]] = None, qrels: Optional[Qrels] = None,
         input_positives: Optional[Dict[str, List[Passage]]] = None, runs: Sequence[Run] = (), bm25: bool = True,
         index: Optional[str] = None, fields: str = "flat", depth: int = 200, skip_top: int = 0,
         num_negatives: int = 30, seed: int = 42, min_relevance: int = 1, strict: bool = False,
         threads: int = 2) -> MiningStats:
    """Mine negatives and write Tevatron JSONL to ``output``; returns counts (see the module docstring)."""
    if depth < 1 or num_negatives < 1:
        raise InputError("--depth and --num-negatives must be >= 1")
    if not bm25 and not runs:
        raise InputError("nothing to mine from: give --run RUN or leave BM25 on")
    qrels = qrels or {}
    if input_positives is None:
        if not qrels:
            raise InputError("give --qrels (with --topics) or --input (Tevatron file with positives)")
        queries = {q: topics[q] for q in qrels if q in topics}
        missing = [q for q in qrels if q not in topics]
    else:
        queries, missing = dict(topics), []
    stats = MiningStats(queries=len(queries), skipped_no_topic=missing)

    all_runs = list(runs)
    if bm25:
        from .. import bm25 as bm25_mod
        cached = index is None  # the cache's index is rebuilt when the corpus changed; a given one is checked
        index = index or default_index_dir(corpus, fields)
        bm25_mod.build_index(corpus, index, fields, threads=threads, stale="rebuild" if cached else "error")
        all_runs.insert(0, bm25_mod.search(index, queries, hits=depth + skip_top, fields=fields, threads=threads))

    def judged_pos(qid: str) -> List[str]:
        return [d for d, r in sorted(qrels.get(qid, {}).items()) if r >= min_relevance]

    pools: Dict[str, List[str]] = {}
    needed = set()
    for qid in queries:
        exclude = set(judged_pos(qid)) | {p.docid for p in (input_positives or {}).get(qid, [])}
        pool = [d for d in merge_candidates(all_runs, qid, depth, skip_top) if d not in exclude and d != qid]
        pools[qid] = sample_negatives(pool, num_negatives, seed, qid)
        needed.update(pools[qid])
        if input_positives is None:
            needed.update(judged_pos(qid))
    logger.info("fetching %d documents from %s", len(needed), corpus)
    docs = load_docs(corpus, needed, progress=False)

    def passage(docid: str) -> Passage:
        return Passage(docid, docs[docid].title, docs[docid].text)

    groups = []
    for qid, query in queries.items():
        if input_positives is not None:
            pos = list(input_positives.get(qid, []))
            if not pos:
                stats.skipped_no_positive.append(qid)
                continue
        else:
            ids = judged_pos(qid)
            if not ids:
                stats.skipped_no_positive.append(qid)
                continue
            found = [d for d in ids if d in docs]
            if not found:
                stats.skipped_positive_not_in_corpus.append(qid)
                continue
            pos = [passage(d) for d in found]
        negs = [passage(d) for d in pools[qid] if d in docs]
        stats.negatives_not_in_corpus += len(pools[qid]) - len(negs)
        stats.fewer_negatives += len(negs) < num_negatives
        stats.negatives += len(negs)
        groups.append(Group(qid, query, pos, negs))
        stats.written += 1
    if strict and (stats.skipped_no_topic or stats.skipped_no_positive or stats.skipped_positive_not_in_corpus):
        raise InputError(f"--strict: {stats.summary()}")
    if not groups:
        raise InputError(f"no training record written: {stats.summary()}")
    write_groups(output, groups)
    return stats


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m repllama_pyserini.train.negatives", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True, help="any corpus layout (BEIR folder, JSONL, JsonCollection, MS MARCO TSV; .gz)")
    ap.add_argument("--topics", help="qid<TAB>query (.tsv/.txt[.gz]) or queries.jsonl")
    ap.add_argument("--qrels", help="TREC qrels of the training queries")
    ap.add_argument("--input", help="Tevatron JSONL with queries and positives (negatives empty)")
    ap.add_argument("--output", required=True, help="Tevatron training JSONL (.gz to compress)")
    ap.add_argument("--run", action="append", default=[], help="extra first-stage TREC run (repeatable)")
    ap.add_argument("--no-bm25", action="store_true", help="only the --run candidates")
    ap.add_argument("--index", help="BM25 index dir (built with Pyserini when missing; default: in the cache)")
    ap.add_argument("--fields", choices=("flat", "multifield"), default="flat")
    ap.add_argument("--depth", type=int, default=200, help="candidates taken from each retriever (paper: 200)")
    ap.add_argument("--skip-top", type=int, default=0, help="ignore the top k of each retriever")
    ap.add_argument("--num-negatives", type=int, default=30, help="negatives kept per query")
    ap.add_argument("--min-relevance", type=int, default=1, help="judgments >= this are positives")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--strict", action="store_true", help="fail on queries without a usable positive")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if a.input and a.topics:
        raise InputError("give either --input or --topics/--qrels")
    if a.input:
        groups = read_groups(a.input, require_positive=False)
        topics, positives = {g.query_id: g.query for g in groups}, {g.query_id: g.positives for g in groups}
    else:
        if not (a.topics and a.qrels):
            raise InputError("give --topics and --qrels, or --input")
        topics, positives = read_topics(a.topics), None
    qrels = read_qrels(a.qrels) if a.qrels else None
    runs = [read_run(r) for r in a.run]
    stats = mine(a.corpus, a.output, topics, qrels, positives, runs, not a.no_bm25, a.index, a.fields, a.depth,
                 a.skip_top, a.num_negatives, a.seed, a.min_relevance, a.strict, a.threads)
    print(f"wrote {a.output}: {stats.summary()}")


if __name__ == "__main__":
    run_cli(main)
