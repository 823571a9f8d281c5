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
    """Hold work at the named `point` (see `relman.context.hold_here`, the one hold mechanism)
    until `release()`, `fail()` or a cancel: the test decides when the work goes on, so cancel,
    kill -9 and failures land at a known step on a fast or a slow machine alike.

    With `monkeypatch` (pytest's fixture) it sets the environment that runners pass on to
    their workers (and the Ray executor to its tasks), restored after the test; without it,
    `env()` gives the variables for a subprocess the test starts (a `relman` CLI process).
    `folder` holds the release file. One HoldPoint may name several points ("a,b")."""

    def __init__(self, monkeypatch: Any, point: str, folder: Any) -> None:
        from pathlib import Path

        from relman.context import HOLD_ENV, HOLD_RELEASE_ENV

        self.point = point
        self.release_file = Path(folder) / f"release-{point}"
        self._env = {HOLD_ENV: point, HOLD_RELEASE_ENV: str(self.release_file)}
        if monkeypatch is not None:
            for k, v in self._env.items():
                monkeypatch.setenv(k, v)

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """`base` (default: this process's environment) with the hold-point variables set."""
        import os

        return {**(os.environ if base is None else base), **self._env}

    def message(self, point: str | None = None) -> str:
        """The progress message (and log line) of work held at `point` (default: ours)."""
        from relman.context import held_message

        return held_message(point or self.point)

    def reached(self, catalog: Any, job_id: int, point: str | None = None) -> bool:
        """Whether job `job_id` is waiting at the hold point (`point`, default ours) now."""
        row = catalog.conn.execute("SELECT status, message FROM jobs WHERE id = ?", [job_id]).fetchone()
        return bool(row) and row[0] == "running" and row[1] == self.message(point)

    def logged(self, catalog: Any, job_id: int, point: str | None = None) -> bool:
        """Whether job `job_id`'s log says it reached the hold point: also true while the job
        holds inside its result transaction, where its progress row is not yet visible."""
        return log_contains(catalog, job_id, self.message(point))

    def release(self) -> None:
        """Let held work go on (and work reaching the point later pass straight through)."""
        self.release_file.touch()

    def fail(self) -> None:
        """Make held work (and work reaching the point later) raise at the point instead."""
        from relman.context import HOLD_FAIL

        self.release_file.write_text(HOLD_FAIL, encoding="utf-8")
