"""RepLLaMA dense retrieval from the command line (``CORPUS``: any corpus layout; ``MODEL``: a preset, hub id or
local checkpoint)::

    python -m repllama_pyserini.dense encode --corpus CORPUS --encoder MODEL --output INDEX_DIR [--shard-id I ...]
    python -m repllama_pyserini.dense merge --output INDEX_DIR [--index-type Flat|SQfp16|HNSW32|IVF4096,PQ64]
    python -m repllama_pyserini.dense evaluate --encoder MODEL --dataset scifact [--work DIR]
    python -m pyserini.search.faiss --encoder-class repllama --encoder MODEL --index INDEX_DIR --topics ... --output ...

Pyserini's searcher (through the plugin) also searches without merging and without loading the vectors, with the
merged index's exact hits: ``--index OUTPUT.job`` (the shards of ``encode --no-merge``), ``--index DIR`` (a directory
of Flat index dirs, in natural order), or ``REPLLAMA_PYSERINI_MMAP=1`` with a Flat ``--index INDEX_DIR``
(memory-mapped window by window: see ``docs/benchmark-shards.md``).
"""
from __future__ import annotations

import argparse
import dataclasses

from ..cli import add_job_args, add_model_args, positive, run_cli


def _index_args(p) -> None:
    g = p.add_argument_group("index")
    g.add_argument("--index-type", default="Flat", help="Faiss factory string or flat|fp16|hnsw|ivfpq (inner product)")
    g.add_argument("--train-size", type=int, default=65536, help="vectors sampled to train IVF/PQ/SQ indexes")
    g.add_argument("--nprobe", type=int, help="IVF lists searched (stored in the index)")
    g.add_argument("--ef-search", type=int, help="HNSW efSearch (stored in the index)")
    g.add_argument("--keep-chunks", action="store_true", help="keep the encoded chunks after the merge")
    g.add_argument("--work-dir", help="where the resumable chunks go (default OUTPUT.job)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m repllama_pyserini.dense", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("encode", help="encode a corpus into a Faiss index (resumable, shardable)")
    e.add_argument("--corpus", required=True)
    e.add_argument("--encoder", required=True, help="preset name, preset YAML, hub id or local dir")
    e.add_argument("--output", required=True, help="index directory to write (index, docid)")
    e.add_argument("--max-length", type=int, help="passage tokens (default: the preset's)")
    e.add_argument("--prefix", help="passage prefix (default: the preset's, 'passage: ')")
    e.add_argument("--shard-id", type=int, help="0-based (default: $RANK or 0)")
    e.add_argument("--shard-num", type=int, help="number of shards (default: $WORLD_SIZE or 1)")
    e.add_argument("--chunk-size", type=int, default=2048, help="documents per resumable chunk (default 2048)")
    e.add_argument("--on-empty", choices=("encode", "skip", "error"), default="encode",
                   help="documents without text: encode the prefix alone (default), skip or stop")
    e.add_argument("--max-docs", type=int, help="encode only the first N documents (smoke tests)")
    e.add_argument("--no-merge", dest="merge", action="store_false",
                   help="leave the shards for a later merge (or search them in place: --index OUTPUT.job)")
    add_model_args(e)
    add_job_args(e)
    _index_args(e)
    m = sub.add_parser("merge", help="merge finished shards into OUTPUT (index, docid)")
    m.add_argument("--output", required=True)
    m.add_argument("--overwrite", action="store_true", help="replace an existing index")
    _index_args(m)
    v = sub.add_parser("evaluate", help="encode a BEIR corpus, search it with Pyserini, print nDCG@10 / R@100 / R@1000")
    v.add_argument("--encoder", required=True)
    v.add_argument("--dataset", default="scifact", help="BEIR name (under --data) or a BEIR folder")
    v.add_argument("--data")
    v.add_argument("--work", help="index and run go here (default ./runs/dense-eval/NAME)")
    v.add_argument("--query-max-length", type=int)
    v.add_argument("--max-length", type=int, help="passage tokens (default: the preset's)")
    v.add_argument("--output", help="the TREC run (default WORK/run.trec)")
    v.add_argument("--json", help="also write the scores here")
    add_model_args(v)
    add_job_args(v)
    return p


def main(argv=None) -> None:
    args = _parser().parse_args(argv)
    for n in ("batch_size", "max_batch_tokens", "max_length", "chunk_size", "max_docs", "shard_num", "train_size"):
        positive(n, getattr(args, n, None))
    if args.cmd == "evaluate":
        import json
        from ..formats.files import write_json
        from .evaluate import evaluate_encoder
        scores = evaluate_encoder(args.encoder, args.dataset, args.data, args.work, args.query_max_length,
                                  args.max_length, args.batch_size, args.output, overwrite=args.overwrite,
                                  progress=args.progress, dtype=args.dtype, device=args.device,
                                  base_model=args.base_model, tokenizer_name=args.tokenizer,
                                  attn_implementation=args.attn_implementation,
                                  max_batch_tokens=args.max_batch_tokens)
        print(json.dumps(scores))
        if args.json:
            write_json(args.json, scores)
        return
    from .encode import EncodeSettings, encode_corpus, merge
    s = EncodeSettings(**{f.name: getattr(args, f.name) for f in dataclasses.fields(EncodeSettings)
                          if hasattr(args, f.name)})
    if args.cmd == "merge":
        merge(s, by_hand=True)
        return
    from ..presets import resolve
    from .encoder import RepLLaMAEncoder
    overrides = dict(passage_max_length=args.max_length, passage_prefix=args.prefix, base_model=args.base_model,
                     tokenizer=args.tokenizer)
    preset, _ = resolve(args.encoder, "encoder", **overrides)

    def make_encoder():
        return RepLLaMAEncoder(args.encoder, base_model=args.base_model, tokenizer_name=args.tokenizer,
                               device=args.device, dtype=args.dtype, attn_implementation=args.attn_implementation,
                               passage_prefix=args.prefix, passage_max_length=args.max_length,
                               batch_size=args.batch_size, max_batch_tokens=args.max_batch_tokens)

    encode_corpus(s, make_encoder, preset, args.dtype, args.device)


if __name__ == "__main__":
    run_cli(main)
