"""A job's view of the catalog on a machine that does not hold it (Ray executor).

Remote tasks never open the catalog's SQLite file. Instead the runner ships a *snapshot*: the
schema and the rows of the tables a job reads (models, versions, lineage, artifacts,
datasets, metrics, settings, policies ... everything but the audit log and the job tables),
plus the content-addressed blobs the job needs. On the remote node the snapshot becomes an
in-memory SQLite database behind an ordinary `Catalog` whose blob store is the node's blob
cache, so the very same `run(params, ctx)` runs unchanged.

Writes are the catalog's public write methods (`add_version`, `add_metrics`); on the remote
side they run against the in-memory copy (so the job sees its own result, e.g. the new
version's id) and are *recorded* as intents, with the output files' bytes. The runner replays
the intents on the real catalog, each in its own transaction exactly as a local worker's
calls would, and maps the remote ids and refs to the real ones (another job may have
committed in the meantime, so the real child can get another id or patch number).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from relman.catalog import Catalog, VersionInfo

# Never shipped: the audit chain and job bookkeeping belong to the catalog's machine alone.
EXCLUDED_TABLES = frozenset({"events", "jobs", "job_points", "pending_blobs", "sqlite_sequence", "checkpoints"})
# Catalog methods a remote job may write through; anything else stays local (see remote kinds).
RECORDED_WRITES = ("add_version", "add_metrics")
# Parameter / result keys that hold version ids (remapped when replayed).
VERSION_ID_KEYS = ("version_id", "parent_version_id", "child_version_id")
VERSION_IDS_KEYS = ("version_ids", "parent_version_ids")


def take_snapshot(catalog: "Catalog") -> dict[str, Any]:
    """Schema + rows of every shipped table, read in one read transaction (a consistent view)."""
    conn = catalog.conn
    schema: list[str] = []
    tables: dict[str, dict[str, Any]] = {}
    conn.execute("BEGIN")
    try:
        for name, kind, sql in conn.execute(
                "SELECT name, type, sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%'"
                " ORDER BY CASE type WHEN 'table' THEN 0 ELSE 1 END, rowid"):
            if kind == "trigger":  # triggers guard the real catalog; the copy is thrown away
                continue
            schema.append(sql)
            if kind == "table" and name not in EXCLUDED_TABLES:
                cur = conn.execute(f'SELECT * FROM "{name}"')
                tables[name] = {"columns": [d[0] for d in cur.description], "rows": cur.fetchall()}
    finally:
        conn.execute("COMMIT")
    return {"schema": schema, "tables": tables}


def open_snapshot(snapshot: dict[str, Any], root: Path) -> "RecordingCatalog":
    """An in-memory catalog with the snapshot's rows, blobs from `root/objects` (the node cache)."""
    conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    for sql in snapshot["schema"]:
        try:
            conn.execute(sql)
        except sqlite3.OperationalError as e:  # e.g. an index on a table created twice
            if "already exists" not in str(e):
                raise
    for name, t in snapshot["tables"].items():
        if not t["rows"]:
            continue
        cols = ", ".join(f'"{c}"' for c in t["columns"])
        marks = ", ".join("?" for _ in t["columns"])
        conn.executemany(f'INSERT INTO "{name}" ({cols}) VALUES ({marks})', t["rows"])
    return RecordingCatalog(root, conn)


def _recording_catalog_class():
    from relman.catalog import Catalog

    class _RecordingCatalog(Catalog):
        """A `Catalog` over the in-memory snapshot that records its public writes."""

        def __init__(self, root: Path, conn: sqlite3.Connection) -> None:
            super().__init__(root, conn)
            self.intents: list[dict[str, Any]] = []

        def add_version(self, model: str, files: Any, **kwargs: Any) -> "VersionInfo":
            blobs = {str(rel).replace("\\", "/"): Path(src).read_bytes() for rel, src in dict(files).items()}
            v = super().add_version(model, files, **kwargs)
            self.intents.append({"op": "add_version", "model": model, "files": blobs,
                                 "kwargs": _plain_kwargs(kwargs), "remote_id": v.id, "remote_ref": v.ref})
            return v

        def add_metrics(self, version_id: int, metrics: Iterable[Any], **kwargs: Any) -> int:
            metrics = list(metrics)
            n = super().add_metrics(version_id, metrics, **kwargs)
            self.intents.append({"op": "add_metrics", "version_id": version_id, "metrics": metrics,
                                 "kwargs": _plain_kwargs(kwargs)})
            return n

    return _RecordingCatalog


def RecordingCatalog(root: Path, conn: sqlite3.Connection) -> Any:  # noqa: N802 (a factory)
    return _recording_catalog_class()(root, conn)


def _plain_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    out = dict(kwargs)
    out.pop("owner", None)  # the runner stages under the job's own owner tag
    return out


class IdMap:
    """Remote version ids / refs → the real ones, filled while intents are replayed."""

    def __init__(self) -> None:
        self.ids: dict[int, int] = {}
        self.refs: dict[str, str] = {}

    def vid(self, value: Any) -> Any:
        return self.ids.get(value, value) if isinstance(value, int) else value

    def remap(self, obj: Any) -> Any:
        """Replace remote ids under the known id keys, and remote refs anywhere, in JSON-like data."""
        if isinstance(obj, dict):
            out = {}
            for k, v in obj.items():
                if k in VERSION_ID_KEYS:
                    out[k] = self.vid(v)
                elif k in VERSION_IDS_KEYS and isinstance(v, list):
                    out[k] = [self.vid(x) for x in v]
                else:
                    out[k] = self.remap(v)
            return out
        if isinstance(obj, list):
            return [self.remap(x) for x in obj]
        if isinstance(obj, str):
            return self.refs.get(obj, obj)
        return obj


def replay(catalog: "Catalog", intents: list[dict[str, Any]], *, job_id: int, scratch: Path,
           ids: IdMap) -> None:
    """Apply a remote job's recorded writes to the real catalog, as a local worker would have."""
    for n, intent in enumerate(intents):
        if intent["op"] == "add_version":
            folder = Path(scratch) / f"out-{n}"
            files: dict[str, Path] = {}
            for rel, data in intent["files"].items():
                target = (folder / rel)
                if not target.resolve().is_relative_to(folder.resolve()):
                    from relman.errors import JobError

                    raise JobError(f"a remote job returned a file outside its folder: {rel!r}")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
                files[rel] = target
            kw = dict(intent["kwargs"])
            kw["parents"] = [(ids.vid(p), w) for p, w in kw.get("parents", ())]
            kw["job_id"] = job_id
            v = catalog.add_version(intent["model"], files, owner=f"job:{job_id}", **kw)
            ids.ids[intent["remote_id"]] = v.id
            ids.refs[intent["remote_ref"]] = v.ref
        elif intent["op"] == "add_metrics":
            kw = dict(intent["kwargs"])
            kw["job_id"] = job_id
            catalog.add_metrics(ids.vid(intent["version_id"]), intent["metrics"], **kw)
        else:  # pragma: no cover - only recorded ops are produced
            raise ValueError(f"unknown remote write {intent['op']!r}")

