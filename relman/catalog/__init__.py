"""The SQLite catalog and the content-addressed artifact store.

`open_catalog(path)` is the one way in: it creates or migrates the folder and returns a
`Catalog`. Nothing here imports torch or Qt.
"""

import sys as _sys


def _import_sqlite_utils_light() -> None:
    """sqlite-utils imports pandas and numpy, when installed, only to map their types on
    insert — which relman never uses — and that costs ~1 s (pandas pulls in pyarrow) on every
    CLI and GUI start. Import it with both hidden so it takes its no-pandas path; they import
    normally afterwards."""
    if "sqlite_utils" in _sys.modules:
        return
    hidden = [m for m in ("pandas", "numpy") if m not in _sys.modules]
    for m in hidden:
        _sys.modules[m] = None  # type: ignore[assignment]
    try:
        import sqlite_utils  # noqa: F401
    finally:
        for m in hidden:
            if _sys.modules.get(m, 0) is None:
                del _sys.modules[m]


_import_sqlite_utils_light()

from relman.catalog.catalog import Catalog, EvalArtifact, Metric, VersionInfo, open_catalog  # noqa: E402 (after the light import)
from relman.catalog.location import default_catalog_path, resolve_catalog_path  # noqa: E402

__all__ = [
    "Catalog",
    "EvalArtifact",
    "Metric",
    "VersionInfo",
    "open_catalog",
    "default_catalog_path",
    "resolve_catalog_path",
]
