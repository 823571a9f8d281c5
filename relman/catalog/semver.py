"""Semantic version strings (MAJOR.MINOR.PATCH[-PRERELEASE]) and the bumps relman applies."""

from __future__ import annotations

import re
from typing import Iterable

from relman.errors import RelmanError

_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-([0-9A-Za-z.-]+))?$")


def parse(text: str) -> tuple[int, int, int, str]:
    m = _SEMVER.fullmatch(text) if isinstance(text, str) and text.isascii() else None
    if not m:
        from relman.names import terminal_safe

        raise RelmanError(f"'{terminal_safe(text)}' is not a semantic version (expected MAJOR.MINOR.PATCH, e.g. 1.2.0)")
    return int(m[1]), int(m[2]), int(m[3]), m[4] or ""


def is_semver(text: str) -> bool:
    return isinstance(text, str) and text.isascii() and bool(_SEMVER.fullmatch(text))


def sort_key(text: str) -> tuple[int, int, int, int, str]:
    """Orders versions as semver does: a pre-release sorts before its release."""
    major, minor, patch, pre = parse(text)
    return major, minor, patch, 0 if pre else 1, pre


def next_import_version(existing: Iterable[str]) -> str:
    """A new import of a model bumps the minor of the highest version (first one: 1.0.0)."""
    versions = [parse(v) for v in existing]
    if not versions:
        return "1.0.0"
    major, minor, _, _ = max(versions, key=lambda v: (v[0], v[1], v[2], 0 if v[3] else 1, v[3]))
    return f"{major}.{minor + 1}.0"


def next_derived_version(parent: str, existing: Iterable[str]) -> str:
    """A version derived from `parent` (compression, fine-tune, merge) bumps the patch of the
    highest version sharing the parent's MAJOR.MINOR, so children sort next to their parent."""
    pmajor, pminor, _, _ = parse(parent)
    patches = [p for (ma, mi, p, _) in map(parse, existing) if ma == pmajor and mi == pminor]
    return f"{pmajor}.{pminor}.{max(patches, default=0) + 1}"
