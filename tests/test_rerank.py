"""RankLLaMA reranking: batched scores vs the model card's one-pair loop, ordering, bad input, resume, CLI."""
import gzip
import json
import os
import subprocess
import sys

import pytest
import torch

from repllama_pyserini.cli import InputError
from repllama_pyserini.formats import Doc, load_docs, read_candidates, read_run, read_topics, sorted_hits
from repllama_pyserini.formats.corpus import parse_raw
from repllama_pyserini.rerank import FunctionReranker, RankLLaMAReranker
from tiny_models import model_card_score
from repllama_pyserini.rerank.__main__ import main as rerank_main
from repllama_pyserini.rerank.rankllama import resolve_preset

QUERIES = ["what is the capital of france", "how do goldfish grow", "retrieval"]
# mixed lengths; a title-less doc; an empty doc; a doc whose last token is <unk> (= the pad id: the case where
# locating the last token by searching for pad ids goes wrong); a long one
DOCS = [Doc("Paris", "paris is the capital and most populous city of france"),
        Doc("Goldfish", "goldfish grow in proportion to the size of their tank " * 4),
        Doc("", "the quick brown fox"),
        Doc("", ""),
        Doc("Brain", "diffusion tensor imaging of the newborn brain ßß"),
        Doc("Fox", "the quick brown fox jumps over the lazy dog " * 12)]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def card(tiny_reranker):
    """The model card's own loading: AutoModelForSequenceClassification(num_labels=1) + PeftModel, merged."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny_reranker["base"])
    base = AutoModelForSequenceClassification.from_pretrained(tiny_reranker["base"], num_labels=1,
                                                              dtype=torch.float32)
    model = PeftModel.from_pretrained(base, tiny_reranker["lora"]).merge_and_unload().eval()
    return model, tok


@pytest.fixture(scope="module")
def reranker(tiny_reranker):
    return RankLLaMAReranker.from_pretrained(tiny_reranker["lora"], dtype="float32", device="cpu")


def card_text(doc):
    """The model card's document string: f'document: {title} {passage}' (title-less docs: ours, no double space)."""
    if doc.title:
        return f"document: {doc.title} {doc.text}"
    return f"document: {doc.text}" if doc.text else "document:"


def reference(card, queries, docs):
    model, tok = card
    return [model_card_score(model, tok, f"query: {q}", card_text(d)) for q, d in zip(queries, docs)]


def pairs():
    return [q for q in QUERIES for _ in DOCS], [d for _ in QUERIES for d in DOCS]


@pytest.mark.parametrize("padding_side,batch_size,max_tokens", [("right", 4, None), ("left", 5, None),
                                                                 ("right", 16, 200), ("left", 1, None)])
def test_batched_scores_equal_model_card(reranker, card, padding_side, batch_size, max_tokens):
    qs, ds = pairs()
    ref = reference(card, qs, ds)
    reranker.padding_side, reranker.batch_size, reranker.max_tokens = padding_side, batch_size, max_tokens
    try:
        got = reranker.score_pairs(qs, ds)
    finally:
        reranker.padding_side, reranker.batch_size, reranker.max_tokens = "right", 16, None
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        assert abs(g - r) < 1e-4, (g, r)
    assert len({round(s, 3) for s in ref}) > len(ref) // 2  # the reference is not degenerate


def test_test_pairs_cover_the_hard_cases(reranker):
    qs, ds = pairs()
    ids = reranker.encode_pairs(qs, ds)
    lengths = {len(s) for s in ids}
    assert max(lengths) > 3 * min(lengths)  # real padding in a batch
    assert any(s[-1] == reranker.tokenizer.pad_token_id for s in ids)  # a real last token equal to the pad id
    # the model's own batched forward (pad-id search) gets that case wrong: our way is needed
    bad = [i for i, s in enumerate(ids) if s[-1] == reranker.tokenizer.pad_token_id][0]
    batch = [ids[bad], max(ids, key=len)]
    width = max(map(len, batch))
    input_ids = torch.tensor([s + [reranker.tokenizer.pad_token_id] * (width - len(s)) for s in batch])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in batch])
    with torch.no_grad():
        hf = reranker.model(input_ids=input_ids, attention_mask=mask).logits[0, 0].item()
    ours = reranker.score_ids(batch)[0]
    alone = reranker.score_ids([ids[bad]])[0]
    assert abs(ours - alone) < 1e-4 and abs(hf - alone) > 1e-3


def test_query_and_document_format(reranker):
    ids = reranker.encode_pairs(["what is x"], [Doc("Title", "body text", "http://u")])[0]
    tok = reranker.tokenizer
    assert ids == tok("query: what is x", "document: Title body text")["input_ids"]  # passage: no url
    assert ids[0] == tok.bos_token_id and tok.eos_token_id not in ids
    t = reranker.template
    assert t.texts("q", Doc("", "t")) == ("query: q", "document: t")
    assert t.texts("q", Doc("", "", "")) == ("query: q", "document:")
    doc = resolve_preset("rankllama-doc").pair_template()
    assert doc.texts("q", Doc("T", "t", "u")) == ("query: q", "document: u T t")


def test_tevatron_pair_format_is_tevatrons(tiny_reranker, card):
    """``pair_format: tevatron``: the ids Tevatron's reranker builds (tevatron.reranker.dataset.format_pair, then the
    collator: one string, truncated to max_len - 1 with the tokenizer's specials, EOS appended), written out here."""
    from repllama_pyserini.templates import PairTemplate
    tok = card[1]

    def tevatron_ids(q, title, text, max_len=24, eos=True):
        title = title.replace("-", " ").strip()
        query_prefix, passage_prefix = "query: ", "document: "  # Tevatron's RankLLaMA flags
        pair = f"{query_prefix} {q} {passage_prefix} {title} {text}".strip()
        ids = tok(pair, truncation=True, max_length=max_len - 1 if eos else max_len)["input_ids"]
        return ids + [tok.eos_token_id] if eos else ids

    t = PairTemplate("tevatron", "query: ", "document: ", max_length=24, append_eos=True)
    qs = ["what is x", "how do goldfish grow"]
    ds = [Doc("Gold-fish", "goldfish grow " * 20), Doc("", "the quick brown fox")]
    assert t.texts(qs[1], ds[1])[0] == "query:  how do goldfish grow document:   the quick brown fox"
    assert t.encode(tok, qs, ds) == [tevatron_ids(q, d.title, d.text) for q, d in zip(qs, ds)]
    no_eos = PairTemplate("tevatron", "query: ", "document: ", max_length=24)
    assert no_eos.encode(tok, qs, ds) == [tevatron_ids(q, d.title, d.text, eos=False) for q, d in zip(qs, ds)]
    with pytest.raises(InputError, match="rankllama pair format has no EOS"):
        PairTemplate("rankllama", append_eos=True)


def test_lora_is_applied(tiny_reranker, reranker):
    base = RankLLaMAReranker.from_pretrained(tiny_reranker["base"], dtype="float32", device="cpu")
    qs, ds = pairs()
    a, b = base.score_pairs(qs[:4], ds[:4]), reranker.score_pairs(qs[:4], ds[:4])
    assert max(abs(x - y) for x, y in zip(a, b)) > 1e-2


def test_truncation_only_second(tiny_reranker, card):
    r = RankLLaMAReranker.from_pretrained(tiny_reranker["lora"], max_length=24, batch_size=3)
    tok = r.tokenizer
    qs, ds = pairs()
    ids = r.encode_pairs(qs, ds)
    assert max(len(s) for s in ids) == 24 and all(len(s) <= 24 for s in ids)
    for q, d, s in zip(qs, ds, ids):
        full = tok(f"query: {q}", card_text(d))["input_ids"]
        qlen = len(tok(f"query: {q}")["input_ids"])
        assert s == full[:len(s)] and s[:qlen] == full[:qlen]  # only the document side is cut
    model, _ = card
    got = r.score_pairs(qs, ds)
    for q, d, g in zip(qs, ds, got):
        inputs = tok(f"query: {q}", card_text(d), truncation="only_second", max_length=24,
                     return_tensors="pt")
        with torch.no_grad():
            assert abs(model(**inputs).logits[0][0].item() - g) < 1e-4
    # a query longer than max_length on its own does not crash; the pair still fits
    long_q = " ".join(["goldfish grow"] * 20)
    s = r.encode_pairs([long_q, "x"], [Doc("", "paris"), Doc("", "paris")])
    assert len(s[0]) <= 24 and len(s[1]) < 24


def test_presets(tiny_reranker):
    p = resolve_preset("castorini/rankllama-v1-7b-lora-passage")
    assert (p.max_length, p.depth, p.document_fields, p.pair_format) == (512, 200, ["title", "text"], "rankllama")
    assert p.base_model == "meta-llama/Llama-2-7b-hf" and p.document_prefix == "document: "
    d = resolve_preset("castorini/rankllama-v1-7b-lora-doc")
    assert (d.max_length, d.depth, d.document_fields) == (2048, 100, ["url", "title", "text"])
    assert resolve_preset("castorini/rankllama-v1-13b-lora-passage").base_model == "meta-llama/Llama-2-13b-hf"
    with pytest.raises(InputError, match="is a encoder preset, not a reranker|is an encoder preset"):
        resolve_preset("castorini/repllama-v1-7b-lora-passage")
    # a local checkpoint with a preset's settings (and the granularity defaults without one)
    r = RankLLaMAReranker.from_pretrained(tiny_reranker["lora"], preset="rankllama-doc")
    assert (r.template.max_length, r.depth, r.template.fields) == (2048, 100, ("url", "title", "text"))
    assert r.preset.model == tiny_reranker["lora"] and r.preset.base_model is None
    r = RankLLaMAReranker.from_pretrained(tiny_reranker["lora"], granularity="document", depth=7)
    assert (r.template.max_length, r.depth) == (2048, 7)


def test_preset_depth_and_format_keys(tiny_reranker, tmp_path):
    path = tmp_path / "my-scorer.yaml"
    path.write_text(f"model: {tiny_reranker['lora']}\nkind: reranker\ndepth: 37\ndocument_prefix: 'doc: '\n"
                    f"max_length: 64\npair_format: tevatron\nappend_eos: true\n")
    r = RankLLaMAReranker.from_pretrained(tiny_reranker["lora"], preset=str(path))
    assert (r.depth, r.template.max_length, r.template.document_prefix, r.template.format) == \
        (37, 64, "doc: ", "tevatron")
    assert r.encode_pairs(["q"], [Doc("", "x")])[0][-1] == r.tokenizer.eos_token_id
    assert RankLLaMAReranker.from_pretrained(tiny_reranker["lora"], preset=str(path), depth=5).depth == 5
    path.write_text(f"model: {tiny_reranker['lora']}\nkind: encoder\n")
    with pytest.raises(InputError, match="encoder preset, not a reranker"):
        RankLLaMAReranker.from_pretrained(tiny_reranker["lora"], preset=str(path))


# ------------------------------------------------------------------ ordering with a known scoring function
class FakeLuceneDoc:
    def __init__(self, raw):
        self._raw = raw

    def get(self, field):
        return self._raw if field == "raw" else None


class FakeHit:  # what Pyserini's LuceneSearcher returns: docid, score, lucene_document
    def __init__(self, docid, score, text):
        self.docid, self.score = docid, score
        self.lucene_document = FakeLuceneDoc(json.dumps({"id": docid, "contents": text}))


# the project's tie rule (io.sorted_hits, the order trec_eval scores in): docid descending
TIES_DESC = sorted_hits({"a": 1.0, "b": 1.0})[0][0] == "b"
KNOWN = {"a": 1.0, "b": 3.0, "c": 2.0, "d": 3.0, "e": -1.0, "f": 2.0, "g": 9.0}


def known_reranker(depth=200):
    return FunctionReranker(lambda q, doc: KNOWN[doc.text.split()[0]], depth=depth)


def test_known_scores_give_exact_order():
    hits = [FakeHit(d, 10.0 - i, f"{d} some text") for i, d in enumerate("abcdefg")]
    out = known_reranker().rerank("q", hits)
    assert TIES_DESC  # the expected orders below are written for it
    assert [h.docid for h in out] == ["g", "d", "b", "f", "c", "a", "e"]  # ties (b/d, c/f) by docid
    assert [h.score for h in out] == [9.0, 3.0, 3.0, 2.0, 2.0, 1.0, -1.0]
    assert out[0].first_stage_score == 4.0 and out[0].hit is hits[6]
    assert out[1].first_stage_score == 7.0 and out[2].first_stage_score == 9.0
    # depth: only the first-stage top-4 are reranked and returned
    assert [h.docid for h in known_reranker(depth=4).rerank("q", hits)] == ["d", "b", "c", "a"]
    # text from a docs mapping (e.g. for dense hits that carry no text); a hit without text is dropped or fails
    class Dense:
        def __init__(self, docid, score):
            self.docid, self.score = docid, score
    dense = [Dense(d, 0.0) for d in "abz"]
    docs = {"a": "a", "b": Doc("", "b text")}
    assert [h.docid for h in known_reranker().rerank("q", dense, docs=docs)] == ["b", "a"]
    with pytest.raises(InputError):
        known_reranker().rerank("q", dense, docs=docs, on_missing="fail")


def test_ties_in_first_stage_cut_by_docid():
    run = {"q1": {"z": 1.0, "y": 1.0, "x": 1.0, "w": 0.5}}
    docs = {d: Doc("", d) for d in "wxyz"}
    seen = []
    r = FunctionReranker(lambda q, d: seen.append(d.text) or 0.0, depth=2)
    out, _ = r.rerank_run({"q1": "q"}, run, docs)
    assert seen == ["z", "y"] and list(out["q1"]) == ["z", "y"]  # the tie at the cut: docid descending


def test_rerank_run_bad_input():
    topics = {"q1": "first", "q2": "second", "q3": "never retrieved"}
    run = {"q1": {"a": 5, "b": 4, "missing1": 3, "c": 2}, "q2": {"d": 1, "missing2": 0.5, "g": 0.1},
           "q9": {"a": 1}}
    docs = {"a": Doc("", "a"), "b": Doc("", "b"), "c": Doc("", "c"), "d": Doc("", "d"), "g": Doc("", "")}
    r = FunctionReranker(lambda q, d: KNOWN.get(d.text, 0.5))
    out, stats = r.rerank_run(topics, run, docs)
    assert out == {"q1": {"b": 3.0, "c": 2.0, "a": 1.0}, "q2": {"d": 3.0, "g": 0.5}}
    assert stats.missing_docs == 2 and set(stats.missing_docids) == {"missing1", "missing2"}
    assert stats.topics_missing == ["q9"] and stats.topics_without_run == ["q3"]
    assert stats.empty_docs == 1 and stats.pairs == 5
    assert "2 candidates absent" in stats.summary()
    with pytest.raises(InputError, match="absent from the corpus"):
        r.rerank_run({"q1": "x", "q2": "y"}, {k: run[k] for k in ("q1", "q2")}, docs, on_missing="fail")
    with pytest.raises(InputError, match="no topic text"):
        r.rerank_run(topics, run, docs, on_missing="fail")
    # nothing at all to score (wrong corpus, wrong topics): an error, not an empty run and exit status 0
    with pytest.raises(InputError, match=r"nothing to rerank: all 7 candidates are absent"):
        r.rerank_run(topics, run, {"zz": Doc("", "z")})
    with pytest.raises(InputError, match="nothing to rerank: no run query has topic text"):
        r.rerank_run({"other": "x"}, run, docs)


# --------------------------------------------------------------------------------------------------- resume
class Killed(Exception):
    pass


def test_resume_after_kill(tmp_path):
    topics = {f"q{i}": f"query {i}" for i in range(6)}
    run = {q: {f"d{j}": float(j) for j in range(5)} for q in topics}
    docs = {f"d{j}": Doc("", f"d{j}") for j in range(5)}
    fn = lambda q, d: (hash((q, d.text)) % 1000) / 7.0  # noqa: E731
    full, _ = FunctionReranker(fn).rerank_run(topics, run, docs, progress=False)
    job = tmp_path / "run.trec.job"
    calls = []

    def dying(q, d):
        if len(calls) == 12:  # dies inside the 3rd query (5 pairs each, one query per chunk)
            raise Killed
        calls.append(q)
        return fn(q, d)

    with pytest.raises(Killed):
        FunctionReranker(dying).rerank_run(topics, run, docs, job_dir=str(job), chunk_pairs=5, progress=False)
    manifest = json.loads((job / "manifest.json").read_text())
    assert sorted(manifest["chunks"]) == ["chunk_000000", "chunk_000001"]
    (job / "chunk_000002.json.x1.tmp").write_text('{"q2": [["d0"')  # a write cut short by the kill
    calls.clear()
    out, stats = FunctionReranker(lambda q, d: calls.append(q) or fn(q, d)).rerank_run(
        topics, run, docs, job_dir=str(job), chunk_pairs=5, progress=False)
    assert stats.resumed == 2 and len(calls) == 4 * 5 and "query 0" not in calls
    assert out == full and list(out) == list(run) and not list(job.glob("*.tmp"))
    with pytest.raises(InputError, match=r"other settings or inputs \(inputs.candidates: content changed; inputs.documents: "
                                         r"content changed; settings.depth: 200 -> 3\)"):
        FunctionReranker(fn).rerank_run(topics, run, docs, depth=3, job_dir=str(job), chunk_pairs=5)
    with pytest.raises(InputError, match=r"other settings or inputs \(inputs.topics: content changed\)"):
        FunctionReranker(fn).rerank_run(dict(topics, q0="another query"), run, docs, job_dir=str(job), chunk_pairs=5)


def test_resume_scores_whole_chunks_bit_identically(tmp_path, reranker):
    """Chunks are cut over all queries, so a resumed job scores the same batches: exactly equal scores."""
    topics = {f"q{i}": q for i, q in enumerate(QUERIES)}
    run = {q: {f"d{j}": float(-j) for j in range(len(DOCS))} for q in topics}
    docs = {f"d{j}": d for j, d in enumerate(DOCS)}
    reranker.batch_size = 5
    try:
        full, _ = reranker.rerank_run(topics, run, docs, chunk_pairs=12, progress=False)  # chunks [q0 q1] [q2]
        job = tmp_path / "job"
        reranker.rerank_run(topics, run, docs, chunk_pairs=12, job_dir=str(job), progress=False)
        (job / "chunk_000000.json").unlink()  # the first chunk is lost: it is redone, the second reused
        out, stats = reranker.rerank_run(topics, run, docs, chunk_pairs=12, job_dir=str(job), progress=False)
    finally:
        reranker.batch_size = 16
    assert stats.resumed == 1 and stats.pairs == 2 * len(DOCS)
    assert out == full  # exactly equal, not just close


def test_adapter_of_the_other_kind_is_refused(tiny_encoder, tiny_reranker):
    """peft only warns when an adapter's weights do not fit (the model then runs without them): we refuse."""
    from repllama_pyserini.dense import RepLLaMAEncoder
    with pytest.raises(InputError, match="does not fit a reranker model"):
        RankLLaMAReranker.from_pretrained(tiny_encoder["lora"])
    with pytest.raises(InputError, match="does not fit an encoder model"):
        RepLLaMAEncoder(tiny_reranker["lora"])


def test_job_of_a_retrained_adapter_is_refused(tmp_path, tiny_reranker):
    """Scores saved for one adapter are not resumed after the adapter was retrained in the same directory."""
    from tiny_models import make_random_lora
    lora = make_random_lora(tiny_reranker["base"], str(tmp_path / "adapter"), kind="reranker", seed=1)
    topics, run = {"q0": QUERIES[0]}, {"q0": {f"d{j}": float(-j) for j in range(3)}}
    docs, job = {f"d{j}": DOCS[j] for j in range(3)}, str(tmp_path / "job")
    RankLLaMAReranker.from_pretrained(lora).rerank_run(topics, run, docs, job_dir=job, progress=False)
    _, stats = RankLLaMAReranker.from_pretrained(lora).rerank_run(topics, run, docs, job_dir=job, progress=False)
    assert stats.resumed == 1  # same weights: resumed
    make_random_lora(tiny_reranker["base"], lora, kind="reranker", seed=2)
    with pytest.raises(InputError, match=r"other settings or inputs \(settings.checkpoint.model_weights: "):
        RankLLaMAReranker.from_pretrained(lora).rerank_run(topics, run, docs, job_dir=job, progress=False)


# ------------------------------------------------------------------------------------------- corpus lookup
def test_corpus_layouts(tmp_path):
    want = {"1", "3", "404"}
    tsv = tmp_path / "c.tsv.gz"
    with gzip.open(tsv, "wt") as f:
        f.write("1\tfirst passage\n2\tsecond\n3\tthird\n")
    assert load_docs(str(tsv), want) == {"1": Doc("", "first passage"), "3": Doc("", "third")}
    tsv4 = tmp_path / "msmarco-docs.tsv"
    tsv4.write_text("1\thttp://a\tTitle A\tbody a\n3\thttp://c\tTitle C\tbody c\n")
    assert load_docs(str(tsv4), want)["3"] == Doc("Title C", "body c", "http://c")
    beir = tmp_path / "beir"
    beir.mkdir()
    (beir / "corpus.jsonl").write_text("\n".join(json.dumps(o) for o in [
        {"_id": "1", "title": "T1", "text": "x1"}, {"_id": "2", "title": "", "text": "x2"},
        {"_id": "3", "title": "T3", "text": "x3", "url": "u3"}]) + "\n")
    assert load_docs(str(beir), want) == {"1": Doc("T1", "x1"), "3": Doc("T3", "x3", "u3")}
    jc = tmp_path / "jsoncollection"
    jc.mkdir()
    (jc / "docs00.jsonl").write_text(json.dumps({"id": "3", "contents": "c3"}) + "\n")
    assert load_docs(str(jc), want) == {"3": Doc("", "c3")}
    assert parse_raw('{"id": "x", "title": "t", "contents": "c"}') == Doc("t", "c")
    assert parse_raw('{"docid": "D1", "url": "u", "title": "t", "segment": "s"}') == Doc("t", "s", "u")
    assert parse_raw("plain text") == Doc("", "plain text")
    with pytest.raises(InputError):
        load_docs(str(tmp_path / "nope.tsv"), want)


# ------------------------------------------------------------------------------------- CLI on real DL19 data
def _dl19(ir_data):
    cand = os.path.join(ir_data, "msmarco-passage", "rank_llm_candidates")
    return (os.path.join(cand, "trec_results_BM25_dl19.txt"),
            os.path.join(ir_data, "topics-and-qrels", "topics.dl19-passage.txt"),
            os.path.join(ir_data, "msmarco-passage", "collection.dl19-dl20-candidates.tsv.gz"),
            os.path.join(cand, "retrieve_results_BM25_dl19.json.gz"))


def test_cli_real_dl19(ir_data, tiny_reranker, reranker, tmp_path, capsys):
    run_path, topics_path, collection, cand = _dl19(ir_data)
    bm25, topics = read_run(run_path), read_topics(topics_path)
    # a run naming a docid absent from the corpus, and a topic the run misses
    bad_run = tmp_path / "bm25.trec"
    lines = open(run_path).read().splitlines()
    qid0 = lines[0].split()[0]
    lines.insert(1, f"{qid0} Q0 NOT-A-DOC 2 15.5 rank")
    bad_run.write_text("\n".join(l for l in lines if l.split()[0] != "1037798") + "\n")
    out = tmp_path / "rr.trec"
    argv = ["--model", tiny_reranker["lora"], "--run", str(bad_run), "--topics", topics_path, "--corpus", collection,
            "--depth", "4", "--output", str(out), "--no-progress"]
    rerank_main(argv)
    got = read_run(str(out))
    assert len(got) == len(bm25) - 1 and "1037798" not in got
    rerank_main(argv)  # the same command again: reported, nothing scored
    assert "already complete" in capsys.readouterr().err and read_run(str(out)) == got
    assert "NOT-A-DOC" not in got[qid0] and len(got[qid0]) == 3
    # the written run is the reranker's own scores of the first-stage top-4, sorted (ties by docid)
    docs = load_docs(collection, {d for q in got for d in got[q]})
    first = read_run(str(bad_run))
    for qid in list(got)[:5]:
        top = [d for d, _ in sorted_hits(first[qid])[:4] if d != "NOT-A-DOC"]
        assert set(got[qid]) == set(top)
        scores = reranker.score_pairs([topics[qid]] * len(top), [docs[d] for d in top])
        ranked = sorted_hits(dict(zip(top, scores)))
        assert [d for d, _ in sorted_hits(got[qid])] == [d for d, _ in ranked]
        assert all(abs(got[qid][d] - s) < 1e-5 for d, s in ranked)
    with pytest.raises(InputError, match="absent from the corpus"):
        rerank_main(["--model", tiny_reranker["lora"], "--run", str(bad_run), "--topics", topics_path,
                     "--corpus", collection, "--depth", "4", "--output", str(out), "--on-missing", "fail"])
    # rank_llm candidates (text inside): same scores as run + corpus for the same pairs
    out2 = tmp_path / "rr2.trec"
    rerank_main(["--model", tiny_reranker["lora"], "--candidates", cand, "--depth", "4", "--output", str(out2),
                 "--no-progress"])
    got2 = read_run(str(out2))
    cdocs = read_candidates(cand).docs
    for qid in list(got)[:5]:
        for d in got[qid]:
            if cdocs[d].text == docs[d].text:
                assert abs(got2[qid][d] - got[qid][d]) < 1e-5


def test_cli_errors_are_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "repllama_pyserini.rerank", "--model", "org/x", "--run",
                           str(tmp_path / "missing.trec"), "--topics", "t", "--corpus", str(tmp_path),
                           "--output", str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- a real Lucene index (Pyserini)
def test_lucene_index_and_pyserini_hits(tmp_path, reranker):
    from repllama_pyserini.bm25 import build_index
    from repllama_pyserini.java import JavaNotFoundError
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps({"_id": f"d{i}", "title": f"Title {i}", "text": t}) for i, t in
                                enumerate(["goldfish grow in tanks", "paris is the capital of france",
                                           "goldfish and the quick brown fox", "the lazy dog"])) + "\n")
    try:
        index = build_index(str(corpus), str(tmp_path / "index"), fields="multifield")
    except JavaNotFoundError as e:
        pytest.skip(str(e))
    from pyserini.search.lucene import LuceneSearcher
    searcher = LuceneSearcher(index)
    hits = searcher.search("goldfish", k=10)
    assert len(hits) == 2
    out = reranker.rerank("how do goldfish grow", hits)
    expected = reranker.score_pairs(["how do goldfish grow"] * 2, [Doc("Title 0", "goldfish grow in tanks"),
                                                                   Doc("Title 2", "goldfish and the quick brown fox")])
    want = sorted_hits(dict(zip(["d0", "d2"], expected)))
    assert [(h.docid, round(h.score, 5)) for h in out] == [(d, round(s, 5)) for d, s in want]
    assert load_docs(index, {"d1", "nope"}) == {"d1": Doc("Title 1", "paris is the capital of france")}
