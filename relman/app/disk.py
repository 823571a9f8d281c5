"""Where the catalog's bytes go (`relman du`), how much room is left, and the up-front check
that refuses a job whose output would not fit.

Attribution reads the reference sources of `relman.catalog.refs` and stats each blob once
(no hashing, no reading): a blob one owner references is that owner's *unique* bytes, a blob
several reference is *shared* (stored once thanks to content addressing), a blob nothing
references is *garbage* (`relman gc` removes it). Totals are measured on disk, so they match
what a file manager shows, and the parts always add up to the whole.
"""

from __future__ import annotations

import os
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

from relman.catalog import Catalog
from relman.catalog import refs
from relman.errors import DiskSpaceError
from relman.units import human_size

WARN_FREE_KEY = "disk.warn_free_bytes"
RESERVE_KEY = "disk.reserve_bytes"
DEFAULT_WARN_FREE = 2 * 1024**3
DEFAULT_RESERVE = 64 * 1024**2


def _tree_bytes(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            try:
                st = os.lstat(os.path.join(dirpath, f))
            except OSError:
                continue
            total += st.st_size
    return total


def blob_sizes(catalog: Catalog) -> dict[str, int]:
    """Every blob in the store and its size on disk."""
    out = {}
    for sha in catalog.store.all_shas():
        try:
            out[sha] = catalog.store.path(sha).stat().st_size
        except OSError:  # removed meanwhile
            continue
    return out


def disk_usage(catalog: Catalog) -> dict[str, Any]:
    """Bytes by model, version, dataset, logs; unique vs shared; totals measured on disk."""
    sizes = blob_sizes(catalog)
    owners = refs.owners_by_blob(catalog.conn)
    versions = {v.id: v for v in catalog.versions()}
    model_of = {vid: v.model for vid, v in versions.items()}

    per_version: dict[int, dict[str, int]] = defaultdict(lambda: {"bytes": 0, "unique_bytes": 0, "shared_bytes": 0})
    per_model: dict[str, dict[str, int]] = defaultdict(lambda: {"bytes": 0, "unique_bytes": 0, "shared_bytes": 0})
    per_dataset: dict[int, dict[str, int]] = defaultdict(lambda: {"bytes": 0, "unique_bytes": 0, "shared_bytes": 0})
    totals = {"unique_bytes": 0, "shared_bytes": 0, "pending_bytes": 0, "garbage_bytes": 0}
    for sha, size in sizes.items():
        who = owners.get(sha, set())
        committed = {o for o in who if o[0] != "pending"}
        if not who:
            totals["garbage_bytes"] += size
            continue
        if not committed:
            totals["pending_bytes"] += size
            continue
        totals["unique_bytes" if len(committed) == 1 else "shared_bytes"] += size
        models = {model_of.get(o[1]) for o in committed if o[0] == "version"}
        for kind, ident in committed:
            bucket = per_version[ident] if kind == "version" else per_dataset[ident] if kind == "dataset" else None
            if bucket is None:
                continue
            bucket["bytes"] += size
            bucket["unique_bytes" if len(committed) == 1 else "shared_bytes"] += size
        for m in models:
            if m is None:
                continue
            per_model[m]["bytes"] += size
            only_this_model = all(o[0] == "version" and model_of.get(o[1]) == m for o in committed)
            per_model[m]["unique_bytes" if only_this_model else "shared_bytes"] += size

    datasets = {d["id"]: d["name"] for d in catalog.query("SELECT id, name FROM datasets")}
    root = catalog.root
    db_bytes = sum((root / n).stat().st_size for n in ("catalog.db", "catalog.db-wal", "catalog.db-shm")
                   if (root / n).is_file())
    store_dir_bytes = _tree_bytes(catalog.store.root)
    blob_bytes = sum(sizes.values())
    totals.update({
        "blob_bytes": blob_bytes,
        "store_bytes": store_dir_bytes,  # blobs + half-written temp files under objects/
        "store_temp_bytes": store_dir_bytes - blob_bytes,
        "logs_bytes": _tree_bytes(catalog.logs_dir) if catalog.logs_dir.is_dir() else 0,
        "tmp_bytes": _tree_bytes(catalog.tmp_dir) if catalog.tmp_dir.is_dir() else 0,
        "db_bytes": db_bytes,
        "catalog_bytes": _tree_bytes(root),
        "blobs": len(sizes),
    })
    archived = {v.id: v for v in versions.values() if v.archived_to}
    return {
        "catalog": str(root),
        "totals": totals,
        "models": sorted(({"model": m, **b, "versions": sum(1 for v in versions.values() if v.model == m)}
                          for m, b in per_model.items()), key=lambda r: -r["bytes"]),
        "versions": sorted(({"ref": versions[vid].ref, "model": versions[vid].model, "version": versions[vid].version,
                             "phase": versions[vid].phase, "archived_to": None, **per_version.get(vid, {
                                 "bytes": 0, "unique_bytes": 0, "shared_bytes": 0})}
                            for vid in versions if vid not in archived), key=lambda r: -r["bytes"])
                    + [{"ref": v.ref, "model": v.model, "version": v.version, "phase": v.phase,
                        "archived_to": v.archived_to, "bytes": 0, "unique_bytes": 0, "shared_bytes": 0}
                       for v in archived.values()],
        "datasets": sorted(({"dataset": datasets.get(did, str(did)), **b} for did, b in per_dataset.items()),
                           key=lambda r: -r["bytes"]),
        "free_bytes": free_bytes(catalog),
    }


# -- free space -------------------------------------------------------------------------------
def free_bytes(catalog: Catalog) -> int:
    return shutil.disk_usage(catalog.root).free


def catalog_footprint(catalog: Catalog) -> int:
    """A cheap estimate of the catalog's size for the status bar: distinct blob sizes from the
    database plus the database files (no walking the store)."""
    row = catalog.conn.execute(
        "SELECT TOTAL(size) FROM (SELECT sha256, MAX(size) AS size FROM (SELECT sha256, size FROM artifacts"
        " UNION ALL SELECT sha256, size FROM dataset_files) GROUP BY sha256)").fetchone()
    db = sum((catalog.root / n).stat().st_size for n in ("catalog.db", "catalog.db-wal")
             if (catalog.root / n).is_file())
    return int(row[0] or 0) + db


def space_status(catalog: Catalog) -> dict[str, Any]:
    """Catalog size, free disk, and whether free space is below the warning threshold."""
    free = free_bytes(catalog)
    warn_at = int(catalog.get_setting(WARN_FREE_KEY, DEFAULT_WARN_FREE))
    size = catalog_footprint(catalog)
    text = f"catalog {human_size(size)} · {human_size(free)} free"
    if free < warn_at:
        text = f"⚠ low disk space: {human_size(free)} free (warning below {human_size(warn_at)}) · catalog {human_size(size)}"
    return {"catalog_bytes": size, "free_bytes": free, "warn_below": warn_at, "low": free < warn_at, "text": text}


_UNITS = {"": 1, "B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4,
          "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3}


def parse_size(text: str | int) -> int:
    """'5GB', '512 MB', '2G' or plain bytes → bytes (binary multiples, like `human_size`)."""
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(text))
    if not m or m.group(2).upper() not in _UNITS:
        raise DiskSpaceError(f"'{text}' is not a size (e.g. 5GB, 512MB or a number of bytes)")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def disk_settings(catalog: Catalog, *, warn_below: str | int | None = None, reserve: str | int | None = None,
                  logs_max_age_days: float | None = None) -> dict[str, Any]:
    """Read (and, for the values given, change) the housekeeping thresholds."""
    from relman.app.housekeeping import LOGS_MAX_AGE_KEY, check_logs_age, logs_max_age_days as stored_logs_age

    if logs_max_age_days is not None:
        logs_max_age_days = check_logs_age(logs_max_age_days, "--logs-max-age")
    updates = {WARN_FREE_KEY: None if warn_below is None else parse_size(warn_below),
               RESERVE_KEY: None if reserve is None else parse_size(reserve),
               LOGS_MAX_AGE_KEY: logs_max_age_days}
    for key, value in updates.items():
        if value is not None:
            catalog.set_setting(key, value)
    return {"warn_free_bytes": int(catalog.get_setting(WARN_FREE_KEY, DEFAULT_WARN_FREE)),
            "reserve_bytes": int(catalog.get_setting(RESERVE_KEY, DEFAULT_RESERVE)),
            "logs_max_age_days": stored_logs_age(catalog)}


def check_room(catalog: Catalog, needed: int, what: str) -> None:
    """Refuse up front when `needed` bytes (plus the configured reserve) do not fit."""
    reserve = int(catalog.get_setting(RESERVE_KEY, DEFAULT_RESERVE))
    free = free_bytes(catalog)
    if needed + reserve > free:
        raise DiskSpaceError(f"{what} needs about {human_size(needed + reserve)} free on the catalog's disk "
                             f"({human_size(needed)} + {human_size(reserve)} reserve) but only {human_size(free)} "
                             f"is free at {catalog.root}; free space (relman du, relman gc) and retry")


def estimate_job_output(catalog: Catalog, kind: str, params: dict[str, Any]) -> int:
    """A generous estimate of the disk a job writes: a compressed child is at most its parents'
    size, written once in the job's scratch folder and once into the store; a search keeps one
    child per candidate (each at most the parent's size) plus one scratch copy. Evaluations write only metrics (0)."""
    if kind == "compress":
        ids = params.get("parent_version_ids") or []
        return 2 * max((catalog.get_version(i).size_bytes for i in ids), default=0)
    if kind == "optimize":
        pid = params.get("parent_version_id")
        parent = catalog.get_version(pid).size_bytes if pid else 0
        return parent * (1 + len(params.get("candidates") or []))
    return 0
