"""A plain UTF-8 text file -> language-modelling Dataset (kind 'lm', no labels).

Rows are the non-blank lines (trailing newline removed), or, with `chunk_chars`, consecutive
fixed-size chunks of the whole text (the last one may be shorter).
"""

from __future__ import annotations

from pathlib import Path

from relman.data.dataset import Dataset
from relman.data.mapping import ColumnMapping
from relman.data.text_decoding import read_utf8
from relman.errors import DatasetError


def read_text(path: Path, mapping: ColumnMapping, *, name: str, where: str | None = None, **_: object) -> Dataset:
    where = where or Path(path).name
    text = read_utf8(path, where)
    if mapping.chunk_chars:
        k = int(mapping.chunk_chars)
        texts = [text[i:i + k] for i in range(0, len(text), k)]
        texts = [t for t in texts if t.strip()]
    else:
        texts = [line for line in text.splitlines() if line.strip()]
    if not texts:
        raise DatasetError(f"{where}: no text")
    return Dataset(name=name, kind="lm", texts=texts)
