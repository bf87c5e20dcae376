"""Cached pipeline steps: each step is one toolkit command with one output; a step whose output exists and is
complete is skipped (every toolkit command writes its output atomically), so a rerun resumes where it stopped.

The command that made each output is recorded in ``.steps.json`` next to it: a complete output made by another
command (another model, depth, ...) is refused rather than reused, so a changed setting never reports old results."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import List, Optional

from .io import InputError, atomic_write

LEDGER = ".steps.json"


@dataclass
class Step:
    name: str
    argv: List[str]
    output: str
    complete_marker: Optional[str] = None  # a file inside a directory output that says it is complete

    def complete(self) -> bool:
        if self.complete_marker:
            return os.path.isfile(os.path.join(self.output, self.complete_marker))
        return os.path.isfile(self.output) and os.path.getsize(self.output) > 0

    def printable(self) -> str:
        return " ".join(shlex.quote(a) for a in self.argv)

    # the command that made the output, without the interpreter (another venv's python makes the same output)
    def _ledger(self) -> str:
        return os.path.join(os.path.dirname(os.path.abspath(self.output)) or ".", LEDGER)

    def _key(self) -> str:
        return os.path.basename(os.path.normpath(self.output))

    def recorded(self) -> Optional[List[str]]:
        try:
            with open(self._ledger(), encoding="utf-8") as f:
                return json.load(f).get(self._key())
        except (OSError, ValueError):
            return None

    def record(self) -> None:
        path = self._ledger()
        try:
            with open(path, encoding="utf-8") as f:
                ledger = json.load(f)
        except (OSError, ValueError):
            ledger = {}
        ledger[self._key()] = self.argv[1:]
        with atomic_write(path) as f:
            json.dump(ledger, f, indent=1)

    def check_made_by_this_command(self, label: str) -> None:
        old = self.recorded()
        if old is None or old == self.argv[1:]:
            return
        changed = [a for a in self.argv[1:] if a not in old] or [a for a in old if a not in self.argv[1:]]
        raise InputError(f"[{label}] {self.name}: {self.output} was made by another command (now: "
                         f"{' '.join(changed[:6])}...); use another work directory, or delete it to rebuild it")


def run_steps(steps: List[Step], label: str, dry_run: bool = False, cwd: Optional[str] = None) -> None:
    """Run ``steps`` in order, skipping complete ones; ``dry_run`` prints the commands only."""
    for step in steps:
        if dry_run:
            print(step.printable())
            continue
        if step.complete():
            step.check_made_by_this_command(label)
            print(f"[{label}] {step.name}: complete, skipped ({step.output})", file=sys.stderr)
            continue
        print(f"[{label}] {step.name}: {step.printable()}", file=sys.stderr)
        t0 = time.time()
        proc = subprocess.run(step.argv, cwd=cwd)
        if proc.returncode != 0:
            raise InputError(f"[{label}] step {step.name!r} failed (exit {proc.returncode}): {step.printable()}")
        if not step.complete():
            raise InputError(f"[{label}] step {step.name!r} finished but its output {step.output} is not complete")
        step.record()
        print(f"[{label}] {step.name}: done in {time.time() - t0:.0f}s", file=sys.stderr)
