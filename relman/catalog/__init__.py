"""The SQLite catalog and the content-addressed artifact store.

`open_catalog(path)` is the one way in: it creates or migrates the folder and returns a
`Catalog`. Nothing here imports torch or Qt.
"""

from relman.catalog.catalog import Catalog, Metric, VersionInfo, open_catalog
from relman.catalog.location import default_catalog_path, resolve_catalog_path

__all__ = [
    "Catalog",
    "Metric",
    "VersionInfo",
    "open_catalog",
    "default_catalog_path",
    "resolve_catalog_path",
]
