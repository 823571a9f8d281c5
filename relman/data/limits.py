"""How much of a dataset relman reads into memory: one cap for every reader.

A dataset ends up in memory as a whole (texts, images, labels), so whatever a reader cannot
stream past is capped before it is read: a file's size (CSV, JSONL, text, CoNLL), an NPZ's
decompressed arrays, a Parquet file's uncompressed row groups. 1 GiB by default;
$RELMAN_MAX_DATASET_BYTES lowers or raises it (tests use a few kB).
"""

from __future__ import annotations

import os
from pathlib import Path

from relman.errors import DatasetError

DEFAULT_MAX_BYTES = 1 << 30
MAX_BYTES_ENV = "RELMAN_MAX_DATASET_BYTES"


def max_dataset_bytes() -> int:
    raw = os.environ.get(MAX_BYTES_ENV)
    try:
        value = int(raw) if raw else DEFAULT_MAX_BYTES
    except ValueError:
        raise DatasetError(f"{MAX_BYTES_ENV} must be a number of bytes, not '{raw}'") from None
    if value <= 0:
        raise DatasetError(f"{MAX_BYTES_ENV} must be a positive number of bytes, not '{raw}'")
    return value


def check_file_size(path: Path, where: str) -> int:
    """The file's size, or a `DatasetError` when it is over the cap. Read from the directory
    entry, so a sparse 2 GB file is refused without a byte of it being read."""
    try:
        size = Path(path).stat().st_size
    except OSError as e:
        raise DatasetError(f"{where}: cannot read ({e.strerror or e})") from None
    limit = max_dataset_bytes()
    if size > limit:
        raise DatasetError(f"{where}: {size:,} bytes, over the {limit:,}-byte cap on a dataset ({MAX_BYTES_ENV})")
    return size
