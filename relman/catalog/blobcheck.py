"""Checking stored blobs against their sha256: a full re-hash, or a cheap look-up of the last one.

Why two ways: a promotion must know that the bytes it releases are the recorded ones, so it
re-hashes them (`rehash_blob`, in a worker process for big models). A view only needs to say
what is known without reading gigabytes on the GUI thread: `cached_state` stats the file
and looks up the last successful re-hash of the same blob, recorded with the file's size and
mtime (`blob_checks`). A blob whose size or mtime changed since is "unverified" again; one
whose size differs from the recorded size, or that is gone, fails at once.

Every re-hash goes through `relman.catalog.store.sha256_file` (looked up at call time), so a
test can wrap it to record which thread hashes (the GUI test asserts none is the GUI thread).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from relman.catalog import store as _store

if TYPE_CHECKING:
    from relman.catalog import Catalog

OK, CACHED, UNVERIFIED, MISSING, CHANGED = "ok", "cached", "unverified", "missing", "changed"


def _stat(catalog: "Catalog", sha: str) -> os.stat_result | None:
    try:
        return os.stat(catalog.store.path(sha))
    except OSError:
        return None


def cached_state(catalog: "Catalog", sha: str, size: int) -> tuple[str, str]:
    """(state, detail) without reading the blob: MISSING / CHANGED (size differs) / CACHED (a
    re-hash recorded for this size and mtime) / UNVERIFIED (never re-hashed, or touched since)."""
    st = _stat(catalog, sha)
    if st is None:
        return MISSING, "missing"
    if st.st_size != int(size):
        return CHANGED, f"size changed ({st.st_size} bytes, recorded {size})"
    row = catalog.conn.execute("SELECT size, mtime_ns, verified_at FROM blob_checks WHERE sha256 = ?",
                               [sha]).fetchone()
    if row and row[0] == st.st_size and row[1] == st.st_mtime_ns:
        return CACHED, f"verified {row[2][:19].replace('T', ' ')}"
    return UNVERIFIED, "not hashed since it was stored"


def rehash_blob(catalog: "Catalog", sha: str, size: int | None = None) -> tuple[str, str]:
    """(OK, '') or (MISSING / CHANGED, what is wrong), reading every byte; a match is recorded
    in `blob_checks` so views can show it later without hashing."""
    st = _stat(catalog, sha)
    if st is None:
        return MISSING, "missing"
    actual, n = _store.sha256_file(catalog.store.path(sha))
    if actual != sha:
        catalog.conn.execute("DELETE FROM blob_checks WHERE sha256 = ?", [sha])
        return CHANGED, f"content changed (now hashes to {actual[:12]}…)"
    if size is not None and n != int(size):
        return CHANGED, f"size changed ({n} bytes, recorded {size})"
    from relman.catalog.clock import utcnow

    with catalog.transaction():
        catalog.conn.execute(
            "INSERT OR REPLACE INTO blob_checks (sha256, size, mtime_ns, verified_at) VALUES (?, ?, ?, ?)",
            [sha, st.st_size, st.st_mtime_ns, utcnow()])
    return OK, ""

