"""JSON Lines (one object per line) -> text Dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from relman.data.dataset import Dataset
from relman.data.mapping import ColumnMapping
from relman.data.table import columns_to_dataset, require_columns
from relman.data.text_decoding import read_utf8
from relman.errors import DatasetError


def read_jsonl(path: Path, mapping: ColumnMapping, *, name: str, labels: Sequence[str] | None = None,
               where: str | None = None) -> Dataset:
    where = where or Path(path).name
    text = read_utf8(path, where)
    records: list[dict[str, Any]] = []
    lines: list[int] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{where} line {lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
        except RecursionError:
            raise DatasetError(f"{where} line {lineno}: JSON nested too deeply") from None
        from relman.jsonlimits import MAX_DEPTH, depth

        if depth(obj) > MAX_DEPTH:
            raise DatasetError(f"{where} line {lineno}: JSON nested too deeply (more than {MAX_DEPTH} levels)")
        if not isinstance(obj, dict):
            raise DatasetError(f"{where} line {lineno}: expected a JSON object, got {type(obj).__name__}")
        records.append(obj)
        lines.append(lineno)
    if not records:
        raise DatasetError(f"{where}: no data rows")
    wanted = [c for c in (mapping.text_col, mapping.label_col, mapping.group_col, mapping.split_col) if c]
    require_columns(list(records[0]), mapping, where)
    columns: dict[str, list[Any]] = {c: [] for c in wanted}
    for i, rec in enumerate(records):
        for c in wanted:
            if c not in rec:
                raise DatasetError(f"{where} row {i + 1} (line {lines[i]}): no key '{c}' "
                                   f"(keys: {', '.join(rec) or 'none'})")
            columns[c].append(rec[c])
    return columns_to_dataset(name, columns, len(records), mapping, labels, where=where,
                              row_name=lambda i: f"row {i + 1} (line {lines[i]})")
