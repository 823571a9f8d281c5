"""`--wait` for every command that queues work: a progress bar until the jobs end.

`wait_for_jobs` follows the jobs and the jobs they queue (through `parent_job_id`), reading
only the catalog. If no other runner (GUI, `relman jobs run`) holds the catalog's runner lock,
it drives a `Runner` itself while waiting, so `relman compress ... --wait` works with nothing
else open. That runner uses the catalog's executor setting (`relman jobs executor --ray ...`),
as the GUI's and `relman jobs run` do: a catalog set up for Ray runs its jobs there, and a
cluster that cannot be reached is an error, never a silent switch to local processes.

Progress suits where it goes: on a terminal a bar redrawn in place; anywhere else (a pipe, a
log file, CI) plain lines — one when a job is queued, starts or ends, and otherwise at most
one every `PLAIN_INTERVAL_S` seconds, and only when something changed — so a log gets a few
readable lines, not one every poll. Command modules use it like this::

    from relman.jobs.wait import wait_option, wait_or_raise

    @click.command()
    @wait_option
    @pass_state
    def compress(state, ..., wait):
        job_id = queue_job(cat, "compress", params)
        if wait:
            wait_or_raise(cat, [job_id])
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, TextIO, TypeVar

import click

from relman.errors import JobError
from relman.jobs import queue

if TYPE_CHECKING:
    from relman.catalog import Catalog
    from relman.jobs.runner import Runner

F = TypeVar("F", bound=Callable[..., Any])
PLAIN_INTERVAL_S = 5.0  # not a terminal: at most one progress line this often (status lines aside)


def wait_option(f: F) -> F:
    """Adds `--wait` (parameter name `wait`, a bool) to a click command."""
    return click.option("--wait", "wait", is_flag=True,
                        help="Wait until the job (and the jobs it queues) end, with a progress bar; runs the "
                             "queue here if no other runner (GUI, 'relman jobs run') is driving it.")(f)


def _describe(rows: list[dict[str, Any]]) -> str:
    running = [r for r in rows if r["status"] == queue.RUNNING]
    r = running[0] if running else rows[0]
    text = f"job {r['id']} {r['kind']}"
    if r["message"]:
        text += f": {r['message']}"
    return text[:60]


def _percent(rows: list[dict[str, Any]]) -> float:
    """Mean progress of the tracked jobs, in percent (a finished job counts as done)."""
    done = sum(1.0 if r["status"] in queue.FINISHED else (r["progress"] or 0.0) for r in rows)
    return round(100 * done / max(1, len(rows)), 1)


class TerminalProgress:
    """A tqdm bar redrawn in place (for a terminal)."""

    def __init__(self, stream: TextIO) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=100, file=stream, leave=True, unit="%", bar_format="{l_bar}{bar}| {n:.0f}% [{elapsed}]")

    def update(self, rows: list[dict[str, Any]]) -> None:
        self.bar.n = _percent(rows)
        self.bar.set_description_str(_describe(rows), refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


class PlainProgress:
    """Plain lines for a pipe or a log file: every status change of a tracked job at once, and
    otherwise at most one line per `interval` seconds, only when the step shown has changed."""

    def __init__(self, stream: TextIO, interval: float = PLAIN_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.interval = interval
        self.clock = clock
        self.started = clock()
        self._status: dict[int, str] = {}
        self._last_line_at: float | None = None
        self._last_step: str | None = None

    def _line(self, text: str) -> None:
        elapsed = int(self.clock() - self.started)
        self.stream.write(f"[{elapsed // 60:02d}:{elapsed % 60:02d}] {text}\n")
        self.stream.flush()
        self._last_line_at = self.clock()

    def update(self, rows: list[dict[str, Any]]) -> None:
        percent = _percent(rows)
        for r in sorted(rows, key=lambda r: r["id"]):
            if self._status.get(r["id"]) != r["status"]:
                self._status[r["id"]] = r["status"]
                why = f": {r['error']}" if r["status"] == queue.FAILED and r["error"] else ""
                self._line(f"{percent:3.0f}% job {r['id']} ({r['kind']}) {r['status']}{why}")
                self._last_step = _describe(rows)
        step = _describe(rows)
        if step != self._last_step and (self._last_line_at is None
                                        or self.clock() - self._last_line_at >= self.interval):
            self._line(f"{percent:3.0f}% {step}")
            self._last_step = step

    def close(self) -> None:
        pass


def progress_for(stream: TextIO) -> "TerminalProgress | PlainProgress":
    """A bar on a terminal, plain rate-limited lines anywhere else."""
    isatty = getattr(stream, "isatty", None)
    return TerminalProgress(stream) if isatty is not None and isatty() else PlainProgress(stream)


def wait_for_jobs(catalog: "Catalog", job_ids: Iterable[int], *, progress: bool = True,
                  include_spawned: bool = True, poll_s: float = 0.2, timeout: float | None = None,
                  runner: "Runner | None" = None, cpu_slots: int | None = None,
                  stream: TextIO | None = None) -> list[dict[str, Any]]:
    """Block until `job_ids` (and, with `include_spawned`, every job they queued) have ended.

    With `progress`, reports on `stream` (default stderr): a bar on a terminal, plain lines
    otherwise (see the module docstring). Drives a Runner inline whenever no other process
    holds the runner lock. Returns the final rows, oldest first. Raises JobError on `timeout`
    (the jobs keep running)."""
    ids = [int(j) for j in job_ids]
    for j in ids:
        queue.get_job(catalog, j)  # NotFound for a wrong id, before waiting on it
    own_runner = None
    if runner is None:
        from relman.jobs.runner import Runner, RunnerLock

        executor = None
        probe = RunnerLock(catalog.root / "runner.lock")
        if probe.acquire():  # nobody else drives the queue: this process will, with the catalog's executor
            probe.release()
            from relman.jobs.ray_executor import executor_from_settings

            executor = executor_from_settings(catalog)
        runner = own_runner = Runner(catalog.root, cpu_slots=cpu_slots, executor=executor)
        if executor is not None and progress:
            print(f"this process drives the queue: jobs run on Ray at {executor.address}",
                  file=stream if stream is not None else sys.stderr)
    deadline = None if timeout is None else time.monotonic() + timeout
    shown = progress_for(stream if stream is not None else sys.stderr) if progress else None
    try:
        while True:
            runner.tick()
            tracked = queue.spawned_jobs(catalog, ids) if include_spawned else ids
            rows = queue.list_jobs(catalog, ids=tracked)
            done = all(r["status"] in queue.FINISHED for r in rows)
            if shown is not None:
                shown.update(rows)
            if done and not any(j in runner.workers for j in tracked):
                return sorted(rows, key=lambda r: r["id"])
            if deadline is not None and time.monotonic() > deadline:
                pending = [str(r["id"]) for r in rows if r["status"] not in queue.FINISHED]
                raise JobError(f"timed out after {timeout:.0f} s waiting for job(s) {', '.join(pending)}; "
                               "they keep running (see 'relman jobs')")
            time.sleep(poll_s)
    finally:
        if shown is not None:
            shown.close()
        if own_runner is not None:
            own_runner.close()


def failure_summary(rows: list[dict[str, Any]]) -> str | None:
    """One line naming the jobs that did not succeed, or None when all did."""
    bad = [r for r in rows if r["status"] != queue.SUCCEEDED]
    if not bad:
        return None
    parts = []
    for r in bad:
        why = r["error"] or r["message"] or r["status"]
        parts.append(f"job {r['id']} ({r['kind']}) {r['status']}: {why}" if r["status"] == queue.FAILED
                     else f"job {r['id']} ({r['kind']}) {r['status']}")
    return "; ".join(parts) + " (details: relman jobs show ID)"


def wait_or_raise(catalog: "Catalog", job_ids: Iterable[int], **kwargs: Any) -> list[dict[str, Any]]:
    """`wait_for_jobs`, then a JobError (one line) if any tracked job failed or was cancelled."""
    rows = wait_for_jobs(catalog, job_ids, **kwargs)
    problem = failure_summary(rows)
    if problem:
        raise JobError(problem)
    return rows
