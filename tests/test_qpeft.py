"""Q-PEFT / UPR on a tiny random LLaMA: batched scores = the one-pair-at-a-time reference (left/right padding,
mixed lengths, with and without the shared prefix cache), gradients only in the module, R hint selection on a
hand-made example, save/load round trip, training lowers the loss, resume, readers, QA metrics, the reranker
interface and the CLI."""
import gzip
import json
import os
import random
from types import SimpleNamespace

import pytest
import torch

from repllama_pyserini.io import InputError, read_run
from repllama_pyserini.qpeft import (PromptEncoder, QPeftModule, QPeftReranker, QueryLikelihoodScorer, load_module,
                                     reference_loglik, select_hint_ids)
from repllama_pyserini.qpeft.data import Example, Passage, read_dpr, read_examples, read_tevatron, split_dev
from repllama_pyserini.qpeft.metrics import qa_metrics, run_qa_metrics
from repllama_pyserini.qpeft.train import TrainConfig, Trainer, check_gradients

DOCS = [("paris", "paris is the capital and most populous city of france, the quick brown fox jumps over it"),
        ("", "goldfish grow"),
        ("goldfish", "goldfish grow in proportion to the size of their tank and water quality ."),
        ("", "diffusion tensor imaging of the newborn brain white matter")]
QUERIES = ["what is the capital of france", "how do goldfish grow",
           "diffusion tensor imaging of the newborn brain white matter and lora retrieval"]


@pytest.fixture(scope="module")
def lm_tok(tiny_causal):
    from repllama_pyserini.models import load_model, load_tokenizer
    torch.manual_seed(0)
    lm, _ = load_model(tiny_causal["base"], kind="causal", dtype="float32", device="cpu")
    lm.requires_grad_(False)
    return lm, load_tokenizer(tiny_causal["base"])


def _modules(lm):
    return {"none": None, "R": QPeftModule.create(lm, "R", k=4, seed=1).eval(),
            "A": QPeftModule.create(lm, "A", seed=2).eval()}


# ----------------------------------------------------------------------------------------------- scoring
@pytest.mark.parametrize("prompt", ["upr", "qpeft"])
def test_batched_scores_equal_reference(lm_tok, prompt):
    lm, tok = lm_tok
    enc = PromptEncoder(tok, prompt, max_doc_tokens=14, max_query_tokens=9)
    queries = [enc.encode_query(q) for q in QUERIES]
    docs = [enc.encode_doc(t, x) for t, x in DOCS]
    assert len({len(d.doc_ids) for d in docs}) > 1 and len({len(q.query_ids) for q in queries}) > 1  # mixed lengths
    assert len(docs[0].doc_ids) == 14 and len(queries[2].query_ids) == 9  # truncation applied
    pairs = [(q, d) for q in range(len(queries)) for d in range(len(docs))]
    modules = _modules(lm) if prompt == "qpeft" else {"none": None}
    for name, module in modules.items():
        # the reference: one pair at a time, hints computed for that pair alone, one unpadded full forward
        ref = []
        with torch.no_grad():
            for qi, di in pairs:
                mid = None
                if module is not None:
                    mid = module.hints([queries[qi].query_ids], [docs[di].doc_ids], lm.get_input_embeddings(), enc)[0]
                prefix, tail, n = enc.encode_pair(queries[qi], docs[di])
                ref.append(float(reference_loglik(lm, prefix, mid, tail, n)))
        for side in ("left", "right"):
            for cache in (True, False):
                scorer = QueryLikelihoodScorer(lm, enc, padding_side=side, prefix_cache=cache)
                with torch.no_grad():
                    got = scorer.loglik(queries, docs, pairs, module).tolist()
                assert got == pytest.approx(ref, abs=1e-4), (name, side, cache)
    # the scored tokens are exactly the query's (an exact reference by hand for one UPR / Q-PEFT pair)
    prefix, tail, n = enc.encode_pair(queries[0], docs[0])
    ids = list(prefix) + list(tail)
    with torch.no_grad():
        logp = torch.log_softmax(lm(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    manual = sum(float(logp[len(ids) - n - 1 + j, ids[len(ids) - n + j]]) for j in range(n)) / n
    if prompt == "upr":
        assert tok.decode(tail[-n:]).replace(" ", "") == QUERIES[0].replace(" ", "")
        with torch.no_grad():
            got = QueryLikelihoodScorer(lm, enc).loglik(queries, docs, [(0, 0)])
        assert float(got[0]) == pytest.approx(manual, abs=1e-4)


def test_scorer_score_multi_modules_and_batches(lm_tok):
    lm, tok = lm_tok
    enc = PromptEncoder(tok, "qpeft", max_doc_tokens=12)
    mods = _modules(lm)
    scorer = QueryLikelihoodScorer(lm, enc, batch_size=3)  # 4 documents: batches of 3 + 1
    multi = scorer.score(QUERIES[1], DOCS, modules=[None, mods["R"], mods["A"]])
    for i, m in enumerate([None, mods["R"], mods["A"]]):
        single = QueryLikelihoodScorer(lm, enc, batch_size=16).score(QUERIES[1], DOCS, modules=[m])[0]
        assert multi[i] == pytest.approx(single, abs=1e-5)
    assert multi[0] != pytest.approx(multi[1], abs=1e-3)  # hints change the scores


# ----------------------------------------------------------------------------------------------- R hints
def test_select_hint_ids_hand_made(lm_tok):
    _, tok = lm_tok
    enc = PromptEncoder(tok, "qpeft")
    vocab = tok.get_vocab()
    paris, france, capital, comma, bos = vocab["paris"], vocab["france"], vocab["capital"], vocab[","], tok.bos_token_id
    assert enc.is_skippable(comma) and enc.is_skippable(bos) and not enc.is_skippable(paris)
    doc = [bos, paris, comma, france, paris, capital]
    # 2 query tokens x 6 doc tokens; scores chosen so the ranking of pairs is known
    s = torch.tensor([[0.10, 0.95, 0.99, 0.20, 0.90, 0.30],
                      [0.97, 0.40, 0.50, 0.93, 0.94, 0.35]])
    # ranked pairs -> doc ids: comma(.99) bos(.97) paris(.95) paris(.94 dup) france(.93) paris(.90) ...
    assert select_hint_ids(s, doc, k=2, max_pairs=1000, skip=enc.is_skippable) == [paris, france]
    assert select_hint_ids(s, doc, k=10, max_pairs=1000, skip=enc.is_skippable) == [paris, france, capital]
    # only the top max_pairs pairs are looked at
    assert select_hint_ids(s, doc, k=10, max_pairs=4, skip=enc.is_skippable) == [paris]
    assert select_hint_ids(s[:, :0], [], k=3, max_pairs=1000, skip=enc.is_skippable) == []


def test_r_module_picks_query_tokens_found_in_the_document(lm_tok):
    """E' = E at creation: cos(E'[t], E[t]) = 1 is the top score, so document tokens equal to query tokens come
    first (query order on ties); padding in a batch changes nothing."""
    lm, tok = lm_tok
    enc = PromptEncoder(tok, "qpeft")
    m = QPeftModule.create(lm, "R", k=2, seed=0)
    ids = lambda s: enc._ids(s)
    q, d = ids("capital france"), ids("paris , is the capital of france .")
    other_q, other_d = ids("how do goldfish grow in their tank"), ids("goldfish")
    got = m.hint_ids([q, other_q], [d, other_d], lm.get_input_embeddings(), enc.is_skippable)
    assert got[0] == ids("capital") + ids("france")
    assert got[1] == ids("goldfish")
    alone = m.hint_ids([q], [d], lm.get_input_embeddings(), enc.is_skippable)
    assert alone[0] == got[0]
    h = m.hints([q], [d], lm.get_input_embeddings(), enc)[0]
    assert h.shape == (len(enc.hint_prefix_ids) + 2 + len(enc.hint_suffix_ids), lm.config.hidden_size)


# ----------------------------------------------------------------------------------------------- training
def _examples():
    texts = [("paris is the capital and most populous city of france", "what is the capital of france"),
             ("goldfish grow in proportion to the size of their tank and water quality", "how do goldfish grow"),
             ("diffusion tensor imaging of the newborn brain white matter", "diffusion tensor imaging of the newborn"),
             ("the quick brown fox jumps over the lazy dog", "the quick brown fox"),
             ("retrieval with large language models and lora", "retrieval with large language models")]
    ps = [Passage(str(i), "", t) for i, (t, _) in enumerate(texts)]
    return [Example(f"q{i}", q, [ps[i]], [p for j, p in enumerate(ps) if j != i]) for i, (_, q) in enumerate(texts)]


@pytest.mark.parametrize("variant", ["R", "A"])
def test_step_updates_only_module_and_lowers_loss(lm_tok, tmp_path, variant):
    lm, tok = lm_tok
    ex = _examples()
    cfg = TrainConfig(variant=variant, k=4, batch_size=3, lr=1e-2, max_doc_tokens=16, in_batch="all", seed=3)
    t = Trainer(lm, tok, ex, [], str(tmp_path), cfg)
    t.setup()
    llm_before = {k: v.clone() for k, v in lm.state_dict().items()}
    mod_before = {k: v.clone() for k, v in t.module.state_dict().items()}
    batch = ex[:3]
    t.module.eval()  # no dropout while measuring
    with torch.no_grad():
        loss0 = float(t.step_loss(batch, random.Random(0)))
    for step in range(6):
        t.module.train()
        t.optimizer.zero_grad(set_to_none=True)
        loss = t.step_loss(batch, random.Random(0))
        loss.backward()
        check_gradients(lm, t.module)  # grads in the module only
        assert all(p.grad is None for p in lm.parameters())
        t.optimizer.step()
    t.module.eval()
    with torch.no_grad():
        loss1 = float(t.step_loss(batch, random.Random(0)))
    assert loss1 < loss0
    for k, v in lm.state_dict().items():
        assert torch.equal(v, llm_before[k]), k  # the LLM never changes
    changed = [k for k, v in t.module.state_dict().items() if not torch.equal(v, mod_before[k])]
    assert "embed.weight" in changed and "mlp.0.weight" in changed
    if variant == "A":
        assert any(k.startswith("attn.") for k in changed)
    # only the E' rows that were used moved (the rest still equals the LLM's E)
    rows = (t.module.embed.weight != lm.get_input_embeddings().weight).any(1).sum()
    assert 0 < int(rows) < lm.config.vocab_size // 4
    # a leak into the LLM is caught
    p = lm.get_input_embeddings().weight
    p.grad = torch.zeros_like(p)
    with pytest.raises(RuntimeError, match="frozen LLM"):
        check_gradients(lm, t.module)
    p.grad = None


def test_gradient_checkpointing_same_loss_and_grads(tiny_causal, tmp_path):
    from repllama_pyserini.models import load_model, load_tokenizer
    tok = load_tokenizer(tiny_causal["base"])
    got = []
    for gc in (False, True):
        lm, _ = load_model(tiny_causal["base"], kind="causal", dtype="float32", device="cpu")
        t = Trainer(lm, tok, _examples(), [], str(tmp_path / str(gc)),
                    TrainConfig(variant="A", batch_size=3, max_doc_tokens=16, dropout=0.0, gradient_checkpointing=gc))
        t.setup()
        assert t.scorer.prefix_cache is not gc  # HF drops past_key_values under checkpointing: full sequences
        loss = t.step_loss(_examples()[:3], random.Random(0))
        loss.backward()
        check_gradients(lm, t.module)
        got.append((loss.item(), t.module.mlp[0].weight.grad.clone()))
    assert got[0][0] == pytest.approx(got[1][0], abs=1e-5)
    assert torch.allclose(got[0][1], got[1][1], atol=1e-6)


def test_save_load_round_trip(lm_tok, tmp_path, tiny_causal):
    lm, tok = lm_tok
    enc = PromptEncoder(tok, "qpeft", max_doc_tokens=12)
    for variant in ("R", "A"):
        m = QPeftModule.create(lm, variant, k=3, seed=5, base_model="tiny", prompt=enc.config())
        with torch.no_grad():
            m.embed.weight[[5, 17, 40]] += 0.25
            for p in m.mlp.parameters():
                p.add_(0.01)
        path = m.save(str(tmp_path / variant), lm.get_input_embeddings().weight)
        m.save(path, lm.get_input_embeddings().weight)  # overwriting works
        n_rows = json.load(open(os.path.join(path, "qpeft_config.json")))
        assert n_rows["variant"] == variant and n_rows["prompt"]["max_doc_tokens"] == 12
        from safetensors.torch import load_file
        saved = load_file(os.path.join(path, "qpeft.safetensors"))
        assert saved["embed_delta.index"].tolist() == [5, 17, 40]  # only the changed rows of E' are stored
        loaded = load_module(path, lm)
        for (k, a), (k2, b) in zip(m.state_dict().items(), loaded.state_dict().items()):
            assert k == k2 and torch.equal(a, b), k
        m.eval()
        s1 = QueryLikelihoodScorer(lm, enc).score(QUERIES[0], DOCS, modules=[m])[0]
        s2 = QueryLikelihoodScorer(lm, enc).score(QUERIES[0], DOCS, modules=[loaded])[0]
        assert s1 == s2
    # another LLM (same shapes, other embeddings) is refused
    from repllama_pyserini.models import load_model
    other, _ = load_model(tiny_causal["lora"], kind="causal", dtype="float32", device="cpu")
    with torch.no_grad():
        other.get_input_embeddings().weight.mul_(3.0)
    with pytest.raises(InputError, match="another LLM"):
        load_module(str(tmp_path / "R"), other)
    with pytest.raises(InputError, match="not a Q-PEFT module"):
        load_module(str(tmp_path), lm)


def test_train_early_stopping_checkpoint_and_resume(lm_tok, tmp_path):
    lm, tok = lm_tok
    ex = _examples()
    cfg = dict(variant="R", k=3, batch_size=2, lr=1e-2, max_doc_tokens=12, eval_every=2, dev_negatives=3, seed=1,
               in_batch="positives")
    out = str(tmp_path / "run")
    full = Trainer(lm, tok, ex[:4], ex[3:], out + "-full", TrainConfig(max_steps=4, patience=100, **cfg))
    full.setup()
    s_full = full.run()
    assert s_full["steps"] == 4 and s_full["stopped"] == "done"
    part = Trainer(lm, tok, ex[:4], ex[3:], out, TrainConfig(max_steps=2, patience=100, **cfg))
    part.setup()
    assert part.run()["steps"] == 2
    resumed = Trainer(lm, tok, ex[:4], ex[3:], out, TrainConfig(max_steps=4, patience=100, **cfg))
    resumed.setup(resume=True)
    assert resumed.state["step"] == 2
    s = resumed.run()
    assert s["steps"] == 4
    a = load_module(os.path.join(out, "checkpoint"), lm)
    b = load_module(os.path.join(out + "-full", "checkpoint"), lm)
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.allclose(x, y, atol=1e-5), k  # interrupted + resumed = uninterrupted
    for sub in ("module", "module-init", "checkpoint"):
        assert os.path.isfile(os.path.join(out, sub, "qpeft_config.json"))
    log = [json.loads(line) for line in open(os.path.join(out, "log.jsonl"))]
    assert log[0]["step"] == 0 and "dev_mrr" in log[0]
    # the dev criterion is the training loss (no in-batch negatives) on dev, recomputed here by hand
    m = resumed.evaluate_dev()
    want_loss, want_rr = [], []
    for e in ex[3:]:
        sc = resumed.scorer.score(e.query, [(p.title, p.text) for p in [e.positives[0]] + e.negatives[:3]],
                                  modules=[resumed.module])[0]
        want_loss.append(-sc[0] + sum(max(0.0, x - sc[0] + 0.5) for x in sc[1:]) / 3)
        want_rr.append(1 / (1 + sum(x > sc[0] for x in sc[1:])))
    assert m["dev_loss"] == pytest.approx(sum(want_loss) / 2, abs=1e-5)
    assert m["dev_mrr"] == pytest.approx(sum(want_rr) / 2)
    assert resumed._key(m) == [-m["dev_loss"]] and s["early_stopping"] == "loss"
    # early stopping: patience 1 with a dev metric that cannot improve stops early
    es = Trainer(lm, tok, ex[:4], ex[3:], str(tmp_path / "es"), TrainConfig(max_steps=20, patience=1, **cfg))
    es.setup()
    es._improved = lambda m: False
    assert es.run()["stopped"] == "early-stopping"
    assert es.state["step"] == 2
    # a time stop between evaluations still evaluates (and may keep) the steps done since the last one
    tl = Trainer(lm, tok, ex[:4], ex[3:], str(tmp_path / "tl"), TrainConfig(max_steps=20, patience=100, **cfg))
    tl.setup()
    inner = tl.step_loss

    def step_loss(batch, rng):
        if tl.state["step"] == 2:
            tl.cfg.max_minutes = 0.0  # out of time after this third step
        return inner(batch, rng)
    tl.step_loss = step_loss
    s = tl.run()
    assert s["stopped"] == "time" and s["steps"] == 3
    log = [json.loads(line) for line in open(tmp_path / "tl" / "log.jsonl")]
    assert [r["step"] for r in log] == [0, 2, 3] and "dev_mrr" in log[-1]


# ----------------------------------------------------------------------------------------------- readers
def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_tevatron_reader(tmp_path):
    good = {"query_id": "7", "query": "q", "positive_passages": [{"docid": "d1", "title": "t", "text": "x"}],
            "negative_passages": [{"docid": "d2", "text": "y"}]}
    p = tmp_path / "train.jsonl.gz"
    with gzip.open(p, "wt") as f:
        f.write(json.dumps(good) + "\n\n")
    ex = read_tevatron(str(p))
    assert ex[0].qid == "7" and ex[0].positives[0].docid == "d1" and ex[0].negatives[0].text == "y"
    assert read_examples(str(p))[0].query == "q"
    bad = [("{\"query\": \"q\"\n", "malformed JSON"),
           (json.dumps(dict(good, query="")) + "\n", "empty 'query'"),
           (json.dumps(dict(good, positive_passages=[])) + "\n", "no 'positive_passages'"),
           (json.dumps(dict(good, positive_passages={"docid": "x"})) + "\n", "must be a list"),
           (json.dumps(dict(good, negative_passages=[{"docid": "x"}])) + "\n", "has no 'text'"),
           ("[1, 2]\n", "expected a JSON object")]
    for i, (line, msg) in enumerate(bad):
        path = _write(tmp_path / f"bad{i}.jsonl", json.dumps(good) + "\n" + line)
        with pytest.raises(InputError, match=f"bad{i}.jsonl:2: .*{msg}"):
            read_tevatron(path)
    with pytest.raises(InputError, match="not found"):
        read_tevatron(str(tmp_path / "missing.jsonl"))


def test_dpr_reader(tmp_path):
    q1 = {"question": "who wrote hamlet", "answers": ["Shakespeare"],
          "ctxs": [{"id": "1", "title": "Hamlet", "text": "a play", "score": "12.5", "has_answer": False},
                   {"id": "2", "title": "Shakespeare", "text": "wrote hamlet", "score": 11, "has_answer": True}]}
    q2 = {"question": "capital of france", "answers": ["Paris"],
          "positive_ctxs": [{"passage_id": "9", "title": "Paris", "text": "the capital"}],
          "hard_negative_ctxs": [{"title": "Lyon", "text": "a city"}]}
    path = _write(tmp_path / "dpr.json", json.dumps([q1, q2], indent=2))
    ex = read_dpr(path)
    assert [e.query for e in ex] == ["who wrote hamlet", "capital of france"]
    assert [p.docid for p in ex[0].positives] == ["2"] and [p.docid for p in ex[0].negatives] == ["1"]
    assert [c.docid for c in ex[0].ctxs] == ["1", "2"] and ex[0].ctxs[0].score == 12.5
    assert ex[1].positives[0].docid == "9" and ex[1].negatives[0].docid.startswith("h")
    assert read_examples(path)[1].answers == ["Paris"]
    text = json.dumps([q1, q2], indent=2)
    line_q2 = text[:text.index('"capital of france"')].count("\n") + 1 - 1  # the line where q2's '{' is
    cases = [(json.dumps([q1, dict(q2, question="")], indent=2), line_q2, "empty 'question'"),
             (json.dumps([q1, {"question": "x", "answers": []}], indent=2), line_q2, "needs 'ctxs'"),
             (json.dumps([q1, {"question": "x", "ctxs": [{"id": "1", "text": "t"}]}], indent=2), line_q2,
              "has no 'has_answer'"),
             (json.dumps([q1, {"question": "x", "ctxs": [{"id": "1", "text": "t", "has_answer": 1,
                                                          "score": "high"}]}], indent=2), line_q2, "non-numeric"),
             ('[\n{"question": "x",\n "ctxs": [}\n]', 3, "malformed JSON"),
             ('{"question": "x"}', 1, "expected a JSON list")]
    for i, (content, line, msg) in enumerate(cases):
        p = _write(tmp_path / f"bad{i}.json", content)
        with pytest.raises(InputError, match=f"bad{i}.json:{line}: .*{msg}"):
            read_dpr(p)


def test_split_dev():
    ex = _examples()
    tr, dev = split_dev(ex, 0.4, seed=1)
    assert len(dev) == 2 and len(tr) == 3 and not {e.qid for e in tr} & {e.qid for e in dev}
    assert split_dev(ex, 0.4, seed=1) == (tr, dev)


# ----------------------------------------------------------------------------------------------- metrics
def test_qa_metrics_hand_computed():
    rankings = [[False, True, True], [False, False, False], [True, False, False]]
    m = qa_metrics(rankings, ks=(1, 2, 3))
    assert m["HR@1"] == pytest.approx(1 / 3) and m["HR@2"] == pytest.approx(2 / 3)
    assert m["Recall@1"] == pytest.approx((0 + 1) / 2) and m["Recall@2"] == pytest.approx((0.5 + 1) / 2)
    assert m["Recall@3"] == 1.0
    run = {"a": {"d1": 3, "d2": 2, "d3": 1}, "b": {"x": 1}}
    qrels = {"a": {"d2": 1, "d3": 2, "d9": 1}, "b": {"y": 1}, "c": {"z": 0}}
    r = run_qa_metrics(run, qrels, ks=(1, 2, 3))
    assert r["HR@1"] == 0 and r["HR@2"] == 0.5 and r["Recall@3"] == pytest.approx((2 / 3) / 2)


# ----------------------------------------------------------------------------------------------- reranker
def test_reranker_interface_and_resume(lm_tok, tmp_path):
    from repllama_pyserini.corpus_lookup import Doc
    lm, tok = lm_tok
    mod = QPeftModule.create(lm, "A", seed=0).eval()
    rr = QPeftReranker(lm, tok, [mod], prompt="qpeft", max_doc_tokens=12, depth=3, batch_size=2)
    hits = [SimpleNamespace(docid=f"d{i}", score=10.0 - i, contents=f"{t} {x}".strip()) for i, (t, x) in
            enumerate(DOCS)]
    out = rr.rerank(QUERIES[0], hits)
    assert len(out) == 3 and [h.score for h in out] == sorted([h.score for h in out], reverse=True)
    expected = QueryLikelihoodScorer(lm, rr.encoder).score(QUERIES[0], [("", h.contents) for h in hits[:3]],
                                                           modules=[mod])[0]
    assert {h.docid: h.score for h in out} == pytest.approx({f"d{i}": s for i, s in enumerate(expected)}, abs=1e-5)
    assert {h.docid: h.first_stage_score for h in out} == {"d0": 10.0, "d1": 9.0, "d2": 8.0}
    # TREC-run reranking through the shared plumbing, resumable per query
    docs = {f"d{i}": Doc(t, x) for i, (t, x) in enumerate(DOCS)}
    topics = {"1": QUERIES[0], "2": QUERIES[1]}
    run = {q: {f"d{i}": 1.0 / (i + 1) for i in range(4)} for q in topics}
    ck = str(tmp_path / "ck.jsonl")
    res, stats = rr.rerank_run(topics, run, docs, depth=4, checkpoint=ck, progress=False)
    assert stats.pairs == 8 and set(res) == {"1", "2"}
    res2, stats2 = rr.rerank_run(topics, run, docs, depth=4, checkpoint=ck, progress=False)
    assert stats2.resumed == 2 and stats2.pairs == 0
    assert all(res2[q] == pytest.approx(res[q]) for q in res)
    with pytest.raises(InputError, match="prompt='qpeft'"):
        QPeftReranker(lm, tok, [mod], prompt="upr")


# ----------------------------------------------------------------------------------------------- CLI
def _cli(argv):
    from repllama_pyserini.qpeft.__main__ import main
    main(argv)


def test_cli_train_rerank_eval(tiny_causal, tmp_path, capsys):
    base = tiny_causal["base"]
    train = tmp_path / "train.jsonl"
    with open(train, "w") as f:
        for e in _examples():
            f.write(json.dumps({"query_id": e.qid, "query": e.query,
                                "positive_passages": [vars(p) for p in e.positives],
                                "negative_passages": [vars(p) for p in e.negatives]}) + "\n")
    out = tmp_path / "qpeft-r"
    _cli(["train", "--model", base, "--variant", "r", "--train", str(train), "--output", str(out),
          "--max-steps", "2", "--train-batch-size", "2", "--dev-fraction", "0.4", "--dev-negatives", "2",
          "--max-doc-tokens", "12", "--eval-every", "1", "--k", "3"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 2 and summary["dev_examples"] == 2
    # the reranker takes the LLM and the prompt settings from the module's config unless told otherwise
    rr = QPeftReranker.from_pretrained(module=str(out), max_doc_tokens=None)
    assert rr.encoder.prompt == "qpeft" and rr.encoder.max_doc_tokens == 12 and rr.modules[0].config.variant == "R"
    assert QPeftReranker.from_pretrained(module=str(out), max_doc_tokens=20).encoder.max_doc_tokens == 20
    # rank_llm candidates in, two modules (before/after) in one pass
    cands = [{"query": e.query, "hits": [{"qid": e.qid, "docid": p.docid, "rank": r + 1, "score": 5.0 - r,
                                          "content": p.text} for r, p in enumerate(e.positives + e.negatives)]}
             for e in _examples()]
    cpath = tmp_path / "cands.json"
    cpath.write_text(json.dumps(cands))
    o1, o2 = str(tmp_path / "before.trec"), str(tmp_path / "after.trec")
    _cli(["rerank", "--module", str(out / "module-init"), str(out), "--candidates", str(cpath), "--output", o1, o2,
          "--depth", "3", "--sample-queries", "3", "--no-progress"])
    r1, r2 = read_run(o1), read_run(o2)
    assert len(r1) == 3 and set(r1) == set(r2) and all(len(v) == 3 for v in r1.values())
    assert not os.path.exists(o1 + ".ckpt.jsonl")
    # the same with the single-module path (RankLLaMA's rerank_run) gives the same scores
    o3 = str(tmp_path / "after1.trec")
    _cli(["rerank", "--module", str(out), "--candidates", str(cpath), "--output", o3, "--depth", "3",
          "--sample-queries", "3", "--no-progress"])
    r3 = read_run(o3)
    assert {q: {d: round(s, 4) for d, s in v.items()} for q, v in r3.items()} == \
        {q: {d: round(s, 4) for d, s in v.items()} for q, v in r2.items()}
    # UPR over a TREC run + topics + corpus
    topics = tmp_path / "topics.tsv"
    topics.write_text("".join(f"{e.qid}\t{e.query}\n" for e in _examples()))
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": p.docid, "title": "", "text": p.text}) + "\n"
                              for p in _examples()[0].positives + _examples()[0].negatives))
    runf = tmp_path / "bm25.trec"
    runf.write_text("".join(f"{e.qid} Q0 {d} {r + 1} {5 - r} bm25\n" for e in _examples()
                            for r, d in enumerate(["0", "1", "2", "3"])))
    o4 = str(tmp_path / "upr.trec")
    _cli(["rerank", "--model", base, "--prompt", "upr", "--run", str(runf), "--topics", str(topics), "--corpus",
          str(corpus), "--output", o4, "--depth", "4", "--no-progress"])
    assert len(read_run(o4)) == 5
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("".join(f"{e.qid} 0 {e.positives[0].docid} 1\n" for e in _examples()))
    capsys.readouterr()
    _cli(["eval", "--run", o4, o1, "--qrels", str(qrels), "--only-run-queries", "--qa", "--ks", "1", "3",
          "--metrics", "nDCG@10"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:4] == ["run", "nDCG@10", "HR@1", "HR@3"]  # eval's table
    assert "(5 q)" in lines[1] and "(3 q)" in lines[2] and len(lines) == 3
    # DPR in, DPR out
    dpr = [{"question": e.query, "answers": ["x"],
            "ctxs": [{"id": p.docid, "title": "", "text": p.text, "score": 1.0, "has_answer": p in e.positives}
                     for p in e.negatives[:2] + e.positives]} for e in _examples()[:2]]
    dpath = tmp_path / "dpr.json"
    dpath.write_text(json.dumps(dpr))
    _cli(["rerank-dpr", "--model", base, "--input", str(dpath), "--output", str(tmp_path / "dpr.out.json"),
          "--depth", "2", "--ks", "1", "3", "--no-progress"])
    report = json.loads(capsys.readouterr().out)
    assert report["first_stage"]["HR@1"] == 0 and report["first_stage"]["HR@3"] == 1 and report["questions"] == 2
    written = json.load(open(tmp_path / "dpr.out.json"))
    assert [c["id"] for c in written[0]["ctxs"]][2] == dpr[0]["ctxs"][2]["id"]  # beyond depth: order kept
    assert "score" in written[0]["ctxs"][0] and "score" not in written[0]["ctxs"][2]


def test_cli_train_mines_bm25_negatives(tiny_causal, tmp_path, capsys):
    """A Tevatron file without negatives + a corpus: Pyserini BM25 negatives (train.negatives.mine), positives and
    judged-relevant documents excluded."""
    ex = _examples()
    corpus = tmp_path / "corpus.jsonl"
    mixed = ["capital city goldfish tank", "newborn brain imaging fox", "language models capital france goldfish",
             "quick brown retrieval diffusion tensor grow"]  # BM25 finds these for several queries
    corpus.write_text("".join(json.dumps({"_id": p.docid, "title": "", "text": p.text}) + "\n"
                              for p in ex[0].positives + ex[0].negatives) +
                      "".join(json.dumps({"_id": f"m{i}", "text": t}) + "\n" for i, t in enumerate(mixed)))
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"query_id": e.qid, "query": e.query,
                                         "positive_passages": [vars(p) for p in e.positives],
                                         "negative_passages": []}) + "\n" for e in ex))
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("q0 0 0 1\nq0 0 m2 1\n")  # m2 is also relevant to q0: never its negative
    from repllama_pyserini.qpeft.data import add_bm25_negatives, read_tevatron
    got = read_tevatron(str(train))
    assert add_bm25_negatives(got, str(corpus), str(tmp_path / "index"), depth=10, n=3,
                              qrels={"q0": {"0": 1, "m2": 1}}) == 5
    for e in got:
        ids = [p.docid for p in e.negatives]
        assert 0 < len(ids) <= 3 and e.positives[0].docid not in ids and len(set(ids)) == len(ids)
        assert all(p.text for p in e.negatives)
    assert [p.docid for p in got[0].negatives] == ["m0"]  # capital (m2 judged relevant, so left out)
    _cli(["train", "--model", tiny_causal["base"], "--variant", "A", "--train", str(train), "--corpus", str(corpus),
          "--bm25-index", str(tmp_path / "index"), "--qrels", str(qrels), "--negatives", "2", "--output",
          str(tmp_path / "out"), "--max-steps", "1", "--dev-fraction", "0", "--max-doc-tokens", "8"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 1 and summary["train_examples"] == 5 and summary["dev_examples"] == 0
    assert os.path.isfile(tmp_path / "out" / "module" / "qpeft_config.json")


def test_cli_bad_input(tmp_path, capsys):
    from repllama_pyserini.io import run_cli
    from repllama_pyserini.qpeft.__main__ import main
    bad = _write(tmp_path / "t.jsonl", '{"query": "q", "positive_passages": [}\n')
    with pytest.raises(SystemExit) as e:
        run_cli(main, ["train", "--model", "x", "--train", bad, "--output", str(tmp_path / "o")])
    assert e.value.code == 2 and "t.jsonl:1: malformed JSON" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_cli(main, ["rerank", "--model", "x", "--output", "o", "--run", "r"])
    assert "pass --run, --topics and --corpus" in capsys.readouterr().err
