"""Importing and describing model versions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from relman.catalog import Catalog, VersionInfo
from relman.errors import ModelImportError
from relman.modelio.inspect import inspect_model
from relman.tasks.specs import TASKS


def import_model(catalog: Catalog, path: Path | str, model: str, *, version: str | None = None,
                 task: str | None = None, actor: str | None = None) -> VersionInfo:
    """Check the model at `path` and store it as a new version of `model`.

    All checks run before anything is written; the store and the rows then commit together,
    so a refused or failed import leaves the catalog exactly as it was."""
    if task is not None and task not in TASKS:
        raise ModelImportError(f"unknown task '{task}' (known: {', '.join(TASKS)})")
    desc = inspect_model(path)
    meta: dict[str, Any] = {"source": str(Path(path).expanduser().resolve())}
    if desc.config.get("model_type"):
        meta["model_type"] = desc.config["model_type"]
    if desc.config.get("id2label"):
        meta["labels"] = [desc.config["id2label"][k] for k in sorted(desc.config["id2label"], key=int)]
    return catalog.add_version(
        model, desc.files, format=desc.format, version=version, task=task or desc.task,
        architecture=desc.architecture, params=desc.params, dtype=desc.dtype, meta=meta, actor=actor,
        event_kind="import",
    )


def describe_version(catalog: Catalog, v: VersionInfo) -> dict[str, Any]:
    """Everything `relman show` prints about a version, as plain data."""
    return {
        "model": v.model, "version": v.version, "id": v.id, "phase": v.phase, "format": v.format,
        "task": v.task, "architecture": v.architecture, "params": v.params, "dtype": v.dtype,
        "size_bytes": v.size_bytes, "manifest_sha256": v.manifest_sha256, "recipe": v.recipe, "meta": v.meta,
        "canary_share": v.canary_share, "created_at": v.created_at, "created_by": v.created_by,
        "files": catalog.artifacts(v.id),
        "parents": [f"{p['model']}@{p['version']}" for p in catalog.parents(v.id)],
        "children": [f"{c['model']}@{c['version']}" for c in catalog.children(v.id)],
        "metrics": [{k: m[k] for k in ("suite", "name", "value", "context", "dataset", "created_at")}
                    for m in catalog.metrics(v.id)],
    }
