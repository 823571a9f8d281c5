"""Chaos: kill -9, in turn, a local worker, the runner (`relman jobs run`), the `--wait` process,
a Ray worker process and a Ray worker node while jobs run. Afterwards no job stays `running`,
every failed job carries its typed cause (relman.jobs.causes) within 30 s of the runner's
noticing, and retries leave exactly one result (no duplicate version, no duplicate job).

Jobs wait at named hold points (relman.context.hold_here: "write_version.staged", "sleep.end",
released by a file), so each kill lands at a known step on a fast or a slow machine alike.
Everything on loopback; Ray nodes are real `ray start` processes with token authentication,
stopped by process id."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from relman.context import held_message
from relman.jobs import queue
from relman.jobs.testing import HoldPoint, drive_until, wait_until

pytestmark = pytest.mark.heavy
NOTICED_S = 30  # the runner settles a loss it noticed within this (issue 26)


def _versions(catalog, model: str) -> int:
    return catalog.conn.execute("SELECT COUNT(*) FROM versions v JOIN models m ON m.id = v.model_id"
                                " WHERE m.name = ?", [model]).fetchone()[0]


def _paused(catalog, job_id: int):
    return lambda: queue.get_job(catalog, job_id)["status"] == "running" and \
        queue.get_job(catalog, job_id)["message"] == held_message("write_version.staged")


def _ended(catalog, job_id: int):
    return lambda: queue.get_job(catalog, job_id)["status"] in queue.FINISHED


def _write(model: str) -> dict:
    return {"model": model}


def _no_job_running_and_causes_given(catalog) -> None:
    rows = queue.list_jobs(catalog)
    assert not [r for r in rows if r["status"] in (queue.RUNNING, queue.QUEUED)], rows
    assert all(r["cause"] for r in rows if r["status"] == queue.FAILED), rows


def _relman(catalog_path, *args: str) -> subprocess.Popen:
    from conftest import relman_subprocess_env  # this process's environment: the hold points too

    return subprocess.Popen([sys.executable, "-m", "relman", "--catalog", str(catalog_path), *args],
                            env=relman_subprocess_env(catalog_path), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def test_killing_a_worker_the_runner_and_the_wait_process(catalog, catalog_path, make_runner, tmp_path, run_cli,
                                                          monkeypatch):
    hold = HoldPoint(monkeypatch, "write_version.staged", tmp_path)
    # 1. a local worker: failed as worker_killed; the retry commits the version once
    runner = make_runner(cpu_slots=1)
    a = queue.enqueue(catalog, "write_version", _write("chaos-a"), device="cpu")
    drive_until(runner, _paused(catalog, a), 120, "job a at its pause point")
    os.kill(queue.get_job(catalog, a)["pid"], signal.SIGKILL)
    drive_until(runner, _ended(catalog, a), NOTICED_S, "the killed worker's job settled")
    job = queue.get_job(catalog, a)
    assert job["status"] == "failed" and job["cause"] == "worker_killed", job
    runner.close()

    # 2. the runner (`relman jobs run`), its worker paused: a new runner adopts the worker
    b = queue.enqueue(catalog, "write_version", _write("chaos-b"), device="cpu")
    proc = _relman(catalog_path, "jobs", "run", "--cpu-slots", "1")
    try:
        wait_until(_paused(catalog, b), 120, "job b at its pause point under `relman jobs run`")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    # 3. the `--wait` process driving its own runner: the worker outlives it too
    c_proc = _relman(catalog_path, "queue", "write_version", "-p", "model=chaos-c", "--device", "cpu", "--wait")
    try:
        c = wait_until(lambda: next((r["id"] for r in queue.list_jobs(catalog) if r["params"].get("model") == "chaos-c"),
                                    None), 60, "the --wait process to queue job c")
        wait_until(_paused(catalog, c), 120, "job c at its pause point under `--wait`")
    finally:
        os.kill(c_proc.pid, signal.SIGKILL)
        c_proc.wait(timeout=30)

    # a fresh runner adopts b and c, the retry of a runs, all are released
    runner = make_runner(cpu_slots=2)
    assert queue.get_job(catalog, b)["status"] == queue.get_job(catalog, c)["status"] == "running"
    run_cli("jobs", "retry", str(a))
    hold.release()
    drive_until(runner, lambda: all(_ended(catalog, j)() for j in (a, b, c)), 180, "every job to end")
    for j, model in ((a, "chaos-a"), (b, "chaos-b"), (c, "chaos-c")):
        assert queue.get_job(catalog, j)["status"] == "succeeded", queue.get_job(catalog, j)
        assert _versions(catalog, model) == 1, model
    _no_job_running_and_causes_given(catalog)
    assert len(queue.list_jobs(catalog)) == 3  # retries reuse their job: no duplicate
    assert run_cli("verify").exit_code == 0


def test_killing_a_ray_worker_process_and_a_ray_worker_node(catalog, make_runner, tmp_path, monkeypatch, run_cli):
    pytest.importorskip("ray")
    import ray_support

    from relman.jobs.ray_executor import RayExecutor
    from relman.jobs.testing import log_contains

    for var in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RELMAN_RAY_CACHE", str(tmp_path / "ray-cache"))
    cluster = ray_support.token_cluster(tmp_path)
    try:
        cluster.start_head(num_cpus=0)
        node = cluster.add_worker(num_cpus=1)
        cluster.wait_for_cpus(1)
        runner = make_runner(executor=RayExecutor(cluster.address, token_file=str(cluster.token_file)))
        hold = HoldPoint(monkeypatch, "sleep.end", tmp_path)
        quick = {"seconds": 0.0, "steps": 1}

        # 4. the Ray worker process running the job
        d = queue.enqueue(catalog, "sleep", quick, device="cpu")
        drive_until(runner, lambda: queue.get_job(catalog, d)["message"] == hold.message()
                    and log_contains(catalog, d, "running on Ray node"), 180, "job d to hold on Ray")
        log = queue.log_path_for(catalog, d).read_text()
        pid = int(re.search(r"running on Ray node \S+, pid (\d+)", log).group(1))
        os.kill(pid, signal.SIGKILL)
        drive_until(runner, _ended(catalog, d), NOTICED_S + 30, "the killed Ray worker's job settled")
        job = queue.get_job(catalog, d)
        assert job["status"] == "failed" and job["cause"] == "worker_killed", job

        # 5. the worker node itself (its raylet, object store and workers)
        e = queue.enqueue(catalog, "sleep", quick, device="cpu")
        drive_until(runner, lambda: queue.get_job(catalog, e)["message"] == hold.message()
                    and queue.get_job(catalog, e)["executor"].count("/") == 1, 180, "job e to hold on a named node")
        node_id = queue.get_job(catalog, e)["executor"].rpartition("/")[2]
        node.kill()
        drive_until(runner, _ended(catalog, e), 120, "the job of the lost node settled")
        job = queue.get_job(catalog, e)
        assert job["status"] == "failed" and job["cause"] == "node_lost", job
        ev = job["cause_evidence"]
        assert ev["node"] and ev["node"].endswith(node_id) and ev["last_heartbeat"] and ev["attempt"] == 1, ev

        # retries on a fresh node: each job once more, nothing duplicated
        cluster.add_worker(num_cpus=1)
        cluster.wait_for_cpus(1)
        hold.release()
        for j in (d, e):
            run_cli("jobs", "retry", str(j))
        drive_until(runner, lambda: _ended(catalog, d)() and _ended(catalog, e)(), 180, "the retried jobs to end")
        for j in (d, e):
            assert queue.get_job(catalog, j)["status"] == "succeeded", queue.get_job(catalog, j)
            assert queue.get_job(catalog, j)["attempts"] == 2
        _no_job_running_and_causes_given(catalog)
        assert len(queue.list_jobs(catalog)) == 2
        runner.close()
    finally:
        cluster.stop()
