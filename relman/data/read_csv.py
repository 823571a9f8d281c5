"""CSV (or TSV) with a header row -> text Dataset.

Streamed: the csv module pulls one decoded line at a time (`iter_lines`), and only the
columns the mapping names are kept, so memory follows the rows kept, not the file.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator, Sequence

from relman.data.dataset import Dataset
from relman.data.mapping import ColumnMapping
from relman.data.table import columns_to_dataset, require_columns
from relman.data.text_decoding import iter_lines
from relman.errors import DatasetError


def read_csv(path: Path, mapping: ColumnMapping, *, name: str, labels: Sequence[str] | None = None,
             where: str | None = None) -> Dataset:
    where = where or Path(path).name

    def lines() -> Iterator[str]:
        for _, line in iter_lines(path, where):
            yield line

    reader = csv.reader(lines(), delimiter=mapping.delimiter, strict=True)
    try:
        header = next(reader)
    except (StopIteration, csv.Error) as e:
        raise DatasetError(f"{where}: no header row ({e})") from None
    header = [h.strip() for h in header]
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise DatasetError(f"{where}: the header repeats column(s) {', '.join(dupes)}")
    require_columns(header, mapping, where)
    wanted = [c for c in dict.fromkeys((mapping.text_col, mapping.label_col, mapping.group_col, mapping.split_col))
              if c]
    index = [(c, header.index(c)) for c in wanted]
    columns: dict[str, list[str]] = {c: [] for c in wanted}
    lines_of_rows: list[int] = []
    try:
        for row in reader:
            if not row:
                continue  # a blank line (a line of empty fields is a row, and is checked)
            if len(row) != len(header):
                raise DatasetError(f"{where} row {len(lines_of_rows) + 1} (line {reader.line_num}): {len(row)} "
                                   f"fields, the header has {len(header)}")
            for c, i in index:
                columns[c].append(row[i])
            lines_of_rows.append(reader.line_num)
    except csv.Error as e:
        raise DatasetError(f"{where} line {reader.line_num}: not valid CSV ({e})") from None
    return columns_to_dataset(name, columns, len(lines_of_rows), mapping, labels, where=where,
                              row_name=lambda i: f"row {i + 1} (line {lines_of_rows[i]})")
