"""Audit-chain diagnosis: which event was edited, deleted or reordered.

`relman.catalog.events.verify_chain` finds where the chain breaks; this module says *how*:
an event whose hash fits its content only under another sequence number was moved there
(reordered); one whose hash fits under no number was edited; a gap in the numbers, an event
that follows a predecessor that is gone, or a log shorter than the recorded head means events
were deleted.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from relman.catalog.events import GENESIS, event_hash

_MAX_TRIES = 200_000


@dataclass
class Finding:
    kind: str  # edited | deleted | reordered
    seq: int | None
    message: str

    def __str__(self) -> str:
        return f"{self.kind.upper():<9} " + (f"event {self.seq}: " if self.seq is not None else "") + self.message

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fits(r: dict[str, Any], seq: int) -> bool:
    return event_hash(r["prev_hash"], seq, r["at"], r["actor"], r["kind"], r["model"], r["version"],
                      r["payload"]) == r["hash"]


def diagnose(catalog: Any) -> list[Finding]:
    """Every break in the audit chain, classified; [] when the whole log verifies."""
    rows = catalog.query("SELECT * FROM events ORDER BY seq")
    by_hash = {r["hash"]: r for r in rows}
    top = (rows[-1]["seq"] if rows else 0) + len(rows) + 1
    tries = 0
    out: list[Finding] = []
    prev, expected = GENESIS, 1
    for r in rows:
        seq = r["seq"]
        if seq > expected:
            span = f"event {expected}" if seq - 1 == expected else f"events {expected}..{seq - 1}"
            out.append(Finding("deleted", expected, f"{span} missing from the log (deleted)"))
        what = f"{r['kind']} by {r['actor']} at {r['at'][:19]}"
        if not _fits(r, seq):
            original = None
            for s in range(1, top):
                if s == seq:
                    continue
                tries += 1
                if tries > _MAX_TRIES:
                    break
                if _fits(r, s):
                    original = s
                    break
            if original is not None:
                out.append(Finding("reordered", seq, f"holds event {original} ({what}): events were reordered"))
            else:
                out.append(Finding("edited", seq, f"content was edited ({what}); its hash no longer matches"))
        elif r["prev_hash"] != prev and seq == expected:
            if r["prev_hash"] in by_hash:
                out.append(Finding("reordered", seq, f"({what}) belongs after event {by_hash[r['prev_hash']]['seq']}:"
                                                     " events were reordered"))
            else:
                out.append(Finding("deleted", seq, f"({what}) follows an event that is no longer in the log "
                                                   "(deleted, or edited and re-hashed)"))
        prev, expected = r["hash"], seq + 1
    head = catalog.conn.execute("SELECT value FROM settings WHERE key = 'audit_head'").fetchone()
    last_seq = rows[-1]["seq"] if rows else 0
    last_hash = rows[-1]["hash"] if rows else GENESIS
    if head:
        recorded = json.loads(head[0])
        if recorded["seq"] > last_seq:
            out.append(Finding("deleted", None, f"the log ends at event {last_seq} but event {recorded['seq']} was "
                                                "recorded as the last one (events deleted from the end)"))
        elif recorded["seq"] != last_seq or recorded["hash"] != last_hash:
            out.append(Finding("edited", None, f"the last event ({last_seq}) is not the one recorded as the head "
                                               f"(event {recorded['seq']})"))
    if not out:  # belt and braces: never report clean when the core check does not
        out = [Finding("edited", p.seq, p.message) for p in catalog.verify_audit()]
    return out


def excerpt(catalog: Any, model: str, version: str | None = None) -> list[dict[str, Any]]:
    """The events about a model (and version), with their hashes, for bundles and cards."""
    sql = "SELECT * FROM events WHERE model = ?"
    params: list[Any] = [model]
    if version is not None:
        sql += " AND (version = ? OR version IS NULL)"
        params.append(version)
    rows = catalog.query(sql + " ORDER BY seq", params)
    for r in rows:
        r["payload"] = json.loads(r["payload"])
    return rows
