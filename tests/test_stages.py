"""Cached steps: a complete output is reused only when the same command made it from the same inputs."""
import sys

import pytest

from repllama_pyserini.cli import InputError
from repllama_pyserini.workflows.stages import Step, run_steps


def _writer(out, text, *extra):
    return Step("write", [sys.executable, "-c", f"open({str(out)!r}, 'w').write({text!r})", *extra], str(out))


def _copier(src, out):
    """A step reading ``src`` (another step's output) and writing it upper-cased to ``out``."""
    code = "import sys; open(sys.argv[2], 'w').write(open(sys.argv[1]).read().upper())"
    return Step("copy", [sys.executable, "-c", code, str(src), str(out)], str(out))


def test_changed_command_is_refused_not_reused(tmp_path, capsys):
    out = tmp_path / "run.trec"
    run_steps([_writer(out, "first")], "t")
    assert out.read_text() == "first"
    run_steps([_writer(out, "first")], "t")  # same command: skipped
    assert "complete, skipped" in capsys.readouterr().err
    with pytest.raises(InputError, match="made by another command"):
        run_steps([_writer(out, "second")], "t")
    assert out.read_text() == "first"
    out.unlink()  # deleting the output rebuilds it with the new command
    run_steps([_writer(out, "second")], "t")
    assert out.read_text() == "second"
    other = _writer(out, "second", "--batch-size", "4", "--no-progress")
    other.argv[0] = "/another/venv/bin/python"  # another interpreter, speed-only flags: the same command
    run_steps([other], "t")
    with pytest.raises(InputError, match=r"--depth: \(absent\) -> 7"):
        run_steps([_writer(out, "second", "--depth", "7")], "t")


def test_outputs_downstream_of_a_rebuilt_input_are_not_reused(tmp_path):
    a, b = tmp_path / "index", tmp_path / "run.trec"
    run_steps([_writer(a, "x"), _copier(a, b)], "t")
    assert b.read_text() == "X"
    a.unlink()  # the input is to be rebuilt with another command: its consumer is listed before anything runs
    with pytest.raises(InputError, match=r"cannot reuse 1 output.*run.trec \(its input .*index is to be rebuilt"):
        run_steps([_writer(a, "y"), _copier(a, b)], "t")
    assert not a.exists()
    b.unlink()
    run_steps([_writer(a, "y"), _copier(a, b)], "t")
    assert b.read_text() == "Y"
    # the input rebuilt by another invocation (only its own step): the consumer notices
    a.unlink()
    run_steps([_writer(a, "z")], "t")
    with pytest.raises(InputError, match="was rebuilt after it"):
        run_steps([_writer(a, "z"), _copier(a, b)], "t")


def test_output_without_a_record_is_refused(tmp_path):
    out = tmp_path / "made-elsewhere.trec"
    out.write_text("old")
    with pytest.raises(InputError, match=r"cannot reuse 1 output.*made-elsewhere.trec \(made by an unknown command"):
        run_steps([_writer(out, "new")], "t")
    assert out.read_text() == "old"


def test_a_changed_input_file_makes_its_consumer_stale(tmp_path):
    """A file the steps read but no step makes (a user's run, topics, corpus) is fingerprinted by content."""
    src, out = tmp_path / "ext.trec", tmp_path / "copy.trec"
    src.write_text("a")
    run_steps([_copier(src, out)], "t")
    src.write_text("b")  # the same size, another content
    with pytest.raises(InputError, match=rf"copy.trec \(its input {src} changed since\)"):
        run_steps([_copier(src, out)], "t")
