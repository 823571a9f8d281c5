"""A CoNLL-style file -> token-tagged Dataset (kind 'tokens'), for named-entity models.

One token a line: the token, a tab or spaces, its BIO (IOB2) tag (`O`, `B-TYPE`, `I-TYPE`);
a blank line between sentences. Lines with more columns (CoNLL-2003's token, POS, chunk, NER)
are read as token first, tag last, as long as every line has the same number of columns.
`-DOCSTART-` lines are skipped. Every mistake is a one-line `DatasetError` naming the line: a
line with one column or another column count than the first, a tag that is not BIO, a tag
outside the given labels.

Each row is a sentence: `words` its tokens, `tags` their indices into `label_names`, and
`texts` the tokens joined by spaces, so text-only consumers (calibration, latency on real
rows, fidelity) can read the same rows.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np

from relman.data.dataset import Dataset
from relman.data.mapping import ColumnMapping
from relman.data.text_decoding import read_utf8
from relman.errors import DatasetError

BIO_TAG = re.compile(r"^(O|[BI]-\S+)$")


def is_bio_tag(tag: str) -> bool:
    """'O', 'B-TYPE' or 'I-TYPE'."""
    return bool(BIO_TAG.match(tag))


def _columns(line: str) -> list[str]:
    return line.split("\t") if "\t" in line else line.split()


def read_conll(path: Path, mapping: ColumnMapping, *, name: str, labels: Sequence[str] | None = None,
               where: str | None = None) -> Dataset:
    where = where or Path(path).name
    text = read_utf8(path, where)
    given = [str(x) for x in labels] if labels else None
    if given is not None:
        bad = [t for t in given if not is_bio_tag(t)]
        if bad:
            raise DatasetError(f"the given labels must be BIO tags (O, B-TYPE, I-TYPE); not: {', '.join(bad[:5])}")
    sentences: list[tuple[list[str], list[str]]] = []  # words, tags
    words: list[str] = []
    tags: list[str] = []
    width = 0
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("-DOCSTART-"):
            if words:
                sentences.append((words, tags))
                words, tags = [], []
            continue
        cols = [c.strip() for c in _columns(line)]
        if len(cols) < 2 or any(not c for c in cols):
            raise DatasetError(f"{where} line {lineno}: expected a token and a tag separated by a tab or spaces, "
                               f"got {len(cols)} column(s): {line[:60]!r}")
        if width == 0:
            width = len(cols)
        elif len(cols) != width:
            raise DatasetError(f"{where} line {lineno}: {len(cols)} columns, but the file's first token line has "
                               f"{width}")
        tag = cols[-1]
        if not is_bio_tag(tag):
            raise DatasetError(f"{where} line {lineno}: tag '{tag}' is not a BIO tag (O, B-TYPE or I-TYPE)")
        if given is not None and tag not in given:
            raise DatasetError(f"{where} line {lineno}: tag '{tag}' is not one of the given labels "
                               f"({', '.join(given)})")
        words.append(cols[0])
        tags.append(tag)
    if words:
        sentences.append((words, tags))
    if not sentences:
        raise DatasetError(f"{where}: no sentences (expected token<TAB>tag lines)")
    names = given if given is not None else sorted({t for _, ts in sentences for t in ts})
    index = {t: i for i, t in enumerate(names)}
    return Dataset(name=name, kind="tokens", texts=[" ".join(w) for w, _ in sentences],
                   words=[w for w, _ in sentences],
                   tags=[np.array([index[t] for t in ts], dtype=np.int64) for _, ts in sentences],
                   label_names=list(names))
