"""The catalog: one folder with `catalog.db` (SQLite, WAL) and `objects/` (blob store).

`Catalog` is the only code that writes the database, besides `relman.jobs.queue` for the jobs
table. Every write that belongs together runs in one `transaction()` (BEGIN IMMEDIATE, so
concurrent writers queue instead of failing half-way); blobs a write creates are recorded in
`pending_blobs` before they appear, and are removed again if the write does not commit, so the
store never holds orphans (`relman.catalog.staging`).

This module is the top of the catalog's layers (the `catalog-layers` import-linter contract):
it calls `integrity` (rows committed by audit events), `anchor` (signed checkpoints) and
`events` (the hash chain), none of which imports it. The clock, the records it hands out and
blob staging live in their own modules; their names are re-exported here so callers that
import them from `relman.catalog.catalog` keep working.
"""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import sqlite_utils

from relman.catalog import anchor, integrity
from relman.catalog import events as audit
from relman.catalog import semver
from relman.catalog.clock import current_user, utcnow
from relman.catalog.migrations import migrate
from relman.catalog.records import (
    _LIVE,
    _VERSION_SELECT,
    PHASES,
    EvalArtifact,
    Metric,
    VersionInfo,
    manifest_sha,
    metric_key,
)
from relman.catalog.staging import BlobStaging, pid_alive
from relman.catalog.store import BlobStore
from relman.names import check_name
from relman.errors import (
    CatalogError,
    CatalogNotWritable,
    CorruptCatalog,
    DatasetError,
    DuplicateVersion,
    IntegrityError,
    NotFound,
    RelmanError,
)

__all__ = [  # the names callers import from here (re-exported from the lower modules)
    "PHASES", "BlobStaging", "Catalog", "EvalArtifact", "Metric", "VersionInfo", "current_user", "manifest_sha",
    "metric_key", "open_catalog", "pid_alive", "utcnow",
]


class Catalog:
    def __init__(self, root: Path, conn: sqlite3.Connection) -> None:
        self.root = root
        self.conn = conn
        self.db = sqlite_utils.Database(conn)
        self.store = BlobStore(root / "objects")
        # set by open_catalog once the schema is current: commit rows into events and sign
        # checkpoints at the end of each transaction (relman.catalog.integrity / anchor)
        self.tamper_evident = False
        self._checkpoint_wanted = False
        self._checkpoint_keep = False
        self._checkpoint_first = False  # the catalog's first key: sign a head no checkpoint anchored

    # -- plumbing ---------------------------------------------------------------------------
    @property
    def db_path(self) -> Path:
        return self.root / "catalog.db"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Catalog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite_utils.Database]:
        """One atomic unit. The outermost level takes the write lock up front (BEGIN
        IMMEDIATE); nested levels are savepoints."""
        if self.conn.in_transaction:
            with self.db.atomic():
                yield self.db
            return
        self.conn.execute("BEGIN IMMEDIATE")
        doc = None
        try:
            head0 = anchor.head_seq(self.conn) if self.tamper_evident else 0
            yield self.db
            if self.tamper_evident:
                integrity.commit_leftovers(self)
                if self._checkpoint_wanted or anchor.head_seq(self.conn) != head0:
                    doc = anchor.sign_head(self, after=head0, force=self._checkpoint_first)
            self.conn.execute("COMMIT")
        except BaseException as e:
            self._checkpoint_keep = self._checkpoint_wanted = self._checkpoint_first = False
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            if isinstance(e, sqlite3.OperationalError) and "full" in str(e):
                raise CatalogError(f"{self.db_path}: {e}; nothing was changed (free some space and retry)") from None
            raise
        if doc is not None:
            anchor.write_file(self, doc, keep=self._checkpoint_keep)
        self._checkpoint_keep = self._checkpoint_wanted = self._checkpoint_first = False

    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[dict[str, Any]]:
        return list(self.db.query(sql, params))

    def get_setting(self, key: str, default: Any = None) -> Any:
        row = self.conn.execute("SELECT value FROM settings WHERE key = ?", [key]).fetchone()
        return json.loads(row[0]) if row else default

    def set_setting(self, key: str, value: Any) -> None:
        with self.transaction():
            self.conn.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)",
                              [key, json.dumps(value)])

    def delete_setting(self, key: str) -> None:
        with self.transaction():
            self.conn.execute("DELETE FROM settings WHERE key = ?", [key])

    # -- audit ------------------------------------------------------------------------------
    def log_event(self, kind: str, payload: Mapping[str, Any] | None = None, *, model: str | None = None,
                  version: str | None = None, actor: str | None = None) -> int:
        with self.transaction():
            return integrity.commit_event(self.db, at=utcnow(), actor=actor or current_user(), kind=kind,
                                          model=model, version=version, payload=dict(payload or {}))

    def events(self, model: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM events"
        params: list[Any] = []
        if model:
            sql += " WHERE model = ?"
            params.append(model)
        sql += " ORDER BY seq DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        rows = self.query(sql, params)
        for r in rows:
            r["payload"] = json.loads(r["payload"])
        return rows[::-1]

    def verify_audit(self) -> list[audit.ChainProblem]:
        return audit.verify_chain(self.db)

    # -- models -----------------------------------------------------------------------------
    def models(self) -> list[dict[str, Any]]:
        return self.query(
            "SELECT m.*, COUNT(v.id) AS n_versions FROM models m LEFT JOIN versions v ON v.model_id = m.id"
            " AND NOT EXISTS (SELECT 1 FROM tombstones t WHERE t.version_id = v.id)"
            " GROUP BY m.id ORDER BY m.name"
        )

    def get_model(self, name: str) -> dict[str, Any]:
        rows = self.query("SELECT * FROM models WHERE name = ?", [name])
        if not rows:
            known = ", ".join(m["name"] for m in self.models()) or "none yet"
            raise NotFound(f"unknown model '{name}' (models in this catalog: {known})")
        return rows[0]

    def _ensure_model(self, name: str, task: str | None, actor: str) -> int:
        row = self.conn.execute("SELECT id FROM models WHERE name = ?", [name]).fetchone()
        if row:
            return int(row[0])
        check_name(name, "model name")
        cur = self.conn.execute(
            "INSERT INTO models (name, task, created_at, created_by) VALUES (?, ?, ?, ?)",
            [name, task, utcnow(), actor],
        )
        return int(cur.lastrowid)

    # -- versions ---------------------------------------------------------------------------
    def versions(self, model: str | None = None, *, include_deleted: bool = False) -> list[VersionInfo]:
        """Versions in semver order; deleted ones (tombstones) only with `include_deleted`."""
        where: list[str] = [] if include_deleted else [_LIVE]
        params: list[Any] = []
        if model:
            where.append("m.name = ?")
            params.append(model)
        sql = _VERSION_SELECT + (" WHERE " + " AND ".join(where) if where else "")
        rows = self.query(sql, params)
        rows.sort(key=lambda r: (r["model"], semver.sort_key(r["version"])))
        return [VersionInfo.from_row(r) for r in rows]

    def get_version(self, version_id: int) -> VersionInfo:
        rows = self.query(_VERSION_SELECT + " WHERE v.id = ?", [version_id])
        if not rows:
            raise NotFound(f"no version with id {version_id}")
        return VersionInfo.from_row(rows[0])

    def resolve(self, ref: str) -> VersionInfo:
        """`model`, `model@1.2.0`, `model@latest`, `model@<phase>` or `model@<tag>` → a live
        version (a tag resolves when exactly one live version of the model carries it)."""
        name, _, selector = ref.partition("@")
        selector = selector or "latest"
        self.get_model(name)
        versions = self.versions(name)
        if semver.is_semver(selector) and all(v.version != selector for v in versions):
            gone = [v for v in self.versions(name, include_deleted=True) if v.version == selector and v.deleted]
            if gone:
                t = self.tombstone(gone[0].id) or {}
                raise NotFound(f"{name}@{selector} was deleted on {str(t.get('deleted_at', '?'))[:19]} by "
                               f"{t.get('deleted_by', '?')} ({t.get('why', '')}); only its record is kept")
        if not versions:
            raise NotFound(f"model '{name}' has no versions")
        if selector == "latest":
            return versions[-1]
        if selector in PHASES:
            in_phase = [v for v in versions if v.phase == selector]
            if not in_phase:
                raise NotFound(f"model '{name}' has no version in phase '{selector}'")
            return max(in_phase, key=lambda v: v.created_at)
        if not semver.is_semver(selector):
            live = {v.id: v for v in versions}
            tagged = [live[r[0]] for r in self.conn.execute(
                "SELECT version_id FROM tags WHERE name = ? ORDER BY version_id", [selector]) if r[0] in live]
            if len(tagged) == 1:
                return tagged[0]
            if len(tagged) > 1:
                raise NotFound(f"tag '{selector}' is on {len(tagged)} versions of {name} "
                               f"({', '.join(v.version for v in tagged)}); name the version instead")
            raise NotFound(f"'{selector}' in '{ref}' is neither a version (X.Y.Z), 'latest', a phase "
                           f"({', '.join(PHASES)}) nor a tag of {name}")
        for v in versions:
            if v.version == selector:
                return v
        known = ", ".join(v.version for v in versions)
        raise NotFound(f"model '{name}' has no version {selector} (it has {known})")

    def tombstone(self, version_id: int) -> dict[str, Any] | None:
        """The deletion record of a version (None while it is live)."""
        rows = self.query("SELECT * FROM tombstones WHERE version_id = ?", [version_id])
        if not rows:
            return None
        rows[0]["files"] = json.loads(rows[0]["files"])
        return rows[0]

    def tags(self, version_id: int) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT name FROM tags WHERE version_id = ? ORDER BY name",
                                                [version_id])]

    def add_tag(self, version_id: int, name: str, *, actor: str, at: str | None = None) -> bool:
        """Put tag `name` on a version (False when it has it already). The caller checks the
        name and writes the audit event in the same transaction (relman.app.tags)."""
        with self.transaction():
            if self.conn.execute("SELECT 1 FROM tags WHERE version_id = ? AND name = ?", [version_id, name]).fetchone():
                return False
            self.conn.execute("INSERT INTO tags (version_id, name, created_at, created_by) VALUES (?, ?, ?, ?)",
                              [version_id, name, at or utcnow(), actor])
        return True

    def remove_tag(self, version_id: int, name: str) -> bool:
        """Take tag `name` off a version (False when it did not have it)."""
        with self.transaction():
            cur = self.conn.execute("DELETE FROM tags WHERE version_id = ? AND name = ?", [version_id, name])
        return bool(cur.rowcount)

    def artifacts(self, version_id: int) -> list[dict[str, Any]]:
        return self.query("SELECT path, sha256, size FROM artifacts WHERE version_id = ? ORDER BY path",
                          [version_id])

    def parents(self, version_id: int) -> list[dict[str, Any]]:
        return self.query(
            "SELECT l.parent_id, l.weight, l.relation, m.name AS model, v.version FROM lineage l"
            " JOIN versions v ON v.id = l.parent_id JOIN models m ON m.id = v.model_id"
            " WHERE l.child_id = ? ORDER BY l.position", [version_id])

    def children(self, version_id: int) -> list[dict[str, Any]]:
        return self.query(
            "SELECT l.child_id, l.relation, m.name AS model, v.version FROM lineage l"
            " JOIN versions v ON v.id = l.child_id JOIN models m ON m.id = v.model_id"
            " WHERE l.parent_id = ? ORDER BY v.id", [version_id])

    def lineage_edges(self) -> list[dict[str, Any]]:
        return self.query("SELECT child_id, parent_id, weight, relation FROM lineage ORDER BY child_id, position")

    def add_version(
        self,
        model: str,
        files: Mapping[str, Path],
        *,
        format: str,
        version: str | None = None,
        task: str | None = None,
        architecture: str | None = None,
        params: int | None = None,
        dtype: str | None = None,
        recipe: Mapping[str, Any] | None = None,
        meta: Mapping[str, Any] | None = None,
        parents: Sequence[tuple[int, float | None]] = (),
        relation: str = "",
        metrics: Iterable[Metric] = (),
        actor: str | None = None,
        owner: str | None = None,
        event_kind: str = "import",
        job_id: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> VersionInfo:
        """Store `files` (relative path → local file) as a new version, all or nothing.

        The version string is checked or chosen (imports bump the minor of the highest version,
        derived versions bump the patch next to their first parent). Blobs, rows for the
        version, its artifacts, lineage, metrics and the audit event commit together.
        `progress(bytes stored, bytes in all)` follows the copy into the store."""
        actor = actor or current_user()
        if not files:
            raise RelmanError("a version needs at least one file")
        check_name(model, "model name")
        if version is not None:
            semver.parse(version)
        owner = owner or f"proc:{os.getpid()}"
        with self.staged_blobs(owner) as stage:
            stored = stage.put_all(files, progress)
            total = sum(size for _, size in stored.values())
            msha = manifest_sha({k: v[0] for k, v in stored.items()})
            with self.transaction():
                model_id = self._ensure_model(model, task, actor)
                existing = [r[0] for r in self.conn.execute(
                    "SELECT version FROM versions WHERE model_id = ?", [model_id])]
                if version is None:
                    if parents:
                        pv = self.get_version(parents[0][0])
                        base = pv.version if pv.model == model else "1.0.0"
                        version = semver.next_derived_version(base, existing) if existing else "1.0.0"
                    else:
                        version = semver.next_import_version(existing)
                elif version in existing:
                    raise DuplicateVersion(f"model '{model}' already has version {version}; "
                                           "choose another --version or leave it out to bump automatically")
                cur = self.conn.execute(
                    "INSERT INTO versions (model_id, version, format, task, architecture, params, dtype,"
                    " size_bytes, manifest_sha256, recipe, meta, created_at, created_by)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [model_id, version, format, task, architecture, params, dtype, total, msha,
                     json.dumps(dict(recipe or {}), default=str), json.dumps(dict(meta or {}), default=str),
                     utcnow(), actor],
                )
                vid = int(cur.lastrowid)
                self.conn.executemany(
                    "INSERT INTO artifacts (version_id, path, sha256, size) VALUES (?, ?, ?, ?)",
                    [(vid, rel, sha, size) for rel, (sha, size) in stored.items()],
                )
                for pos, (pid, weight) in enumerate(parents):
                    self.get_version(pid)
                    self.conn.execute(
                        "INSERT INTO lineage (child_id, parent_id, position, weight, relation) VALUES (?, ?, ?, ?, ?)",
                        [vid, pid, pos, weight, relation],
                    )
                self._insert_metrics(vid, metrics, job_id)
                if job_id is not None:  # the job's result lands in the same transaction
                    self.conn.execute("UPDATE jobs SET result_version_id = ? WHERE id = ?", [vid, job_id])
                integrity.commit_event(self.db, at=utcnow(), actor=actor, kind=event_kind, model=model, version=version,
                                       payload={"format": format, "task": task, "size_bytes": total, "manifest_sha256": msha,
                                                "parents": [self.get_version(p).ref for p, _ in parents],
                                                "recipe": dict(recipe or {}), "job": job_id})
                stage.commit()
        return self.get_version(vid)

    # -- metrics ----------------------------------------------------------------------------
    def _insert_metrics(self, version_id: int, metrics: Iterable[Metric], job_id: int | None) -> int:
        now = utcnow()
        rows = [(version_id, m.suite, m.name, None if m.value is None else float(m.value),
                 json.dumps(dict(m.context), default=str), m.dataset_id, job_id, now) for m in metrics]
        self.conn.executemany(
            "INSERT INTO metrics (version_id, suite, name, value, context, dataset_id, job_id, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        return len(rows)

    def add_metrics(self, version_id: int, metrics: Iterable[Metric], *, job_id: int | None = None,
                    actor: str | None = None) -> int:
        """Store an evaluation's metrics in one transaction, with its audit event."""
        metrics = list(metrics)
        v = self.get_version(version_id)
        with self.transaction():
            n = self._insert_metrics(version_id, metrics, job_id)
            integrity.commit_event(self.db, at=utcnow(), actor=actor or current_user(), kind="metrics", model=v.model,
                                   version=v.version, payload={"job": job_id, "suites": sorted({m.suite for m in metrics}),
                                                               "count": n})
        return n

    def add_evaluation(self, version_id: int, metrics: Iterable[Metric], artifacts: Sequence[EvalArtifact] = (), *,
                       job_id: int | None = None, actor: str | None = None, owner: str | None = None) -> int:
        """An evaluation's metrics and its artifacts (blobs + rows + audit events) in one
        transaction: all land, or nothing does (a blob this call added is removed again)."""
        metrics = list(metrics)
        artifacts = list(artifacts)
        if not artifacts:
            return self.add_metrics(version_id, metrics, job_id=job_id, actor=actor)
        actor = actor or current_user()
        with self.staged_blobs(owner or f"proc:{os.getpid()}") as stage:
            stored = [(a, stage.put(a.path)) for a in artifacts]
            with self.transaction():
                n = self.add_metrics(version_id, metrics, job_id=job_id, actor=actor) if metrics else 0
                now = utcnow()
                for a, (sha, size) in stored:
                    v = self.get_version(a.version_id)
                    self.conn.execute(
                        "INSERT INTO evaluation_artifacts (version_id, job_id, dataset_id, suite, kind, method, sha256,"
                        " size, meta, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [a.version_id, job_id, a.dataset_id, a.suite, a.kind, a.method, sha, size,
                         json.dumps(dict(a.meta), default=str), now])
                    integrity.commit_event(self.db, at=now, actor=actor, kind="evaluation-artifact", model=v.model,
                                           version=v.version, payload={"job": job_id, "suite": a.suite, "kind": a.kind,
                                                                       "method": a.method, "sha256": sha, "size": size})
                stage.commit()
        return n

    def evaluation_artifacts(self, version_id: int, kind: str | None = None) -> list[dict[str, Any]]:
        """A version's evaluation artifacts, oldest first (meta decoded)."""
        sql = ("SELECT a.*, d.name AS dataset FROM evaluation_artifacts a LEFT JOIN datasets d ON d.id = a.dataset_id"
               " WHERE a.version_id = ?")
        params: list[Any] = [version_id]
        if kind:
            sql += " AND a.kind = ?"
            params.append(kind)
        rows = self.query(sql + " ORDER BY a.id", params)
        for r in rows:
            r["meta"] = json.loads(r["meta"] or "{}")
        return rows

    def read_blob(self, sha: str) -> bytes:
        """The bytes of a stored blob, re-hashed: a changed or missing file is an IntegrityError."""
        import hashlib

        path = self.store.path(sha)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise IntegrityError(f"blob {sha[:12]} is missing from {self.store.root}; run 'relman verify'") from None
        if hashlib.sha256(data).hexdigest() != sha:
            raise IntegrityError(f"blob {sha[:12]} ({path}) does not match its hash; run 'relman verify'")
        return data

    def metrics(self, version_id: int, latest: bool = True) -> list[dict[str, Any]]:
        """A version's metrics, oldest first. Metrics are append-only: a re-evaluation adds rows
        and never overwrites. With `latest`, only the current measurement of each (suite, name,
        dataset, conditions) — conditions being the device it ran on — sorted by suite and name.
        Each row has `measured_at` (= created_at) and its decoded `context`."""
        rows = self.query(
            "SELECT m.*, d.name AS dataset FROM metrics m LEFT JOIN datasets d ON d.id = m.dataset_id"
            " WHERE m.version_id = ? ORDER BY m.id", [version_id])
        for r in rows:
            r["context"] = json.loads(r["context"])
            r["measured_at"] = r["created_at"]
        if latest:
            newest: dict[tuple[Any, ...], dict[str, Any]] = {}
            for r in rows:
                newest[metric_key(r)] = r
            rows = sorted(newest.values(), key=lambda r: (r["suite"], r["name"], r["id"]))
        return rows

    def metric_values(self, version_id: int) -> dict[str, float]:
        """Newest value of each metric name (across suites) — what gates and plots read."""
        out: dict[str, float] = {}
        for r in sorted(self.metrics(version_id), key=lambda r: r["id"]):
            if r["value"] is not None:
                out[r["name"]] = r["value"]
        return out

    # -- jobs (rows written by relman.jobs.queue; read here where a lower layer needs them) ---
    def running_job_ids(self, *, exclude: int | None = None) -> list[int]:
        """Ids of the jobs running now, oldest first, but `exclude` (the asking job): what the
        metric suites record as the conditions a figure was measured under."""
        return [int(r[0]) for r in self.conn.execute(
            "SELECT id FROM jobs WHERE status = 'running' AND id IS NOT ? ORDER BY id", [exclude])]

    # -- blobs ------------------------------------------------------------------------------
    @contextmanager
    def staged_blobs(self, owner: str) -> Iterator[BlobStaging]:
        stage = BlobStaging(self, owner)
        try:
            yield stage
        except BaseException:
            stage.rollback()
            raise

    def referenced_shas(self) -> set[str]:
        """Blobs committed rows need in the store: live (not archived) versions' artifacts,
        datasets and the other sources in `relman.catalog.refs`, pending writes aside."""
        from relman.catalog import refs

        return refs.live_shas(self.conn, kinds_excluded=("pending",))

    def release_pending(self, owner: str) -> list[str]:
        """Drop the blobs `owner` created that no committed row references. Used when a write
        fails, and by the job runner for a worker that died before its final commit. A blob
        anything else needs (see `relman.catalog.refs`) stays."""
        from relman.catalog import refs

        removed = []
        with self.transaction():
            shas = [r[0] for r in self.conn.execute("SELECT sha256 FROM pending_blobs WHERE owner = ?", [owner])]
            needed = refs.live_shas(self.conn, exclude=[("pending", owner)]) if shas else set()
            for sha in shas:
                if sha not in needed:
                    self.store.remove(sha)
                    removed.append(sha)
            self.conn.execute("DELETE FROM pending_blobs WHERE owner = ?", [owner])
        return removed

    def clean_stale(self) -> dict[str, int]:
        """Remove what dead processes left: pending blobs of dead importers or finished jobs,
        and temporary files of writers that are gone."""
        owners = [r[0] for r in self.conn.execute("SELECT DISTINCT owner FROM pending_blobs")]
        n_blobs = 0
        for owner in owners:
            kind, _, ident = owner.partition(":")
            dead = False
            if kind == "proc" and ident.isdigit():
                dead = not pid_alive(int(ident)) and int(ident) != os.getpid()
            elif kind == "job" and ident.isdigit():
                row = self.conn.execute("SELECT status FROM jobs WHERE id = ?", [int(ident)]).fetchone()
                dead = row is None or row[0] in ("failed", "cancelled", "succeeded")
            if dead:
                n_blobs += len(self.release_pending(owner))
        n_tmp = 0
        for f in self.store.stale_temp_files(lambda pid: pid == os.getpid() or pid_alive(pid)):
            f.unlink(missing_ok=True)
            n_tmp += 1
        return {"blobs": n_blobs, "temp_files": n_tmp}

    def orphan_blobs(self) -> list[str]:
        """Blobs in the store nothing live needs: what `relman gc` would remove."""
        from relman.catalog import refs

        used = refs.live_shas(self.conn)
        return [sha for sha in self.store.all_shas() if sha not in used]

    def verify_store(self) -> list[str]:
        """Re-hash every referenced blob; one line per missing or changed file. Archived
        versions are checked by `relman restore`, whose folder may be offline now."""
        problems = []
        rows = self.query(
            "SELECT a.sha256, a.path, m.name || '@' || v.version AS owner FROM artifacts a"
            " JOIN versions v ON v.id = a.version_id JOIN models m ON m.id = v.model_id"
            " WHERE NOT EXISTS (SELECT 1 FROM archives x WHERE x.version_id = v.id)"
            " UNION ALL SELECT f.sha256, f.path, 'dataset ' || d.name FROM dataset_files f"
            " JOIN datasets d ON d.id = f.dataset_id"
            " UNION ALL SELECT e.sha256, e.suite || ' ' || e.kind, 'evaluation of ' || m.name || '@' || v.version"
            " FROM evaluation_artifacts e JOIN versions v ON v.id = e.version_id JOIN models m ON m.id = v.model_id")
        checked: dict[str, str | None] = {}
        for r in rows:
            sha = r["sha256"]
            if sha not in checked:
                checked[sha] = self.store.verify(sha)
            if checked[sha]:
                problems.append(f"{r['owner']}: {r['path']} ({self.store.path(sha)}): {checked[sha]}")
        return problems

    def materialize(self, version_id: int, dest: Path) -> Path:
        """Lay a version's files out under `dest` (hard links where possible)."""
        dest = Path(dest)
        v = self.get_version(version_id)
        if v.deleted:
            raise NotFound(f"{v.ref} was deleted; only its record is kept")
        if v.archived_to:
            raise NotFound(f"{v.ref} is archived in {v.archived_to}; run 'relman restore {v.ref}' first")
        dest.mkdir(parents=True, exist_ok=True)
        for a in self.artifacts(version_id):
            target = dest / a["path"]
            if not target.resolve().is_relative_to(dest.resolve()):
                raise RelmanError(f"artifact path '{a['path']}' points outside the target folder")
            if not self.store.has(a["sha256"]):
                raise IntegrityError(f"the blob of {a['path']} (version id {version_id}) is missing from "
                                     f"{self.store.root}; run 'relman verify'")
            self.store.link_or_copy(a["sha256"], target)
        return dest

    # -- datasets (rows written here; reading and checks live in relman/app/datasets.py) ---
    def add_dataset(self, name: str, files: Mapping[str, Path], *, format: str, kind: str,
                    columns: Mapping[str, Any], labels: Sequence[str], n_rows: int,
                    meta: Mapping[str, Any] | None = None, actor: str | None = None,
                    owner: str | None = None, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        """Store a dataset's files (relative path → local file) and its row, all or nothing,
        like `add_version`: blobs staged, then rows + audit event in one transaction. The
        dataset's sha256 is the manifest hash of its (path, blob sha) list. `progress` as in
        `add_version`."""
        actor = actor or current_user()
        check_name(name, "dataset name")
        if not files:
            raise RelmanError("a dataset needs at least one file")
        owner = owner or f"proc:{os.getpid()}"
        with self.staged_blobs(owner) as stage:
            stored = stage.put_all(files, progress)
            dsha = manifest_sha({k: v[0] for k, v in stored.items()})
            with self.transaction():
                if self.conn.execute("SELECT 1 FROM datasets WHERE name = ?", [name]).fetchone():
                    raise DatasetError(f"dataset '{name}' already exists; choose another --name")
                cur = self.conn.execute(
                    "INSERT INTO datasets (name, format, kind, columns, labels, n_rows, sha256, meta, created_at,"
                    " created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [name, format, kind, json.dumps(dict(columns), default=str), json.dumps(list(labels)),
                     int(n_rows), dsha, json.dumps(dict(meta or {}), default=str), utcnow(), actor])
                did = int(cur.lastrowid)
                self.conn.executemany(
                    "INSERT INTO dataset_files (dataset_id, path, sha256, size) VALUES (?, ?, ?, ?)",
                    [(did, rel, sha, size) for rel, (sha, size) in stored.items()])
                integrity.commit_event(self.db, at=utcnow(), actor=actor, kind="dataset-registered", model=None, version=None,
                                       payload={"dataset": name, "format": format, "kind": kind, "n_rows": int(n_rows),
                                                "sha256": dsha, "files": len(stored)})
                stage.commit()
        return self.query("SELECT * FROM datasets WHERE id = ?", [did])[0]


def _free_bytes(root: Path) -> str:
    import shutil

    try:
        return f"{shutil.disk_usage(root).free:,} bytes"
    except OSError:
        return "unknown space"


def _check_writable(root: Path) -> None:
    """Write and remove a probe file. Its name is unique per call: two threads of one process
    opening the catalog at once (the window and a view's loader thread) once shared a
    pid-named probe, and one thread's unlink made the other report an unwritable catalog."""
    import uuid

    probe = root / f".write-test-{os.getpid()}-{uuid.uuid4().hex}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise CatalogNotWritable(f"catalog folder {root} is not writable ({e.strerror or e})") from None


def open_catalog(path: Path | str | None = None, *, create: bool = True) -> Catalog:
    """Open (creating and migrating as needed) the catalog folder at `path`."""
    from relman.catalog.location import resolve_catalog_path

    root = resolve_catalog_path(path)
    db_path = root / "catalog.db"
    if not db_path.exists():
        if not create:
            raise NotFound(f"no catalog at {root} (run 'relman init' first)")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CatalogNotWritable(f"cannot create catalog folder {root} ({e.strerror or e})") from None
    elif not root.is_dir():
        raise CorruptCatalog(f"{root} is not a folder")
    _check_writable(root)
    for sub in ("objects", "logs", "tmp"):
        (root / sub).mkdir(exist_ok=True)
    conn = sqlite3.connect(db_path, timeout=60, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA busy_timeout = 60000")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        catalog = Catalog(root, conn)
        needs = _needs_migration(catalog)
        if needs:
            with catalog.transaction():
                migrate(catalog.db)
        integrity.install(conn)
        catalog.tamper_evident = True
        integrity.ensure_baseline(catalog)  # a fresh catalog gets its key with its baseline
        anchor.ensure_key(catalog)
    except sqlite3.DatabaseError as e:
        conn.close()
        if isinstance(e, sqlite3.OperationalError) and ("full" in str(e) or "disk I/O" in str(e)):
            free = _free_bytes(root)
            raise CatalogError(f"{db_path}: {e} ({free} free on its disk); the catalog is intact, free some space "
                               "and retry") from None
        raise CorruptCatalog(f"{db_path} is not a usable SQLite catalog ({e})") from None
    if mode.lower() != "wal":  # e.g. a network file system that refuses WAL
        catalog.conn.execute("PRAGMA journal_mode = DELETE")
    return catalog


def _needs_migration(catalog: Catalog) -> bool:
    from relman.catalog.migrations import migrations

    return bool(migrations.pending(catalog.db))
