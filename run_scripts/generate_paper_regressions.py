"""Write the paper-scale regression YAMLs (GPU + released checkpoints) into docs/regressions/.

The expected numbers and their grades come from ../shared/paper-numbers.md (Ma et al. 2023, arXiv 2310.08319):
verified / secondary numbers are pinned; unverified ones are carried with ``unverified: true``. BEIR BM25 is pinned
to Pyserini's published 2CR scores (toolkit docs, verified). Rerun after editing the tables below:

    python run_scripts/generate_paper_regressions.py && python -m repllama_pyserini.workflows.regressions --all --generate-docs-only
"""
import os

import yaml

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "regressions")
PY = "${python}"
REPLLAMA = "castorini/repllama-v1-7b-lora-passage"
REPLLAMA_BEIR = "repllama-v1-7b-lora-passage-beir"
REPLLAMA_DOC = "castorini/repllama-v1-7b-lora-doc"
RANKLLAMA = {"7b": "castorini/rankllama-v1-7b-lora-passage", "13b": "castorini/rankllama-v1-13b-lora-passage"}
RANKLLAMA_DOC = "castorini/rankllama-v1-7b-lora-doc"
PAPER1 = "paper Table 1 (arXiv 2310.08319)"

# collection -> (topics, qrels, [(metric name, trec_eval options)])
PASSAGE = {
    "msmarco-passage-dev-subset": ("topics.msmarco-passage.dev-subset.txt", "qrels.msmarco-passage.dev-subset.txt",
                                   [("MRR@10", "-c -M 10 -m recip_rank"), ("R@1000", "-c -m recall.1000")]),
    "dl19-passage": ("topics.dl19-passage.txt", "qrels.dl19-passage.txt", [("nDCG@10", "-c -m ndcg_cut.10")]),
    "dl20-passage": ("topics.dl20.txt", "qrels.dl20-passage.txt", [("nDCG@10", "-c -m ndcg_cut.10")]),
}
# (system, collection, metric) -> (value, grade, source note)
V, S, U = "verified", "secondary", "unverified"
TEVATRON = "quoted in texttron/tevatron issues #152, #129"
PASSAGE_NUMBERS = {
    ("repllama", "msmarco-passage-dev-subset", "MRR@10"): (0.412, V, TEVATRON),
    ("repllama", "msmarco-passage-dev-subset", "R@1000"): (0.994, U, "recalled, not found in a stored source"),
    ("repllama", "dl19-passage", "nDCG@10"): (0.743, V, TEVATRON),
    ("repllama", "dl20-passage", "nDCG@10"): (0.721, V, TEVATRON),
    ("rankllama-7b", "msmarco-passage-dev-subset", "MRR@10"): (0.449, U, ""),
    ("rankllama-7b", "dl19-passage", "nDCG@10"): (0.756, U, "Tevatron's reproduction: 0.7655 (transformers 4.41)"),
    ("rankllama-7b", "dl20-passage", "nDCG@10"): (0.774, U, ""),
    ("rankllama-13b", "msmarco-passage-dev-subset", "MRR@10"): (0.452, U, ""),
    ("rankllama-13b", "dl19-passage", "nDCG@10"): (0.760, U, ""),
    ("rankllama-13b", "dl20-passage", "nDCG@10"): (0.779, U, ""),
}
DOC = {
    "msmarco-doc-dev": ("topics.msmarco-doc.dev.txt", "qrels.msmarco-doc.dev.txt", ("MRR@100", "-c -M 100 -m recip_rank"),
                        (0.456, S, "third-party extraction of paper Table 3"), (0.503, V, "paper Sec. 4.2")),
    "dl19-doc": ("topics.dl19-doc.txt", "qrels.dl19-doc.txt", ("nDCG@10", "-c -m ndcg_cut.10"), (0.650, U, ""), (0.677, U, "")),
    "dl20-doc": ("topics.dl20.txt", "qrels.dl20-doc.txt", ("nDCG@10", "-c -m ndcg_cut.10"), (0.632, U, ""), (0.674, U, "")),
}
# BEIR: dataset -> (RepLLaMA-7B, RankLLaMA-7B, RankLLaMA-13B) nDCG@10 from paper Table 2 (secondary)
BEIR = {
    "trec-covid": (0.847, 0.852, 0.861), "nfcorpus": (0.378, 0.303, 0.284), "nq": (0.624, None, None),
    "hotpotqa": (0.685, None, None), "fiqa": (0.458, 0.465, 0.481), "arguana": (0.486, None, None),
    "webis-touche2020": (0.305, None, None), "quora": (0.868, None, None), "dbpedia-entity": (0.437, None, None),
    "scidocs": (0.181, 0.178, 0.191), "fever": (0.834, None, None), "climate-fever": (0.310, None, None),
    "scifact": (0.756, 0.732, 0.730),
}
PAPER2 = "paper Table 2, copied in another publication (secondary)"


def metric(name, opts, value, grade, note, source):
    m = {"name": name, "trec_eval": opts, "source": f"{source}; grade {grade}" + (f"; {note}" if note else "")}
    if grade == U:
        m["unverified"] = True
    if value is not None:
        m["expected"] = value
    return m


def dense_stages(encoder, corpus_var, index_name, extra_search=""):
    index = f"${{shared}}/{index_name}"
    return [
        {"name": "encode", "output": index, "complete_marker": "repllama-index.json",
         "command": f"{PY} -m repllama_pyserini.dense encode --corpus {corpus_var} --encoder {encoder} --output {index}"},
        {"name": "repllama", "output": "${work}/run.repllama.trec",
         "command": f"{PY} -m pyserini.search.faiss --encoder-class repllama --encoder {encoder} --index {index} "
                    f"--topics ${{topics}} --output ${{stage.repllama}} --hits 1000{extra_search}"},
    ]


def rerank_stage(model, corpus_var, depth):
    return {"name": "rerank", "output": "${work}/run.rerank.trec",
            "command": f"{PY} -m repllama_pyserini.rerank --model {model} --run ${{stage.repllama}} --topics ${{topics}} "
                       f"--corpus {corpus_var} --depth {depth} --output ${{stage.rerank}}"}


def write(y):
    with open(os.path.join(OUT, y["name"] + ".yaml"), "w") as f:
        f.write("# Generated by run_scripts/generate_paper_regressions.py from ../shared/paper-numbers.md\n")
        yaml.safe_dump(y, f, sort_keys=False, width=120)


def base(name, description, collection, topics, qrels, requires, models, first_stage, depth=None):
    y = {"name": name, "description": description, "collection": collection, "cpu": False, "slow": True,
         "requires": requires, "models": models, "first_stage": first_stage}
    if depth:
        y["rerank_depth"] = depth
    y.update({"topics": f"${{data}}/topics-and-qrels/{topics}", "qrels": f"${{data}}/topics-and-qrels/{qrels}"})
    return y


def passage():
    corpus = "${env:MSMARCO_PASSAGE_CORPUS}"
    for coll, (topics, qrels, metrics) in PASSAGE.items():
        for reranker in (None, "7b", "13b"):
            name = f"{coll}.repllama-7b" + (f".rankllama-{reranker}" if reranker else "")
            desc = (f"RepLLaMA-7B top-1000 on {coll}" + (f", reranked top-200 by RankLLaMA-{reranker.upper()}" if reranker else "")
                    + ". Needs a GPU, the released checkpoints (Llama-2-7B base) and the MS MARCO v1 passage collection "
                      "(collection.tsv, 8.8M passages) at $MSMARCO_PASSAGE_CORPUS. Expected numbers: the paper's.")
            models = {"encoder": REPLLAMA} | ({"reranker": RANKLLAMA[reranker]} if reranker else {})
            y = base(name, desc, coll, topics, qrels, ["gpu", "hub", "msmarco-passage-collection"], models,
                     "repllama-7b top-1000", 200 if reranker else None)
            y["stages"] = dense_stages(REPLLAMA, corpus, "msmarco-v1-passage.repllama-v1-7b")
            evs = [{"label": "RepLLaMA-7B", "run": "${stage.repllama}",
                    "metrics": [metric(m, o, *PASSAGE_NUMBERS[("repllama", coll, m)], PAPER1) for m, o in metrics]}]
            if reranker:
                y["stages"].append(rerank_stage(RANKLLAMA[reranker], corpus, 200))
                evs.append({"label": f"RankLLaMA-{reranker.upper()} top-200", "run": "${stage.rerank}", "metrics": [
                    metric(m, o, *PASSAGE_NUMBERS[(f"rankllama-{reranker}", coll, m)], PAPER1)
                    for m, o in metrics if (f"rankllama-{reranker}", coll, m) in PASSAGE_NUMBERS]})
            y["evaluations"] = evs
            write(y)


def document():
    corpus = "${env:MSMARCO_DOC_CORPUS}"
    for coll, (topics, qrels, (m, o), rep, rank) in DOC.items():
        name = f"{coll}.repllama-7b.rankllama-7b"
        desc = (f"MS MARCO document ({coll}): RepLLaMA-7B document retriever (first 2048 tokens of each document, "
                "URL + title + body), top-100 reranked by RankLLaMA-7B (2048 tokens). Needs a GPU, the released "
                "checkpoints and the MS MARCO v1 document collection at $MSMARCO_DOC_CORPUS. Expected: the paper's.")
        y = base(name, desc, coll, topics, qrels, ["gpu", "hub", "msmarco-doc-collection"],
                 {"encoder": REPLLAMA_DOC, "reranker": RANKLLAMA_DOC}, "repllama-7b (doc) top-1000", 100)
        y["stages"] = dense_stages(REPLLAMA_DOC, corpus, "msmarco-v1-doc.repllama-v1-7b") + [rerank_stage(RANKLLAMA_DOC, corpus, 100)]
        y["evaluations"] = [
            {"label": "RepLLaMA-7B (doc)", "run": "${stage.repllama}", "metrics": [metric(m, o, *rep, "paper Table 3")]},
            {"label": "RankLLaMA-7B top-100", "run": "${stage.rerank}", "metrics": [metric(m, o, *rank, "paper Table 3")]}]
        write(y)


def beir():
    for ds, (rep, r7, r13) in BEIR.items():
        corpus = "${data}/beir/scifact/corpus.jsonl.gz" if ds == "scifact" else f"${{env:BEIR_ROOT}}/{ds}"
        requires = ["gpu", "hub"] + ([] if ds == "scifact" else ["beir-corpora"])
        topics, qrels = f"topics.beir-v1.0.0-{ds}.test.tsv.gz", f"qrels.beir-v1.0.0-{ds}.test.txt"
        for reranker, value in ((None, rep), ("7b", r7), ("13b", r13)):
            if reranker and value is None:
                continue
            name = f"beir-v1.0.0-{ds}.repllama-7b" + (f".rankllama-{reranker}" if reranker else "")
            desc = (f"BEIR {ds} zero-shot: RepLLaMA-7B (query and passage 512 tokens, as Tevatron's BEIR example) "
                    + (f"top-100 reranked by RankLLaMA-{reranker.upper()} " if reranker else "")
                    + "Needs a GPU and the released checkpoints" + ("" if ds == "scifact" else
                    f", and the BEIR {ds} folder under $BEIR_ROOT") + ". Expected: the paper's Table 2.")
            models = {"encoder": REPLLAMA_BEIR} | ({"reranker": RANKLLAMA[reranker]} if reranker else {})
            y = base(name, desc, f"beir-v1.0.0-{ds}", topics, qrels, requires, models, "repllama-7b top-1000",
                     100 if reranker else None)
            y["stages"] = dense_stages(REPLLAMA_BEIR, corpus, f"beir-v1.0.0-{ds}.repllama-v1-7b", " --remove-query")
            evs = []
            if not reranker:
                note = "Tevatron's documented reproduction: 0.7561" if ds == "scifact" else ""
                evs.append({"label": "RepLLaMA-7B", "run": "${stage.repllama}",
                            "metrics": [metric("nDCG@10", "-c -m ndcg_cut.10", value, S, note, PAPER2)]})
            else:
                y["stages"].append(rerank_stage(RANKLLAMA[reranker], corpus, 100))
                evs.append({"label": f"RankLLaMA-{reranker.upper()} top-100", "run": "${stage.rerank}",
                            "metrics": [metric("nDCG@10", "-c -m ndcg_cut.10", value, S,
                                               "rerank depth 100 is this toolkit's assumption", PAPER2)]})
            y["evaluations"] = evs
            write(y)


def beir_bm25():
    """BM25 flat on the other 12 public BEIR datasets, pinned to Pyserini's published 2CR numbers (CPU, slow)."""
    data = os.path.join(os.path.dirname(OUT), "..", "..", "shared", "ir-data", "pyserini-2cr", "beir.yaml")
    with open(data) as f:
        cond = next(c for c in yaml.safe_load(f)["conditions"] if c["name"] == "bm25-flat")
    scores = {d["dataset"]: d["scores"][0] for d in cond["datasets"]}
    for ds in BEIR:
        if ds == "scifact":
            continue  # hand-written, runs in CI on the shared corpus
        y = {"name": f"beir-v1.0.0-{ds}.bm25-flat",
             "description": f"BM25 flat (k1=0.9, b=0.4, top-1000, query id removed) on BEIR {ds}, indexed with Pyserini "
                            f"1.6.0 like Pyserini's beir-v1.0.0-{ds}.flat. Needs the BEIR {ds} folder under $BEIR_ROOT "
                            "(python -m repllama_pyserini.bm25 beir --dataset NAME downloads it into the cache). "
                            "Expected: Pyserini's published 2CR scores.",
             "collection": f"beir-v1.0.0-{ds}", "cpu": True, "slow": True, "requires": ["beir-corpora"],
             "first_stage": "bm25-flat",
             "topics": f"${{data}}/topics-and-qrels/topics.beir-v1.0.0-{ds}.test.tsv.gz",
             "qrels": f"${{data}}/topics-and-qrels/qrels.beir-v1.0.0-{ds}.test.txt",
             "stages": [
                 {"name": "index", "output": f"${{shared}}/beir-v1.0.0-{ds}.flat", "complete_marker": "repllama_pyserini.index.json",
                  "command": f"{PY} -m repllama_pyserini.bm25 index --corpus ${{env:BEIR_ROOT}}/{ds} --index ${{stage.index}}"},
                 {"name": "bm25", "output": f"${{work}}/run.beir-v1.0.0-{ds}.bm25-flat.trec",
                  "command": f"{PY} -m repllama_pyserini.bm25 search --index ${{stage.index}} --topics ${{topics}} "
                             "--output ${stage.bm25} --hits 1000 --remove-query"}],
             "evaluations": [{"label": "BM25 flat", "run": "${stage.bm25}", "metrics": [
                 {"name": m, "trec_eval": o, "expected": float(scores[ds][m]),
                  "source": "Pyserini 2CR beir.yaml bm25-flat (published)"}
                 for m, o in (("nDCG@10", "-c -m ndcg_cut.10"), ("R@100", "-c -m recall.100"),
                              ("R@1000", "-c -m recall.1000"))]}]}
        write(y)


if __name__ == "__main__":
    beir_bm25()
    passage()
    document()
    beir()
