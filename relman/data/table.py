"""Columns of a table (CSV, JSONL, Parquet) -> a checked text `Dataset`.

The readers only parse; every check on the mapping lives here, so each format refuses the
same mistakes with the same messages: a missing column (naming those that exist), a text
cell that is not a string or is empty, an empty or NaN label, a label outside the given list,
a missing group, a split value other than train/validation/test.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from relman.data.dataset import Dataset
from relman.data.labels import encode_labels
from relman.data.mapping import ColumnMapping
from relman.data.splits import check_split_values
from relman.errors import DatasetError

RowName = Callable[[int], str]


def require_columns(available: Sequence[str], mapping: ColumnMapping, where: str) -> None:
    wanted = [("text", mapping.text_col), ("image", mapping.image_col), ("label", mapping.label_col),
              ("group", mapping.group_col), ("split", mapping.split_col)]
    if mapping.text_col is None and mapping.image_col is None:
        raise DatasetError(f"{where}: a text column is needed (give --text-col)")
    for role, col in wanted:
        if col is not None and col not in available:
            shown = ", ".join(available) if available else "none"
            raise DatasetError(f"{where}: no {role} column '{col}' (columns: {shown})")


def columns_to_dataset(name: str, columns: dict[str, Sequence[Any]], n: int, mapping: ColumnMapping,
                       labels: Sequence[str] | None, *, where: str, row_name: RowName,
                       images: np.ndarray | None = None) -> Dataset:
    """`images` (already decoded, for an image column) stand in for the text column."""
    if n == 0:
        raise DatasetError(f"{where}: no data rows")
    require_columns(list(columns), mapping, where)
    texts = None
    if images is None:
        texts = _texts(columns[mapping.text_col], where=where, column=mapping.text_col, row_name=row_name)
    y = None
    label_names: list[str] = []
    if mapping.label_col is not None:
        y, label_names = encode_labels(columns[mapping.label_col], labels, where=where, column=mapping.label_col,
                                       row_name=row_name)
    groups = None
    if mapping.group_col is not None:
        groups = _groups(columns[mapping.group_col], where=where, column=mapping.group_col, row_name=row_name)
    split = None
    if mapping.split_col is not None:
        split = check_split_values(columns[mapping.split_col], where=where, column=mapping.split_col,
                                   row_name=row_name)
    return Dataset(name=name, kind="text" if images is None else "image", texts=texts, images=images, labels=y,
                   label_names=label_names, groups=groups, split=split)


def _texts(values: Sequence[Any], *, where: str, column: str, row_name: RowName) -> list[str]:
    out = []
    for i, v in enumerate(values):
        if not isinstance(v, str):
            shown = "empty" if v is None else f"a {type(v).__name__} ({v!r}), not a string"
            raise DatasetError(f"{where} {row_name(i)}: text column '{column}' is {shown}")
        if not v.strip():
            raise DatasetError(f"{where} {row_name(i)}: text column '{column}' is empty")
        out.append(v)
    return out


def _groups(values: Sequence[Any], *, where: str, column: str, row_name: RowName) -> np.ndarray:
    from relman.data.labels import label_text

    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        t = label_text(v)
        if t is None:
            raise DatasetError(f"{where} {row_name(i)}: group column '{column}' is empty")
        out[i] = t
    return out
