"""Failed jobs carry a typed cause with its evidence (relman.jobs.causes); retry is refused where
it cannot help, and jobs lost to infrastructure are retried by themselves when the setting is on.
Real runners and worker processes, killed with real signals."""

from __future__ import annotations

import os
import signal

import pytest

from relman.errors import JobError
from relman.jobs import causes
from relman.jobs.queue import enqueue, get_job
from relman.jobs.testing import HoldPoint, drive_until, job_status

pytestmark = pytest.mark.heavy


def _ended(catalog, *ids):
    return lambda: all(job_status(catalog, i) in ("succeeded", "failed", "cancelled") for i in ids)


def test_the_workers_own_failures_are_typed(catalog, make_runner):
    runner = make_runner(cpu_slots=2)
    jobs = {kind: enqueue(catalog, "fail", {"error": kind}, device="cpu")
            for kind in ("runtime", "relman", "memory", "disk_full")}
    drive_until(runner, _ended(catalog, *jobs.values()), 120, "the failing jobs to end")
    got = {kind: get_job(catalog, i)["cause"] for kind, i in jobs.items()}
    assert got == {"runtime": "bug", "relman": "bad_input", "memory": "oom", "disk_full": "disk_full"}
    assert get_job(catalog, jobs["runtime"])["cause_evidence"] == {"exception": "RuntimeError"}
    # a job that cannot even start (a device this machine lacks) is bad input
    bad = enqueue(catalog, "noop", device="cuda:7")
    drive_until(runner, _ended(catalog, bad), 60, "the job for a missing GPU to fail")
    assert get_job(catalog, bad)["cause"] == "bad_input"


def test_retry_is_refused_where_it_cannot_help(catalog, make_runner):
    from relman.app.jobs import retry_job

    runner = make_runner(cpu_slots=1)
    bug = enqueue(catalog, "fail", device="cpu")
    drive_until(runner, _ended(catalog, bug), 60, "the job to fail")
    with pytest.raises(JobError, match=r"failed on unexpected error \(bug\).*--force"):
        retry_job(catalog, bug)
    assert job_status(catalog, bug) == "failed"  # nothing changed
    assert retry_job(catalog, bug, force=True)["status"] == "queued"


def test_a_killed_worker_is_worker_killed_with_its_evidence_and_retry_helps(catalog, make_runner, tmp_path,
                                                                            monkeypatch):
    from relman.app.jobs import retry_job

    hold = HoldPoint(monkeypatch, "sleep.end", tmp_path)
    runner = make_runner(cpu_slots=1)
    victim = enqueue(catalog, "sleep", {"seconds": 0.0, "steps": 1}, device="cpu")
    drive_until(runner, lambda: get_job(catalog, victim)["message"] == hold.message(), 60, "the job to hold")
    os.kill(get_job(catalog, victim)["pid"], signal.SIGKILL)
    drive_until(runner, _ended(catalog, victim), 60, "the killed job to be settled")
    job = get_job(catalog, victim)
    assert job["status"] == "failed" and job["cause"] == "worker_killed", job
    ev = job["cause_evidence"]
    assert ev["signal"] == "SIGKILL" and ev["exit_code"] == -9 and ev["last_heartbeat"] and ev["attempt"] == 1
    assert ev["peak_rss_mb"] > 1 and ev["memory_limit_mb"] > ev["peak_rss_mb"]  # sampled by the runner
    assert causes.retry_helps(job["cause"])
    hold.release()
    assert retry_job(catalog, victim)["status"] == "queued"
    drive_until(runner, _ended(catalog, victim), 60, "the retried job to end")
    assert job_status(catalog, victim) == "succeeded"


def test_auto_retry_of_infrastructure_losses_is_a_setting_off_by_default(catalog, make_runner, tmp_path, monkeypatch):
    hold = HoldPoint(monkeypatch, "sleep.end", tmp_path)
    runner = make_runner(cpu_slots=1)
    off = enqueue(catalog, "sleep", {"seconds": 0.0, "steps": 1}, device="cpu")
    drive_until(runner, lambda: get_job(catalog, off)["message"] == hold.message(), 60, "the job to hold")
    os.kill(get_job(catalog, off)["pid"], signal.SIGKILL)
    drive_until(runner, _ended(catalog, off), 60, "the killed job to be settled")
    assert job_status(catalog, off) == "failed"  # off by default: stays failed

    catalog.set_setting(causes.SETTING_AUTO_RETRY, True)
    catalog.set_setting(causes.SETTING_AUTO_RETRY_MAX, 2)
    on = enqueue(catalog, "sleep", {"seconds": 0.0, "steps": 1}, device="cpu")
    drive_until(runner, lambda: get_job(catalog, on)["message"] == hold.message(), 60, "the job to hold")
    os.kill(get_job(catalog, on)["pid"], signal.SIGKILL)
    drive_until(runner, lambda: get_job(catalog, on)["attempts"] == 2 and get_job(catalog, on)["message"] == hold.message(),
                60, "the job to be retried by the runner and hold again")
    os.kill(get_job(catalog, on)["pid"], signal.SIGKILL)  # the second loss: the limit (2 attempts) is reached
    drive_until(runner, _ended(catalog, on), 60, "the job to fail for good")
    job = get_job(catalog, on)
    assert job["status"] == "failed" and job["attempts"] == 2 and job["cause"] == "worker_killed"
    kinds = [r["kind"] for r in catalog.query("SELECT kind FROM events ORDER BY seq")]
    assert kinds.count("job-retry") == 1  # one automatic retry, audited
    # a job that failed on its own (a bug) is never retried automatically
    bug = enqueue(catalog, "fail", device="cpu")
    drive_until(runner, _ended(catalog, bug), 60, "the failing job to end")
    assert get_job(catalog, bug)["attempts"] == 1


def test_oom_is_told_from_a_plain_kill_by_the_peak_rss() -> None:
    cause, ev = causes.from_exit(-signal.SIGKILL, peak_rss=950 << 20, limit=1000 << 20)
    assert cause == "oom" and ev["peak_rss_mb"] == 950.0 and ev["memory_limit_mb"] == 1000.0
    assert causes.from_exit(-signal.SIGKILL, peak_rss=100 << 20, limit=1000 << 20)[0] == "worker_killed"
    assert causes.from_exit(-signal.SIGSEGV)[0] == "worker_killed"
    assert causes.from_ray_failure("The node with node id abc has died") == "node_lost"
    assert causes.from_ray_failure("ray.exceptions.OutOfMemoryError: Task was killed") == "oom"


def test_auto_retry_command_sets_and_shows_the_setting(run_cli):
    import json

    r = run_cli("jobs", "auto-retry", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["auto_retry"] is False
    r = run_cli("jobs", "auto-retry", "--on", "--max", "2")
    assert r.exit_code == 0 and r.output.startswith("auto-retry on (at most 2 attempts;"), r.output
    r = run_cli("jobs", "auto-retry", "--max", "0")
    assert r.exit_code == 2  # out of range: refused by the option's own check
