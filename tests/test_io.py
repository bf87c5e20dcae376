"""Atomic outputs keep the permissions a plain write would give them (shared clusters read each other's runs)."""
import os
import stat

from repllama_pyserini.formats import atomic_write, write_run
from repllama_pyserini.formats.files import make_temp_dir


def test_atomic_outputs_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_run({"q": {"d": 1.0}}, str(tmp_path / "run.trec"))
        with atomic_write(str(tmp_path / "x.bin"), "wb", encoding=None) as f:
            f.write(b"x")
        d = make_temp_dir(str(tmp_path / "index"))
        os.umask(0o077)
        write_run({"q": {"d": 1.0}}, str(tmp_path / "private.trec"))
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    assert mode(tmp_path / "run.trec") == 0o644 and mode(tmp_path / "x.bin") == 0o644
    assert mode(d) == 0o755
    assert mode(tmp_path / "private.trec") == 0o600
