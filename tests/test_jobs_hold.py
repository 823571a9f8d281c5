"""Test hold points (relman.context.hold_here, the one hold mechanism): no effect unless named,
the work waits for its release file, a cancel while held stops it right there, a release file
saying "fail" makes it raise there, and work without a job context says so on stderr."""

from __future__ import annotations

import pytest

from relman.context import hold_here
from relman.errors import JobCancelled
from relman.jobs.context import JobContext
from relman.jobs.testing import HoldPoint


def test_a_hold_point_not_named_in_the_environment_does_nothing(catalog, monkeypatch, tmp_path):
    HoldPoint(monkeypatch, "kind.elsewhere", tmp_path)
    ctx = JobContext(catalog)
    ctx.cancel()  # would raise, were the point held
    hold_here("kind.here", ctx)
    hold_here("kind.here")
    ctx.cleanup()


def test_a_held_job_goes_on_once_released_and_stops_when_cancelled(catalog, monkeypatch, tmp_path):
    hold = HoldPoint(monkeypatch, "kind.here", tmp_path)
    ctx = JobContext(catalog)
    ctx.progress(0.3, "working")
    hold.release()
    hold_here("kind.here", ctx)
    assert ctx.last_progress == (0.3, "held at kind.here")  # the fraction is kept
    hold.release_file.unlink()
    ctx.cancel()
    with pytest.raises(JobCancelled):
        hold_here("kind.here", ctx)
    ctx.cleanup()


def test_a_non_cancellable_hold_waits_for_its_release_despite_a_cancel(catalog, monkeypatch, tmp_path):
    """`sleep` with `ignore_cancel` holds like this: only the release (or a kill) ends the wait."""
    import threading

    hold = HoldPoint(monkeypatch, "kind.here", tmp_path)
    ctx = JobContext(catalog)
    ctx.cancel()
    done = threading.Event()

    def held() -> None:
        hold_here("kind.here", ctx, cancellable=False)
        done.set()

    t = threading.Thread(target=held)
    t.start()
    assert not done.wait(0.3)  # still held: the cancel did not end it
    hold.release()
    t.join(30)
    assert done.is_set()
    ctx.cleanup()


def test_a_release_file_saying_fail_makes_the_work_raise_at_the_point(catalog, monkeypatch, tmp_path):
    hold = HoldPoint(monkeypatch, "kind.a,kind.b", tmp_path)
    hold.fail()
    ctx = JobContext(catalog)
    with pytest.raises(RuntimeError, match=r"^failing on purpose at kind\.b$"):
        hold_here("kind.b", ctx)
    hold_here("kind.c", ctx)  # not named: no effect
    ctx.cleanup()


def test_work_without_a_context_says_held_on_stderr(monkeypatch, tmp_path, capsys):
    hold = HoldPoint(monkeypatch, "cli.step", tmp_path)
    hold.release()
    hold_here("cli.step")
    assert capsys.readouterr().err == f"{hold.message()}\n"


def test_hold_env_is_what_a_subprocess_needs(tmp_path):
    from relman.context import HOLD_ENV, HOLD_RELEASE_ENV

    env = HoldPoint(None, "cli.step", tmp_path).env({"A": "1"})
    assert env == {"A": "1", HOLD_ENV: "cli.step", HOLD_RELEASE_ENV: str(tmp_path / "release-cli.step")}


def test_the_job_context_satisfies_both_work_protocols(catalog):
    """Recipes and suites are typed against relman.context.WorkContext or, when they need the
    catalog, CatalogWork (below the jobs layer); the worker's JobContext provides every member."""
    from relman.context import CatalogWork, WorkContext

    ctx = JobContext(catalog)
    for protocol in (WorkContext, CatalogWork):
        assert isinstance(ctx, protocol)
        members = [m for k in protocol.__mro__[:-1] for m in [*vars(k), *getattr(k, "__annotations__", {})]
                   if not m.startswith("_")]
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
