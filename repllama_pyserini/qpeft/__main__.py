"""Q-PEFT / UPR command line (``docs/qpeft.md``).

    # train a module (Tevatron JSONL or DPR JSON; BM25 negatives mined with Pyserini when the file has none)
    python -m repllama_pyserini.qpeft train --model LLM --variant R --train train.jsonl[.gz] \\
        --corpus CORPUS [--bm25-index DIR] [--qrels QRELS] --output runs/qpeft-r [--max-minutes 10] [--overwrite]
    # rerank a TREC run / rank_llm candidates (the RankLLaMA CLI's inputs; resumable); several modules in one pass
    python -m repllama_pyserini.qpeft rerank --module runs/qpeft-r [...] --run RUN --topics T --corpus C --output OUT
    # rerank DPR retriever results (JSON out, HR@k / Recall@k before and after)
    python -m repllama_pyserini.qpeft rerank-dpr --module runs/qpeft-r --input nq-test.json --output out.json

Evaluation, HR@k / Recall@k included: ``python -m repllama_pyserini.eval --qa``.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import time
from typing import List, Optional

from ..cli import InputError, add_job_args, log, positive, run_cli
from ..formats import read_qrels
from ..formats.files import atomic_write


def _model_args(p) -> None:
    p.add_argument("--model", help="frozen causal LM (dir or hub id; a LoRA adapter is merged into its base)")
    p.add_argument("--base-model", help="base of a LoRA adapter (default: the adapter's config)")
    p.add_argument("--tokenizer", help="default: the model's")
    p.add_argument("--dtype", default=None, help="auto (fp32 on CPU, bf16 on GPU), float32, bfloat16, float16")
    p.add_argument("--device", default=None)
    p.add_argument("--max-doc-tokens", type=int, default=None, help="document tokens kept (default 256)")
    p.add_argument("--max-query-tokens", type=int, default=None, help="query tokens kept (default 64)")
    p.add_argument("--batch-size", type=int, default=16, help="documents per forward pass")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def _rerank_args(p) -> None:
    _model_args(p)
    p.add_argument("--module", nargs="+", help="Q-PEFT module dir(s) or training output dir(s)")
    p.add_argument("--prompt", choices=("upr", "qpeft"), default=None, help="default: qpeft with a module, else upr")
    p.add_argument("--depth", type=int, default=100)
    p.add_argument("--sample-queries", type=int, default=None, help="rerank a seeded sample of N queries")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--padding-side", choices=("left", "right"), default="right")


def _set_threads(args) -> None:
    if getattr(args, "threads", None):
        import torch
        torch.set_num_threads(args.threads)


def cmd_train(args) -> None:
    from ..models import load_model, load_tokenizer
    from ..formats.dpr import read_training
    from .data import add_bm25_negatives, split_dev
    from .train import TrainConfig, completed_run, train
    _set_threads(args)
    if not args.model:
        raise InputError("pass --model")
    examples = read_training(args.train)
    if args.max_train_queries and len(examples) > args.max_train_queries:
        examples = random.Random(args.seed).sample(examples, args.max_train_queries)
    if args.dev:
        train_ex, dev_ex = examples, read_training(args.dev)
    else:
        train_ex, dev_ex = split_dev(examples, args.dev_fraction, args.seed, args.max_dev)
    if args.max_dev is not None:
        dev_ex = dev_ex[:args.max_dev]
    missing = [e for e in train_ex + dev_ex if not e.negatives]
    if missing:
        if not args.corpus:
            raise InputError(f"{len(missing)} examples have no hard negatives: pass --corpus (and optionally "
                             f"--bm25-index) to mine BM25 negatives")
        qrels = read_qrels(args.qrels) if args.qrels else None
        n = add_bm25_negatives(missing, args.corpus, args.bm25_index, depth=args.negatives_depth,
                               n=args.negatives, qrels=qrels, seed=args.seed)
        log(f"mined BM25 negatives for {n}/{len(missing)} examples")
    cfg = TrainConfig(variant=args.variant, k=args.k, max_pairs=args.max_pairs, num_heads=args.heads,
                      dropout=args.dropout, max_doc_tokens=args.max_doc_tokens or 256,
                      max_query_tokens=args.max_query_tokens or 64, batch_size=args.train_batch_size, lr=args.lr,
                      weight_decay=args.weight_decay, lr_scheduler=args.lr_scheduler, warmup_steps=args.warmup_steps,
                      margin=args.margin, in_batch=args.in_batch, hard_negative_pool=args.negatives,
                      epochs=args.epochs, max_steps=args.max_steps, max_minutes=args.max_minutes,
                      eval_every=args.eval_every, patience=args.patience, dev_negatives=args.dev_negatives,
                      seed=args.seed, early_stopping=args.early_stopping,
                      gradient_checkpointing=args.gradient_checkpointing)
    summary = None if args.overwrite else completed_run(args.output, cfg, train_ex, dev_ex, args.model, log)
    if summary is None:  # (a finished run is reported without loading the LLM)
        tok = load_tokenizer(args.tokenizer or args.model)
        lm, _ = load_model(args.model, kind="causal", base_model=args.base_model, dtype=args.dtype,
                           device=args.device, attn_implementation="sdpa", pad_token_id=tok.pad_token_id)
        log(f"training Q-PEFT-{cfg.variant} on {len(train_ex)} queries (dev {len(dev_ex)}) with {args.model}")
        summary = train(lm, tok, train_ex, dev_ex, args.output, cfg, overwrite=args.overwrite,
                        base_model=args.model, log=log, progress=args.progress)
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}))


def _sample_qids(qids: List[str], n: Optional[int], seed: int) -> List[str]:
    if not n or n >= len(qids):
        return qids
    return sorted(random.Random(seed).sample(sorted(qids), n))


def _reranker_args(args, modules) -> dict:
    return dict(model_name_or_path=args.model, module=modules or None, prompt=args.prompt, base_model=args.base_model,
                dtype=args.dtype, device=args.device, max_doc_tokens=args.max_doc_tokens,
                max_query_tokens=args.max_query_tokens, padding_side=args.padding_side)


def _reranker(args, modules):
    from .rerank import QPeftReranker
    return QPeftReranker.from_pretrained(tokenizer=args.tokenizer, depth=args.depth, batch_size=args.batch_size,
                                         **_reranker_args(args, modules))


def cmd_rerank(args) -> None:
    from ..rerank.__main__ import read_inputs
    from ..rerank.base import rerank_job
    from .rerank import QPeftReranker
    _set_threads(args)
    modules = args.module or []
    if len(args.output) != max(1, len(modules)):
        raise InputError(f"give one --output per --module ({len(modules)} modules, {len(args.output)} outputs)")
    topics, run, docs = read_inputs(args, args.depth, progress=False)
    keep = _sample_qids([q for q in run if q in topics], args.sample_queries, args.seed)
    run, topics = {q: run[q] for q in keep}, {q: topics[q] for q in keep}
    identity = QPeftReranker.planned_identity(**_reranker_args(args, modules))
    name = "upr" if not modules else "qpeft"
    tags = [args.tag or (name if len(args.output) == 1 else os.path.basename(o)) for o in args.output]
    t0 = time.perf_counter()
    stats = rerank_job(lambda: _reranker(args, modules), identity, topics, run, docs, args.depth, args.output, tags,
                       heads=max(1, len(modules)), on_missing=args.on_missing, overwrite=args.overwrite,
                       progress=args.progress, chunk_pairs=args.chunk_pairs)
    if stats is not None:
        log(f"wrote {', '.join(args.output)}: {stats.summary()} ({max(1, len(modules))} scorer(s), "
             f"{time.perf_counter() - t0:.1f} s)")


def cmd_rerank_dpr(args) -> None:
    from ..formats.dpr import read_dpr
    from ..eval.qa import qa_metrics
    _set_threads(args)
    questions = read_dpr(args.input)
    if args.sample_queries:
        keep = set(_sample_qids([str(i) for i in range(len(questions))], args.sample_queries, args.seed))
        questions = [q for i, q in enumerate(questions) if str(i) in keep]
    reranker = _reranker(args, args.module or [])
    before, after, records = [], [], []
    from tqdm import tqdm
    for ex in tqdm(questions, desc="rerank", unit="q", disable=not args.progress):
        ctxs = list(ex.ctxs)
        top, rest = ctxs[:args.depth], ctxs[args.depth:]
        scores = reranker.score_pairs([ex.query] * len(top), [(c.title, c.text) for c in top]) if top else []
        order = sorted(range(len(top)), key=lambda i: (-scores[i], i))
        new = [top[i] for i in order] + rest
        before.append([bool(c.has_answer) for c in ctxs])
        after.append([bool(c.has_answer) for c in new])
        out_ctxs = []
        for rank, c in enumerate(new):
            rec = {"id": c.docid, "title": c.title, "text": c.text, "has_answer": c.has_answer,
                   "first_stage_score": c.score}
            if rank < len(top):
                rec["score"] = float(scores[order[rank]])
            out_ctxs.append(rec)
        records.append({"question": ex.query, "answers": ex.answers, "ctxs": out_ctxs})
    with atomic_write(args.output) as f:
        json.dump(records, f, ensure_ascii=False, indent=1)
    report = {"first_stage": qa_metrics(before, args.ks), "reranked": qa_metrics(after, args.ks),
              "questions": len(records)}
    print(json.dumps(report, indent=1))


def main(argv=None) -> None:
    from ..rerank.__main__ import add_input_args
    p = argparse.ArgumentParser(prog="python -m repllama_pyserini.qpeft", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="train a Q-PEFT module (R or A) against a frozen LLM")
    _model_args(t)
    t.add_argument("--variant", choices=("R", "A"), default="R", type=str.upper)
    t.add_argument("--train", required=True, help="Tevatron JSONL(.gz) or DPR JSON")
    t.add_argument("--dev", help="dev file (same formats); default: --dev-fraction of --train")
    t.add_argument("--dev-fraction", type=float, default=0.1)
    t.add_argument("--max-dev", type=int, default=None, help="cap on dev queries")
    t.add_argument("--max-train-queries", type=int, default=None, help="seeded subsample of the training file")
    t.add_argument("--corpus", help="corpus for BM25 negatives (BEIR folder / JSONL / JsonCollection)")
    t.add_argument("--bm25-index", help="Lucene index of --corpus (default: built once in the cache, as "
                                               "repllama_pyserini.train.negatives does)")
    t.add_argument("--qrels", help="judged-relevant documents are never used as negatives")
    t.add_argument("--negatives", type=int, default=30,
                   help="BM25 negatives per query, sampled from the top --negatives-depth (the pool of d-)")
    t.add_argument("--negatives-depth", type=int, default=100)
    t.add_argument("--output", required=True, help="rerunning the same command continues the run there (from its "
                                                    "last checkpoint) or reports it finished")
    t.add_argument("--k", type=int, default=10, help="R: hint tokens")
    t.add_argument("--max-pairs", type=int, default=1000)
    t.add_argument("--heads", type=int, default=2)
    t.add_argument("--dropout", type=float, default=0.1)
    t.add_argument("--train-batch-size", type=int, default=4, help="queries per step")
    t.add_argument("--lr", type=float, default=3e-2)
    t.add_argument("--weight-decay", type=float, default=0.0)
    t.add_argument("--lr-scheduler", choices=("constant", "linear", "cosine"), default="constant")
    t.add_argument("--warmup-steps", type=int, default=0)
    t.add_argument("--margin", type=float, default=0.5)
    t.add_argument("--in-batch", choices=("all", "positives", "none"), default="all")
    t.add_argument("--epochs", type=float, default=1.0)
    t.add_argument("--max-steps", type=int, default=None)
    t.add_argument("--max-minutes", type=float, default=None,
                   help="stop (evaluate and save) after this much training time; rerunning continues")
    t.add_argument("--eval-every", type=int, default=50, help="dev evaluation and checkpoint interval (steps)")
    t.add_argument("--patience", type=int, default=3)
    t.add_argument("--dev-negatives", type=int, default=9, help="hard negatives per dev query")
    t.add_argument("--early-stopping", choices=("loss", "mrr"), default="loss",
                   help="dev criterion: the training loss (NLL + hinge) on dev, or the MRR of the positive")
    t.add_argument("--gradient-checkpointing", action="store_true")
    t.add_argument("--seed", type=int, default=42)
    t.add_argument("--overwrite", action="store_true",
                   help="start afresh: the run in OUTPUT (checkpoints, modules, log, summary) is removed first")
    t.add_argument("--no-progress", dest="progress", action="store_false", help="no line per log record")
    t.set_defaults(fn=cmd_train)

    r = sub.add_parser("rerank", help="rerank a TREC run or rank_llm candidates (UPR or Q-PEFT)")
    _rerank_args(r)
    add_input_args(r)
    r.add_argument("--output", nargs="+", required=True, help="one reranked run per module")
    r.add_argument("--tag")
    r.add_argument("--chunk-pairs", type=int, default=1024, help="pairs per saved chunk (default 1024)")
    add_job_args(r)
    r.set_defaults(fn=cmd_rerank)

    d = sub.add_parser("rerank-dpr", help="rerank DPR retriever results; HR@k / Recall@k before and after")
    _rerank_args(d)
    d.add_argument("--input", required=True)
    d.add_argument("--output", required=True)
    d.add_argument("--ks", type=int, nargs="+", default=[1, 5, 10, 20, 50, 100])
    d.add_argument("--no-progress", dest="progress", action="store_false")
    d.set_defaults(fn=cmd_rerank_dpr)

    args = p.parse_args(argv)
    for n in ("depth", "batch_size", "max_doc_tokens", "max_query_tokens", "sample_queries"):
        positive(n, getattr(args, n, None))
    args.fn(args)


if __name__ == "__main__":
    run_cli(main)
