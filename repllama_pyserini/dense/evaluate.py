"""Dense retrieval effectiveness of a (trained) RepLLaMA encoder on a BEIR test set, with the toolkit's own parts:
the corpus encoded by the resumable job (:mod:`.encode`), searched by Pyserini's ``FaissSearcher`` (top-1000, a hit
whose docid is the query id dropped, as Pyserini's ``--remove-query``), evaluated with Pyserini's 2CR conventions
(nDCG@10, R@100, R@1000)::

    python -m repllama_pyserini.dense evaluate --encoder out/my-retriever --dataset scifact --work runs/eval-mine
"""
from __future__ import annotations

import functools
import os
import time
from typing import Dict, Optional

from ..formats import beir_dataset, write_run
from ..templates import BATCH_SIZE


def evaluate_encoder(encoder: str, dataset: str = "scifact", data: Optional[str] = None, work: Optional[str] = None,
                     query_max_length: Optional[int] = None, passage_max_length: Optional[int] = None,
                     batch_size: int = BATCH_SIZE, output: Optional[str] = None, hits: int = 1000, overwrite: bool = False,
                     progress: bool = True, dtype: str = "auto", device: str = "auto",
                     **loading) -> Dict[str, float]:
    """``loading``: more :class:`RepLLaMAEncoder` keywords (``base_model``, ``tokenizer_name``,
    ``attn_implementation``, ``max_batch_tokens``)."""
    from pyserini.search.faiss import FaissSearcher
    from ..eval import evaluate
    from ..presets import resolve
    from .encode import EncodeSettings, encode_corpus
    from .encoder import RepLLaMAEncoder
    from .pyserini_encoders import RepLLaMAQueryEncoder
    ds = beir_dataset(dataset, data)
    work = os.path.abspath(work or os.path.join("runs", "dense-eval", ds.name))
    t0 = time.time()
    settings = dict(query_max_length=query_max_length, passage_max_length=passage_max_length,
                    base_model=loading.pop("base_model", None), tokenizer_name=loading.pop("tokenizer_name", None))

    @functools.cache
    def make_encoder():  # loaded once, and only when needed
        return RepLLaMAEncoder(encoder, batch_size=batch_size, dtype=dtype, device=device, **settings, **loading)

    preset, _ = resolve(encoder, "encoder", query_max_length=query_max_length, passage_max_length=passage_max_length,
                        base_model=settings["base_model"], tokenizer=settings["tokenizer_name"])
    index = os.path.join(work, "index")
    encode_corpus(EncodeSettings(output=index, corpus=ds.corpus, overwrite=overwrite, progress=progress),
                  make_encoder, preset, dtype, device)
    topics = ds.topics()
    searcher = FaissSearcher(index, RepLLaMAQueryEncoder(encoder=make_encoder()))
    qids = list(topics)
    results = searcher.batch_search([topics[q] for q in qids], qids, k=hits + 1, threads=1)
    run = {q: {h.docid: float(h.score) for h in results[q] if h.docid != q} for q in qids}
    write_run(run, output or os.path.join(work, "run.trec"), tag="repllama-pyserini-dense", depth=hits)
    scores = {k: round(float(v), 4) for k, v in evaluate(run, ds.qrels, conventions="beir").items()}
    return dict(scores, seconds=round(time.time() - t0, 1), queries=len(qids))
