"""Delete, gc (incl. SIGKILL at chosen points), du, archive/restore: issue 15's "done when"."""

from __future__ import annotations

import json
import os
import random
import subprocess

import pytest

from housekeeping_support import files_of, planted_version, store_files_bytes
from conftest import RELMAN, relman_subprocess_env
from relman.errors import HousekeepingError, NotFound

SHARED = b"S" * 40_000
UNIQUE_A = b"A" * 30_000
UNIQUE_B = b"B" * 20_000


def verify_ok(run_cli) -> None:
    r = run_cli("verify", "--json")
    out = json.loads(r.output)
    assert r.exit_code == 0 and not out["blobs"] and not out["audit"] and out["integrity"] == "ok", r.output


def test_delete_then_gc_frees_unique_bytes_keeps_shared_and_verifies(catalog, tmp_path, run_cli):
    from relman.app.housekeeping import delete_version

    a = planted_version(catalog, tmp_path, "m", "a", shared=SHARED, unique=UNIQUE_A)
    b = planted_version(catalog, tmp_path, "m", "b", shared=SHARED, unique=UNIQUE_B, parents=[(a.id, None)],
                        relation="finetune")
    shared_sha = next(x["sha256"] for x in catalog.artifacts(a.id) if x["path"] == "shared.bin")
    a_own = next(x["sha256"] for x in catalog.artifacts(a.id) if x["path"] != "shared.bin")
    before = store_files_bytes(catalog.store.root)

    dry = delete_version(catalog, a.ref, why="superseded", dry_run=True)
    assert dry["unique_bytes"] == len(UNIQUE_A) and dry["shared_bytes"] == len(SHARED)
    assert catalog.resolve(a.ref).id == a.id  # a dry run changes nothing

    r = delete_version(catalog, a.ref, why="superseded by b", release=False)  # leave the freeing to gc
    assert r["freed_bytes"] == 0 and catalog.store.has(a_own)
    gc_out = json.loads(run_cli("gc", "--json").output)
    assert gc_out["blob_bytes"] == len(UNIQUE_A) and gc_out["blobs"] == 1
    assert store_files_bytes(catalog.store.root) == before - len(UNIQUE_A)
    assert not catalog.store.has(a_own) and catalog.store.has(shared_sha)
    verify_ok(run_cli)

    # the version left listings, resolution and ls; its record and lineage stay as a tombstone
    assert [v.ref for v in catalog.versions("m")] == [b.ref]
    with pytest.raises(NotFound, match="was deleted .* by tester .*superseded by b"):
        catalog.resolve(a.ref)
    assert a.version not in run_cli("ls").output
    assert catalog.get_version(a.id).deleted
    assert [p["version"] for p in catalog.parents(b.id)] == [a.version]
    assert json.loads(run_cli("show", b.ref, "--json").output)["parents"] == [f"{a.ref} (deleted)"]
    tomb = catalog.tombstone(a.id)
    assert tomb["manifest_sha256"] == a.manifest_sha256 and {f["path"] for f in tomb["files"]} == \
        {"shared.bin", "own-a.bin"}
    ev = [e for e in catalog.events() if e["kind"] == "delete"][-1]
    assert ev["actor"] == "tester" and ev["payload"]["why"] == "superseded by b"
    assert ev["payload"]["manifest_sha256"] == a.manifest_sha256 and ev["at"]
    assert not catalog.verify_audit()

    # the CLI path releases at once: b's unique bytes go, the shared blob goes too (no one left)
    out = run_cli("delete", b.ref, "--why", "cleanup")
    assert out.exit_code == 0 and "freed 58.6 KB" in out.output, out.output
    assert store_files_bytes(catalog.store.root) == 0
    verify_ok(run_cli)


def test_delete_needs_why_and_every_refusal_has_its_own_message(catalog, tmp_path, run_cli):
    from relman.app.housekeeping import delete_version
    from relman.app.jobs import queue_job
    from relman.app.release import promote, rollout

    def make(label: str, **kw):
        return planted_version(catalog, tmp_path, "m", label, shared=SHARED, unique=label.encode() * 100, **kw)

    def to(v, *phases):
        for p in phases:
            promote(catalog, v.ref, p, why="test", override=True)

    old, prod, canary, adapter_base, used = (make(x) for x in ("old", "prod", "canary", "base", "used"))
    to(old, "candidate", "staging", "production")
    to(prod, "candidate", "staging", "production")  # old is now retired: the rollback target
    to(canary, "candidate", "staging")
    adapter = catalog.add_version("m-lora", files_of(tmp_path, "lora", {"adapter.bin": b"L" * 500}),
                                  format="peft-adapter", parents=[(adapter_base.id, None)], relation="adapter-base")
    job = queue_job(catalog, "evaluate", {"version_id": used.id})

    with pytest.raises(HousekeepingError, match="say why"):
        delete_version(catalog, old.ref, why="  ")
    expected = {
        prod.ref: "is in production",
        canary.ref: "is in staging",
        old.ref: "is the rollback target of m",
        adapter_base.ref: f"is the base of the kept adapter\\(s\\) {adapter.ref}",
        used.ref: f"job {job} \\(evaluate, queued\\) uses",
    }
    for ref, message in expected.items():
        with pytest.raises(HousekeepingError, match=message):
            delete_version(catalog, ref, why="try")
    rollout(catalog, canary.ref, 10, who="tester")
    with pytest.raises(HousekeepingError, match="carries a canary share of 10 %"):
        delete_version(catalog, canary.ref, why="try")
    r = run_cli("delete", prod.ref, "--why", "try")
    assert r.exit_code == 1 and "refused" in r.output and "production" in r.output
    assert len(catalog.versions("m")) == 5 and not [e for e in catalog.events() if e["kind"] == "delete"]

    # the refusals lift with their reason: the adapter goes first, then its base may go
    delete_version(catalog, adapter.ref, why="adapter retired")
    delete_version(catalog, adapter_base.ref, why="no adapters left")
    verify_ok(run_cli)


def _garbage(catalog, n: int, seed: int) -> list[str]:
    """Blobs nothing references, written the way a crashed writer would have left them."""
    rng = random.Random(seed)
    return [catalog.store.put_bytes(rng.randbytes(2000 + 100 * i))[0] for i in range(n)]


def test_gc_killed_at_seeded_points_never_loses_a_referenced_blob(catalog, catalog_path, tmp_path):
    from relman.app.housekeeping import delete_version

    a = planted_version(catalog, tmp_path, "m", "a", shared=SHARED, unique=UNIQUE_A)
    planted_version(catalog, tmp_path, "m", "b", shared=SHARED, unique=UNIQUE_B)
    doomed = planted_version(catalog, tmp_path, "m", "c", shared=SHARED, unique=b"C" * 999)
    csv = tmp_path / "d.csv"
    csv.write_text("text,label\nx,1\n")
    catalog.add_dataset("d", {"d.csv": csv}, format="csv", kind="text", columns={}, labels=[], n_rows=1)
    # a concurrent writer (this process, alive) has claimed a blob it has not committed yet
    pending_sha, _, _ = catalog.store.put_bytes(b"pending write", on_new=lambda sha: catalog.conn.execute(
        "INSERT INTO pending_blobs (owner, sha256, created_at) VALUES (?, ?, 'now')", [f"proc:{os.getpid()}", sha]))
    delete_version(catalog, doomed.ref, why="garbage for gc", release=False)
    live = {x["sha256"] for v in catalog.versions() for x in catalog.artifacts(v.id)}

    rng = random.Random(15)
    env = relman_subprocess_env(catalog_path)
    for trial in range(10):
        planted = _garbage(catalog, 5, seed=trial)
        garbage = set(catalog.orphan_blobs())
        assert set(planted) <= garbage
        k = rng.randint(0, len(garbage))
        env["RELMAN_TEST_GC_KILL_AFTER"] = str(k)
        proc = subprocess.run([*RELMAN, "gc"], env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == -9, (k, proc.returncode, proc.stderr[-2000:])
        assert len(catalog.orphan_blobs()) == len(garbage) - k  # it really died mid-sweep
        assert catalog.verify_store() == [] and not catalog.verify_audit()
        assert all(catalog.store.has(s) for s in live) and catalog.store.has(pending_sha)
        for v in catalog.versions():
            catalog.materialize(v.id, tmp_path / f"mat-{trial}" / v.ref)
    env.pop("RELMAN_TEST_GC_KILL_AFTER")
    proc = subprocess.run([*RELMAN, "gc", "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert catalog.orphan_blobs() == [] and catalog.store.has(pending_sha) and catalog.verify_store() == []
    assert catalog.resolve(a.ref).id == a.id


def test_gc_keeps_an_unreferenced_blob_a_writer_has_claimed(catalog, tmp_path):
    """The race a claim-before-lookup closes: a writer finds an identical garbage blob already
    stored and will reference it; a gc between the lookup and the commit must not sweep it."""
    from relman.catalog import gc

    sha = catalog.store.put_bytes(b"same bytes")[0]  # garbage, e.g. left by a deleted version
    src = tmp_path / "w.bin"
    src.write_bytes(b"same bytes")
    with catalog.staged_blobs("proc:424242") as stage:
        assert stage.put(src)[0] == sha  # existing blob: still claimed
        assert gc.sweep(catalog)["blobs"] == 0 and catalog.store.has(sha)
        v = catalog.add_version("m", {"w.bin": src}, format="torch")  # a commit that references it
    assert catalog.verify_store() == [] and catalog.artifacts(v.id)[0]["sha256"] == sha
    # a write that fails releases its claims, and a blob nothing needs goes with it
    other = tmp_path / "o.bin"
    other.write_bytes(b"other bytes")
    osha = catalog.store.put_bytes(b"other bytes")[0]
    with pytest.raises(RuntimeError):
        with catalog.staged_blobs("proc:424243") as stage:
            stage.put(other)
            assert gc.sweep(catalog)["blobs"] == 0
            raise RuntimeError("the write fails")
    assert not catalog.store.has(osha) and catalog.store.has(sha)


def test_gc_prunes_old_job_logs_and_scratch_only(catalog, run_cli):
    from relman.app.jobs import queue_job

    old, recent, running = (queue_job(catalog, "evaluate", {"version_id": 0}) for _ in range(3))
    catalog.conn.execute("UPDATE jobs SET status = 'succeeded', finished_at = '2020-01-01T00:00:00+00:00'"
                         " WHERE id = ?", [old])
    catalog.conn.execute("UPDATE jobs SET status = 'failed', finished_at = ? WHERE id = ?",
                         [__import__("relman.catalog.catalog", fromlist=["utcnow"]).utcnow(), recent])
    catalog.conn.execute("UPDATE jobs SET status = 'running' WHERE id = ?", [running])
    for j in (old, recent, running):
        (catalog.logs_dir / f"{j}.log").write_text("x" * 100)
        (catalog.tmp_dir / f"job-{j}").mkdir()
        (catalog.tmp_dir / f"job-{j}" / "scratch.bin").write_bytes(b"y" * 50)
    dry = json.loads(run_cli("gc", "--dry-run", "--json").output)
    assert dry["job_files"] == 2 and dry["job_file_bytes"] == 150 and (catalog.logs_dir / f"{old}.log").exists()
    out = json.loads(run_cli("gc", "--json").output)
    assert out["job_file_bytes"] == 150
    assert not (catalog.logs_dir / f"{old}.log").exists() and not (catalog.tmp_dir / f"job-{old}").exists()
    for j in (recent, running):
        assert (catalog.logs_dir / f"{j}.log").exists() and (catalog.tmp_dir / f"job-{j}").exists()
    out = json.loads(run_cli("gc", "--logs-older-than", "0", "--json").output)
    assert out["job_files"] == 2  # the recent failed job's files; the running job's never


def test_du_totals_equal_bytes_on_disk(catalog, tmp_path, run_cli):
    from relman.app.housekeeping import delete_version

    a = planted_version(catalog, tmp_path, "m", "a", shared=SHARED, unique=UNIQUE_A)
    b = planted_version(catalog, tmp_path, "m", "b", shared=SHARED, unique=UNIQUE_B)
    other = planted_version(catalog, tmp_path, "n", "x", shared=SHARED, unique=b"X" * 5000)
    gone = planted_version(catalog, tmp_path, "n", "y", shared=b"Y" * 7000, unique=b"Z" * 3000)
    delete_version(catalog, gone.ref, why="make garbage", release=False)
    (catalog.logs_dir / "1.log").write_text("log line\n" * 10)

    r = json.loads(run_cli("du", "--json").output)
    t = r["totals"]
    assert t["store_bytes"] == store_files_bytes(catalog.store.root)
    assert t["catalog_bytes"] == store_files_bytes(catalog.root)
    assert t["blob_bytes"] == t["unique_bytes"] + t["shared_bytes"] + t["pending_bytes"] + t["garbage_bytes"]
    assert t["shared_bytes"] == len(SHARED) and t["garbage_bytes"] == 10_000 and t["logs_bytes"] == 90
    by_ref = {v["ref"]: v for v in r["versions"]}
    assert by_ref[a.ref]["unique_bytes"] == len(UNIQUE_A) and by_ref[a.ref]["shared_bytes"] == len(SHARED)
    assert by_ref[b.ref]["bytes"] == len(UNIQUE_B) + len(SHARED) and gone.ref not in by_ref
    models = {m["model"]: m for m in r["models"]}
    assert models["m"]["unique_bytes"] == len(UNIQUE_A) + len(UNIQUE_B)  # shared with model n
    assert models["n"]["bytes"] == len(SHARED) + 5000 and by_ref[other.ref]["unique_bytes"] == 5000
    assert "MODEL" in run_cli("du").output


def test_archive_and_restore_verified(catalog, tmp_path, run_cli):
    from relman.app.housekeeping import archive_version, restore_version
    from relman.app.release import promote

    a = planted_version(catalog, tmp_path, "m", "a", shared=SHARED, unique=UNIQUE_A)
    prod = planted_version(catalog, tmp_path, "m", "b", shared=SHARED, unique=UNIQUE_B)
    for p in ("candidate", "staging", "production"):
        promote(catalog, prod.ref, p, why="t", override=True)
    with pytest.raises(HousekeepingError, match="is in production"):
        archive_version(catalog, prod.ref, tmp_path / "cold")
    with pytest.raises(HousekeepingError, match="inside the catalog folder"):
        archive_version(catalog, a.ref, catalog.root / "x")
    from relman.app.jobs import cancel_job, queue_job

    job = queue_job(catalog, "evaluate", {"version_id": a.id})
    with pytest.raises(HousekeepingError, match=f"job {job} .* uses {a.ref}"):
        archive_version(catalog, a.ref, tmp_path / "cold")
    cancel_job(catalog, job)

    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(HousekeepingError, match="could not write .* nothing was archived"):
        archive_version(catalog, a.ref, tmp_path / "a-file")
    assert catalog.resolve(a.ref).archived_to is None

    before = store_files_bytes(catalog.store.root)
    out = run_cli("archive", a.ref, "--to", str(tmp_path / "cold"))
    assert out.exit_code == 0, out.output
    assert store_files_bytes(catalog.store.root) == before - len(UNIQUE_A)  # the shared blob stays
    assert catalog.resolve(a.ref).archived_to == str((tmp_path / "cold").resolve())
    assert (tmp_path / "cold" / f"{a.ref}.json").is_file()
    verify_ok(run_cli)
    with pytest.raises(NotFound, match="is archived in .*relman restore"):
        catalog.materialize(a.id, tmp_path / "mat")

    # a damaged archive copy is refused and nothing is restored
    own = next(x["sha256"] for x in catalog.artifacts(a.id) if x["path"] != "shared.bin")
    copy = tmp_path / "cold" / "objects" / own[:2] / own[2:]
    good = copy.read_bytes()
    copy.write_bytes(b"tampered" + good[8:])
    with pytest.raises(HousekeepingError, match="is damaged"):
        restore_version(catalog, a.ref)
    assert catalog.resolve(a.ref).archived_to and catalog.orphan_blobs() == []
    copy.write_bytes(good)
    out = run_cli("restore", a.ref)
    assert out.exit_code == 0 and "verified" in out.output
    assert catalog.resolve(a.ref).archived_to is None
    catalog.materialize(a.id, tmp_path / "mat")
    assert (tmp_path / "mat" / "own-a.bin").read_bytes() == UNIQUE_A
    verify_ok(run_cli)
    assert [e["kind"] for e in catalog.events()][-2:] == ["archive", "restore"]


def test_job_that_would_not_fit_is_refused_up_front(catalog, tmp_path):
    from relman.app.compress import queue_compression
    from relman.app.disk import RESERVE_KEY, free_bytes
    from relman.errors import DiskSpaceError

    files = files_of(tmp_path, "hf", {"config.json": b"{}", "model.safetensors": b"W" * 10_000})
    v = catalog.add_version("bert", files, format="hf", task="text-classification",
                            architecture="BertForSequenceClassification")
    catalog.set_setting(RESERVE_KEY, 2 * free_bytes(catalog))
    with pytest.raises(DiskSpaceError, match=r"half of bert@1.0.0 needs about .* free .* but only"):
        queue_compression(catalog, v.ref, "half")
    assert catalog.query("SELECT COUNT(*) AS n FROM jobs")[0]["n"] == 0
    catalog.set_setting(RESERVE_KEY, 0)
    assert queue_compression(catalog, v.ref, "half") > 0


def test_gc_during_a_real_worker_write_keeps_its_pending_blobs(catalog, catalog_path, make_runner, tmp_path,
                                                               monkeypatch):
    """A worker process has stored its blobs (claimed in pending_blobs) and waits before its
    commit; a real `relman gc` runs meanwhile; the job then commits a version that verifies."""
    from relman.jobs.queue import enqueue, get_job
    from relman.jobs.testing import HoldPoint, drive_until

    hold = HoldPoint(monkeypatch, "write_version.staged", tmp_path)
    runner = make_runner(cpu_slots=1)
    job = enqueue(catalog, "write_version", {"files": 3}, device="cpu")
    drive_until(runner, lambda: hold.logged(catalog, job), 60, "the writer to stage its blobs")
    staged = [r[0] for r in catalog.conn.execute("SELECT sha256 FROM pending_blobs")]
    assert len(staged) == 3 and all(catalog.store.has(s) for s in staged)
    _garbage(catalog, 2, seed=99)
    proc = subprocess.run([*RELMAN, "gc", "--json"], env=relman_subprocess_env(catalog_path), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["blobs"] == 2 and all(catalog.store.has(s) for s in staged)
    hold.release()
    drive_until(runner, lambda: get_job(catalog, job)["status"] in ("succeeded", "failed"), 60, "the writer to finish")
    assert get_job(catalog, job)["status"] == "succeeded", get_job(catalog, job)["error"]
    assert catalog.verify_store() == [] and catalog.orphan_blobs() == []


def test_disk_settings_parse_sizes_and_drive_the_checks(catalog, run_cli):
    from relman.app.disk import space_status

    r = json.loads(run_cli("disk-settings", "--warn-below", "5GB", "--reserve", "512MB", "--logs-max-age", "7",
                           "--json").output)
    assert r == {"warn_free_bytes": 5 * 1024**3, "reserve_bytes": 512 * 1024**2, "logs_max_age_days": 7.0}
    assert json.loads(run_cli("gc", "--dry-run", "--json").output)["logs_older_than_days"] == 7.0
    run_cli("disk-settings", "--warn-below", "1000000TB")
    assert space_status(catalog)["low"]
    bad = run_cli("disk-settings", "--reserve", "lots")
    assert bad.exit_code == 1 and "is not a size" in bad.output


def test_a_delete_killed_before_releasing_leaves_garbage_for_gc_only(catalog, catalog_path, tmp_path):
    """`relman delete` commits the tombstone, then releases blobs (the same sweep as gc): killed
    in between, the version is deleted, its unique blob is mere garbage, and nothing breaks."""
    a = planted_version(catalog, tmp_path, "m", "a", shared=SHARED, unique=UNIQUE_A)
    b = planted_version(catalog, tmp_path, "m", "b", shared=SHARED, unique=UNIQUE_B)
    env = relman_subprocess_env(catalog_path)
    env["RELMAN_TEST_GC_KILL_AFTER"] = "0"
    proc = subprocess.run([*RELMAN, "delete", a.ref, "--why", "killed half-way"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    assert catalog.get_version(a.id).deleted and [v.ref for v in catalog.versions()] == [b.ref]
    own = catalog.orphan_blobs()
    assert len(own) == 1 and catalog.store.path(own[0]).stat().st_size == len(UNIQUE_A)
    assert catalog.verify_store() == [] and not catalog.verify_audit()
    from relman.app.housekeeping import collect_garbage

    assert collect_garbage(catalog)["blob_bytes"] == len(UNIQUE_A) and catalog.orphan_blobs() == []
    catalog.materialize(b.id, tmp_path / "b")
