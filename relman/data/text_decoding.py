"""Strict UTF-8 decoding that says where a bad byte is (line and byte offset)."""

from __future__ import annotations

from pathlib import Path

from relman.errors import DatasetError


def read_utf8(path: Path, where: str) -> str:
    """The whole file as text. A UTF-8 BOM is dropped; an empty file or a byte that is not
    UTF-8 is a `DatasetError` naming `where`, the line and the byte offset."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise DatasetError(f"{where}: cannot read ({e.strerror or e})") from None
    if not data.strip():
        raise DatasetError(f"{where}: file is empty")
    return decode_utf8(data, where)


def decode_utf8(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        bad = data[e.start:e.start + 1].hex()
        raise DatasetError(f"{where}: line {line} is not UTF-8 text (byte 0x{bad} at byte offset {e.start})") from None
