"""Tevatron-compatible training: hard-negative mining with Pyserini (:mod:`.negatives`), RepLLaMA retriever
training (:mod:`.retriever`) and RankLLaMA reranker training (:mod:`.reranker`).

    python -m repllama_pyserini.train.negatives --corpus ... --topics ... --qrels ... --output train.jsonl.gz
    torchrun --nproc_per_node 8 -m repllama_pyserini.train.retriever --dataset_name train.jsonl.gz ...
    torchrun --nproc_per_node 8 -m repllama_pyserini.train.reranker --dataset_name train.jsonl.gz ...
"""
