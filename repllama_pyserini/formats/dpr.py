"""DPR's formats (a JSON list): retriever results ``[{"question", "answers", "ctxs": [{"id", "title", "text",
"score", "has_answer"}]}]`` and training data (``positive_ctxs``, ``hard_negative_ctxs``). Answer-bearing contexts
are positives, the others hard negatives (in retrieval order). Errors name the line where the question starts."""
from __future__ import annotations

import json
from typing import Iterator, List, Tuple

from ..cli import InputError
from .files import read_text
from .tevatron import Group, passages, read_groups


def _array_items(path: str) -> Iterator[Tuple[int, object]]:
    """``(line, element)`` of a top-level JSON array, each with the line it starts on."""
    text = read_text(path)
    dec, n = json.JSONDecoder(), len(text)

    def skip(j):
        while j < n and text[j] in " \t\r\n":
            j += 1
        return j

    def line_of(j):
        return text.count("\n", 0, j) + 1

    i = skip(0)
    if i >= n or text[i] != "[":
        raise InputError(f"{path}:{line_of(i)}: expected a JSON list of questions")
    i = skip(i + 1)
    if i < n and text[i] == "]":
        return
    while True:
        try:
            obj, end = dec.raw_decode(text, i)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{e.lineno}: malformed JSON ({e.msg})") from None
        yield line_of(i), obj
        i = skip(end)
        if i < n and text[i] == ",":
            i = skip(i + 1)
        elif i < n and text[i] == "]":
            if skip(i + 1) < n:
                raise InputError(f"{path}:{line_of(skip(i + 1))}: trailing data after the JSON list")
            return
        else:
            raise InputError(f"{path}:{line_of(i)}: expected ',' or ']' in the JSON list")


def read_dpr(path: str) -> List[Group]:
    out: List[Group] = []
    for k, (lineno, obj) in enumerate(_array_items(path)):
        where = f"{path}:{lineno}"
        if not isinstance(obj, dict):
            raise InputError(f"{where}: expected a JSON object per question")
        q = obj.get("question")
        if not isinstance(q, str) or not q.strip():
            raise InputError(f"{where}: missing or empty 'question'")
        answers = obj.get("answers", [])
        if not isinstance(answers, list):
            raise InputError(f"{where}: 'answers' must be a list")
        qid, answers = str(obj.get("qid", obj.get("id", k))), [str(a) for a in answers]
        if "ctxs" in obj:
            ctxs = passages(obj, "ctxs", where)
            for i, c in enumerate(ctxs):
                if c.has_answer is None:
                    raise InputError(f"{where}: ctxs[{i}] has no 'has_answer'")
            out.append(Group(qid, q, [c for c in ctxs if c.has_answer], [c for c in ctxs if not c.has_answer],
                             answers, ctxs))
        elif "positive_ctxs" in obj:
            neg = passages(obj, "hard_negative_ctxs", where) or passages(obj, "negative_ctxs", where)
            out.append(Group(qid, q, passages(obj, "positive_ctxs", where), neg, answers))
        else:
            raise InputError(f"{where}: a question needs 'ctxs' (retriever results) or 'positive_ctxs' (training)")
    if not out:
        raise InputError(f"no questions in {path}")
    return out


def read_training(path: str) -> List[Group]:
    """Tevatron JSONL or DPR JSON (a list), told apart by the first non-blank character; positives may be absent."""
    head = read_text(path).lstrip()[:1]
    if head == "[":
        return read_dpr(path)
    if head == "{":
        return read_groups(path, require_positive=False)
    raise InputError(f"{path}: neither Tevatron JSONL (objects) nor DPR JSON (a list)")
