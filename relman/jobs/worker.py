"""The worker process: `relman worker ID` runs one job and records how it ended.

The runner claims the job (status running, device chosen) and starts this process with its
stdout/stderr appended to the job's log. The worker records its pid, heartbeats from a thread
(own SQLite connection) about once a second, calls the kind's `run(params, ctx)`, and writes
the outcome: succeeded (with the result JSON), failed (traceback in the log, one line in
`error`) or cancelled. Whatever happens it removes the job's scratch folder and the blobs the
job staged but did not commit. What it cannot record (being killed) the runner infers from
the exit status, the pid and the heartbeat.

Exit codes are named outcomes (`EXIT_*`), so the runner can tell "the job failed" from "the
worker died".
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sqlite3
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from relman.errors import JobCancelled, RelmanError
from relman.jobs import causes

EXIT_SUCCEEDED = 0
EXIT_FAILED = 1
EXIT_USAGE = 2  # click's own code for a bad command line
EXIT_CANCELLED = 3
EXIT_NOT_RUNNABLE = 4  # no such job, or not in a state this worker may run
EXIT_OUTCOMES = {
    EXIT_SUCCEEDED: "succeeded",
    EXIT_FAILED: "failed",
    EXIT_USAGE: "bad worker command line",
    EXIT_CANCELLED: "cancelled",
    EXIT_NOT_RUNNABLE: "job not runnable",
}
HEARTBEAT_INTERVAL_S = 1.0


class WorkerTerminated(Exception):
    """SIGTERM arrived (the runner enforcing a cancel, or the system shutting down)."""


def describe_exit(returncode: int) -> str:
    """A worker's exit status in words, for a job whose worker could not say itself."""
    if returncode < 0:
        num = -returncode
        try:
            name = signal.Signals(num).name
        except ValueError:
            name = "unknown signal"
        return f"worker process died (killed by signal {num}, {name})"
    if returncode in EXIT_OUTCOMES:
        return f"worker process exited with code {returncode} ({EXIT_OUTCOMES[returncode]}) without recording it"
    return f"worker process died (exit code {returncode})"


def one_line(exc: BaseException) -> str:
    """The reason that goes into the job row: one line, the exception's own words."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, RelmanError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Heartbeat(threading.Thread):
    """Writes jobs.heartbeat_at about once a second from its own connection, so a job busy in
    a long computation still shows it is alive."""

    def __init__(self, db_path: Path, job_id: int, interval: float = HEARTBEAT_INTERVAL_S) -> None:
        super().__init__(name=f"heartbeat-{job_id}", daemon=True)
        self.db_path = db_path
        self.job_id = job_id
        self.interval = interval
        self.stopped = threading.Event()

    def run(self) -> None:
        from relman.catalog.catalog import utcnow
        from relman.jobs import queue

        conn = sqlite3.connect(self.db_path, timeout=5, isolation_level=None)
        try:
            while not self.stopped.wait(self.interval):
                try:
                    queue.heartbeat(conn, self.job_id, utcnow())
                except sqlite3.OperationalError:  # busy: the next beat will do
                    pass
        finally:
            conn.close()

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=5)


def _on_sigterm(signum: int, frame: Any) -> None:
    raise WorkerTerminated("terminated by SIGTERM")


def _claim(catalog, job_id: int) -> dict[str, Any] | None:
    """Take ownership of the row: the runner claimed it for us (pid not yet or already ours),
    or, when started by hand on a queued job, claim it here."""
    from relman.catalog.catalog import utcnow
    from relman.jobs import queue

    me = os.getpid()
    with catalog.transaction():
        row = catalog.conn.execute("SELECT status, pid, device FROM jobs WHERE id = ?", [job_id]).fetchone()
        if row is None:
            print(f"relman worker: no job with id {job_id}", file=sys.stderr)
            return None
        status, pid, device = row
        now = utcnow()
        if status == queued_status():
            used = device if device != "auto" else _auto_device_here()
            queue.start_by_hand(catalog, job_id, device=used, pid=me, at=now)
        elif status == queue.RUNNING and pid in (None, me):
            queue.take_over(catalog, job_id, pid=me, at=now)
        else:
            print(f"relman worker: job {job_id} is {status}" + (f" in process {pid}" if pid else "")
                  + "; not running it", file=sys.stderr)
            return None
    return queue.get_job(catalog, job_id)


def queued_status() -> str:
    from relman.jobs.queue import QUEUED

    return QUEUED


def _auto_device_here() -> str:
    from relman.jobs.devices import probe_in_process

    cuda = probe_in_process()["cuda"]
    return cuda[0] if cuda else "cpu"


def _prepare_device(device: str) -> None:
    """Pin torch to the job's device and thread budget, without importing torch for jobs
    that never use it (CPU thread counts come from OMP_NUM_THREADS set by the runner)."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.set_device(int(device.split(":", 1)[1]))
        threads = os.environ.get("RELMAN_TORCH_THREADS")
        if threads:
            torch.set_num_threads(int(threads))


def _kill_children() -> None:
    """Stop processes the job started and left behind, so nothing outlives the job."""
    import psutil

    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return
    for c in children:
        try:
            c.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(children, timeout=3)


def run_worker(catalog_path: Path | str, job_id: int) -> int:
    """Run job `job_id` of the catalog at `catalog_path`; returns an `EXIT_*` code."""
    from relman.catalog import open_catalog
    from relman.jobs import kinds, queue
    from relman.jobs.context import JobContext

    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("relman.job").propagate = False  # ctx.log writes the log file itself
    logging.getLogger("relman.job").addHandler(logging.NullHandler())
    catalog = open_catalog(catalog_path, create=False)
    try:
        job = _claim(catalog, job_id)
        if job is None:
            return EXIT_NOT_RUNNABLE
        signal.signal(signal.SIGTERM, _on_sigterm)
        device = job["device_used"] or "cpu"
        workdir = queue.workdir_for(catalog, job_id)
        log_path = Path(job["log_path"] or queue.log_path_for(catalog, job_id))
        heartbeat = Heartbeat(catalog.db_path, job_id)
        heartbeat.start()
        ctx: JobContext | None = None
        t0 = time.monotonic()
        print(f"relman worker: job {job_id} ({job['kind']}) attempt {job['attempts']} on {device}, "
              f"pid {os.getpid()}", file=sys.stderr, flush=True)
        code = EXIT_FAILED
        outcome: tuple[str, dict[str, Any]] = (queue.FAILED, {"error": "worker stopped before running the job"})
        try:
            shutil.rmtree(workdir, ignore_errors=True)  # leftovers of an earlier attempt
            ctx = JobContext(catalog, job_id=job_id, device=device, workdir=workdir, log_path=log_path,
                             actor=job["created_by"])
            if job["cancel_requested"]:
                raise JobCancelled("cancelled by user")
            _prepare_device(device)
            fn = kinds.resolve(job["kind"])
            result = fn(job["params"], ctx)
            ctx.flush()
            outcome = (queue.SUCCEEDED, {"result": result if isinstance(result, dict) else {"value": result}
                                         if result is not None else {}, "message": ctx.last_progress[1] or "done"})
            code = EXIT_SUCCEEDED
        except JobCancelled as e:
            outcome = (queue.CANCELLED, {"message": str(e) or "cancelled"})
            code = EXIT_CANCELLED
        except WorkerTerminated as e:
            asked = catalog.conn.execute("SELECT cancel_requested FROM jobs WHERE id = ?", [job_id]).fetchone()
            if asked and asked[0]:
                outcome = (queue.CANCELLED, {"message": "cancelled (terminated after the grace period)"})
                code = EXIT_CANCELLED
            else:
                outcome = (queue.FAILED, {"error": str(e), "cause": causes.WORKER_KILLED,
                                          "evidence": {"signal": "SIGTERM", "by": "not a cancel"}})
        except BaseException as e:  # the job's own failure: full story in the log, one line in the row
            traceback.print_exc(file=sys.stderr)
            sys.stderr.flush()
            outcome = (queue.FAILED, {"error": one_line(e), "cause": causes.from_exception(e),
                                      "evidence": {"exception": type(e).__name__}})
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # cleanup must not be cut short
            heartbeat.stop()
            _kill_children()
            shutil.rmtree(workdir, ignore_errors=True)
            if catalog.conn.in_transaction:  # a job that failed inside its own transaction
                catalog.conn.execute("ROLLBACK")
            catalog.release_pending(ctx.owner if ctx is not None else f"job:{job_id}")
        status, extra = outcome
        if status == queue.FAILED:
            print(f"relman worker: job {job_id} failed: {extra['error']}", file=sys.stderr)
        queue.finish(catalog, job_id, status, **extra)
        print(f"relman worker: job {job_id} {status} after {time.monotonic() - t0:.2f} s", file=sys.stderr, flush=True)
        return code
    finally:
        catalog.close()
