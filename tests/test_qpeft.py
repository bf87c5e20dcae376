"""Q-PEFT / UPR on a tiny random LLaMA: batched scores = the one-pair-at-a-time reference (left/right padding,
mixed lengths, with and without the shared prefix cache), R hint selection on a hand-made example, save/load round
trip; training on transformers' Trainer (the batch and its loss by hand, gradients only in the module, the loss goes
down, gradient checkpointing, dev metrics by hand, early stopping, the time limit, continued run = uninterrupted run,
refused and overwritten runs); readers, QA metrics, the reranker interface and the CLI."""
import gzip
import json
import os
from types import SimpleNamespace

import pytest
import torch

from repllama_pyserini.cli import InputError, run_cli
from repllama_pyserini.formats import Doc, read_run
from repllama_pyserini.formats.dpr import read_dpr, read_training
from repllama_pyserini.formats.tevatron import Group, Passage, read_groups
from repllama_pyserini.qpeft import (PromptEncoder, QPeftModule, QPeftReranker, QueryLikelihoodScorer, load_module,
                                     reference_loglik, select_hint_ids)
from repllama_pyserini.qpeft.data import split_dev
from repllama_pyserini.eval.qa import qa_metrics, run_qa_metrics
from repllama_pyserini.qpeft.train import (Collator, TrainConfig, build_trainer, check_gradients, dev_metrics,
                                           train)

pytestmark = pytest.mark.usefixtures("one_thread")

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
    return [Group(f"q{i}", q, [ps[i]], [p for j, p in enumerate(ps) if j != i]) for i, (_, q) in enumerate(texts)]


def test_collator_pairs_and_in_batch_negatives(lm_tok):
    _, tok = lm_tok
    ex = _examples()
    ps = [e.positives[0] for e in ex]
    items = [(ex[0], ps[0], ps[1]), (ex[1], ps[1], ps[0]), (ex[2], ps[2], ps[3])]  # d- of q1 is q0's positive
    enc = PromptEncoder(tok, "qpeft", max_doc_tokens=8)
    want = {  # passages 0..3 = ps[0..3]; per query: its d+ then its negatives (never one of its own positives)
        "all": [[0, 1, 2, 3], [1, 0, 2, 3], [2, 3, 0, 1]],
        "positives": [[0, 1, 2], [1, 0, 2], [2, 3, 0, 1]],
        "none": [[0, 1], [1, 0], [2, 3]]}
    for in_batch, docs_of in want.items():
        got = Collator(enc, in_batch)(items)
        assert [d.doc_ids for d in got["docs"]] == [enc.encode_doc("", p.text).doc_ids for p in ps[:4]]
        assert [q.query_ids for q in got["queries"]] == [enc.encode_query(e.query).query_ids for e in ex[:3]]
        assert got["pairs"] == [(i, d) for i, ds in enumerate(docs_of) for d in ds]
        starts = [sum(len(ds) for ds in docs_of[:i]) for i in range(3)]
        assert got["groups"] == [(s, list(range(s + 1, s + len(ds)))) for s, ds in zip(starts, docs_of)]


@pytest.mark.parametrize("variant", ["R", "A"])
def test_step_updates_only_module_and_lowers_loss(lm_tok, tmp_path, variant):
    lm, tok = lm_tok
    cfg = TrainConfig(variant=variant, k=4, batch_size=3, lr=1e-2, max_doc_tokens=16, in_batch="all", seed=3)
    tr = build_trainer(lm, tok, _examples(), [], str(tmp_path), cfg)
    model, opt = tr.model, tr.optimizer
    assert list(model.parameters()) == list(model.module.parameters())  # the LLM is outside the module tree
    assert set(model.state_dict()) == {f"module.{k}" for k in model.module.state_dict()}
    inputs = tr.data_collator([tr.train_dataset[i] for i in range(3)])
    # the loss by hand from one-pair-at-a-time log-likelihoods: mean_i [nll(d+) + mean_d- max(0, nll(d+) - nll(d-) + m)]
    model.eval()  # no dropout while measuring
    with torch.no_grad():
        nll = [-float(model.scorer.loglik([inputs["queries"][q]], [inputs["docs"][d]], [(0, 0)], model.module))
               for q, d in inputs["pairs"]]
        loss0 = float(model(**inputs).loss)
    by_hand = sum(nll[p] + sum(max(0.0, nll[p] - nll[n] + 0.5) for n in ns) / len(ns)
                  for p, ns in inputs["groups"]) / 3
    assert loss0 == pytest.approx(by_hand, abs=1e-5)
    llm_before = {k: v.clone() for k, v in lm.state_dict().items()}
    mod_before = {k: v.clone() for k, v in model.module.state_dict().items()}
    for _ in range(6):
        model.train()
        opt.zero_grad(set_to_none=True)
        model(**inputs).loss.backward()
        check_gradients(lm, model.module)  # grads in the module only
        assert all(p.grad is None for p in lm.parameters())
        opt.step()
    model.eval()
    with torch.no_grad():
        assert float(model(**inputs).loss) < loss0 - 0.01
    for k, v in lm.state_dict().items():
        assert torch.equal(v, llm_before[k]), k  # the LLM never changes
    changed = {k for k, v in model.module.state_dict().items() if not torch.equal(v, mod_before[k])}
    assert {"embed.weight", "mlp.0.weight", "mlp.2.weight"} <= changed
    assert any(k.startswith("attn.") for k in changed) == (variant == "A")
    # only the E' rows that were used moved (the rest still equals the LLM's E); the optimizer saves just those rows
    rows = (model.module.embed.weight != lm.get_input_embeddings().weight).any(1).nonzero()[:, 0]
    saved = opt.state_dict()["state"][0]
    assert torch.equal(saved["exp_avg@rows"], rows) and "exp_avg" not in saved
    assert 0 < len(rows) < lm.config.vocab_size // 4
    full = {k: v.clone() for k, v in opt.state[model.module.embed.weight].items()}
    opt.load_state_dict(opt.state_dict())
    assert all(torch.equal(full[k], v) for k, v in opt.state[model.module.embed.weight].items())
    # a leak into the LLM is caught, also by the Trainer's step
    p = lm.get_input_embeddings().weight
    p.grad = torch.zeros_like(p)
    with pytest.raises(RuntimeError, match="frozen LLM"):
        check_gradients(lm, model.module)
    p.grad = None
    p.requires_grad_(True)
    try:
        with pytest.raises(RuntimeError, match="gradients reach the frozen LLM: \\['model.embed_tokens.weight'\\]"):
            tr.train()
    finally:
        p.requires_grad_(False)
        p.grad = None


def test_gradient_checkpointing_same_loss_and_grads(tiny_causal, tmp_path):
    from repllama_pyserini.models import load_model, load_tokenizer
    tok = load_tokenizer(tiny_causal["base"])
    got = []
    for gc in (False, True):
        lm, _ = load_model(tiny_causal["base"], kind="causal", dtype="float32", device="cpu")
        tr = build_trainer(lm, tok, _examples(), [], str(tmp_path / str(gc)),
                           TrainConfig(variant="A", batch_size=3, max_doc_tokens=16, dropout=0.0,
                                       gradient_checkpointing=gc))
        assert tr.model.scorer.prefix_cache is not gc  # HF drops past_key_values under checkpointing
        assert lm.model.gradient_checkpointing is gc
        loss = tr.model(**tr.data_collator([tr.train_dataset[i] for i in range(3)])).loss
        loss.backward()
        check_gradients(lm, tr.model.module)
        got.append((loss.item(), tr.model.module.mlp[0].weight.grad.clone()))
    assert got[0][0] == pytest.approx(got[1][0], abs=1e-5)
    assert torch.allclose(got[0][1], got[1][1], atol=1e-6)


def test_dev_metrics_by_hand(lm_tok):
    lm, tok = lm_tok
    ex = _examples()
    enc = PromptEncoder(tok, "qpeft", max_doc_tokens=12)
    scorer, mod = QueryLikelihoodScorer(lm, enc), QPeftModule.create(lm, "R", k=3, seed=0).eval()
    m = dev_metrics(scorer, mod, ex[3:], negatives=3, margin=0.5)
    want_loss, want_rr, want_nll = [], [], []
    for e in ex[3:]:
        with torch.no_grad():
            sc = [float(scorer.loglik([enc.encode_query(e.query)], [enc.encode_doc(p.title, p.text)], [(0, 0)], mod))
                  for p in [e.positives[0]] + e.negatives[:3]]
        want_loss.append(-sc[0] + sum(max(0.0, x - sc[0] + 0.5) for x in sc[1:]) / 3)
        want_rr.append(1 / (1 + sum(x > sc[0] for x in sc[1:])))
        want_nll.append(-sc[0])
    assert m == pytest.approx({"loss": sum(want_loss) / 2, "mrr": sum(want_rr) / 2, "nll": sum(want_nll) / 2,
                               "queries": 2}, abs=1e-5)


TRAIN = dict(k=3, batch_size=2, lr=1e-2, max_doc_tokens=12, eval_every=1, dev_negatives=2, seed=1, patience=100)


def _log_records(out):
    with open(os.path.join(out, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


def _same_module(a, b, lm):
    a, b = load_module(a, lm).state_dict(), load_module(b, lm).state_dict()
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_continued_run_equals_uninterrupted(lm_tok, tmp_path):
    """Variant A (attention dropout: the RNG states matter), 5 queries in batches of 2 (3 steps per epoch): 2 steps,
    then the same call with max_steps 5 continues mid-epoch and across the epoch boundary, to the same module."""
    lm, tok = lm_tok
    ex, messages = _examples(), []
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    s_one = train(lm, tok, ex, ex[3:], one, TrainConfig(variant="A", max_steps=5, **TRAIN), progress=False)
    s_part = train(lm, tok, ex, ex[3:], two, TrainConfig(variant="A", max_steps=2, **TRAIN), progress=False)
    assert (s_part["stopped"], s_part["steps"]) == ("done", 2)
    os.makedirs(os.path.join(two, "checkpoint-9"))  # cut short by a kill (no trainer state): not used, removed
    s_two = train(lm, tok, ex, ex[3:], two, TrainConfig(variant="A", max_steps=5, **TRAIN), log=messages.append,
                  progress=False)
    assert messages == [f"continuing from {two}/checkpoint-2 (step 2)"]
    drop = ("seconds",)
    assert {k: v for k, v in s_two.items() if k not in drop} == {k: v for k, v in s_one.items() if k not in drop}
    assert (s_one["stopped"], s_one["steps"], s_one["train_examples"], s_one["dev_examples"]) == ("done", 5, 5, 2)
    assert sorted(os.listdir(two)) == sorted(os.listdir(one)) == [
        "LOCK", "checkpoint-5", "log.jsonl", "module", "module-init", "train_config.json", "train_summary.json"]
    for sub in ("checkpoint-5", "module", "module-init"):
        assert _same_module(os.path.join(one, sub), os.path.join(two, sub), lm), sub
    assert not _same_module(os.path.join(one, "module-init"), os.path.join(one, "checkpoint-5"), lm)
    # the dev evaluations (start, every step) are the same; the best is the module/ saved
    evals = [[(r["step"], r["eval_loss"]) for r in _log_records(d) if "eval_loss" in r] for d in (one, two)]
    assert evals[0] == evals[1] and [s for s, _ in evals[0]] == [0, 1, 2, 3, 4, 5]
    best = min(evals[0], key=lambda x: x[1])
    assert (s_one["best_step"], s_one["best_dev"]) == best
    # killed between the last checkpoint and the summary: the summary is written from the checkpoint
    os.unlink(os.path.join(two, "train_summary.json"))
    assert train(lm, tok, ex, ex[3:], two, TrainConfig(variant="A", max_steps=5, **TRAIN)) == dict(s_two, seconds=0.0)
    s_two["seconds"] = 0.0
    # the same call again: reported, nothing trained
    again = train(lm, tok, ex, ex[3:], two, TrainConfig(variant="A", max_steps=5, **TRAIN), log=messages.append)
    assert again == s_two
    assert messages[-1] == f"already complete: {two} (same settings and data; --overwrite trains again)"
    # other settings or data are refused, naming what changed
    with pytest.raises(InputError) as e:
        train(lm, tok, ex, ex[3:], two, TrainConfig(variant="A", max_steps=5, **dict(TRAIN, lr=0.02)))
    assert str(e.value) == (f"{two} holds a Q-PEFT training with other settings (config.lr: 0.01 -> 0.02); pass "
                            f"--overwrite to start afresh, or write elsewhere")
    with pytest.raises(InputError) as e:
        train(lm, tok, ex[1:], ex[3:], two, TrainConfig(variant="A", max_steps=5, **TRAIN))
    assert str(e.value) == (f"{two} holds a Q-PEFT training with other settings (inputs.train: content changed); "
                            f"pass --overwrite to start afresh, or write elsewhere")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="holds no Q-PEFT training"):
        train(lm, tok, ex, ex[3:], str(tmp_path / "other"), TrainConfig(variant="A", max_steps=1, **TRAIN))
    # overwrite: a fresh run, here R for 1 step
    s = train(lm, tok, ex, ex[3:], two, TrainConfig(variant="R", max_steps=1, **TRAIN), overwrite=True)
    assert (s["steps"], s["config"]["variant"]) == (1, "R") and "checkpoint-1" in os.listdir(two)
    assert "checkpoint-5" not in os.listdir(two) and [r["step"] for r in _log_records(two)][0] == 0


def test_early_stopping_and_time_limit(lm_tok, tmp_path):
    lm, tok = lm_tok
    ex = _examples()
    # lr 0: the dev loss never improves on the untrained module's (step 0): patience 2 stops at the 2nd evaluation
    out = str(tmp_path / "es")
    s = train(lm, tok, ex, ex[3:], out, TrainConfig(max_steps=20, **dict(TRAIN, lr=0.0, patience=2, eval_every=2)))
    assert (s["stopped"], s["steps"], s["best_step"]) == ("early-stopping", 4, 0)
    assert _same_module(os.path.join(out, "module"), os.path.join(out, "module-init"), lm)
    assert [r["step"] for r in _log_records(out) if "eval_loss" in r] == [0, 2, 4]
    s2 = train(lm, tok, ex, ex[3:], out, TrainConfig(max_steps=30, **dict(TRAIN, lr=0.0, patience=2, eval_every=2)))
    assert s2 == s  # an early-stopped run is finished whatever its length
    # MRR as the criterion: a tie is no improvement either
    s = train(lm, tok, ex, ex[3:], str(tmp_path / "mrr"),
              TrainConfig(max_steps=20, early_stopping="mrr", **dict(TRAIN, lr=0.0, patience=1)))
    assert (s["stopped"], s["steps"], s["best_step"], s["early_stopping"]) == ("early-stopping", 1, 0, "mrr")
    # the time limit (0 minutes: after the first step) stops, evaluates and saves between evaluations
    out = str(tmp_path / "time")
    cfg = TrainConfig(max_steps=20, max_minutes=0.0, **dict(TRAIN, eval_every=5))
    s = train(lm, tok, ex, ex[3:], out, cfg)
    assert (s["stopped"], s["steps"]) == ("time", 1)
    assert [r["step"] for r in _log_records(out) if "eval_loss" in r] == [0, 1]
    assert [r["step"] for r in _log_records(out) if "loss" in r] == [1]  # the training loss since the last log
    assert "checkpoint-1" in os.listdir(out)
    s = train(lm, tok, ex, ex[3:], out, cfg)  # the same call continues: one more step in its minute budget
    assert (s["stopped"], s["steps"]) == ("time", 2)
    assert [r["step"] for r in _log_records(out) if "eval_loss" in r] == [0, 1, 2]
    # without dev: no evaluation, module/ is the last module
    out = str(tmp_path / "nodev")
    s = train(lm, tok, ex, [], out, TrainConfig(max_steps=3, **dict(TRAIN, eval_every=2)))
    assert (s["stopped"], s["steps"], s["best_step"], s["best_dev"], s["dev_examples"]) == ("done", 3, None, None, 0)
    assert _same_module(os.path.join(out, "module"), os.path.join(out, "checkpoint-3"), lm)
    assert not any("eval_loss" in r for r in _log_records(out))


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
    ex = read_groups(str(p))
    assert ex[0].qid == "7" and ex[0].positives[0].docid == "d1" and ex[0].negatives[0].text == "y"
    assert read_training(str(p)) == ex
    first = json.dumps(dict(good, query_id="1")) + "\n"
    bad = [("{\"query\": \"q\"\n", "malformed JSON (Expecting ',' delimiter)"),
           (json.dumps(dict(good, query="")) + "\n", "no 'query' text"),
           (json.dumps(dict(good, positive_passages=[])) + "\n", "query '7' has no positive passage"),
           (json.dumps(dict(good, positive_passages={"docid": "x"})) + "\n", "'positive_passages' must be a list"),
           (json.dumps(dict(good, negative_passages=[{"docid": "x"}])) + "\n",
            "negative_passages[0]: passage has no 'text'"),
           ("[1, 2]\n", "expected a JSON object, got list"),
           (json.dumps(dict(good, query_id="1")) + "\n", "query id '1' appears a second time (first at {path}:1)")]
    for i, (line, msg) in enumerate(bad):
        path = _write(tmp_path / f"bad{i}.jsonl", first + line)
        with pytest.raises(InputError) as e:
            read_groups(path)
        assert str(e.value) == f"{path}:2: " + msg.format(path=path)
    # Q-PEFT reads its training data with positives optional (mined or DPR files may lack them)
    assert read_training(_write(tmp_path / "nopos.jsonl", first + json.dumps(dict(good, positive_passages=[]))))[
        1].positives == []
    with pytest.raises(InputError) as e:
        read_groups(str(tmp_path / "missing.jsonl"))
    assert str(e.value) == f"training data not found: {tmp_path / 'missing.jsonl'}"


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
    assert read_training(path)[1].answers == ["Paris"]
    text = json.dumps([q1, q2], indent=2)
    line_q2 = text[:text.index('"capital of france"')].count("\n")  # the line where q2's '{' is
    cases = [(json.dumps([q1, dict(q2, question="")], indent=2), line_q2, "missing or empty 'question'"),
             (json.dumps([q1, {"question": "x", "answers": []}], indent=2), line_q2,
              "a question needs 'ctxs' (retriever results) or 'positive_ctxs' (training)"),
             (json.dumps([q1, {"question": "x", "ctxs": [{"id": "1", "text": "t"}]}], indent=2), line_q2,
              "ctxs[0] has no 'has_answer'"),
             (json.dumps([q1, {"question": "x", "ctxs": [{"id": "1", "text": "t", "has_answer": 1,
                                                          "score": "high"}]}], indent=2), line_q2,
              "ctxs[0]: passage '1' has a non-numeric score 'high'"),
             ('[\n{"question": "x",\n "ctxs": [}\n]', 3, "malformed JSON (Expecting value)"),
             ('{"question": "x"}', 1, "expected a JSON list of questions")]
    for i, (content, line, msg) in enumerate(cases):
        p = _write(tmp_path / f"bad{i}.json", content)
        with pytest.raises(InputError) as e:
            read_dpr(p)
        assert str(e.value) == f"{p}:{line}: {msg}"


def test_split_dev():
    ex = _examples()
    tr, dev = split_dev(ex, 0.4, seed=1)
    assert len(dev) == 2 and len(tr) == 3 and not {e.qid for e in tr} & {e.qid for e in dev}
    assert split_dev(ex, 0.4, seed=1) == (tr, dev)
    assert [e.qid for e in tr + dev] != [e.qid for e in split_dev(ex, 0.4, seed=2)[0] + split_dev(ex, 0.4, seed=2)[1]]


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
    lm, tok = lm_tok
    mod = QPeftModule.create(lm, "A", seed=0).eval()
    rr = QPeftReranker(lm, tok, [mod], prompt="qpeft", max_doc_tokens=12, depth=3, batch_size=2)
    assert rr.heads == 1
    hits = [SimpleNamespace(docid=f"d{i}", score=10.0 - i, contents=f"{t} {x}".strip()) for i, (t, x) in
            enumerate(DOCS)]
    out = rr.rerank(QUERIES[0], hits)
    assert len(out) == 3 and [h.score for h in out] == sorted([h.score for h in out], reverse=True)
    expected = QueryLikelihoodScorer(lm, rr.encoder).score(QUERIES[0], [("", h.contents) for h in hits[:3]],
                                                           modules=[mod])[0]
    assert {h.docid: h.score for h in out} == pytest.approx({f"d{i}": s for i, s in enumerate(expected)}, abs=1e-5)
    assert {h.docid: h.first_stage_score for h in out} == {"d0": 10.0, "d1": 9.0, "d2": 8.0}
    # TREC-run reranking through the shared plumbing: a resumable job (chunks of at most 4 pairs: one per query)
    docs = {f"d{i}": Doc(t, x) for i, (t, x) in enumerate(DOCS)}
    topics = {"1": QUERIES[0], "2": QUERIES[1]}
    run = {q: {f"d{i}": 1.0 / (i + 1) for i in range(4)} for q in topics}
    job = str(tmp_path / "job")
    res, stats = rr.rerank_run(topics, run, docs, depth=4, job_dir=job, progress=False, chunk_pairs=4)
    assert (stats.pairs, stats.resumed, set(res)) == (8, 0, {"1", "2"})
    res2, stats2 = rr.rerank_run(topics, run, docs, depth=4, job_dir=job, progress=False, chunk_pairs=4)
    assert (stats2.pairs, stats2.resumed) == (0, 2) and res2 == res
    with pytest.raises(InputError, match="holds the progress of a job with other settings"):
        rr.rerank_run(topics, run, docs, depth=3, job_dir=job, progress=False, chunk_pairs=4)
    # two modules: one run per module in one pass, the first equal to the single-module run
    rr2 = QPeftReranker(lm, tok, [mod, QPeftModule.create(lm, "R", k=3, seed=1).eval()], prompt="qpeft",
                        max_doc_tokens=12, batch_size=2)
    assert rr2.heads == 2 and rr2.identity()["modules"][0] == rr.identity()["modules"][0]
    runs, _ = rr2.rerank_runs(topics, run, docs, depth=4, progress=False)
    assert set(runs[0]) == set(res) and all(runs[0][q] == pytest.approx(res[q], abs=1e-5) for q in res)
    assert runs[1]["1"] != pytest.approx(runs[0]["1"], abs=1e-3)
    with pytest.raises(InputError, match="prompt='qpeft'"):
        QPeftReranker(lm, tok, [mod], prompt="upr")


# ----------------------------------------------------------------------------------------------- CLI
def _cli(argv):
    from repllama_pyserini.qpeft.__main__ import main
    main(argv)


def _tevatron_file(path, examples):
    with open(path, "w") as f:
        for e in examples:
            f.write(json.dumps({"query_id": e.qid, "query": e.query,
                                "positive_passages": [{"docid": p.docid, "title": p.title, "text": p.text}
                                                      for p in e.positives],
                                "negative_passages": [{"docid": p.docid, "title": p.title, "text": p.text}
                                                      for p in e.negatives]}) + "\n")
    return str(path)


def test_cli_train_resume_overwrite(tiny_causal, lm_tok, tmp_path, capsys):
    from repllama_pyserini.qpeft.__main__ import main
    base, lm = tiny_causal["base"], lm_tok[0]
    train_file = _tevatron_file(tmp_path / "train.jsonl", _examples())
    out = str(tmp_path / "qpeft-a")
    argv = ["train", "--model", base, "--variant", "a", "--train", train_file, "--output", out, "--max-steps", "3",
            "--train-batch-size", "2", "--dev-fraction", "0.4", "--dev-negatives", "2", "--max-doc-tokens", "12",
            "--eval-every", "2", "--no-progress"]
    _cli(argv[:-1] + ["--max-steps", "2"])  # two steps (progress lines on), then the same command continues to 3
    assert "step=2 eval_loss=" in capsys.readouterr().err
    _cli(argv)
    cap = capsys.readouterr()
    summary = json.loads(cap.out.strip().splitlines()[-1])
    assert f"continuing from {out}/checkpoint-2 (step 2)" in cap.err and "eval_loss=" not in cap.err
    assert (summary["stopped"], summary["steps"], summary["train_examples"], summary["dev_examples"]) == \
        ("done", 3, 3, 2)
    _cli(argv)  # finished: reported without loading the LLM
    cap = capsys.readouterr()
    assert cap.err == f"already complete: {out} (same settings and data; --overwrite trains again)\n"
    assert json.loads(cap.out) == summary
    with pytest.raises(SystemExit) as e:
        run_cli(main, argv + ["--lr", "0.01"])
    assert e.value.code == 2 and capsys.readouterr().err == (
        f"error: {out} holds a Q-PEFT training with other settings (config.lr: 0.03 -> 0.01); pass --overwrite to "
        f"start afresh, or write elsewhere\n")
    first = {n: load_module(os.path.join(out, n), lm).state_dict() for n in ("module", "checkpoint-3")}
    _cli(argv + ["--overwrite"])  # trained again from scratch: the same modules (training is deterministic)
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 3
    for n, sd in first.items():
        again = load_module(os.path.join(out, n), lm).state_dict()
        assert all(torch.equal(sd[k], again[k]) for k in sd), n


def test_cli_train_rerank_eval(tiny_causal, tmp_path, capsys):
    base = tiny_causal["base"]
    train = _tevatron_file(tmp_path / "train.jsonl", _examples())
    out = tmp_path / "qpeft-r"
    _cli(["train", "--model", base, "--variant", "r", "--train", train, "--output", str(out),
          "--max-steps", "2", "--train-batch-size", "2", "--dev-fraction", "0.4", "--dev-negatives", "2",
          "--max-doc-tokens", "12", "--eval-every", "1", "--k", "3", "--no-progress"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["steps"], summary["dev_examples"], summary["train_examples"]) == (2, 2, 3)
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
    two = ["rerank", "--module", str(out / "module-init"), str(out), "--candidates", str(cpath), "--output", o1, o2,
           "--depth", "3", "--sample-queries", "3", "--no-progress"]
    _cli(two)
    r1, r2 = read_run(o1), read_run(o2)
    assert len(r1) == 3 and set(r1) == set(r2) and all(len(v) == 3 for v in r1.values())
    assert json.load(open(o1 + ".job/manifest.json"))["complete"] is not None  # the job's progress is kept
    capsys.readouterr()
    _cli(two)  # a finished identical run is skipped
    assert capsys.readouterr().err.splitlines()[-1] == (f"already complete: {o1}, {o2} (same model, settings and "
                                                        f"inputs; --overwrite reranks again)")
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
    from repllama_pyserini.eval.__main__ import main as eval_main
    eval_main(["--run", o4, o1, "--qrels", str(qrels), "--only-run-queries", "--qa", "--ks", "1", "3",
               "--metrics", "nDCG@10", "--json", str(tmp_path / "e.json")])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[1].split() == ["run", "nDCG@10", "HR@1", "HR@3", "Recall@1", "Recall@3"]  # eval's table, --qa
    assert [r["judged_queries"] for r in json.load(open(tmp_path / "e.json"))["runs"]] == [5, 3]
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
    from repllama_pyserini.qpeft.data import add_bm25_negatives
    got = read_groups(str(train))
    assert add_bm25_negatives(got, str(corpus), str(tmp_path / "index"), depth=10, n=3,
                              qrels={"q0": {"0": 1, "m2": 1}}) == 5
    for e in got:
        ids = [p.docid for p in e.negatives]
        assert 0 < len(ids) <= 3 and e.positives[0].docid not in ids and len(set(ids)) == len(ids)
        assert all(p.text for p in e.negatives)
    assert [p.docid for p in got[0].negatives] == ["m0"]  # capital (m2 judged relevant, so left out)
    _cli(["train", "--model", tiny_causal["base"], "--variant", "A", "--train", str(train), "--corpus", str(corpus),
          "--bm25-index", str(tmp_path / "index"), "--qrels", str(qrels), "--negatives", "2", "--output",
          str(tmp_path / "out"), "--max-steps", "1", "--dev-fraction", "0", "--max-doc-tokens", "8", "--no-progress"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["steps"], summary["train_examples"], summary["dev_examples"]) == (1, 5, 0)
    assert os.path.isfile(tmp_path / "out" / "module" / "qpeft_config.json")


def test_cli_bad_input(tmp_path, capsys):
    from repllama_pyserini.qpeft.__main__ import main
    bad = _write(tmp_path / "t.jsonl", '{"query": "q", "positive_passages": [}\n')
    with pytest.raises(SystemExit) as e:
        run_cli(main, ["train", "--model", "x", "--train", bad, "--output", str(tmp_path / "o")])
    assert e.value.code == 2 and capsys.readouterr().err == f"error: {bad}:1: malformed JSON (Expecting value)\n"
    with pytest.raises(SystemExit) as e:
        run_cli(main, ["rerank", "--model", "x", "--output", "o", "--run", "r"])
    err = "error: pass --run, --topics and --corpus (or --candidates)\n"
    assert (e.value.code, capsys.readouterr().err) == (2, err)
    with pytest.raises(SystemExit) as e:
        run_cli(main, ["train", "--train", bad, "--output", str(tmp_path / "o")])
    assert e.value.code == 2 and capsys.readouterr().err == "error: pass --model\n"
