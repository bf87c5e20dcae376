"""The staged run scripts name only stages they implement (a missing `case` branch fails hours into a run)."""
import fnmatch
import re
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "run_scripts"


def _stages(text: str):
    """The default stage list (``STAGES=(...)`` / ``STAGES+=(...)``, loop variants expanded) and the case labels."""
    variants = re.search(r'RETRIEVERS="\$\{RETRIEVERS:-([^}]*)\}"', text).group(1).split()
    default = []
    for line in re.findall(r"STAGES\+?=\(([^)]*)\)", text):
        for word in line.split():
            word = word.strip('"')
            if "$v" in word:
                default += [word.replace("$v", v) for v in variants]
            elif word and not word.startswith("$"):
                default.append(word)
    labels = [p for group in re.findall(r"^ {4}([a-z0-9*|-]+)\)", text, re.M) for p in group.split("|")]
    return default, labels


def _missing(text: str):
    default, labels = _stages(text)
    return [s for s in default if not any(fnmatch.fnmatch(s, p) for p in labels if p != "*")]


@pytest.mark.parametrize("script", ["scifact_multistage.sh"])
def test_every_default_stage_has_a_branch(script):
    default, labels = _stages((SCRIPTS / script).read_text())
    assert len(default) > 10 and "*" in labels
    missing = _missing((SCRIPTS / script).read_text())
    assert not missing, f"{script}: stages without a case branch: {missing}"


def test_the_check_catches_a_missing_branch():
    text = (SCRIPTS / "scifact_multistage.sh").read_text().replace("    reranker-2)", "    reranker-two)")
    assert _missing(text) == ["reranker-2"]
