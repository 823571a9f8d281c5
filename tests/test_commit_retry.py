"""Idempotent commit: a compression worker killed after committing its child but before the job
was marked succeeded, then `jobs retry`, leaves exactly one child, and that child is evaluated.

The kill happens at a hold point the test controls (`compress.after-commit`), not at a guessed
time."""

from __future__ import annotations

import os
import signal

from relman.app.compress import queue_compression
from relman.app.models import import_model
from relman.jobs import queue
from relman.jobs.queue import get_job
from relman.jobs.testing import HoldPoint, drive_until, job_status, wait_until


def test_kill_between_commit_and_success_then_retry_adopts_the_child(catalog, make_runner, tiny_bert, tmp_path,
                                                                     monkeypatch):
    parent = import_model(catalog, tiny_bert, "bert")
    hold = HoldPoint(monkeypatch, "compress.after-commit", tmp_path)
    job_id = queue_compression(catalog, "bert@1.0.0", "half", {}, device="cpu")
    runner = make_runner(grace_s=2.0, kill_after_s=1.0)
    drive_until(runner, lambda: hold.reached(catalog, job_id), 120,
                "the worker to commit the child and reach the hold point")
    child_id = get_job(catalog, job_id)["result_version_id"]
    assert child_id is not None and len(catalog.versions("bert")) == 2  # committed, job still running
    os.kill(get_job(catalog, job_id)["pid"], signal.SIGKILL)
    drive_until(runner, lambda: job_status(catalog, job_id) == queue.FAILED, 60, "the killed job to be failed")
    assert "after committing its result bert@1.0.1" in get_job(catalog, job_id)["error"]
    assert not queue.list_jobs(catalog, kind="evaluate")  # it died before queueing the evaluation

    monkeypatch.delenv("RELMAN_TEST_HOLD")
    queue.retry(catalog, job_id)
    drive_until(runner, lambda: all(j["status"] in queue.FINISHED for j in queue.list_jobs(catalog)), 180,
                "the retry and the child's evaluation")
    job = get_job(catalog, job_id)
    assert job["status"] == "succeeded", job["error"]
    assert job["result"]["adopted"] is True and job["result"]["version_id"] == child_id
    assert [v.id for v in catalog.versions("bert")] == [parent.id, child_id]  # exactly one child
    evals = queue.list_jobs(catalog, kind="evaluate")
    assert len(evals) == 1 and evals[0]["status"] == "succeeded", evals
    assert {m["suite"] for m in catalog.metrics(child_id)} >= {"size", "latency"}
    from relman.catalog.integrity import check_state

    assert check_state(catalog)[0] == []
    wait_until(lambda: catalog.orphan_blobs() == [], 10, "no orphan blobs")
