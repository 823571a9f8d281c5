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
from relman.catalog import integrity
from relman.errors import ReleaseError

APPROVABLE = ("candidate", "staging", "production")


def metrics_digest(catalog: Any, version_id: int) -> str:
    """sha256 over the newest value of each (suite, metric, dataset) of the version."""
    rows = sorted((m["suite"], m["name"], m["value"], m["dataset"] or m["context"].get("dataset"))
                  for m in catalog.metrics(version_id, latest=True))
    return hashlib.sha256(audit.canonical(rows).encode()).hexdigest()


def signed_body(catalog: Any, v: Any, to_phase: str, by: str, digest: str, at: str) -> dict[str, Any]:
    """What a signed approval signs: this catalog, this version's files and metrics, the phase,
    the person and the moment (so it cannot be moved to another version or phase)."""
    from relman.catalog.anchor import catalog_id

    return {"kind": "relman-approval", "catalog": catalog_id(catalog), "model": v.model, "version": v.version,
            "manifest_sha256": v.manifest_sha256, "to_phase": to_phase, "by": by, "metrics_digest": digest, "at": at}


def check_signature(row: dict[str, Any], v: Any, catalog: Any | None = None) -> tuple[str, str]:
    """('ok' | 'unsigned' | 'untrusted' | 'bad', detail) for one approval row of version `v`."""
    import base64
    import json

    from relman.release import keys

    text = row.get("signature")
    if not text:
        return "unsigned", ""
    try:
        doc = json.loads(text)
        body, sig, raw = doc["body"], base64.b64decode(doc["signature"]), base64.b64decode(doc["public"])
    except (ValueError, KeyError, TypeError):
        return "bad", "malformed signature"
    expect = {"model": v.model, "version": v.version, "manifest_sha256": v.manifest_sha256,
              "to_phase": row["to_phase"], "by": row["by"], "metrics_digest": row["metrics_digest"]}
    wrong = [k for k, val in expect.items() if body.get(k) != val]
    if catalog is not None:
        from relman.catalog.anchor import catalog_id

        if body.get("catalog") != catalog_id(catalog) and not v.meta.get("imported_bundle"):
            wrong.append("catalog")
    if wrong:
        return "bad", f"signed for another {', '.join(wrong)}"
    trusted = [k for k in keys.trusted_keys() if k.raw == raw]
    if not trusted:
        return "untrusted", f"key {keys.key_id(raw)} is not trusted here"
    if not trusted[0].verify(sig, audit.canonical(body).encode()):
        return "bad", f"signature does not match (key {trusted[0].id})"
    return "ok", f"key {trusted[0].id} ({trusted[0].name})"


def approvals(catalog: Any, version_id: int, to_phase: str | None = None) -> list[dict[str, Any]]:
    """All approvals of a version (valid or stale), each with `valid`, and `signed`: whether
    it carries a signature that checks out with a key trusted here (`signature_status` says
    unsigned, untrusted or bad otherwise)."""
    digest = metrics_digest(catalog, version_id)
    sql = "SELECT * FROM approvals WHERE version_id = ?"
    params: list[Any] = [version_id]
    if to_phase:
        sql += " AND to_phase = ?"
        params.append(to_phase)
    rows = catalog.query(sql + " ORDER BY id", params)
    v = catalog.get_version(version_id) if rows else None
    for r in rows:
        r["valid"] = r["metrics_digest"] == digest
        status, detail = check_signature(r, v, catalog)
        r["signed"] = status == "ok"
        r["signature_status"], r["signature_detail"] = status, detail
    return rows


def valid_approvals(catalog: Any, version_id: int, to_phase: str) -> list[dict[str, Any]]:
    return [a for a in approvals(catalog, version_id, to_phase) if a["valid"]]


def approve(catalog: Any, version_id: int, to_phase: str, by: str, comment: str = "", *,
            key: str | None = None) -> dict[str, Any]:
    """Record `by`'s approval of the version for `to_phase`, with its audit event, atomically.
    With `key` (a key name from `relman keys`), the approval is signed with that private key."""
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
        from relman.catalog.integrity import require_intact

        require_intact(catalog, f"approve {v.ref}")  # an approval vouches for the metrics it sees
        digest = metrics_digest(catalog, v.id)
        now = utcnow()
        signature = None
        if key:
            import base64

            from relman.release import keys

            body = signed_body(catalog, v, to_phase, by, digest, now)
            pub, sig = keys.sign(key, audit.canonical(body).encode())
            signature = audit.canonical({"body": body, "signature": base64.b64encode(sig).decode(),
                                         "public": base64.b64encode(pub.raw).decode(), "key_id": pub.id,
                                         "key_name": pub.name})
        row = catalog.conn.execute("SELECT id, metrics_digest, at FROM approvals WHERE version_id = ? AND to_phase = ?"
                                   " AND by = ?", [v.id, to_phase, by]).fetchone()
        renewed = False
        if row and row[1] == digest:
            raise ReleaseError(f"{by} already approved {v.ref} for {to_phase} (at {row[2][:19]}); "
                               "the same person cannot approve twice")
        if row:  # stale: metrics changed since; renew in place (UNIQUE per person)
            catalog.conn.execute("UPDATE approvals SET comment = ?, metrics_digest = ?, at = ?, signature = ?"
                                 " WHERE id = ?", [comment, digest, now, signature, row[0]])
            approval_id, renewed = int(row[0]), True
        else:
            cur = catalog.conn.execute(
                "INSERT INTO approvals (version_id, to_phase, by, comment, metrics_digest, at, signature)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [v.id, to_phase, by, comment, digest, now, signature])
            approval_id = int(cur.lastrowid)
        integrity.commit_event(catalog.db, at=now, actor=by, kind="approve", model=v.model, version=v.version,
                               payload={"to": to_phase, "by": by, "comment": comment, "metrics_digest": digest,
                                        "renewed": renewed, "signed_with": key})
    return {"id": approval_id, "model": v.model, "version": v.version, "to_phase": to_phase, "by": by,
            "comment": comment, "metrics_digest": digest, "at": now, "renewed": renewed, "signed": bool(key)}
