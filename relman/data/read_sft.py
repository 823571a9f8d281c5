"""Instruction data for fine-tuning language models (JSON Lines) -> a Dataset of kind 'sft'.

Two row shapes, the two the fine-tuning tools share (TRL, Axolotl, the OpenAI fine-tuning API):

    {"prompt": "Q: What is the secret code word?\\nA:", "completion": " marmalade"}
    {"messages": [{"role": "system", "content": "..."}, {"role": "user", "content": "..."},
                  {"role": "assistant", "content": "..."}]}

The first row decides the shape; every row must have it. A prompt/completion row needs both
keys as strings (the completion non-empty: it is what the loss is on); a chat row needs a list
of {role, content} turns with roles system / user / assistant only and at least one assistant
turn (the loss is on assistant turns, so a conversation without one teaches nothing). Anything
else is refused naming the row and line, before anything is stored. An optional `split_col`
(train / validation / test) is read as for other tables.

Prompts land in `texts` (a chat row's text is its turns, one `role: content` line each, for
listings); completions in `completions`, conversations in `messages`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from relman.data.dataset import Dataset
from relman.data.mapping import ColumnMapping
from relman.data.read_jsonl import json_objects
from relman.data.splits import check_split_values
from relman.errors import DatasetError

ROLES = ("system", "user", "assistant")


def _records(path: Path, where: str) -> list[tuple[int, dict[str, Any]]]:
    out = list(json_objects(path, where))
    if not out:
        raise DatasetError(f"{where}: no data rows")
    return out


def _turns(value: Any, row: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise DatasetError(f"{row}: 'messages' must be a non-empty list of {{role, content}} turns")
    turns = []
    for k, turn in enumerate(value, start=1):
        if not isinstance(turn, dict) or not isinstance(turn.get("role"), str) \
                or not isinstance(turn.get("content"), str):
            raise DatasetError(f"{row}: turn {k} must be an object with string 'role' and 'content'")
        if turn["role"] not in ROLES:
            raise DatasetError(f"{row}: turn {k} has role {turn['role']!r}; allowed roles are {', '.join(ROLES)}")
        turns.append({"role": turn["role"], "content": turn["content"]})
    if not any(t["role"] == "assistant" and t["content"].strip() for t in turns):
        raise DatasetError(f"{row}: no assistant turn with content (the loss is on assistant turns)")
    return turns


def read_sft(path: Path, mapping: ColumnMapping, *, name: str, where: str | None = None, **_: object) -> Dataset:
    where = where or Path(path).name
    records = _records(path, where)
    chat = "messages" in records[0][1]
    texts: list[str] = []
    completions: list[str] = []
    messages: list[list[dict[str, str]]] = []
    splits: list[Any] = []
    for i, (lineno, rec) in enumerate(records):
        row = f"{where} row {i + 1} (line {lineno})"
        if chat:
            if "messages" not in rec:
                raise DatasetError(f"{row}: no 'messages' (the first row is a chat row, so every row must be)")
            turns = _turns(rec["messages"], row)
            messages.append(turns)
            texts.append("\n".join(f"{t['role']}: {t['content']}" for t in turns))
        else:
            for key in ("prompt", "completion"):
                if key not in rec:
                    raise DatasetError(f"{row}: no '{key}' (a prompt/completion row needs both; keys: "
                                       f"{', '.join(rec) or 'none'})")
                if not isinstance(rec[key], str):
                    raise DatasetError(f"{row}: '{key}' must be a string, got {type(rec[key]).__name__}")
            if not rec["completion"].strip():
                raise DatasetError(f"{row}: 'completion' is empty (the loss is on the completion)")
            texts.append(rec["prompt"])
            completions.append(rec["completion"])
        if mapping.split_col:
            if mapping.split_col not in rec:
                raise DatasetError(f"{row}: no split key '{mapping.split_col}'")
            splits.append(rec[mapping.split_col])
    split = None
    if mapping.split_col:
        split = check_split_values(splits, where=where, column=mapping.split_col,
                                   row_name=lambda i: f"row {i + 1} (line {records[i][0]})")
    return Dataset(name=name, kind="sft", texts=texts, completions=None if chat else completions,
                   messages=messages if chat else None, split=split,
                   meta={"rows": "messages" if chat else "prompt/completion"})
