"""Reading and writing the standard IR formats: JSONL corpora (BEIR, Pyserini JsonCollection, Tevatron),
TREC topics / qrels / runs; atomic writes so an interrupted job never leaves a file that looks finished.

Every reader raises :class:`InputError` with a one-line message (file and line number) on bad input.
"""
from __future__ import annotations

import contextlib
import glob
import gzip
import json
import os
import sys
import tempfile
from collections import defaultdict
from typing import Dict, Iterator, List, Optional, Tuple

Run = Dict[str, Dict[str, float]]
Qrels = Dict[str, Dict[str, int]]


class InputError(ValueError):
    """Bad user input (missing file, malformed line...); its message is one line meant for the user."""


def require_file(path: str, what: str = "file") -> str:
    if not os.path.exists(path):
        raise InputError(f"{what} not found: {path}")
    return path


def open_text(path: str, mode: str = "rt"):
    """Open plain or gzipped text (by the ``.gz`` suffix) as UTF-8."""
    require_file(path)
    if path.endswith(".gz"):
        return gzip.open(path, mode, encoding="utf-8")
    return open(path, mode, encoding="utf-8")


def json_object(line: str, where: str) -> dict:
    """One JSONL line as a dict; anything else raises ``InputError('where: ...')``."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise InputError(f"{where}: malformed JSON ({e.msg})") from None
    if not isinstance(obj, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    return obj


def jsonl_records(path: str) -> Iterator[Tuple[int, dict]]:
    """Yield ``(line number, object)`` per non-empty line; a malformed line raises ``InputError('file:line: ...')``."""
    with open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                yield lineno, json_object(line, f"{path}:{lineno}")


def read_jsonl(path: str) -> Iterator[dict]:
    """Yield one dict per non-empty line (see :func:`jsonl_records`)."""
    for _, obj in jsonl_records(path):
        yield obj


def _doc_fields(obj: dict, where: str) -> Tuple[str, str, str]:
    """Normalise one corpus record to (docid, title, text).

    BEIR: ``_id,title,text``; Tevatron: ``docid,title,text``; Pyserini JsonCollection: ``id,contents``
    (title absent: ``contents`` is the text)."""
    for key in ("_id", "docid", "id"):
        if key in obj:
            docid = str(obj[key])
            break
    else:
        raise InputError(f"{where}: record has no '_id', 'docid' or 'id' field")
    title = obj.get("title") or ""
    text = obj.get("text")
    if text is None:
        text = obj.get("contents")
    if text is None:
        raise InputError(f"{where}: record {docid!r} has no 'text' or 'contents' field")
    return docid, str(title), str(text)


def corpus_files(path: str) -> List[str]:
    """A corpus is a JSONL file (plain or .gz), a BEIR folder (``corpus.jsonl[.gz]``) or a JsonCollection folder."""
    require_file(path, "corpus")
    if os.path.isfile(path):
        return [path]
    for name in ("corpus.jsonl", "corpus.jsonl.gz"):
        if os.path.isfile(os.path.join(path, name)):
            return [os.path.join(path, name)]
    files = sorted(f for ext in ("*.jsonl", "*.jsonl.gz", "*.json", "*.json.gz")
                   for f in glob.glob(os.path.join(path, ext)))
    if not files:
        raise InputError(f"no corpus.jsonl or *.jsonl/*.json files in {path}")
    return files


def iter_corpus(path: str) -> Iterator[Tuple[str, str, str]]:
    """Stream ``(docid, title, text)`` from any supported corpus layout; never holds the corpus in memory."""
    n = 0
    for f in corpus_files(path):
        if f.endswith((".json", ".json.gz")) and not _looks_like_jsonl(f):
            raise InputError(f"{f}: a JSON array is not supported, convert it to JSONL (one object per line)")
        for lineno, obj in jsonl_records(f):
            n += 1
            yield _doc_fields(obj, f"{f}:{lineno}")
    if n == 0:
        raise InputError(f"empty corpus: {path}")


def _looks_like_jsonl(path: str) -> bool:
    with open_text(path) as f:
        for line in f:
            if line.strip():
                return line.lstrip().startswith("{")
    return True


def read_topics(path: str) -> Dict[str, str]:
    """TREC/MS MARCO/BEIR topics as ``qid \\t text`` (.tsv, .txt, .gz); also BEIR ``queries.jsonl``."""
    topics: Dict[str, str] = {}
    if path.endswith((".jsonl", ".jsonl.gz")):
        for i, obj in enumerate(read_jsonl(path), 1):
            qid = obj.get("_id", obj.get("query_id", obj.get("qid")))
            text = obj.get("text", obj.get("query"))
            if qid is None or text is None:
                raise InputError(f"{path}: record {i} needs '_id' and 'text'")
            topics[str(qid)] = str(text)
    else:
        with open_text(path) as f:
            for lineno, line in enumerate(f, 1):
                line = line.rstrip("\n\r")
                if not line.strip():
                    continue
                qid, sep, text = line.partition("\t")
                if not sep:
                    raise InputError(f"{path}:{lineno}: expected 'qid<TAB>query'")
                topics[qid.strip()] = text.strip()
    if not topics:
        raise InputError(f"no topics in {path}")
    return topics


def split_lines(path: str) -> Iterator[Tuple[int, List[str]]]:
    """``(line number, whitespace-separated fields)`` of every non-blank line of a (gzipped) text file."""
    with open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if parts:
                yield lineno, parts


def read_qrels(path: str) -> Qrels:
    """TREC qrels ``qid iter docid rel`` (whitespace separated); BEIR ``qrels/*.tsv`` (``qid docid rel``, header)."""
    qrels: Qrels = defaultdict(dict)
    for lineno, parts in split_lines(path):
        if len(parts) == 4:
            qid, _, docid, rel = parts
        elif len(parts) == 3:
            qid, docid, rel = parts
        else:
            raise InputError(f"{path}:{lineno}: expected 'qid Q0 docid rel'")
        try:
            value = float(rel)
        except ValueError:
            if lineno == 1 and len(parts) == 3:  # BEIR header "query-id corpus-id score"
                continue
            raise InputError(f"{path}:{lineno}: relevance {rel!r} is not a number") from None
        if value != int(value):
            raise InputError(f"{path}:{lineno}: relevance {rel!r} is not an integer")
        qrels[qid][docid] = int(value)
    if not qrels:
        raise InputError(f"no judgments in {path}")
    return dict(qrels)


def read_run(path: str) -> Run:
    """TREC run ``qid Q0 docid rank score tag`` -> ``{qid: {docid: score}}``."""
    run: Run = defaultdict(dict)
    for lineno, parts in split_lines(path):
        if len(parts) != 6:
            raise InputError(f"{path}:{lineno}: expected 'qid Q0 docid rank score tag', got {len(parts)} fields")
        try:
            score = float(parts[4])
        except ValueError:
            raise InputError(f"{path}:{lineno}: score {parts[4]!r} is not a number") from None
        if score != score or score in (float("inf"), float("-inf")):
            raise InputError(f"{path}:{lineno}: score {parts[4]!r} is not finite")
        if parts[2] in run[parts[0]]:
            raise InputError(f"{path}:{lineno}: document {parts[2]!r} listed twice for query {parts[0]!r}")
        run[parts[0]][parts[2]] = score
    return dict(run)


def sorted_hits(scores: Dict[str, float]) -> List[Tuple[str, float]]:
    """Score descending, ties broken by docid descending: the order trec_eval scores a run in."""
    return sorted(scores.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w", encoding: Optional[str] = "utf-8"):
    """Write to a temporary file next to ``path`` and rename it into place only on success."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=os.path.basename(path) + ".", suffix=".tmp")
    try:
        with (os.fdopen(fd, mode, encoding=encoding) if "b" not in mode else os.fdopen(fd, mode)) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; a normal file respects the umask
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def current_umask() -> int:
    """The process umask, read without changing it where Linux shows it (setting it to read it is racy)."""
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


def make_temp_dir(final: str) -> str:
    """A temporary directory next to ``final`` (to be renamed onto it when complete), with the permissions of a
    directory made by ``mkdir`` (``tempfile.mkdtemp`` makes 0700)."""
    parent = os.path.dirname(os.path.abspath(final))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(os.path.abspath(final))}.tmp-")
    os.chmod(tmp, 0o777 & ~current_umask())
    return tmp


def write_run(run: Run, path: str, tag: str = "repllama-pyserini", depth: Optional[int] = None) -> None:
    """Write a TREC run atomically, hits sorted by score (ties by docid), ranks from 1."""
    with atomic_write(path) as f:
        for qid in run:
            for rank, (docid, score) in enumerate(sorted_hits(run[qid])[:depth], 1):
                f.write(f"{qid} Q0 {docid} {rank} {score:.6f} {tag}\n")


def run_cli(main, argv=None) -> None:
    """Run a CLI ``main``; user errors (bad input, missing Java) become one line on stderr and exit 2."""
    from .java import JavaNotFoundError
    try:
        main(argv)
    except (InputError, JavaNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
