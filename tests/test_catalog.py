"""The catalog: migrations, blob store, versions, refs, audit chain, staged blobs."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from relman.catalog import Metric, open_catalog
from relman.catalog import semver
from relman.catalog.migrations import applied, migrate, migrations
from relman.errors import CorruptCatalog, DuplicateVersion, NotFound, RelmanError


def _file(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_open_creates_folder_wal_and_records_migrations(catalog_path: Path) -> None:
    cat = open_catalog(catalog_path)
    assert (catalog_path / "catalog.db").is_file()
    assert (catalog_path / "objects").is_dir()
    assert cat.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert applied(cat.db) == [m.name for m in migrations._migrations]
    assert {"models", "versions", "lineage", "artifacts", "metrics", "jobs", "transitions", "events"} <= set(
        cat.db.table_names())


def test_older_catalog_is_migrated_on_open_keeping_its_rows(tmp_path: Path) -> None:
    import sqlite_utils

    root = tmp_path / "old"
    root.mkdir()
    db = sqlite_utils.Database(root / "catalog.db")
    first = migrations._migrations[0].name
    later = [m.name for m in migrations._migrations[1:]]
    if later:
        migrate(db, stop_before=later[0])
    else:  # a catalog from before any migration ran: an empty database file
        pass
    if first in applied(db):
        db.execute("INSERT INTO models (name, created_at, created_by) VALUES ('old', 'then', 'someone')")
    db.conn.commit()
    db.close()
    cat = open_catalog(root)
    assert applied(cat.db) == [m.name for m in migrations._migrations]
    if later:
        assert [m["name"] for m in cat.models()] == ["old"]


def test_not_a_sqlite_file_is_refused_and_left_alone(catalog_path: Path) -> None:
    catalog_path.mkdir()
    junk = b"this is not a database, just some text" * 100
    (catalog_path / "catalog.db").write_bytes(junk)
    with pytest.raises(CorruptCatalog, match="catalog.db is not a usable SQLite catalog"):
        open_catalog(catalog_path)
    assert (catalog_path / "catalog.db").read_bytes() == junk


def test_same_bytes_are_stored_once(catalog, tmp_path: Path) -> None:
    f = _file(tmp_path, "w.bin", b"x" * 1000)
    a = catalog.add_version("m", {"w.bin": f}, format="torch")
    b = catalog.add_version("m", {"weights/w.bin": f}, format="torch")
    assert a.version == "1.0.0" and b.version == "1.1.0"
    assert len(list(catalog.store.all_shas())) == 1
    assert not any(catalog.store.tmp.iterdir())
    assert catalog.artifacts(b.id)[0]["path"] == "weights/w.bin"


def test_blobs_are_read_only_and_verify_detects_a_flipped_byte(catalog, tmp_path: Path) -> None:
    f = _file(tmp_path, "w.bin", bytes(range(256)) * 10)
    v = catalog.add_version("m", {"w.bin": f}, format="torch")
    blob = catalog.store.path(catalog.artifacts(v.id)[0]["sha256"])
    assert not os.access(blob, os.W_OK) or os.geteuid() == 0
    assert catalog.verify_store() == []
    os.chmod(blob, 0o644)
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF
    blob.write_bytes(bytes(data))
    problems = catalog.verify_store()
    assert len(problems) == 1 and "m@1.0.0: w.bin" in problems[0] and "content changed" in problems[0]
    blob.unlink()
    assert "missing" in catalog.verify_store()[0]


def test_versions_refs_and_semver(catalog, tmp_path: Path) -> None:
    f = _file(tmp_path, "w.bin", b"1")
    v1 = catalog.add_version("m", {"w.bin": f}, format="torch")
    v2 = catalog.add_version("m", {"w.bin": _file(tmp_path, "w2.bin", b"2")}, format="torch",
                             parents=[(v1.id, None)], relation="prune")
    v3 = catalog.add_version("m", {"w.bin": _file(tmp_path, "w3.bin", b"3")}, format="torch", version="2.0.0")
    assert (v1.version, v2.version, v3.version) == ("1.0.0", "1.0.1", "2.0.0")
    assert catalog.resolve("m").version == "2.0.0"
    assert catalog.resolve("m@latest").version == "2.0.0"
    assert catalog.resolve("m@1.0.1").id == v2.id
    catalog.conn.execute("UPDATE versions SET phase = 'production' WHERE id = ?", [v1.id])
    assert catalog.resolve("m@production").id == v1.id
    assert catalog.parents(v2.id)[0]["version"] == "1.0.0"
    assert catalog.children(v1.id)[0]["relation"] == "prune"
    with pytest.raises(NotFound, match="has no version 9.9.9"):
        catalog.resolve("m@9.9.9")
    with pytest.raises(NotFound, match="no version in phase 'staging'"):
        catalog.resolve("m@staging")
    with pytest.raises(NotFound, match="unknown model 'nope'"):
        catalog.resolve("nope@latest")
    with pytest.raises(NotFound, match="neither a version"):
        catalog.resolve("m@banana")


def test_semver_ordering_and_bumps() -> None:
    assert semver.next_import_version([]) == "1.0.0"
    assert semver.next_import_version(["1.0.0", "1.10.0", "1.2.0"]) == "1.11.0"
    assert semver.next_derived_version("1.2.0", ["1.2.0", "1.2.3", "1.3.0"]) == "1.2.4"
    assert sorted(["1.0.0", "1.0.0-rc1", "0.9.9"], key=semver.sort_key) == ["0.9.9", "1.0.0-rc1", "1.0.0"]
    with pytest.raises(RelmanError, match="not a semantic version"):
        semver.parse("1.0")


def test_duplicate_version_leaves_no_row_and_no_orphan_blob(catalog, tmp_path: Path) -> None:
    catalog.add_version("m", {"w.bin": _file(tmp_path, "a.bin", b"a")}, format="torch", version="1.0.0")
    before = (len(catalog.versions()), sorted(catalog.store.all_shas()), len(catalog.events()))
    with pytest.raises(DuplicateVersion, match="already has version 1.0.0"):
        catalog.add_version("m", {"w.bin": _file(tmp_path, "b.bin", b"new bytes")}, format="torch",
                            version="1.0.0")
    assert (len(catalog.versions()), sorted(catalog.store.all_shas()), len(catalog.events())) == before
    assert catalog.orphan_blobs() == []
    assert catalog.conn.execute("SELECT COUNT(*) FROM pending_blobs").fetchone()[0] == 0


def test_metrics_latest_value_wins_and_keep_context(catalog, tmp_path: Path) -> None:
    v = catalog.add_version("m", {"w.bin": _file(tmp_path, "a.bin", b"a")}, format="torch")
    catalog.add_metrics(v.id, [Metric("quality", "accuracy", 0.5, {"device": "cpu"})])
    catalog.add_metrics(v.id, [Metric("quality", "accuracy", 0.75, {"device": "cpu", "batch": 8})])
    rows = catalog.metrics(v.id)
    assert len(rows) == 1 and rows[0]["value"] == 0.75 and rows[0]["context"]["batch"] == 8
    assert len(catalog.metrics(v.id, latest=False)) == 2
    assert catalog.metric_values(v.id) == {"accuracy": 0.75}


def test_audit_chain_detects_edit_delete_and_reorder(catalog, tmp_path: Path) -> None:
    for i in range(4):
        catalog.log_event("note", {"i": i}, model="m")
    assert catalog.verify_audit() == []
    catalog.conn.execute("UPDATE events SET payload = '{\"i\": 99}' WHERE seq = 2")
    assert any(p.seq == 2 and "edited" in p.message for p in catalog.verify_audit())
    catalog.conn.execute("UPDATE events SET payload = '{\"i\":1}' WHERE seq = 2")
    assert catalog.verify_audit() == []
    catalog.conn.execute("DELETE FROM events WHERE seq = 3")
    assert any(p.seq == 4 and "missing" in p.message for p in catalog.verify_audit())


def test_audit_chain_detects_deletion_of_the_last_event(catalog) -> None:
    catalog.log_event("a")
    catalog.log_event("b")
    catalog.conn.execute("DELETE FROM events WHERE seq = 2")
    problems = catalog.verify_audit()
    assert problems and "deleted from the end" in str(problems[-1])


def test_failed_write_releases_its_new_blobs(catalog, tmp_path: Path) -> None:
    shared = _file(tmp_path, "shared.bin", b"shared")
    catalog.add_version("m", {"s.bin": shared}, format="torch")
    with pytest.raises(RuntimeError):
        with catalog.staged_blobs("proc:test") as stage:
            stage.put(shared)  # already stored: must survive
            stage.put(_file(tmp_path, "new.bin", b"brand new"))
            raise RuntimeError("boom")
    assert catalog.orphan_blobs() == []
    assert catalog.verify_store() == []


def test_clean_stale_removes_blobs_of_a_dead_process(catalog, tmp_path: Path) -> None:
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    owner = f"proc:{int(dead.stdout)}"
    stage_file = _file(tmp_path, "x.bin", b"left behind by a crash")
    catalog.staged_blobs(owner).__enter__().put(stage_file)  # simulate a process killed mid-import
    assert len(catalog.orphan_blobs()) == 0  # still pending, so not yet an orphan
    assert catalog.clean_stale()["blobs"] == 1
    assert list(catalog.store.all_shas()) == []


def test_transactions_roll_back_as_a_unit(catalog) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        with catalog.transaction():
            catalog.conn.execute("INSERT INTO models (name, created_at, created_by) VALUES ('x', 't', 'u')")
            catalog.conn.execute("INSERT INTO models (name, created_at, created_by) VALUES ('x', 't', 'u')")
    assert catalog.models() == []


def test_materialize_lays_out_files(catalog, tmp_path: Path) -> None:
    f = _file(tmp_path, "w.bin", b"weights")
    v = catalog.add_version("m", {"sub/w.bin": f, "config.json": _file(tmp_path, "c.json", b"{}")}, format="hf")
    out = catalog.materialize(v.id, tmp_path / "out")
    assert (out / "sub" / "w.bin").read_bytes() == b"weights"
    assert (out / "config.json").read_bytes() == b"{}"


def test_materialized_files_cannot_change_the_store(catalog, tmp_path: Path) -> None:
    """Whatever a worker does to its materialised copy, the stored blob stays intact."""
    f = _file(tmp_path, "w.bin", b"original weights")
    v = catalog.add_version("m", {"w.bin": f}, format="torch")
    out = catalog.materialize(v.id, tmp_path / "work")
    try:
        (out / "w.bin").write_bytes(b"overwritten in place")
    except PermissionError:
        pass  # a read-only hard link refused the write: also fine
    assert catalog.verify_store() == []


@pytest.mark.heavy  # starts worker processes
def test_a_relative_catalog_path_reaches_worker_processes(tmp_path: Path) -> None:
    """`relman --catalog demo-catalog …` from any folder: workers run elsewhere, so the path
    they get must be absolute."""
    import json
    import subprocess

    from conftest import RELMAN, relman_subprocess_env

    env = relman_subprocess_env()
    r = subprocess.run(RELMAN + ["--catalog", "rel-cat", "queue", "noop", "--wait", "--json"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(RELMAN + ["--catalog", "rel-cat", "jobs", "--json"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, check=True)
    assert [j["status"] for j in json.loads(r.stdout)] == ["succeeded"]


def test_threads_opening_one_catalog_at_once_never_see_it_unwritable(tmp_path):
    """The write probe is unique per call: with a pid-named probe, one thread's unlink made a
    second thread of the same process (the window and a view's loader) report the catalog
    folder unwritable."""
    import threading

    from relman.catalog.catalog import _check_writable

    barrier = threading.Barrier(4)
    failures: list[str] = []

    def probe() -> None:
        barrier.wait()
        for _ in range(300):
            try:
                _check_writable(tmp_path)
            except Exception as e:  # noqa: BLE001 — the test records whatever a probe raised
                failures.append(str(e))
                return

    threads = [threading.Thread(target=probe) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert [p.name for p in tmp_path.iterdir()] == []  # every probe removed
