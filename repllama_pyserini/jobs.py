"""Resumable work: one mechanism for every long job (corpus encoding, reranking, Q-PEFT reranking, dense evaluation).

A job owns a directory holding ``manifest.json`` and its chunk files:

* **one writer**: a lock file (pid, host, process start, time) is held for the whole job; a second writer gets a
  one-line error naming the holder; the lock of a process that is gone is taken over;
* **nothing stale**: the manifest records a fingerprint of the job: its settings, the SHA-256 of every input file's
  bytes (a folder: of each file in it) and the model weights' fingerprint. Opening a job with another fingerprint
  refuses and says what changed (``--overwrite`` starts afresh);
* **nothing damaged used**: every chunk file is written to a temporary name and renamed (a kill never leaves a file
  that looks finished), its SHA-256 is recorded, and all of them are verified when the job is opened and before they
  are used; a damaged or missing chunk is dropped with a one-line warning and redone, not the whole job;
* **no litter**: temporary files and chunks the manifest does not list (a kill between writing and recording) are
  removed on opening.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
from typing import Dict, Iterable, Mapping, Optional

from .cli import InputError
from .formats.files import atomic_write, read_json, sha256_bytes, sha256_file, write_json

logger = logging.getLogger(__name__)
FORMAT = "repllama-pyserini-job/1"
MANIFEST = "manifest.json"
LOCK = "LOCK"


# ------------------------------------------------------------------------------------------------- the lock
def _process_start(pid: int) -> Optional[str]:
    """The start time of process ``pid`` (Linux ``/proc``), to tell a reused pid from the lock's holder."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(holder: dict) -> bool:
    if holder.get("host") != socket.gethostname():
        return True  # another machine's process: cannot tell, assume it runs
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError, TypeError):
        return True
    start = holder.get("start")
    return start is None or start == _process_start(int(holder["pid"]))


class Lock:
    """An exclusive lock file, created atomically with its content (write a temp file, ``os.link`` it)."""

    def __init__(self, path: str, what: str):
        self.path, self.what, self.held = path, what, False

    def holder(self) -> dict:
        try:
            with open(self.path, encoding="utf-8") as f:
                return json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return {"unreadable": True}

    def acquire(self) -> "Lock":
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "start": _process_start(os.getpid()),
              "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(me, f)
        try:
            for _ in range(3):
                try:
                    os.link(tmp, self.path)
                    self.held = True
                    return self
                except FileExistsError:
                    h = self.holder()
                    if h and not h.get("unreadable") and _alive(h):
                        raise InputError(f"{self.what} is being written by process {h.get('pid')} on {h.get('host')} "
                                         f"since {h.get('since')}; wait for it to finish (or, if that process is "
                                         f"gone, remove {self.path})") from None
                    stale = f"{self.path}.stale-{os.getpid()}"
                    try:  # only one taker wins the rename
                        os.rename(self.path, stale)
                        os.unlink(stale)
                        logger.warning("%s: took over the lock of process %s, which is gone", self.what, h.get("pid"))
                    except FileNotFoundError:
                        pass
            raise InputError(f"cannot lock {self.path}")
        finally:
            os.unlink(tmp)

    def release(self) -> None:
        if self.held:
            self.held = False
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


# ------------------------------------------------------------------------------------------- fingerprints
def content_fingerprint(path: Optional[str]) -> Optional[str]:
    """SHA-256 of a file's bytes; of a folder, of its files' relative names and SHA-256s; None for None."""
    if path is None:
        return None
    if os.path.isfile(path):
        return sha256_file(path)
    if os.path.isdir(path):
        parts = []
        for root, _, files in sorted(os.walk(path)):
            for f in sorted(files):
                full = os.path.join(root, f)
                parts.append(f"{os.path.relpath(full, path)}\t{sha256_file(full)}")
        return sha256_bytes("\n".join(parts).encode())
    raise InputError(f"input not found: {path}")


def fingerprint(settings: Mapping, inputs: Mapping[str, Optional[str]] = (), weights: Mapping = ()) -> dict:
    """What identifies a job's result: settings, input contents, model weights."""
    for k, v in dict(inputs).items():
        if v is not None and not os.path.exists(v):
            raise InputError(f"{k} not found: {v}")
    return {"settings": json.loads(json.dumps(dict(settings))),
            "inputs": {k: content_fingerprint(v) for k, v in dict(inputs).items()},
            "weights": json.loads(json.dumps(dict(weights)))}


def describe_changes(old: Mapping, new: Mapping, prefix: str = "") -> list:
    """``['settings.max_length: 156 -> 64', 'inputs.topics: content changed', ...]``."""
    out = []
    for k in list(old) + [k for k in new if k not in old]:
        a, b = old.get(k), new.get(k)
        if a == b:
            continue
        key = f"{prefix}{k}"
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += describe_changes(a, b, key + ".")
        elif key.startswith(("inputs.", "weights.")):
            out.append(f"{key}: content changed")
        else:
            out.append(f"{key}: {json.dumps(a)} -> {json.dumps(b)}")
    return out


# ---------------------------------------------------------------------------------------------------- job
class Job:
    """A resumable job in ``directory`` (see the module doc). Use as a context manager::

        with Job(dir, fp, "encoding of shard 0").open(overwrite) as job:
            if not job.has("chunk_000000"): job.write_chunk("chunk_000000", {".npy": data}, rows=2048)
    """

    def __init__(self, directory: str, fp: dict, what: str = "job"):
        self.dir, self.fp, self.what = directory, fp, what
        self.lock = Lock(os.path.join(directory, LOCK), f"{what} ({directory})")
        self.manifest: dict = {}

    # -- opening
    def open(self, overwrite: bool = False) -> "Job":
        os.makedirs(self.dir, exist_ok=True)
        self.lock.acquire()
        try:
            path = os.path.join(self.dir, MANIFEST)
            if overwrite:
                self._wipe()
            elif os.path.exists(path):
                try:
                    m = read_json(path, "job manifest")
                except InputError as e:
                    raise InputError(f"{e}; pass --overwrite to start afresh") from None
                if not isinstance(m, dict) or m.get("format") != FORMAT or not isinstance(m.get("chunks"), dict):
                    raise InputError(f"{path} is not a manifest of this toolkit's jobs (damaged?); pass --overwrite "
                                     f"to start afresh")
                changes = describe_changes(m.get("fingerprint", {}), self.fp)
                if changes:
                    raise InputError(f"{self.dir} holds the progress of a job with other settings or inputs "
                                     f"({'; '.join(changes[:4])}{'; ...' if len(changes) > 4 else ''}); pass "
                                     f"--overwrite to start afresh, or write elsewhere")
                self.manifest = m
            if not self.manifest:
                self.manifest = {"format": FORMAT, "fingerprint": self.fp, "chunks": {}, "complete": None}
            self._clean()
            self.verify()
        except BaseException:
            self.lock.release()
            raise
        return self

    def _wipe(self) -> None:
        for f in os.listdir(self.dir):
            if f != LOCK and not f.startswith(LOCK + "."):
                full = os.path.join(self.dir, f)
                shutil.rmtree(full) if os.path.isdir(full) else os.unlink(full)

    def _clean(self) -> None:
        listed = {name + sfx for name, c in self.manifest["chunks"].items() for sfx in c["files"]}
        for f in os.listdir(self.dir):
            if f in (MANIFEST, LOCK) or f.startswith(LOCK + ".") or f in listed:
                continue
            full = os.path.join(self.dir, f)
            if os.path.isfile(full):
                os.unlink(full)

    def verify(self, names: Optional[Iterable[str]] = None) -> list:
        """Check the SHA-256 of the listed chunks' files; drop (and return) those damaged or missing."""
        dropped = []
        for name in list(names if names is not None else self.manifest["chunks"]):
            c = self.manifest["chunks"][name]
            for sfx, digest in c["files"].items():
                p = os.path.join(self.dir, name + sfx)
                problem = "missing" if not os.path.isfile(p) else (None if sha256_file(p) == digest else
                                                                   "checksum mismatch")
                if problem:
                    logger.warning("%s: %s%s is damaged (%s): it will be redone", self.what, name, sfx, problem)
                    self.drop(name)
                    dropped.append(name)
                    break
        if dropped and self.manifest.get("complete"):
            self.manifest["complete"] = None
            self._save()
        return dropped

    # -- chunks
    def has(self, name: str) -> bool:
        return name in self.manifest["chunks"]

    def chunks(self) -> Dict[str, dict]:
        return self.manifest["chunks"]

    def path(self, name: str, suffix: str) -> str:
        return os.path.join(self.dir, name + suffix)

    def write_chunk(self, name: str, files: Mapping[str, bytes], **meta) -> None:
        """Write a chunk's files (temp name, then rename) and record them, with their SHA-256, in the manifest."""
        digests = {}
        for sfx, data in files.items():
            with atomic_write(self.path(name, sfx), "wb", encoding=None) as f:
                f.write(data)
            digests[sfx] = sha256_bytes(data)
        self.manifest["chunks"][name] = dict(meta, files=digests)
        self._save()

    def read_chunk(self, name: str, suffix: str) -> bytes:
        """A chunk file's bytes, checked against the manifest (damage raises: the caller redoes the chunk)."""
        with open(self.path(name, suffix), "rb") as f:
            data = f.read()
        if sha256_bytes(data) != self.manifest["chunks"][name]["files"][suffix]:
            raise InputError(f"{self.path(name, suffix)} changed since it was written (checksum mismatch); rerun the "
                             f"command: the damaged chunk is redone")
        return data

    def drop(self, name: str) -> None:
        c = self.manifest["chunks"].pop(name, None)
        for sfx in (c or {}).get("files", {}):
            try:
                os.unlink(self.path(name, sfx))
            except FileNotFoundError:
                pass
        self._save()

    # -- completion
    @property
    def complete(self) -> Optional[dict]:
        return self.manifest.get("complete")

    def set_complete(self, **info) -> None:
        self.manifest["complete"] = info or {"at": time.strftime("%Y-%m-%d %H:%M:%S")}
        self._save()

    def _save(self) -> None:
        write_json(os.path.join(self.dir, MANIFEST), self.manifest)

    def close(self) -> None:
        self.lock.release()

    def __enter__(self) -> "Job":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_manifest(directory: str) -> Optional[dict]:
    """A job's manifest, read without taking the job (e.g. to merge finished shards); None if there is none."""
    path = os.path.join(directory, MANIFEST)
    if not os.path.isfile(path):
        return None
    m = read_json(path, "job manifest")
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise InputError(f"{path} is not a manifest of this toolkit's jobs (damaged?)")
    return m
