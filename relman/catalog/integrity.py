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
`commit_event` (the one way relman writes an event) takes the noted rows into the event it
writes (`rows.take_dirty`); rows a transaction changed without writing an event are committed
by one generic `state` event at its end (`commit_leftovers`), unless their content is
unchanged.

Layers (the `catalog-layers` contract in pyproject.toml): `catalog` > `staging` > `integrity`
(this module: committing events, baselines, checking and accepting the catalog's state) >
`anchor` (signed checkpoints) > `rows` (the tracked-row registry, hashing, triggers, replay) >
`events` (the hash chain) > `records` | `clock`. Nothing here imports `catalog.py`: the catalog
calls down, and what this module needs of it comes in as the `catalog` argument. The names of
`rows` are re-exported here (`integrity.TRACKED`, `integrity.verify_rows`, ...).

`TRACKED` (in `rows`) is the one registry: table name -> key columns. A branch that adds a table adds one
entry; a schema change of a tracked table is noticed (`fingerprint`) and re-baselined on the
next open, after checking the old rows against their records column by column. Settings are
tracked too (the fingerprint itself, the catalog's key, the executor's address...): a missing
fingerprint on a catalog that was tracked is a finding, never a fresh start (issue 26).
"""

from __future__ import annotations

import json
from typing import Any

from relman.catalog import anchor
from relman.catalog import events as audit
from relman.catalog.clock import current_user, utcnow
from relman.catalog.events import canonical
from relman.catalog.rows import (  # re-exported: callers read the registry and checks through integrity
    _DIRTY,
    _OPEN_JOB,
    ACCEPT_EVENT,
    BASELINE_EVENT,
    EXCLUDED_ROWS,
    FRESH_SETTINGS,
    HASHED_COLUMNS,
    STATE_EVENT,
    TRACKED,
    TRIGGER_WHEN,
    RowProblem,
    _dirty_keys,
    _exists,
    _fetch,
    all_records,
    baseline_problems,
    committed_in,
    committed_records,
    digest,
    fingerprint,
    install,
    project,
    record,
    row_hash,
    row_key,
    take_dirty,
    tracked_tables,
    verify_rows,
)

__all__ = [
    "ACCEPT_EVENT", "BASELINE_EVENT", "EXCLUDED_ROWS", "FRESH_SETTINGS", "HASHED_COLUMNS", "STATE_EVENT", "TRACKED",
    "TRIGGER_WHEN", "RowProblem", "_OPEN_JOB", "accept_state", "all_records", "baseline_problems", "baseline_state",
    "check_state", "commit_event", "commit_leftovers", "committed_in", "committed_records", "current_problems",
    "digest", "ensure_baseline", "fingerprint", "install", "project", "record", "require_intact", "row_hash",
    "row_key", "state_key", "take_dirty", "tracked_tables", "verify_rows",
]


def _merge_committed(payload: dict[str, Any], rows: dict[str, dict[str, Any]], *, keep_given: bool) -> dict[str, Any]:
    """`payload` with `rows` added to its `committed` records (a record the caller named itself
    wins when `keep_given`)."""
    payload = dict(payload)
    merged = {t: dict(v) for t, v in (payload.get("committed") or {}).items()}
    for table, recs in rows.items():
        into = merged.setdefault(table, {})
        for key, rec in recs.items():
            if keep_given:
                into.setdefault(key, rec)
            else:
                into[key] = rec
    payload["committed"] = merged
    return payload


def commit_event(db: Any, *, at: str, actor: str, kind: str, model: str | None, version: str | None,
                 payload: dict[str, Any]) -> int:
    """Append one audit event that commits the tracked rows this connection wrote since the
    last event; must run inside a write transaction. Returns its seq.

    The one way relman writes an event (the catalog, `relman.jobs.queue`, the release and app
    modules all call it): the noted rows' records land in `payload["committed"]`, and the first
    event of a catalog also commits the settings a new catalog wrote before it
    (`FRESH_SETTINGS`). The chain itself is `events.append_entry`."""
    dirty = take_dirty(db)
    if dirty:
        payload = _merge_committed(payload, dirty, keep_given=False)
    if audit.next_seq(db) == 1:
        fresh = {k: r for k, r in all_records(db.conn).get("settings", {}).items()
                 if json.loads(k)[0] in FRESH_SETTINGS}
        if fresh:
            payload = _merge_committed(payload, {"settings": fresh}, keep_given=True)
    return audit.append_entry(db, at=at, actor=actor, kind=kind, model=model, version=version, payload=payload)


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
    commit_event(catalog.db, at=utcnow(), actor=current_user(), kind=STATE_EVENT, model=None, version=None,
                 payload={"note": "rows written without their own event"})


def _tracking_evidence(catalog: Any) -> str | None:
    """Why a catalog without a baseline fingerprint is not a fresh start, or None: some event
    commits rows, a checkpoint exists, or this machine holds a key made for this catalog."""
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
            return  # a new, empty catalog: its first event commits these settings (commit_event)
        commit_event(catalog.db, at=utcnow(), actor=current_user(), kind=BASELINE_EVENT, model=None,
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


def check_state(catalog: Any) -> tuple[list[str], list[str]]:
    """Everything `verify` checks except blob contents: the hash chain, its anchor, and every
    tracked row against its record. (problems, notes); fast enough for every promotion."""
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


def accept_state(catalog: Any, *, who: str, why: str, key_name: str | None = None) -> dict[str, Any]:
    """After a person has looked at what `verify` found: commit every tracked row as it is now,
    with the problems and the reason on record (event `integrity-accept`), set aside checkpoints
    the chain no longer reaches (rows deleted, files moved to checkpoints/superseded/), and sign
    the new head. Needs a signing key (the catalog's, or `key_name`), so that without one nobody
    can launder an edit this way. Returns what was accepted."""
    import os

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
        commit_event(catalog.db, at=utcnow(), actor=who, kind=ACCEPT_EVENT, model=None, version=None,
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
