"""Sign-offs: a named person approves a version for a target phase.

Each approval stores a digest of the version's metrics at the time; an approval counts only
while that digest still matches, so re-evaluating a version with different results silently
withdraws nobody's name but makes the gate ask again (the report says how many are valid).
The same person cannot approve the same version for the same phase twice; once their earlier
approval has gone stale (metrics changed) they may renew it.
"""

from __future__ import annotations

import hashlib
from typing import Any

from relman.catalog import events as audit
from relman.errors import ReleaseError

APPROVABLE = ("candidate", "staging", "production")


def metrics_digest(catalog: Any, version_id: int) -> str:
    """sha256 over the newest value of each (suite, metric, dataset) of the version."""
    rows = sorted((m["suite"], m["name"], m["value"], m["dataset"] or m["context"].get("dataset"))
                  for m in catalog.metrics(version_id, latest=True))
    return hashlib.sha256(audit.canonical(rows).encode()).hexdigest()


def approvals(catalog: Any, version_id: int, to_phase: str | None = None) -> list[dict[str, Any]]:
    """All approvals of a version (valid or stale), each with `valid`."""
    digest = metrics_digest(catalog, version_id)
    sql = "SELECT * FROM approvals WHERE version_id = ?"
    params: list[Any] = [version_id]
    if to_phase:
        sql += " AND to_phase = ?"
        params.append(to_phase)
    rows = catalog.query(sql + " ORDER BY id", params)
    for r in rows:
        r["valid"] = r["metrics_digest"] == digest
    return rows


def valid_approvals(catalog: Any, version_id: int, to_phase: str) -> list[dict[str, Any]]:
    return [a for a in approvals(catalog, version_id, to_phase) if a["valid"]]


def approve(catalog: Any, version_id: int, to_phase: str, by: str, comment: str = "") -> dict[str, Any]:
    """Record `by`'s approval of the version for `to_phase`, with its audit event, atomically."""
    from relman.catalog.catalog import utcnow

    from relman.names import check_person

    if not (by or "").strip():
        raise ReleaseError("an approval needs a name (--by NAME)")
    check_person(by, "approver (--by)")
    if to_phase not in APPROVABLE:
        raise ReleaseError(f"cannot approve for phase '{to_phase}' (approvals are for {', '.join(APPROVABLE)})")
    with catalog.transaction():
        v = catalog.get_version(version_id)  # read inside the lock: the phase is current
        if v.phase in ("rejected", "retired"):
            raise ReleaseError(f"{v.ref} is {v.phase}; it cannot be approved")
        digest = metrics_digest(catalog, v.id)
        now = utcnow()
        row = catalog.conn.execute("SELECT id, metrics_digest, at FROM approvals WHERE version_id = ? AND to_phase = ?"
                                   " AND by = ?", [v.id, to_phase, by]).fetchone()
        renewed = False
        if row and row[1] == digest:
            raise ReleaseError(f"{by} already approved {v.ref} for {to_phase} (at {row[2][:19]}); "
                               "the same person cannot approve twice")
        if row:  # stale: metrics changed since; renew in place (UNIQUE per person)
            catalog.conn.execute("UPDATE approvals SET comment = ?, metrics_digest = ?, at = ? WHERE id = ?",
                                 [comment, digest, now, row[0]])
            approval_id, renewed = int(row[0]), True
        else:
            cur = catalog.conn.execute(
                "INSERT INTO approvals (version_id, to_phase, by, comment, metrics_digest, at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [v.id, to_phase, by, comment, digest, now])
            approval_id = int(cur.lastrowid)
        audit.append(catalog.db, at=now, actor=by, kind="approve", model=v.model, version=v.version,
                     payload={"to": to_phase, "by": by, "comment": comment, "metrics_digest": digest,
                              "renewed": renewed})
    return {"id": approval_id, "model": v.model, "version": v.version, "to_phase": to_phase, "by": by,
            "comment": comment, "metrics_digest": digest, "at": now, "renewed": renewed}
