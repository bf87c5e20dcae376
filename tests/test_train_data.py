"""Training data, group sampling, input formatting and the Tevatron command line (no model training here)."""
import gzip
import json

import pytest

from repllama_pyserini.cli import InputError
from repllama_pyserini.train.arguments import DataArguments, RerankerDataArguments, parse_args
from repllama_pyserini.formats.tevatron import Group, Passage, parse_group
from repllama_pyserini.templates import Template
from repllama_pyserini.train.data import TrainDataset, load_groups, sample_group


def _rec(qid, n_neg=5, n_pos=1):
    return {"query_id": str(qid), "query": f"query {qid}",
            "positive_passages": [{"docid": f"p{qid}-{i}", "title": "t", "text": f"pos {qid} {i}"} for i in range(n_pos)],
            "negative_passages": [{"docid": f"n{qid}-{i}", "title": "", "text": f"neg {qid} {i}"} for i in range(n_neg)]}


def _write(path, records, raw_lines=()):
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
        for line in raw_lines:
            f.write(line + "\n")
    return str(path)


def _data_args(path, group=4, **kw):
    return DataArguments(dataset_path=path, train_group_size=group, **kw)


def test_tevatron_command_line_parses_unchanged(tmp_path):
    """Tevatron's RepLLaMA example flags (plus v1's --train_file) are accepted as they are."""
    argv = ("--output_dir {o} --model_name_or_path meta-llama/Llama-2-7b-hf --lora --lora_r 32 --lora_alpha 64 "
            "--lora_dropout 0.1 --lora_target_modules q_proj,k_proj,v_proj,o_proj,down_proj,up_proj,gate_proj "
            "--save_steps 50 --train_file {d} --query_prefix query:_ --passage_prefix passage:_ --bf16 False "
            "--pooling eos --append_eos_token --normalize --temperature 0.01 --per_device_train_batch_size 8 "
            "--gradient_checkpointing --train_group_size 16 --learning_rate 1e-4 --query_max_len 32 "
            "--passage_max_len 156 --num_train_epochs 1 --logging_steps 10 --overwrite_output_dir "
            "--warmup_steps 100 --gradient_accumulation_steps 4 --fp16 False").format(o=tmp_path / "o", d="x.jsonl")
    m, d, t = parse_args(DataArguments, [a.replace("_", " ") if a.endswith(":_") else a for a in argv.split()])
    assert (m.lora, m.lora_r, m.lora_alpha, m.lora_dropout, m.pooling, m.normalize, m.temperature) == \
        (True, 32, 64, 0.1, "eos", True, 0.01)
    assert m.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "down_proj", "up_proj", "gate_proj"]
    assert (d.dataset_path, d.train_group_size, d.query_max_len, d.passage_max_len, d.append_eos_token) == \
        ("x.jsonl", 16, 32, 156, True)
    assert (d.query_prefix, d.passage_prefix) == ("query: ", "passage: ")
    assert (t.learning_rate, t.gradient_accumulation_steps, t.warmup_steps, t.save_steps) == (1e-4, 4, 100, 50)
    assert t.gradient_checkpointing and t.overwrite_output_dir and not t.bf16


# Tevatron's RepLLaMA and RankLLaMA example commands (tevatron/examples/repllama, examples/rankllama), the recipe of
# the paper (Ma et al., 2023): the defaults must equal them, so the bare command trains the paper's recipe.
TEVATRON_REPLLAMA = ("--model_name_or_path meta-llama/Llama-2-7b-hf --lora --lora_r 32 --lora_alpha 64 "
                     "--lora_dropout 0.1 --lora_target_modules q_proj,k_proj,v_proj,o_proj,down_proj,up_proj,gate_proj "
                     "--pooling eos --normalize --temperature 0.01 --append_eos_token --query_prefix query:_ "
                     "--passage_prefix passage:_ --query_max_len 32 --passage_max_len 156 --train_group_size 16 "
                     "--learning_rate 1e-4 --num_train_epochs 1 --per_device_train_batch_size 8 --warmup_steps 100")
TEVATRON_RANKLLAMA = ("--model_name_or_path meta-llama/Llama-2-7b-hf --lora --lora_r 32 --lora_alpha 64 "
                      "--lora_dropout 0.1 --query_prefix query:_ --passage_prefix document:_ --train_group_size 16 "
                      "--learning_rate 1e-4 --num_train_epochs 1")


def _argv(cmd, out):
    return ["--output_dir", str(out)] + [a.replace("_", " ") if a.endswith(":_") else a for a in cmd.split()]


def test_defaults_are_tevatrons_recipe(tmp_path):
    for cls, cmd in ((DataArguments, TEVATRON_REPLLAMA), (RerankerDataArguments, TEVATRON_RANKLLAMA)):
        explicit, default = parse_args(cls, _argv(cmd, tmp_path)), parse_args(cls, ["--output_dir", str(tmp_path)])
        assert explicit[0] == default[0] and explicit[1] == default[1]
        for k in ("learning_rate", "num_train_epochs", "per_device_train_batch_size", "warmup_steps"):
            assert getattr(explicit[2], k) == getattr(default[2], k), k
    _, rd, _ = parse_args(RerankerDataArguments, _argv(TEVATRON_RANKLLAMA + " --append_eos_token", tmp_path))
    assert (rd.pair_format, rd.append_eos_token) == ("tevatron", True)  # Tevatron's flags: Tevatron's inputs
    with pytest.raises(InputError, match="rankllama has no EOS"):
        parse_args(RerankerDataArguments, ["--output_dir", str(tmp_path), "--pair_format", "rankllama",
                                           "--append_eos_token"])


def test_bad_arguments_are_one_line_errors(tmp_path):
    with pytest.raises(InputError, match="unknown argument"):
        parse_args(DataArguments, ["--output_dir", str(tmp_path), "--no_such_flag", "1"])
    with pytest.raises(InputError, match="pooling"):
        parse_args(DataArguments, ["--output_dir", str(tmp_path), "--pooling", "cls"])
    with pytest.raises(InputError, match="train_group_size"):
        parse_args(DataArguments, ["--output_dir", str(tmp_path), "--train_group_size", "0"])


def test_malformed_jsonl_names_file_and_line(tmp_path):
    path = _write(tmp_path / "bad.jsonl", [_rec(1)], ['{"query_id": "2", "query": "x", '])
    with pytest.raises(InputError, match=r"bad\.jsonl:2: malformed JSON"):
        load_groups(_data_args(path), 4)
    path = _write(tmp_path / "arr.jsonl", [_rec(1)], ['[1, 2]'])
    with pytest.raises(InputError, match=r"arr\.jsonl:2: expected a JSON object"):
        load_groups(_data_args(path), 4)


def test_gzipped_input_and_folder(tmp_path):
    d = tmp_path / "dir"
    d.mkdir()
    with gzip.open(d / "a.jsonl.gz", "wt") as f:
        f.write(json.dumps(_rec(1)) + "\n\n" + json.dumps(_rec(2)) + "\n")
    _write(d / "b.jsonl", [_rec(3)])
    src = load_groups(_data_args(str(d)), 4)
    assert [src[i].query_id for i in range(len(src))] == ["1", "2", "3"]


def test_query_without_positive_is_an_error(tmp_path):
    rec = _rec(2)
    rec["positive_passages"] = []
    path = _write(tmp_path / "nopos.jsonl", [_rec(1), rec])
    with pytest.raises(InputError, match=r"nopos\.jsonl:2: query '2' has no positive passage"):
        load_groups(_data_args(path), 4)
    rec["positive_passages"] = [{"docid": "x", "title": "no text field"}]
    path = _write(tmp_path / "notext.jsonl", [rec])
    with pytest.raises(InputError, match=r"notext\.jsonl:1: positive_passages\[0\]: passage has no 'text'"):
        load_groups(_data_args(path), 4)
    path = _write(tmp_path / "noquery.jsonl", [{"query_id": "1", "positive_passages": []}])
    with pytest.raises(InputError, match=r"noquery\.jsonl:1: no 'query' text"):
        load_groups(_data_args(path), 4)


def test_no_negatives_is_an_error_unless_group_of_one(tmp_path):
    path = _write(tmp_path / "noneg.jsonl", [_rec(1), _rec(2, n_neg=0)])
    with pytest.raises(InputError, match=r"noneg\.jsonl:2: query '2' has no negative passages but "
                                         r"--train_group_size 4 needs 3"):
        load_groups(_data_args(path), 4)
    src = load_groups(_data_args(path, group=1), 1)
    ds = TrainDataset(src, 1)
    assert [len(ds[i][1]) for i in range(2)] == [1, 1]


def test_group_larger_than_negatives_samples_with_replacement(tmp_path, caplog):
    path = _write(tmp_path / "few.jsonl", [_rec(1, n_neg=2), _rec(2, n_neg=10)])
    with caplog.at_level("WARNING"):
        src = load_groups(_data_args(path, group=6), 6)
    assert "1 of 2 queries have fewer than 5 negatives" in caplog.text
    ds = TrainDataset(src, 6, seed=3)
    query, group = ds[0]
    assert query == "query 1" and len(group) == 6
    assert group[0].docid == "p1-0"
    negs = [p.docid for p in group[1:]]
    assert set(negs) == {"n1-0", "n1-1"}          # every available negative is used, then repeated
    assert sorted(negs[:2]) == ["n1-0", "n1-1"]   # first without replacement
    _, group2 = ds[1]
    assert len({p.docid for p in group2[1:]}) == 5  # enough negatives: no repeats


def test_group_sampling_is_deterministic_per_seed_and_epoch(tmp_path):
    path = _write(tmp_path / "many.jsonl", [_rec(i, n_neg=30, n_pos=3) for i in range(20)])
    src = load_groups(_data_args(path, group=8), 8)

    def groups(seed, epoch):
        ds = TrainDataset(src, 8, seed=seed)
        ds.set_epoch(epoch)
        return [[p.docid for p in ds[i][1]] for i in range(len(ds))]

    assert groups(1, 0) == groups(1, 0)
    assert groups(1, 0) != groups(1, 1)
    assert groups(1, 0) != groups(2, 0)
    for g in groups(1, 0):
        assert g[0].startswith("p") and all(d.startswith("n") for d in g[1:]) and len(set(g[1:])) == 7
    # the positive is drawn among the positives, too
    assert len({g[0] for e in range(6) for g in groups(1, e)[:1]}) > 1
    # a standalone call gives the same group as the dataset
    assert [p.docid for p in [sample_group(src[3], 8, 1, 0, 3)[0]]] == [groups(1, 0)[3][0]]


def test_passage_format_matches_the_encoder():
    t = Template("passage: ", 156)
    assert t.passage_text(Passage("1", "Title", "Body text.")) == "passage: Title Body text."
    assert t.passage_text(Passage("1", "", "Body")) == "passage: Body"
    assert t.passage_text(Passage("1", " T ", " B ")) == "passage: T B"


def test_parse_group_accepts_tevatron_variants():
    g = parse_group({"query_id": 5, "query": "q", "positive_passages": [{"docid": 7, "text": "t"}],
                     "negative_passages": None}, "x:1")
    assert isinstance(g, Group) and g.query_id == "5" and g.positives[0] == Passage("7", "", "t") and g.negatives == []


def test_hub_dataset_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(InputError, match="cannot load dataset 'Tevatron/no-such-dataset-xyz'"):
        load_groups(DataArguments(dataset_name="Tevatron/no-such-dataset-xyz"), 4)


def test_missing_training_file(tmp_path):
    with pytest.raises(InputError, match="training data not found"):
        load_groups(_data_args(str(tmp_path / "nope.jsonl")), 4)
    with pytest.raises(InputError, match="no training data"):
        load_groups(DataArguments(), 4)


def test_deepspeed_without_deepspeed_is_a_clear_error(tmp_path):
    import importlib.util
    if importlib.util.find_spec("deepspeed") is not None:
        pytest.skip("DeepSpeed is installed")
    with pytest.raises(InputError, match="needs DeepSpeed"):
        parse_args(DataArguments, ["--output_dir", str(tmp_path), "--deepspeed", "zero3"])


def test_bf16_flag_of_a_gpu_command_line_runs_on_cpu(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("CPU-only check")
    _, _, t = parse_args(DataArguments, ["--output_dir", str(tmp_path), "--bf16"])
    assert t.bf16 and t.use_cpu
    _, _, t = parse_args(DataArguments, ["--output_dir", str(tmp_path)])
    assert not t.bf16 and not t.gradient_checkpointing  # CPU defaults: fp32, no checkpointing


def test_resume_from_checkpoint_values(tmp_path):
    """``last`` needs a checkpoint, ``auto`` takes one when there is one (re-runnable commands, e.g. regressions),
    and a plain rerun over checkpoints is refused rather than silently starting over."""
    from types import SimpleNamespace
    from repllama_pyserini.train.trainer import resolve_resume

    def args(resume, overwrite=False):
        return SimpleNamespace(output_dir=str(tmp_path / "out"), resume_from_checkpoint=resume,
                               overwrite_output_dir=overwrite)
    assert resolve_resume(args("auto")) is None
    assert resolve_resume(args(None)) is None
    with pytest.raises(InputError, match="no checkpoint"):
        resolve_resume(args("last"))
    for step in (3, 10):
        (tmp_path / "out" / f"checkpoint-{step}").mkdir(parents=True)
    assert resolve_resume(args("auto")).endswith("checkpoint-10")
    assert resolve_resume(args("last")).endswith("checkpoint-10")
    with pytest.raises(InputError, match="already holds checkpoints"):
        resolve_resume(args(None))
    assert resolve_resume(args(None, overwrite=True)) is None


def test_dev_split_is_seeded_disjoint_and_a_beir_folder(tmp_path, ir_data):
    import os
    from repllama_pyserini.formats import beir_dataset, read_groups, read_qrels, read_topics
    from repllama_pyserini.train.split import main
    sf = os.path.join(ir_data, "beir", "scifact")
    argv = ["--input", os.path.join(sf, "train.tevatron.jsonl.gz"), "--corpus", os.path.join(sf, "corpus.jsonl.gz"),
            "--dev", "100", "--seed", "13"]
    main(argv + ["--output", str(tmp_path / "a")])
    main(argv + ["--output", str(tmp_path / "b")])
    train = read_groups(str(tmp_path / "a" / "train.jsonl.gz"))
    ds = beir_dataset(str(tmp_path / "a" / "dev"))
    dev = ds.topics()
    assert len(train) == 709 and len(dev) == 100 and not {g.query_id for g in train} & set(dev)
    assert read_topics(str(tmp_path / "a" / "dev.topics.tsv")) == dev == beir_dataset(str(tmp_path / "b" / "dev")).topics()
    full = read_qrels(os.path.join(sf, "qrels.scifact.train.txt"))
    assert read_qrels(ds.qrels) == read_qrels(str(tmp_path / "a" / "dev.qrels.txt")) == {q: full[q] for q in dev}
