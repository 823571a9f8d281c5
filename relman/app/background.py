"""Use cases that read or write large files, as jobs: model import, dataset registration,
promotion with artifact checks, bundle export and import, and the housekeeping that copies or
releases blobs (delete, archive, restore, garbage collection).

Why jobs: each of these reads every byte of a model or dataset (hashing, parsing, copying),
which takes seconds for real model sizes. The GUI must not wait on that, so it queues the
job (`queue_*`, quick: only the checks that need no large read, so a wrong name or a missing
key is refused at once) and polls the catalog; a worker process runs the `*_job` function
with the same app-layer use case the CLI calls directly, reporting progress through `ctx`.
The job kinds are registered by name in `relman.jobs.kinds`.

A retried import adopts the version an earlier attempt committed (the version row records
the job), so a retry never stores a model twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from relman.errors import DatasetError, ModelImportError, RelmanError

if TYPE_CHECKING:
    from relman.catalog import Catalog
    from relman.jobs.context import JobContext

JOB_DEVICE = "cpu"  # file work: never hold a GPU slot for it


def _enqueue(catalog: "Catalog", kind: str, params: Mapping[str, Any], actor: str | None) -> int:
    from relman.jobs.queue import enqueue

    return enqueue(catalog, kind, dict(params), device=JOB_DEVICE, actor=actor)


def _adopted(ctx: "JobContext") -> dict[str, Any] | None:
    """The version an earlier attempt of this job committed, if any."""
    if ctx.job_id is None:
        return None
    row = ctx.catalog.conn.execute("SELECT result_version_id FROM jobs WHERE id = ?", [ctx.job_id]).fetchone()
    if not row or not row[0]:
        return None
    v = ctx.catalog.get_version(int(row[0]))
    return {"version": v.ref, "version_id": v.id, "adopted": True}


# -- model import --------------------------------------------------------------------------------
def queue_import_model(catalog: "Catalog", path: Path | str, model: str, *, version: str | None = None,
                       task: str | None = None, new_architecture: bool = False, actor: str | None = None) -> int:
    from relman.app.compress import _check_child

    src = Path(path).expanduser()
    if not src.exists():
        raise ModelImportError(f"{src}: no such file or folder")
    _check_child(catalog, model, version)
    return _enqueue(catalog, "import_model", {"path": str(src.resolve()), "model": model, "version": version,
                                              "task": task, "new_architecture": bool(new_architecture)}, actor)


def import_model_job(params: dict[str, Any], ctx: "JobContext") -> dict[str, Any]:
    from relman.app.models import import_model

    adopted = _adopted(ctx)
    if adopted:
        return adopted
    name = Path(params["path"]).name

    def progress(done: int, total: int) -> None:  # also where a cancel stops the copy
        ctx.progress(0.02 + 0.95 * done / total if total else 0.5,
                     f"storing {name}: {done / 2**20:.0f} of {total / 2**20:.0f} MiB")

    ctx.progress(0.01, f"checking {name}")
    v = import_model(ctx.catalog, params["path"], params["model"], version=params.get("version"),
                     task=params.get("task"), actor=ctx.actor, job_id=ctx.job_id, progress=progress,
                     new_architecture=bool(params.get("new_architecture")))
    ctx.progress(1.0, f"imported {v.ref}", check_cancel=False)
    return {"version": v.ref, "version_id": v.id}


# -- dataset registration ------------------------------------------------------------------------
def queue_register_dataset(catalog: "Catalog", path: Path | str, name: str, *, actor: str | None = None,
                           **options: Any) -> int:
    from relman.app.datasets import _check_name

    _check_name(name)
    if catalog.conn.execute("SELECT 1 FROM datasets WHERE name = ?", [name]).fetchone():
        raise DatasetError(f"dataset '{name}' already exists; choose another name")
    src = Path(path).expanduser()
    if not src.exists():
        raise DatasetError(f"{src}: no such file or folder")
    return _enqueue(catalog, "register_dataset", {"path": str(src.resolve()), "name": name, "options": options},
                    actor)


def register_dataset_job(params: dict[str, Any], ctx: "JobContext") -> dict[str, Any]:
    from relman.app.datasets import register_dataset

    name = Path(params["path"]).name

    def progress(done: int, total: int) -> None:
        ctx.progress(0.5 + 0.45 * done / total if total else 0.75,
                     f"storing {name}: {done / 2**20:.0f} of {total / 2**20:.0f} MiB")

    ctx.progress(0.05, f"reading and checking {name}")
    d = register_dataset(ctx.catalog, params["path"], params["name"], actor=ctx.actor, progress=progress,
                         **params.get("options", {}))
    ctx.progress(1.0, f"registered {d['name']}", check_cancel=False)
    return {"dataset": d["name"], "dataset_id": d["id"], "rows": d.get("n_rows")}


# -- promotion with artifact checks --------------------------------------------------------------
def queue_promotion(catalog: "Catalog", ref: Any, to_phase: str, *, why: str = "", override: bool = False,
                    actor: str | None = None) -> int:
    """Queue a promotion that re-hashes the version's artifacts (see `verifies_artifacts`).
    The policy's transition rule and the reason an override needs are checked now; the gates
    and the hashes are evaluated by the job, inside the promotion."""
    from relman.app.release import version_of
    from relman.errors import ReleaseError
    from relman.release.policy import allowed_targets, get_policy

    v = version_of(catalog, ref)
    if override and not (why or "").strip():
        raise ReleaseError("an override needs a reason (why the gates are overridden)")
    running = catalog.conn.execute(
        "SELECT id FROM jobs WHERE kind = 'promote' AND status IN ('queued', 'running')"
        " AND json_extract(params, '$.version_id') = ?", [v.id]).fetchone()
    if running:
        raise ReleaseError(f"a promotion of {v.ref} is already under way (job {running[0]}); wait for it to end")
    policy, revision = get_policy(catalog, v.model)
    if to_phase not in allowed_targets(policy, v.phase):
        raise ReleaseError(f"the policy of {v.model} (revision {revision}) does not allow {v.phase} → {to_phase} "
                           f"for {v.ref}")
    return _enqueue(catalog, "promote", {"version_id": v.id, "to_phase": to_phase, "why": why,
                                         "override": bool(override)}, actor)


def promote_job(params: dict[str, Any], ctx: "JobContext") -> dict[str, Any]:
    from relman.app.release import promote

    def progress(i: int, n: int, done: int, total: int) -> None:
        ctx.progress(0.95 * done / total if total else 0.0, f"checking artifacts: file {min(i + 1, n)} of {n}, "
                     f"{done / 2**20:.0f} of {total / 2**20:.0f} MiB")

    ctx.progress(0.0, "checking artifacts")
    r = promote(ctx.catalog, int(params["version_id"]), params["to_phase"], why=params.get("why", ""),
                who=ctx.actor, override=bool(params.get("override")), progress=progress)
    ctx.progress(1.0, f"{r['ref']} → {r['to']}", check_cancel=False)
    return {k: r[k] for k in ("ref", "from", "to", "override", "transition", "replaced", "hook_jobs", "hooks_refused",
                              "hooks_error") if k in r}


# -- bundles --------------------------------------------------------------------------------------
def queue_export_bundle(catalog: "Catalog", ref: Any, out: Path | str, *, key: str | None = None,
                        actor: str | None = None) -> int:
    """Queue a signed bundle export; the signing key and the output folder are checked now."""
    from relman.app.release import version_of
    from relman.errors import BundleError
    from relman.release import keys

    v = version_of(catalog, ref)
    out = Path(out).expanduser()
    if not out.parent.is_dir():
        raise BundleError(f"folder {out.parent} does not exist")
    key = key or keys.default_key_name()
    keys.load_private(key)
    return _enqueue(catalog, "export_bundle", {"version_id": v.id, "out": str(out.resolve()), "key": key}, actor)


def export_bundle_job(params: dict[str, Any], ctx: "JobContext") -> dict[str, Any]:
    from relman.app.bundles import export_bundle

    name = Path(params["out"]).name

    def progress(done: int, total: int) -> None:
        half = total // 2
        what = "verifying artifacts" if done < half else f"writing {name}"
        ctx.progress(done / total if total else 0.5, f"{what}: {min(done, total) / 2**20:.0f} of "
                     f"{total / 2**20:.0f} MiB")

    r = export_bundle(ctx.catalog, int(params["version_id"]), params["out"], key=params.get("key"),
                      progress=progress)
    ctx.progress(1.0, f"exported {r['ref']}", check_cancel=False)
    return r


def queue_import_bundle(catalog: "Catalog", path: Path | str, *, actor: str | None = None) -> int:
    src = Path(path).expanduser()
    if not src.is_file():
        raise RelmanError(f"{src}: no such bundle file")
    return _enqueue(catalog, "import_bundle", {"path": str(src.resolve())}, actor)


def import_bundle_job(params: dict[str, Any], ctx: "JobContext") -> dict[str, Any]:
    from relman.app.bundles import import_bundle

    ctx.progress(0.05, f"verifying {Path(params['path']).name}")
    r = import_bundle(ctx.catalog, params["path"], who=ctx.actor)
    ctx.progress(1.0, "imported", check_cancel=False)
    return dict(r)


# -- housekeeping: delete, archive, restore, garbage collection -----------------------------------
# Their parameters name the version by "ref", not "version_id": a queued job naming a version
# by id holds it (deletion and archiving refuse while one does), and these jobs must not hold
# the version they work on.
def queue_delete_version(catalog: "Catalog", ref: str, *, why: str, actor: str | None = None) -> int:
    """Queue a deletion; a missing reason or a refusal (production, canary, rollback target,
    adapter base, a job using it) is reported now."""
    from relman.app.housekeeping import delete_plan
    from relman.errors import HousekeepingError

    if not (why or "").strip():
        raise HousekeepingError("say why the version is deleted; it goes into the audit log")
    plan = delete_plan(catalog, ref)
    if plan["refused"]:
        raise HousekeepingError(plan["refused"])
    return _enqueue(catalog, "delete_version", {"ref": plan["ref"], "why": why.strip()}, actor)


def delete_version_job(params: dict[str, Any], ctx: "JobContext") -> dict[str, Any]:
    from relman.app.housekeeping import delete_version

    ctx.progress(0.1, f"deleting {params['ref']}")
    r = delete_version(ctx.catalog, params["ref"], why=params["why"], who=ctx.actor)
    ctx.progress(1.0, f"deleted {r['ref']}", check_cancel=False)
    return r


def queue_archive_version(catalog: "Catalog", ref: str, folder: Path | str, *, actor: str | None = None) -> int:
    from relman.errors import HousekeepingError

    v = catalog.resolve(ref)
    if v.phase in ("staging", "production") or v.canary_share:
        raise HousekeepingError(f"refused: {v.ref} is in {v.phase}; only versions out of staging and production "
                                "can be archived")
    if v.archived_to:
        raise HousekeepingError(f"{v.ref} is already archived in {v.archived_to}")
    dest = Path(folder).expanduser().resolve()
    if dest.is_relative_to(catalog.root.resolve()):
        raise HousekeepingError(f"{dest} is inside the catalog folder; archive to another folder or disk")
    return _enqueue(catalog, "archive_version", {"ref": v.ref, "folder": str(dest)}, actor)


def archive_version_job(params: dict[str, Any], ctx: "JobContext") -> dict[str, Any]:
    from relman.app.housekeeping import archive_version

    ctx.progress(0.05, f"copying {params['ref']} to {params['folder']}")
    r = archive_version(ctx.catalog, params["ref"], params["folder"], who=ctx.actor)
    ctx.progress(1.0, f"archived {r['ref']}", check_cancel=False)
    return r


def queue_restore_version(catalog: "Catalog", ref: str, *, actor: str | None = None) -> int:
    from relman.errors import HousekeepingError

    v = catalog.resolve(ref)
    if not v.archived_to:
        raise HousekeepingError(f"{v.ref} is not archived; nothing to restore")
    return _enqueue(catalog, "restore_version", {"ref": v.ref}, actor)


def restore_version_job(params: dict[str, Any], ctx: "JobContext") -> dict[str, Any]:
    from relman.app.housekeeping import restore_version

    ctx.progress(0.05, f"restoring {params['ref']} (each file re-hashed)")
    r = restore_version(ctx.catalog, params["ref"], who=ctx.actor)
    ctx.progress(1.0, f"restored {params['ref']}", check_cancel=False)
    return dict(r)


def queue_collect_garbage(catalog: "Catalog", *, dry_run: bool = False, actor: str | None = None) -> int:
    """gc as a job; `dry_run` only counts what it would remove (the GUI's confirmation)."""
    return _enqueue(catalog, "collect_garbage", {"dry_run": bool(dry_run)}, actor)


def collect_garbage_job(params: dict[str, Any], ctx: "JobContext") -> dict[str, Any]:
    from relman.app.housekeeping import collect_garbage

    dry = bool(params.get("dry_run", False))
    ctx.progress(0.05, "counting unreferenced blobs and old job files" if dry
                 else "sweeping unreferenced blobs and old job files")
    r = collect_garbage(ctx.catalog, dry_run=dry, who=ctx.actor)
    ctx.progress(1.0, "done", check_cancel=False)
    return r
