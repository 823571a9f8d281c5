"""Where the catalog lives: `--catalog` beats `RELMAN_CATALOG` beats the platform default."""

from __future__ import annotations

import os
from pathlib import Path


def default_catalog_path() -> Path:
    """The per-user data folder (platformdirs), e.g. ~/.local/share/relman/catalog on Linux."""
    import platformdirs

    return Path(platformdirs.user_data_dir("relman", appauthor=False)) / "catalog"


def resolve_catalog_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Always absolute: the path is handed to worker processes, which run in another folder."""
    if explicit:
        return Path(explicit).expanduser().absolute()
    env = os.environ.get("RELMAN_CATALOG")
    if env:
        return Path(env).expanduser().absolute()
    return default_catalog_path()
