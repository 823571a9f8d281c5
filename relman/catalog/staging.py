"""Blob staging: how a write stores blobs before the rows that reference them commit.

Each blob a pending write creates is recorded in `pending_blobs` (committed on its own, before
the blob appears), so a crash leaves a trace to clean by; `rollback()` drops the new blobs
again when the write fails. The catalog hands these out (`Catalog.staged_blobs`); this module
only calls methods on the catalog it is given and never imports `catalog.py`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

from relman.catalog.clock import utcnow

if TYPE_CHECKING:
    from relman.catalog.catalog import Catalog


def pid_alive(pid: int) -> bool:
    """Is process `pid` alive (a zombie is not)? Decides whether a pending write's owner is gone."""
    import psutil

    try:
        p = psutil.Process(pid)
        return bool(p.status() != psutil.STATUS_ZOMBIE)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


class BlobStaging:
    """Blobs written for one pending write; `rollback()` removes the new ones again."""

    def __init__(self, catalog: Catalog, owner: str) -> None:
        self.catalog = catalog
        self.owner = owner
        self.touched = False

    def _record(self, sha: str) -> None:
        # Committed on its own before the blob appears, so a crash leaves a trace to clean by.
        with self.catalog.transaction():
            self.catalog.conn.execute(
                "INSERT OR IGNORE INTO pending_blobs (owner, sha256, created_at) VALUES (?, ?, ?)",
                [self.owner, sha, utcnow()])
        self.touched = True

    def put(self, src: Path, on_bytes: Callable[[int], None] | None = None) -> tuple[str, int]:
        sha, size, _ = self.catalog.store.put_file(src, on_new=self._record, on_bytes=on_bytes)
        return sha, size

    def put_all(self, files: Mapping[str, Path],
                progress: Callable[[int, int], None] | None = None) -> dict[str, tuple[str, int]]:
        """Store each file; returns {posix relative path: (sha256, size)}. `progress(bytes
        stored, bytes in all)` follows the copy."""
        stored: dict[str, tuple[str, int]] = {}
        total = sum(Path(src).stat().st_size for src in files.values()) if progress is not None else 0
        done = 0

        def on_bytes(n: int) -> None:
            nonlocal done
            done += n
            assert progress is not None
            progress(done, total)

        for rel, src in sorted(files.items()):
            stored[rel.replace(os.sep, "/")] = self.put(Path(src), on_bytes if progress is not None else None)
        return stored

    def commit(self) -> None:
        """Call inside the transaction that references the blobs."""
        self.catalog.conn.execute("DELETE FROM pending_blobs WHERE owner = ?", [self.owner])

    def rollback(self) -> None:
        if self.touched:
            self.catalog.release_pending(self.owner)
