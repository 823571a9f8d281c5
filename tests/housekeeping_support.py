"""Helpers for the housekeeping tests: versions built from planted files (no torch needed)."""

from __future__ import annotations

import os
from pathlib import Path

from relman.catalog import Catalog, VersionInfo


def files_of(tmp: Path, name: str, contents: dict[str, bytes]) -> dict[str, Path]:
    """Write `contents` under tmp/name and return the {relative path: file} mapping."""
    folder = tmp / name
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for rel, data in contents.items():
        p = folder / rel
        p.write_bytes(data)
        out[rel] = p
    return out


def planted_version(catalog: Catalog, tmp: Path, model: str, label: str, *, shared: bytes, unique: bytes,
                    fmt: str = "safetensors", parents=(), relation: str = "") -> VersionInfo:
    """A version with one blob it shares (same bytes as others) and one of its own."""
    files = files_of(tmp, f"{model}-{label}", {"shared.bin": shared, f"own-{label}.bin": unique})
    return catalog.add_version(model, files, format=fmt, parents=list(parents), relation=relation)


def store_files_bytes(root: Path) -> int:
    return sum(os.lstat(os.path.join(d, f)).st_size for d, _, fs in os.walk(root) for f in fs)
