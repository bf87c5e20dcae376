"""Cached pipeline steps: each step is one toolkit command with one output; a step whose output exists and is
complete is skipped (every toolkit command writes its output atomically), so a rerun resumes where it stopped."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import List, Optional

from .io import InputError


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


def run_steps(steps: List[Step], label: str, dry_run: bool = False, cwd: Optional[str] = None) -> None:
    """Run ``steps`` in order, skipping complete ones; ``dry_run`` prints the commands only."""
    for step in steps:
        if dry_run:
            print(step.printable())
            continue
        if step.complete():
            print(f"[{label}] {step.name}: complete, skipped ({step.output})", file=sys.stderr)
            continue
        print(f"[{label}] {step.name}: {step.printable()}", file=sys.stderr)
        t0 = time.time()
        proc = subprocess.run(step.argv, cwd=cwd)
        if proc.returncode != 0:
            raise InputError(f"[{label}] step {step.name!r} failed (exit {proc.returncode}): {step.printable()}")
        if not step.complete():
            raise InputError(f"[{label}] step {step.name!r} finished but its output {step.output} is not complete")
        print(f"[{label}] {step.name}: done in {time.time() - t0:.0f}s", file=sys.stderr)
