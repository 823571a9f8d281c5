"""Job use cases the GUI and the CLI both call: queue, cancel, retry, read the log.

Thin wrappers over `relman.jobs.queue`; none of them starts a process or imports torch (the
runner does the starting, see `relman.jobs.runner.Runner.tick`).
"""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path
from typing import Any, Mapping

from relman.catalog import Catalog
from relman.jobs import queue


def queue_job(catalog: Catalog, kind: str, params: Mapping[str, Any] | None = None, *, device: str = "auto",
              actor: str | None = None, parent_job_id: int | None = None) -> int:
    """Queue a job; returns its id. Inside a worker (RELMAN_JOB_ID set) the new job is
    recorded as queued by the running one, so waiting on that one also waits on this."""
    if parent_job_id is None and os.environ.get("RELMAN_JOB_ID", "").isdigit():
        parent_job_id = int(os.environ["RELMAN_JOB_ID"])
    return queue.enqueue(catalog, kind, params, device=device, actor=actor, parent_job_id=parent_job_id)


def cancel_job(catalog: Catalog, job_id: int, *, actor: str | None = None) -> dict[str, Any]:
    """Cancel a queued job at once, or ask a running one to stop. Returns the job row."""
    queue.request_cancel(catalog, job_id, actor=actor)
    return queue.get_job(catalog, job_id)


def retry_job(catalog: Catalog, job_id: int, *, actor: str | None = None, force: bool = False) -> dict[str, Any]:
    """Queue a failed or cancelled job again. Returns the job row. A job that failed on bad
    input or a bug would fail the same way: refused unless `force` (relman.jobs.causes)."""
    from relman.errors import JobError
    from relman.jobs import causes

    job = queue.get_job(catalog, job_id)
    if job["status"] == queue.FAILED and not force and not causes.retry_helps(job.get("cause")):
        raise JobError(f"job {job_id} failed on {causes.describe(job['cause'])} ({job.get('error') or 'no message'}); "
                       "retrying the same job would fail the same way — fix its input and queue it anew, "
                       "or retry with --force")
    queue.retry(catalog, job_id, actor=actor)
    return queue.get_job(catalog, job_id)


def get_job(catalog: Catalog, job_id: int) -> dict[str, Any]:
    return queue.get_job(catalog, job_id)


def list_jobs(catalog: Catalog, **filters: Any) -> list[dict[str, Any]]:
    return queue.list_jobs(catalog, **filters)


def job_log_tail(catalog: Catalog, job_id: int, lines: int = 40) -> str:
    """The last `lines` lines of the job's log ('' when it has not written one yet)."""
    job = queue.get_job(catalog, job_id)
    path = Path(job["log_path"] or queue.log_path_for(catalog, job_id))
    if not path.is_file():
        return ""
    with open(path, encoding="utf-8", errors="replace") as f:
        return "".join(deque(f, maxlen=max(0, int(lines)))).rstrip("\n")
