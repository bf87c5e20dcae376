"""Cached steps: a complete output is reused only when the same command made it."""
import sys

import pytest

from repllama_pyserini.io import InputError
from repllama_pyserini.stages import Step, run_steps


def _writer(out, text):
    return Step("write", [sys.executable, "-c", f"open({str(out)!r}, 'w').write({text!r})"], str(out))


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
    other = _writer(out, "second")
    other.argv[0] = "/another/venv/bin/python"  # another interpreter is the same command
    run_steps([other], "t")


def test_output_without_a_record_is_kept(tmp_path):
    out = tmp_path / "made-earlier.trec"
    out.write_text("old")
    run_steps([_writer(out, "new")], "t")
    assert out.read_text() == "old"
