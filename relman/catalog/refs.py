"""What keeps a blob alive: one table of reference sources, read by gc, du, delete and the
clean-up of failed writes, so they can never disagree about which blobs are in use.

Each source is a query returning `(sha256, owner)` rows. A live version's artifacts, a
dataset's files and the blobs a write has claimed but not yet committed (`pending_blobs`)
keep blobs; a deleted version has no artifact rows left, and an archived version's blobs
live in its archive folder, so neither keeps anything in the store. A new kind of stored
file (evaluation artifacts, say) adds one entry with `register_reference`.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from typing import Iterable

_SOURCES: dict[str, str] = {
    "version": "SELECT a.sha256, a.version_id FROM artifacts a"
               " WHERE NOT EXISTS (SELECT 1 FROM archives x WHERE x.version_id = a.version_id)",
    "dataset": "SELECT sha256, dataset_id FROM dataset_files",
    "pending": "SELECT sha256, owner FROM pending_blobs",
    # an evaluation's files (e.g. explain attributions); a deleted version's rows go with it
    "evaluation": "SELECT sha256, version_id FROM evaluation_artifacts",
}


def register_reference(kind: str, sql: str) -> None:
    """Add a source of blob references: `sql` selects (sha256, owner) rows."""
    _SOURCES[kind] = sql


def reference_kinds() -> list[str]:
    return list(_SOURCES)


def live_shas(conn: sqlite3.Connection, *, exclude: Iterable[tuple[str, object]] = (),
              kinds_excluded: Iterable[str] = ()) -> set[str]:
    """Every blob some live thing needs. `exclude` leaves out owners, e.g. ("version", 7)
    to ask what would still be needed once version 7 is gone; `kinds_excluded` whole kinds."""
    skip = set(exclude)
    skip_kinds = set(kinds_excluded)
    out: set[str] = set()
    for kind, sql in _SOURCES.items():
        if kind in skip_kinds:
            continue
        for sha, owner in conn.execute(sql):
            if (kind, owner) not in skip:
                out.add(sha)
    return out


def owners_by_blob(conn: sqlite3.Connection) -> dict[str, set[tuple[str, object]]]:
    """sha256 → {(kind, owner id)} for every referenced blob (du's attribution)."""
    out: dict[str, set[tuple[str, object]]] = defaultdict(set)
    for kind, sql in _SOURCES.items():
        for sha, owner in conn.execute(sql):
            out[sha].add((kind, owner))
    return dict(out)
