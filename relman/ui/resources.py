"""One resolver for plain resource files (themes, icons), in development and frozen builds.

Why one function: PyInstaller unpacks data files under `sys._MEIPASS`, an installed package
keeps them next to the code, and a checkout keeps them in the repository's `resources/`. Every
caller asks `resource_path("themes", "dark.qss")` and never guesses.
"""

from __future__ import annotations

import sys
from pathlib import Path

from relman.errors import NotFound

_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # relman/


def resource_roots() -> list[Path]:
    """Candidate folders, most specific first."""
    roots: list[Path] = []
    frozen_root = getattr(sys, "_MEIPASS", None)
    if frozen_root:
        roots.append(Path(frozen_root) / "resources")
        roots.append(Path(frozen_root) / "relman" / "resources")
    roots.append(_PACKAGE_DIR.parent / "resources")  # checkout: <repo>/resources
    roots.append(_PACKAGE_DIR / "resources")  # installed as package data
    return roots


def resource_path(*parts: str) -> Path:
    """The file `parts` under the first resource root that has it."""
    for root in resource_roots():
        candidate = root.joinpath(*parts)
        if candidate.exists():
            return candidate
    where = ", ".join(str(r) for r in resource_roots())
    raise NotFound(f"resource {'/'.join(parts)} not found (looked in {where})")


def read_text(*parts: str) -> str:
    return resource_path(*parts).read_text(encoding="utf-8")
