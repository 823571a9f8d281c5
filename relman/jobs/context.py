"""The Qt-free context a job function receives: progress, cancellation, device, log, workdir.

`JobContext` implements `relman.context.WorkContext` and `relman.context.CatalogWork`, the
protocols recipes and suites are typed against (they live below them, so they never import
this layer). Tests hold a job at a named step with `relman.context.hold_here(point, ctx)`.

Job functions are plain `run(params, ctx) -> dict | None`. The worker process, the CLI and
tests all call them with a `JobContext`; with `job_id=None` nothing is written to the jobs
table (a direct call), otherwise progress, loss-curve points and the cancel flag go through
the catalog, rate-limited so a tight training loop does not hammer SQLite.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relman.errors import JobCancelled

if TYPE_CHECKING:
    from relman.catalog import Catalog
    from relman.data.dataset import Dataset

PROGRESS_INTERVAL_S = 0.25
CANCEL_POLL_INTERVAL_S = 0.25


class JobContext:
    def __init__(
        self,
        catalog: "Catalog",
        *,
        job_id: int | None = None,
        device: str = "cpu",
        workdir: Path | None = None,
        log_path: Path | None = None,
        actor: str | None = None,
    ) -> None:
        self.catalog = catalog
        self.job_id = job_id
        self.device = device
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="relman-job-", dir=catalog.tmp_dir))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self.actor = actor
        self.logger = logging.getLogger(f"relman.job.{job_id if job_id is not None else 'local'}")
        self._last_progress_write = 0.0
        self._pending_progress: tuple[float, str] | None = None
        self._last_cancel_poll = 0.0
        self._cancelled = False
        self._points: list[tuple[int, str, float, float]] = []
        self.last_progress: tuple[float, str] = (0.0, "")

    def committed_result(self) -> int | None:
        """The version an earlier attempt of this job committed (kept across `jobs retry`)."""
        if self.job_id is None:
            return None
        row = self.catalog.conn.execute("SELECT result_version_id FROM jobs WHERE id = ?", [self.job_id]).fetchone()
        return int(row[0]) if row and row[0] is not None else None

    # -- identity ---------------------------------------------------------------------------
    @property
    def owner(self) -> str:
        """Owner tag for blobs this job writes (see Catalog.staged_blobs)."""
        return f"job:{self.job_id}" if self.job_id is not None else f"proc:{os.getpid()}"

    # -- progress ---------------------------------------------------------------------------
    def progress(self, fraction: float, message: str = "", *, check_cancel: bool = True) -> None:
        """Report progress in [0, 1]; written at most every PROGRESS_INTERVAL_S seconds (and
        always when it reaches 1). Also a cancellation point (unless `check_cancel=False`)."""
        fraction = min(1.0, max(0.0, float(fraction)))
        self.last_progress = (fraction, message)
        self._pending_progress = (fraction, message)
        now = time.monotonic()
        if fraction >= 1.0 or now - self._last_progress_write >= PROGRESS_INTERVAL_S:
            self.flush()
        if check_cancel:
            self.check_cancelled()

    def point(self, series: str, step: float, value: float) -> None:
        """One point of a live curve (e.g. 'train_loss'), for the GUI's loss plot."""
        if self.job_id is not None:
            self._points.append((self.job_id, series, float(step), float(value)))
        if time.monotonic() - self._last_progress_write >= PROGRESS_INTERVAL_S:
            self.flush()

    def flush(self) -> None:
        if self.job_id is None:
            self._pending_progress = None
            return
        if self._pending_progress is None and not self._points:
            return
        now_iso = _utcnow()
        from relman.jobs import queue  # the jobs table's one writer

        with self.catalog.transaction():
            if self._pending_progress is not None:
                queue.report_progress(self.catalog, self.job_id, *self._pending_progress, heartbeat_at=now_iso)
            queue.add_points(self.catalog, self._points)
        self._pending_progress = None
        self._points = []
        self._last_progress_write = time.monotonic()

    # -- follow-up work ---------------------------------------------------------------------
    def queue_job(self, kind: str, params: dict[str, Any] | None = None, *, device: str = "auto") -> int:
        """Queue a follow-up job (e.g. evaluations of the version this job made). It records
        this job as its parent, so `--wait` on this job also waits for it."""
        from relman.jobs.queue import enqueue

        return enqueue(self.catalog, kind, params or {}, device=device, actor=self.actor, parent_job_id=self.job_id)

    # -- cancellation -----------------------------------------------------------------------
    @property
    def cancelled(self) -> bool:
        if self._cancelled or self.job_id is None:
            return self._cancelled
        now = time.monotonic()
        if now - self._last_cancel_poll >= CANCEL_POLL_INTERVAL_S:
            self._last_cancel_poll = now
            row = self.catalog.conn.execute("SELECT cancel_requested FROM jobs WHERE id = ?", [self.job_id]).fetchone()
            self._cancelled = bool(row and row[0])
        return self._cancelled

    def cancel(self) -> None:
        """For direct (job_id=None) callers and tests: ask the function to stop."""
        self._cancelled = True

    def check_cancelled(self) -> None:
        if self.cancelled:
            raise JobCancelled("cancelled by user")

    # -- data -------------------------------------------------------------------------------
    def dataset(self, name: str | int, split: str | None = None) -> "Dataset":
        """A registered dataset (relman.data.load_dataset) read from this job's catalog."""
        from relman.data.stored import load_dataset

        return load_dataset(self.catalog, name, split)

    # -- logging ----------------------------------------------------------------------------
    def log(self, message: str, *args: Any) -> None:
        text = message % args if args else message
        self.logger.info(text)
        if self.log_path is not None:
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(f"{_utcnow()} {text}\n")

    def log_json(self, label: str, obj: Any) -> None:
        self.log("%s %s", label, json.dumps(obj, default=str, sort_keys=True))

    # -- cleanup ----------------------------------------------------------------------------
    def cleanup(self) -> None:
        self.flush()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _utcnow() -> str:
    from relman.catalog.catalog import utcnow

    return utcnow()
