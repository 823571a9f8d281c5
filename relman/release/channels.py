"""The channels manifest: what serving code should load.

One JSON file (`channels.json`) in a folder the user chooses, listing for each model the
production version, the canary (staging) version with its traffic share, and each version's
files with their sha256 and where the blob lies in the catalog's store. It is written to a
temporary file in the same folder, fsynced and renamed over the old one, so a reader sees the
old manifest or the new one, never half of one. When `channels_dir` is set in the catalog
settings, every promote / rollout / rollback / reject re-writes it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from relman.errors import ReleaseError
from relman.fsutil import atomic_write

SETTING = "channels_dir"
FILENAME = "channels.json"


def _version_entry(catalog: Any, v: Any) -> dict[str, Any]:
    return {
        "version": v.version, "format": v.format, "task": v.task, "manifest_sha256": v.manifest_sha256,
        "artifacts": [{"path": a["path"], "sha256": a["sha256"], "size": a["size"],
                       "blob": str(catalog.store.path(a["sha256"]))} for a in catalog.artifacts(v.id)],
    }


def build_channels(catalog: Any) -> dict[str, Any]:
    from relman.catalog.catalog import utcnow

    models: dict[str, Any] = {}
    for m in catalog.models():
        versions = catalog.versions(m["name"])
        prod = [v for v in versions if v.phase == "production"]
        canary = [v for v in versions if v.phase == "staging"]
        entry: dict[str, Any] = {"production": None, "canary": None}
        if prod:
            entry["production"] = _version_entry(catalog, max(prod, key=lambda v: v.created_at))
        if canary:
            c = max(canary, key=lambda v: v.created_at)
            entry["canary"] = dict(_version_entry(catalog, c), share=c.canary_share or 0.0)
        models[m["name"]] = entry
    head = catalog.get_setting("audit_head", {})
    return {"format": "relman-channels", "format_version": 1, "generated_at": utcnow(),
            "catalog": str(catalog.root), "audit_head": head, "models": models}


def write_channels(catalog: Any, folder: Path | str) -> Path:
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ReleaseError(f"channels folder {folder} does not exist (create it, or choose another)")
    target = folder / FILENAME
    # Build and write under the catalog's write lock: writers are serialised, so the file
    # written last always describes the newest committed state (never an older snapshot
    # that lost a race with another process's change).
    with catalog.transaction():
        data = json.dumps(build_channels(catalog), indent=2, sort_keys=True).encode()
        try:
            atomic_write(target, data)
        except OSError as e:
            raise ReleaseError(f"cannot write {target} ({e.strerror or e})") from None
    return target


def refresh_if_configured(catalog: Any) -> Path | None:
    folder = catalog.get_setting(SETTING)
    return write_channels(catalog, folder) if folder else None


def set_channels_dir(catalog: Any, folder: Path | str | None, *, actor: str) -> Path | None:
    """Configure (or, with None, stop) automatic channels writing; writes it once now."""
    from relman.catalog import integrity
    from relman.catalog.catalog import utcnow

    path = None
    if folder is not None:
        path = Path(folder).expanduser().resolve()
        if not path.is_dir():
            raise ReleaseError(f"channels folder {path} does not exist (create it first)")
    with catalog.transaction():
        if path is None:
            catalog.delete_setting(SETTING)
        else:
            catalog.set_setting(SETTING, str(path))
        integrity.commit_event(catalog.db, at=utcnow(), actor=actor, kind="channels-dir", model=None, version=None,
                               payload={"dir": None if path is None else str(path)})
    if path is not None:
        write_channels(catalog, path)
    return path
