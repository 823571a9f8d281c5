"""Deleting, archiving and restoring versions, and collecting garbage (GUI and CLI call these).

A delete keeps the version's row as a tombstone (lineage, transitions, metrics and the audit
chain still point at it), moves its file list into `tombstones`, drops its artifact rows and
tags, and appends a `delete` event with who/when/why and the manifest sha256 — all in one
transaction; the blobs no other live thing shares are released right after (and any a killed
delete left behind go with the next `relman gc`). Archive copies a version's blobs to another
folder (verified), records it, then releases the store's copies; restore copies them back
through the normal staged-blob path, so each one is re-hashed.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from relman.catalog import Catalog, VersionInfo
from relman.catalog import integrity
from relman.catalog import gc, refs
from relman.catalog.catalog import current_user, utcnow
from relman.catalog.store import sha256_file
from relman.errors import HousekeepingError, NotFound
from relman.fsutil import fsync_dir

LOGS_MAX_AGE_KEY = "gc.logs_max_age_days"
DEFAULT_LOGS_MAX_AGE_DAYS = 30.0
ADAPTER_FORMAT = "peft-adapter"
ENSEMBLE_FORMAT = "ensemble"


# -- what deleting would do -------------------------------------------------------------------
def _jobs_using(catalog: Catalog, version_id: int) -> list[dict[str, Any]]:
    """Queued or running jobs whose parameters name the version (…version_id / …version_ids)."""
    out = []
    for job in catalog.query("SELECT id, kind, status, params FROM jobs WHERE status IN ('queued', 'running')"):
        params = json.loads(job["params"] or "{}")
        for key, value in params.items():
            ids = value if isinstance(value, list) else [value]
            if key.endswith(("version_id", "version_ids")) and version_id in ids:
                out.append(job)
                break
    return out


def kept_adapters(catalog: Catalog, version_id: int) -> list[VersionInfo]:
    """Live `peft-adapter` versions whose lineage pins `version_id` as their base."""
    out = []
    for c in catalog.children(version_id):
        child = catalog.get_version(c["child_id"])
        if child.format == ADAPTER_FORMAT and not child.deleted:
            out.append(child)
    return out


def kept_ensembles(catalog: Catalog, version_id: int) -> list[VersionInfo]:
    """Live `ensemble` versions that pin `version_id` as a member (their lineage parents)."""
    out = []
    for c in catalog.children(version_id):
        child = catalog.get_version(c["child_id"])
        if child.format == ENSEMBLE_FORMAT and not child.deleted and child.id not in {o.id for o in out}:
            out.append(child)
    return out


def deletion_refusal(catalog: Catalog, v: VersionInfo) -> str | None:
    """Why `v` may not be deleted, or None. Each reason has its own message."""
    if v.deleted:
        return f"{v.ref} is already deleted"
    if v.canary_share:
        return (f"refused: {v.ref} carries a canary share of {v.canary_share:g} % of the traffic; "
                "end the rollout (move it out of staging) before deleting it")
    if v.phase == "staging":
        return f"refused: {v.ref} is in staging; reject it or move it back to candidate before deleting it"
    if v.phase == "production":
        return f"refused: {v.ref} is in production; roll back or promote another version before deleting it"
    from relman.release.workflow import previous_production

    current = [o for o in catalog.versions(v.model) if o.phase == "production"]
    if current:
        cur = max(current, key=lambda o: o.created_at)
        prev = previous_production(catalog, v.model, cur.id)
        if prev is not None and prev.id == v.id:
            return (f"refused: {v.ref} is the rollback target of {v.model} (production before {cur.ref}); "
                    "'relman rollback' would have nothing to restore")
    adapters = kept_adapters(catalog, v.id)
    if adapters:
        return (f"refused: {v.ref} is the base of the kept adapter(s) {', '.join(a.ref for a in adapters)}; "
                "delete those first")
    ensembles = kept_ensembles(catalog, v.id)
    if ensembles:
        return (f"refused: {v.ref} is a member of the kept ensemble(s) {', '.join(e.ref for e in ensembles)}; "
                "delete those first")
    jobs = _jobs_using(catalog, v.id)
    if jobs:
        j = jobs[0]
        return f"refused: job {j['id']} ({j['kind']}, {j['status']}) uses {v.ref}; cancel it or let it finish first"
    return None


def bytes_released_by(catalog: Catalog, v: VersionInfo) -> dict[str, int]:
    """What deleting (or archiving) `v` would free in the store: the bytes of the blobs that
    nothing else live needs, and the bytes it shares with others."""
    mine = {a["sha256"]: a["size"] for a in catalog.artifacts(v.id)}
    others = refs.live_shas(catalog.conn, exclude=[("version", v.id)])
    unique = sum(gc.blob_size(catalog, s) for s in mine if s not in others)
    shared = sum(size for s, size in mine.items() if s in others)
    return {"unique_bytes": unique, "shared_bytes": shared, "files": len(mine)}


def delete_plan(catalog: Catalog, ref: str) -> dict[str, Any]:
    """What `delete` would do, without doing it (the GUI's confirmation reads this)."""
    v = catalog.resolve(ref)
    return {"ref": v.ref, "refused": deletion_refusal(catalog, v), "manifest_sha256": v.manifest_sha256,
            **bytes_released_by(catalog, v)}


# -- delete -----------------------------------------------------------------------------------
def delete_version(catalog: Catalog, ref: str, *, why: str, who: str | None = None, dry_run: bool = False,
                   release: bool = True) -> dict[str, Any]:
    """Delete a version: tombstone + audit event in one transaction, then release its blobs.

    `release=False` leaves the blobs for `relman gc` (used by tests that need garbage)."""
    why = (why or "").strip()
    if not why:
        raise HousekeepingError("say why the version is deleted (--why \"...\"); it goes into the audit log")
    who = who or current_user()
    target = catalog.resolve(ref)
    with catalog.transaction():
        v = catalog.get_version(target.id)  # re-read under the write lock
        refusal = deletion_refusal(catalog, v)
        if refusal:
            raise HousekeepingError(refusal)
        sizes = bytes_released_by(catalog, v)
        files = catalog.artifacts(v.id)
        evaluation_files = [r["sha256"] for r in catalog.evaluation_artifacts(v.id)]
        result = {"ref": v.ref, "manifest_sha256": v.manifest_sha256, "size_bytes": v.size_bytes,
                  "why": why, "who": who, "dry_run": dry_run, **sizes}
        if dry_run:
            return result
        at = utcnow()
        catalog.conn.execute(
            "INSERT INTO tombstones (version_id, deleted_at, deleted_by, why, manifest_sha256, size_bytes, files)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [v.id, at, who, why, v.manifest_sha256, v.size_bytes, json.dumps(files)])
        catalog.conn.execute("DELETE FROM artifacts WHERE version_id = ?", [v.id])
        catalog.conn.execute("DELETE FROM evaluation_artifacts WHERE version_id = ?", [v.id])
        catalog.conn.execute("DELETE FROM tags WHERE version_id = ?", [v.id])
        catalog.conn.execute("DELETE FROM archives WHERE version_id = ?", [v.id])
        integrity.commit_event(catalog.db, at=at, actor=who, kind="delete", model=v.model, version=v.version,
                               payload={"why": why, "manifest_sha256": v.manifest_sha256, "size_bytes": v.size_bytes,
                                        "files": len(files), "archived_to": v.archived_to})
    result["deleted_at"] = at
    if release:
        freed = gc.sweep(catalog, candidates=[f["sha256"] for f in files] + evaluation_files)
        result["freed_bytes"] = freed["bytes"]
        result["freed_blobs"] = freed["blobs"]
    else:
        result["freed_bytes"] = 0
        result["freed_blobs"] = 0
    return result


# -- gc ---------------------------------------------------------------------------------------
MAX_LOGS_AGE_DAYS = 36_500.0  # a century: beyond it a date subtraction overflows, and it means "never"


def check_logs_age(value: Any, what: str = "--logs-older-than") -> float:
    """A log age in days: a finite number from 0 to MAX_LOGS_AGE_DAYS, else a one-line error.
    (NaN compares false with everything, so `age < 0` let it through to `timedelta`.)"""
    import math

    try:
        age = float(value)
    except (TypeError, ValueError, OverflowError):
        raise HousekeepingError(f"{what} must be a number of days, not {value!r}") from None
    if not math.isfinite(age) or not 0 <= age <= MAX_LOGS_AGE_DAYS:
        raise HousekeepingError(f"{what} must be 0 to {MAX_LOGS_AGE_DAYS:,.0f} days, got {age:g}")
    return age


def logs_max_age_days(catalog: Catalog) -> float:
    """The stored log age; one stored before it was checked (NaN, inf) reads as the default,
    so a bad setting cannot stop every `gc`."""
    try:
        return check_logs_age(catalog.get_setting(LOGS_MAX_AGE_KEY, DEFAULT_LOGS_MAX_AGE_DAYS))
    except HousekeepingError:
        return DEFAULT_LOGS_MAX_AGE_DAYS


def _path_bytes(p: Path) -> int:
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and not f.is_symlink())


def prune_job_files(catalog: Catalog, older_than_days: float, *, dry_run: bool = False) -> dict[str, Any]:
    """Remove the logs and scratch folders of jobs that finished more than `older_than_days`
    ago (the job rows stay). Only paths inside the catalog's logs/ and tmp/ are touched."""
    cutoff = datetime.now(timezone.utc) - timedelta(days=check_logs_age(older_than_days))
    removed: list[str] = []
    total = 0
    logs_root, tmp_root = catalog.logs_dir.resolve(), catalog.tmp_dir.resolve()
    for job in catalog.query("SELECT id, log_path, finished_at FROM jobs WHERE status IN"
                             " ('succeeded', 'failed', 'cancelled') AND finished_at IS NOT NULL"):
        try:
            finished = datetime.fromisoformat(job["finished_at"])
        except ValueError:
            continue
        if (finished if finished.tzinfo else finished.replace(tzinfo=timezone.utc)) > cutoff:
            continue
        candidates = [catalog.logs_dir / f"{job['id']}.log", catalog.tmp_dir / f"job-{job['id']}"]
        if job["log_path"]:
            candidates.append(Path(job["log_path"]))
        for p in dict.fromkeys(candidates):
            rp = p.resolve()
            if not (rp.is_relative_to(logs_root) or rp.is_relative_to(tmp_root)) or not p.exists():
                continue
            total += _path_bytes(p)
            removed.append(str(p))
            if not dry_run:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    return {"files": removed, "bytes": total}


def collect_garbage(catalog: Catalog, *, dry_run: bool = False, logs_older_than_days: float | None = None,
                    who: str | None = None) -> dict[str, Any]:
    """Clean what dead writers left, sweep unreferenced blobs, prune old job logs/scratch."""
    age = logs_max_age_days(catalog) if logs_older_than_days is None else check_logs_age(logs_older_than_days)
    cleaned = {"blobs": 0, "temp_files": 0} if dry_run else catalog.clean_stale()
    scratch = gc.remove_stale_scratch(catalog, dry_run=dry_run)  # killed bundle imports' folders
    swept = gc.sweep(catalog, dry_run=dry_run)
    logs = prune_job_files(catalog, age, dry_run=dry_run)
    result = {"dry_run": dry_run, "blobs": swept["blobs"], "blob_bytes": swept["bytes"],
              "stale_blobs": cleaned["blobs"], "temp_files": cleaned["temp_files"],
              "scratch_folders": scratch["folders"], "scratch_bytes": scratch["bytes"],
              "job_files": len(logs["files"]), "job_file_bytes": logs["bytes"], "logs_older_than_days": age}
    result["bytes_freed"] = result["blob_bytes"] + result["job_file_bytes"] + result["scratch_bytes"]
    if not dry_run and (swept["blobs"] or logs["files"] or cleaned["blobs"]):
        catalog.log_event("gc", {k: result[k] for k in ("blobs", "blob_bytes", "job_files", "job_file_bytes",
                                                       "stale_blobs")}, actor=who)
    return result


def garbage_summary(result: dict[str, Any]) -> str:
    """What a gc result counts, in words (the GUI's confirmation and report; `relman gc` prints
    the same figures): '3 unreferenced blobs (2.9 KB), 12 job files older than 30 days (1.1 MB)'."""
    from relman.units import human_size

    def n(count: int, one: str, many: str) -> str:
        return f"{count} {one if count == 1 else many}"

    parts = [f"{n(int(result.get('blobs', 0)), 'unreferenced blob', 'unreferenced blobs')} "
             f"({human_size(int(result.get('blob_bytes', 0)))})",
             f"{n(int(result.get('job_files', 0)), 'job file', 'job files')} older than "
             f"{float(result.get('logs_older_than_days') or 0):g} days ({human_size(int(result.get('job_file_bytes', 0)))})"]
    if result.get("scratch_folders"):
        parts.append(f"{n(int(result['scratch_folders']), 'stale scratch folder', 'stale scratch folders')} "
                     f"({human_size(int(result.get('scratch_bytes', 0)))})")
    if result.get("stale_blobs") or result.get("temp_files"):
        parts.append(f"{int(result.get('stale_blobs', 0)) + int(result.get('temp_files', 0))} half-written file(s) "
                     "of interrupted writers")
    return ", ".join(parts)


def garbage_found(result: dict[str, Any]) -> bool:
    """Whether a (dry-run) gc result has anything to remove."""
    return any(int(result.get(k, 0) or 0) for k in ("blobs", "job_files", "scratch_folders", "stale_blobs",
                                                     "temp_files"))


# -- archive / restore ------------------------------------------------------------------------
def _archive_blob_path(folder: Path, sha: str) -> Path:
    return folder / "objects" / sha[:2] / sha[2:]


def _refuse_links(path: Path, root: Path) -> None:
    """Refuse when `path` or a folder between `root` (the chosen archive folder) and it is a
    symbolic link: following one writes outside the folder, and a link back to the store's own
    blob would pass as "an intact copy is there" and then be released — the only copy gone."""
    p = path
    while p != root and root in p.parents:
        if p.is_symlink():
            raise HousekeepingError(f"refused: {p} is a symbolic link inside the archive folder {root}; "
                                    "remove it (relman writes only real files there)")
        p = p.parent


def _copy_verified(src: Path, dest: Path, sha: str, root: Path | None = None) -> None:
    """Copy a blob to `dest` (temp name, fsync, rename) unless an intact copy is there.
    Nothing under `root` (the archive folder) on the way to `dest` may be a symbolic link."""
    if root is not None:
        _refuse_links(dest, root)
    if dest.is_file() and sha256_file(dest)[0] == sha:
        return
    from relman.context import hold_here
    from relman.fsutil import remove_stale_temp

    remove_stale_temp(dest.parent)  # what a killed archive to this folder left
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
            fout.flush()
            os.fsync(fout.fileno())
        hold_here("archive.blob-copied")  # tests kill -9 here: the .part file is whole, not renamed
        actual = sha256_file(tmp)[0]
        if actual != sha:
            raise HousekeepingError(f"the copy of blob {sha[:12]}… in {dest.parent} hashes to {actual[:12]}…; "
                                    "nothing was archived")
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    except OSError as e:
        raise HousekeepingError(f"could not write {dest} ({e.strerror or e}); nothing was archived") from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # its folder could not be made: nothing to remove
            pass


def archive_version(catalog: Catalog, ref: str, folder: str | Path, *, who: str | None = None) -> dict[str, Any]:
    """Move a version's blobs to `folder` (another disk), keeping its record."""
    who = who or current_user()
    v = catalog.resolve(ref)
    if v.phase in ("staging", "production") or v.canary_share:
        raise HousekeepingError(f"refused: {v.ref} is in {v.phase}; only versions out of staging and production "
                                "can be archived")
    if v.archived_to:
        raise HousekeepingError(f"{v.ref} is already archived in {v.archived_to}")
    jobs = _jobs_using(catalog, v.id)
    if jobs:
        raise HousekeepingError(f"refused: job {jobs[0]['id']} ({jobs[0]['kind']}, {jobs[0]['status']}) uses {v.ref}; "
                                "cancel it or let it finish before archiving")
    dest = Path(folder).expanduser().resolve()
    if dest.is_relative_to(catalog.root.resolve()):
        raise HousekeepingError(f"{dest} is inside the catalog folder; archive to another folder or disk")
    files = catalog.artifacts(v.id)
    for a in files:  # before the first copy: a refusal leaves the folder as it was
        _refuse_links(_archive_blob_path(dest, a["sha256"]), dest)
    for a in files:
        src = catalog.store.path(a["sha256"])
        if not src.is_file():
            raise HousekeepingError(f"the blob of {v.ref}: {a['path']} is missing from the store; run 'relman verify'")
        _copy_verified(src, _archive_blob_path(dest, a["sha256"]), a["sha256"], root=dest)
    manifest = {"model": v.model, "version": v.version, "manifest_sha256": v.manifest_sha256, "files": files}
    from relman.fsutil import atomic_write, remove_stale_temp

    remove_stale_temp(dest)  # a killed archive's manifest temp file
    _refuse_links(dest / f"{v.model}@{v.version}.json", dest)

    try:
        atomic_write(dest / f"{v.model}@{v.version}.json", json.dumps(manifest, indent=2, sort_keys=True).encode())
    except OSError as e:
        raise HousekeepingError(f"could not write the archive manifest in {dest} ({e.strerror or e}); "
                                "nothing was archived") from None
    released = bytes_released_by(catalog, v)
    with catalog.transaction():
        cur = catalog.get_version(v.id)
        if cur.deleted or cur.archived_to or cur.phase in ("staging", "production"):
            raise HousekeepingError(f"{v.ref} changed while it was being copied ({cur.phase}); nothing was archived")
        at = utcnow()
        catalog.conn.execute("INSERT INTO archives (version_id, folder, archived_at, archived_by) VALUES (?, ?, ?, ?)",
                             [v.id, str(dest), at, who])
        integrity.commit_event(catalog.db, at=at, actor=who, kind="archive", model=v.model, version=v.version,
                               payload={"to": str(dest), "manifest_sha256": v.manifest_sha256, "files": len(files),
                                        "size_bytes": v.size_bytes})
    freed = gc.sweep(catalog, candidates=[a["sha256"] for a in files])
    return {"ref": v.ref, "to": str(dest), "files": len(files), "freed_bytes": freed["bytes"],
            "shared_bytes": released["shared_bytes"]}


def restore_version(catalog: Catalog, ref: str, *, who: str | None = None) -> dict[str, Any]:
    """Bring an archived version's blobs back into the store, each one re-hashed."""
    who = who or current_user()
    v = catalog.resolve(ref)
    if not v.archived_to:
        raise HousekeepingError(f"{v.ref} is not archived; nothing to restore")
    folder = Path(v.archived_to)
    files = catalog.artifacts(v.id)
    missing = [a["path"] for a in files if not _archive_blob_path(folder, a["sha256"]).is_file()]
    if missing:
        raise NotFound(f"the archive of {v.ref} in {folder} lacks {len(missing)} file(s) ({missing[0]}…); "
                       "is the disk mounted?")
    with catalog.staged_blobs(f"proc:{os.getpid()}") as stage:
        for a in files:
            sha, _ = stage.put(_archive_blob_path(folder, a["sha256"]))
            if sha != a["sha256"]:
                raise HousekeepingError(f"the archived copy of {v.ref}: {a['path']} is damaged (hashes to {sha[:12]}…,"
                                        f" expected {a['sha256'][:12]}…); nothing was restored")
        with catalog.transaction():
            catalog.conn.execute("DELETE FROM archives WHERE version_id = ?", [v.id])
            integrity.commit_event(catalog.db, at=utcnow(), actor=who, kind="restore", model=v.model, version=v.version,
                                   payload={"from": str(folder), "manifest_sha256": v.manifest_sha256, "files": len(files)})
            stage.commit()
    return {"ref": v.ref, "from": str(folder), "files": len(files), "size_bytes": v.size_bytes}
