"""The work context: what a long-running function gets besides its parameters.

Recipes (`relman.compress`), suites (`relman.evaluate`) and job kinds are plain functions
`run(params, ctx)`. `ctx` is anything that satisfies `WorkContext` — in the spirit of
Orange's `TaskState`: report progress, check for cancellation, know the device and scratch
folder, log, and queue follow-up work. The worker passes a `relman.jobs.context.JobContext`
(backed by the catalog's jobs table); tests and direct callers pass the same class with
`job_id=None`. The protocol lives here, at the bottom of the layers, so the code that does the
work never imports `relman.jobs` (the import-linter contracts in pyproject.toml check it):
a recipe or suite annotates `ctx: WorkContext` and calls only what is listed below.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from relman.catalog import Catalog

# Test-only hold points: a comma-separated list of point names to stop at, and the file whose
# appearance lets held work go on (`relman.jobs.context.JobContext.hold_point` for jobs,
# `hold_here` for work that runs without a job context, e.g. a CLI command's own process).
HOLD_ENV = "RELMAN_TEST_HOLD"
HOLD_RELEASE_ENV = "RELMAN_TEST_HOLD_RELEASE"
HOLD_TIMEOUT_S = 300.0
HOLD_POLL_S = 0.02


def hold_here(point: str) -> None:
    """A named point where a test can hold work that has no job context (no effect otherwise).

    When `point` is listed in $RELMAN_TEST_HOLD, writes `held at <point>` on stderr (flushed:
    the test reads it from the pipe) and waits until the file named by
    $RELMAN_TEST_HOLD_RELEASE exists, at most HOLD_TIMEOUT_S. Tests thereby kill -9 a real
    `relman` process at a known step (a temp file written, not yet renamed) on any machine."""
    if point not in [p.strip() for p in os.environ.get(HOLD_ENV, "").split(",")]:
        return
    print(f"held at {point}", file=sys.stderr, flush=True)
    release = os.environ.get(HOLD_RELEASE_ENV)
    deadline = time.monotonic() + HOLD_TIMEOUT_S
    while not (release and Path(release).exists()) and time.monotonic() < deadline:
        time.sleep(HOLD_POLL_S)


@runtime_checkable
class WorkContext(Protocol):
    """What work functions may use of their context (see the module docstring)."""

    catalog: "Catalog"  # the local catalog (reads, and the one result transaction)
    job_id: int | None  # None for a direct call (CLI in-process, tests)
    device: str  # "cpu" or "cuda:N": where to compute
    workdir: Path  # scratch folder, removed when the work ends; recipes write their output here
    actor: str | None  # who asked for the work (recorded on rows and audit events)
    last_progress: tuple[float, str]

    @property
    def owner(self) -> str:
        """Owner tag for blobs staged by this work (dropped when it commits or dies)."""

    @property
    def cancelled(self) -> bool:
        """Whether the user asked the work to stop (cheap: polled at most a few times a second)."""

    def progress(self, fraction: float, message: str = "", *, check_cancel: bool = True) -> None:
        """Report progress in [0, 1] (rate-limited); also a cancellation point."""

    def point(self, series: str, step: float, value: float) -> None:
        """One point of a live curve (e.g. 'train_loss')."""

    def flush(self) -> None:
        """Write pending progress and points now."""

    def check_cancelled(self) -> None:
        """Raise `relman.errors.JobCancelled` if the user asked the work to stop."""

    def hold_point(self, point: str) -> None:
        """A named point where tests can hold the work (no effect outside tests)."""

    def committed_result(self) -> int | None:
        """The version an earlier attempt of this job committed (a retry adopts it), or None."""

    def log(self, message: str, *args: Any) -> None:
        """A line for the work's log (%-style arguments)."""

    def log_json(self, label: str, obj: Any) -> None:
        """A labelled JSON record in the log (parameters, decisions)."""

    def queue_job(self, kind: str, params: dict[str, Any] | None = None, *, device: str = "auto") -> int:
        """Queue follow-up work (a job of `kind`) that records this work as its parent."""
