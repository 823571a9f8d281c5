"""Dataset readers (CSV, JSONL, Parquet, image folders, NPZ, plain text) and demo data.

`relman.data.load_dataset(catalog, name_or_id, split=None)` reads a registered dataset back
(imported lazily, so `import relman.data` stays light).
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_dataset", "check_labels", "align_labels"]


def __getattr__(name: str) -> Any:
    if name == "load_dataset":
        from relman.data.stored import load_dataset

        return load_dataset
    if name in ("check_labels", "align_labels"):
        from relman.data import labels

        return getattr(labels, name)
    raise AttributeError(f"module 'relman.data' has no attribute {name!r}")
