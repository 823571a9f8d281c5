"""Importing and describing model versions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from relman.catalog import Catalog, VersionInfo
from relman.errors import ModelImportError
from relman.modelio.inspect import inspect_model
from relman.tasks.specs import TASKS


def architecture_clash(catalog: Catalog, model: str, architecture: str | None, task: str | None) -> str | None:
    """Why `architecture`/`task` does not belong under the existing `model`, or None.

    An import bumps the model's version, so a BERT imported under a ViT's name would become
    the ViT's "next version" without a word. Only live versions count, and an unknown
    architecture (bare weights) is not compared."""
    existing = [v for v in catalog.versions(model)] if catalog.conn.execute(
        "SELECT 1 FROM models WHERE name = ?", [model]).fetchone() else []
    if not existing:
        return None
    archs = {v.architecture for v in existing if v.architecture}
    tasks = {v.task for v in existing if v.task}
    arch_differs = bool(architecture and archs and architecture not in archs)
    task_differs = bool(task and tasks and task not in tasks)
    if not (arch_differs or task_differs):
        return None
    held = f"{'/'.join(sorted(archs)) or '?'} ({'/'.join(sorted(tasks)) or '?'})"
    new = f"{architecture or '?'} ({task or '?'})"
    return f"model '{model}' holds {held} versions, but this is {new}"


def import_model(catalog: Catalog, path: Path | str, model: str, *, version: str | None = None,
                 task: str | None = None, actor: str | None = None, new_architecture: bool = False,
                 job_id: int | None = None, progress: Any = None) -> VersionInfo:
    """Check the model at `path` and store it as a new version of `model`.

    All checks run before anything is written; the store and the rows then commit together,
    so a refused or failed import leaves the catalog exactly as it was. A different
    architecture or task under an existing model name is refused unless `new_architecture`.
    `job_id`: the import job whose result this is (recorded with the version in the same
    transaction); `progress(bytes stored, bytes in all)` follows the copy into the store (it
    may raise to stop it)."""
    from relman.catalog import semver
    from relman.names import check_name

    if task is not None and task not in TASKS:
        raise ModelImportError(f"unknown task '{task}' (known: {', '.join(TASKS)})")
    check_name(model, "model name")
    if version is not None:
        semver.parse(version)
    desc = inspect_model(path)
    parents: list[tuple[int, float | None]] = []
    adapter_meta: dict[str, Any] = {}
    if desc.pin is not None:  # a peft-adapter: its base must be here, as pinned
        from relman.modelio import peft_adapter

        base, adapter_meta = _adapter_base(catalog, desc.pin, path, task, desc.files[peft_adapter.WEIGHTS])
        desc.architecture = base.architecture
        parents = [(base.id, None)]
    clash = architecture_clash(catalog, model, desc.architecture, task or desc.task)
    if clash and not new_architecture:
        raise ModelImportError(f"{clash}: import it under a new --model name, or pass --new-architecture "
                               f"to add it to '{model}' anyway")
    meta: dict[str, Any] = {"source": str(Path(path).expanduser().resolve())}
    if desc.left_out:  # never stored: not needed by the model, and not checked
        meta["left_out"] = desc.left_out
    if clash:
        meta["new_architecture"] = clash
    if desc.config.get("model_type"):
        meta["model_type"] = desc.config["model_type"]
    if desc.config.get("id2label"):
        meta["labels"] = [desc.config["id2label"][k] for k in sorted(desc.config["id2label"], key=int)]
    meta.update(adapter_meta)
    return catalog.add_version(
        model, desc.files, format=desc.format, version=version, task=task or desc.task,
        architecture=desc.architecture, params=desc.params, dtype=desc.dtype, meta=meta, actor=actor,
        parents=parents, relation="adapter" if parents else "", event_kind="import", job_id=job_id,
        progress=progress,
    )


def _pinned_base(catalog: Catalog, pin: dict[str, Any], where: str) -> VersionInfo:
    """The live version whose manifest is the pinned one. Only the manifest counts: the pin's
    version id and ref are the exporting catalog's, and may name something else here."""
    from relman.errors import AdapterBaseError

    want = pin["base_manifest_sha256"]
    deleted = None
    for row in catalog.query("SELECT id FROM versions WHERE manifest_sha256 = ? ORDER BY id", [want]):
        v = catalog.get_version(row["id"])
        if not v.deleted:
            return v
        deleted = v
    if deleted is not None:
        raise AdapterBaseError(f"{where}: its pinned base {deleted.ref} (manifest {want[:12]}) was deleted from this "
                               "catalog; re-import that base version first")
    raise AdapterBaseError(f"{where}: its pinned base {pin['base_ref']} (manifest {want[:12]}) is not in this "
                           "catalog; import that base version first")


def _adapter_base(catalog: Catalog, pin: dict[str, Any], path: Path | str, task: str | None,
                  weights: Path) -> tuple[VersionInfo, dict[str, Any]]:
    """The base version an imported adapter's pin names, checked against this catalog (present,
    same manifest, the pinned format and task), and the meta the adapter version records."""
    from relman.errors import AdapterBaseError
    from relman.modelio import peft_adapter

    where = f"adapter {Path(path).name}"
    if pin["task"] not in TASKS:
        raise ModelImportError(f"{where}: its pin names an unknown task '{pin['task']}'")
    if task is not None and task != pin["task"]:
        raise ModelImportError(f"{where} makes a {pin['task']} model (its pin says so), not {task}")
    base = _pinned_base(catalog, pin, where)
    if base.archived_to:
        raise AdapterBaseError(f"{where}: its base {base.ref} is archived in {base.archived_to}; restore it first "
                               "(relman restore), so the adapter can be checked against it")
    if base.format == peft_adapter.FORMAT:
        raise AdapterBaseError(f"{where}: its base {base.ref} is itself an adapter; adapters of adapters are not "
                               "supported")
    for key, have in (("base_format", base.format), ("base_task", base.task)):
        if pin.get(key) is not None and have is not None and pin[key] != have:
            raise AdapterBaseError(f"{where}: the pin says its base {base.ref} is {key.split('_')[1]} "
                                   f"'{pin[key]}', the catalog says '{have}'")
    base_weights = [catalog.store.path(a["sha256"]) for a in catalog.artifacts(base.id)
                    if a["path"].endswith(".safetensors")]
    peft_adapter.check_fits_base(weights, base_weights, where)
    meta: dict[str, Any] = {"adapter": {**{k: pin.get(k) for k in (
        "base_version_id", "base_ref", "base_manifest_sha256", "base_format", "r", "lora_alpha", "target_modules",
        "modules_to_save")}, "base_version_id": base.id, "base_ref": base.ref}}
    id2label = (pin.get("config_overrides") or {}).get("id2label")
    labels = [id2label[k] for k in sorted(id2label, key=int)] if isinstance(id2label, dict) and id2label else \
        base.meta.get("labels")
    if labels:
        meta["labels"] = labels
    if base.meta.get("model_type"):
        meta["model_type"] = base.meta["model_type"]
    return base, meta


def describe_version(catalog: Catalog, v: VersionInfo) -> dict[str, Any]:
    """Everything `relman show` prints about a version, as plain data (deleted parents and
    children stay in the lineage, marked as such)."""
    gone = {r[0] for r in catalog.conn.execute("SELECT version_id FROM tombstones")}
    return {
        "model": v.model, "version": v.version, "id": v.id, "phase": v.phase, "format": v.format,
        "task": v.task, "architecture": v.architecture, "params": v.params, "dtype": v.dtype,
        "size_bytes": v.size_bytes, "manifest_sha256": v.manifest_sha256, "recipe": v.recipe, "meta": v.meta,
        "canary_share": v.canary_share, "created_at": v.created_at, "created_by": v.created_by,
        "tags": catalog.tags(v.id), "archived_to": v.archived_to, "deleted_at": v.deleted_at,
        "files": catalog.artifacts(v.id),
        "parents": [f"{p['model']}@{p['version']}" + (" (deleted)" if p["parent_id"] in gone else "")
                    for p in catalog.parents(v.id)],
        "children": [f"{c['model']}@{c['version']}" + (" (deleted)" if c["child_id"] in gone else "")
                     for c in catalog.children(v.id)],
        "metrics": [{k: m[k] for k in ("suite", "name", "value", "context", "dataset", "created_at")}
                    for m in catalog.metrics(v.id)],
    }


def propose_model_name(path: Path | str, existing: list[str] | tuple[str, ...] | set[str]) -> str:
    """A new model name for the import dialog, from the folder or file name (never an
    existing model's: the user picks one of those explicitly)."""
    import re

    p = Path(str(path).rstrip("/\\"))
    stem = p.name if p.suffix.lower() not in (".safetensors", ".onnx", ".pt", ".pth", ".bin") else p.stem
    slug = re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-._") or "model"
    taken = set(existing)
    name, n = slug, 2
    while name in taken:
        name, n = f"{slug}-{n}", n + 1
    return name
