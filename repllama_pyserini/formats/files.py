"""Files: reading text (plain or gzipped, UTF-8, errors as ``file:line``), atomic writes, temp-then-rename
directories (swapped in whole; a kill's leftovers cleaned up), content fingerprints."""
from __future__ import annotations

import contextlib
import glob
import gzip
import hashlib
import json
import os
import shutil
import tempfile
from typing import IO, Iterable, Iterator, List, Optional, Tuple

from ..cli import InputError


def require_file(path: str, what: str = "file") -> str:
    if not path or not os.path.exists(path):
        raise InputError(f"{what} not found: {path}")
    return path


@contextlib.contextmanager
def _open_binary(path: str) -> Iterator[IO[bytes]]:
    """A plain or gzipped file's bytes; a read error (a truncated .gz...) becomes ``path: cannot read (...)``."""
    require_file(path)
    try:
        with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as f:
            yield f
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise InputError(f"{path}: cannot read ({e})") from None


def _decode(raw: bytes, path: str, lineno: int, offset: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}:{lineno}: not UTF-8 (byte {raw[e.start]:#04x} at byte offset {offset + e.start}"
                         f"{' of the uncompressed text' if path.endswith('.gz') else ''}); convert the file to "
                         f"UTF-8") from None


BOM = b"\xef\xbb\xbf"


def iter_lines(path: str) -> Iterator[Tuple[int, str]]:
    """``(line number, line without its newline)`` of every line of a plain or gzipped UTF-8 text file (a UTF-8
    byte-order mark at the start is dropped)."""
    offset = 0
    with _open_binary(path) as f:
        for lineno, raw in enumerate(f, 1):
            skip = 3 if lineno == 1 and raw.startswith(BOM) else 0
            yield lineno, _decode(raw[skip:], path, lineno, offset + skip).rstrip("\r\n")
            offset += len(raw)


def count_lines(path: str) -> int:
    """Non-blank lines, counted from raw bytes."""
    with _open_binary(path) as f:
        return sum(1 for line in f if line.strip())


def first_line(path: str) -> str:
    """The first non-blank line (empty string for an empty file)."""
    for _, line in iter_lines(path):
        if line.strip():
            return line
    return ""


def read_text(path: str) -> str:
    """A whole (gzipped) UTF-8 file; a decoding error names its line."""
    with _open_binary(path) as f:
        raw = f.read()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        lineno = raw.count(b"\n", 0, e.start) + 1
        raise InputError(f"{path}:{lineno}: not UTF-8 (byte offset {e.start}); convert the file to UTF-8") from None


def split_lines(path: str) -> Iterator[Tuple[int, list]]:
    """``(line number, whitespace-separated fields)`` of every non-blank line."""
    for lineno, line in iter_lines(path):
        parts = line.split()
        if parts:
            yield lineno, parts


def json_object(line: str, where: str) -> dict:
    """One JSONL line as a dict; anything else raises ``InputError('where: ...')``."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise InputError(f"{where}: malformed JSON ({e.msg})") from None
    if not isinstance(obj, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    return obj


def jsonl_records(path: str) -> Iterator[Tuple[str, dict]]:
    """``('file:line', object)`` per non-blank line of a JSONL file."""
    for lineno, line in iter_lines(path):
        if line.strip():
            where = f"{path}:{lineno}"
            yield where, json_object(line, where)


def current_umask() -> int:
    """The process umask, read without changing it where Linux shows it."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w", encoding: Optional[str] = "utf-8"):
    """Write to a temporary file next to ``path``, fsync, rename into place only on success."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=os.path.basename(path) + ".", suffix=".tmp")
    try:
        with (os.fdopen(fd, mode) if "b" in mode else os.fdopen(fd, mode, encoding=encoding)) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; a normal file follows the umask
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str, obj) -> None:
    with atomic_write(path) as f:
        json.dump(obj, f, indent=1, sort_keys=True, ensure_ascii=False)
        f.write("\n")


def read_json(path: str, what: str = "file"):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: unreadable {what} ({str(e).splitlines()[0]})") from None


def write_lines(path: str, lines: Iterable[str]) -> None:
    """Text lines, atomically; gzipped with a fixed header (equal content, equal bytes) when ``path`` ends in .gz."""
    if path.endswith(".gz"):
        with atomic_write(path, "wb", encoding=None) as raw:
            with gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz:
                for line in lines:
                    gz.write((line + "\n").encode("utf-8"))
    else:
        with atomic_write(path) as f:
            for line in lines:
                f.write(line + "\n")


def make_temp_dir(final: str) -> str:
    """A temporary directory next to ``final`` (renamed onto it when complete), with ``mkdir`` permissions."""
    parent = os.path.dirname(os.path.abspath(final))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(os.path.abspath(final))}.tmp-")
    os.chmod(tmp, 0o777 & ~current_umask())
    return tmp


@contextlib.contextmanager
def atomic_dir(final: str):
    """A temporary directory (see :func:`make_temp_dir`) swapped in as ``final`` when the block completes, removed
    if it fails."""
    tmp = make_temp_dir(final)
    try:
        yield tmp
        swap_in(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _siblings(output: str, kind: str) -> List[str]:
    out = os.path.abspath(output)
    return glob.glob(os.path.join(os.path.dirname(out), f".{os.path.basename(out)}.{kind}-*"))


def swap_in(tmp: str, output: str) -> None:
    """Replace ``output`` by the complete directory ``tmp``: the old one is moved aside, then removed."""
    if os.path.exists(output):
        out = os.path.abspath(output)
        old = os.path.join(os.path.dirname(out), f".{os.path.basename(out)}.old-{os.getpid()}")
        os.rename(output, old)
        os.rename(tmp, output)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, output)


def cleanup_partial(output: str) -> None:
    """After a kill: put back an old output moved aside before its replacement was in place; remove temp dirs."""
    for old in _siblings(output, "old"):
        if not os.path.exists(output):
            os.rename(old, output)
        else:
            shutil.rmtree(old, ignore_errors=True)
    for tmp in _siblings(output, "tmp"):
        shutil.rmtree(tmp, ignore_errors=True)


def sha256_file(path: str, block: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes (as stored: a .gz file is hashed compressed)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(block), b""):
            h.update(b)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
