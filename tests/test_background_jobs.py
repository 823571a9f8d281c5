"""File work as jobs (relman/app/background.py) and gate previews that read no artifact
(relman/catalog/blobcheck.py): real catalog, real worker processes, tiny safetensors files."""

from __future__ import annotations

import json
import os
import stat
import struct
from pathlib import Path
from typing import Any

import pytest

from relman.errors import ReleaseError
from relman.jobs.testing import drive_until, job_status


def tiny_safetensors(path: Path, n: int = 64) -> Path:
    header = json.dumps({"w": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + os.urandom(4 * n))
    return path


def run_job(runner: Any, catalog: Any, job_id: int) -> dict[str, Any]:
    drive_until(runner, lambda: job_status(catalog, job_id) in ("succeeded", "failed", "cancelled"), 90,
                f"job {job_id} to end")
    row = catalog.query("SELECT status, error, result, result_version_id FROM jobs WHERE id = ?", [job_id])[0]
    row["result"] = json.loads(row["result"] or "{}")
    return row


def tamper(catalog: Any, sha: str) -> None:
    """Rewrite one byte of a stored blob in place (same size)."""
    p = catalog.store.path(sha)
    os.chmod(p, stat.S_IRUSR | stat.S_IWUSR)
    data = bytearray(p.read_bytes())
    data[-1] ^= 0xFF
    p.write_bytes(bytes(data))
    os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 1_000_000))  # a later mtime, as any edit


def test_gate_preview_reads_no_artifact_and_uses_the_last_rehash(catalog, tmp_path, monkeypatch):
    from relman.app.models import import_model
    from relman.app.release import gates, promote
    from relman.catalog import store

    v = import_model(catalog, tiny_safetensors(tmp_path / "m.safetensors"), "m")
    promote(catalog, v.ref, "candidate")
    hashed: list[str] = []
    real = store.sha256_file
    monkeypatch.setattr(store, "sha256_file", lambda p: hashed.append(str(p)) or real(p))

    def integrity(rehash: bool) -> Any:
        return next(r for r in gates(catalog, v.ref, "staging", rehash=rehash).rules if r.rule == "artifacts intact")

    r = integrity(False)
    assert (r.status, r.passed, hashed) == ("pending", True, [])  # never re-hashed: pending, nothing read
    assert integrity(True).status == "pass" and len(hashed) == 1  # the full check reads it once...
    r = integrity(False)
    assert r.status == "pass" and "verified earlier" in r.reason and len(hashed) == 1  # ...and is remembered
    sha = catalog.artifacts(v.id)[0]["sha256"]
    tamper(catalog, sha)
    assert integrity(False).status == "pending", "an edited blob (new mtime) is no longer taken as verified"
    r = integrity(True)
    assert r.status == "fail" and "content changed" in r.reason
    p = catalog.store.path(sha)
    with open(p, "ab") as f:
        f.write(b"x")
    r = integrity(False)  # a size change is caught without reading the file
    assert r.status == "fail" and "size changed" in r.reason and len(hashed) == 2
    p.unlink()
    assert "missing" in integrity(False).reason


def test_import_dataset_promotion_and_bundle_jobs(catalog, tmp_path, make_runner, monkeypatch):
    from relman.app import background
    from relman.app.bundles import create_key
    from relman.app.release import approve
    from relman.data.demo import sentiment_csv

    monkeypatch.setenv("RELMAN_KEYS_DIR", str(tmp_path / "keys"))
    runner = make_runner(cpu_slots=2)
    src = tiny_safetensors(tmp_path / "m.safetensors")
    imp = background.queue_import_model(catalog, src, "m")
    ds = background.queue_register_dataset(catalog, sentiment_csv(tmp_path / "r.csv", n=20), "reviews")
    row = run_job(runner, catalog, imp)
    assert row["status"] == "succeeded", row
    v = catalog.resolve("m@1.0.0")
    assert row["result"]["version"] == v.ref and row["result_version_id"] == v.id
    assert run_job(runner, catalog, ds)["status"] == "succeeded"
    assert catalog.query("SELECT n_rows FROM datasets WHERE name = 'reviews'")[0]["n_rows"] == 20
    # refused at once, before any job: a bad path, a taken version, a disallowed promotion
    with pytest.raises(Exception, match="no such file"):
        background.queue_import_model(catalog, tmp_path / "nope", "m")
    with pytest.raises(Exception, match="already has version 1.0.0"):
        background.queue_import_model(catalog, src, "m", version="1.0.0")
    with pytest.raises(ReleaseError, match="does not allow"):
        background.queue_promotion(catalog, v.ref, "production", why="skip ahead")
    # a promotion that re-hashes: a tampered blob fails the job, and nothing changes
    from relman.app.release import promote

    promote(catalog, v.ref, "candidate")
    approve(catalog, v.ref, "staging", by="reviewer")
    sha = catalog.artifacts(v.id)[0]["sha256"]
    good = catalog.store.path(sha).read_bytes()
    tamper(catalog, sha)
    row = run_job(runner, catalog, background.queue_promotion(catalog, v.ref, "staging", why="ship"))
    assert row["status"] == "failed" and "content changed" in row["error"]
    assert catalog.get_version(v.id).phase == "candidate"
    p = catalog.store.path(sha)
    p.write_bytes(good)  # repaired
    job = background.queue_promotion(catalog, v.ref, "staging", why="ship")
    with pytest.raises(ReleaseError, match=f"already under way \\(job {job}\\)"):  # pressed twice
        background.queue_promotion(catalog, v.ref, "staging", why="ship")
    row = run_job(runner, catalog, job)
    assert row["status"] == "succeeded", row
    assert row["result"]["to"] == "staging" and catalog.get_version(v.id).phase == "staging"
    t = json.loads(catalog.query("SELECT gate_report FROM transitions WHERE version_id = ? ORDER BY id DESC",
                                 [v.id])[0]["gate_report"])
    assert any(r["rule"] == "artifacts intact" and r["status"] == "pass" for r in t["rules"])
    # bundle export (key checked up front) and import into a second catalog
    with pytest.raises(Exception, match="no signing key"):
        background.queue_export_bundle(catalog, v.ref, tmp_path / "m.relman")
    create_key("lab")
    row = run_job(runner, catalog, background.queue_export_bundle(catalog, v.ref, tmp_path / "m.relman"))
    assert row["status"] == "succeeded" and (tmp_path / "m.relman").stat().st_size > 256
    from relman.catalog import open_catalog
    from relman.jobs.runner import Runner

    other = open_catalog(tmp_path / "other")
    try:
        with Runner(other.root, 1) as r2:
            row = run_job(r2, other, background.queue_import_bundle(other, tmp_path / "m.relman"))
        assert row["status"] == "succeeded", row
        assert other.resolve("m@1.0.0").manifest_sha256 == v.manifest_sha256
    finally:
        other.close()


def test_a_retried_import_adopts_the_committed_version(catalog, tmp_path):
    """An import job whose version was committed (e.g. the worker died right after) returns
    that version on a retry instead of storing the model twice."""
    from relman.app.background import import_model_job, queue_import_model
    from relman.jobs.context import JobContext

    job_id = queue_import_model(catalog, tiny_safetensors(tmp_path / "m.safetensors"), "m")
    first = import_model_job(json.loads(catalog.query("SELECT params FROM jobs WHERE id = ?", [job_id])[0]["params"]),
                             JobContext(catalog, job_id=job_id))
    again = import_model_job(json.loads(catalog.query("SELECT params FROM jobs WHERE id = ?", [job_id])[0]["params"]),
                             JobContext(catalog, job_id=job_id))
    assert again == {**first, "adopted": True}
    assert len(catalog.versions("m")) == 1


def test_import_progress_follows_the_copy_and_a_cancel_stops_it_leaving_nothing(catalog, tmp_path):
    from relman.app.models import import_model
    from relman.errors import JobCancelled

    src = tiny_safetensors(tmp_path / "m.safetensors", n=3 * 2**18 + 5)  # 3 MiB and a bit: four chunks
    calls: list[tuple[int, int]] = []

    def cancel_on_second(done: int, total: int) -> None:
        calls.append((done, total))
        if len(calls) == 2:
            raise JobCancelled("cancelled by user")

    with pytest.raises(JobCancelled):
        import_model(catalog, src, "m", progress=cancel_on_second)
    assert catalog.versions("m") == [] and list(catalog.store.all_shas()) == []
    assert catalog.query("SELECT * FROM pending_blobs") == [] and not list(catalog.store.tmp.glob("*.part"))
    seen: list[tuple[int, int]] = []
    v = import_model(catalog, src, "m", progress=lambda d, t: seen.append((d, t)))
    size = src.stat().st_size
    assert len(seen) == 4 and seen[-1] == (size, size) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert v.size_bytes == size
