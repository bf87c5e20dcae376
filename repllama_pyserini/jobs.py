"""Resumable work: one mechanism for every long job (corpus encoding, reranking, Q-PEFT reranking, dense evaluation).

A job owns a directory holding ``manifest.json`` and its chunk files: one writer (a ``flock`` held for the whole job),
a fingerprint of its settings, input bytes and model weights (opening it with another refuses, naming what changed;
``--overwrite`` discards it), every chunk written under a temporary name and renamed, its SHA-256 verified on opening
and before use (a damaged chunk is redone alone), leftovers removed on opening. See ``docs/reliability.md``.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import time
from typing import Dict, Mapping, Optional

from .cli import InputError
from .formats.files import atomic_write, read_json, sha256_bytes, sha256_file, write_json

logger = logging.getLogger(__name__)
FORMAT = "repllama-pyserini-job/1"
MANIFEST = "manifest.json"
LOCK = "LOCK"


# ------------------------------------------------------------------------------------------------- the lock
class Lock:
    """An exclusive ``flock`` on a lock file holding the writer's pid, host and start time (for the message a second
    writer gets). The operating system releases it when the process ends, however it ends: no stale locks."""

    def __init__(self, path: str, what: str):
        self.path, self.what, self._f = path, what, None

    @property
    def held(self) -> bool:
        return self._f is not None

    def acquire(self) -> "Lock":
        import fcntl
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        f = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            try:
                h = json.loads(f.read() or "{}")
            except ValueError:
                h = {}
            f.close()
            raise InputError(f"{self.what} is being written by process {h.get('pid', '?')} on {h.get('host', '?')} "
                             f"since {h.get('since', '?')}; wait for it to finish") from None
        f.seek(0)
        f.truncate()
        json.dump({"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}, f)
        f.flush()
        self._f = f
        return self

    def release(self) -> None:
        if self._f is not None:
            self._f.close()  # closing the file releases the flock
            self._f = None

    def __enter__(self) -> "Lock":
        return self if self.held else self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# ------------------------------------------------------------------------------------------- fingerprints
def content_fingerprint(path) -> Optional[str]:
    """SHA-256 of a file's bytes; of a list of files (a corpus split in files), of their names and SHA-256s; of a
    folder, of every file in it; None for None."""
    if path is None:
        return None
    if isinstance(path, (list, tuple)):
        return sha256_bytes("\n".join(f"{os.path.basename(f)}\t{sha256_file(f)}" for f in path).encode())
    if os.path.isfile(path):
        return sha256_file(path)
    if os.path.isdir(path):
        return content_fingerprint([os.path.join(root, f) for root, _, files in sorted(os.walk(path))
                                    for f in sorted(files)])
    raise InputError(f"input not found: {path}")


def fingerprint(settings: Mapping, inputs: Mapping = (), weights: Mapping = ()) -> dict:
    """What identifies a job's result: settings, input contents (a path or a list of files each), model weights."""
    for k, v in dict(inputs).items():
        for path in (v if isinstance(v, (list, tuple)) else [v]):
            if path is not None and not os.path.exists(path):
                raise InputError(f"{k} not found: {path}")
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
            if os.path.exists(path):
                try:
                    m = read_json(path, "job manifest")
                    if not isinstance(m, dict) or m.get("format") != FORMAT or not isinstance(m.get("chunks"), dict):
                        raise InputError(f"{path} is not a manifest of this toolkit's jobs (damaged?)")
                except InputError as e:
                    if not overwrite:
                        raise InputError(f"{e}; pass --overwrite to start afresh") from None
                    m = {}
                changes = describe_changes(m.get("fingerprint", {}), self.fp)
                if changes and not overwrite:
                    raise InputError(f"{self.dir} holds the progress of a job with other settings or inputs "
                                     f"({'; '.join(changes[:4])}{'; ...' if len(changes) > 4 else ''}); pass "
                                     f"--overwrite to start afresh, or write elsewhere")
                if changes:  # --overwrite discards another job's progress; this job's own is kept
                    self._wipe()
                else:
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
        self.manifest = {}
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

    def verify(self) -> list:
        """Check the SHA-256 of the listed chunks' files; drop (and return) those damaged or missing."""
        dropped = []
        for name in list(self.manifest["chunks"]):
            c = self.manifest["chunks"][name]
            for sfx, digest in c["files"].items():
                p = self.path(name, sfx)
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
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path(name, sfx))
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
