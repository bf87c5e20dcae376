"""Files: reading text (plain or gzipped, UTF-8, errors as ``file:line``), atomic writes, temp-then-rename
directories, content fingerprints."""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import tempfile
from typing import IO, Iterable, Iterator, Optional, Tuple

from ..cli import InputError


def require_file(path: str, what: str = "file") -> str:
    if not path or not os.path.exists(path):
        raise InputError(f"{what} not found: {path}")
    return path


def _open_binary(path: str) -> IO[bytes]:
    require_file(path)
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def _decode(raw: bytes, path: str, lineno: int, offset: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}:{lineno}: not UTF-8 (byte {raw[e.start]:#04x} at byte offset {offset + e.start}"
                         f"{' of the uncompressed text' if path.endswith('.gz') else ''}); convert the file to "
                         f"UTF-8") from None


def iter_lines(path: str) -> Iterator[Tuple[int, str]]:
    """``(line number, line without its newline)`` of every line of a plain or gzipped UTF-8 text file."""
    offset = 0
    try:
        with _open_binary(path) as f:
            for lineno, raw in enumerate(f, 1):
                yield lineno, _decode(raw, path, lineno, offset).rstrip("\r\n")
                offset += len(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise InputError(f"{path}: cannot read ({e})") from None


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
        return raw.decode("utf-8")
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
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
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


def sha256_file(path: str, block: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes (as stored: a .gz file is hashed compressed)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(block), b""):
            h.update(b)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
