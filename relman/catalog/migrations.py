"""Versioned schema migrations (sqlite-utils `Migrations`), recorded in the database itself.

Each migration is a function of the `sqlite_utils.Database`, applied once, in order, each in
a transaction together with its record in `_sqlite_migrations`. Adding a migration = one new
decorated function at the end of this file; never edit one that has shipped, since old
catalogs are upgraded by replaying the migrations they have not seen.
"""

from __future__ import annotations

import sqlite_utils
from sqlite_utils import Migrations

migrations = Migrations("relman")


def _run_script(db: sqlite_utils.Database, script: str) -> None:
    """Statement by statement: `executescript` would COMMIT the caller's transaction."""
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


@migrations()
def m001_core_tables(db: sqlite_utils.Database) -> None:
    _run_script(
        db,
        """
        CREATE TABLE models (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            task TEXT,
            description TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL,
            created_by TEXT NOT NULL
        );
        CREATE TABLE versions (
            id INTEGER PRIMARY KEY,
            model_id INTEGER NOT NULL REFERENCES models(id),
            version TEXT NOT NULL,
            format TEXT NOT NULL,
            task TEXT,
            architecture TEXT,
            params INTEGER,
            dtype TEXT,
            size_bytes INTEGER NOT NULL DEFAULT 0,
            manifest_sha256 TEXT NOT NULL,
            recipe TEXT NOT NULL DEFAULT '{}',
            meta TEXT NOT NULL DEFAULT '{}',
            phase TEXT NOT NULL DEFAULT 'draft',
            canary_share REAL,
            created_at TEXT NOT NULL,
            created_by TEXT NOT NULL,
            UNIQUE (model_id, version)
        );
        CREATE TABLE lineage (
            child_id INTEGER NOT NULL REFERENCES versions(id),
            parent_id INTEGER NOT NULL REFERENCES versions(id),
            position INTEGER NOT NULL DEFAULT 0,
            weight REAL,
            relation TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (child_id, parent_id)
        );
        CREATE TABLE artifacts (
            version_id INTEGER NOT NULL REFERENCES versions(id),
            path TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            size INTEGER NOT NULL,
            PRIMARY KEY (version_id, path)
        );
        CREATE INDEX artifacts_sha ON artifacts(sha256);
        CREATE TABLE datasets (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            format TEXT NOT NULL,
            kind TEXT NOT NULL,
            columns TEXT NOT NULL DEFAULT '{}',
            labels TEXT NOT NULL DEFAULT '[]',
            n_rows INTEGER NOT NULL DEFAULT 0,
            sha256 TEXT NOT NULL,
            meta TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL,
            created_by TEXT NOT NULL
        );
        CREATE TABLE dataset_files (
            dataset_id INTEGER NOT NULL REFERENCES datasets(id),
            path TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            size INTEGER NOT NULL,
            PRIMARY KEY (dataset_id, path)
        );
        CREATE INDEX dataset_files_sha ON dataset_files(sha256);
        CREATE TABLE metrics (
            id INTEGER PRIMARY KEY,
            version_id INTEGER NOT NULL REFERENCES versions(id),
            suite TEXT NOT NULL,
            name TEXT NOT NULL,
            value REAL,
            context TEXT NOT NULL DEFAULT '{}',
            dataset_id INTEGER REFERENCES datasets(id),
            job_id INTEGER,
            created_at TEXT NOT NULL
        );
        CREATE INDEX metrics_version ON metrics(version_id, name);
        CREATE TABLE jobs (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            params TEXT NOT NULL DEFAULT '{}',
            status TEXT NOT NULL DEFAULT 'queued',
            progress REAL NOT NULL DEFAULT 0,
            message TEXT NOT NULL DEFAULT '',
            device TEXT NOT NULL DEFAULT 'auto',
            device_used TEXT,
            pid INTEGER,
            heartbeat_at TEXT,
            log_path TEXT,
            error TEXT,
            result TEXT,
            result_version_id INTEGER REFERENCES versions(id),
            cancel_requested INTEGER NOT NULL DEFAULT 0,
            attempts INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            created_by TEXT NOT NULL,
            started_at TEXT,
            finished_at TEXT
        );
        CREATE INDEX jobs_status ON jobs(status);
        CREATE TABLE job_points (
            job_id INTEGER NOT NULL REFERENCES jobs(id),
            series TEXT NOT NULL,
            step REAL NOT NULL,
            value REAL NOT NULL
        );
        CREATE INDEX job_points_job ON job_points(job_id, series);
        CREATE TABLE transitions (
            id INTEGER PRIMARY KEY,
            version_id INTEGER NOT NULL REFERENCES versions(id),
            from_phase TEXT NOT NULL,
            to_phase TEXT NOT NULL,
            gate_report TEXT NOT NULL DEFAULT '{}',
            override INTEGER NOT NULL DEFAULT 0,
            why TEXT NOT NULL DEFAULT '',
            who TEXT NOT NULL,
            at TEXT NOT NULL
        );
        CREATE INDEX transitions_version ON transitions(version_id);
        CREATE TABLE approvals (
            id INTEGER PRIMARY KEY,
            version_id INTEGER NOT NULL REFERENCES versions(id),
            to_phase TEXT NOT NULL,
            by TEXT NOT NULL,
            comment TEXT NOT NULL DEFAULT '',
            metrics_digest TEXT NOT NULL,
            at TEXT NOT NULL,
            UNIQUE (version_id, to_phase, by)
        );
        CREATE TABLE policies (
            id INTEGER PRIMARY KEY,
            model_id INTEGER NOT NULL REFERENCES models(id),
            revision INTEGER NOT NULL,
            body TEXT NOT NULL,
            created_at TEXT NOT NULL,
            created_by TEXT NOT NULL,
            UNIQUE (model_id, revision)
        );
        CREATE TABLE events (
            seq INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            kind TEXT NOT NULL,
            model TEXT,
            version TEXT,
            payload TEXT NOT NULL DEFAULT '{}',
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        );
        CREATE TABLE pending_blobs (
            owner TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (owner, sha256)
        );
        CREATE TABLE settings (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );
        """,
    )


def applied(db: sqlite_utils.Database) -> list[str]:
    return [m.name for m in migrations.applied(db)]


def migrate(db: sqlite_utils.Database, stop_before: str | None = None) -> list[str]:
    """Apply every pending migration (stopping before `stop_before`, for tests that build an
    old catalog). The caller holds the write lock, so two processes opening an old catalog at
    once do not both migrate it. Returns the names applied now."""
    before = set(applied(db))
    migrations.apply(db, stop_before=stop_before)
    return [name for name in applied(db) if name not in before]


@migrations()
def m002_job_parent(db: sqlite_utils.Database) -> None:
    """Jobs a job queues (e.g. evaluations of a compressed child) point at it, so `--wait`
    can follow them; the moment cancel was asked for lets any runner enforce the grace period."""
    _run_script(
        db,
        """
        ALTER TABLE jobs ADD COLUMN parent_job_id INTEGER REFERENCES jobs(id);
        ALTER TABLE jobs ADD COLUMN cancel_requested_at TEXT;
        CREATE INDEX jobs_parent ON jobs(parent_job_id);
        """,
    )


@migrations()
def m003_job_executor(db: sqlite_utils.Database) -> None:
    """Which executor ran a job: `local`, or `ray:<node-ip>/<node-id>` for a Ray task."""
    _run_script(db, "ALTER TABLE jobs ADD COLUMN executor TEXT;")


@migrations()
def m004_housekeeping(db: sqlite_utils.Database) -> None:
    """Deleting, archiving and tagging versions (issue 15).

    A deleted version keeps its `versions` row (lineage, transitions, metrics and the audit
    chain still point at it) and gets a `tombstones` row holding who/when/why and the file
    list its `artifacts` rows had; listings leave it out. An archived version keeps its
    artifact rows, its blobs live in `archives.folder` instead of the store. Tags are free
    labels beside phases; `model@tag` resolves when exactly one live version carries it."""
    _run_script(
        db,
        """
        CREATE TABLE tombstones (
            version_id INTEGER PRIMARY KEY REFERENCES versions(id),
            deleted_at TEXT NOT NULL,
            deleted_by TEXT NOT NULL,
            why TEXT NOT NULL,
            manifest_sha256 TEXT NOT NULL,
            size_bytes INTEGER NOT NULL,
            files TEXT NOT NULL DEFAULT '[]'
        );
        CREATE TABLE archives (
            version_id INTEGER PRIMARY KEY REFERENCES versions(id),
            folder TEXT NOT NULL,
            archived_at TEXT NOT NULL,
            archived_by TEXT NOT NULL
        );
        CREATE TABLE tags (
            version_id INTEGER NOT NULL REFERENCES versions(id),
            name TEXT NOT NULL,
            created_at TEXT NOT NULL,
            created_by TEXT NOT NULL,
            PRIMARY KEY (version_id, name)
        );
        CREATE INDEX tags_name ON tags(name);
        """,
    )


@migrations()
def m005_blob_checks(db: sqlite_utils.Database) -> None:
    """The last successful re-hash of each blob, keyed by its size and mtime, so views (the
    release board's gate badges) can say "verified" without hashing gigabytes again; the
    promotion itself still re-hashes (see relman.catalog.blobcheck). IF NOT EXISTS: catalogs
    made by a development build recorded this table under another migration name."""
    _run_script(
        db,
        """
        CREATE TABLE IF NOT EXISTS blob_checks (
            sha256 TEXT PRIMARY KEY,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            verified_at TEXT NOT NULL
        );
        """,
    )


@migrations()
def m006_evaluation_artifacts(db: sqlite_utils.Database) -> None:
    """Files an evaluation produces besides numbers (e.g. the per-example attributions of the
    explain suite): a content-addressed blob per row, referenced here so `verify` re-hashes it
    and cleaning never takes it for an orphan."""
    _run_script(
        db,
        """
        CREATE TABLE IF NOT EXISTS evaluation_artifacts (
            id INTEGER PRIMARY KEY,
            version_id INTEGER NOT NULL REFERENCES versions(id),
            job_id INTEGER REFERENCES jobs(id),
            dataset_id INTEGER REFERENCES datasets(id),
            suite TEXT NOT NULL,
            kind TEXT NOT NULL,
            method TEXT,
            sha256 TEXT NOT NULL,
            size INTEGER NOT NULL,
            meta TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL
        );
        CREATE INDEX IF NOT EXISTS evaluation_artifacts_version ON evaluation_artifacts(version_id, kind);
        CREATE INDEX IF NOT EXISTS evaluation_artifacts_sha ON evaluation_artifacts(sha256);
        """,
    )


@migrations()
def m007_checkpoints(db: sqlite_utils.Database) -> None:
    """Signed checkpoints of the audit chain's head (relman.catalog.anchor), and the Ed25519
    signature of an approval made with a person's key (relman.release.approvals). Rows
    themselves are committed through event payloads (relman.catalog.integrity)."""
    _run_script(
        db,
        """
        CREATE TABLE checkpoints (
            seq INTEGER NOT NULL,
            hash TEXT NOT NULL,
            at TEXT NOT NULL,
            key_id TEXT NOT NULL,
            doc TEXT NOT NULL
        );
        CREATE INDEX checkpoints_seq ON checkpoints(seq);
        ALTER TABLE approvals ADD COLUMN signature TEXT;
        """,
    )


@migrations()
def m008_job_causes(db: sqlite_utils.Database) -> None:
    """A failed or cancelled job's typed cause (relman.jobs.causes) and its evidence (JSON: exit
    signal, last heartbeat, peak RSS and the limit, node). Diagnostic, like `message`: the
    integrity chain commits a job's status and error, not these."""
    _run_script(db, "ALTER TABLE jobs ADD COLUMN cause TEXT; ALTER TABLE jobs ADD COLUMN cause_evidence TEXT;")


@migrations()
def m009_hooks(db: sqlite_utils.Database) -> None:
    """Automations on release events (relman.release.hooks): a program to run (`argv`, a JSON
    argument list, never a shell line) or a URL to POST to, per model (`model`) or for the whole
    catalog (NULL). Tracked rows (relman.catalog.integrity): hooks decide what runs."""
    _run_script(
        db,
        """
        CREATE TABLE IF NOT EXISTS hooks (
            id INTEGER PRIMARY KEY,
            event TEXT NOT NULL,
            model TEXT,
            to_phase TEXT,
            action TEXT NOT NULL CHECK (action IN ('run', 'post')),
            argv TEXT,
            url TEXT,
            allow_remote INTEGER NOT NULL DEFAULT 0,
            timeout_s REAL NOT NULL,
            created_at TEXT NOT NULL,
            created_by TEXT NOT NULL
        );
        CREATE INDEX IF NOT EXISTS hooks_event ON hooks(event, model);
        """,
    )


@migrations()
def m010_job_point_attempts(db: sqlite_utils.Database) -> None:
    """Which attempt of a job drew each live-curve point: a retried job starts its curves
    again, and the Jobs view draws the current attempt's only (it joined both before). Rows
    from before this migration have NULL (one attempt, or attempts nobody can tell apart)."""
    _run_script(db, "ALTER TABLE job_points ADD COLUMN attempt INTEGER;")
