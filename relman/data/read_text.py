"""A plain UTF-8 text file -> language-modelling Dataset (kind 'lm', no labels).

Rows are the non-blank lines (line ending removed), or, with `chunk_chars`, consecutive
fixed-size chunks of the whole text (the last one may be shorter). Streamed a line at a time
(`iter_lines`): only the rows are kept.
"""

from __future__ import annotations

from pathlib import Path

from relman.data.dataset import Dataset
from relman.data.mapping import ColumnMapping
from relman.data.text_decoding import iter_lines
from relman.errors import DatasetError


def read_text(path: Path, mapping: ColumnMapping, *, name: str, where: str | None = None, **_: object) -> Dataset:
    where = where or Path(path).name
    texts: list[str] = []
    if mapping.chunk_chars:
        k = int(mapping.chunk_chars)
        pending = ""
        for _, line in iter_lines(path, where):
            pending += line
            if len(pending) < k:
                continue
            cut = len(pending) - len(pending) % k
            texts.extend(t for t in (pending[i:i + k] for i in range(0, cut, k)) if t.strip())
            pending = pending[cut:]
        if pending.strip():
            texts.append(pending)
    else:
        for _, line in iter_lines(path, where):
            line = line.rstrip("\r\n")
            if line.strip():
                texts.append(line)
    if not texts:
        raise DatasetError(f"{where}: no text")
    return Dataset(name=name, kind="lm", texts=texts)
