"""Row tracking: which tables hold decision-relevant rows, how a row is hashed, how relman's
own writes are noticed, and how the records events committed are replayed and compared.

The middle of the catalog's audit layers (`events` below, `anchor` and `integrity` above):
it reads and writes only through the connection it is given and imports neither the anchor
nor the catalog. See `relman.catalog.integrity` for the scheme as a whole; its names from
here are re-exported there.

`TRACKED` is the one registry: table name -> key columns. A branch that adds a table adds one
entry; a schema change of a tracked table is noticed (`fingerprint`) and re-baselined on the
next open (`integrity.ensure_baseline`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from relman.catalog.events import canonical

# table -> key columns. Every column of a row is hashed, except where HASHED_COLUMNS narrows it.
TRACKED: dict[str, tuple[str, ...]] = {
    "models": ("id",),
    "versions": ("id",),
    "artifacts": ("version_id", "path"),
    "lineage": ("child_id", "parent_id"),
    "datasets": ("id",),
    "dataset_files": ("dataset_id", "path"),
    "metrics": ("id",),
    "approvals": ("id",),
    "transitions": ("id",),
    "policies": ("id",),
    "jobs": ("id",),
    "tombstones": ("version_id",),
    "archives": ("version_id",),
    "tags": ("version_id", "name"),
    "evaluation_artifacts": ("id",),
    "hooks": ("id",),  # automations on release events: they decide what runs (relman.release.hooks)
    # settings decide things too (the baseline's fingerprint, the catalog's id and key, the Ray
    # executor's address, disk reserves, channels, card fields): an edit must show (issue 26)
    "settings": ("key",),
}

# Rows of a tracked table that are not committed, as an SQL condition on a row ({r} is the
# table or NEW/OLD): the chain's own head, rewritten by every event (verify_chain checks it).
EXCLUDED_ROWS: dict[str, str] = {
    "settings": "{r}.key IS NOT 'audit_head'",
}

# Tables whose rows also carry live, non-decision state (a job's progress, heartbeat, pid):
# only these columns are hashed, and only these fire the update trigger.
HASHED_COLUMNS: dict[str, tuple[str, ...]] = {
    "jobs": ("id", "kind", "params", "created_by", "parent_job_id", "status", "result", "error",
             "result_version_id"),
}

# Update triggers fire only when the committed part may have changed (a worker claiming a job,
# queued -> running, changes nothing committed and must not cost a scan of the events).
TRIGGER_WHEN: dict[str, str] = {
    "jobs": "NOT (OLD.status IN ('queued', 'running') AND NEW.status IN ('queued', 'running')"
            " AND OLD.result_version_id IS NEW.result_version_id AND OLD.kind IS NEW.kind"
            " AND OLD.params IS NEW.params)",
}

# A queued or running job may flip between the two without an event (a worker claims it);
# what is committed is that it has not finished.
_OPEN_JOB = {"queued": "open", "running": "open"}

# What a new catalog writes before it has any event (its baseline and key): the first event
# commits them with every other row (`integrity.commit_event`).
FRESH_SETTINGS = ("integrity_fingerprint", "catalog_id", "catalog_key")

STATE_EVENT = "state"
BASELINE_EVENT = "integrity-baseline"
_DIRTY = "relman_dirty"


ACCEPT_EVENT = "integrity-accept"



def _exists(db: Any, table: str) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", [table]).fetchone() is not None


def _columns(db: Any, table: str) -> list[str]:
    return [r[1] for r in db.execute(f"PRAGMA main.table_info({table})").fetchall()]


def _where(table: str) -> str:
    cond = EXCLUDED_ROWS.get(table)
    return f" WHERE {cond.format(r=f'main.{table}')}" if cond else ""


def tracked_tables(db: Any) -> list[str]:
    return [t for t in TRACKED if _exists(db, t)]


def all_records(conn: Any) -> dict[str, dict[str, Any]]:
    """Every tracked row's record, by table and row key (what a baseline or an accepted state commits)."""
    rows: dict[str, dict[str, Any]] = {}
    for table in tracked_tables(conn):
        cur = conn.execute(f"SELECT * FROM main.{table}{_where(table)}")
        cols = [d[0] for d in cur.description]
        for values in cur.fetchall():
            row = dict(zip(cols, values))
            rows.setdefault(table, {})[row_key(table, row)] = record(table, row)
    return rows


def fingerprint(db: Any) -> str:
    """What the row hashes depend on: the tracked tables, their keys and their columns."""
    shape = [[t, list(TRACKED[t]), _columns(db, t), list(HASHED_COLUMNS.get(t, ()))] for t in tracked_tables(db)]
    return hashlib.sha256(canonical(shape).encode()).hexdigest()


# -- hashing -----------------------------------------------------------------------------------
def project(table: str, row: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a row that is committed (all columns, or the registry's selection)."""
    cols = HASHED_COLUMNS.get(table)
    out = {k: row[k] for k in cols if k in row} if cols else dict(row)
    if table == "jobs" and "status" in out:
        out["status"] = _OPEN_JOB.get(out["status"], out["status"])
        if out["status"] == "open":
            out["result"] = out["error"] = None
    return out


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _canon(obj: Any) -> str:
    """`events.canonical`, with one shared encoder (this runs for every row on the gate path)."""
    return _ENCODER.encode(obj)


def digest(value: Any) -> str:
    return hashlib.sha256(_canon(value).encode()).hexdigest()[:12]


def row_hash(table: str, row: Mapping[str, Any]) -> str:
    return hashlib.sha256(_canon(project(table, row)).encode()).hexdigest()


def record(table: str, row: Mapping[str, Any]) -> dict[str, Any]:
    """{"h": hash of the committed content, "c": {column: short digest}} (to name columns)."""
    content = project(table, row)
    return {"h": hashlib.sha256(_canon(content).encode()).hexdigest(),
            "c": {k: digest(v) for k, v in content.items()}}


def row_key(table: str, row: Mapping[str, Any]) -> str:
    return _canon([row[k] for k in TRACKED[table]])


def _fetch(db: Any, table: str, key: str) -> dict[str, Any] | None:
    values = json.loads(key)
    cols = TRACKED[table]
    where = " AND ".join(f"{c} IS ?" for c in cols)
    if table in EXCLUDED_ROWS:
        where += " AND " + EXCLUDED_ROWS[table].format(r=f"main.{table}")
    cur = db.execute(f"SELECT * FROM main.{table} WHERE {where}", values)
    row = cur.fetchone()
    if row is None:
        return None
    return dict(zip([d[0] for d in cur.description], row))


# -- capturing relman's own writes --------------------------------------------------------------
def install(conn: Any) -> None:
    """Create this connection's TEMP table and triggers (idempotent; cheap)."""
    conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {_DIRTY} (tbl TEXT NOT NULL, key TEXT NOT NULL,"
                 " PRIMARY KEY (tbl, key))")
    for table in tracked_tables(conn):
        keys = TRACKED[table]
        new = "json_array(" + ", ".join(f"NEW.{k}" for k in keys) + ")"
        old = "json_array(" + ", ".join(f"OLD.{k}" for k in keys) + ")"
        of = f" OF {', '.join(HASHED_COLUMNS[table])}" if table in HASHED_COLUMNS else ""
        note = f"INSERT OR IGNORE INTO {_DIRTY} (tbl, key) VALUES ('{table}', %s);"
        ex = EXCLUDED_ROWS.get(table)
        w_new = f" WHEN {ex.format(r='NEW')}" if ex else ""
        w_old = f" WHEN {ex.format(r='OLD')}" if ex else ""
        conn.execute(f"CREATE TEMP TRIGGER IF NOT EXISTS relman_dirty_{table}_ins AFTER INSERT ON main.{table}"
                     f"{w_new} BEGIN {note % new} END")
        conds = [c for c in (TRIGGER_WHEN.get(table),
                             f"({ex.format(r='OLD')} OR {ex.format(r='NEW')})" if ex else None) if c]
        when = f" WHEN {' AND '.join(conds)}" if conds else ""
        conn.execute(f"CREATE TEMP TRIGGER IF NOT EXISTS relman_dirty_{table}_upd AFTER UPDATE{of} ON main.{table}"
                     f"{when} BEGIN {note % old} {note % new} END")
        conn.execute(f"CREATE TEMP TRIGGER IF NOT EXISTS relman_dirty_{table}_del AFTER DELETE ON main.{table}"
                     f"{w_old} BEGIN {note % old} END")


def _dirty_keys(db: Any) -> list[tuple[str, str]]:
    try:
        return [(r[0], r[1]) for r in db.execute(f"SELECT tbl, key FROM temp.{_DIRTY} ORDER BY tbl, key").fetchall()]
    except Exception:  # a connection without relman's triggers (nothing was noted)
        return []


def take_dirty(db: Any) -> dict[str, dict[str, Any]]:
    """The records of every row noted since the last event, and forget them (called by
    `integrity.commit_event` inside the write transaction)."""
    out: dict[str, dict[str, Any]] = {}
    keys = _dirty_keys(db)
    for table, raw in keys:
        if table not in TRACKED:
            continue
        key = canonical(json.loads(raw))
        row = _fetch(db, table, key)
        out.setdefault(table, {})[key] = record(table, row) if row is not None else None
    if keys:
        db.execute(f"DELETE FROM temp.{_DIRTY}")
    return out


# -- replaying and checking ---------------------------------------------------------------------
def committed_records(db: Any, only: set[tuple[str, str]] | None = None
                      ) -> dict[tuple[str, str], tuple[int, dict[str, Any] | None]]:
    """(table, key) -> (seq of the last event that committed it, its record or None=deleted)."""
    out: dict[tuple[str, str], tuple[int, dict[str, Any] | None]] = {}
    rows = db.execute("SELECT seq, json_extract(payload, '$.committed') FROM events"
                      " WHERE json_extract(payload, '$.committed') IS NOT NULL ORDER BY seq").fetchall()
    for seq, text in rows:
        try:
            committed = json.loads(text)
        except (TypeError, ValueError):
            continue
        if not isinstance(committed, dict):
            continue
        for table, recs in committed.items():
            if not isinstance(recs, dict):
                continue
            for key, rec in recs.items():
                if only is None or (table, key) in only:
                    out[(table, key)] = (int(seq), rec if isinstance(rec, dict) else None)
    return out


@dataclass
class RowProblem:
    table: str
    key: str
    what: str  # changed | uncommitted | deleted
    message: str

    def __str__(self) -> str:
        return self.message


def _label(db: Any, table: str, row: Mapping[str, Any] | None, key: str) -> str:
    """'metrics row [12] (tiny@1.0.0 quality/accuracy)': where a person can find it."""
    ident = f"{table} row {key}"
    if row is None:
        return ident
    hints: list[str] = []
    vid = row.get("version_id") or (row.get("child_id") if table == "lineage" else None) \
        or (row.get("id") if table == "versions" else None)
    if vid is not None:
        r = db.execute("SELECT m.name || '@' || v.version FROM versions v JOIN models m ON m.id = v.model_id"
                       " WHERE v.id = ?", [vid]).fetchone()
        if r:
            hints.append(r[0])
    for col in ("name", "path", "by", "to_phase", "kind", "revision"):
        if col in row and row[col] is not None:
            hints.append(f"{col}={row[col]}")
    return ident + (f" ({', '.join(str(h) for h in hints)})" if hints else "")


def verify_rows(db: Any, *, tolerant: bool = False) -> list[RowProblem]:
    """Compare every tracked row with what its last event committed.

    `tolerant` compares only the columns both sides have (used before re-baselining after a
    schema change, when new columns cannot have been committed yet)."""
    committed = committed_records(db)
    problems: list[RowProblem] = []
    seen: set[tuple[str, str]] = set()
    # before a re-baseline: a table no event ever committed is newly tracked (settings, when a
    # catalog from before issue 26 is first opened), not edited
    ever = {t for t, _ in committed}
    empty_log = db.execute("SELECT 1 FROM events LIMIT 1").fetchone() is None
    for table in tracked_tables(db):
        if tolerant and table not in ever:
            continue
        cur = db.execute(f"SELECT * FROM main.{table}{_where(table)}")
        cols = [d[0] for d in cur.description]
        for values in cur.fetchall():
            row = dict(zip(cols, values))
            key = row_key(table, row)
            seen.add((table, key))
            last = committed.get((table, key))
            if last is None and empty_log and table == "settings" and row.get("key") in FRESH_SETTINGS:
                continue  # a new catalog's own settings, committed by its first event
            if last is None:
                problems.append(RowProblem(table, key, "uncommitted",
                                           f"{_label(db, table, row, key)}: not committed by any audit event "
                                           "(inserted outside relman)"))
                continue
            seq, rec = last
            if rec is None:
                problems.append(RowProblem(table, key, "uncommitted",
                                           f"{_label(db, table, row, key)}: deleted by event {seq} but present "
                                           "again (inserted outside relman)"))
                continue
            if not tolerant and row_hash(table, row) == rec.get("h"):
                continue
            now = record(table, row)
            if tolerant:
                diff = [c for c, d in rec.get("c", {}).items() if c in now["c"] and now["c"][c] != d]
            else:
                old_c = rec.get("c", {})
                diff = sorted({c for c in set(old_c) | set(now["c"]) if old_c.get(c) != now["c"].get(c)})
            if diff or (not tolerant):
                problems.append(RowProblem(table, key, "changed",
                                           f"{_label(db, table, row, key)}: changed outside relman after event "
                                           f"{seq} (column{'s' if len(diff) != 1 else ''} "
                                           f"{', '.join(diff) or '?'})"))
    for (table, key), (seq, rec) in committed.items():
        if rec is not None and (table, key) not in seen and _exists(db, table):
            problems.append(RowProblem(table, key, "deleted",
                                       f"{table} row {key}: deleted outside relman (committed by event {seq})"))
    return problems


def baseline_problems(db: Any) -> list[str]:
    """Problems recorded by re-baselines: a forged row stays reported after an upgrade."""
    out = []
    accepted = db.execute("SELECT MAX(seq) FROM events WHERE kind = ?", [ACCEPT_EVENT]).fetchone()[0] or 0
    for seq, text in db.execute("SELECT seq, json_extract(payload, '$.problems') FROM events WHERE kind = ?"
                                " AND seq > ? ORDER BY seq", [BASELINE_EVENT, accepted]).fetchall():
        try:
            found = json.loads(text) if text else []
        except ValueError:
            found = []
        for p in found or []:
            out.append(f"found when re-baselining at event {seq}: {p}")
    return out


def committed_in(payload: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
    for table, recs in (payload.get("committed") or {}).items():
        for key in recs:
            yield table, key
