"""`--wait` progress that suits where it goes: plain, rate-limited lines when the stream is not
a terminal (a pipe, a log file), a bar redrawn in place on a terminal."""

from __future__ import annotations

import io

import pytest

from relman.jobs.wait import PLAIN_INTERVAL_S, PlainProgress, TerminalProgress, progress_for


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def row(job_id: int, status: str, progress: float = 0.0, message: str = "", kind: str = "compress",
        error: str | None = None) -> dict:
    return {"id": job_id, "kind": kind, "status": status, "progress": progress, "message": message, "error": error}


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_pipe_gets_status_lines_at_once_and_progress_at_most_every_few_seconds():
    out, clock = io.StringIO(), Clock()
    p = PlainProgress(out, clock=clock)
    p.update([row(1, "queued")])
    clock.now = 0.2
    p.update([row(1, "running", 0.0, "starting")])
    # a training loop reporting a new step every 0.2 s for 12 s: ~60 polls
    for i in range(60):
        clock.now = 0.4 + 0.2 * i
        p.update([row(1, "running", i / 60, f"step {i + 1}/60")])
    clock.now = 12.6
    p.update([row(1, "succeeded", 1.0, "stored bert@1.0.1"), row(2, "queued", kind="evaluate")])
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[0] == "[00:00]   0% job 1 (compress) queued"
    assert lines[1] == "[00:00]   0% job 1 (compress) running"
    progress_lines = [ln for ln in lines if ": step" in ln]
    assert 1 <= len(progress_lines) <= 12.6 / PLAIN_INTERVAL_S + 1, lines  # not one per poll
    assert lines[-2:] == ["[00:12]  50% job 1 (compress) succeeded", "[00:12]  50% job 2 (evaluate) queued"]
    assert len(lines) <= 7


def test_a_pipe_gets_no_line_while_nothing_changes():
    out, clock = io.StringIO(), Clock()
    p = PlainProgress(out, clock=clock)
    p.update([row(3, "running", 0.5, "quantising")])
    for i in range(1, 100):
        clock.now = i * 1.0
        p.update([row(3, "running", 0.5, "quantising")])
    assert out.getvalue().splitlines() == ["[00:00]  50% job 3 (compress) running"]


def test_a_failure_line_says_why():
    out = io.StringIO()
    p = PlainProgress(out, clock=Clock())
    p.update([row(4, "failed", 0.3, error="RecipeError: no dataset")])
    assert out.getvalue() == "[00:00] 100% job 4 (compress) failed: RecipeError: no dataset\n"


def test_a_terminal_gets_a_bar_redrawn_in_place():
    tty = TTY()
    shown = progress_for(tty)
    assert isinstance(shown, TerminalProgress)
    shown.update([row(1, "running", 0.25, "exporting")])
    shown.update([row(1, "running", 0.5, "quantising")])
    shown.close()
    text = tty.getvalue()
    assert "\r" in text and "50%" in text and "quantising" in text
    assert isinstance(progress_for(io.StringIO()), PlainProgress)


@pytest.mark.heavy
def test_wait_on_a_real_job_writes_a_few_plain_lines_to_a_non_terminal(catalog):
    """A real 2 s job in 20 steps, polled every 0.05 s: the old bar wrote a redraw per poll."""
    from relman.jobs.queue import enqueue
    from relman.jobs.wait import wait_for_jobs

    job_id = enqueue(catalog, "sleep", {"seconds": 2.0, "steps": 20}, device="cpu")
    out = io.StringIO()
    rows = wait_for_jobs(catalog, [job_id], stream=out, poll_s=0.05, timeout=120)
    assert rows[0]["status"] == "succeeded"
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[0].endswith(f"job {job_id} (sleep) queued") or lines[0].endswith(f"job {job_id} (sleep) running")
    assert lines[-1].endswith(f"job {job_id} (sleep) succeeded")
    elapsed = int(lines[-1][1:3]) * 60 + int(lines[-1][4:6])
    assert len(lines) <= 3 + elapsed / PLAIN_INTERVAL_S + 1, lines
