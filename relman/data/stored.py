"""Reading registered datasets back from the catalog (what workers call).

`load_dataset` reads the stored blobs in place with the stored column mapping, so a worker
process gets exactly the rows that were checked when the dataset was registered. It lives
here (not in relman/app) so job code can import it without the use-case layer;
`relman.app.datasets` re-exports it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from relman.errors import DatasetError, IntegrityError, NotFound

if TYPE_CHECKING:
    from relman.catalog import Catalog
    from relman.data.dataset import Dataset


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    row = dict(row)
    for key, default in (("columns", {}), ("labels", []), ("meta", {})):
        row[key] = json.loads(row[key] or json.dumps(default))
    return row


def list_datasets(catalog: "Catalog") -> list[dict[str, Any]]:
    return [_decode(r) for r in catalog.query("SELECT * FROM datasets ORDER BY name")]


def get_dataset(catalog: "Catalog", name_or_id: str | int) -> dict[str, Any]:
    """A dataset row (JSON fields decoded) by name or id; `NotFound` lists the known names."""
    if isinstance(name_or_id, int) or (isinstance(name_or_id, str) and name_or_id.isdigit()
                                       and not catalog.query("SELECT 1 FROM datasets WHERE name = ?", [name_or_id])):
        rows = catalog.query("SELECT * FROM datasets WHERE id = ?", [int(name_or_id)])
    else:
        rows = catalog.query("SELECT * FROM datasets WHERE name = ?", [name_or_id])
    if not rows:
        known = ", ".join(r["name"] for r in catalog.query("SELECT name FROM datasets ORDER BY name")) or "none yet"
        raise NotFound(f"unknown dataset '{name_or_id}' (datasets in this catalog: {known})")
    return _decode(rows[0])


def dataset_files(catalog: "Catalog", dataset_id: int) -> list[dict[str, Any]]:
    return catalog.query("SELECT path, sha256, size FROM dataset_files WHERE dataset_id = ? ORDER BY path",
                         [dataset_id])


def load_dataset(catalog: "Catalog", name_or_id: str | int, split: str | None = None, *,
                 verify: bool = False) -> "Dataset":
    """The registered dataset, read from its stored blobs with its stored mapping.

    `split` selects train/validation/test (a dataset without splits is returned whole).
    With `verify`, every blob is re-hashed first. `Dataset.sha256` is the dataset's content
    hash and `Dataset.id` its row id, for metric contexts."""
    from relman.data.dataset import SPLITS
    from relman.data.formats import get_reader
    from relman.data.mapping import ColumnMapping
    from relman.data.readers import read_entries

    if split is not None and split not in SPLITS:
        raise DatasetError(f"unknown split '{split}' (splits: {', '.join(SPLITS)})")
    row = get_dataset(catalog, name_or_id)
    entries = []
    for f in dataset_files(catalog, row["id"]):
        problem = catalog.store.verify(f["sha256"]) if verify else (None if catalog.store.has(f["sha256"])
                                                                    else "missing")
        if problem:
            blob = catalog.store.path(f["sha256"])
            raise IntegrityError(f"dataset '{row['name']}': the blob of {f['path']} ({blob}): {problem}; "
                                 "run 'relman verify'")
        entries.append((f["path"], catalog.store.path(f["sha256"])))
    mapping = ColumnMapping.from_json(row["columns"])
    where = row["name"] if get_reader(row["format"]).folder else None
    ds = read_entries(entries, mapping, name=row["name"], labels=row["labels"], where=where)
    ds.sha256 = row["sha256"]
    ds.id = row["id"]
    ds.meta = {**ds.meta, **row["meta"]}
    if split is not None:
        if ds.split is None:
            return ds
        ds = ds.subset(split)
        if len(ds) == 0:
            raise DatasetError(f"dataset '{row['name']}' has no rows in split '{split}'")
    return ds
