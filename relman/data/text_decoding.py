"""Strict UTF-8 text, read a line at a time, that says where a bad byte is (line and byte offset).

The text readers (CSV, JSONL, plain text, CoNLL) stream their file through `iter_lines`
instead of reading it whole: the bytes, their decoded copy and the split lines never sit in
memory together (a 2 GB CSV took 12 GB before it was refused). The file's size is capped first
(`relman.data.limits`), and a NUL byte ends the read at once: text never holds one, a sparse or
binary file does (a 2 GB file of NULs had passed as a two-row text dataset).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

from relman.data.limits import check_file_size
from relman.errors import DatasetError

_BOM = b"\xef\xbb\xbf"
_READ_BUFFER = 1 << 20
_LONE_CR = re.compile(r"(?<=\r)(?!\n|$)")  # a break after a CR that no LF follows (old Mac endings)


def iter_lines(path: Path, where: str) -> Iterator[tuple[int, str]]:
    """(line number from 1, line with its ending) for each line of the file, decoded strictly.

    A UTF-8 BOM is dropped; CR, LF and CRLF all end a line. An empty (or all-blank) file, a file
    over the dataset cap, a NUL byte or a byte that is not UTF-8 is a `DatasetError` naming
    `where`, the line and the byte offset. The blank-file check comes at the end of the lines,
    so a caller sees it before its own "no rows"."""
    check_file_size(path, where)
    try:
        f = open(path, "rb", buffering=_READ_BUFFER)
    except OSError as e:
        raise DatasetError(f"{where}: cannot read ({e.strerror or e})") from None
    offset, lineno, content = 0, 0, False
    with f:
        for raw in f:
            if offset == 0 and raw.startswith(_BOM):
                raw, offset = raw[len(_BOM):], len(_BOM)
            lineno += 1
            nul = raw.find(b"\0")
            if nul >= 0:
                raise DatasetError(f"{where}: line {lineno} holds a NUL byte (at byte offset {offset + nul}); "
                                   "a binary file, not text")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                bad = raw[e.start:e.start + 1].hex()
                raise DatasetError(f"{where}: line {lineno} is not UTF-8 text (byte 0x{bad} at byte offset "
                                   f"{offset + e.start})") from None
            offset += len(raw)
            content = content or bool(line.strip())
            if "\r" in line:
                parts = _LONE_CR.split(line)
                for part in parts[:-1]:
                    yield lineno, part
                    lineno += 1
                line = parts[-1]
            yield lineno, line
    if not content:
        raise DatasetError(f"{where}: file is empty")


def read_utf8(path: Path, where: str) -> str:
    """The whole file as text (for a caller that needs it whole), with the checks of `iter_lines`."""
    return "".join(line for _, line in iter_lines(path, where))

