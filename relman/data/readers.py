"""One entry point over the readers: guess a format, read a path or stored files, split.

`read_path` reads what a user points at (registration); `read_entries` reads the same files
back from wherever they are stored (the blob store), named by their relative paths so error
messages and labels do not depend on where the bytes live. Both end in `finish`, which applies
the seeded split, so the two always give the same rows.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

from relman.data.dataset import Dataset
from relman.data.mapping import FORMATS, ColumnMapping
from relman.data.splits import seeded_split, split_counts
from relman.errors import DatasetError

SUFFIX_FORMATS = {".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet",
                  ".pq": "parquet", ".npz": "npz", ".txt": "text", ".text": "text"}


def guess_format(path: Path | str) -> str:
    p = Path(path)
    if p.is_dir():
        return "images"
    fmt = SUFFIX_FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise DatasetError(f"{p.name}: cannot tell the format from the suffix '{p.suffix}' "
                           f"(give --format, one of {', '.join(FORMATS)})")
    return fmt


def normalise(mapping: ColumnMapping, path: Path | None = None) -> ColumnMapping:
    """Drop the fields a format does not use, so the stored mapping says only what matters."""
    fmt = mapping.format
    if fmt == "text":
        return replace(mapping, text_col=None, label_col=None, group_col=None, split_col=None, x_key=None,
                       y_key=None, image_col=None, image_size=None, delimiter=",")
    if fmt == "images":
        return replace(mapping, text_col=None, label_col=None, group_col=None, split_col=None, x_key=None,
                       y_key=None, image_col=None, chunk_chars=None, delimiter=",")
    if fmt == "npz":
        return replace(mapping, text_col=None, label_col=None, image_col=None, image_size=None, chunk_chars=None,
                       delimiter=",")
    if mapping.image_col:
        mapping = replace(mapping, text_col=None)
    else:
        mapping = replace(mapping, image_size=None)
    delimiter = mapping.delimiter
    if fmt == "csv" and path is not None and Path(path).suffix.lower() == ".tsv" and delimiter == ",":
        delimiter = "\t"
    return replace(mapping, x_key=None, y_key=None, chunk_chars=None,
                   delimiter=delimiter if fmt == "csv" else ",")


def file_entries(path: Path, fmt: str) -> list[tuple[str, Path]]:
    """The files a dataset consists of, as (relative path, file) pairs."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    if fmt == "images":
        from relman.data.read_images import folder_entries

        return folder_entries(path)
    if path.is_dir():
        raise DatasetError(f"{path}: a folder, but format '{fmt}' reads one file")
    return [(path.name, path)]


def read_entries(entries: Sequence[tuple[str, Path]], mapping: ColumnMapping, *, name: str,
                 labels: Sequence[str] | None = None, where: str | None = None) -> Dataset:
    """Read a dataset from its files ((relative path, file) pairs) with `mapping`."""
    fmt = mapping.format
    if fmt == "images":
        from relman.data.read_images import read_image_entries

        ds = read_image_entries(entries, mapping, name=name, labels=labels, where=where or "")
        return finish(ds, mapping)
    if len(entries) != 1:
        raise DatasetError(f"format '{fmt}' reads exactly one file, got {len(entries)}")
    rel, file = entries[0]
    shown = where or rel
    if fmt == "csv":
        from relman.data.read_csv import read_csv as reader
    elif fmt == "jsonl":
        from relman.data.read_jsonl import read_jsonl as reader
    elif fmt == "parquet":
        from relman.data.read_parquet import read_parquet as reader
    elif fmt == "npz":
        from relman.data.read_npz import read_npz as reader
    elif fmt == "text":
        from relman.data.read_text import read_text as reader
    else:  # pragma: no cover - ColumnMapping refuses unknown formats
        raise DatasetError(f"unknown format '{fmt}'")
    return finish(reader(file, mapping, name=name, labels=labels, where=shown), mapping)


def read_path(path: Path | str, mapping: ColumnMapping, *, name: str,
              labels: Sequence[str] | None = None) -> Dataset:
    """Read the local file or folder at `path` (nothing is stored)."""
    path = Path(path).expanduser()
    entries = file_entries(path, mapping.format)
    where = str(path) if mapping.format == "images" else path.name
    return read_entries(entries, mapping, name=name, labels=labels, where=where)


def finish(ds: Dataset, mapping: ColumnMapping) -> Dataset:
    """Apply the seeded split (when asked) and record how the rows were made."""
    if mapping.seeded_split:
        ds.split = seeded_split(len(ds), mapping.val_fraction, mapping.test_fraction, mapping.seed)
    ds.meta = {**ds.meta, "format": mapping.format, "mapping": mapping.to_json(),
               "split_counts": split_counts(ds.split)}
    return ds
