"""CSV (or TSV) with a header row -> text Dataset."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Sequence

from relman.data.dataset import Dataset
from relman.data.mapping import ColumnMapping
from relman.data.table import columns_to_dataset
from relman.data.text_decoding import read_utf8
from relman.errors import DatasetError


def read_csv(path: Path, mapping: ColumnMapping, *, name: str, labels: Sequence[str] | None = None,
             where: str | None = None) -> Dataset:
    where = where or Path(path).name
    text = read_utf8(path, where)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=mapping.delimiter, strict=True)
    try:
        header = next(reader)
    except (StopIteration, csv.Error) as e:
        raise DatasetError(f"{where}: no header row ({e})") from None
    header = [h.strip() for h in header]
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise DatasetError(f"{where}: the header repeats column(s) {', '.join(dupes)}")
    columns: dict[str, list[str]] = {h: [] for h in header}
    lines: list[int] = []
    try:
        for row in reader:
            if not row:
                continue  # a blank line (a line of empty fields is a row, and is checked)
            if len(row) != len(header):
                raise DatasetError(f"{where} row {len(lines) + 1} (line {reader.line_num}): {len(row)} fields, "
                                   f"the header has {len(header)}")
            for h, c in zip(header, row):
                columns[h].append(c)
            lines.append(reader.line_num)
    except csv.Error as e:
        raise DatasetError(f"{where} line {reader.line_num}: not valid CSV ({e})") from None
    return columns_to_dataset(name, columns, len(lines), mapping, labels, where=where,
                              row_name=lambda i: f"row {i + 1} (line {lines[i]})")
