"""Mark and sweep of the blob store, crash-safe by construction.

The whole pass runs inside one catalog write transaction (BEGIN IMMEDIATE): the mark reads
every reference source in `relman.catalog.refs` (live versions, datasets, pending writes…),
the sweep unlinks blobs outside that set. No writer can add a reference meanwhile, because
every write first commits a `pending_blobs` claim for each blob it will reference — including
blobs that already exist (`BlobStore.put_file`) — and that claim waits for the lock. So:

- a gc killed at any point has removed only blobs nothing referenced (SQLite drops its
  transaction with the process; the next gc finishes the job);
- a concurrent writer's blob is either claimed before the mark (kept) or claimed after the
  sweep (and then re-written if gc had just removed an identical unreferenced blob).

`RELMAN_TEST_GC_KILL_AFTER=k` makes the sweep SIGKILL its own process after its k-th removal
(0: right after the mark), so tests can kill gc at chosen points without racing a clock.
"""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING, Any, Iterable

from relman.catalog import refs

if TYPE_CHECKING:
    from relman.catalog import Catalog

KILL_HOOK_ENV = "RELMAN_TEST_GC_KILL_AFTER"
SCRATCH_PREFIX = "bundle-"  # tmp/bundle-<pid>-<random>: a bundle import's extracted files
LEGACY_SCRATCH_AGE_S = 24 * 3600.0  # no import runs a day; an older PID-less folder is a leftover


def _kill_point() -> int | None:
    text = os.environ.get(KILL_HOOK_ENV, "")
    return int(text) if text.strip().isdigit() else None


def blob_size(catalog: "Catalog", sha: str) -> int:
    try:
        return catalog.store.path(sha).stat().st_size
    except OSError:
        return 0


def sweep(catalog: "Catalog", *, candidates: Iterable[str] | None = None, dry_run: bool = False) -> dict[str, Any]:
    """Remove blobs no reference source needs (all blobs, or only `candidates`).

    Returns {"blobs": n, "bytes": freed, "shas": [...], "dry_run": bool}."""
    kill_at = None if dry_run else _kill_point()
    with catalog.transaction():
        live = refs.live_shas(catalog.conn)
        pool = catalog.store.all_shas() if candidates is None else sorted(set(candidates))
        garbage = [sha for sha in pool if sha not in live and catalog.store.has(sha)]
        sizes = {sha: blob_size(catalog, sha) for sha in garbage}
        if kill_at == 0:
            os.kill(os.getpid(), signal.SIGKILL)
        if not dry_run:
            for i, sha in enumerate(garbage, 1):
                catalog.store.remove(sha)
                if kill_at == i:
                    os.kill(os.getpid(), signal.SIGKILL)
    return {"blobs": len(garbage), "bytes": sum(sizes.values()), "shas": garbage, "dry_run": dry_run}


def remove_stale_scratch(catalog: "Catalog", *, dry_run: bool = False) -> dict[str, Any]:
    """Remove the scratch folders in the catalog's tmp/ whose process is gone: a bundle import
    extracts into tmp/bundle-<pid>-<random> and a kill -9 leaves it (133 MB for a small
    model). The PID in the name says whose it is; a live process's folder is never touched,
    nor anything of another name. A folder named before names carried the PID (bundle-<random>)
    goes once it is LEGACY_SCRATCH_AGE_S old. Returns {"folders": n, "bytes": b}."""
    import shutil
    import time

    from relman.fsutil import pid_alive

    n, total = 0, 0
    try:
        entries = list(catalog.tmp_dir.iterdir())
    except OSError:
        return {"folders": 0, "bytes": 0}
    for p in entries:
        if not p.name.startswith(SCRATCH_PREFIX) or not p.is_dir() or p.is_symlink():
            continue
        pid_text = p.name[len(SCRATCH_PREFIX):].split("-", 1)[0]
        if "-" not in p.name[len(SCRATCH_PREFIX):]:  # bundle-<random>, named before the PID was added
            try:
                if time.time() - p.stat().st_mtime < LEGACY_SCRATCH_AGE_S:
                    continue
            except OSError:
                continue
        elif not pid_text.isdigit() or int(pid_text) == os.getpid() or pid_alive(int(pid_text)):
            continue
        size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and not f.is_symlink())
        if not dry_run:
            shutil.rmtree(p, ignore_errors=True)
            if p.exists():
                continue
        n, total = n + 1, total + size
    return {"folders": n, "bytes": total}
