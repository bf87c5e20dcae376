"""repllama_pyserini.eval against trec_eval itself (the binary Pyserini ships, run through Java) on real qrels:
the BM25 DL19/DL20 runs, and runs built here with score ties, missing and unjudged queries and deep rankings, for
every preset and for every metric form; plus a hand-computed example, metric parsing, preset inference and the CLI."""
import glob
import importlib.util
import json
import os
import random
import subprocess
import sys
from collections import defaultdict

import pytest

from repllama_pyserini import eval as ev
from repllama_pyserini.cli import InputError, run_cli
from repllama_pyserini.eval.__main__ import main as eval_main
from repllama_pyserini.formats import conventions_of_qrels, read_qrels, sorted_hits
from repllama_pyserini.formats.runs import truncate_run

BM25 = "msmarco-passage/rank_llm_candidates/trec_results_BM25_{}.txt"
TQ = "topics-and-qrels"

# Pyserini 2CR's trec_eval options (pyserini/2cr/msmarco.py, beir.py; ir-data/pyserini-2cr/README.md), written out
# here independently of eval.py.
TWO_CR = {
    "msmarco-passage-dev": {"MRR@10": "-c -M 10 -m recip_rank", "R@1000": "-c -m recall.1000"},
    "dl19-passage": {"MAP": "-c -l 2 -m map", "nDCG@10": "-c -m ndcg_cut.10", "R@1000": "-c -l 2 -m recall.1000"},
    "dl20-passage": {"MAP": "-c -l 2 -m map", "nDCG@10": "-c -m ndcg_cut.10", "R@1000": "-c -l 2 -m recall.1000"},
    "msmarco-doc-dev": {"MRR@100": "-c -M 100 -m recip_rank", "R@1000": "-c -m recall.1000"},
    "dl19-doc": {"MAP": "-c -M 100 -m map", "nDCG@10": "-c -m ndcg_cut.10", "R@1000": "-c -m recall.1000"},
    "dl20-doc": {"MAP": "-c -M 100 -m map", "nDCG@10": "-c -m ndcg_cut.10", "R@1000": "-c -m recall.1000"},
    "beir": {"nDCG@10": "-c -m ndcg_cut.10", "R@100": "-c -m recall.100", "R@1000": "-c -m recall.1000"},
}
# Every metric form (no preset: no conventions) and its trec_eval equivalent.
GENERIC = {
    "nDCG@10": "-c -m ndcg_cut.10", "nDCG@100": "-c -m ndcg_cut.100", "nDCG": "-c -m ndcg",
    "MRR": "-c -m recip_rank", "MRR@10": "-c -M 10 -m recip_rank", "MRR@100": "-c -M 100 -m recip_rank",
    "MAP": "-c -m map", "MAP@100": "-c -M 100 -m map", "R@100": "-c -m recall.100", "R@1000": "-c -m recall.1000",
    "P@10": "-c -m P.10", "Success@10": "-c -m success.10", "R@1000:l2": "-c -l 2 -m recall.1000",
    "MAP:l2": "-c -l 2 -m map", "nDCG@10:l2": "-c -l 2 -m ndcg_cut.10", "MRR:l2": "-c -l 2 -m recip_rank",
    "R@1000:M100": "-c -M 100 -m recall.1000",
}  # 4 option sets: 4 trec_eval calls per run
QRELS = {"msmarco-passage-dev": "qrels.msmarco-passage.dev-subset.txt", "dl19-passage": "qrels.dl19-passage.txt",
         "dl20-passage": "qrels.dl20-passage.txt", "msmarco-doc-dev": "qrels.msmarco-doc.dev.txt",
         "dl19-doc": "qrels.dl19-doc.txt", "dl20-doc": "qrels.dl20-doc.txt",
         "beir": "qrels.beir-v1.0.0-scifact.test.txt"}
TOL = 5e-5 + 1e-9  # trec_eval prints 4 decimals


# ---------------------------------------------------------------------------------------------------------------
# trec_eval reference
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def trec_eval_cmd():
    """``java -cp anserini-fatjar.jar trec_eval``: the program ``python -m pyserini.eval.trec_eval`` shells out to."""
    from repllama_pyserini.java import JavaNotFoundError, find_java
    try:
        java = find_java()
    except JavaNotFoundError as e:
        pytest.skip(str(e))
    spec = importlib.util.find_spec("pyserini")
    jars = glob.glob(os.path.join(spec.submodule_search_locations[0], "resources", "jars", "*.jar"))
    if not jars:
        pytest.skip("Pyserini's Anserini jar not found")
    return [os.path.join(java.home, "bin", "java"), "-cp", jars[0], "trec_eval"]


def reference(cmd, definitions, qrels, run):
    """Run trec_eval -q for ``{name: 'options -m measure'}`` (one call per option set):
    ``{name: (mean, {qid: value})}``; per-query values only for the run's judged queries, as trec_eval prints."""
    groups = defaultdict(list)
    for name, d in definitions.items():
        opts, measure = d.split(" -m ")
        groups[opts].append((name, measure))
    out = {}
    for opts, items in groups.items():
        params = defaultdict(set)  # trec_eval keeps only the last of "-m recall.100 -m recall.1000"
        for _, m in items:
            base, _, k = m.partition(".")
            params[base] |= {int(k)} if k else set()
        ms = [f"{b}.{','.join(map(str, sorted(ks)))}" if ks else b for b, ks in params.items()]
        args = cmd + ["-q"] + opts.split() + [a for m in ms for a in ("-m", m)] + [qrels, run]
        p = subprocess.run(args, capture_output=True, text=True)
        assert p.returncode == 0 and p.stdout.strip(), (args, p.stderr)
        table = defaultdict(dict)
        for line in p.stdout.splitlines():
            key, qid, value = line.split("\t")
            table[key.strip()][qid] = float(value)
        for name, measure in items:
            per_q = dict(table[measure.replace(".", "_")])
            out[name] = (per_q.pop("all"), per_q)
    return out


def assert_matches(ours_pq, ref, qrels):
    """Our per-query values match trec_eval's -q lines, judged queries absent from them score 0, and the means
    match trec_eval -c."""
    for name, (mean, per_q) in ref.items():
        assert abs(ours_pq["all"][name] - mean) <= TOL, (name, ours_pq["all"][name], mean)
        for q in qrels:
            want = per_q.get(q, 0.0)
            assert abs(ours_pq[q][name] - want) <= TOL, (name, q, ours_pq[q][name], want)


# ---------------------------------------------------------------------------------------------------------------
# runs with ties, missing queries, unjudged queries, deep rankings
# ---------------------------------------------------------------------------------------------------------------

def make_run(qrels, path, seed, keep=1.0, prefix=""):
    """A run over a fraction ``keep`` of the judged queries (the rest have no results), plus unjudged queries.
    Scores come from a handful of values, so ties are everywhere, including among relevant documents; docids of
    varying length make reverse-lexicographic and numeric order differ; file ranks are shuffled (trec_eval ignores
    them); a few rankings are deeper than 1000."""
    rng = random.Random(seed)
    qids = sorted(qrels)
    rng.shuffle(qids)
    qids = qids[: max(1, int(len(qids) * keep))] + [f"unjudged{i}" for i in range(3)]
    lines = []
    for qi, q in enumerate(qids):
        judged = list(qrels.get(q, {}))
        depth = rng.randint(1001, 1100) if qi % 25 == 0 else rng.randint(20, 150)
        docs = set(rng.sample(judged, min(len(judged), rng.randint(0, depth // 2 + 1))))
        while len(docs) < depth:
            docs.add(f"{prefix}{rng.randint(1, 10 ** rng.randint(1, 7))}")
        docs = sorted(docs)
        rng.shuffle(docs)
        for rank, d in enumerate(docs, 1):
            rel = qrels.get(q, {}).get(d, 0)
            score = rng.randint(0, 4) + (rng.randint(0, 2) if rel > 0 else 0) + (0.5 if rng.random() < 0.2 else 0.0)
            lines.append(f"{q} Q0 {d} {rank} {score!r} constructed\n")
    with open(path, "w") as f:
        f.writelines(lines)
    return str(path)


@pytest.fixture(scope="session")
def constructed(ir_data, tmp_path_factory):
    """{preset: (qrels path, run path)}, one constructed run per preset on that collection's real qrels."""
    d = tmp_path_factory.mktemp("constructed-runs")
    out = {}
    for i, (preset, qrels_name) in enumerate(QRELS.items()):
        qrels_path = os.path.join(ir_data, TQ, qrels_name)
        qrels = read_qrels(qrels_path)
        keep = 0.1 if len(qrels) > 1000 else 0.85
        out[preset] = (qrels_path, make_run(qrels, d / f"run.{preset}.txt", seed=i, keep=keep,
                                            prefix="D" if "doc" in preset else ""))
    return out


# ---------------------------------------------------------------------------------------------------------------
# tests against trec_eval
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("year,expected", [("dl19", 0.5058), ("dl20", 0.4796)])
def test_bm25_dl_ndcg10_matches_pyserini_trec_eval(ir_data, trec_eval_cmd, year, expected):
    """`python -m pyserini.eval.trec_eval -c -m ndcg_cut.10` itself on the real BM25 runs (Pyserini shells out to
    the `java` on PATH, so the JDK that repllama_pyserini.java picks goes first there)."""
    qrels, run = os.path.join(ir_data, TQ, f"qrels.{year}-passage.txt"), os.path.join(ir_data, BM25.format(year))
    env = dict(os.environ, PATH=os.path.dirname(trec_eval_cmd[0]) + os.pathsep + os.environ.get("PATH", ""))
    p = subprocess.run([sys.executable, "-m", "pyserini.eval.trec_eval", "-c", "-m", "ndcg_cut.10", qrels, run],
                       capture_output=True, text=True, env=env)
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("ndcg_cut_10")]
    assert line, p.stdout + p.stderr
    assert float(line[0].split("\t")[2]) == expected
    got = ev.evaluate(run, qrels)  # preset inferred from the file name
    assert list(got) == ["nDCG@10", "MAP", "R@1000"]
    assert round(got["nDCG@10"], 4) == expected


@pytest.mark.parametrize("year", ["dl19", "dl20"])
def test_bm25_dl_every_metric_matches_trec_eval(ir_data, trec_eval_cmd, year):
    qrels, run = os.path.join(ir_data, TQ, f"qrels.{year}-passage.txt"), os.path.join(ir_data, BM25.format(year))
    preset = f"{year}-passage"
    ours = ev.evaluate(run, qrels, conventions=preset, per_query_scores=True)
    for q, scores in ev.evaluate(run, qrels, metrics=list(GENERIC), per_query_scores=True).items():
        ours[q].update({f"generic {m}": v for m, v in scores.items()})
    defs = {**TWO_CR[preset], **{f"generic {m}": d for m, d in GENERIC.items()}}
    assert_matches(ours, reference(trec_eval_cmd, defs, qrels, run), read_qrels(qrels))


@pytest.mark.parametrize("preset", list(QRELS))
def test_constructed_run_matches_trec_eval(constructed, trec_eval_cmd, preset):
    """Ties, judged queries without results (-c), unjudged run queries, rankings deeper than 1000; every preset
    on its own collection's qrels, and every metric form."""
    qrels_path, run = constructed[preset]
    qrels = read_qrels(qrels_path)
    assert conventions_of_qrels(qrels_path) == preset
    cov = ev.coverage(ev.load_run(run), qrels)
    assert cov.missing and cov.extra and cov.evaluated
    ours = ev.evaluate(run, qrels_path, per_query_scores=True)  # inferred preset
    assert set(ours["all"]) == set(TWO_CR[preset])
    generic = ev.evaluate(run, qrels, metrics=list(GENERIC), per_query_scores=True)
    for q, scores in generic.items():
        ours[q].update({f"generic {m}": v for m, v in scores.items()})
    defs = {**TWO_CR[preset], **{f"generic {m}": d for m, d in GENERIC.items()}}
    assert_matches(ours, reference(trec_eval_cmd, defs, qrels_path, run), qrels)


def test_tie_breaking_matters_in_the_constructed_run(constructed):
    """The ties in the constructed runs change the numbers: ordering them by docid ascending instead of trec_eval's
    descending gives other values, so the comparisons above do check the tie-breaking."""
    qrels_path, run_path = constructed["dl19-passage"]
    run = ev.load_run(run_path)
    ascending = {q: {d: -i for i, (d, _) in enumerate(sorted(h.items(), key=lambda kv: (-kv[1], kv[0])))}
                 for q, h in run.items()}
    descending = {q: {d: -i for i, (d, _) in enumerate(sorted_hits(h))} for q, h in run.items()}
    metrics = ["nDCG@10", "MRR@10", "MAP@100", "R@1000:M50"]
    ours = ev.evaluate(run, qrels_path, metrics=metrics)
    assert ev.evaluate(descending, qrels_path, metrics=metrics) == pytest.approx(ours, abs=1e-12)
    other = ev.evaluate(ascending, qrels_path, metrics=metrics)
    assert all(abs(other[m] - ours[m]) > 1e-4 for m in metrics), (other, ours)


def test_preset_conventions_apply_to_explicit_metrics(constructed, trec_eval_cmd):
    """A preset's -l/-M conventions apply to metrics asked for with it, unless they set their own."""
    qrels_path, run = constructed["dl19-doc"]
    got = ev.evaluate(run, qrels_path, metrics=["MAP", "R@100", "MAP:M1000"], conventions="dl19-doc")
    ref = reference(trec_eval_cmd, {"MAP": "-c -M 100 -m map", "R@100": "-c -m recall.100",
                                    "MAP@1000": "-c -M 1000 -m map"}, qrels_path, run)
    for name, (mean, _) in ref.items():
        assert abs(got[name] - mean) <= TOL, name
    # map_cut.100 is read as 2CR's MAP@100 (-M 100 map): the same number as trec_eval's own map_cut.100
    mean = reference(trec_eval_cmd, {"x": "-c -m map_cut.100"}, qrels_path, run)["x"][0]
    assert abs(ev.evaluate(run, qrels_path, metrics=["map_cut.100"])["MAP@100"] - mean) <= TOL
    assert abs(ev.evaluate(run, qrels_path, metrics=[ev.Metric("map_cut", 100)])["MAP@100"] - mean) <= TOL
    qrels_path, run = constructed["dl20-passage"]
    got = ev.evaluate(run, qrels_path, metrics=["R@100", "MAP:l1", "nDCG@10"], conventions="dl20-passage")
    ref = reference(trec_eval_cmd, {"R@100": "-c -l 2 -m recall.100", "MAP:l1": "-c -m map",
                                    "nDCG@10": "-c -m ndcg_cut.10"}, qrels_path, run)
    for name, (mean, _) in ref.items():
        assert abs(got[name] - mean) <= TOL, name


# ---------------------------------------------------------------------------------------------------------------
# hand-computed
# ---------------------------------------------------------------------------------------------------------------

QRELS_TINY = {"1": {"d9": 1, "d10": 1, "d2": 0}, "2": {"x": 2, "y": 1}, "3": {"a": 0, "b": 1}}
RUN_TINY = {"1": {"d10": 1.0, "d9": 1.0, "d1": 2.0},  # ranking d1, d9, d10 ("d9" > "d10": docid descending)
            "2": {"y": 3.0, "x": 2.0},
            "9": {"z": 1.0}}                          # unjudged: ignored; query 3 has no results: 0 under -c


def test_hand_computed_example():
    got = ev.evaluate(RUN_TINY, QRELS_TINY, metrics=["MRR@10", "MRR@1", "MAP", "MAP@2", "nDCG@10", "R@2",
                                                     "R@2:l2", "P@1", "MAP:l2"], per_query_scores=True)
    log2 = lambda x: __import__("math").log2(x)  # noqa: E731
    # query 1: d1 (0), d9 (1), d10 (1); query 2: y (1), x (2)
    assert got["1"]["MRR@10"] == pytest.approx(1 / 2) and got["2"]["MRR@10"] == pytest.approx(1)
    assert got["1"]["MRR@1"] == 0 and got["2"]["MRR@1"] == 1
    assert got["1"]["MAP"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert got["1"]["MAP@2"] == pytest.approx((1 / 2) / 2)               # -M 2: d10 is cut
    assert got["2"]["MAP"] == pytest.approx(1.0)
    assert got["2"]["MAP:l2"] == pytest.approx(1 / 2)                    # only x (rel 2) is relevant, at rank 2
    assert got["1"]["nDCG@10"] == pytest.approx((1 / log2(3) + 1 / log2(4)) / (1 + 1 / log2(3)))
    assert got["2"]["nDCG@10"] == pytest.approx((1 + 2 / log2(3)) / (2 + 1 / log2(3)))
    assert got["1"]["R@2"] == pytest.approx(1 / 2) and got["2"]["R@2"] == 1
    assert got["1"]["R@2:l2"] == 0 and got["2"]["R@2:l2"] == 1         # query 1 has nothing relevant at -l 2
    assert all(v == 0 for v in got["3"].values())
    assert set(got) == {"all", "1", "2", "3"}
    for m in got["all"]:                                                  # -c: mean over the 3 qrels queries
        assert got["all"][m] == pytest.approx(sum(got[q][m] for q in "123") / 3)
    assert got["all"]["MRR@10"] == pytest.approx(1 / 2)
    plain = ev.evaluate(RUN_TINY, QRELS_TINY, metrics=["MRR@10"])
    assert plain == {"MRR@10": pytest.approx(1 / 2)}


def test_trec_ranking_and_truncation():
    hits = {"10": 1.0, "9": 1.0, "100": 1.0, "a": 0.5, "b": 2.0}
    assert [d for d, _ in sorted_hits(hits)] == ["b", "9", "100", "10", "a"]
    assert list(truncate_run({"q": hits}, 2)["q"]) == ["b", "9"]


# ---------------------------------------------------------------------------------------------------------------
# metric names, presets, inference
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec,measure,cutoff,level,depth,name", [
    ("nDCG@10", "ndcg_cut", 10, None, None, "nDCG@10"), ("ndcg_cut.10", "ndcg_cut", 10, None, None, "nDCG@10"),
    ("ndcg", "ndcg", None, None, None, "nDCG"), ("MRR@10", "recip_rank", None, None, 10, "MRR@10"),
    ("recip_rank", "recip_rank", None, None, None, "MRR"), ("MAP", "map", None, None, None, "MAP"),
    ("MAP@100", "map", None, None, 100, "MAP@100"), ("map_cut.100", "map", None, None, 100, "MAP@100"),
    ("R@1000", "recall", 1000, None, None, "R@1000"), ("recall.1000", "recall", 1000, None, None, "R@1000"),
    ("Recall@100:l2", "recall", 100, 2, None, "R@100:l2"), ("P.10", "P", 10, None, None, "P@10"),
    ("success.5", "success", 5, None, None, "Success@5"), ("MAP:l2:M100", "map", None, 2, 100, "MAP@100:l2"),
    ("R@1000:M100", "recall", 1000, None, 100, "R@1000:M100"), ("nDCG:l0", "ndcg", None, 0, None, "nDCG:l0"),
    ("MRR@10:M10", "recip_rank", None, None, 10, "MRR@10"),
])
def test_parse_metric(spec, measure, cutoff, level, depth, name):
    m = ev.parse_metric(spec)
    assert (m.measure, m.cutoff, m.rel_level, m.max_docs, m.name) == (measure, cutoff, level, depth, name)
    assert ev.parse_metric(ev.Metric(measure, cutoff, level, depth)).name == name


@pytest.mark.parametrize("spec", ["foo@10", "R", "nDCG@0", "MAP:x2", "MRR@10:M100", "R@10:M0", "P@", "", "map_cut",
                                  ev.Metric("recall"), ev.Metric("bpref"), ev.Metric("map", 10)])
def test_parse_metric_errors(spec):
    with pytest.raises(InputError):
        ev.parse_metric(spec)


def test_presets_and_metric_args():
    for preset, defs in TWO_CR.items():
        ms, name = ev.resolve_metrics(conventions=preset)
        assert name == preset
        assert {m.name: " ".join(m.trec_eval_args()) for m in ms} == defs
    assert ev.get_conventions("beir-v1.0.0-scifact").name == "beir"
    assert ev.get_conventions("msmarco-passage-dev-subset").name == "msmarco-passage-dev"
    with pytest.raises(InputError):
        ev.get_conventions("dl21-passage")
    assert [m.name for m in ev.resolve_metrics()[0]] == list(ev.DEFAULT_METRICS)
    with pytest.raises(InputError, match="twice"):
        ev.resolve_metrics(["MAP", "map"])


def test_infer_preset(ir_data):
    expected = {"qrels.dl19-passage.txt": "dl19-passage", "qrels.dl20-passage.txt": "dl20-passage",
                "qrels.dl19-doc.txt": "dl19-doc", "qrels.dl20-doc.txt": "dl20-doc",
                "qrels.msmarco-passage.dev-subset.txt": "msmarco-passage-dev",
                "qrels.msmarco-doc.dev.txt": "msmarco-doc-dev"}
    for path in glob.glob(os.path.join(ir_data, TQ, "qrels.*")):
        name = os.path.basename(path)
        assert conventions_of_qrels(path) == expected.get(name, "beir"), name
    for name, preset in [("2019qrels-pass.txt", "dl19-passage"), ("2020qrels-docs.txt", "dl20-doc"),
                         ("qrels.dev.small.tsv", "msmarco-passage-dev"), ("msmarco-docdev-qrels.tsv.gz",
                                                                          "msmarco-doc-dev"),
                         ("beir/scifact/qrels/test.tsv", "beir"), ("qrels.dl19-passage.txt.gz", "dl19-passage"),
                         ("my-qrels.txt", None), ("qrels/dev.tsv", None)]:
        assert conventions_of_qrels(name) == preset, name


def test_msmarco_format_run_and_collection_name(ir_data, tmp_path):
    run = ev.load_run(os.path.join(ir_data, BM25.format("dl19")))
    msmarco = tmp_path / "run.msmarco.tsv"
    msmarco.write_text("".join(f"{q}\t{d}\t{i}\n" for q, h in run.items()
                               for i, (d, _) in enumerate(sorted_hits(h), 1)))
    got = ev.evaluate(str(msmarco), "dl19-passage")  # qrels by collection name, preset from its file name
    assert round(got["nDCG@10"], 4) == 0.5058
    assert got == pytest.approx(ev.evaluate(run, os.path.join(ir_data, TQ, "qrels.dl19-passage.txt")), abs=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------

def test_cli_table_and_json(ir_data, constructed, tmp_path, capsys):
    qrels = os.path.join(ir_data, TQ, "qrels.dl19-passage.txt")
    bm25, built = os.path.join(ir_data, BM25.format("dl19")), constructed["dl19-passage"][1]
    out = tmp_path / "scores" / "eval.json"
    eval_main(["--run", bm25, built, "--qrels", qrels, "--json", str(out), "--per-query",
             "--topics", os.path.join(ir_data, TQ, "topics.dl19-passage.txt")])
    cap = capsys.readouterr()
    rows = cap.out.splitlines()
    assert "conventions dl19-passage" in rows[0]
    assert rows[1].split() == ["run", "nDCG@10", "MAP", "R@1000"]
    assert rows[2].split()[0] == os.path.basename(bm25) and rows[2].split()[1] == "0.5058"
    assert rows[3].split()[0] == os.path.basename(built)
    assert "have no results" in cap.err and "not in the qrels" in cap.err
    doc = json.loads(out.read_text())
    assert doc["conventions"] == "dl19-passage" and doc["metrics"]["MAP"] == "trec_eval -c -l 2 -m map"
    assert [r["run"] for r in doc["runs"]] == [bm25, built]
    assert round(doc["runs"][0]["scores"]["nDCG@10"], 4) == 0.5058
    assert len(doc["runs"][1]["per_query"]) == 43 and doc["runs"][1]["evaluated_queries"] < 43
    assert os.listdir(out.parent) == ["eval.json"]  # atomic write: no temporary left


def test_cli_as_module(ir_data):
    run = os.path.join(ir_data, BM25.format("dl20"))
    p = subprocess.run([sys.executable, "-m", "repllama_pyserini.eval", "--run", run, "--qrels", "dl20-passage",
                        "--metrics", "nDCG@10,MRR@10", "R@100"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[1].split() == ["run", "nDCG@10", "MRR@10", "R@100"]
    assert p.stdout.splitlines()[2].split()[1] == "0.4796"


def _cli_error(argv, capsys):
    with pytest.raises(SystemExit) as e:
        run_cli(eval_main, argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_cli_errors(ir_data, tmp_path, capsys):
    qrels = os.path.join(ir_data, TQ, "qrels.dl19-passage.txt")
    dl19, dl20 = os.path.join(ir_data, BM25.format("dl19")), os.path.join(ir_data, BM25.format("dl20"))
    assert "run not found" in _cli_error(["--run", str(tmp_path / "nope.txt"), "--qrels", qrels], capsys)
    assert "qrels not found" in _cli_error(["--run", dl19, "--qrels", str(tmp_path / "q.txt")], capsys)
    bad = tmp_path / "bad.run"
    bad.write_text("264014 Q0 d1 1 2.0 t\n264014 Q0 d2 2 t\n")
    assert f"{bad}:2:" in _cli_error(["--run", str(bad), "--qrels", qrels], capsys)
    bad.write_text("264014 Q0 d1 1 high t\n")
    assert f"{bad}:1:" in _cli_error(["--run", str(bad), "--qrels", qrels], capsys)
    empty = tmp_path / "empty.run"
    empty.write_text("\n")
    assert "empty" in _cli_error(["--run", str(empty), "--qrels", qrels], capsys)
    assert "wrong qrels" in _cli_error(["--run", dl20, "--qrels", qrels], capsys)
    err = _cli_error(["--run", dl19, "--qrels", qrels, "--topics", os.path.join(ir_data, TQ, "topics.dl20.txt")],
                     capsys)
    assert "absent from topics" in err
    assert "unknown metric" in _cli_error(["--run", dl19, "--qrels", qrels, "--metrics", "nDCG10"], capsys)
    assert "unknown conventions" in _cli_error(["--run", dl19, "--qrels", qrels, "--conventions", "dl21"], capsys)


def test_format_table():
    t = ev.format_table({"a": {"nDCG@10": 0.5, "MAP": 0.25}, "longer name": {"nDCG@10": 0.123456}})
    lines = t.splitlines()
    assert lines[0].split() == ["run", "nDCG@10", "MAP"]
    assert lines[1].split() == ["a", "0.5000", "0.2500"]
    assert lines[2].split() == ["longer", "name", "0.1235", "-"]
