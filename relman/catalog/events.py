"""The append-only audit log: every event's hash covers the previous event's hash.

`hash = sha256(prev_hash | seq | at | actor | kind | model | version | payload)` over a
canonical JSON encoding. Editing, deleting or reordering any event breaks the chain from that
point on, and `verify_chain` names the first event that no longer fits. The head hash and the
event count are also kept in `settings`, so a deletion at the end of the log is caught too.
Appends run inside the caller's write transaction (BEGIN IMMEDIATE), so two processes cannot
both chain onto the same predecessor. The lowest audit layer: it knows nothing of tracked rows
(`relman.catalog.rows`), which `integrity.commit_event` adds to an event's payload.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import sqlite_utils

GENESIS = "0" * 64


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def event_hash(prev_hash: str, seq: int, at: str, actor: str, kind: str, model: str | None,
               version: str | None, payload: str) -> str:
    body = canonical([prev_hash, seq, at, actor, kind, model, version, payload])
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def append_entry(db: sqlite_utils.Database, *, at: str, actor: str, kind: str, model: str | None,
                 version: str | None, payload: dict[str, Any]) -> int:
    """Chain one event onto the log exactly as given; must run inside a write transaction.
    Returns its seq.

    Only the chain: callers write events through `relman.catalog.integrity.commit_event`, which
    also commits the tracked rows the transaction wrote (`payload["committed"]`). This module
    sits below row tracking and imports nothing of the catalog."""
    row = db.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (row[0] + 1, row[1]) if row else (1, GENESIS)
    text = canonical(payload)
    h = event_hash(prev, seq, at, actor, kind, model, version, text)
    db.execute(
        "INSERT INTO events (seq, at, actor, kind, model, version, payload, prev_hash, hash)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [seq, at, actor, kind, model, version, text, prev, h],
    )
    db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES ('audit_head', ?)",
               [canonical({"seq": seq, "hash": h})])
    return seq


def next_seq(db: sqlite_utils.Database) -> int:
    """The seq the next appended event gets (1 on an empty log)."""
    row = db.execute("SELECT MAX(seq) FROM events").fetchone()
    return int(row[0] or 0) + 1


@dataclass
class ChainProblem:
    seq: int | None
    message: str

    def __str__(self) -> str:
        return f"event {self.seq}: {self.message}" if self.seq is not None else self.message


def verify_chain(db: sqlite_utils.Database) -> list[ChainProblem]:
    """Walk the log in order; report edited, deleted, inserted or reordered events."""
    problems: list[ChainProblem] = []
    prev = GENESIS
    expected_seq = 1
    last_seq, last_hash = 0, GENESIS
    for r in db.query("SELECT * FROM events ORDER BY seq"):
        seq = r["seq"]
        if seq != expected_seq:
            problems.append(ChainProblem(seq, f"events {expected_seq}..{seq - 1} are missing (deleted)"))
        if r["prev_hash"] != prev:
            problems.append(ChainProblem(seq, "does not follow the event before it (deleted or reordered events)"))
        h = event_hash(r["prev_hash"], seq, r["at"], r["actor"], r["kind"], r["model"], r["version"], r["payload"])
        if h != r["hash"]:
            problems.append(ChainProblem(seq, f"content was edited ({r['kind']} by {r['actor']} at {r['at']})"))
        prev = r["hash"]
        expected_seq = seq + 1
        last_seq, last_hash = seq, r["hash"]
    head = db.execute("SELECT value FROM settings WHERE key = 'audit_head'").fetchone()
    if head:
        recorded = json.loads(head[0])
        if recorded["seq"] != last_seq or recorded["hash"] != last_hash:
            problems.append(ChainProblem(None, f"the log ends at event {last_seq} but event {recorded['seq']} "
                                               "was recorded as the last one (events deleted from the end)"))
    return problems
