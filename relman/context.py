"""The work context: what a long-running function gets besides its parameters.

Recipes (`relman.compress`), suites (`relman.evaluate`) and job kinds are plain functions
`run(params, ctx)`. In the spirit of Orange's `TaskState` (progress and interruption, nothing
else), `WorkContext` is small: report progress and curve points, check for cancellation, know
the device and the scratch folder, read a registered dataset, log. A function that also reads or writes the catalog (a
version's files, the one result transaction, follow-up jobs) says so by annotating
`ctx: CatalogWork` — the wider protocol — instead; tests/test_work_context.py holds that a
function typed against `WorkContext` reaches for nothing more.

The worker passes a `relman.jobs.context.JobContext` (backed by the catalog's jobs table), which
implements both; tests and direct callers pass the same class with `job_id=None`. The protocols
live here, at the bottom of the layers, so the code that does the work never imports
`relman.jobs` (the import-linter contracts in pyproject.toml check it).

Test hold points (`hold_here`) live here too: the one way a test stops work — a job, or a CLI
command's own process — at a named step and lets it go on (or fail there) when it chooses.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from relman.catalog import Catalog
    from relman.data.dataset import Dataset

# Test-only hold points: a comma-separated list of point names to stop at, and the file whose
# appearance lets held work go on. Workers inherit both from the process that starts them (the
# Ray executor forwards them with each task), so a test sets them in its own environment.
HOLD_ENV = "RELMAN_TEST_HOLD"
HOLD_RELEASE_ENV = "RELMAN_TEST_HOLD_RELEASE"
HOLD_TIMEOUT_S = 300.0
HOLD_POLL_S = 0.02
HOLD_FAIL = "fail"  # release file content that makes the held work raise at the point instead


def held_message(point: str) -> str:
    """What work waiting at hold point `point` reports (progress message, log line, stderr)."""
    return f"held at {point}"


def hold_environment() -> dict[str, str]:
    """The hold-point variables of this process's environment (to pass on to a remote worker)."""
    return {k: os.environ[k] for k in (HOLD_ENV, HOLD_RELEASE_ENV) if k in os.environ}


def _wanted(point: str) -> bool:
    return point in [p.strip() for p in os.environ.get(HOLD_ENV, "").split(",")]


@runtime_checkable
class WorkContext(Protocol):
    """What every work function may use of its context (see the module docstring)."""

    device: str  # "cpu" or "cuda:N": where to compute
    workdir: Path  # scratch folder, removed when the work ends; recipes write their output here

    @property
    def cancelled(self) -> bool:
        """Whether the user asked the work to stop (cheap: polled at most a few times a second)."""

    def check_cancelled(self) -> None:
        """Raise `relman.errors.JobCancelled` if the user asked the work to stop."""

    def progress(self, fraction: float, message: str = "", *, check_cancel: bool = True) -> None:
        """Report progress in [0, 1] (rate-limited); also a cancellation point."""

    def point(self, series: str, step: float, value: float) -> None:
        """One point of a live curve (e.g. 'train_loss')."""

    def log(self, message: str, *args: Any) -> None:
        """A line for the work's log (%-style arguments)."""

    def log_json(self, label: str, obj: Any) -> None:
        """A labelled JSON record in the log (parameters, decisions)."""

    def dataset(self, name: str | int, split: str | None = None) -> "Dataset":
        """A registered dataset by name or id (`split`: train/validation/test; None: all rows),
        read for this work without handing it the catalog."""


@runtime_checkable
class CatalogWork(WorkContext, Protocol):
    """The context of work that declares it needs the catalog: a job kind that reads versions
    and commits its result (compress, evaluate, optimize, ...), and the recipes that read
    datasets or parents from it. Everything else gets only `WorkContext`."""

    catalog: "Catalog"  # the local catalog (reads, and the one result transaction)
    job_id: int | None  # None for a direct call (CLI in-process, tests)
    actor: str | None  # who asked for the work (recorded on rows and audit events)

    @property
    def owner(self) -> str:
        """Owner tag for blobs staged by this work (dropped when it commits or dies)."""

    def committed_result(self) -> int | None:
        """The version an earlier attempt of this job committed (a retry adopts it), or None."""

    def queue_job(self, kind: str, params: dict[str, Any] | None = None, *, device: str = "auto") -> int:
        """Queue follow-up work (a job of `kind`) that records this work as its parent."""


@runtime_checkable
class _ShowsProgress(Protocol):
    """What `hold_here` uses, beyond `WorkContext`, of a context that writes a jobs row."""

    last_progress: tuple[float, str]

    def flush(self) -> None: ...


def hold_here(point: str, ctx: WorkContext | None = None, *, cancellable: bool = True) -> None:
    """A named point where a test can hold work (no effect unless $RELMAN_TEST_HOLD names it).

    The one hold mechanism of relman. When `point` is listed in $RELMAN_TEST_HOLD, the work says
    `held at <point>` — with a context: in its log and as its progress message (flushed at
    once); without one (a CLI command's own process): on stderr, flushed, for the test reading
    the pipe — and waits until the file named by $RELMAN_TEST_HOLD_RELEASE exists. If that file
    says "fail", the work raises RuntimeError here instead of going on (a failure at a known
    step). While held, a context's cancel is honoured (`JobCancelled` raised here) unless
    `cancellable=False`. Nobody releasing it within HOLD_TIMEOUT_S raises `JobError`. Tests
    thereby cancel, kill -9 or fail real work at a known step on a fast or a slow machine alike.
    Points are named "<kind or command>.<where>", e.g. "compress.before-commit"."""
    if not _wanted(point):
        return
    message = held_message(point)
    if ctx is None:
        print(message, file=sys.stderr, flush=True)
    else:
        if isinstance(ctx, _ShowsProgress):  # a job context: the message is in its row at once
            ctx.progress(ctx.last_progress[0], message, check_cancel=False)
            ctx.flush()
        ctx.log("%s", message)  # after the row: a test that read the log also sees the row
    release = os.environ.get(HOLD_RELEASE_ENV)
    deadline = time.monotonic() + HOLD_TIMEOUT_S
    while not (release and Path(release).exists()):
        if ctx is not None and cancellable:
            ctx.check_cancelled()
        if time.monotonic() > deadline:
            from relman.errors import JobError

            raise JobError(f"nobody released hold point {point} within {HOLD_TIMEOUT_S:.0f} s")
        time.sleep(HOLD_POLL_S)
    if Path(release).read_text(encoding="utf-8", errors="replace").strip() == HOLD_FAIL:
        raise RuntimeError(f"failing on purpose at {point}")
    if ctx is not None:
        ctx.log("released at %s", point)
