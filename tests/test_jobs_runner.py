"""The runner with real worker processes on a real catalog: concurrency, cancel, crashes,
failures, progress across processes, dead-worker detection, the runner lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import datetime

import psutil
import pytest

from relman.catalog.catalog import pid_alive
from relman.jobs import queue
from relman.jobs.queue import enqueue, get_job
from relman.jobs.testing import HoldPoint, drive_until, job_status, wait_until

from conftest import RELMAN, relman_subprocess_env


def ts(job: dict, key: str) -> datetime:
    return datetime.fromisoformat(job[key])


def finished(catalog, *ids: int):
    return lambda: all(job_status(catalog, j) in queue.FINISHED for j in ids)


def assert_catalog_clean(catalog, job_id: int) -> None:
    assert catalog.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert catalog.orphan_blobs() == []
    assert catalog.conn.execute("SELECT COUNT(*) FROM pending_blobs").fetchone()[0] == 0
    assert not queue.workdir_for(catalog, job_id).exists()
    assert list((catalog.root / "objects").glob("tmp/*")) == []  # no half-written blob files
    assert catalog.verify_audit() == []


# -- concurrency ------------------------------------------------------------------------------

def test_two_cpu_jobs_run_concurrently_and_the_third_waits(catalog, make_runner):
    runner = make_runner(cpu_slots=2)
    ids = [enqueue(catalog, "sleep", {"seconds": 1.0, "steps": 4}, device="cpu") for _ in range(3)]
    report = runner.tick()
    assert report["started"] == ids[:2]
    assert [job_status(catalog, j) for j in ids] == ["running", "running", "queued"]
    drive_until(runner, finished(catalog, *ids), 60, "three sleep jobs")
    a, b, c = (get_job(catalog, j) for j in ids)
    assert all(j["status"] == "succeeded" for j in (a, b, c))
    assert ts(a, "started_at") < ts(b, "finished_at") and ts(b, "started_at") < ts(a, "finished_at")  # overlapped
    assert ts(c, "started_at") >= min(ts(a, "finished_at"), ts(b, "finished_at"))  # waited for a slot
    assert {a["device_used"], b["device_used"], c["device_used"]} == {"cpu"}


def test_with_one_slot_jobs_run_in_queue_order(catalog, make_runner):
    runner = make_runner(cpu_slots=1)
    ids = [enqueue(catalog, "sleep", {"seconds": 0.2, "steps": 2}, device="cpu") for _ in range(3)]
    drive_until(runner, finished(catalog, *ids), 60, "three jobs in a row")
    jobs = [get_job(catalog, j) for j in ids]
    assert [j["status"] for j in jobs] == ["succeeded"] * 3
    for earlier, later in zip(jobs, jobs[1:]):
        assert ts(later, "started_at") >= ts(earlier, "finished_at")


# -- cancel -----------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["cooperative", "sigterm", "sigkill"])
def test_cancel_ends_the_job_and_leaves_no_child_processes(catalog, make_runner, mode):
    """Each mode ends the job by its own path, told apart by the recorded message, not by how
    long it took: the other paths are set far enough away (60 s) that a slow machine cannot
    reach them first (a cooperative stop is never overtaken by SIGTERM, a SIGTERM'd worker's
    cleanup never by SIGKILL)."""
    far = 60.0
    grace, kill_after = {"cooperative": (far, far), "sigterm": (0.5, far), "sigkill": (0.5, 0.5)}[mode]
    runner = make_runner(grace_s=grace, kill_after_s=kill_after)
    params = {"seconds": 30, "steps": 300, "spawn_child": True,
              "ignore_cancel": mode != "cooperative", "ignore_sigterm": mode == "sigkill"}
    job_id = enqueue(catalog, "sleep", params, device="cpu")
    drive_until(runner, lambda: get_job(catalog, job_id)["message"].startswith("step"), 30, "the job to run")
    job = get_job(catalog, job_id)
    worker_pid = job["pid"]
    child_pid = int(next(line.rsplit(" ", 1)[1] for line in queue.log_path_for(catalog, job_id).read_text().splitlines()
                         if "started child process" in line))
    assert pid_alive(worker_pid) and pid_alive(child_pid)

    assert queue.request_cancel(catalog, job_id) == "running"
    drive_until(runner, finished(catalog, job_id), 50, "the cancelled job to end")
    job = get_job(catalog, job_id)
    assert job["status"] == "cancelled", job
    wait_until(lambda: not pid_alive(child_pid) and not pid_alive(worker_pid), 30, "worker and child to be gone")
    assert not [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"]
                and str(catalog.root) in " ".join(p.info["cmdline"])]
    assert_catalog_clean(catalog, job_id)
    if mode == "cooperative":
        assert job["message"] == "cancelled by user"
    if mode == "sigterm":
        assert job["message"] == "cancelled (terminated after the grace period)"
    if mode == "sigkill":
        assert "SIGKILL" in job["message"]


def test_cancel_of_a_queued_job_is_immediate_and_it_never_starts(catalog, make_runner):
    job_id = enqueue(catalog, "noop", device="cpu")
    assert queue.request_cancel(catalog, job_id) == "cancelled"
    runner = make_runner()
    runner.tick()
    job = get_job(catalog, job_id)
    assert job["status"] == "cancelled" and job["pid"] is None and job["attempts"] == 0
    assert runner.workers == {}


# -- crashes ----------------------------------------------------------------------------------

@pytest.mark.parametrize("point", ["start", "staged", "in-commit", "after-commit"])
def test_kill_9_of_a_worker_fails_the_job_cleanly(catalog, make_runner, tmp_path, monkeypatch, point):
    hold = HoldPoint(monkeypatch, f"write_version.{point}", tmp_path)
    runner = make_runner(cpu_slots=2)
    bystander = enqueue(catalog, "sleep", {"seconds": 1.5, "steps": 15}, device="cpu")
    victim = enqueue(catalog, "write_version", {"files": 3}, device="cpu")
    drive_until(runner, lambda: hold.logged(catalog, victim), 30, f"the job to hold at {point}")
    pid = get_job(catalog, victim)["pid"]
    if point == "staged":
        assert catalog.conn.execute("SELECT COUNT(*) FROM pending_blobs").fetchone()[0] == 3
    os.kill(pid, signal.SIGKILL)
    drive_until(runner, finished(catalog, victim, bystander), 60, "both jobs to end")

    job = get_job(catalog, victim)
    assert job["status"] == "failed"
    assert job["error"].startswith("worker process died (killed by signal 9, SIGKILL)"), job["error"]
    versions = catalog.versions()
    if point == "after-commit":  # the result transaction had committed: the version is whole
        assert [v.ref for v in versions] == ["jobtest@1.0.0"]
        assert "after committing its result jobtest@1.0.0" in job["error"]
        assert len(catalog.artifacts(versions[0].id)) == 3 and catalog.verify_store() == []
    else:  # nothing of the result is left
        assert versions == [] and job["result_version_id"] is None
        assert list(catalog.store.all_shas()) == []
    assert get_job(catalog, bystander)["status"] == "succeeded"
    assert_catalog_clean(catalog, victim)

    hold.release()  # the retry runs through without holding
    queue.retry(catalog, victim)
    drive_until(runner, finished(catalog, victim), 30, "the retried job")
    job = get_job(catalog, victim)
    assert job["status"] == "succeeded" and job["attempts"] == 2
    assert catalog.get_version(job["result_version_id"]).ref == job["result"]["version"]
    assert_catalog_clean(catalog, victim)
    assert "=== attempt 2" in queue.log_path_for(catalog, victim).read_text()


def test_a_worker_that_stops_heartbeating_is_killed_and_failed(catalog, make_runner):
    runner = make_runner()  # the default staleness while the worker starts (slow on a busy machine)
    job_id = enqueue(catalog, "sleep", {"seconds": 60, "steps": 60}, device="cpu")
    drive_until(runner, lambda: get_job(catalog, job_id)["message"].startswith("step"), 30, "the job to run")
    pid = get_job(catalog, job_id)["pid"]
    os.kill(pid, signal.SIGSTOP)  # a hung worker: alive, silent
    runner.heartbeat_stale_s = 1.5  # only now: a live worker is never mistaken for a hung one
    drive_until(runner, finished(catalog, job_id), 30, "the hung job to be failed")
    job = get_job(catalog, job_id)
    assert job["status"] == "failed" and "killed by signal 9" in job["error"], job["error"]
    assert not pid_alive(pid)


def test_dead_workers_of_a_previous_run_are_found_by_pid(catalog, make_runner):
    """After a runner (or the machine) went away: one job's pid is gone, another's pid now
    belongs to an unrelated program. Both are failed with the reason and cleaned up."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    ids = {}
    for name, pid in (("gone", gone.pid), ("reused", os.getpid())):
        job_id = enqueue(catalog, "write_version", device="cpu")
        with catalog.transaction():
            catalog.conn.execute("UPDATE jobs SET status='running', pid=?, device_used='cpu', started_at=?,"
                                 " heartbeat_at=? WHERE id=?", [pid, queue._now(), queue._now(), job_id])
        with catalog.staged_blobs(f"job:{job_id}") as stage:  # what the dead worker had staged
            f = catalog.tmp_dir / f"staged-{job_id}.bin"
            f.write_bytes(os.urandom(64))
            stage.put(f)
            f.unlink()
        queue.workdir_for(catalog, job_id).mkdir(parents=True)
        ids[name] = job_id
    runner = make_runner()
    report = runner.tick()
    assert sorted(report["ended"]) == sorted(ids.values())
    assert "is gone (killed, crashed, or the machine restarted)" in get_job(catalog, ids["gone"])["error"]
    assert "belongs to another program" in get_job(catalog, ids["reused"])["error"]
    for job_id in ids.values():
        assert get_job(catalog, job_id)["status"] == "failed"
        assert_catalog_clean(catalog, job_id)
    assert list(catalog.store.all_shas()) == []


# -- failures and progress --------------------------------------------------------------------

def test_a_job_that_raises_logs_its_traceback_and_records_one_line(catalog, make_runner):
    runner = make_runner()
    job_id = enqueue(catalog, "fail", device="cpu")
    drive_until(runner, finished(catalog, job_id), 30, "the failing job")
    job = get_job(catalog, job_id)
    assert job["status"] == "failed"
    assert job["error"] == "RuntimeError: this job fails on purpose"
    log = queue.log_path_for(catalog, job_id).read_text()
    assert "Traceback (most recent call last)" in log and "second line: only in the log" in log
    assert 'in fail' in log  # the frame of the job function


@pytest.mark.parametrize("point", ["staged", "in-commit"])
def test_a_job_that_raises_mid_write_leaves_nothing_behind(catalog, make_runner, tmp_path, monkeypatch, point):
    hold = HoldPoint(monkeypatch, f"write_version.{point}", tmp_path)
    hold.fail()  # the job raises when it reaches the point
    runner = make_runner()
    job_id = enqueue(catalog, "write_version", device="cpu")
    drive_until(runner, finished(catalog, job_id), 30, "the job")
    job = get_job(catalog, job_id)
    assert job["status"] == "failed" and job["error"] == f"RuntimeError: failing on purpose at write_version.{point}"
    assert catalog.versions() == [] and list(catalog.store.all_shas()) == []
    assert_catalog_clean(catalog, job_id)


def test_progress_written_by_a_worker_is_visible_to_other_processes(catalog, catalog_path, make_runner, tmp_path,
                                                                    monkeypatch):
    hold = HoldPoint(monkeypatch, "write_version.start", tmp_path)
    runner = make_runner()
    job_id = enqueue(catalog, "write_version", device="cpu")
    drive_until(runner, lambda: hold.logged(catalog, job_id), 30, "the job to hold")
    # A third process (the real CLI) reads what the worker wrote.
    out = subprocess.run([*RELMAN, "jobs", "show", str(job_id), "--json"], capture_output=True, text=True,
                         env=relman_subprocess_env(catalog_path), timeout=60)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen["status"] == "running" and seen["progress"] == pytest.approx(0.1) and seen["message"] == hold.message()
    assert seen["pid"] == get_job(catalog, job_id)["pid"] and seen["heartbeat_at"]
    hold.release()
    drive_until(runner, finished(catalog, job_id), 30, "the job")
    job = get_job(catalog, job_id)
    assert job["status"] == "succeeded" and job["progress"] == 1.0


# -- the runner lock --------------------------------------------------------------------------

def test_only_one_runner_drives_a_catalog(catalog, catalog_path, make_runner):
    first, second = make_runner(), make_runner()
    assert first.tick() == {"started": [], "ended": []} and first.has_lock
    job_id = enqueue(catalog, "noop", device="cpu")
    assert second.tick()["started"] == [] and not second.has_lock
    out = subprocess.run([*RELMAN, "jobs", "run", "--once"], capture_output=True, text=True,
                         env=relman_subprocess_env(catalog_path), timeout=60)
    assert out.returncode == 1 and "another runner" in out.stderr and str(os.getpid()) in out.stderr
    assert job_status(catalog, job_id) == "queued"
    drive_until(first, finished(catalog, job_id), 30, "the noop job")
    first.close()
    second.tick()
    assert second.has_lock


def test_a_claimed_job_is_not_started_twice(catalog, make_runner):
    runner = make_runner()
    job_id = enqueue(catalog, "noop", device="cpu")
    assert runner._launch(job_id, "cpu") is True
    assert runner._launch(job_id, "cpu") is False  # the row is no longer queued
    drive_until(runner, finished(catalog, job_id), 30, "the noop job")
    assert get_job(catalog, job_id)["attempts"] == 1


def test_headless_runner_once_runs_the_queue_and_exits(catalog, catalog_path):
    ids = [enqueue(catalog, "noop", device="cpu"), enqueue(catalog, "sleep", {"seconds": 0.2}, device="cpu")]
    out = subprocess.run([*RELMAN, "jobs", "run", "--once", "--cpu-slots", "1"], capture_output=True, text=True,
                         env=relman_subprocess_env(catalog_path), timeout=120)
    assert out.returncode == 0, out.stderr
    assert [get_job(catalog, j)["status"] for j in ids] == ["succeeded", "succeeded"]


def test_tick_stays_quick_while_another_process_holds_the_write_lock(catalog, catalog_path, make_runner):
    import time

    job_id = enqueue(catalog, "noop", device="cpu")
    runner = make_runner()
    catalog.conn.execute("BEGIN IMMEDIATE")  # another writer, mid-transaction
    try:
        t0 = time.monotonic()
        assert runner.tick()["started"] == []
        # gave up after the runner's ~1 s busy timeout, not the catalog's own 60 s one (the
        # bound is generous: a loaded machine must not fail it)
        assert time.monotonic() - t0 < 30.0
        assert job_status(catalog, job_id) == "queued"
    finally:
        catalog.conn.execute("ROLLBACK")
    drive_until(runner, finished(catalog, job_id), 30, "the noop job once the lock is free")
    assert get_job(catalog, job_id)["status"] == "succeeded"


def test_a_new_runner_adopts_running_workers_and_can_cancel_them(catalog, make_runner):
    """The GUI closes (its runner lets go) while a job runs; the next runner watches that
    worker through pid + heartbeat and enforces a cancel on it."""
    first = make_runner(grace_s=0.3)
    stubborn = enqueue(catalog, "sleep", {"seconds": 30, "steps": 300, "ignore_cancel": True}, device="cpu")
    normal = enqueue(catalog, "sleep", {"seconds": 1.0, "steps": 5}, device="cpu")
    drive_until(first, lambda: get_job(catalog, stubborn)["message"].startswith("step"), 30, "the jobs to run")
    pid = get_job(catalog, stubborn)["pid"]
    first.close()
    assert job_status(catalog, stubborn) == "running" and pid_alive(pid)

    second = make_runner(grace_s=0.3)
    second.tick()
    assert second.workers == {} and job_status(catalog, stubborn) == "running"  # adopted, not restarted
    queue.request_cancel(catalog, stubborn)
    drive_until(second, finished(catalog, stubborn, normal), 30, "both jobs to end")
    assert get_job(catalog, stubborn)["status"] == "cancelled"
    assert get_job(catalog, normal)["status"] == "succeeded"
    wait_until(lambda: not pid_alive(pid), 10, "the adopted worker to exit")
    assert_catalog_clean(catalog, stubborn)
