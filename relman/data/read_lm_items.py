"""Language-model evaluation items from JSON Lines: multiple-choice (OpenCompass `mcq`) and
question/answer (for greedy generation).

`mcq` reads OpenCompass's multiple-choice schema unchanged — one object a line with
`question`, the options under single capital letters `A`, `B`, `C` … (consecutive from A) and
`answer`, the right option's letter — into items `{"context": question, "choices": [...],
"gold": index}`. `qa` reads `question, answer` objects (`answer` a string or a list of accepted
strings) into `{"prompt": question, "answers": [...]}`. Malformed lines are refused with one
line naming the line and the field, before anything is stored.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from relman.data.dataset import Dataset
from relman.data.mapping import ColumnMapping
from relman.data.read_jsonl import json_objects
from relman.errors import DatasetError


json_lines = json_objects  # the one JSON Lines parser (relman.data.read_jsonl)


def _text(obj: dict[str, Any], key: str, where: str, lineno: int) -> str:
    if key not in obj:
        raise DatasetError(f"{where} line {lineno}: no '{key}' field (fields: {', '.join(obj) or 'none'})")
    value = obj[key]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise DatasetError(f"{where} line {lineno}: '{key}' must be text, got {type(value).__name__}")
    return value


def mcq_item(obj: dict[str, Any], where: str, lineno: int) -> dict[str, Any]:
    """One OpenCompass mcq object -> {"context", "choices", "gold"}."""
    question = _text(obj, "question", where, lineno)
    letters = []
    for letter in string.ascii_uppercase:
        if letter not in obj:
            break
        letters.append(letter)
    if len(letters) < 2:
        raise DatasetError(f"{where} line {lineno}: needs options 'A' and 'B' at least (found: "
                           f"{', '.join(letters) or 'none'})")
    extra = [k for k in obj if len(k) == 1 and k.isupper() and k not in letters]
    if extra:
        raise DatasetError(f"{where} line {lineno}: option '{extra[0]}' without the letters before it "
                           f"(options must run A, B, C … without gaps)")
    choices = [_text(obj, k, where, lineno) for k in letters]
    answer = _text(obj, "answer", where, lineno).strip()
    if answer not in letters:
        raise DatasetError(f"{where} line {lineno}: answer '{answer}' names no option (options: "
                           f"{', '.join(letters)})")
    return {"context": question, "choices": choices, "gold": letters.index(answer)}


def read_mcq(path: Path, mapping: ColumnMapping, *, name: str, labels: Sequence[str] | None = None,
             where: str | None = None) -> Dataset:
    where = where or Path(path).name
    items = [mcq_item(obj, where, lineno) for lineno, obj in json_lines(path, where)]
    if not items:
        raise DatasetError(f"{where}: no items")
    return Dataset(name=name, kind="mcq", texts=[it["context"] for it in items], items=items,
                   meta={"source_schema": "opencompass-mcq"})


def read_qa(path: Path, mapping: ColumnMapping, *, name: str, labels: Sequence[str] | None = None,
            where: str | None = None) -> Dataset:
    where = where or Path(path).name
    items = []
    for lineno, obj in json_lines(path, where):
        prompt = _text(obj, "question", where, lineno)
        if "answer" not in obj:
            raise DatasetError(f"{where} line {lineno}: no 'answer' field (fields: {', '.join(obj) or 'none'})")
        raw = obj["answer"]
        answers = raw if isinstance(raw, list) else [raw]
        if not answers or not all(isinstance(a, (str, int, float)) and not isinstance(a, bool) for a in answers):
            raise DatasetError(f"{where} line {lineno}: 'answer' must be text or a list of texts")
        items.append({"prompt": prompt, "answers": [str(a) for a in answers]})
    if not items:
        raise DatasetError(f"{where}: no items")
    return Dataset(name=name, kind="qa", texts=[it["prompt"] for it in items], items=items,
                   meta={"source_schema": "question-answer"})
