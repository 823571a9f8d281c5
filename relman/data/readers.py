"""One entry point over the readers: guess a format, read a path or stored files, split.

`read_path` reads what a user points at (registration); `read_entries` reads the same files
back from wherever they are stored (the blob store), named by their relative paths so error
messages and labels do not depend on where the bytes live. Both end in `finish`, which applies
the seeded split, so the two always give the same rows.
"""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import Sequence

from relman.data.dataset import Dataset
from relman.data.formats import MAPPING_FIELDS, READERS, folder_format, format_of_suffix, get_reader
from relman.data.mapping import ColumnMapping
from relman.data.splits import seeded_split, split_counts
from relman.errors import DatasetError

# What `normalise` puts in a mapping field the format does not use.
_CLEARED = {f.name: (f.default if f.name == "delimiter" else None) for f in fields(ColumnMapping)
            if f.name in MAPPING_FIELDS}


def guess_format(path: Path | str) -> str:
    p = Path(path)
    if p.is_dir():
        fmt = folder_format()
        if fmt is None:  # pragma: no cover - the image folder reader is registered
            raise DatasetError(f"{p}: a folder, and no registered format reads folders")
        return fmt
    fmt = format_of_suffix(p.suffix)
    if fmt is None:
        raise DatasetError(f"{p.name}: cannot tell the format from the suffix '{p.suffix}' "
                           f"(give --format, one of {', '.join(READERS)})")
    return fmt


def normalise(mapping: ColumnMapping, path: Path | None = None) -> ColumnMapping:
    """Drop the fields a format does not use (its reader's `uses` in the reader table), so the
    stored mapping says only what matters; a suffix default (a .tsv file is tab-separated)
    applies when the field was left at its default."""
    reader = get_reader(mapping.format)
    cleared = {name: value for name, value in _CLEARED.items() if name not in reader.uses}
    mapping = replace(mapping, **cleared)
    if "image_col" in reader.uses:  # an image column stands in for the text column
        mapping = replace(mapping, text_col=None) if mapping.image_col else replace(mapping, image_size=None)
    if path is not None:
        for name, value in reader.suffix_defaults.get(Path(path).suffix.lower(), {}).items():
            if getattr(mapping, name) == _CLEARED.get(name):
                mapping = replace(mapping, **{name: value})
    return mapping


def file_entries(path: Path, fmt: str) -> list[tuple[str, Path]]:
    """The files a dataset consists of, as (relative path, file) pairs."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    reader = get_reader(fmt)
    if reader.folder:
        return reader.list_entries()(path)
    if path.is_dir():
        raise DatasetError(f"{path}: a folder, but format '{fmt}' reads one file")
    return [(path.name, path)]


def read_entries(entries: Sequence[tuple[str, Path]], mapping: ColumnMapping, *, name: str,
                 labels: Sequence[str] | None = None, where: str | None = None) -> Dataset:
    """Read a dataset from its files ((relative path, file) pairs) with `mapping`, by the
    reader the reader table names for its format."""
    fmt = mapping.format
    reader = get_reader(fmt)
    if reader.folder:
        ds = reader.function()(entries, mapping, name=name, labels=labels, where=where or "")
        return finish(ds, mapping)
    if len(entries) != 1:
        raise DatasetError(f"format '{fmt}' reads exactly one file, got {len(entries)}")
    rel, file = entries[0]
    return finish(reader.function()(file, mapping, name=name, labels=labels, where=where or rel), mapping)


def read_path(path: Path | str, mapping: ColumnMapping, *, name: str,
              labels: Sequence[str] | None = None) -> Dataset:
    """Read the local file or folder at `path` (nothing is stored)."""
    path = Path(path).expanduser()
    entries = file_entries(path, mapping.format)
    where = str(path) if get_reader(mapping.format).folder else path.name
    return read_entries(entries, mapping, name=name, labels=labels, where=where)


def finish(ds: Dataset, mapping: ColumnMapping) -> Dataset:
    """Apply the seeded split (when asked) and record how the rows were made."""
    if mapping.seeded_split:
        ds.split = seeded_split(len(ds), mapping.val_fraction, mapping.test_fraction, mapping.seed)
    ds.meta = {**ds.meta, "format": mapping.format, "mapping": mapping.to_json(),
               "split_counts": split_counts(ds.split)}
    return ds
