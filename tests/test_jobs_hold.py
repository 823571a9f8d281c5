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
