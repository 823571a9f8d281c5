"""Helpers for tests that run real jobs: wait on a condition with a deadline, never a fixed sleep.

`drive_until(runner, cond)` ticks a real Runner (real worker processes) until `cond()` holds;
`wait_until(cond)` only polls. Both fail with a message naming what was awaited, plus the
jobs table, so a slow machine gives a readable failure rather than a hang.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from relman.jobs.runner import Runner

POLL_S = 0.05


class ConditionTimeout(AssertionError):
    pass


def wait_until(cond: Callable[[], Any], timeout: float = 30.0, what: str = "condition",
               on_poll: Callable[[], Any] | None = None, describe: Callable[[], str] | None = None) -> Any:
    """Poll `cond` (calling `on_poll` first each round) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        if on_poll is not None:
            on_poll()
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\n{describe()}" if describe is not None else ""
            raise ConditionTimeout(f"timed out after {timeout:.0f} s waiting for {what}{extra}")
        time.sleep(POLL_S)


def jobs_table(catalog) -> str:
    rows = catalog.query("SELECT id, kind, status, progress, message, pid, error FROM jobs ORDER BY id")
    return "\n".join(str(r) for r in rows)


def drive_until(runner: "Runner", cond: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Tick `runner` until `cond()` holds."""
    return wait_until(cond, timeout, what, on_poll=runner.tick, describe=lambda: jobs_table(runner.catalog))


def job_status(catalog, job_id: int) -> str:
    return catalog.conn.execute("SELECT status FROM jobs WHERE id = ?", [job_id]).fetchone()[0]


def log_contains(catalog, job_id: int, text: str) -> bool:
    from relman.jobs.queue import log_path_for

    path = log_path_for(catalog, job_id)
    return path.is_file() and text in path.read_text(encoding="utf-8", errors="replace")


class HoldPoint:
    """Hold the jobs that workers started from now on run at `point` (see
    `JobContext.hold_point`), until `release()` or a cancel: the test decides when the job
    goes on, so cancel and kill -9 land at a known step on a fast or a slow machine alike.

    `monkeypatch` (pytest's fixture) sets the environment the runner passes on to workers and
    restores it after the test; `folder` holds the release file."""

    def __init__(self, monkeypatch: Any, point: str, folder: Any) -> None:
        from pathlib import Path

        from relman.jobs.context import HOLD_ENV, HOLD_RELEASE_ENV

        self.point = point
        self.release_file = Path(folder) / f"release-{point}"
        monkeypatch.setenv(HOLD_ENV, point)
        monkeypatch.setenv(HOLD_RELEASE_ENV, str(self.release_file))

    def reached(self, catalog, job_id: int) -> bool:
        """Whether job `job_id` is waiting at the hold point now."""
        from relman.jobs.context import held_message

        row = catalog.conn.execute("SELECT status, message FROM jobs WHERE id = ?", [job_id]).fetchone()
        return bool(row) and row[0] == "running" and row[1] == held_message(self.point)

    def release(self) -> None:
        self.release_file.touch()
