"""Cached pipeline steps: each step is one toolkit command with one output; a step whose output exists and is
complete is skipped (every toolkit command writes its output atomically), so a rerun resumes where it stopped.

Each output gets a record next to it (``.NAME.step.json``): the command that made it and the state of the earlier
steps' outputs it read. A complete output is reused only when both still hold; otherwise (another model, depth...,
or an input rebuilt since) the whole set of such outputs is listed before anything runs, so a changed setting never
reports old results; the files a step reads that no step makes (corpus, topics, runs) are fingerprinted by content
too. Flags that only change speed (``--batch-size``, ``--threads``...) are not compared.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

from ..cli import InputError
from ..formats.files import atomic_write

# flags (with their value, if any) that change how fast a command runs, not what it writes
SPEED_FLAGS = {"--batch-size": 1, "--threads": 1, "--max-batch-tokens": 1, "--no-progress": 0, "--disable_tqdm": 1,
               "--logging_steps": 1}


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

    def command(self) -> List[str]:
        """The argv that defines the output: without the interpreter (another venv's python makes the same output)
        and without speed-only flags."""
        out, args, i = [], self.argv[1:], 0
        while i < len(args):
            skip = SPEED_FLAGS.get(args[i])
            if skip is None:
                out.append(args[i])
                i += 1
            else:
                i += 1 + skip
        return out

    def stamp(self) -> Optional[int]:
        """When the output was completed (its file, or its complete marker), or None if it is not complete."""
        if not self.complete():
            return None
        return os.stat(os.path.join(self.output, self.complete_marker) if self.complete_marker
                       else self.output).st_mtime_ns

    def record_path(self) -> str:
        out = os.path.normpath(os.path.abspath(self.output))
        return os.path.join(os.path.dirname(out), f".{os.path.basename(out)}.step.json")

    def recorded(self) -> Optional[dict]:
        try:
            with open(self.record_path(), encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def inputs(self, earlier: List["Step"]) -> List["Step"]:
        """The earlier steps whose output this command names (or names a file inside of)."""
        return [s for s in earlier if any(a == s.output or a.startswith(s.output.rstrip(os.sep) + os.sep)
                                          for a in self.argv)]

    def files(self, earlier: List["Step"]) -> Dict[str, str]:
        """The content fingerprints of the files and folders the command names that no step makes (the user's
        corpus, topics, runs...)."""
        from ..jobs import content_fingerprint
        made = [s.output.rstrip(os.sep) for s in earlier] + [self.output.rstrip(os.sep)]
        out = {}
        for a in self.argv[1:]:
            if os.path.exists(a) and not any(a == m or a.startswith(m + os.sep) for m in made):
                out[a] = content_fingerprint(a)
        return out

    def record(self, earlier: List["Step"]) -> None:
        with atomic_write(self.record_path()) as f:
            json.dump({"command": self.command(), "inputs": {s.output: s.stamp() for s in self.inputs(earlier)},
                       "files": self.files(earlier)}, f, indent=1)

    def why_stale(self, earlier: List["Step"], rebuilt: set) -> Optional[str]:
        """Why the complete output may not be reused (None: it may)."""
        rec = self.recorded()
        if rec is None:
            return "made by an unknown command (no record of it)"
        if rec.get("command") != self.command():
            return "made by another command (" + _diff(rec.get("command") or [], self.command()) + ")"
        for s in self.inputs(earlier):
            if s.output in rebuilt:
                return f"its input {s.output} is to be rebuilt"
            if s.output in rec.get("inputs", {}) and rec["inputs"][s.output] != s.stamp():
                return f"its input {s.output} was rebuilt after it"
        changed = [f for f, fp in self.files(earlier).items() if rec.get("files", {}).get(f) != fp]
        return f"its input {changed[0]} changed since" if changed else None


def _flags(argv: List[str]) -> Dict[str, str]:
    out, key = {}, ""
    for a in argv:
        if a.startswith("--"):
            key = a
            out.setdefault(key, "")
        else:
            out[key] = (out.get(key, "") + " " + a).strip()
    return out


def _diff(old: List[str], new: List[str]) -> str:
    a, b = _flags(old), _flags(new)
    changes = [f"{k or 'command'}: {a.get(k, '(absent)') or '(set)'} -> {b.get(k, '(absent)') or '(set)'}"
               for k in list(a) + [k for k in b if k not in a] if a.get(k) != b.get(k)]
    return "; ".join(changes[:4]) + ("; ..." if len(changes) > 4 else "")


def run_steps(steps: List[Step], label: str, dry_run: bool = False, cwd: Optional[str] = None) -> None:
    """Run ``steps`` in order, skipping complete ones; ``dry_run`` prints the commands only. Complete outputs that
    may not be reused (see the module doc) are all listed, before anything runs."""
    if dry_run:
        for step in steps:
            print(step.printable())
        return
    rebuilt, stale = set(), []
    for i, step in enumerate(steps):
        if not step.complete():
            rebuilt.add(step.output)
            continue
        why = step.why_stale(steps[:i], rebuilt)
        if why:
            stale.append(f"{step.output} ({why})")
            rebuilt.add(step.output)
    if stale:
        raise InputError(f"[{label}] cannot reuse {len(stale)} output(s): " + "; ".join(stale)
                         + ". Delete them to rebuild them, or use another work directory")
    for i, step in enumerate(steps):
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
        step.record(steps[:i])
        print(f"[{label}] {step.name}: done in {time.time() - t0:.0f}s", file=sys.stderr)
