"""Dense retrieval effectiveness of a (trained) RepLLaMA-style encoder on a BEIR test set: encode the whole corpus
with :class:`repllama_pyserini.encoder.RepLLaMAEncoder`, exact inner-product search, evaluate with
:mod:`repllama_pyserini.eval` (Pyserini 2CR conventions: nDCG@10, R@100, R@1000; a hit whose docid equals the
query id is dropped, as Pyserini's ``--remove-query``).

Corpus embeddings are written in chunks under ``--work`` and reused, so a long CPU run that is killed resumes
where it stopped (a chunk is only kept once complete; settings are checked)::

    python -m repllama_pyserini.train.dense_eval --model out/repllama_preset.yaml --dataset scifact \\
        --passage-max-length 64 --work runs/eval-trained --output runs/eval-trained/run.trec
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..io import InputError, Run, atomic_write, iter_corpus, run_cli, write_run
from ..models import checkpoint_identity

META = "embeddings.json"


def encode_corpus(encoder, corpus: str, work: Optional[str] = None, chunk: int = 256,
                  progress: bool = True) -> Tuple[List[str], np.ndarray]:
    """``(docids, embeddings)`` of every document of ``corpus``; chunks cached under ``work`` when given."""
    from tqdm import tqdm
    docs = list(iter_corpus(corpus))
    docids = [d for d, _, _ in docs]
    p = encoder.preset
    settings = {"corpus": os.path.abspath(corpus), "documents": len(docs), **checkpoint_identity(p.model, p.base_model),
                "passage_max_length": p.passage_max_length, "passage_prefix": p.passage_prefix,
                "pooling": p.pooling, "normalize": p.normalize, "chunk": chunk}
    if work:
        os.makedirs(work, exist_ok=True)
        meta = os.path.join(work, META)
        if os.path.isfile(meta):
            with open(meta) as f:
                old = json.load(f)
            legacy = "model_weights" not in old and old.get("model") in (p.model, settings["model"]) and \
                {k: v for k, v in old.items() if k != "model"} == \
                {k: v for k, v in settings.items() if k in old and k != "model"}  # made before fingerprints
            if old != settings and not legacy:
                raise InputError(f"{work} holds embeddings made with other settings; use another --work")
        else:
            with atomic_write(meta) as f:
                json.dump(settings, f, indent=1)
    parts = []
    bar = tqdm(total=len(docs), desc="encoding corpus", unit="doc", disable=not progress, dynamic_ncols=True)
    for k, start in enumerate(range(0, len(docs), chunk)):
        path = os.path.join(work, f"chunk-{k:05d}.npy") if work else None
        batch = docs[start:start + chunk]
        if path and os.path.isfile(path):
            emb = np.load(path)
        else:
            emb = encoder.encode_passages([t for _, _, t in batch], [ti for _, ti, _ in batch])
            if path:
                with atomic_write(path, "wb", encoding=None) as f:
                    np.save(f, emb)
        parts.append(emb)
        bar.update(len(batch))
    bar.close()
    return docids, np.concatenate(parts, axis=0)


def search(q_emb: np.ndarray, qids: List[str], p_emb: np.ndarray, docids: List[str], hits: int = 1000,
           remove_query: bool = True) -> Run:
    """Exact inner-product top-``hits`` per query."""
    run: Run = {}
    k = min(hits + 1, len(docids))
    for start in range(0, len(qids), 256):
        s = q_emb[start:start + 256] @ p_emb.T
        top = np.argpartition(-s, k - 1, axis=1)[:, :k]
        for row, qid in enumerate(qids[start:start + 256]):
            cand = {docids[j]: float(s[row, j]) for j in top[row] if not (remove_query and docids[j] == qid)}
            run[qid] = dict(sorted(cand.items(), key=lambda kv: (-kv[1], kv[0]))[:hits])
    return run


def evaluate_encoder(model: str, dataset: str = "scifact", data: Optional[str] = None, work: Optional[str] = None,
                     query_max_length: Optional[int] = None, passage_max_length: Optional[int] = None,
                     batch_size: int = 16, output: Optional[str] = None, progress: bool = True) -> Dict[str, float]:
    from ..data import beir_dataset
    from ..encoder import RepLLaMAEncoder
    from ..eval import evaluate
    from ..io import read_qrels
    ds = beir_dataset(dataset, data)
    t0 = time.time()
    enc = RepLLaMAEncoder(model, query_max_length=query_max_length, passage_max_length=passage_max_length,
                          batch_size=batch_size, device="cpu" if not _cuda() else None)
    topics = ds.topics()
    qids = list(topics)
    q_emb = enc.encode_queries([topics[q] for q in qids])
    docids, p_emb = encode_corpus(enc, ds.corpus, work, progress=progress)
    run = search(q_emb, qids, p_emb, docids)
    if output:
        write_run(run, output, tag="repllama-pyserini-dense")
    scores = evaluate(run, read_qrels(ds.qrels), preset="beir")
    scores = {k: round(float(v), 4) for k, v in scores.items()}
    scores["seconds"] = round(time.time() - t0, 1)
    scores["documents"] = len(docids)
    scores["queries"] = len(qids)
    return scores


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m repllama_pyserini.train.dense_eval", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="preset YAML / name, adapter dir or full model dir")
    ap.add_argument("--dataset", default="scifact", help="BEIR name (found in --data) or BEIR folder")
    ap.add_argument("--data", default=None)
    ap.add_argument("--work", default=None, help="cache of corpus embedding chunks (resumable)")
    ap.add_argument("--query-max-length", type=int, default=None)
    ap.add_argument("--passage-max-length", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--output", default=None, help="TREC run to write")
    ap.add_argument("--json", default=None, help="write the scores here")
    args = ap.parse_args(argv)
    scores = evaluate_encoder(args.model, args.dataset, args.data, args.work, args.query_max_length,
                              args.passage_max_length, args.batch_size, args.output)
    print(json.dumps(scores))
    if args.json:
        with atomic_write(args.json) as f:
            json.dump(scores, f, indent=1)
    sys.stdout.flush()


if __name__ == "__main__":
    run_cli(main)
