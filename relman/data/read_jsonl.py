"""JSON Lines (one object per line) -> text Dataset.

Streamed: one decoded line at a time (`iter_lines`), and of each object only the keys the
mapping names are kept.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Sequence

from relman.data.dataset import Dataset
from relman.data.mapping import ColumnMapping
from relman.data.table import columns_to_dataset, require_columns
from relman.data.text_decoding import iter_lines
from relman.errors import DatasetError
from relman.jsonlimits import MAX_DEPTH, depth


def json_objects(path: Path, where: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line, streamed (`iter_lines`: the size cap, NUL
    and UTF-8 checks); one-line errors for bad JSON, too-deep nesting or a non-object. Every JSON
    Lines reader goes through it (text, mcq / qa items, sft rows, lm-eval data files)."""
    for lineno, line in iter_lines(path, where):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{where} line {lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
        except RecursionError:
            raise DatasetError(f"{where} line {lineno}: JSON nested too deeply") from None
        if depth(obj) > MAX_DEPTH:
            raise DatasetError(f"{where} line {lineno}: JSON nested too deeply (more than {MAX_DEPTH} levels)")
        if not isinstance(obj, dict):
            raise DatasetError(f"{where} line {lineno}: expected a JSON object, got {type(obj).__name__}")
        yield lineno, obj


def read_jsonl(path: Path, mapping: ColumnMapping, *, name: str, labels: Sequence[str] | None = None,
               where: str | None = None) -> Dataset:
    where = where or Path(path).name
    wanted = [c for c in dict.fromkeys((mapping.text_col, mapping.label_col, mapping.group_col, mapping.split_col))
              if c]
    columns: dict[str, list[Any]] = {c: [] for c in wanted}
    lines: list[int] = []
    for lineno, obj in json_objects(path, where):
        if not lines:
            require_columns(list(obj), mapping, where)
        for c in wanted:
            if c not in obj:
                raise DatasetError(f"{where} row {len(lines) + 1} (line {lineno}): no key '{c}' "
                                   f"(keys: {', '.join(obj) or 'none'})")
            columns[c].append(obj[c])
        lines.append(lineno)
    if not lines:
        raise DatasetError(f"{where}: no data rows")
    return columns_to_dataset(name, columns, len(lines), mapping, labels, where=where,
                              row_name=lambda i: f"row {i + 1} (line {lines[i]})")
