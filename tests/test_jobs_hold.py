"""The test-only hold point of a job context: no effect unless named, waits for its release
file, and a cancel raised while held stops the job right there."""

from __future__ import annotations

import pytest

from relman.errors import JobCancelled
from relman.jobs.context import JobContext
from relman.jobs.testing import HoldPoint


def test_a_hold_point_not_named_in_the_environment_does_nothing(catalog, monkeypatch, tmp_path):
    HoldPoint(monkeypatch, "kind.elsewhere", tmp_path)
    ctx = JobContext(catalog)
    ctx.cancel()  # would raise, were the point held
    ctx.hold_point("kind.here")
    ctx.cleanup()


def test_a_held_job_goes_on_once_released_and_stops_when_cancelled(catalog, monkeypatch, tmp_path):
    hold = HoldPoint(monkeypatch, "kind.here", tmp_path)
    ctx = JobContext(catalog)
    hold.release()
    ctx.hold_point("kind.here")
    assert ctx.last_progress[1] == "held at kind.here"
    hold.release_file.unlink()
    ctx.cancel()
    with pytest.raises(JobCancelled):
        ctx.hold_point("kind.here")
    ctx.cleanup()


def test_the_job_context_satisfies_the_work_context_protocol(catalog):
    """Recipes and suites are typed against relman.context.WorkContext (below the jobs
    layer); the worker's JobContext must provide every member of it."""
    from relman.context import WorkContext

    ctx = JobContext(catalog)
    assert isinstance(ctx, WorkContext)
    members = [m for m in vars(WorkContext) if not m.startswith("_")] + list(WorkContext.__annotations__)
    assert all(hasattr(ctx, m) for m in members), [m for m in members if not hasattr(ctx, m)]
    ctx.cleanup()


@pytest.mark.heavy
def test_an_evaluation_cancelled_at_its_hold_point_stores_no_metric(catalog, make_runner, tiny_bert, monkeypatch,
                                                                  tmp_path):
    """Through a real runner and worker: the evaluation reaches its hold point with its metrics
    measured, the cancel lands there, and nothing is stored."""
    from relman.app.evaluate import queue_evaluation
    from relman.app.models import import_model
    from relman.jobs import queue
    from relman.jobs.testing import drive_until, job_status

    hold = HoldPoint(monkeypatch, "evaluate.before-commit", tmp_path)
    v = import_model(catalog, tiny_bert, "bert")
    [job_id] = queue_evaluation(catalog, [v.ref], suites=["size"], device="cpu")
    runner = make_runner(grace_s=60.0)  # the cancel is the job's own doing, not a SIGTERM
    drive_until(runner, lambda: hold.reached(catalog, job_id), 120, "the evaluation held before its commit")
    queue.request_cancel(catalog, job_id)
    drive_until(runner, lambda: job_status(catalog, job_id) in queue.FINISHED, 60, "the job to end")
    job = queue.get_job(catalog, job_id)
    assert job["status"] == "cancelled" and job["message"] == "cancelled by user", job
    assert catalog.metrics(v.id) == []
