"""What the dataset dialog can tell from a file before it is registered: its columns (the
first line of a CSV/TSV, the first row of a JSON Lines file) and a dataset name from the file
name. Reads at most `PEEK_BYTES` of the file, so it is cheap enough for the GUI thread; the
full read (and every check) stays in the registration job."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Sequence

PEEK_BYTES = 64 * 1024  # a header line longer than this is not a table the dialog can help with
_TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t", ".txt": None}
_JSONL_SUFFIXES = (".jsonl", ".ndjson")


def peek_columns(path: Path | str) -> list[str]:
    """The column names of a CSV/TSV (header line) or JSON Lines (first row's keys) file;
    [] for anything else (a folder, another format, an unreadable or headless file)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if not p.is_file() or (suffix not in _TABLE_SUFFIXES and suffix not in _JSONL_SUFFIXES):
        return []
    try:
        with p.open("rb") as f:
            head = f.read(PEEK_BYTES)
    except OSError:
        return []
    text = head.decode("utf-8-sig", errors="replace")
    first = text.splitlines()[0] if text.splitlines() else ""
    if suffix in _JSONL_SUFFIXES:
        try:
            row = json.loads(first)
        except ValueError:
            return []
        return [str(k) for k in row] if isinstance(row, dict) else []
    delimiter = _TABLE_SUFFIXES[suffix] or ("\t" if "\t" in first else ",")
    try:
        names = next(csv.reader(io.StringIO(first), delimiter=delimiter), [])
    except csv.Error:
        return []
    return [n.strip() for n in names if n.strip()]


def propose_dataset_name(path: Path | str, existing: Sequence[str] = ()) -> str:
    """A dataset name from the file (or folder) name that the catalog's name rule accepts and
    no registered dataset has: `Reviews 2024.csv` → `reviews-2024`."""
    p = Path(str(path).rstrip("/\\"))
    stem = p.stem if p.suffix else p.name
    slug = re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-._")[:100] or "dataset"
    taken = set(existing)
    name, n = slug, 2
    while name in taken:
        name, n = f"{slug}-{n}", n + 1
    return name


def pick_column(columns: Sequence[str], wanted: Sequence[str]) -> str | None:
    """The first of `columns` whose lower-cased name is one of `wanted` (e.g. text, sentence)."""
    lower = {c.lower(): c for c in columns}
    return next((lower[w] for w in wanted if w in lower), None)
