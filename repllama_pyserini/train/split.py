"""Carve a dev split out of training data, so that every choice (checkpoints, fusion weights, depths) is made on
training queries and never on the test set::

    python -m repllama_pyserini.train.split --input train.tevatron.jsonl.gz --corpus CORPUS --dev 100 --seed 13 \\
        --output runs/scifact-split

writes ``OUTPUT/train.jsonl.gz`` (the other queries, Tevatron JSONL) and ``OUTPUT/dev/``, a BEIR folder
(``queries.jsonl``, ``qrels/test.tsv`` from the dev queries' positives, ``corpus.jsonl[.gz]`` a link to CORPUS), which
``dense evaluate --dataset OUTPUT/dev`` and the pipeline take as they are, plus ``dev.topics.tsv`` / ``dev.qrels.txt``
for the commands that take TREC files. The split is a seeded random sample of query ids: the same on every run.
"""
from __future__ import annotations

import argparse
import json
import os
import random

from ..cli import InputError, run_cli
from ..formats.files import atomic_write, write_lines
from ..formats.tevatron import read_groups, write_groups


def split(groups, dev: int, seed: int):
    if not 0 < dev < len(groups):
        raise InputError(f"--dev must be between 1 and {len(groups) - 1} (there are {len(groups)} queries)")
    chosen = set(random.Random(seed).sample(sorted(g.query_id for g in groups), dev))
    return [g for g in groups if g.query_id not in chosen], [g for g in groups if g.query_id in chosen]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m repllama_pyserini.train.split", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", required=True, help="Tevatron JSONL with queries and positives")
    ap.add_argument("--corpus", required=True, help="the corpus file the queries search (linked into OUTPUT/dev)")
    ap.add_argument("--dev", type=int, required=True, help="queries in the dev split")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--output", required=True)
    a = ap.parse_args(argv)
    if not os.path.isfile(a.corpus):
        raise InputError(f"corpus not found (a corpus file is linked into the dev folder): {a.corpus}")
    train, dev = split(read_groups(a.input), a.dev, a.seed)
    out = os.path.abspath(a.output)
    write_groups(os.path.join(out, "train.jsonl.gz"), train)
    d = os.path.join(out, "dev")
    write_lines(os.path.join(d, "queries.jsonl"), (json.dumps({"_id": g.query_id, "text": g.query},
                                                              ensure_ascii=False) for g in dev))
    write_lines(os.path.join(d, "qrels", "test.tsv"), ["query-id\tcorpus-id\tscore"] + [
        f"{g.query_id}\t{p.docid}\t1" for g in dev for p in g.positives])
    write_lines(os.path.join(out, "dev.topics.tsv"), (f"{g.query_id}\t{' '.join(g.query.split())}" for g in dev))
    write_lines(os.path.join(out, "dev.qrels.txt"), (f"{g.query_id} 0 {p.docid} 1" for g in dev for p in g.positives))
    link = os.path.join(d, "corpus.jsonl.gz" if a.corpus.endswith(".gz") else "corpus.jsonl")
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(os.path.abspath(a.corpus), link)
    with atomic_write(os.path.join(out, "split.json")) as f:
        json.dump({"input": os.path.abspath(a.input), "seed": a.seed, "train": len(train), "dev": len(dev)}, f)
    print(f"wrote {out}: {len(train)} training queries, {len(dev)} dev queries")


if __name__ == "__main__":
    run_cli(main)
