"""Tamper-evident rows: every decision-relevant row is committed by an audit event.

What a release decision rests on (versions and their phase, metrics, approvals, transitions,
policies, artifacts, datasets, jobs' outcomes) lives in ordinary tables that a person with
`sqlite3` could edit. To make such an edit visible, each write of a tracked row happens in the
same transaction as an audit event whose payload names the row and its content hash
(`payload["committed"] = {table: {key: {"h": row hash, "c": {column: short digest}}}}`, or
`null` for a deleted row). `verify_rows` replays those records and compares them with the
tables: a row that differs from what its last event committed, a row no event committed, and a
committed row that is gone are each reported with the table, the row and the columns that
changed.

How rows get into events without every caller listing them: each connection `open_catalog`
makes installs TEMP triggers (`install`) that note the key of every inserted, updated or
deleted tracked row in a TEMP table. Temp triggers exist only on relman's own connections, so
an edit made with another tool is never noted, never committed, and shows up in `verify`.
`events.append` takes the noted rows into the event it writes (`take_dirty`); rows a
transaction changed without writing an event are committed by one generic `state` event at
its end (`commit_leftovers`), unless their content is unchanged.

`TRACKED` is the one registry: table name -> key columns. A branch that adds a table adds one
entry; a schema change of a tracked table is noticed (`fingerprint`) and re-baselined on the
next open, after checking the old rows against their records column by column. Settings are
tracked too (the fingerprint itself, the catalog's key, the executor's address...): a missing
fingerprint on a catalog that was tracked is a finding, never a fresh start (issue 26).
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
# commits them with every other row (`events.append`).
FRESH_SETTINGS = ("integrity_fingerprint", "catalog_id", "catalog_key")

STATE_EVENT = "state"
BASELINE_EVENT = "integrity-baseline"
_DIRTY = "relman_dirty"


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
    `events.append` inside the write transaction)."""
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


def commit_leftovers(catalog: Any) -> None:
    """At the end of a transaction: rows changed without an event get one `state` event, unless
    what is committed for them did not change (a worker claiming a queued job)."""
    keys = _dirty_keys(catalog.conn)
    if not keys:
        return
    last = committed_records(catalog.conn, only={(t, canonical(json.loads(k))) for t, k in keys})
    changed = False
    for table, raw in keys:
        key = canonical(json.loads(raw))
        row = _fetch(catalog.conn, table, key)
        now = record(table, row) if row is not None else None
        before = last.get((table, key))
        if (now["h"] if now else None) != (before[1]["h"] if before and before[1] else None):
            changed = True
            break
    if not changed:
        catalog.conn.execute(f"DELETE FROM temp.{_DIRTY}")
        return
    from relman.catalog import events as audit
    from relman.catalog.catalog import current_user, utcnow

    audit.append(catalog.db, at=utcnow(), actor=current_user(), kind=STATE_EVENT, model=None, version=None,
                 payload={"note": "rows written without their own event"})


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


def _tracking_evidence(catalog: Any) -> str | None:
    """Why a catalog without a baseline fingerprint is not a fresh start, or None: some event
    commits rows, a checkpoint exists, or this machine holds a key made for this catalog."""
    from relman.catalog import anchor

    conn = catalog.conn
    if conn.execute("SELECT 1 FROM events WHERE json_extract(payload, '$.committed') IS NOT NULL LIMIT 1").fetchone():
        return "its audit log commits rows"
    if _exists(conn, "checkpoints") and conn.execute("SELECT 1 FROM checkpoints LIMIT 1").fetchone():
        return "it has signed checkpoints"
    # a key made here for this folder, with rows in it: the log and checkpoints were removed
    # (an empty catalog re-created in a folder used before is a fresh start)
    if anchor.held(catalog) and any(conn.execute(f"SELECT 1 FROM main.{t} LIMIT 1").fetchone()
                                    for t in tracked_tables(conn) if t != "settings"):
        return "this machine holds its signing key and it has rows"
    return None


def ensure_baseline(catalog: Any) -> None:
    """After migrations: when the tracked tables' shape changed (or tracking is new), commit every
    row once more under the new shape, recording what did not match the old records.

    A missing fingerprint is a fresh start only for a catalog that was never tracked (no event
    commits rows, no checkpoint, no key of this machine's for it): on any other it was deleted
    outside relman, and re-baselining would commit whatever was edited with it as genuine. Then
    nothing is written here and `check_state` reports it (`relman audit accept` is the way back).
    A fresh catalog gets its signing key in the baseline's own transaction (`anchor.prepare_key`)."""
    from relman.catalog import anchor

    conn = catalog.conn
    fp = fingerprint(conn)
    if catalog.get_setting("integrity_fingerprint") == fp:
        return
    fresh = catalog.get_setting("integrity_fingerprint") is None
    if fresh and _tracking_evidence(catalog):
        return
    key = anchor.prepare_key(catalog) if fresh and not catalog.get_setting("catalog_key") else None
    with catalog.transaction():
        stored = catalog.get_setting("integrity_fingerprint")
        if stored == fp or (stored is None and not fresh):
            return
        problems = [str(p) for p in verify_rows(conn, tolerant=True)] if not fresh else []
        conn.execute("INSERT OR REPLACE INTO settings (key, value) VALUES ('integrity_fingerprint', ?)",
                     [json.dumps(fp)])
        if key is not None:
            anchor.record_key(catalog, *key)
        rows = all_records(conn)
        conn.execute(f"DELETE FROM temp.{_DIRTY}")
        if not problems and set(rows) <= {"settings"} and not conn.execute("SELECT 1 FROM events LIMIT 1").fetchone():
            return  # a new, empty catalog: its first event commits these settings (events.append)
        from relman.catalog import events as audit
        from relman.catalog.catalog import current_user, utcnow

        audit.append(catalog.db, at=utcnow(), actor=current_user(), kind=BASELINE_EVENT, model=None,
                     version=None, payload={"committed": rows, "problems": problems,
                                            "reason": "tracking started" if fresh else "schema changed"})


def baseline_state(catalog: Any) -> list[str]:
    """A baseline that ensure_baseline refused to redo (its fingerprint deleted or edited)."""
    stored = catalog.get_setting("integrity_fingerprint")
    if stored == fingerprint(catalog.conn):
        return []
    if stored is None:
        why = _tracking_evidence(catalog)
        if why is None:
            return []
        return [f"the integrity baseline (setting integrity_fingerprint) is missing, but {why}: it was deleted "
                "outside relman; nothing was re-baselined"]
    return ["the integrity baseline (setting integrity_fingerprint) does not match this catalog's tables "
            "and was not redone"]


def committed_in(payload: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
    for table, recs in (payload.get("committed") or {}).items():
        for key in recs:
            yield table, key


def check_state(catalog: Any) -> tuple[list[str], list[str]]:
    """Everything `verify` checks except blob contents: the hash chain, its anchor, and every
    tracked row against its record. (problems, notes); fast enough for every promotion."""
    from relman.catalog import anchor

    problems = [f"audit chain: {p}" for p in catalog.verify_audit()]
    anchored, notes = anchor.verify(catalog)
    problems += anchored
    problems += [str(p) for p in verify_rows(catalog.conn)]
    problems += baseline_problems(catalog.conn)
    problems += baseline_state(catalog)
    return problems, notes


def _state_key(catalog: Any) -> tuple[Any, ...]:
    """Changes whenever any connection commits to the database (data_version) or this one
    writes (total_changes), or the checkpoint files change: then the check runs again."""
    from relman.catalog import anchor

    d = anchor.checkpoint_dir(catalog)
    try:
        files = tuple(sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in d.glob("*.json")))
    except OSError:
        files = ()
    return (catalog.conn.execute("PRAGMA data_version").fetchone()[0], catalog.conn.total_changes, files)


def current_problems(catalog: Any) -> list[str]:
    """`check_state`'s problems, reused while nothing in the database or the checkpoint folder
    changed (`_state_key`): what the window's integrity banner asks on each catalog change and
    every refusal shares, so neither pays for the check twice."""
    key = _state_key(catalog)
    cached = getattr(catalog, "_intact_cache", None)
    if cached is not None and cached[0] == key:
        return list(cached[1])
    problems, _ = check_state(catalog)
    catalog._intact_cache = (key, problems)
    return list(problems)


def state_key(catalog: Any) -> tuple[Any, ...]:
    """Public face of `_state_key`: a poller compares it to see whether the check may differ."""
    return _state_key(catalog)


def require_intact(catalog: Any, action: str) -> None:
    """Refuse `action` (a promotion, a gate check, an export) on a catalog that fails verification.
    The result is reused while nothing in the database or the checkpoint folder changed (the
    board asks for every card's gates on each refresh)."""
    from relman.errors import IntegrityError

    problems = current_problems(catalog)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise IntegrityError(f"refusing to {action}: the catalog fails verification: {problems[0]}{more}; "
                             "run 'relman verify' for the full list")


ACCEPT_EVENT = "integrity-accept"


def accept_state(catalog: Any, *, who: str, why: str, key_name: str | None = None) -> dict[str, Any]:
    """After a person has looked at what `verify` found: commit every tracked row as it is now,
    with the problems and the reason on record (event `integrity-accept`), set aside checkpoints
    the chain no longer reaches (rows deleted, files moved to checkpoints/superseded/), and sign
    the new head. Needs a signing key (the catalog's, or `key_name`), so that without one nobody
    can launder an edit this way. Returns what was accepted."""
    import os

    from relman.catalog import anchor
    from relman.errors import RelmanError

    why = (why or "").strip()
    if not why:
        raise RelmanError("accepting the catalog's current state needs --why: say what was checked")
    private = None
    if key_name:
        from relman import keys

        private = keys.load_private(key_name)
    elif anchor._signer(catalog) is None:
        raise RelmanError("no signing key for this catalog here; accept with a person's key (--key NAME)")
    problems, _ = check_state(catalog)
    moved: list[str] = []
    with catalog.transaction():
        conn = catalog.conn
        conn.execute("INSERT OR REPLACE INTO settings (key, value) VALUES ('integrity_fingerprint', ?)",
                     [json.dumps(fingerprint(conn))])
        rows = all_records(conn)
        for (table, key), (_, rec) in committed_records(conn).items():  # rows deleted outside relman
            if rec is not None and key not in rows.get(table, {}) and _exists(conn, table):
                rows.setdefault(table, {})[key] = None
        hashes = dict(conn.execute("SELECT seq, hash FROM events").fetchall())
        stale = [(s, h) for s, h in conn.execute("SELECT seq, hash FROM checkpoints").fetchall() if hashes.get(s) != h]
        for s, h in stale:
            conn.execute("DELETE FROM checkpoints WHERE seq = ? AND hash = ?", [s, h])
        d = anchor.checkpoint_dir(catalog)
        for p in sorted(d.glob("*.json")) if d.is_dir() else []:
            doc = anchor._read_doc(p)
            if doc is None or hashes.get(int(doc["body"]["seq"])) != doc["body"].get("hash"):
                moved.append(p.name)
        conn.execute(f"DELETE FROM temp.{_DIRTY}")
        from relman.catalog import events as audit
        from relman.catalog.catalog import utcnow

        audit.append(catalog.db, at=utcnow(), actor=who, kind=ACCEPT_EVENT, model=None, version=None,
                     payload={"committed": rows, "problems": problems, "why": why,
                              "superseded_checkpoints": [{"seq": s, "hash": h} for s, h in stale] + moved})
        doc = anchor.sign_head(catalog, private=private, signer_name=key_name, note="accept", force=True)
    aside = d / "superseded"
    for name in moved:
        aside.mkdir(exist_ok=True)
        os.replace(d / name, aside / name)
    if doc is not None:
        anchor.write_file(catalog, doc, keep=True)
    return {"problems": problems, "superseded_checkpoints": len(stale) + len(moved)}
